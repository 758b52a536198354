//! `d2l-regularization doctor`: what this binary runs on, in the spirit of PyTorch's
//! `python -m torch.utils.collect_env` — and the answer to "CUDA is not available".
use crate::cuda;
use anyhow::Result;

/// The shared libraries of libtorch this process has really loaded (from /proc/self/maps).
fn loaded(library: &str) -> Option<String> {
    let maps = std::fs::read_to_string("/proc/self/maps").ok()?;
    maps.lines()
        .filter_map(|l| l.split_whitespace().nth(5))
        .find(|path| {
            std::path::Path::new(path)
                .file_name()
                .is_some_and(|n| n.to_string_lossy() == library)
        })
        .map(String::from)
}

fn row(label: &str, value: impl std::fmt::Display) {
    crate::outln!("{label:<22}{value}");
}

/// The CUDA major version a `2.11.0+cu130`-style libtorch version was built for.
fn built_for_cuda(version: &str) -> Option<String> {
    let tag = version.split_once("+cu")?.1;
    let digits: String = tag.chars().take_while(char::is_ascii_digit).collect();
    (digits.len() >= 2).then(|| {
        format!(
            "{}.{}",
            &digits[..digits.len() - 1],
            &digits[digits.len() - 1..]
        )
    })
}

/// Prints the report; always succeeds (what is missing is part of the report).
pub fn run() -> Result<()> {
    crate::outln!("d2l-regularization {} doctor", env!("CARGO_PKG_VERSION"));
    row("tch", crate::TCH_VERSION);
    row("libtorch", crate::LIBTORCH_VERSION);
    row("libtorch (linked)", env!("D2L_LIBTORCH_LIB"));
    row(
        "libtorch (loaded)",
        loaded("libtorch_cpu.so")
            .unwrap_or_else(|| "libtorch_cpu.so not found in this process".into()),
    );
    row("CPU threads", tch::get_num_threads());
    let k = crate::cpu::KernelPaths::current();
    row(
        "CPU kernels",
        format!(
            "MKL {} ({}), ATen {}{}",
            k.mkl_branch,
            if k.mkl_branch_fixed {
                "fixed by MKL_CBWR"
            } else {
                "picked for this CPU"
            },
            k.aten_capability,
            if k.reproducible {
                ", --reproducible"
            } else {
                "; --reproducible gives the same digits on any CPU"
            }
        ),
    );
    row("CPU bf16", crate::precision::cpu_bf16());
    if !crate::LIBTORCH_HAS_CUDA {
        row("CUDA", "no: this libtorch is a CPU-only build (scripts/setup.sh installs the CUDA build of torch 2.11.0)");
        return Ok(());
    }
    row(
        "CUDA in libtorch",
        match loaded("libtorch_cuda.so") {
            Some(path) => format!("yes, libtorch_cuda.so loaded from {path}"),
            None => "compiled in, but libtorch_cuda.so is NOT loaded (the binary was linked \
                     without --no-as-needed; rebuild with this repository's build.rs)"
                .into(),
        },
    );
    row(
        "CUDA graphs",
        if cuda::SHIM {
            "available (shim built)"
        } else {
            "unavailable: built without the CUDA shim (run scripts/setup.sh and rebuild)"
        },
    );
    if !cuda::SHIM {
        row("CUDA available", tch::Cuda::is_available());
        return Ok(());
    }
    let needs = built_for_cuda(crate::LIBTORCH_VERSION);
    match cuda::impls() {
        Ok((runtime, driver)) => {
            row("CUDA runtime", cuda::version_string(runtime));
            if driver == 0 {
                row(
                    "CUDA driver",
                    "none installed (no NVIDIA driver on this machine)",
                );
            } else {
                row(
                    "CUDA driver",
                    format!("supports CUDA up to {}", cuda::version_string(driver)),
                );
                if driver < runtime {
                    crate::outln!(
                        "  The driver is too old for this build: libtorch {} needs a driver for CUDA \
                         {} or newer (NVIDIA r580+ for CUDA 13.0). Update the driver, or install a \
                         torch wheel built for CUDA {} and rebuild.",
                        crate::LIBTORCH_VERSION,
                        needs.clone().unwrap_or_else(|| cuda::version_string(runtime)),
                        cuda::version_string(driver)
                    );
                }
            }
        }
        Err(e) => row("CUDA runtime", format!("unknown ({e})")),
    }
    match cuda::cudnn_version() {
        Ok(Some(v)) => row(
            "cuDNN",
            format!("{}.{}.{} (built in)", v / 10000, (v / 100) % 100, v % 100),
        ),
        Ok(None) => row("cuDNN", "not built in"),
        Err(e) => row("cuDNN", format!("unknown ({e})")),
    }
    match cuda::device_count() {
        Ok(0) => row("GPUs", "none visible"),
        Ok(n) => {
            row("GPUs", format!("{n} visible"));
            for i in 0..n {
                match cuda::device_info(i) {
                    Ok(d) => row(
                        &format!("  cuda:{i}"),
                        format!(
                            "{}, {:.1} GiB, compute capability {}",
                            d.name,
                            d.memory_bytes as f64 / (1u64 << 30) as f64,
                            d.compute_capability
                        ),
                    ),
                    Err(e) => row(&format!("  cuda:{i}"), format!("unreadable ({e})")),
                }
            }
        }
        Err(e) => row("GPUs", format!("none visible: {e}")),
    }
    row(
        "--device auto",
        crate::device::name(tch::Device::cuda_if_available()),
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn reads_the_cuda_version_of_a_wheel() {
        assert_eq!(
            super::built_for_cuda("2.11.0+cu130").as_deref(),
            Some("13.0")
        );
        assert_eq!(
            super::built_for_cuda("2.4.0+cu121").as_deref(),
            Some("12.1")
        );
        assert_eq!(super::built_for_cuda("2.11.0+cpu"), None);
        assert_eq!(super::built_for_cuda("2.11.0"), None);
    }
}
