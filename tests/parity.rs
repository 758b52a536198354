//! Rust and the PyTorch counterpart (scripts/torch_counterpart.py) compute the same thing: on
//! the CPU with the same seed the same random numbers are drawn in the same order, so the
//! results agree up to floating-point summation order.
mod common;

use common::*;
use std::path::Path;
use std::process::Command;

fn run_torch(out: &Path, args: &[&str]) {
    let Some(python) = python() else { return };
    let o = Command::new(python)
        .arg(repo_root().join("scripts/torch_counterpart.py"))
        .args([
            "--device",
            "cpu",
            "--seed",
            "5",
            "--out",
            out.to_str().unwrap(),
        ])
        .args(args)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "the counterpart failed:\n{}",
        stderr(&o)
    );
}

fn run_rust(out: &Path, args: &[&str]) {
    let mut all = vec![
        "--device",
        "cpu",
        "--seed",
        "5",
        "--out",
        out.to_str().unwrap(),
    ];
    all.extend_from_slice(args);
    let o = run(&all);
    assert!(o.status.success(), "{}", stderr(&o));
}

fn assert_columns_close(rust: &Path, torch: &Path, columns: &[&str], rel: f64) {
    for c in columns {
        let (a, b) = (column(rust, c), column(torch, c));
        assert_eq!(a.len(), b.len(), "{c}: row counts differ");
        for (i, (x, y)) in a.iter().zip(&b).enumerate() {
            let diff = (x - y).abs() / y.abs().max(1e-12);
            assert!(
                diff <= rel,
                "{}: {c} row {}: Rust {x} vs PyTorch {y} (relative {diff:e})",
                rust.display(),
                i + 1
            );
        }
    }
}

#[test]
fn weight_decay_matches_pytorch() {
    if python().is_none() {
        return;
    }
    let (rust, torch) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    run_rust(rust.path(), &["weight-decay"]);
    run_torch(torch.path(), &["weight-decay"]);
    let (r, t) = (
        rust.path().join("weight-decay"),
        torch.path().join("weight-decay"),
    );
    for name in [
        "scratch-wd0.csv",
        "scratch-wd3.csv",
        "concise-wd0.csv",
        "concise-wd3.csv",
    ] {
        assert_columns_close(
            &r.join(name),
            &t.join(name),
            &["epoch", "train_loss", "test_loss"],
            1e-5,
        );
    }
    assert_columns_close(
        &r.join("summary.csv"),
        &t.join("summary.csv"),
        &["wd", "w_norm", "final_test_loss"],
        1e-5,
    );
}

#[test]
fn one_dropout_epoch_matches_pytorch() {
    if python().is_none() {
        return;
    }
    let Some(data) = real_data_dir() else { return };
    let data = data.to_str().unwrap();
    let (rust, torch) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    run_rust(
        rust.path(),
        &["dropout", "--epochs", "1", "--data-dir", data],
    );
    run_torch(
        torch.path(),
        &["dropout", "--epochs", "1", "--data-dir", data],
    );
    let (r, t) = (rust.path().join("dropout"), torch.path().join("dropout"));
    for name in ["scratch.csv", "concise.csv"] {
        assert_columns_close(
            &r.join(name),
            &t.join(name),
            &["train_loss", "train_acc", "test_acc"],
            1e-4,
        );
    }
}
