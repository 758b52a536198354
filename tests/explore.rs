//! Seeing and exploring the results: charts beside the curves, progress on stderr, sweeps with
//! their summary and figure.
mod common;

use common::*;

fn num(v: &str) -> f64 {
    v.parse().unwrap_or_else(|_| panic!("not a number: {v}"))
}

#[test]
fn a_weight_decay_sweep_summarises_every_setting_over_its_seeds() {
    let out = tempfile::tempdir().unwrap();
    let o = run_on_cpu(
        out.path(),
        &[
            "sweep",
            "weight-decay",
            "--wd",
            "0,1,3",
            "--seeds",
            "0,1,2",
            "--epochs",
            "20",
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let dir = out.path().join("sweep/weight-decay");
    let runs = csv_rows(&dir.join("runs.csv"));
    assert_eq!(runs.len(), 2 * 3 * 3, "versions × λ × seeds");
    let summary = csv_rows(&dir.join("summary.csv"));
    assert_eq!(summary.len(), 2 * 3, "one row per version and λ");
    for s in &summary {
        let of: Vec<_> = runs
            .iter()
            .filter(|r| r["impl"] == s["impl"] && r["wd"] == s["wd"])
            .collect();
        assert_eq!(of.len(), 3);
        assert_eq!(
            (
                s["status"].as_str(),
                s["seeds"].as_str(),
                s["seeds_ok"].as_str()
            ),
            ("ok", "3", "3")
        );
        for (metric, column) in [
            ("test_loss", "final_test_loss"),
            ("train_loss", "final_train_loss"),
            ("gap", "gap"),
        ] {
            let v: Vec<f64> = of.iter().map(|r| num(&r[column])).collect();
            let mean = v.iter().sum::<f64>() / 3.0;
            let sd = (v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / 2.0).sqrt();
            let got_mean = num(&s[&format!("{metric}_mean")]);
            let got_sd = num(&s[&format!("{metric}_std")]);
            assert!(
                (got_mean - mean).abs() <= 1e-6 * mean.abs().max(1e-3),
                "{metric} mean"
            );
            assert!(
                (got_sd - sd).abs() <= 1e-6 * mean.abs().max(1e-3),
                "{metric} sd"
            );
        }
        for r in &of {
            let gap = num(&r["final_test_loss"]) - num(&r["final_train_loss"]);
            // The losses are f32 values written in their shortest f32 form; the gap was taken
            // from the exact values: equal to f32 precision.
            assert!((num(&r["gap"]) - gap).abs() < 1e-6 * gap.abs().max(1e-3));
        }
    }
    // Seeds differ: the data and the initialisation are drawn again.
    let tests: Vec<&str> = runs
        .iter()
        .filter(|r| r["impl"] == "scratch" && r["wd"] == "0.0")
        .map(|r| r["final_test_loss"].as_str())
        .collect();
    assert!(tests[0] != tests[1] && tests[1] != tests[2], "{tests:?}");
    // Weight decay closes the generalization gap.
    let gap = |wd: &str| {
        num(&summary
            .iter()
            .find(|s| s["impl"] == "scratch" && s["wd"] == wd)
            .unwrap()["gap_mean"])
    };
    assert!(gap("3.0") < gap("0.0"));
    let (series, texts) = svg_series(&dir.join("summary.svg"));
    assert_eq!(
        series, [3; 4],
        "train and test of both versions, at 3 λ each"
    );
    for label in [
        "0",
        "1e0",
        "λ (weight decay)",
        "train scratch",
        "test concise",
    ] {
        assert!(texts.iter().any(|t| t == label), "{label} in {texts:?}");
    }
    let runs_files = files_under(&dir.join("runs"));
    for ext in [".csv", ".json"] {
        assert_eq!(
            runs_files
                .iter()
                .filter(|f| f.to_string_lossy().ends_with(ext))
                .count(),
            18,
            "every run's curve and record ({ext}): {runs_files:?}"
        );
    }
    assert!(stdout(&o).contains("sweep: 18 runs summarised"));
}

#[test]
fn a_dropout_sweep_runs_the_grid() {
    let Some(data) = real_data_dir() else { return };
    let out = tempfile::tempdir().unwrap();
    let o = run_on_cpu(
        out.path(),
        &[
            "sweep",
            "dropout",
            "--impl",
            "concise",
            "--engine",
            "fused",
            "--dropout1",
            "0,0.5",
            "--dropout2",
            "0,0.9",
            "--epochs",
            "1",
            "--seeds",
            "3",
            "--save-weights",
            "--data-dir",
            data.to_str().unwrap(),
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let dir = out.path().join("sweep/dropout");
    let summary = csv_rows(&dir.join("summary.csv"));
    let grid: Vec<(&str, &str)> = summary
        .iter()
        .map(|s| (s["dropout1"].as_str(), s["dropout2"].as_str()))
        .collect();
    assert_eq!(
        grid,
        [
            ("0.0", "0.0"),
            ("0.0", "0.9"),
            ("0.5", "0.0"),
            ("0.5", "0.9")
        ]
    );
    for s in &summary {
        assert_eq!(
            (s["seeds"].as_str(), s["train_acc_std"].as_str()),
            ("1", "0.0")
        );
        let gap = num(&s["train_acc_mean"]) - num(&s["test_acc_mean"]);
        assert!((num(&s["gap_mean"]) - gap).abs() < 1e-9);
        assert!(num(&s["test_acc_mean"]) > 0.5, "{s:?}");
    }
    let (series, _) = svg_series(&dir.join("summary.svg"));
    assert_eq!(
        series, [2; 4],
        "train and test for each p2, at 2 values of p1"
    );
    let saved: Vec<_> = files_under(&dir.join("runs"))
        .into_iter()
        .filter(|f| f.extension().is_some_and(|e| e == "safetensors"))
        .collect();
    assert_eq!(
        saved.len(),
        4,
        "--save-weights keeps every run's model: {saved:?}"
    );
    assert!(
        stderr(&o).contains("dropout (0.5, 0.9), concise, seed 3 epoch 1/1"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn no_plot_writes_no_svg_and_removes_stale_ones() {
    let out = tempfile::tempdir().unwrap();
    let args = |extra: &[&'static str]| {
        let mut a = vec!["--device", "cpu", "--out", out.path().to_str().unwrap()];
        a.extend_from_slice(extra);
        a.extend_from_slice(&["weight-decay", "--epochs", "3"]);
        a
    };
    let svgs = || {
        files_under(out.path())
            .into_iter()
            .filter(|f| f.extension().is_some_and(|e| e == "svg"))
            .count()
    };
    assert!(run(&args(&[])).status.success());
    assert_eq!(svgs(), 6, "4 runs and the 2 every-λ figures");
    let o = run(&args(&["--no-plot"]));
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(svgs(), 0, "none is written, and the older ones are gone");
    assert_eq!(
        files_under(out.path())
            .iter()
            .filter(|f| f.extension().is_some_and(|e| e == "csv"))
            .count(),
        5
    );
}

#[test]
fn progress_is_lines_without_a_terminal_bars_with_one_and_nothing_when_quiet() {
    let out = tempfile::tempdir().unwrap();
    let base = ["--device", "cpu", "--out", out.path().to_str().unwrap()];
    let wd = [
        "weight-decay",
        "--impl",
        "scratch",
        "--wd",
        "3",
        "--epochs",
        "30",
    ];
    // Piped stderr: plain lines, at most about ten per run, no bar.
    let o = run(&[&base[..], &wd[..]].concat());
    let err = stderr(&o);
    let lines = err
        .lines()
        .filter(|l| l.contains("weight decay, scratch λ=3 epoch"))
        .count();
    assert!((2..=12).contains(&lines), "{lines} lines:\n{err}");
    assert!(
        !err.contains('\r') && !err.contains('\u{1b}'),
        "no bar:\n{err:?}"
    );
    // Quiet: no progress at all, the result still printed.
    let o = run(&[&base[..], &["--quiet"], &wd[..]].concat());
    assert!(o.status.success());
    assert_eq!(stderr(&o), "", "--quiet");
    assert!(stdout(&o).contains("L2 norm of w"));
    // A terminal (a pseudo-terminal from `script`): a bar redrawn in place, no plain lines.
    let cmd = [&[BIN][..], &base[..], &wd[..]].concat().join(" ");
    let tty = std::process::Command::new("script")
        .args(["-qec", &cmd, "/dev/null"])
        .output();
    match tty {
        Ok(o) if o.status.success() => {
            let shown = String::from_utf8_lossy(&o.stdout);
            assert!(
                shown.contains("epoch 30/30") || shown.contains('\r') || shown.contains('\u{1b}'),
                "{shown:?}"
            );
            assert!(
                shown.contains('\u{1b}') || shown.contains('\r'),
                "a bar draws in place: {shown:?}"
            );
            assert!(
                !shown.contains("λ=3 epoch 1/30:"),
                "no plain lines on a terminal: {shown:?}"
            );
        }
        _ => skip_outside_ci("`script` (util-linux), which this test needs, is missing"),
    }
}

#[test]
fn the_default_dropout_run_draws_both_versions_in_one_figure() {
    let Some(data) = real_data_dir() else { return };
    let out = tempfile::tempdir().unwrap();
    let o = run_on_cpu(
        out.path(),
        &[
            "dropout",
            "--engine",
            "fused",
            "--epochs",
            "2",
            "--data-dir",
            data.to_str().unwrap(),
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let dir = out.path().join("dropout");
    for name in ["scratch", "concise"] {
        assert_eq!(svg_series(&dir.join(format!("{name}.svg"))).0, [2; 3]);
    }
    let (series, texts) = svg_series(&dir.join("compare.svg"));
    assert_eq!(series, [2; 4], "train and test accuracy of both versions");
    assert!(
        texts.iter().any(|t| t == "test acc (0.2, 0.5), concise"),
        "{texts:?}"
    );
}
