//! §4.5's figures beyond one run's curve: every λ of a group in one figure, and a sweep's
//! final losses and ‖w‖ against λ.
use super::{Config, Setting, WeightDecay};
use crate::experiment::{self, fmt_num, Run, SettingStats};
use crate::options::Impl;
use crate::plot::{Figure, Series};
use crate::record;
use crate::sweep;
use anyhow::Result;
use std::path::Path;

/// The groups of settings a sweep compares λ within: one per version, optimizer and
/// penalty (each group's `[first, end)` range in `settings`).
pub(super) fn groups(settings: &[SettingStats<WeightDecay>]) -> Vec<std::ops::Range<usize>> {
    let mut groups: Vec<std::ops::Range<usize>> = Vec::new();
    for (i, s) in settings.iter().enumerate() {
        let same = |o: &SettingStats<WeightDecay>| {
            o.version == s.version
                && o.setting.optimizer == s.setting.optimizer
                && o.setting.penalty == s.setting.penalty
        };
        match groups.last_mut() {
            Some(g) if same(&settings[g.start]) => g.end = i + 1,
            _ => groups.push(i..i + 1),
        }
    }
    groups
}

/// `concise adamw l1`: a group's name in notes and legends.
pub(super) fn group_name(version: Impl, setting: Setting) -> String {
    format!("{}{}", version.name(), setting.variant())
}

/// `<impl>[-<optimizer>][-<penalty>]-all.svg`: the train and test curves of every λ of a
/// group in one figure.
pub(super) fn write_overview(
    dir: &Path,
    runs: &[(Impl, Setting, &Run<WeightDecay>)],
    plots: bool,
) -> Result<()> {
    let same = |a: &(Impl, Setting, &Run<WeightDecay>), b: &(Impl, Setting, &Run<WeightDecay>)| {
        a.0 == b.0 && a.1.optimizer == b.1.optimizer && a.1.penalty == b.1.penalty
    };
    let mut start = 0;
    while start < runs.len() {
        let end = start
            + runs[start..]
                .iter()
                .take_while(|r| same(r, &runs[start]))
                .count();
        let (version, setting, _) = runs[start];
        let path = dir.join(format!("{}{}-all.svg", version.name(), setting.suffix()));
        if plots {
            let mut series = Vec::new();
            for (i, (_, s, run)) in runs[start..end].iter().enumerate() {
                let l = fmt_num(s.wd);
                series.extend(experiment::train_test_curves(
                    &run.curve,
                    |e| e.epoch as f64,
                    [
                        (format!("train λ={l}"), |e| e.train_loss),
                        (format!("test λ={l}"), |e| e.test_loss),
                    ],
                    i,
                ));
            }
            record::write_chart(
                &path,
                &Figure {
                    title: format!(
                        "weight decay, {}{}: every λ",
                        version.name(),
                        setting.variant()
                    ),
                    x_label: "epoch".into(),
                    y_label: "loss".into(),
                    log_y: true,
                    ..Default::default()
                },
                &series,
            )?;
        } else {
            record::remove_stale(&path);
        }
        start = end;
    }
    Ok(())
}

/// `summary.svg`: final train and test loss (mean ± sd over the seeds) against λ (a log
/// axis, 0 drawn apart), one pair of curves per version, optimizer and penalty;
/// `summary-w.svg`: ‖w‖ against λ, one curve each (Adam's coupled decay against AdamW's at
/// equal λ).
pub(super) fn sweep(
    cfg: &Config,
    settings: &[SettingStats<WeightDecay>],
    seeds: usize,
) -> Vec<experiment::SweepChart> {
    let mut losses = Vec::new();
    let mut norms = Vec::new();
    let wd = |s: &Setting| s.wd;
    for (i, range) in groups(settings).into_iter().enumerate() {
        let rows: Vec<&SettingStats<WeightDecay>> = settings[range].iter().collect();
        let name = group_name(rows[0].version, rows[0].setting);
        losses.extend(sweep::train_test_series(
            &rows,
            wd,
            [|f| f.final_train_loss, |f| f.final_test_loss],
            &name,
            i,
        ));
        let (points, errors) = sweep::at_settings(&rows, wd, |s| s.stat(|f| f.w_norm));
        norms.push(
            Series::line(format!("‖w‖ {name}"), points, i)
                .with_markers()
                .with_errors(errors),
        );
    }
    let axes = |y_label: &str| Figure {
        x_label: "λ (weight decay)".into(),
        y_label: y_label.into(),
        log_y: true,
        x_log: true,
        ..Default::default()
    };
    vec![
        (
            "summary.svg".into(),
            sweep::title("weight decay: final loss", cfg.epochs, seeds),
            vec![(axes("loss"), losses)],
        ),
        (
            "summary-w.svg".into(),
            sweep::title("weight decay: ‖w‖", cfg.epochs, seeds),
            vec![(axes("‖w‖"), norms)],
        ),
    ]
}
