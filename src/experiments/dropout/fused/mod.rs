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
use tensor_ops::decay;

mod bf16;
mod tensor_ops;
use crate::cpu::gemm;
use crate::cuda::CudaGraph;
use crate::d2l::{self, Metrics};
use crate::data::Split;
use crate::precision::{Autocast, Precision};
use crate::train::Learner;
use tch::nn::Linear;
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
    /// `--precision`: bf16-mixed runs the CPU kernels' hidden-layer GEMMs in bf16 ([`bf16`]).
    precision: Precision,
    /// The bf16 copies of a bf16-mixed run, made at its first epoch (never in f32, so that
    /// `Some` means bf16-mixed).
    half: Option<bf16::Half>,
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
pub(super) struct Buffers {
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
        let device = layers[0].ws.device();
        FusedMlp {
            w: layers.each_ref().map(|l| l.ws.shallow_clone()),
            b: layers
                .each_ref()
                .map(|l| l.bs.as_ref().expect("a bias").shallow_clone()),
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
            precision: Precision::F32,
            half: None,
        }
    }

    /// Trains in `precision`: bf16-mixed takes the CPU kernels' path ([`StepPath::CpuKernels`])
    /// with its hidden layers' GEMMs in bf16 (`fused/bf16.rs`) and evaluates under autocast.
    pub fn with_precision(mut self, precision: Precision) -> FusedMlp {
        assert!(
            precision == Precision::F32 || self.path == StepPath::CpuKernels,
            "the fused engine's bf16-mixed runs on the CPU kernels"
        );
        self.precision = precision;
        self
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

    /// The mask generator's state (for a checkpoint).
    pub fn mask_state(&self) -> [u64; 4] {
        self.rng.state()
    }

    /// Continues the mask generator from a state [`FusedMlp::mask_state`] read.
    pub fn set_mask_state(&mut self, state: [u64; 4]) {
        self.rng = Rng::from_state(state);
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
            let (loss, correct) =
                output_layer((&z2, &z3, &dd2), (&w[2], &b[2]), &bufs.y, lr, self.decay);
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
}

/// The output layer's step on the CPU, in f32 in both precisions: `z3 ← h2·W3ᵀ`, the bias and
/// softmax cross-entropy fused (z3 becomes g3 = −lr · ∂loss/∂z3), the gradient of the layer
/// below `dd2 ← g3·W3` (W3 before its update), then SGD on W3 (`W3 ← decay·W3 + g3ᵀ·h2`, one
/// GEMM) and b3. Its GEMMs are small (10 columns): MKL straight ([`gemm`]) takes a fraction
/// of libtorch's per-call cost. Returns the batch's loss sum and correct count.
///
/// # Safety
/// `z3` and `b3` are contiguous f32 CPU tensors that no live slice aliases.
unsafe fn output_layer(
    (h2, z3, dd2): (&Tensor, &Tensor, &Tensor),
    (w3, b3): (&Tensor, &Tensor),
    labels: &[i64],
    lr: f64,
    weight_decay: f64,
) -> (f64, i64) {
    gemm(h2, &w3.tr(), 0.0, z3);
    let factor = (-lr / h2.size()[0] as f64) as f32;
    let (z3s, b3s) = (kernels::as_slice_mut(z3), kernels::as_slice_mut(b3));
    let (loss, correct) = kernels::bias_softmax_cross_entropy(z3s, b3s, labels, factor);
    gemm(z3, w3, 0.0, dd2);
    gemm(&z3.tr(), h2, weight_decay as f32, w3);
    kernels::add_column_sums(z3s, b3s);
    (loss, correct)
}

impl Learner for FusedMlp {
    fn train_epoch(&mut self, train: &Split) -> Metrics {
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
        let bf16 = self.precision == Precision::Bf16Mixed;
        if bf16 && !self.half.as_ref().is_some_and(|h| h.of(&train.x)) {
            self.half = Some(bf16::Half::new(&self.w, &train.x, bs));
        }
        if let Some(half) = self.half.as_mut() {
            half.begin(&self.w);
        }
        let (mut loss, mut correct) = (0.0, 0);
        for start in (0..n).step_by(bs as usize) {
            if crate::stop::requested().is_some() {
                break;
            }
            let index = order.narrow(0, start, bs.min(n - start));
            let (l, c) = match self.half.as_mut() {
                Some(half) => bf16::step(
                    half,
                    self.buffers.as_mut().expect("buffers"),
                    (&self.w, &self.b),
                    (self.p, self.lr, self.decay),
                    &mut self.rng,
                    &index,
                    labels,
                ),
                None => self.cpu_step(train, &index, labels),
            };
            loss += l;
            correct += c;
        }
        if let Some(half) = self.half.as_ref() {
            half.end(&self.w);
        }
        Metrics {
            loss_sum: Tensor::from(loss),
            correct: Tensor::from(correct),
            count: n,
        }
    }

    fn count_correct(&self, split: &Split) -> Tensor {
        let _guard = tch::no_grad_guard();
        // bf16-mixed: the layers' GEMMs in bf16, as the autograd engine evaluates.
        let _autocast = (self.precision == Precision::Bf16Mixed)
            .then(|| Autocast::bf16(split.x.device()).expect("Precision::check before training"));
        let mut total = Tensor::zeros([], (Kind::Int64, split.x.device()));
        let (w, b) = (&self.w, &self.b);
        for start in (0..split.len()).step_by(EVAL_CHUNK as usize) {
            let len = EVAL_CHUNK.min(split.len() - start);
            let x = split.x.narrow(0, start, len);
            let h1 = b[0].addmm(&x, &w[0].tr()).relu_();
            let h2 = b[1].addmm(&h1, &w[1].tr()).relu_();
            total += d2l::accuracy(&b[2].addmm(&h2, &w[2].tr()), &split.y.narrow(0, start, len));
        }
        total
    }
}
