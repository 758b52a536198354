//! `--reproducible`: the README's printed numbers and the committed default results come out
//! digit for digit on whatever CPU runs the tests, and `run.json` records which kernels ran.
//!
//! What one machine can check of "any CPU": the CPU's own choices are MKL's code branch and
//! ATen's vector width, and both can be forced by the environment (`MKL_CBWR`,
//! `ATEN_CPU_CAPABILITY`), the way other CPUs would choose them; `--reproducible` must give the
//! same numbers under every such choice.
mod common;

use common::*;
use std::path::Path;
use std::process::{Command, Output};

/// The kernel choices other CPUs make, forced by the environment: (variable, value) pairs.
const OTHER_CPUS: [&[(&str, &str)]; 4] = [
    &[],
    &[("MKL_CBWR", "AVX2")],
    &[("MKL_CBWR", "AVX512"), ("ATEN_CPU_CAPABILITY", "avx512")],
    &[
        ("MKL_CBWR", "COMPATIBLE"),
        ("ATEN_CPU_CAPABILITY", "default"),
    ],
];

/// The binary under `env` (and without the kernel variables of the caller's environment).
fn run_with(env: &[(&str, &str)], args: &[&str]) -> Output {
    let mut c = Command::new(BIN);
    for v in ["MKL_CBWR", "ATEN_CPU_CAPABILITY", "MKL_DYNAMIC"] {
        c.env_remove(v);
    }
    let o = c.envs(env.iter().copied()).args(args).output().unwrap();
    assert!(o.status.success(), "{env:?} {args:?}: {}", stderr(&o));
    o
}

/// The README's example command (the line "Example (`cargo run --release -- …`") and the
/// output printed below it.
fn readme_example() -> (Vec<String>, String) {
    let readme = std::fs::read_to_string(repo_root().join("README.md")).unwrap();
    let start = readme
        .find("Example (`cargo run --release -- ")
        .expect("the README shows an example run");
    let rest = &readme[start + "Example (`cargo run --release -- ".len()..];
    let command = rest[..rest.find('`').unwrap()]
        .split_whitespace()
        .map(String::from)
        .collect();
    let block = rest.split("```").nth(1).expect("a code block follows");
    (command, block.trim_start_matches('\n').to_string())
}

#[test]
fn the_readme_example_prints_the_readmes_numbers_under_every_kernel_choice() {
    let (command, printed) = readme_example();
    assert!(
        command.iter().any(|a| a == "--reproducible"),
        "the README's example must be made with --reproducible to hold on any CPU: {command:?}"
    );
    for env in OTHER_CPUS {
        let out = tempfile::tempdir().unwrap();
        let mut args: Vec<&str> = command.iter().map(String::as_str).collect();
        args.extend([
            "--quiet",
            "--no-plot",
            "--out",
            out.path().to_str().unwrap(),
        ]);
        let o = run_with(env, &args);
        assert_eq!(stdout(&o), printed, "{env:?}: the README's example");
        let kernels = &read_json(&out.path().join("weight-decay/run.json"))["cpu_kernels"];
        assert_eq!(kernels["reproducible"], true, "{env:?}");
        assert_eq!(kernels["mkl_branch"], "COMPATIBLE", "{env:?}");
        assert_eq!(kernels["mkl_branch_fixed"], true, "{env:?}");
        assert_eq!(kernels["aten_capability"], "AVX2", "{env:?}");
        assert_eq!(kernels["threads"], 2, "{env:?}");
    }
}

/// Every number of `fresh` (timings apart) equals `committed`'s, in its first `rows` rows.
fn assert_same_numbers(committed: &Path, fresh: &Path, rows: usize) {
    let (a, b) = (without_timings(committed), without_timings(fresh));
    assert_eq!(a[0], b[0], "{}: columns", committed.display());
    let n = rows.min(a.len() - 1);
    assert!(b.len() > n, "{}: {} rows", fresh.display(), b.len() - 1);
    for (i, (x, y)) in a[1..=n].iter().zip(&b[1..=n]).enumerate() {
        assert_eq!(x, y, "{} row {}", committed.display(), i + 1);
    }
}

/// The committed `results/weight-decay` (every epoch of every run, the summary) and the first
/// epoch of `results/dropout` (a 10-epoch run's first epoch is a 1-epoch run), made with
/// `--reproducible`, come out again here, under a forced kernel choice of another CPU. The
/// reference is what git's `HEAD` holds (`common::committed`), never the working tree's
/// `results/`, which `--out results` rewrites.
#[test]
fn the_committed_default_results_come_out_again() {
    let (committed, _guard) = committed("results");
    for experiment in ["weight-decay", "dropout"] {
        let kernels = &read_json(&committed.join(experiment).join("run.json"))["cpu_kernels"];
        assert_eq!(
            kernels["reproducible"], true,
            "results/{experiment}/run.json"
        );
    }
    let env: &[(&str, &str)] = &[("MKL_CBWR", "AVX512"), ("ATEN_CPU_CAPABILITY", "avx512")];
    let out = tempfile::tempdir().unwrap();
    let o = out.path().to_str().unwrap();
    let common = [
        "--reproducible",
        "--device",
        "cpu",
        "--quiet",
        "--no-plot",
        "--out",
        o,
    ];
    run_with(env, &[&common[..], &["weight-decay"]].concat());
    for name in files_under(&committed.join("weight-decay")) {
        if name.extension().is_some_and(|e| e == "csv") {
            let (c, f) = (
                committed.join("weight-decay").join(&name),
                out.path().join("weight-decay").join(&name),
            );
            assert_same_numbers(&c, &f, usize::MAX);
        }
    }
    let Some(data) = real_data_dir() else { return };
    let data = data.to_str().unwrap();
    run_with(
        env,
        &[
            &common[..],
            &["dropout", "--epochs", "1", "--data-dir", data],
        ]
        .concat(),
    );
    for name in ["scratch.csv", "concise.csv"] {
        let c = committed.join("dropout").join(name);
        assert_same_numbers(&c, &out.path().join("dropout").join(name), 1);
    }
}

/// Without `--reproducible`, `run.json` says what MKL and ATen picked, whether the environment
/// fixed it or not.
#[test]
fn run_json_records_the_kernels_that_ran() {
    for (env, branch, fixed, aten) in [
        (
            &[("MKL_CBWR", "COMPATIBLE")][..],
            Some("COMPATIBLE"),
            true,
            None,
        ),
        (
            &[("ATEN_CPU_CAPABILITY", "default")][..],
            None,
            false,
            Some("DEFAULT"),
        ),
        (&[][..], None, false, None),
    ] {
        let out = tempfile::tempdir().unwrap();
        let o = out.path().to_str().unwrap();
        let args = [
            "--device",
            "cpu",
            "--quiet",
            "--no-plot",
            "--out",
            o,
            "weight-decay",
            "--epochs",
            "1",
        ];
        run_with(env, &args);
        let k = &read_json(&out.path().join("weight-decay/run.json"))["cpu_kernels"];
        assert_eq!(k["reproducible"], false, "{env:?}");
        assert_eq!(k["mkl_branch_fixed"], fixed, "{env:?}");
        if let Some(b) = branch {
            assert_eq!(k["mkl_branch"], b, "{env:?}");
        }
        let picked = k["mkl_branch"].as_str().unwrap();
        assert!(!picked.is_empty() && picked != "unknown", "{env:?}: {k}");
        if let Some(a) = aten {
            assert_eq!(k["aten_capability"], a, "{env:?}");
        }
        assert!(
            ["DEFAULT", "AVX2", "AVX512"].contains(&k["aten_capability"].as_str().unwrap()),
            "{k}"
        );
    }
}

/// `--threads` still applies under `--reproducible` (and is recorded); the thread count is part
/// of what the digits depend on, so the README's numbers hold at the default two.
#[test]
fn reproducible_keeps_an_explicit_thread_count() {
    let out = tempfile::tempdir().unwrap();
    let o = out.path().to_str().unwrap();
    let args = [
        "--reproducible",
        "--threads",
        "1",
        "--device",
        "cpu",
        "--quiet",
        "--no-plot",
        "--out",
        o,
    ];
    run_with(
        &[],
        &[&args[..], &["weight-decay", "--epochs", "1"]].concat(),
    );
    let run = read_json(&out.path().join("weight-decay/run.json"));
    assert_eq!(run["cpu_kernels"]["threads"], 1);
    assert_eq!(run["threads"], 1);
}
