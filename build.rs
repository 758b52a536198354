//! Makes the binary find libtorch at run time, keeps libtorch_cuda linked, and records which
//! libtorch was linked.
//!
//! torch-sys reports the directory of the libtorch it linked as `DEP_TCH_LIBTORCH_LIB`.
//! Without an rpath to it the binary only starts with `LD_LIBRARY_PATH` set, and without
//! `--no-as-needed` the linker drops `libtorch_cuda.so` (nothing references it by symbol),
//! so CUDA is never available even on a GPU machine.
use std::path::Path;

fn main() {
    println!("cargo:rerun-if-env-changed=DEP_TCH_LIBTORCH_LIB");
    let dir = std::env::var("DEP_TCH_LIBTORCH_LIB").unwrap_or_default();
    let lib = Path::new(&dir);
    let has_cuda = !dir.is_empty() && lib.join("libtorch_cuda.so").exists();
    if !dir.is_empty() {
        println!("cargo:rustc-link-arg=-Wl,-rpath,{dir}");
    }
    if has_cuda {
        println!("cargo:rustc-link-arg=-Wl,--no-as-needed");
        println!("cargo:rustc-link-arg=-ltorch_cuda");
        println!("cargo:rustc-link-arg=-Wl,--as-needed");
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
