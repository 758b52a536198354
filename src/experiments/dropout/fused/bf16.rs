//! The CPU kernels' step in bf16-mixed precision (`--precision bf16-mixed`): the hidden layers'
//! GEMMs take bf16 operands and sum and write in f32 ([`gemm`]: MKL's bf16 GEMM, on
//! AMX where the CPU has it), while the weights, the biases, SGD's update and every
//! element-wise step stay f32.
//!
//! Each hidden layer's GEMM writes its f32 result straight into the buffer the element-wise
//! kernels work in; what a later GEMM reads (the first layer's output, the two gradients) is
//! narrowed to bf16 once. A weight's update `Wᵀ ← decay·Wᵀ + xᵀ·g` is the GEMM itself, written
//! into the f32 weight (kept transposed during the epoch: [`Half`]), which is then narrowed
//! into the bf16 copy the next step multiplies by.
//! The training inputs are cast to bf16 once per run. The output layer (10 columns: 0.4 % of
//! the step's FLOPs) stays f32, as in the f32 step ([`super::output_layer`]): a bf16 GEMM that
//! small costs more in conversions than it saves.
use super::kernels;
use super::{output_layer, scale, Buffers};
use crate::cpu::gemm;
use tch::{Device, Kind, Tensor};

/// The bf16 copies of one run: the training inputs, the hidden layers' weights, and per batch
/// the inputs, the first layer's output and the two hidden layers' gradients; and the hidden
/// layers' f32 weights, transposed.
pub(super) struct Half {
    inputs: Tensor,
    /// The hidden layers' f32 weights as `[inputs, units]`: during an epoch the steps update
    /// these in place of the parameters, because MKL writes the update as `xᵀ·g` into this
    /// layout a third faster than as `gᵀ·x` into the parameters' (186 against 264 µs for the
    /// first layer, 2 threads, an Intel Xeon with AMX). [`Half::begin`] and [`Half::end`] move
    /// them in from the parameters and back.
    wt: [Tensor; 2],
    /// Their bf16 copies, which the GEMMs multiply by.
    wh: [Tensor; 2],
    x: Tensor,
    z1: Tensor,
    dd: [Tensor; 2],
}

const BF16: (Kind, Device) = (Kind::BFloat16, Device::Cpu);

impl Half {
    /// For weights `w` and batches of `batch` rows of `inputs` (the weights' copies are filled
    /// by [`Half::begin`]).
    pub(super) fn new(w: &[Tensor; 3], inputs: &Tensor, batch: i64) -> Half {
        let width = |k: usize| w[k].size()[0];
        let transposed = |k: usize| [w[k].size()[1], w[k].size()[0]];
        Half {
            inputs: inputs.to_kind(Kind::BFloat16),
            wt: [0, 1].map(|k| Tensor::empty(transposed(k), (Kind::Float, Device::Cpu))),
            wh: [0, 1].map(|k| Tensor::empty(transposed(k), BF16)),
            x: Tensor::empty([batch, inputs.size()[1]], BF16),
            z1: Tensor::empty([batch, width(0)], BF16),
            dd: [0, 1].map(|k| Tensor::empty([batch, width(k)], BF16)),
        }
    }

    /// Whether these copies were made for `inputs` (the same split, epoch after epoch).
    pub(super) fn of(&self, inputs: &Tensor) -> bool {
        self.inputs.size() == inputs.size()
    }

    /// Before an epoch: the weights `w` as the epoch's steps will update them, and their bf16
    /// copies.
    pub(super) fn begin(&mut self, w: &[Tensor; 3]) {
        for ((t, h), w) in self.wt.iter_mut().zip(&self.wh).zip(w) {
            t.copy_(&w.tr());
            // SAFETY: two distinct contiguous CPU tensors of as many elements, f32 and bf16.
            unsafe { kernels::narrow_all(kernels::as_slice_mut(t), kernels::as_bf16_mut(h)) };
        }
    }

    /// After an epoch (or its part, when stopped): the weights back into the parameters `w`.
    pub(super) fn end(&self, w: &[Tensor; 3]) {
        for (t, w) in self.wt.iter().zip(w) {
            w.shallow_clone().copy_(&t.tr());
        }
    }
}

/// One step of [`super::FusedMlp`]'s CPU kernels in bf16-mixed: the same steps as
/// `cpu_step`, the hidden layers' GEMMs with bf16 operands. Returns the batch's loss sum and
/// correct count.
#[allow(clippy::too_many_arguments)]
pub(super) fn step(
    half: &mut Half,
    f32s: &mut Buffers,
    (w, b): (&[Tensor; 3], &[Tensor; 3]),
    (p, lr, decay): ([f64; 2], f64, f64),
    rng: &mut kernels::Rng,
    index: &Tensor,
    labels: &[i64],
) -> (f64, i64) {
    let n = index.size()[0];
    let rows = |t: &Tensor| t.narrow(0, 0, n);
    let (x, z1, dd1, dd2) = (
        rows(&half.x),
        rows(&half.z1),
        rows(&half.dd[0]),
        rows(&half.dd[1]),
    );
    let (f1, f2, f3) = (rows(&f32s.z[0]), rows(&f32s.z[1]), rows(&f32s.z[2]));
    let (g1, g2) = (rows(&f32s.dd[0]), rows(&f32s.dd[1]));
    let _ = half.inputs.index_select_out(&x, 0, index);
    let (wt, wh) = (&half.wt, &half.wh);
    // SAFETY: every slice views a contiguous CPU buffer (f32 or bf16) owned by `half`, `f32s`
    // or a parameter, alive for this step, and no two live slices alias; `index` is a
    // contiguous i64 tensor.
    unsafe {
        let picked = std::slice::from_raw_parts(index.data_ptr() as *const i64, n as usize);
        f32s.y.clear();
        f32s.y.extend(picked.iter().map(|&i| labels[i as usize]));
        let (s, h) = (kernels::as_slice_mut, kernels::as_bf16_mut);
        // Forward: bias, ReLU and dropout on each hidden layer's f32 output, which the
        // backward pass keeps; the first layer's is narrowed for the second layer's GEMMs.
        gemm(&x, &wh[0], 0.0, &f1);
        kernels::bias_relu_dropout_narrow(s(&f1), s(&b[0]), p[0], rng, h(&z1));
        gemm(&z1, &wh[1], 0.0, &f2);
        kernels::bias_relu_dropout(s(&f2), s(&b[1]), p[1], rng);
        let (loss, correct) = output_layer((&f2, &f3, &g2), (&w[2], &b[2]), &f32s.y, lr, decay);
        // g2 = −lr · ∂loss/∂h2: through ReLU and dropout, then the bf16 GEMMs of layer 2,
        // its weight's update written into the f32 weight, and the weight's bf16 copy.
        kernels::relu_dropout_backward_narrow(
            s(&g2),
            s(&f2),
            scale(p[1]) as f32,
            s(&b[1]),
            h(&dd2),
        );
        gemm(&dd2, &wh[1].tr(), 0.0, &g1);
        gemm(&z1.tr(), &dd2, decay as f32, &wt[1]);
        kernels::narrow_all(s(&wt[1]), h(&wh[1]));
        kernels::relu_dropout_backward_narrow(
            s(&g1),
            s(&f1),
            scale(p[0]) as f32,
            s(&b[0]),
            h(&dd1),
        );
        gemm(&x.tr(), &dd1, decay as f32, &wt[0]);
        kernels::narrow_all(s(&wt[0]), h(&wh[0]));
        (loss, correct)
    }
}
