//! The book's §4.5 exercises as flags: `--penalty l1`, `--optimizer adam|adamw`, `--n-val` in
//! sweeps; what each writes, that the book's numbers stay as they were, and bad input refused.
mod common;

use common::*;

fn summary(out: &std::path::Path) -> Vec<std::collections::HashMap<String, String>> {
    csv_rows(&out.join("weight-decay/summary.csv"))
}

fn num(row: &std::collections::HashMap<String, String>, column: &str) -> f64 {
    row[column]
        .parse()
        .unwrap_or_else(|_| panic!("{column}: {}", row[column]))
}

#[test]
fn an_l1_penalty_is_named_in_the_files_and_shrinks_w() {
    let out = tempfile::tempdir().unwrap();
    let o = run_on_cpu(out.path(), &["--quiet", "weight-decay", "--penalty", "l1"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let dir = out.path().join("weight-decay");
    for name in [
        "scratch-l1-wd0",
        "scratch-l1-wd3",
        "concise-l1-wd0",
        "concise-l1-wd3",
    ] {
        assert_eq!(
            read_csv(&dir.join(format!("{name}.csv"))).1.len(),
            100,
            "{name}"
        );
        assert!(dir.join(format!("{name}.svg")).is_file(), "{name}");
    }
    assert!(dir.join("scratch-l1-all.svg").is_file());
    let rows = summary(out.path());
    assert_eq!(rows.len(), 4);
    for pair in rows.chunks(2) {
        let (free, penalised) = (&pair[0], &pair[1]);
        assert_eq!(free["penalty"], "l1");
        assert_eq!(free["optimizer"], "sgd");
        // ‖w‖₁ and the fraction of tiny weights are recorded; λ = 3 shrinks ‖w‖₁ tenfold.
        assert!(
            num(penalised, "w_l1") < num(free, "w_l1") / 10.0,
            "{pair:?}"
        );
        let small = num(penalised, "w_small");
        assert!((0.0..=1.0).contains(&small), "{small}");
    }
}

/// What L1 is known for: its proximal step sets weights to exactly 0, its subgradient does not.
#[test]
fn the_proximal_l1_step_zeroes_weights_and_the_subgradient_does_not() {
    let out = tempfile::tempdir().unwrap();
    let o = run_on_cpu(
        out.path(),
        &[
            "--quiet",
            "weight-decay",
            "--impl",
            "scratch",
            "--penalty",
            "l1,l1-prox",
            "--wd",
            "1",
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let rows = summary(out.path());
    let small = |penalty: &str| {
        num(
            rows.iter().find(|r| r["penalty"] == penalty).unwrap(),
            "w_small",
        )
    };
    assert!(small("l1-prox") > 0.5, "{rows:?}");
    assert!(small("l1") < 0.1, "{rows:?}");
    assert!(out
        .path()
        .join("weight-decay/scratch-l1-prox-wd1.csv")
        .is_file());
}

#[test]
fn the_optimizer_is_named_and_adamw_decays_more_than_adam_at_equal_lambda() {
    let out = tempfile::tempdir().unwrap();
    let o = run_on_cpu(
        out.path(),
        &[
            "--quiet",
            "weight-decay",
            "--impl",
            "concise",
            "--optimizer",
            "adam,adamw",
            "--wd",
            "0,3",
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let dir = out.path().join("weight-decay");
    for name in ["concise-adam-wd3", "concise-adamw-wd0", "concise-adamw-wd3"] {
        assert!(dir.join(format!("{name}.csv")).is_file(), "{name}");
    }
    let rows = summary(out.path());
    let norm = |opt: &str, wd: &str| {
        let r = rows
            .iter()
            .find(|r| r["optimizer"] == opt && r["wd"] == wd)
            .unwrap();
        num(r, "w_norm")
    };
    // λ = 0: the same run; λ = 3: AdamW's decoupled decay shrinks w far more.
    assert_eq!(norm("adam", "0.0"), norm("adamw", "0.0"));
    assert!(norm("adamw", "3.0") < norm("adam", "3.0") / 5.0);
}

#[test]
fn a_validation_split_changes_nothing_else_and_the_sweep_marks_one_lambda_per_group() {
    let (plain, with_val) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let o = run_on_cpu(plain.path(), &["--quiet", "weight-decay"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = run_on_cpu(
        with_val.path(),
        &["--quiet", "weight-decay", "--n-val", "50"],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    for name in ["scratch-wd3.csv", "concise-wd0.csv"] {
        for c in ["train_loss", "test_loss"] {
            let (a, b) = (
                column(&plain.path().join("weight-decay").join(name), c),
                column(&with_val.path().join("weight-decay").join(name), c),
            );
            assert_eq!(a, b, "{name} {c}: no draw of the training moves");
        }
    }
    assert!(num(&summary(with_val.path())[0], "final_val_loss").is_finite());
    assert!(!summary(plain.path())[0].contains_key("final_val_loss"));

    let out = tempfile::tempdir().unwrap();
    let o = run_on_cpu(
        out.path(),
        &[
            "--quiet",
            "sweep",
            "weight-decay",
            "--wd",
            "0,1,3",
            "--optimizer",
            "sgd,adamw",
            "--n-val",
            "40",
            "--seeds",
            "0,1",
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stdout(&o).contains("validation (40 examples) picks λ="),
        "{}",
        stdout(&o)
    );
    let dir = out.path().join("sweep/weight-decay");
    let runs = csv_rows(&dir.join("runs.csv"));
    assert_eq!(
        runs.len(),
        2 * (3 + 6),
        "2 seeds × (scratch 3 λ + concise 2 optimizers × 3 λ)"
    );
    assert!(runs.iter().all(|r| num(r, "final_val_loss").is_finite()));
    let rows = csv_rows(&dir.join("summary.csv"));
    assert_eq!(rows.len(), 9);
    for group in [("scratch", "sgd"), ("concise", "sgd"), ("concise", "adamw")] {
        let of: Vec<_> = rows
            .iter()
            .filter(|r| (r["impl"].as_str(), r["optimizer"].as_str()) == group)
            .collect();
        assert_eq!(of.len(), 3, "{group:?}");
        for mark in ["chosen_by_validation", "best_by_test"] {
            assert_eq!(
                of.iter().filter(|r| r[mark] == "true").count(),
                1,
                "{group:?} {mark}"
            );
        }
        let chosen = of
            .iter()
            .find(|r| r["chosen_by_validation"] == "true")
            .unwrap();
        let lowest = of
            .iter()
            .map(|r| num(r, "val_loss_mean"))
            .fold(f64::INFINITY, f64::min);
        assert_eq!(num(chosen, "val_loss_mean"), lowest);
        assert!(num(chosen, "val_loss_std") >= 0.0);
    }
    assert!(dir.join("summary-w.svg").is_file());
}

#[test]
fn bad_exercise_flags_are_refused_naming_the_flag() {
    let out = tempfile::tempdir().unwrap();
    let cases: [(&[&str], &[&str]); 7] = [
        (&["--penalty", "l3"], &["--penalty", "l2", "l1", "l1-prox"]),
        (
            &[
                "--impl",
                "concise",
                "--optimizer",
                "adam",
                "--penalty",
                "l1-prox",
            ],
            &["--penalty l1-prox is a proximal step for SGD"],
        ),
        (
            &["--optimizer", "rmsprop"],
            &["--optimizer", "sgd", "adam", "adamw"],
        ),
        (
            &["--impl", "scratch", "--optimizer", "adam"],
            &[
                "--optimizer adam applies to the concise version",
                "--impl concise",
            ],
        ),
        (&["--n-val", "0"], &["--n-val", "at least 1"]),
        (
            &["--engine", "fused", "--penalty", "l1"],
            &["--engine fused", "--engine autograd"],
        ),
        (
            &["--engine", "fused", "--optimizer", "adamw"],
            &["--engine fused", "--optimizer adam/adamw"],
        ),
    ];
    for (args, needles) in cases {
        let mut all = vec!["weight-decay"];
        all.extend_from_slice(args);
        let o = run_on_cpu(out.path(), &all);
        assert_fails_with(&o, needles);
        assert!(
            !out.path().join("weight-decay/summary.csv").exists(),
            "{args:?}"
        );
    }
}
