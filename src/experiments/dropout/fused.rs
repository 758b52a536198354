//! The dropout MLP (784-256-256-10) trained by the fused engine: the same model and the same
//! SGD, trained without autograd.
//!
//! Where the autograd engine runs the book's code op by op — autograd records every operation,
//! the optimizer walks its parameter list — the fused engine writes out the backward pass by
//! hand: each SGD update is folded into the GEMM that computes the weight gradient
//! (`W += gᵀ·x` with g already scaled by −lr), and on the CPU all element-wise work (ReLU +
//! dropout, their backward + the bias update, softmax cross-entropy + accuracy) is done by
//! single-pass loops (`kernels.rs`) with a fast mask generator.
//!
//! On the CPU it draws its dropout masks from its own generator (seeded from libtorch's, so
//! `--seed` still decides everything) and it rounds differently, so its numbers are not
//! PyTorch's to the last bit. Given the same masks, every path takes the autograd model's SGD
//! steps to rounding, and over whole runs its results match the autograd engine's
//! statistically (tests/fused.rs). It knows nothing of the book's code beside it: it trains
//! any three [`Linear`] layers.
use super::kernels::{self, Rng};
use crate::cuda::CudaGraph;
use crate::data::Split;
use crate::nn::Linear;
use crate::train::{self, Learner, Sums};
use tch::{Device, Kind, Tensor};

/// A seed for the mask generator, drawn from libtorch's so that `--seed` decides it.
pub fn seed_from_libtorch() -> u64 {
    Tensor::randint(i64::MAX, [1], (Kind::Int64, Device::Cpu)).int64_value(&[0]) as u64
}

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
    /// The tensor-op epoch's buffers, the same memory every epoch (and its captured graph).
    epoch: Option<EpochBuffers>,
    /// Replay each epoch as a CUDA graph ([`StepPath::TensorOps`] on a CUDA device only).
    graphs: bool,
    /// What SGD's weight decay multiplies each weight by per step: 1 − lr·λ (1: none).
    decay: f64,
}

/// What a tensor-op epoch reads and writes besides the data and the parameters: the
/// permutation, drawn into `order` in place before the epoch, and the sums, zeroed and
/// accumulated in place by it. Every operation of the epoch therefore touches the same memory
/// every time, and no value is read back to the host inside it, so a CUDA graph captured once
/// replays it.
pub struct EpochBuffers {
    pub order: Tensor,
    pub loss: Tensor,
    pub correct: Tensor,
    /// Constants of the step: −1 per row (for the one-hot), and per layer 1/f of the scale
    /// folded into its gradient (the bias gradient's GEMV vector).
    minus_ones: Tensor,
    inverse_scale: [Tensor; 3],
    graph: Option<CudaGraph>,
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
            rng: Rng::new(seed_from_libtorch()),
            path: if device == Device::Cpu {
                StepPath::CpuKernels
            } else {
                StepPath::TensorOps
            },
            buffers: None,
            epoch: None,
            graphs: false,
            decay: 1.0,
        }
    }

    /// Replays every training epoch after the first as one CUDA graph (the first runs on a
    /// side stream as the warm-up, then is captured). Only [`StepPath::TensorOps`] on a CUDA
    /// device can: elsewhere this is ignored. A failed capture is reported in one line and the
    /// epochs run eagerly.
    /// SGD's weight decay λ on the weights (not the biases), folded into the update: each
    /// step W ← (1 − lr·λ)·W − lr·∂loss/∂W, as `torch.optim.SGD(weight_decay=λ)` does.
    pub fn with_weight_decay(mut self, lambda: f64) -> FusedMlp {
        self.decay = 1.0 - self.lr * lambda;
        self
    }

    pub fn with_cuda_graph(mut self, on: bool) -> FusedMlp {
        self.graphs = on && self.path == StepPath::TensorOps && self.w[0].device().is_cuda();
        self
    }

    /// The buffers of the tensor-op epoch, once one has run (for tests: they must stay put).
    pub fn epoch_buffers(&self) -> Option<&EpochBuffers> {
        self.epoch.as_ref()
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
    /// [`StepPath::TensorOpsHostMasks`] (the masks [`super::kernels::keep_mask`] draws
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
            decay(&w[2], self.decay);
            let _ = w[2].shallow_clone().addmm_(&z3.tr(), &z2);
            kernels::add_column_sums(kernels::as_slice_mut(&z3), kernels::as_slice_mut(&b[2]));
            kernels::relu_dropout_backward(
                kernels::as_slice_mut(&dd2),
                kernels::as_slice_mut(&z2),
                scale(p[1]) as f32,
                kernels::as_slice_mut(&b[1]),
            );
            let _ = dd2.mm_out(&dd1, &w[1]);
            decay(&w[1], self.decay);
            let _ = w[1].shallow_clone().addmm_(&dd2.tr(), &z1);
            kernels::relu_dropout_backward(
                kernels::as_slice_mut(&dd1),
                kernels::as_slice_mut(&z1),
                scale(p[0]) as f32,
                kernels::as_slice_mut(&b[0]),
            );
            decay(&w[0], self.decay);
            let _ = w[0].shallow_clone().addmm_(&dd1.tr(), &x);
            (loss, correct)
        }
    }

    /// The same step as tensor operations on any device, the loss and correct predictions
    /// added to the on-device sums in `buffers` in place. Without `host_masks` nothing is read
    /// back to the host, so the step can be captured in a CUDA graph.
    ///
    /// Fewer kernels than the textbook chain (35 working operators per step instead of 46,
    /// counted by `bench`): the activations are kept masked but unscaled (dᵤ = m ⊙ relu(z)) and
    /// each dropout scale s is folded into what already multiplies — the next layer's GEMM
    /// (α = s), the loss gradient's factor and the gradient flowing back (ĝ = s·g); the bias
    /// gradient Σg becomes one GEMV, ĝᵀ·(1/s); the ReLU-and-mask backward is one
    /// `threshold_backward` on dᵤ; the one-hot is subtracted by one `scatter_add_`.
    fn tensor_step(
        &self,
        train: &Split,
        index: &Tensor,
        buffers: &EpochBuffers,
        mut host_masks: Option<&mut Rng>,
    ) {
        let (w, b, p) = (&self.w, &self.b, self.p);
        // s: the dropout scales; f: what is folded into the gradients (s, or 1 where p = 1 and
        // the layer's output is 0 anyway).
        let s = p.map(scale);
        let f = s.map(|s| if s > 0.0 { s } else { 1.0 });
        let x = train.x.index_select(0, index);
        let y = train.y.index_select(0, index);
        let y1 = y.unsqueeze(1);
        let n = x.size()[0];
        let mut masked = |z: Tensor, p: f64| {
            let h = z.relu();
            if let Some(rng) = host_masks.as_deref_mut() {
                let (rows, cols) = h.size2().expect("a matrix");
                let mask = kernels::keep_mask(rows as usize, cols as usize, p, rng);
                h * Tensor::from_slice(&mask)
                    .view([rows, cols])
                    .to_device(z.device())
            } else if p > 0.0 {
                // The book's dropout_layer draws rand_like(h) > p: the same draws.
                h * z.rand_like().gt(p)
            } else {
                h
            }
        };
        let d1 = masked(b[0].addmm(&x, &w[0].tr()), p[0]);
        let d2 = masked(scaled_linear(&d1, &w[1], &b[1], s[0]), p[1]);
        let z3 = scaled_linear(&d2, &w[2], &b[2], s[1]);
        let log_p = z3.log_softmax(1, Kind::Float);
        let picked = log_p.gather(1, &y1, false);
        let _ = buffers
            .loss
            .shallow_clone()
            .g_sub_(&picked.sum(Kind::Double));
        let _ = buffers
            .correct
            .shallow_clone()
            .g_add_(&train::correct(&z3, &y));
        // ĝ3 = f2 · (−lr/n) · (softmax − one_hot(y))
        let mut g3 = log_p.exp();
        let _ = g3.scatter_add_(1, &y1, &buffers.minus_ones.narrow(0, 0, n));
        let g3 = g3 * (f[1] * -self.lr / n as f64);
        let mut g2 = d2.threshold_backward(&g3.mm(&w[2]), 0.0);
        if f[0] != 1.0 {
            g2 *= f[0];
        }
        update(
            &w[2],
            &b[2],
            &g3,
            &d2,
            &buffers.inverse_scale[2].narrow(0, 0, n),
            self.decay,
        );
        let g1 = d1.threshold_backward(&g2.mm(&w[1]), 0.0);
        update(
            &w[1],
            &b[1],
            &g2,
            &d1,
            &buffers.inverse_scale[1].narrow(0, 0, n),
            self.decay,
        );
        update(
            &w[0],
            &b[0],
            &g1,
            &x,
            &buffers.inverse_scale[0].narrow(0, 0, n),
            self.decay,
        );
    }

    /// One epoch of [`FusedMlp::tensor_step`] over the permutation in `buffers.order`: the
    /// sums zeroed, then every batch (the last one partial). With `stoppable` a stop request
    /// ends it at a batch boundary (not inside a graph). Returns the examples seen.
    fn tensor_epoch(
        &self,
        train: &Split,
        buffers: &EpochBuffers,
        mut host_masks: Option<&mut Rng>,
        stoppable: bool,
    ) -> i64 {
        let (n, bs) = (train.len(), self.batch_size as i64);
        let _ = buffers.loss.shallow_clone().zero_();
        let _ = buffers.correct.shallow_clone().zero_();
        let mut seen = 0;
        for start in (0..n).step_by(bs as usize) {
            if stoppable && crate::stop::requested().is_some() {
                break;
            }
            let len = bs.min(n - start);
            let index = buffers.order.narrow(0, start, len);
            let rng = host_masks.as_deref_mut();
            self.tensor_step(train, &index, buffers, rng);
            seen += len;
        }
        seen
    }

    /// A training epoch as tensor operations: the permutation drawn into the static order
    /// buffer, then the epoch eagerly, or replayed from its CUDA graph.
    fn tensor_ops_epoch(&mut self, train: &Split) -> Sums {
        let device = train.x.device();
        let n = train.len();
        if self.epoch.as_ref().is_none_or(|e| e.order.size()[0] != n) {
            let bs = self.batch_size as i64;
            let folded = |p: f64| match scale(p) {
                s if s > 0.0 => 1.0 / s,
                _ => 1.0,
            };
            let constant = |v: f64| Tensor::full([bs], v, (Kind::Float, device));
            self.epoch = Some(EpochBuffers {
                order: Tensor::empty([n], (Kind::Int64, device)),
                loss: Tensor::zeros([], (Kind::Double, device)),
                correct: Tensor::zeros([], (Kind::Int64, device)),
                minus_ones: Tensor::full([bs, 1], -1.0, (Kind::Float, device)),
                inverse_scale: [
                    constant(1.0),
                    constant(folded(self.p[0])),
                    constant(folded(self.p[1])),
                ],
                graph: None,
            });
        }
        let mut buffers = self.epoch.take().expect("just made");
        let _ = Tensor::randperm_out(&buffers.order, n);
        let seen = if self.path == StepPath::TensorOpsHostMasks {
            let mut rng = self.rng.clone();
            let seen = self.tensor_epoch(train, &buffers, Some(&mut rng), true);
            self.rng = rng;
            seen
        } else if !self.graphs {
            self.tensor_epoch(train, &buffers, None, true)
        } else if let Some(graph) = &buffers.graph {
            self.replay(graph, train, &buffers)
        } else {
            self.capture(train, &mut buffers)
        };
        let sums = Sums::from_device(buffers.loss.copy(), buffers.correct.copy(), seen);
        self.epoch = Some(buffers);
        sums
    }

    /// The first epoch with graphs: run on a side stream (the warm-up CUDA graphs need), then
    /// captured for the epochs that follow. If the capture fails the epoch still counts (or
    /// runs eagerly, if it had not run), a warning says why, and graphs are off from then on.
    fn capture(&mut self, train: &Split, buffers: &mut EpochBuffers) -> i64 {
        let device = match train.x.device() {
            Device::Cuda(i) => i,
            _ => unreachable!("graphs are only enabled on CUDA"),
        };
        let seen = std::cell::Cell::new(None);
        let this = &*self;
        let captured = CudaGraph::capture(
            device,
            || seen.set(Some(this.tensor_epoch(train, buffers, None, false))),
            || {
                this.tensor_epoch(train, buffers, None, false);
            },
        );
        match captured {
            Ok(graph) => buffers.graph = Some(graph),
            Err(e) => {
                eprintln!("warning: CUDA graph capture failed, training without graphs: {e:#}");
                self.graphs = false;
            }
        }
        match seen.get() {
            Some(seen) => seen,
            None => self.tensor_epoch(train, buffers, None, true),
        }
    }

    /// A whole epoch from the captured graph; a replay that fails is reported and the epoch
    /// runs eagerly instead (graphs off from then on).
    fn replay(&self, graph: &CudaGraph, train: &Split, buffers: &EpochBuffers) -> i64 {
        match graph.replay() {
            Ok(()) => train.len(),
            Err(e) => {
                eprintln!("warning: CUDA graph replay failed, training without graphs: {e:#}");
                self.tensor_epoch(train, buffers, None, true)
            }
        }
    }
}

/// W ← factor·W (SGD's weight decay), nothing when the factor is 1.
fn decay(w: &Tensor, factor: f64) {
    if factor != 1.0 {
        let _ = w.shallow_clone().g_mul_scalar_(factor);
    }
}

/// b + α·(d·Wᵀ): a layer whose input d is unscaled by α (one GEMM either way).
fn scaled_linear(d: &Tensor, w: &Tensor, b: &Tensor, alpha: f64) -> Tensor {
    if alpha == 1.0 {
        b.addmm(d, &w.tr())
    } else {
        b.baddbmm(&d.unsqueeze(0), &w.tr().unsqueeze(0), 1.0, alpha)
            .squeeze_dim(0)
    }
}

/// W += ĝᵀ·input and b += ĝᵀ·v, where ĝ carries −lr and the folded scale 1/v (one GEMM and
/// one GEMV).
fn update(w: &Tensor, b: &Tensor, g: &Tensor, input: &Tensor, v: &Tensor, factor: f64) {
    decay(w, factor);
    let _ = w.shallow_clone().addmm_(&g.tr(), input);
    let _ = b.shallow_clone().addmv_(&g.tr(), v);
}

impl Learner for FusedMlp {
    fn train_epoch(&mut self, train: &Split) -> Sums {
        let _guard = tch::no_grad_guard();
        if self.path != StepPath::CpuKernels {
            return self.tensor_ops_epoch(train);
        }
        let n = train.len();
        let order = Tensor::randperm(n, (Kind::Int64, Device::Cpu));
        let bs = self.batch_size as i64;
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
