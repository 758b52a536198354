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

/// MKL's service functions for conditional numerical reproducibility, looked up at run time
/// (libtorch's bundled MKL exports them; a libtorch built without MKL does not have them).
mod mkl {
    use std::ffi::CStr;

    const MKL_CBWR_BRANCH: i32 = 1;
    const MKL_CBWR_BRANCH_OFF: i32 = 1;

    type Get = unsafe extern "C" fn(i32) -> i32;
    type GetAuto = unsafe extern "C" fn() -> i32;

    fn symbol(name: &CStr) -> Option<*mut std::ffi::c_void> {
        // SAFETY: dlsym with RTLD_DEFAULT and a NUL-terminated name only looks a symbol up.
        let p = unsafe { libc::dlsym(libc::RTLD_DEFAULT, name.as_ptr()) };
        (!p.is_null()).then_some(p)
    }

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

    #[test]
    fn the_branch_names_are_mkl_services() {
        assert_eq!(mkl::name(3), "COMPATIBLE");
        assert_eq!(mkl::name(10), "AVX2");
        assert_eq!(mkl::name(12), "AVX512");
        assert_eq!(mkl::name(99), "branch 99");
    }
}
