//! The CPU kernels' step in bf16-mixed precision (`--precision bf16-mixed`): every GEMM takes
//! bf16 operands (oneDNN's bf16 kernels, on AMX where the CPU has it) and accumulates in f32,
//! while the weights, the biases, SGD's update and every element-wise step stay f32.
//!
//! libtorch's CPU GEMMs write bf16 results from bf16 operands, so each GEMM writes a bf16
//! buffer: the element-wise kernels widen it into their f32 buffer, work there, and narrow the
//! result back (rounding as libtorch does) for the next GEMM. The weight gradient (bf16, as
//! PyTorch's autocast makes it) is added to the f32 weight and the weight's bf16 copy made for
//! the next step, in one pass. The training inputs are cast to bf16 once per run.
use super::kernels;
use super::{scale, Buffers};
use tch::{Device, Kind, Tensor};

/// The bf16 copies of one run: the training inputs, the weights, and per batch the GEMMs'
/// results and the weight gradients.
pub(super) struct Half {
    inputs: Tensor,
    w: [Tensor; 3],
    x: Tensor,
    z: [Tensor; 3],
    dd: [Tensor; 2],
    grad: [Tensor; 3],
}

const BF16: (Kind, Device) = (Kind::BFloat16, Device::Cpu);

impl Half {
    /// For weights `w` and batches of `batch` rows of `inputs`.
    pub(super) fn new(w: &[Tensor; 3], inputs: &Tensor, batch: i64) -> Half {
        let dims: Vec<i64> = w.iter().map(|w| w.size()[0]).collect();
        Half {
            inputs: inputs.to_kind(Kind::BFloat16),
            w: w.each_ref().map(|w| w.to_kind(Kind::BFloat16)),
            x: Tensor::empty([batch, inputs.size()[1]], BF16),
            z: [0, 1, 2].map(|k| Tensor::empty([batch, dims[k]], BF16)),
            dd: [0, 1].map(|k| Tensor::empty([batch, dims[k]], BF16)),
            grad: w.each_ref().map(|w| Tensor::empty(w.size(), BF16)),
        }
    }

    /// Whether these copies were made for `inputs` (the same split, epoch after epoch).
    pub(super) fn of(&self, inputs: &Tensor) -> bool {
        self.inputs.size() == inputs.size()
    }
}

/// One step of [`super::FusedMlp`]'s CPU kernels in bf16-mixed: the same steps as
/// `cpu_step`, the GEMMs in bf16. Returns the batch's loss sum and correct count.
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
    let (x, z1, z2, z3) = (
        rows(&half.x),
        rows(&half.z[0]),
        rows(&half.z[1]),
        rows(&half.z[2]),
    );
    let (dd1, dd2) = (rows(&half.dd[0]), rows(&half.dd[1]));
    let (f1, f2, f3) = (rows(&f32s.z[0]), rows(&f32s.z[1]), rows(&f32s.z[2]));
    let (g1, g2) = (rows(&f32s.dd[0]), rows(&f32s.dd[1]));
    let _ = half.inputs.index_select_out(&x, 0, index);
    let wh = &half.w;
    // SAFETY: every slice views a contiguous CPU buffer (f32 or bf16) owned by `half`, `f32s`
    // or a parameter, alive for this step, and no two live slices alias; `index` is a
    // contiguous i64 tensor.
    unsafe {
        let picked = std::slice::from_raw_parts(index.data_ptr() as *const i64, n as usize);
        f32s.y.clear();
        f32s.y.extend(picked.iter().map(|&i| labels[i as usize]));
        let (s, h) = (kernels::as_slice_mut, kernels::as_bf16_mut);
        // Forward: each layer's GEMM in bf16; its bias, ReLU and dropout on the f32 copy,
        // which the backward pass keeps; the bf16 copy feeds the next GEMMs.
        let _ = x.mm_out(&z1, &wh[0].tr());
        kernels::widen_all(h(&z1), s(&f1));
        kernels::bias_relu_dropout(s(&f1), s(&b[0]), p[0], rng);
        kernels::narrow_all(s(&f1), h(&z1));
        let _ = z1.mm_out(&z2, &wh[1].tr());
        kernels::widen_all(h(&z2), s(&f2));
        kernels::bias_relu_dropout(s(&f2), s(&b[1]), p[1], rng);
        kernels::narrow_all(s(&f2), h(&z2));
        let _ = z2.mm_out(&z3, &wh[2].tr());
        kernels::widen_all(h(&z3), s(&f3));
        let factor = (-lr / n as f64) as f32;
        let (loss, correct) =
            kernels::bias_softmax_cross_entropy(s(&f3), s(&b[2]), &f32s.y, factor);
        // f3 holds g3 = −lr · ∂loss/∂z3: its bf16 copy feeds the GEMMs, the bias takes f32.
        kernels::narrow_all(s(&f3), h(&z3));
        kernels::add_column_sums(s(&f3), s(&b[2]));
        let _ = z3.mm_out(&dd2, &wh[2]);
        let _ = z3.tr().mm_out(&half.grad[2], &z2);
        kernels::widen_all(h(&dd2), s(&g2));
        kernels::relu_dropout_backward(s(&g2), s(&f2), scale(p[1]) as f32, s(&b[1]));
        kernels::narrow_all(s(&g2), h(&dd2));
        let _ = dd2.mm_out(&dd1, &wh[1]);
        let _ = dd2.tr().mm_out(&half.grad[1], &z1);
        kernels::widen_all(h(&dd1), s(&g1));
        kernels::relu_dropout_backward(s(&g1), s(&f1), scale(p[0]) as f32, s(&b[0]));
        kernels::narrow_all(s(&g1), h(&dd1));
        let _ = dd1.tr().mm_out(&half.grad[0], &x);
        // SGD on the f32 weights, and their bf16 copies for the next step, in one pass each.
        for ((w, g), copy) in w.iter().zip(&half.grad).zip(&half.w) {
            kernels::sgd_step_bf16(s(w), h(g), decay as f32, h(copy));
        }
        (loss, correct)
    }
}
