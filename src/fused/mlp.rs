//! The dropout MLP (784-256-256-10) trained by the fused engine.
use super::kernels::{self, Rng};
use crate::data::Split;
use crate::nn::Linear;
use crate::train::{self, Learner, Sums};
use tch::{Device, Kind, Tensor};

/// Rows per chunk of the evaluation pass (exact counts, so the chunking does not matter).
const EVAL_CHUNK: i64 = 2000;

/// How a [`FusedMlp`] computes a training step.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StepPath {
    /// Rust loops over CPU memory; masks from the counter-based hash. The default on the CPU.
    CpuKernels,
    /// Tensor operations on the parameters' device; masks from libtorch's generator. The
    /// default on other devices.
    TensorOps,
    /// Tensor operations with the masks [`StepPath::CpuKernels`] draws, made on the host and
    /// copied to the device: the CPU kernels' numbers up to rounding, on any device, so one
    /// path can be checked against the other.
    TensorOpsHostMasks,
}

/// Weights and biases of the three layers (sharing storage with the VarStore), the dropout
/// probabilities, SGD's learning rate and the scratch buffers of one mini-batch.
pub struct FusedMlp {
    w: [Tensor; 3],
    b: [Tensor; 3],
    p: [f64; 2],
    lr: f64,
    batch_size: usize,
    rng: Rng,
    path: StepPath,
    buffers: Option<Buffers>,
}

/// Per-batch activations and gradients, allocated once.
struct Buffers {
    x: Tensor,
    z: [Tensor; 3],
    dd: [Tensor; 2],
    y: Vec<i64>,
}

fn scale(p: f64) -> f64 {
    if p >= 1.0 {
        0.0
    } else {
        1.0 / (1.0 - p)
    }
}

impl FusedMlp {
    /// Trains `layers` in place: on the CPU with [`StepPath::CpuKernels`], elsewhere with
    /// [`StepPath::TensorOps`]. The mask generator is seeded from libtorch's generator.
    pub fn new(layers: &[Linear; 3], p: [f64; 2], lr: f64, batch_size: usize) -> FusedMlp {
        let device = layers[0].weight.device();
        FusedMlp {
            w: layers.each_ref().map(|l| l.weight.shallow_clone()),
            b: layers.each_ref().map(|l| l.bias.shallow_clone()),
            p,
            lr,
            batch_size,
            rng: Rng::new(super::seed_from_libtorch()),
            path: if device == Device::Cpu {
                StepPath::CpuKernels
            } else {
                StepPath::TensorOps
            },
            buffers: None,
        }
    }

    /// Computes the steps another way ([`StepPath::CpuKernels`] needs CPU parameters).
    pub fn with_path(mut self, path: StepPath) -> FusedMlp {
        assert!(
            path != StepPath::CpuKernels || self.w[0].device() == Device::Cpu,
            "the CPU kernels need the parameters on the CPU"
        );
        self.path = path;
        self
    }

    /// Re-seeds the mask generator of [`StepPath::CpuKernels`] and
    /// [`StepPath::TensorOpsHostMasks`] (the masks [`crate::fused::kernels::keep_mask`] draws
    /// from `Rng::new(seed)`, layer 1 then layer 2 for every batch).
    pub fn with_mask_seed(mut self, seed: u64) -> FusedMlp {
        self.rng = Rng::new(seed);
        self
    }

    fn buffers(&mut self) -> &mut Buffers {
        let (bs, opts) = (self.batch_size as i64, (Kind::Float, Device::Cpu));
        let dims: Vec<i64> = self.w.iter().map(|w| w.size()[0]).collect();
        let inputs = self.w[0].size()[1];
        self.buffers.get_or_insert_with(|| Buffers {
            x: Tensor::empty([bs, inputs], opts),
            z: [0, 1, 2].map(|k| Tensor::empty([bs, dims[k]], opts)),
            dd: [0, 1].map(|k| Tensor::empty([bs, dims[k]], opts)),
            y: Vec::with_capacity(bs as usize),
        })
    }

    /// One step on the CPU: forward with fused ReLU + dropout, fused loss and gradient, then
    /// per layer `g·Wᵀ` for the layer below, `W += gᵀ·input` and `b += Σ g` (g carries −lr).
    fn cpu_step(&mut self, train: &Split, index: &Tensor, labels: &[i64]) -> (f64, i64) {
        let (w, b, p, lr) = (&self.w, &self.b, self.p, self.lr);
        let rng = &mut self.rng;
        let bufs = self.buffers.as_mut().expect("buffers");
        let n = index.size()[0];
        let rows = |t: &Tensor| t.narrow(0, 0, n);
        let (x, z1, z2, z3, dd1, dd2) = (
            rows(&bufs.x),
            rows(&bufs.z[0]),
            rows(&bufs.z[1]),
            rows(&bufs.z[2]),
            rows(&bufs.dd[0]),
            rows(&bufs.dd[1]),
        );
        let _ = train.x.index_select_out(&x, 0, index);
        // SAFETY: every slice views a contiguous CPU buffer (f32, or the i64 index) owned by
        // `bufs`, a parameter or the caller, all alive for this step, and no two live slices alias.
        unsafe {
            let rows = std::slice::from_raw_parts(index.data_ptr() as *const i64, n as usize);
            bufs.y.clear();
            bufs.y.extend(rows.iter().map(|&i| labels[i as usize]));
            let _ = x.mm_out(&z1, &w[0].tr());
            kernels::bias_relu_dropout(
                kernels::as_slice_mut(&z1),
                kernels::as_slice_mut(&b[0]),
                p[0],
                rng,
            );
            let _ = z1.mm_out(&z2, &w[1].tr());
            kernels::bias_relu_dropout(
                kernels::as_slice_mut(&z2),
                kernels::as_slice_mut(&b[1]),
                p[1],
                rng,
            );
            let _ = z2.mm_out(&z3, &w[2].tr());
            let factor = (-lr / n as f64) as f32;
            let (loss, correct) = kernels::bias_softmax_cross_entropy(
                kernels::as_slice_mut(&z3),
                kernels::as_slice_mut(&b[2]),
                &bufs.y,
                factor,
            );
            // z3 now holds g3 = −lr · ∂loss/∂z3, z2 and z1 the layers' outputs.
            let _ = z3.mm_out(&dd2, &w[2]);
            let _ = w[2].shallow_clone().addmm_(&z3.tr(), &z2);
            kernels::add_column_sums(kernels::as_slice_mut(&z3), kernels::as_slice_mut(&b[2]));
            kernels::relu_dropout_backward(
                kernels::as_slice_mut(&dd2),
                kernels::as_slice_mut(&z2),
                scale(p[1]) as f32,
                kernels::as_slice_mut(&b[1]),
            );
            let _ = dd2.mm_out(&dd1, &w[1]);
            let _ = w[1].shallow_clone().addmm_(&dd2.tr(), &z1);
            kernels::relu_dropout_backward(
                kernels::as_slice_mut(&dd1),
                kernels::as_slice_mut(&z1),
                scale(p[0]) as f32,
                kernels::as_slice_mut(&b[0]),
            );
            let _ = w[0].shallow_clone().addmm_(&dd1.tr(), &x);
            (loss, correct)
        }
    }

    /// The same step as tensor operations on any device; the sums stay on the device.
    fn tensor_step(&mut self, train: &Split, index: &Tensor, sums: &mut Sums) {
        let (w, b, p, rng) = (&self.w, &self.b, self.p, &mut self.rng);
        let host_masks = self.path == StepPath::TensorOpsHostMasks;
        let x = train.x.index_select(0, index);
        let y = train.y.index_select(0, index);
        let mut relu_dropout = |z: Tensor, p: f64| {
            let h = z.relu();
            if host_masks {
                let (rows, cols) = h.size2().expect("a matrix");
                let mask = kernels::keep_mask(rows as usize, cols as usize, p, rng);
                h * Tensor::from_slice(&mask)
                    .view([rows, cols])
                    .to_device(z.device())
                    * scale(p)
            } else if p > 0.0 {
                h * z.rand_like().gt(p) * scale(p)
            } else {
                h
            }
        };
        let d1 = relu_dropout(b[0].addmm(&x, &w[0].tr()), p[0]);
        let d2 = relu_dropout(b[1].addmm(&d1, &w[1].tr()), p[1]);
        let z3 = b[2].addmm(&d2, &w[2].tr());
        let log_p = z3.log_softmax(1, Kind::Float);
        let losses = -log_p.gather(1, &y.unsqueeze(1), false);
        sums.add(&losses, &z3, &y);
        let one_hot = log_p.zeros_like().scatter_value(1, &y.unsqueeze(1), 1.0);
        let g3 = (log_p.exp() - one_hot) * (-self.lr / x.size()[0] as f64);
        let backward = |dd: Tensor, d: &Tensor, p: f64| dd * d.gt(0.0) * scale(p);
        let g2 = backward(g3.mm(&w[2]), &d2, p[1]);
        update(&w[2], &b[2], &g3, &d2);
        let g1 = backward(g2.mm(&w[1]), &d1, p[0]);
        update(&w[1], &b[1], &g2, &d1);
        update(&w[0], &b[0], &g1, &x);
    }
}

/// W += gᵀ·input, b += Σ g (g already carries −lr).
fn update(w: &Tensor, b: &Tensor, g: &Tensor, input: &Tensor) {
    let _ = w.shallow_clone().addmm_(&g.tr(), input);
    let _ = b
        .shallow_clone()
        .g_add_(&g.sum_dim_intlist(0, false, Kind::Float));
}

impl Learner for FusedMlp {
    fn train_epoch(&mut self, train: &Split) -> Sums {
        let _guard = tch::no_grad_guard();
        let device = train.x.device();
        let n = train.len();
        let order = Tensor::randperm(n, (Kind::Int64, device));
        let bs = self.batch_size as i64;
        if self.path == StepPath::CpuKernels {
            self.buffers();
            // SAFETY: the labels are a contiguous i64 CPU tensor that outlives the epoch.
            let labels =
                unsafe { std::slice::from_raw_parts(train.y.data_ptr() as *const i64, n as usize) };
            let (mut loss, mut correct) = (0.0, 0);
            for start in (0..n).step_by(bs as usize) {
                if crate::stop::requested().is_some() {
                    break;
                }
                let index = order.narrow(0, start, bs.min(n - start));
                let (l, c) = self.cpu_step(train, &index, labels);
                loss += l;
                correct += c;
            }
            Sums::from_host(loss, correct, n)
        } else {
            let mut sums = Sums::new(device);
            for start in (0..n).step_by(bs as usize) {
                if crate::stop::requested().is_some() {
                    break;
                }
                let index = order.narrow(0, start, bs.min(n - start));
                self.tensor_step(train, &index, &mut sums);
            }
            sums
        }
    }

    fn count_correct(&self, split: &Split) -> Tensor {
        let _guard = tch::no_grad_guard();
        let mut total = Tensor::zeros([], (Kind::Int64, split.x.device()));
        let (w, b) = (&self.w, &self.b);
        for start in (0..split.len()).step_by(EVAL_CHUNK as usize) {
            let len = EVAL_CHUNK.min(split.len() - start);
            let x = split.x.narrow(0, start, len);
            let h1 = b[0].addmm(&x, &w[0].tr()).relu_();
            let h2 = b[1].addmm(&h1, &w[1].tr()).relu_();
            total += train::correct(&b[2].addmm(&h2, &w[2].tr()), &split.y.narrow(0, start, len));
        }
        total
    }
}
