//! Rust and the PyTorch counterpart (scripts/torch_counterpart.py) compute the same thing: on
//! the CPU with the same seed the same random numbers are drawn in the same order and the same
//! libtorch kernels run, so every number written agrees exactly (as a float: the text may
//! differ, e.g. Rust writes `0.00008367923874175176` where Python writes
//! `8.367923874175176e-05`).
mod common;

use common::*;
use std::path::Path;
use std::process::{Command, Output};

fn run_torch(out: &Path, seed: &str, args: &[&str]) -> Option<Output> {
    let python = python()?;
    let o = Command::new(python)
        .arg(repo_root().join("scripts/torch_counterpart.py"))
        .args(["--device", "cpu", "--seed", seed, "--out"])
        .arg(out)
        .args(args)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "the counterpart failed:\n{}",
        stderr(&o)
    );
    Some(o)
}

fn run_rust(out: &Path, seed: &str, args: &[&str]) -> Output {
    let mut all = vec![
        "--quiet",
        "--device",
        "cpu",
        "--seed",
        seed,
        "--out",
        out.to_str().unwrap(),
    ];
    all.extend_from_slice(args);
    let o = run(&all);
    assert!(o.status.success(), "{}", stderr(&o));
    o
}

/// Every row of `columns` holds the same numbers in both files, exactly.
fn assert_columns_equal(rust: &Path, torch: &Path, columns: &[&str]) {
    for c in columns {
        let (a, b) = (column(rust, c), column(torch, c));
        assert_eq!(
            a.len(),
            b.len(),
            "{}: {c}: row counts differ",
            rust.display()
        );
        for (i, (x, y)) in a.iter().zip(&b).enumerate() {
            assert!(
                x == y,
                "{}: {c} row {}: Rust {x:e} vs PyTorch {y:e} (relative {:e})",
                rust.display(),
                i + 1,
                (x - y).abs() / y.abs()
            );
        }
    }
}

/// Both versions, λ 0 and 3, every epoch, ‖w‖ as written and as printed; with the book's batch
/// size and with a batch size that leaves a partial batch (20 examples in batches of 3: the
/// scratch SGD divides by the nominal size, as the book's `sgd` does).
#[test]
fn weight_decay_matches_pytorch_exactly() {
    if python().is_none() {
        return;
    }
    for batch_size in ["5", "3"] {
        let (rust, torch) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let args = ["weight-decay", "--batch-size", batch_size];
        let r_out = run_rust(rust.path(), "5", &args);
        let t_out = run_torch(torch.path(), "5", &args).unwrap();
        assert_eq!(
            stdout(&r_out),
            stdout(&t_out),
            "batch size {batch_size}: the printed norms"
        );
        assert_eq!(stdout(&r_out).lines().count(), 4, "{}", stdout(&r_out));
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
            assert_columns_equal(
                &r.join(name),
                &t.join(name),
                &["epoch", "train_loss", "test_loss"],
            );
        }
        assert_columns_equal(
            &r.join("summary.csv"),
            &t.join("summary.csv"),
            &["wd", "w_norm", "final_train_loss", "final_test_loss"],
        );
    }
}

/// One epoch of each version at three seeds (60 000 examples in batches of 256: the last
/// batch is partial), the running train loss and accuracy and the test accuracy.
#[test]
fn one_dropout_epoch_matches_pytorch_exactly_at_three_seeds() {
    if python().is_none() {
        return;
    }
    let Some(data) = real_data_dir() else { return };
    let data = data.to_str().unwrap();
    for seed in ["0", "1", "2"] {
        let (rust, torch) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let args = ["dropout", "--epochs", "1", "--data-dir", data];
        run_rust(rust.path(), seed, &args);
        run_torch(torch.path(), seed, &args);
        let (r, t) = (rust.path().join("dropout"), torch.path().join("dropout"));
        for name in ["scratch.csv", "concise.csv"] {
            assert_columns_equal(
                &r.join(name),
                &t.join(name),
                &["epoch", "train_loss", "train_acc", "test_acc"],
            );
        }
    }
}
