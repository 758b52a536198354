//! §4.6's figures beyond one run's curve: every run of a command in one figure, a sweep's
//! final accuracies against the rates and λ, the activations' variances.
use super::noise::NoiseKind;
use super::{label, ActivationRow, Config, DropoutMlp, Finals, Rates, Setting};
use crate::experiment::{self, fmt_num, FinalFigures as _, Run, SettingStats, Stat};
use crate::options::Impl;
use crate::plot::Figure;
use crate::record;
use crate::sweep;
use anyhow::Result;
use std::path::Path;

/// Settings that differ only in the pair of rates (same version, noise and λ), in order.
fn same_but_rates(a: &SettingStats<DropoutMlp>, b: &SettingStats<DropoutMlp>) -> bool {
    a.version == b.version && a.setting.noise == b.setting.noise && a.setting.wd == b.setting.wd
}

/// A panel of one statistic against λ (a log axis, 0 drawn apart), one curve per
/// version, noise and pair of rates.
fn against_lambda(
    cfg: &Config,
    settings: &[SettingStats<DropoutMlp>],
    stat: Stat<Finals>,
    y_label: &str,
) -> (Figure, Vec<crate::plot::Series>) {
    let mut series = Vec::new();
    let mut seen: Vec<(Impl, NoiseKind, Rates)> = Vec::new();
    for s in settings {
        let key = (s.version, s.setting.noise, s.setting.rates);
        if seen.contains(&key) {
            continue;
        }
        seen.push(key);
        let rows: Vec<&SettingStats<DropoutMlp>> = settings
            .iter()
            .filter(|o| (o.version, o.setting.noise, o.setting.rates) == key)
            .collect();
        let (points, errors) = sweep::at_settings(&rows, |s| s.wd, |s| s.stat(stat));
        let [p1, p2] = key.2;
        let mut name = format!("{} ({}, {})", key.0.name(), fmt_num(p1), fmt_num(p2));
        if cfg.noise.len() > 1 {
            name += &format!(" {}", key.1.name());
        }
        let color = series.len();
        series.push(
            crate::plot::Series::line(name, points, color)
                .with_markers()
                .with_errors(errors),
        );
    }
    let figure = Figure {
        x_label: "λ (weight decay)".into(),
        y_label: y_label.into(),
        x_log: true,
        ..Default::default()
    };
    (figure, series)
}

/// `compare.svg`: train and test accuracy of every run of the command in one figure
/// (with two runs or more).
pub(super) fn write_overview(
    dir: &Path,
    runs: &[(Impl, Setting, &Run<DropoutMlp>)],
    plots: bool,
) -> Result<()> {
    let path = dir.join("compare.svg");
    if !plots || runs.len() < 2 {
        record::remove_stale(&path);
        return Ok(());
    }
    let mut series = Vec::new();
    for (i, (version, setting, run)) in runs.iter().enumerate() {
        let name = label(*version, *setting);
        let name = name.trim_start_matches("dropout ");
        series.extend(experiment::train_test_curves(
            &run.curve,
            |e| e.epoch as f64,
            [
                (format!("train acc {name}"), |e| e.train_acc),
                (format!("test acc {name}"), |e| e.test_acc),
            ],
            i,
        ));
    }
    record::write_chart(
        &path,
        &Figure {
            title: "dropout: train and test accuracy of every run".into(),
            x_label: "epoch".into(),
            y_label: "accuracy".into(),
            ..Default::default()
        },
        &series,
    )
}

/// `summary.svg`: final train (solid) and test (dashed) accuracy against the rate with
/// more values, one panel per value of the other rate, one pair of curves per version
/// (and noise and λ when there are several); with several λ also `summary-wd.svg` (test
/// accuracy against λ) and `summary-gap.svg` (the gap against λ), one curve per version,
/// noise and pair of rates.
pub(super) fn sweep(
    cfg: &Config,
    settings: &[SettingStats<DropoutMlp>],
    seeds: usize,
) -> Vec<experiment::SweepChart> {
    let first_on_x = cfg.dropout1.len() >= cfg.dropout2.len();
    let (others, x_name, other_name) = if first_on_x {
        (
            &cfg.dropout2,
            "p1 (dropout after the first hidden layer)",
            "p2",
        )
    } else {
        (
            &cfg.dropout1,
            "p2 (dropout after the second hidden layer)",
            "p1",
        )
    };
    type Rate = fn(&Setting) -> f64;
    let (x_of, other_of): (Rate, Rate) = if first_on_x {
        (|s| s.rates[0], |s| s.rates[1])
    } else {
        (|s| s.rates[1], |s| s.rates[0])
    };
    let mut groups: Vec<&SettingStats<DropoutMlp>> = Vec::new();
    for s in settings {
        if !groups.iter().any(|g| same_but_rates(g, s)) {
            groups.push(s);
        }
    }
    let mut panels = Vec::new();
    for &other in others {
        let mut series = Vec::new();
        for (color, group) in groups.iter().enumerate() {
            let rows: Vec<&SettingStats<DropoutMlp>> = settings
                .iter()
                .filter(|s| same_but_rates(group, s) && other_of(&s.setting) == other)
                .collect();
            let name = format!("{}{}", group.version.name(), group.setting.variant());
            series.extend(sweep::train_test_series(
                &rows,
                x_of,
                [|f| f.final_train_acc, |f| f.final_test_acc],
                &name,
                color,
            ));
        }
        let figure = Figure {
            title: format!("{other_name} = {}", fmt_num(other)),
            x_label: x_name.into(),
            y_label: "accuracy".into(),
            ..Default::default()
        };
        panels.push((figure, series));
    }
    let mut charts = vec![(
        "summary.svg".to_string(),
        sweep::title("dropout: final accuracy", cfg.epochs, seeds),
        panels,
    )];
    if cfg.wd.len() > 1 {
        let test = against_lambda(cfg, settings, |f| f.final_test_acc, "test accuracy");
        charts.push((
            "summary-wd.svg".into(),
            sweep::title("dropout × weight decay: test accuracy", cfg.epochs, seeds),
            vec![test],
        ));
        let gap = against_lambda(cfg, settings, |f| f.gap(), "train − test accuracy");
        charts.push((
            "summary-gap.svg".into(),
            sweep::title("dropout × weight decay: the gap", cfg.epochs, seeds),
            vec![gap],
        ));
    }
    charts
}

/// `<stem>.csv` of the activation statistics and `<stem>.svg`: each hidden layer's variance
/// against epoch, after the ReLU and after the noise, in train and eval mode.
pub(super) fn write_activations(
    dir: &Path,
    stem: &str,
    rows: &[ActivationRow],
    plots: bool,
) -> Result<()> {
    record::write_csv(&dir.join(format!("{stem}.csv")), rows)?;
    let svg = dir.join(format!("{stem}.svg"));
    if !plots {
        record::remove_stale(&svg);
        return Ok(());
    }
    let mut series = Vec::new();
    for layer in ["hidden1", "hidden2"] {
        for (stage, mode) in [("relu", "eval"), ("relu", "train"), ("noise", "train")] {
            let points: Vec<(f64, f64)> = rows
                .iter()
                .filter(|r| r.layer == layer && r.stage == stage && r.mode == mode)
                .map(|r| (r.epoch as f64, r.var))
                .collect();
            let color = series.len();
            let s = crate::plot::Series::line(format!("{layer} {stage} ({mode})"), points, color);
            series.push(if mode == "eval" { s.with_markers() } else { s });
        }
    }
    record::write_chart(
        &svg,
        &Figure {
            title: "variance of the hidden activations on the probe batch".into(),
            x_label: "epoch".into(),
            y_label: "variance".into(),
            ..Default::default()
        },
        &series,
    )
}
