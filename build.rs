//! Makes the binary find libtorch at run time, keeps libtorch_cuda linked, records which
//! libtorch was linked, and compiles the CUDA shim (CUDA graphs, runtime versions) when the
//! linked libtorch has CUDA.
//!
//! torch-sys reports the directory of the libtorch it linked as `DEP_TCH_LIBTORCH_LIB`.
//! Without an rpath to it the binary only starts with `LD_LIBRARY_PATH` set, and without
//! `--no-as-needed` the linker drops `libtorch_cuda.so` (nothing references it by symbol),
//! so CUDA is never available even on a GPU machine.
//!
//! The shim (`src/cuda/shim.cpp`) needs the CUDA runtime's headers and library. With the PyPI
//! wheel they sit beside torch in `site-packages/nvidia/cu13` (the crt/ headers come from the
//! package nvidia-cuda-crt, which scripts/setup.sh installs); elsewhere `CUDA_HOME` is used.
//! Without them the crate builds without CUDA graphs and says so.
use std::path::{Path, PathBuf};

fn main() {
    println!("cargo:rerun-if-env-changed=DEP_TCH_LIBTORCH_LIB");
    println!("cargo:rerun-if-env-changed=CUDA_HOME");
    println!("cargo:rerun-if-changed=src/cuda/shim.cpp");
    println!("cargo:rerun-if-changed=src/cpu/aten.cpp");
    println!("cargo:rerun-if-changed=src/cpu/generator.cpp");
    println!("cargo:rerun-if-changed=src/cpu/optimizer.cpp");
    println!("cargo:rerun-if-changed=src/cpu/autocast.cpp");
    println!("cargo::rustc-check-cfg=cfg(d2l_cuda_shim)");
    println!("cargo::rustc-check-cfg=cfg(d2l_aten_capability)");
    let dir = std::env::var("DEP_TCH_LIBTORCH_LIB").unwrap_or_default();
    let lib = Path::new(&dir);
    let has_cuda = !dir.is_empty() && lib.join("libtorch_cuda.so").exists();
    if !dir.is_empty() {
        println!("cargo:rustc-link-arg=-Wl,-rpath,{dir}");
    }
    if !dir.is_empty() {
        build_aten_capability(lib);
    }
    if has_cuda {
        println!("cargo:rustc-link-arg=-Wl,--no-as-needed");
        println!("cargo:rustc-link-arg=-ltorch_cuda");
        println!("cargo:rustc-link-arg=-Wl,--as-needed");
        match cuda_toolkit(lib) {
            Some(cuda) => build_shim(lib, &cuda),
            None => println!(
                "cargo:warning=CUDA graphs disabled: the CUDA headers (crt/host_defines.h) were not \
                 found beside torch (site-packages/nvidia/cu13) or in CUDA_HOME; run \
                 scripts/setup.sh, which installs nvidia-cuda-crt"
            ),
        }
    }
    println!(
        "cargo:rustc-env=D2L_LIBTORCH_CUDA={}",
        if has_cuda { "1" } else { "0" }
    );
    println!(
        "cargo:rustc-env=D2L_LIBTORCH_VERSION={}",
        libtorch_version(lib)
    );
    println!("cargo:rustc-env=D2L_LIBTORCH_LIB={dir}");
}

/// The include and library directories of the CUDA runtime.
struct Cuda {
    include: PathBuf,
    lib: PathBuf,
}

fn cuda_toolkit(torch_lib: &Path) -> Option<Cuda> {
    let wheel = torch_lib.parent()?.parent()?.join("nvidia/cu13");
    let home = std::env::var_os("CUDA_HOME").map(PathBuf::from);
    let candidates = [
        Some((wheel.join("include"), wheel.join("lib"))),
        home.as_ref().map(|h| (h.join("include"), h.join("lib64"))),
    ];
    candidates
        .into_iter()
        .flatten()
        .find(|(include, lib)| {
            include.join("crt/host_defines.h").is_file()
                && include.join("cuda_runtime_api.h").is_file()
                && cudart(lib).is_some()
        })
        .map(|(include, lib)| Cuda { include, lib })
}

/// The CUDA runtime library's file name in `lib` (the wheel has only `libcudart.so.13`).
fn cudart(lib: &Path) -> Option<String> {
    ["libcudart.so.13", "libcudart.so"]
        .into_iter()
        .find(|name| lib.join(name).exists())
        .map(String::from)
}

fn build_shim(torch_lib: &Path, cuda: &Cuda) {
    let torch = torch_lib.parent().expect("libtorch's lib has a parent");
    let abi = std::env::var("LIBTORCH_CXX11_ABI").unwrap_or_else(|_| "1".into());
    println!("cargo:rerun-if-env-changed=LIBTORCH_CXX11_ABI");
    cc::Build::new()
        .cpp(true)
        .file("src/cuda/shim.cpp")
        .include(torch.join("include"))
        .include(torch.join("include/torch/csrc/api/include"))
        .include(&cuda.include)
        .flag("-std=c++17")
        .flag_if_supported("-Wno-unused-parameter")
        .flag_if_supported("-Wno-deprecated-declarations")
        .define("_GLIBCXX_USE_CXX11_ABI", abi.as_str())
        .warnings(false)
        .compile("d2l_cuda_shim");
    println!("cargo:rustc-link-search=native={}", torch_lib.display());
    for name in ["c10_cuda", "c10", "torch_cpu"] {
        println!("cargo:rustc-link-lib=dylib={name}");
    }
    let cudart = cudart(&cuda.lib).expect("checked in cuda_toolkit");
    println!("cargo:rustc-link-arg=-L{}", cuda.lib.display());
    println!("cargo:rustc-link-arg=-l:{cudart}");
    println!("cargo:rustc-link-arg=-Wl,-rpath,{}", cuda.lib.display());
    println!("cargo:rustc-cfg=d2l_cuda_shim");
}

/// `src/cpu/aten.cpp`: ATen's CPU capability (`at::get_cpu_capability`, a C++ string), for
/// `run.json`. Skipped, with a warning, when libtorch's headers are not beside its libraries.
fn build_aten_capability(torch_lib: &Path) {
    let Some(include) = torch_lib.parent().map(|t| t.join("include")) else {
        return;
    };
    if !include.join("ATen/Version.h").is_file() {
        println!(
            "cargo:warning=ATen's CPU capability will not be recorded: {} lacks ATen/Version.h",
            include.display()
        );
        return;
    }
    let abi = std::env::var("LIBTORCH_CXX11_ABI").unwrap_or_else(|_| "1".into());
    cc::Build::new()
        .cpp(true)
        .file("src/cpu/aten.cpp")
        .file("src/cpu/generator.cpp")
        .file("src/cpu/optimizer.cpp")
        .file("src/cpu/autocast.cpp")
        .include(&include)
        .include(include.join("torch/csrc/api/include"))
        .flag("-std=c++17")
        .define("_GLIBCXX_USE_CXX11_ABI", abi.as_str())
        .warnings(false)
        .compile("d2l_aten_capability");
    println!("cargo:rustc-link-search=native={}", torch_lib.display());
    for name in ["torch_cpu", "c10"] {
        println!("cargo:rustc-link-lib=dylib={name}");
    }
    println!("cargo:rustc-cfg=d2l_aten_capability");
}

/// `2.11.0+cu130` from a PyTorch wheel's `version.py` or a libtorch zip's `build-version`.
fn libtorch_version(lib: &Path) -> String {
    let Some(root) = lib.parent() else {
        return "unknown".into();
    };
    if let Ok(v) = std::fs::read_to_string(root.join("build-version")) {
        return v.trim().to_string();
    }
    if let Ok(py) = std::fs::read_to_string(root.join("version.py")) {
        for line in py.lines() {
            if let Some(v) = line.strip_prefix("__version__ = ") {
                return v.trim().trim_matches(|c| c == '\'' || c == '"').to_string();
            }
        }
    }
    "unknown".into()
}
