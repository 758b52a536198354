//! The GPU check rehearsed on the CPU: the README's one GPU command (`scripts/gpu-check.sh
//! --out "$OUT"`), run from a bundle that `scripts/gpu-bundle.sh` made, with `--device cpu`
//! and a smaller budget. What a lent GPU's few minutes depend on: the command ends inside its
//! budget, leaves at most 8 plain files directly in its `--out` (what the device tool brings
//! back), and a benchmark step that fails is reported without losing the rest of the table.
mod common;

use common::*;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

/// The README's GPU command: the line in the code block after "one command:" in its GPU
/// paragraph.
fn readme_gpu_command() -> String {
    let readme = std::fs::read_to_string(repo_root().join("README.md")).unwrap();
    let start = readme
        .find("**GPU**")
        .expect("the README has a GPU paragraph");
    let block = readme[start..]
        .split("```sh\n")
        .nth(1)
        .expect("a sh block in the GPU paragraph");
    let command = block[..block.find("```").unwrap()].trim();
    assert_eq!(command.lines().count(), 1, "one command: {command}");
    command.to_string()
}

/// The test binary of tests/cuda.rs, built beside this one (`cargo test` builds every test
/// binary before it runs any): the newest `cuda-<hash>` in this binary's directory.
fn cuda_tests_binary() -> PathBuf {
    let deps = std::env::current_exe()
        .unwrap()
        .parent()
        .unwrap()
        .to_owned();
    let mut found: Vec<(std::time::SystemTime, PathBuf)> = std::fs::read_dir(&deps)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            name.strip_prefix("cuda-")
                .is_some_and(|h| h.len() == 16 && h.chars().all(|c| c.is_ascii_hexdigit()))
        })
        .map(|p| (p.metadata().unwrap().modified().unwrap(), p))
        .collect();
    found.sort();
    found
        .pop()
        .expect("tests/cuda.rs's binary beside this one")
        .1
}

/// `scripts/gpu-bundle.sh DIR` with the binaries already built.
fn bundle(dir: &Path) {
    let o = Command::new(repo_root().join("scripts/gpu-bundle.sh"))
        .arg(dir)
        .env("D2L_BIN", BIN)
        .env("D2L_CUDA_TESTS", cuda_tests_binary())
        .output()
        .unwrap();
    assert!(o.status.success(), "gpu-bundle.sh: {}", stderr(&o));
    for f in [
        "d2l-regularization",
        "cuda-tests",
        "bin/d2l-regularization",
        "bin/cuda-tests",
    ] {
        assert!(dir.join(f).is_file(), "the bundle lacks {f}");
    }
}

/// The budget of the rehearsal, seconds: the CPU is slower than a GPU at the dropout epochs,
/// so the runs are 1 epoch and the benchmark's processes short; the budget is what the
/// planning must hold to, whatever this machine's speed. On 2 cores the checks before the
/// benchmark took 70–110 s and one benchmark round about 60 s.
const BUDGET: u64 = 240;

/// The two tests time whole commands: one at a time.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());
/// What the script may run past its budget: the `timeout -k 5` grace of a cut-off command and
/// the tarball (the script keeps 20 s in reserve for it).
const SLACK: u64 = 15;

#[test]
fn the_readme_gpu_command_rehearsed_on_the_cpu_ends_in_its_budget_with_its_files() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let Some(python) = python() else { return };
    let Some(data) = real_data_dir() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let gpu = tmp.path().join(".gpu");
    bundle(&gpu);
    // The bundle's launcher runs the binary directly.
    let o = Command::new(gpu.join("d2l-regularization"))
        .arg("--version")
        .env("D2L_PYTHON", &python)
        .output()
        .unwrap();
    assert!(o.status.success(), "the launcher: {}", stderr(&o));
    assert!(
        stdout(&o).starts_with("d2l-regularization "),
        "{}",
        stdout(&o)
    );

    let out = tmp.path().join("OUT");
    let command = readme_gpu_command();
    let budget = BUDGET.to_string();
    let started = Instant::now();
    let o = Command::new("bash")
        .arg("-c")
        .arg(format!(
            "{command} --device cpu --budget {budget} --bundle \"$BUNDLE\" --dropout-epochs 1 \
             --rounds 20 --epochs 1 --wd-runs 1"
        ))
        .current_dir(repo_root())
        .env("OUT", &out)
        .env("BUNDLE", &gpu)
        .env("D2L_PYTHON", &python)
        .env("FASHION_MNIST_DIR", data)
        .output()
        .unwrap();
    let seconds = started.elapsed().as_secs();
    let log = stdout(&o) + &stderr(&o);
    assert!(o.status.success(), "{command} --device cpu: {log}");
    assert!(
        seconds <= BUDGET + SLACK,
        "{seconds} s for a {BUDGET} s budget: {log}"
    );

    let mut names: Vec<String> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            assert!(
                e.file_type().unwrap().is_file(),
                "{:?} is not a plain file",
                e.path()
            );
            e.file_name().into_string().unwrap()
        })
        .collect();
    names.sort();
    assert!(names.len() <= 8, "{} files: {names:?}", names.len());
    for f in [
        "gpu-check.log",
        "summary.md",
        "cpu.csv",
        "bench-samples.csv",
        "bench-table.md",
        "runs.tar.gz",
    ] {
        assert!(names.iter().any(|n| n == f), "{f} missing from {names:?}");
    }

    let summary = std::fs::read_to_string(out.join("summary.md")).unwrap();
    assert!(!summary.contains("FAILED"), "{summary}");
    for needle in [
        "rust-autograd weight-decay ran on cpu",
        "rust-fused dropout ran on cpu",
        "torch dropout ran on cpu",
        "out of memory on cpu",
        "## Benchmark",
        "| dropout (concise): train epoch |",
        "every check",
    ] {
        assert!(
            summary.contains(needle),
            "summary.md lacks {needle:?}:\n{summary}"
        );
    }
    // The bench planned its rounds to what was left: at least one, and each round's samples
    // flushed as measured.
    let samples = csv_rows(&out.join("bench-samples.csv"));
    for side in ["rust", "rust-fused", "torch", "torch-book-loader"] {
        assert!(
            samples
                .iter()
                .any(|r| r["side"] == side && r["metric"] == "dropout_train_s"),
            "no {side} sample in bench-samples.csv"
        );
    }
    let medians = csv_rows(&out.join("cpu.csv"));
    let train = medians
        .iter()
        .find(|r| r["metric"] == "dropout_train_s")
        .unwrap();
    assert!(train["rust_s"].parse::<f64>().unwrap() > 0.0, "{train:?}");

    // Everything else is in the tarball.
    let list = Command::new("tar")
        .arg("-tzf")
        .arg(out.join("runs.tar.gz"))
        .output()
        .unwrap();
    let list = stdout(&list);
    for f in [
        "runs/rust-autograd/weight-decay/run.json",
        "runs/rust-fused/dropout/summary.csv",
        "runs/torch/dropout/run.json",
        "doctor.log",
        "oom.log",
    ] {
        assert!(list.contains(f), "runs.tar.gz lacks {f}:\n{list}");
    }
}

/// One benchmark step that fails (here the CUDA-graph anchor, which needs a GPU) is reported,
/// the command exits 1, and every other column is still measured and written.
#[test]
fn a_failing_anchor_is_reported_and_the_rest_of_the_table_kept() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let Some(python) = python() else { return };
    let Some(data) = real_data_dir() else { return };
    let out = tempfile::tempdir().unwrap();
    let samples = out.path().join("samples.csv");
    let o = Command::new(&python)
        .arg(repo_root().join("scripts/bench.py"))
        .args([
            "--bin", BIN, "--device", "cpu", "--rounds", "1", "--epochs", "1",
        ])
        .args([
            "--wd-runs",
            "1",
            "--no-book-loader",
            "--anchors",
            "graph",
            "--data-dir",
        ])
        .arg(data)
        .arg("--out")
        .arg(out.path())
        .arg("--samples")
        .arg(&samples)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("FAILED: round 1, PyTorch graph"),
        "{}",
        stderr(&o)
    );
    let medians = csv_rows(&out.path().join("cpu.csv"));
    let process = medians.iter().find(|r| r["metric"] == "process_s").unwrap();
    for column in ["rust_s", "rust_fused_s", "torch_s"] {
        assert!(
            process[column].parse::<f64>().is_ok_and(|v| v > 0.0),
            "{column} after the failed anchor: {process:?}"
        );
    }
    assert!(process["torch_graph_s"].is_empty(), "{process:?}");
    assert!(!csv_rows(&samples).is_empty());
}
