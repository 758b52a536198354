//! CPU kernels of the fused engine: plain loops over contiguous f32 memory that do in one
//! pass what libtorch does in several (ReLU + dropout, their backward + bias gradient,
//! softmax cross-entropy + accuracy + its gradient), and a fast random generator for masks.
use crate::cpu::parallel::{for_ranges, Disjoint};
use tch::{Device, Kind, Tensor};

/// Elements below which a loop is not worth a second thread (16 K f32: 64 KB, a few µs).
const ELEMENTS_PER_THREAD: usize = 16 * 1024;

/// xoshiro256++ (Blackman & Vigna), seeded through SplitMix64: 64 random bits in about a
/// nanosecond, enough for two dropout decisions.
#[derive(Debug, Clone)]
pub struct Rng {
    s: [u64; 4],
}

impl Rng {
    pub fn new(seed: u64) -> Rng {
        let mut x = seed;
        let mut next = || {
            x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = x;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        };
        Rng {
            s: [next(), next(), next(), next()],
        }
    }

    /// The generator's words (to continue it later with [`Rng::from_state`]).
    pub fn state(&self) -> [u64; 4] {
        self.s
    }

    /// A generator that continues where the one whose [`Rng::state`] this is stopped.
    pub fn from_state(s: [u64; 4]) -> Rng {
        Rng { s }
    }

    #[inline(always)]
    pub fn next_u64(&mut self) -> u64 {
        let s = &mut self.s;
        let result = s[0].wrapping_add(s[3]).rotate_left(23).wrapping_add(s[0]);
        let t = s[1] << 17;
        s[2] ^= s[0];
        s[3] ^= s[1];
        s[1] ^= s[2];
        s[0] ^= s[3];
        s[2] ^= t;
        s[3] = s[3].rotate_left(45);
        result
    }
}

/// The 32-bit threshold below which an element is dropped: P(drop) = p to within 2.4e-10
/// (for p < 1; p = 1 is handled apart).
pub fn drop_threshold(p: f64) -> u64 {
    (p * 4_294_967_296.0).round().min(4_294_967_295.0) as u64
}

/// Views a contiguous CPU f32 tensor as a slice.
///
/// # Safety
/// The tensor must stay alive and must not be resized while the slice is used, and no other
/// live slice may alias it mutably.
pub unsafe fn as_slice_mut<'a>(t: &Tensor) -> &'a mut [f32] {
    debug_assert!(t.device() == Device::Cpu && t.kind() == Kind::Float && t.is_contiguous());
    std::slice::from_raw_parts_mut(t.data_ptr() as *mut f32, t.numel())
}

/// Views a contiguous CPU bf16 tensor as its raw 16-bit words.
///
/// # Safety
/// As [`as_slice_mut`].
pub unsafe fn as_bf16_mut<'a>(t: &Tensor) -> &'a mut [u16] {
    debug_assert!(t.device() == Device::Cpu && t.kind() == Kind::BFloat16 && t.is_contiguous());
    std::slice::from_raw_parts_mut(t.data_ptr() as *mut u16, t.numel())
}

/// The bf16 number nearest to `x` (ties to even; NaN stays NaN), as libtorch rounds
/// (`c10::BFloat16`). Branch-free, so the loops over it vectorise.
#[inline(always)]
pub fn narrow(x: f32) -> u16 {
    let bits = x.to_bits();
    let rounded = (bits.wrapping_add(0x7fff + ((bits >> 16) & 1)) >> 16) as u16;
    let nan = (bits & 0x7fff_ffff) > 0x7f80_0000;
    if nan {
        0x7fc0
    } else {
        rounded
    }
}

/// Runs `$body` (a loop over slices) compiled for AVX-512 or AVX2 where the CPU has them.
macro_rules! vectorised {
    ($(#[$doc:meta])* $name:ident ($($arg:ident : $ty:ty),*) $body:block) => {
        $(#[$doc])*
        pub fn $name($($arg: $ty),*) {
            #[inline(always)]
            fn body($($arg: $ty),*) $body
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f,avx512bw")]
                unsafe fn avx512($($arg: $ty),*) { body($($arg),*) }
                #[target_feature(enable = "avx2")]
                unsafe fn avx2($($arg: $ty),*) { body($($arg),*) }
                if std::arch::is_x86_feature_detected!("avx512f")
                    && std::arch::is_x86_feature_detected!("avx512bw")
                {
                    // SAFETY: the CPU supports these features, checked just above.
                    return unsafe { avx512($($arg),*) };
                }
                if std::arch::is_x86_feature_detected!("avx2") {
                    // SAFETY: as above.
                    return unsafe { avx2($($arg),*) };
                }
            }
            body($($arg),*)
        }
    };
}

/// `dst ← src` from f32 to bf16, split over libtorch's threads.
pub fn narrow_all(src: &[f32], dst: &mut [u16]) {
    assert_eq!(
        src.len(),
        dst.len(),
        "narrow_all: as many bf16 words as f32 numbers"
    );
    let dst = Disjoint::new(dst);
    // SAFETY: the ranges of `for_ranges` are disjoint.
    for_ranges(src.len(), ELEMENTS_PER_THREAD, |r| unsafe {
        narrow_part(&src[r.clone()], dst.part(r))
    });
}

vectorised! {
    /// `dst ← src` from f32 to bf16, on the calling thread.
    narrow_part(src: &[f32], dst: &mut [u16]) {
        for (h, &x) in dst.iter_mut().zip(src) {
            *h = narrow(x);
        }
    }
}

/// SplitMix64's output function: element i of a call draws `mix(base + i·γ)`, a step of a
/// SplitMix64 stream (which passes BigCrush) started at a random `base` per call. Nothing is
/// carried from one element to the next, so the loop over a layer vectorises.
#[inline(always)]
fn splitmix(x: u64) -> u64 {
    let mut z = x;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

const GOLDEN_GAMMA: u64 = 0x9e37_79b9_7f4a_7c15;

/// In place, for a `[rows, bias.len()]` matrix: z ← max(z + b, 0) · keep · scale, each element
/// kept with probability 1 − p (the bias add, ReLU and dropout of a layer in one pass).
///
/// Element i is kept when the high 32 bits of `splitmix(base + i·γ)` reach p·2³², with a
/// fresh 64-bit `base` from `rng` per call (per layer and batch).
pub fn bias_relu_dropout(z: &mut [f32], bias: &[f32], p: f64, rng: &mut Rng) {
    bias_relu_dropout_into(z, bias, p, rng, None)
}

/// [`bias_relu_dropout`], and its result narrowed to bf16 into `half` in the same pass (what
/// the next layer's bf16 GEMM reads).
pub fn bias_relu_dropout_narrow(
    z: &mut [f32],
    bias: &[f32],
    p: f64,
    rng: &mut Rng,
    half: &mut [u16],
) {
    assert_eq!(z.len(), half.len(), "a bf16 word per number");
    bias_relu_dropout_into(z, bias, p, rng, Some(half))
}

fn bias_relu_dropout_into(
    z: &mut [f32],
    bias: &[f32],
    p: f64,
    rng: &mut Rng,
    half: Option<&mut [u16]>,
) {
    if p >= 1.0 {
        z.fill(0.0);
        if let Some(half) = half {
            half.fill(0);
        }
        return;
    }
    // p = 0 keeps everything: a threshold of 0 is never undercut.
    let threshold = drop_threshold(p);
    let scale = (1.0 / (1.0 - p)) as f32;
    let base = rng.next_u64();
    let cols = bias.len().max(1);
    let rows = z.len() / cols;
    let z = Disjoint::new(z);
    let half = half.map(Disjoint::new);
    // SAFETY: the ranges of `for_ranges` are disjoint.
    for_ranges(rows, ELEMENTS_PER_THREAD / cols, |rows| unsafe {
        let span = rows.start * cols..rows.end * cols;
        let part = z.part(span.clone());
        bias_relu_dropout_rows(part, bias, threshold, scale, base, rows.start as u64);
        if let Some(half) = &half {
            narrow_part(part, half.part(span));
        }
    });
}

/// [`bias_relu_dropout`] on the rows of one thread, the first of them row `first`.
fn bias_relu_dropout_rows(
    z: &mut [f32],
    bias: &[f32],
    threshold: u64,
    scale: f32,
    base: u64,
    first: u64,
) {
    let row_step = (bias.len() as u64).wrapping_mul(GOLDEN_GAMMA);
    let base = base.wrapping_add(first.wrapping_mul(row_step));
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512dq")
            && std::arch::is_x86_feature_detected!("avx512f")
        {
            // SAFETY: the CPU supports these features, checked just above.
            unsafe { bias_relu_dropout_avx512(z, bias, threshold, scale, base) };
            return;
        }
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: as above.
            unsafe { bias_relu_dropout_avx2(z, bias, threshold, scale, base) };
            return;
        }
    }
    bias_relu_dropout_loop(z, bias, threshold, scale, base);
}

/// Whether element `i` of a call whose stream starts at `base` is kept: the decision
/// [`bias_relu_dropout`] makes for it.
#[inline(always)]
fn kept(base: u64, i: u64, threshold: u64) -> bool {
    splitmix(base.wrapping_add(i.wrapping_mul(GOLDEN_GAMMA))) >> 32 >= threshold
}

/// The keep mask (1 kept, 0 dropped) that [`bias_relu_dropout`] would apply to a
/// `[rows, cols]` matrix with the same `rng`, drawing from `rng` as it does: the same
/// masks for the tensor-operation path, so that the two paths can be compared number for
/// number.
pub fn keep_mask(rows: usize, cols: usize, p: f64, rng: &mut Rng) -> Vec<f32> {
    if p >= 1.0 {
        return vec![0.0; rows * cols];
    }
    let threshold = drop_threshold(p);
    let base = rng.next_u64();
    (0..(rows * cols) as u64)
        .map(|i| kept(base, i, threshold) as u8 as f32)
        .collect()
}

#[inline(always)]
fn bias_relu_dropout_loop(z: &mut [f32], bias: &[f32], threshold: u64, scale: f32, base: u64) {
    // Counters are ranges and wrapping products, never `enumerate` or `*`: this crate keeps
    // overflow checks on in release (Cargo.toml), and a checked counter stops the loop from
    // vectorising (20× slower, measured with examples/kernel_timing).
    let cols = bias.len();
    let row_step = (cols as u64).wrapping_mul(GOLDEN_GAMMA);
    for (row, r) in z.chunks_exact_mut(cols).zip(0u64..) {
        let row_base = base.wrapping_add(r.wrapping_mul(row_step));
        for ((v, &b), j) in row.iter_mut().zip(bias).zip(0u64..) {
            let keep = kept(row_base, j, threshold);
            *v = if keep { (*v + b).max(0.0) * scale } else { 0.0 };
        }
    }
}

/// The same loop compiled for AVX-512 (64-bit lane multiplies).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512dq")]
unsafe fn bias_relu_dropout_avx512(
    z: &mut [f32],
    bias: &[f32],
    threshold: u64,
    scale: f32,
    base: u64,
) {
    bias_relu_dropout_loop(z, bias, threshold, scale, base)
}

/// The same loop compiled for AVX2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn bias_relu_dropout_avx2(
    z: &mut [f32],
    bias: &[f32],
    threshold: u64,
    scale: f32,
    base: u64,
) {
    bias_relu_dropout_loop(z, bias, threshold, scale, base)
}

/// Backward of ReLU + dropout for a `[rows, cols]` gradient: g ← g · scale where the layer's
/// output `d` was positive, 0 elsewhere; the column sums of the result (the bias gradient)
/// are added to `bias`.
pub fn relu_dropout_backward(g: &mut [f32], d: &[f32], scale: f32, bias: &mut [f32]) {
    // On one thread, vectorised: 7 µs for 256 × 256 (examples/kernel_timing). Split over two
    // threads by columns (the one split that keeps each column's sum in row order) it took
    // 60 µs on the machine that measured it, so it stays on one.
    let cols = bias.len().max(1);
    for (g, d) in g.chunks_exact_mut(cols).zip(d.chunks_exact(cols)) {
        relu_dropout_backward_row(g, d, scale, bias);
    }
}

/// [`relu_dropout_backward`] with its result narrowed to bf16 into `out` instead of written
/// back into `g` (what the layer's bf16 GEMMs read), in the same pass.
pub fn relu_dropout_backward_narrow(
    g: &[f32],
    d: &[f32],
    scale: f32,
    bias: &mut [f32],
    out: &mut [u16],
) {
    assert_eq!(g.len(), out.len(), "a bf16 word per number");
    let cols = bias.len().max(1);
    let rows = g.chunks_exact(cols).zip(d.chunks_exact(cols));
    for ((g, d), out) in rows.zip(out.chunks_exact_mut(cols)) {
        relu_dropout_backward_row_narrow(g, d, scale, bias, out);
    }
}

vectorised! {
    /// One row of [`relu_dropout_backward_narrow`].
    relu_dropout_backward_row_narrow(g: &[f32], d: &[f32], scale: f32, bias: &mut [f32], out: &mut [u16]) {
        for (((&gv, &dv), b), h) in g.iter().zip(d).zip(bias).zip(out) {
            let v = if dv > 0.0 { gv * scale } else { 0.0 };
            *b += v;
            *h = narrow(v);
        }
    }
}

vectorised! {
    /// One row of [`relu_dropout_backward`].
    relu_dropout_backward_row(g: &mut [f32], d: &[f32], scale: f32, bias: &mut [f32]) {
        for ((gv, &dv), b) in g.iter_mut().zip(d).zip(bias) {
            let v = if dv > 0.0 { *gv * scale } else { 0.0 };
            *gv = v;
            *b += v;
        }
    }
}

/// Adds the column sums of a `[rows, cols]` matrix to `bias`.
pub fn add_column_sums(g: &[f32], bias: &mut [f32]) {
    for row in g.chunks_exact(bias.len()) {
        for (b, &v) in bias.iter_mut().zip(row) {
            *b += v;
        }
    }
}

/// Softmax cross-entropy over `[rows, classes]` logits `z + bias`, in one pass per row:
/// returns the sum of the losses and the number of correct arg-maxes, and overwrites `z` with
/// `factor · (softmax − one_hot(y))`, the gradient of `factor · Σ loss`.
pub fn bias_softmax_cross_entropy(
    z: &mut [f32],
    bias: &[f32],
    y: &[i64],
    factor: f32,
) -> (f64, i64) {
    let classes = bias.len();
    let mut loss = 0.0f64;
    let mut correct = 0i64;
    for (row, &label) in z.chunks_exact_mut(classes).zip(y) {
        row.iter_mut().zip(bias).for_each(|(v, b)| *v += b);
        let (mut best, mut max) = (0usize, row[0]);
        for (j, &v) in row.iter().enumerate().skip(1) {
            if v > max {
                best = j;
                max = v;
            }
        }
        correct += (best as i64 == label) as i64;
        let label = label as usize;
        let z_label = row[label] - max;
        let mut sum = 0.0f32;
        for v in row.iter_mut() {
            *v = (*v - max).exp();
            sum += *v;
        }
        loss += (sum.ln() - z_label) as f64;
        let inv = factor / sum;
        for v in row.iter_mut() {
            *v *= inv;
        }
        row[label] -= factor;
    }
    (loss, correct)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `n` numbers spread over [−1, 1), drawn from `rng`.
    fn random(rng: &mut Rng, n: usize) -> Vec<f32> {
        (0..n)
            .map(|_| (rng.next_u64() >> 40) as f32 / 8e6 - 1.0)
            .collect()
    }

    #[test]
    fn relu_dropout_statistics() {
        let mut rng = Rng::new(1);
        for p in [0.2, 0.5] {
            let mut z = vec![0.5f32; 1_000_000];
            bias_relu_dropout(&mut z, &[0.5; 100], p, &mut rng);
            let zeros = z.iter().filter(|&&v| v == 0.0).count() as f64 / z.len() as f64;
            assert!((zeros - p).abs() < 0.003, "p={p}: {zeros}");
            let scale = (1.0 / (1.0 - p)) as f32;
            assert!(z.iter().all(|&v| v == 0.0 || v == scale));
        }
        let mut z = vec![-1.0f32, 2.0];
        bias_relu_dropout(&mut z, &[0.5, -0.5], 0.0, &mut rng);
        assert_eq!(z, [0.0, 1.5]);
    }

    #[test]
    fn keep_mask_is_the_mask_the_kernel_applies() {
        // 256 × 256 is split over two threads: the masks must not depend on the split.
        tch::set_num_threads(2);
        for (p, (rows, cols)) in [0.0, 0.2, 0.5, 1.0]
            .into_iter()
            .zip([(7, 33), (256, 256)].repeat(2))
        {
            let mut kernel_rng = Rng::new(9);
            let mut mask_rng = kernel_rng.clone();
            let mut z = vec![1.0f32; rows * cols];
            bias_relu_dropout(&mut z, &vec![0.0; cols], p, &mut kernel_rng);
            let mask = keep_mask(rows, cols, p, &mut mask_rng);
            let scale = if p >= 1.0 {
                0.0
            } else {
                (1.0 / (1.0 - p)) as f32
            };
            let expected: Vec<f32> = mask.iter().map(|&m| m * scale).collect();
            assert_eq!(z, expected, "p={p}");
            assert_eq!(
                kernel_rng.next_u64(),
                mask_rng.next_u64(),
                "p={p}: both draw the same from the generator"
            );
        }
    }

    #[test]
    fn softmax_cross_entropy_matches_the_formula() {
        let mut logits = vec![1.0f32, 1.0, 0.5, 3.0, -2.0, 0.0];
        let (loss, correct) =
            bias_softmax_cross_entropy(&mut logits, &[0.0, 1.0, 0.0], &[1, 2], 1.0);
        let lse = |r: [f32; 3]| r.iter().map(|v| v.exp()).sum::<f32>().ln();
        let expected = (lse([1.0, 2.0, 0.5]) - 2.0) + (lse([3.0, -1.0, 0.0]) - 0.0);
        assert!((loss - expected as f64).abs() < 1e-5);
        assert_eq!(correct, 1);
        let row0_sum: f32 = logits[..3].iter().sum();
        assert!(row0_sum.abs() < 1e-6, "softmax − one-hot sums to 0");
        assert!(logits[1] < 0.0 && logits[0] > 0.0);
    }

    #[test]
    fn bf16_conversions_round_as_libtorch_does() {
        let values: Vec<f32> = (0..20_000)
            .map(|i| ((i as f32) * 0.37 - 3000.0) * 1.000_123_4)
            .chain([0.0, -0.0, 1e-40, f32::MAX, f32::INFINITY, f32::NEG_INFINITY])
            .collect();
        let theirs = Tensor::from_slice(&values).to_kind(Kind::BFloat16);
        let mut ours = vec![0u16; values.len()];
        narrow_all(&values, &mut ours);
        // SAFETY: `theirs` is a contiguous CPU bf16 tensor alive for the slice's use.
        let theirs_bits = unsafe { as_bf16_mut(&theirs) }.to_vec();
        assert_eq!(ours, theirs_bits);
        let back: Vec<f32> = ours
            .iter()
            .map(|&h| f32::from_bits(u32::from(h) << 16))
            .collect();
        let torch_back = Vec::<f32>::try_from(theirs.to_kind(Kind::Float)).unwrap();
        assert_eq!(back, torch_back);
        assert_eq!(narrow(f32::NAN), 0x7fc0);
    }

    /// The fused narrowing kernels give what the kernel and then `narrow_all` give, bit for bit
    /// (256 × 256: dropout split over two threads).
    #[test]
    fn the_narrowing_kernels_are_the_kernels_then_narrow_all() {
        tch::set_num_threads(2);
        let (rows, cols) = (256, 256);
        let mut rng = Rng::new(5);
        let (z0, d, b0) = (
            random(&mut rng, rows * cols),
            random(&mut rng, rows * cols),
            random(&mut rng, cols),
        );
        for p in [0.0, 0.5, 1.0] {
            let (mut a, mut b) = (z0.clone(), z0.clone());
            let (mut half_a, mut half_b) = (vec![1u16; a.len()], vec![1u16; b.len()]);
            bias_relu_dropout(&mut a, &b0, p, &mut Rng::new(7));
            narrow_all(&a, &mut half_a);
            bias_relu_dropout_narrow(&mut b, &b0, p, &mut Rng::new(7), &mut half_b);
            assert_eq!((&a, &half_a), (&b, &half_b), "p={p}");
        }
        let (mut g, mut bias_a, mut bias_b) = (z0.clone(), b0.clone(), b0.clone());
        let (mut half_a, mut half_b) = (vec![0u16; g.len()], vec![0u16; g.len()]);
        relu_dropout_backward_narrow(&g, &d, 1.25, &mut bias_b, &mut half_b);
        relu_dropout_backward(&mut g, &d, 1.25, &mut bias_a);
        narrow_all(&g, &mut half_a);
        assert_eq!((bias_a, half_a), (bias_b, half_b));
    }

    #[test]
    fn backward_masks_and_sums_columns() {
        let mut g = vec![1.0f32, 2.0, 3.0, 4.0];
        let d = [0.5f32, 0.0, 0.0, 1.0];
        let mut bias = vec![0.0f32; 2];
        relu_dropout_backward(&mut g, &d, 2.0, &mut bias);
        assert_eq!(g, [2.0, 0.0, 0.0, 8.0]);
        assert_eq!(bias, [2.0, 8.0]);
        // A full layer of random numbers (the vectorised loop) against the formula.
        let (rows, cols) = (256, 256);
        let mut rng = Rng::new(3);
        let (g0, d, b0) = (
            random(&mut rng, rows * cols),
            random(&mut rng, rows * cols),
            random(&mut rng, cols),
        );
        let (mut g, mut bias) = (g0.clone(), b0.clone());
        relu_dropout_backward(&mut g, &d, 1.25, &mut bias);
        let (mut g_ref, mut b_ref) = (g0, b0);
        for r in 0..rows {
            for c in 0..cols {
                let v = if d[r * cols + c] > 0.0 {
                    g_ref[r * cols + c] * 1.25
                } else {
                    0.0
                };
                g_ref[r * cols + c] = v;
                b_ref[c] += v;
            }
        }
        assert_eq!(g, g_ref);
        assert_eq!(bias, b_ref);
    }
}
