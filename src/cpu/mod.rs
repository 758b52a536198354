//! Which CPU kernels libtorch runs, and `--reproducible`, which fixes them.
//!
//! On the CPU the same program, seed and data give other last digits on other machines, for
//! three reasons:
//! - **MKL**, libtorch's BLAS, picks its GEMM kernels (its *code branch*) for the CPU it finds:
//!   AVX-512 ones on an Intel Xeon, others on an AMD EPYC; each sums in its own order;
//! - **ATen** picks the vector width of its own kernels (element-wise operations, reductions,
//!   random numbers): AVX-512 where the CPU has it, AVX2 otherwise;
//! - both split work between **threads**, and the split moves the summation order too.
//!
//! None of this touches parity with PyTorch on one machine: both run the very same kernels.
//!
//! `--reproducible` fixes all three before libtorch starts: MKL's `COMPATIBLE` branch (SSE2
//! without approximate reciprocals; Intel documents branches other than `AUTO` and `COMPATIBLE`
//! as honoured on Intel processors only, so this is the one branch that is the same on Intel and
//! AMD), with `MKL_DYNAMIC=FALSE` (MKL does not change its thread count by itself), ATen's AVX2
//! kernels (every x86-64 CPU of the last ten years has AVX2), and [`REPRODUCIBLE_THREADS`]
//! threads unless `--threads` says otherwise. It costs time (GEMMs in SSE2): `scripts/bench.sh
//! --reproducible` measures how much. [`KernelPaths`] records in `run.json` what a run really
//! used, whichever way it was chosen (the flag, or `MKL_CBWR` / `ATEN_CPU_CAPABILITY` set by hand).
use serde::Serialize;

pub mod parallel;

/// MKL's code branch under `--reproducible` (the value of `MKL_CBWR`).
pub const REPRODUCIBLE_MKL_BRANCH: &str = "COMPATIBLE";
/// ATen's CPU capability under `--reproducible` (the value of `ATEN_CPU_CAPABILITY`).
pub const REPRODUCIBLE_ATEN_CAPABILITY: &str = "avx2";
/// Intra-op threads under `--reproducible` when `--threads` is not given: the README's numbers
/// were made with two.
pub const REPRODUCIBLE_THREADS: usize = 2;

static REPRODUCIBLE: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Whether [`use_reproducible_kernels`] ran in this process.
pub fn reproducible() -> bool {
    REPRODUCIBLE.load(std::sync::atomic::Ordering::Relaxed)
}

/// The environment `--reproducible` sets, as (variable, value).
pub const REPRODUCIBLE_ENVIRONMENT: [(&str, &str); 3] = [
    ("MKL_CBWR", REPRODUCIBLE_MKL_BRANCH),
    ("MKL_DYNAMIC", "FALSE"),
    ("ATEN_CPU_CAPABILITY", REPRODUCIBLE_ATEN_CAPABILITY),
];

/// Asks MKL and ATen for the reproducible kernels ([`REPRODUCIBLE_ENVIRONMENT`]), replacing
/// whatever the environment said. Call it before libtorch runs its first operator (MKL and ATen
/// read these variables once, at their first use) and before any other thread starts (it sets
/// environment variables).
pub fn use_reproducible_kernels() {
    REPRODUCIBLE.store(true, std::sync::atomic::Ordering::Relaxed);
    for (name, value) in REPRODUCIBLE_ENVIRONMENT {
        std::env::set_var(name, value);
    }
}

/// The CPU kernels a run used, for `run.json`.
#[derive(Serialize, Debug, Clone, PartialEq, Eq)]
pub struct KernelPaths {
    /// Whether `--reproducible` chose them.
    pub reproducible: bool,
    /// MKL's code branch: `COMPATIBLE`, `AVX2`, `AVX512`, … ("unknown" if this libtorch has no
    /// MKL).
    pub mkl_branch: String,
    /// Whether that branch is fixed by MKL's conditional numerical reproducibility (`MKL_CBWR`)
    /// or is the one MKL picked for this CPU.
    pub mkl_branch_fixed: bool,
    /// ATen's CPU capability: `DEFAULT`, `AVX2` or `AVX512` ("unknown" if not compiled in).
    pub aten_capability: String,
    /// Intra-op threads (libtorch's, which it passes on to MKL).
    pub threads: i32,
}

impl KernelPaths {
    /// What this process runs now. MKL and ATen settle their choices at their first use, so
    /// call it once libtorch has run an operator (it runs one itself to be sure).
    pub fn current() -> Self {
        let _ = tch::Tensor::ones([2, 2], (tch::Kind::Float, tch::Device::Cpu)).mm(
            &tch::Tensor::ones([2, 2], (tch::Kind::Float, tch::Device::Cpu)),
        );
        let (mkl_branch, mkl_branch_fixed) = mkl::branch();
        KernelPaths {
            reproducible: reproducible(),
            mkl_branch,
            mkl_branch_fixed,
            aten_capability: aten_capability(),
            threads: tch::get_num_threads(),
        }
    }
}

/// ATen's CPU capability (`at::get_cpu_capability()`), through `src/cpu/aten.cpp`.
pub fn aten_capability() -> String {
    #[cfg(d2l_aten_capability)]
    {
        extern "C" {
            fn d2l_aten_cpu_capability(out: *mut std::ffi::c_char, capacity: usize) -> usize;
        }
        let mut buffer = [0u8; 32];
        // SAFETY: the function writes at most `capacity` bytes, NUL included, into `buffer`.
        let n = unsafe { d2l_aten_cpu_capability(buffer.as_mut_ptr().cast(), buffer.len()) };
        if n > 0 && n < buffer.len() {
            return String::from_utf8_lossy(&buffer[..n]).into_owned();
        }
    }
    "unknown".into()
}

/// `c ← beta·c + a·b` for matrices `a` `[m, k]` and `b` `[k, n]`, both f32 or both bf16, and
/// an f32 `c` `[m, n]`: the products summed and written in f32. In bf16-mixed training that
/// means no bf16 result to widen, and a weight update that lands in the f32 weight itself.
///
/// It calls MKL (`sgemm`, or `gemm_bf16bf16f32`, on AMX where the CPU has it) straight from
/// the libtorch it is linked with, skipping libtorch's dispatch (10–20 µs a call, as much as
/// the output layer's small GEMMs take); in a libtorch without MKL it runs libtorch's f32 GEMM
/// (on bf16 operands widened to f32: the same products, exactly). `a` and `b` may each be a
/// contiguous matrix, rows of one, or the transpose of either (`.tr()`); `c` is contiguous.
pub fn gemm(a: &tch::Tensor, b: &tch::Tensor, beta: f32, c: &tch::Tensor) {
    let blas = match a.kind() {
        tch::Kind::BFloat16 => mkl::gemm_bf16(),
        _ => mkl::sgemm(),
    };
    gemm_with(blas, a, b, beta, c)
}

/// [`gemm`] with MKL's function given (`None`: libtorch's), so that tests can compare them.
pub fn gemm_with(
    blas: Option<mkl::Gemm>,
    a: &tch::Tensor,
    b: &tch::Tensor,
    beta: f32,
    c: &tch::Tensor,
) {
    use tch::{Device, Kind};
    let (sa, sb, sc) = (a.size(), b.size(), c.size());
    assert!(
        a.kind() == b.kind()
            && matches!(a.kind(), Kind::Float | Kind::BFloat16)
            && c.kind() == Kind::Float,
        "gemm: f32 or bf16 operands and an f32 result"
    );
    assert!(
        [a, b, c].iter().all(|t| t.device() == Device::Cpu),
        "gemm runs on the CPU"
    );
    assert!(
        sa.len() == 2
            && sb.len() == 2
            && sa[1] == sb[0]
            && sc == [sa[0], sb[1]]
            && c.is_contiguous(),
        "gemm: shapes {sa:?} · {sb:?} → {sc:?}"
    );
    if let (Some(blas), Some((ta, lda)), Some((tb, ldb))) = (blas, mkl::layout(a), mkl::layout(b)) {
        let int = |v: i64| i32::try_from(v).expect("a dimension within MKL's 32-bit integers");
        let (m, n, k) = (int(sa[0]), int(sb[1]), int(sa[1]));
        let (lda, ldb, ldc, alpha) = (int(lda), int(ldb), n.max(1), 1.0f32);
        // Fortran BLAS is column-major: the row-major C = A·B is the column-major Cᵀ = Bᵀ·Aᵀ,
        // whose operands are the very same memory, with the same transposition flags.
        // SAFETY: the shapes, flags and leading dimensions describe the tensors' memory
        // (checked above and by `layout`), alive and unaliased for the call; `blas` is the
        // MKL function for the operands' type; `c` is f32 and contiguous.
        unsafe {
            blas(
                &tb,
                &ta,
                &n,
                &m,
                &k,
                &alpha,
                b.data_ptr(),
                &ldb,
                a.data_ptr(),
                &lda,
                &beta,
                c.data_ptr() as *mut f32,
                &ldc,
            )
        }
        return;
    }
    let (a, b) = (a.to_kind(Kind::Float), b.to_kind(Kind::Float));
    if beta == 0.0 {
        let _ = a.mm_out(c, &b);
    } else {
        let mut c = c.shallow_clone();
        if beta != 1.0 {
            let _ = c.g_mul_scalar_(f64::from(beta));
        }
        let _ = c.addmm_(&a, &b);
    }
}

/// The address of the C symbol `name` among the loaded libraries (libtorch's, with its MKL and
/// OpenMP runtime), if one has it.
fn symbol(name: &std::ffi::CStr) -> Option<*mut std::ffi::c_void> {
    // SAFETY: dlsym with RTLD_DEFAULT and a NUL-terminated name only looks a symbol up.
    let p = unsafe { libc::dlsym(libc::RTLD_DEFAULT, name.as_ptr()) };
    (!p.is_null()).then_some(p)
}

/// MKL's functions, looked up at run time (libtorch's bundled MKL exports them; a libtorch
/// built without MKL does not have them): its GEMMs, and its service functions for conditional
/// numerical reproducibility.
pub mod mkl {
    use std::ffi::CStr;

    /// The Fortran signature of MKL's `sgemm` and `gemm_bf16bf16f32` (LP64: 32-bit integers;
    /// the operands are f32 or bf16 words, the result f32): transa, transb, m, n, k, alpha, a,
    /// lda, b, ldb, beta, c, ldc, all by reference.
    pub type Gemm = unsafe extern "C" fn(
        *const u8,
        *const u8,
        *const i32,
        *const i32,
        *const i32,
        *const f32,
        *const std::ffi::c_void,
        *const i32,
        *const std::ffi::c_void,
        *const i32,
        *const f32,
        *mut f32,
        *const i32,
    );

    fn gemm_named(
        name: &'static CStr,
        cell: &'static std::sync::OnceLock<Option<Gemm>>,
    ) -> Option<Gemm> {
        *cell.get_or_init(|| {
            // SAFETY: the symbol, where present, is MKL's function of that signature.
            symbol(name).map(|p| unsafe { std::mem::transmute::<*mut std::ffi::c_void, Gemm>(p) })
        })
    }

    /// MKL's f32 GEMM, if the linked libtorch exports it.
    pub fn sgemm() -> Option<Gemm> {
        static GEMM: std::sync::OnceLock<Option<Gemm>> = std::sync::OnceLock::new();
        gemm_named(c"sgemm_", &GEMM)
    }

    /// MKL's GEMM of bf16 operands with f32 sums and results, if the linked libtorch exports it.
    pub fn gemm_bf16() -> Option<Gemm> {
        static GEMM: std::sync::OnceLock<Option<Gemm>> = std::sync::OnceLock::new();
        gemm_named(c"gemm_bf16bf16f32_", &GEMM)
    }

    /// An operand's transposition flag (Fortran's `N` or `T`) and leading dimension: a
    /// contiguous matrix or rows of one is read as it is, the transpose of one (strides
    /// `[1, ld]`) transposed; anything else is `None`.
    pub(super) fn layout(t: &tch::Tensor) -> Option<(u8, i64)> {
        let (size, stride) = (t.size(), t.stride());
        if stride[1] == 1 && stride[0] >= size[1].max(1) {
            Some((b'N', stride[0]))
        } else if stride[0] == 1 && stride[1] >= size[0].max(1) {
            Some((b'T', stride[1]))
        } else {
            None
        }
    }

    const MKL_CBWR_BRANCH: i32 = 1;
    const MKL_CBWR_BRANCH_OFF: i32 = 1;

    type Get = unsafe extern "C" fn(i32) -> i32;
    type GetAuto = unsafe extern "C" fn() -> i32;

    use super::symbol;

    /// The names of `mkl_service.h`'s branch values.
    pub fn name(branch: i32) -> String {
        match branch {
            2 => "AUTO",
            3 => "COMPATIBLE",
            4 | 5 => "SSE2",
            6 => "SSSE3",
            7 => "SSE4_1",
            8 => "SSE4_2",
            9 => "AVX",
            10 => "AVX2",
            11 => "AVX512_MIC",
            12 => "AVX512",
            13 => "AVX512_MIC_E1",
            14 => "AVX512_E1",
            other => return format!("branch {other}"),
        }
        .into()
    }

    /// (the branch MKL runs, whether `MKL_CBWR` fixed it).
    pub fn branch() -> (String, bool) {
        let (Some(get), Some(auto)) = (
            symbol(c"mkl_serv_cbwr_get"),
            symbol(c"mkl_serv_cbwr_get_auto_branch"),
        ) else {
            return ("unknown".into(), false);
        };
        // SAFETY: both are MKL's `int f(int)` and `int f(void)` service functions.
        let (get, auto) = unsafe {
            (
                std::mem::transmute::<*mut std::ffi::c_void, Get>(get),
                std::mem::transmute::<*mut std::ffi::c_void, GetAuto>(auto),
            )
        };
        // SAFETY: plain queries of MKL's settings.
        let (fixed, auto) = unsafe { (get(MKL_CBWR_BRANCH), auto()) };
        match fixed {
            MKL_CBWR_BRANCH_OFF => (name(auto), false),
            2 => (name(auto), true),
            branch => (name(branch), true),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// MKL's GEMMs called straight agree with libtorch's for every layout the fused engine
    /// passes (rows of a matrix, transposes) and for β = 0, 1 and a decay factor. Both sum the
    /// same products in f32 in different orders: 1e-5 relative is ~100 f32 roundings, far
    /// below what a wrong flag or leading dimension gives (wrong numbers, of order 1).
    #[test]
    fn gemm_calls_mkl_as_libtorch_computes() {
        use tch::{Device, Kind, Tensor};
        tch::manual_seed(0);
        for kind in [Kind::Float, Kind::BFloat16] {
            let blas = match kind {
                Kind::Float => mkl::sgemm(),
                _ => mkl::gemm_bf16(),
            };
            assert!(blas.is_some(), "the PyPI libtorch carries MKL ({kind:?})");
            let r = |shape: &[i64]| Tensor::randn(shape, (kind, Device::Cpu));
            let (x, w, g) = (r(&[256, 784]), r(&[200, 784]), r(&[256, 200]));
            let rows = |t: &Tensor| t.narrow(0, 0, 96);
            // (a, b) as the engine multiplies them: x·Wᵀ, g·W, gᵀ·x, on full and partial batches.
            let cases = [
                (x.shallow_clone(), w.tr()),
                (rows(&x), w.tr()),
                (g.shallow_clone(), w.shallow_clone()),
                (rows(&g), w.shallow_clone()),
                (g.tr(), x.shallow_clone()),
                (rows(&g).tr(), rows(&x)),
            ];
            for (i, (a, b)) in cases.iter().enumerate() {
                for beta in [0.0f32, 1.0, 0.99] {
                    let start =
                        Tensor::randn([a.size()[0], b.size()[1]], (Kind::Float, Device::Cpu));
                    let (ours, theirs) = (start.copy(), start.copy());
                    gemm_with(blas, a, b, beta, &ours);
                    gemm_with(None, a, b, beta, &theirs);
                    let scale = f64::try_from(theirs.abs().max()).unwrap();
                    let error = f64::try_from((&ours - &theirs).abs().max()).unwrap();
                    assert!(
                        error <= 1e-5 * scale,
                        "{kind:?} case {i} β={beta}: {error} of {scale}"
                    );
                }
            }
        }
    }

    #[test]
    fn the_branch_names_are_mkl_services() {
        assert_eq!(mkl::name(3), "COMPATIBLE");
        assert_eq!(mkl::name(10), "AVX2");
        assert_eq!(mkl::name(12), "AVX512");
        assert_eq!(mkl::name(99), "branch 99");
    }
}
