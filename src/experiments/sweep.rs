//! The book's exercises in one command: train every setting of a grid (λ, or the two dropout
//! rates) once per seed and summarise the final figures, the generalization gap, and their mean
//! and standard deviation over the seeds.
//!
//! Writes `<out>/sweep/<experiment>/`: `runs.csv` (one row per setting and seed, rewritten
//! after every run so an interruption loses nothing finished), `summary.csv` (one row per
//! setting), `summary.svg` (final train and test figures against λ or p) and every run's
//! curve under `runs/`. A diverged run is recorded (status `diverged`) and the sweep goes on.
use super::{dropout, fmt_num, weight_decay, Context};
use crate::cli::{seed, Impl};
use crate::data::fashion_mnist;
use crate::plot::{Figure, Series};
use crate::record;
use crate::stop::{Status, Stopped};
use anyhow::Result;
use serde::Serialize;
use std::path::Path;

#[derive(clap::Subcommand, Debug)]
pub enum Sweep {
    /// Every λ of --wd (e.g. 0,0.1,0.3,1,3,10,30), once per seed
    WeightDecay(WeightDecaySweep),
    /// Every combination of --dropout1 × --dropout2 (e.g. 0,0.2,0.5 × 0,0.5,0.8), once per seed
    Dropout(DropoutSweep),
}

#[derive(clap::Args, Debug, Clone, Serialize)]
pub struct WeightDecaySweep {
    #[command(flatten)]
    pub experiment: weight_decay::Config,
    /// Seeds, comma-separated (default: --seed); every setting is trained once per seed
    #[arg(long, value_delimiter = ',', allow_negative_numbers = true, value_parser = seed)]
    pub seeds: Vec<i64>,
}

#[derive(clap::Args, Debug, Clone, Serialize)]
pub struct DropoutSweep {
    #[command(flatten)]
    pub experiment: dropout::Config,
    /// Seeds, comma-separated (default: --seed); every setting is trained once per seed
    #[arg(long, value_delimiter = ',', allow_negative_numbers = true, value_parser = seed)]
    pub seeds: Vec<i64>,
}

pub fn run(sweep: &Sweep, ctx: &Context) -> Result<()> {
    match sweep {
        Sweep::WeightDecay(s) => weight_decay_sweep(s, ctx),
        Sweep::Dropout(s) => dropout_sweep(s, ctx),
    }
}

fn seeds_or(seeds: &[i64], ctx: &Context) -> Vec<i64> {
    if seeds.is_empty() {
        vec![ctx.seed]
    } else {
        seeds.to_vec()
    }
}

/// Mean and sample standard deviation (0 for a single value; NaN for none).
pub fn mean_std(values: &[f64]) -> (f64, f64) {
    let n = values.len() as f64;
    if values.is_empty() {
        return (f64::NAN, f64::NAN);
    }
    let mean = values.iter().sum::<f64>() / n;
    if values.len() < 2 {
        return (mean, 0.0);
    }
    let var = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0);
    (mean, var.sqrt())
}

/// `ok` when every seed finished; otherwise the first of interrupted, diverged.
fn setting_status(statuses: &[Status], seeds: usize) -> Status {
    if statuses.contains(&Status::Interrupted) || statuses.len() < seeds {
        Status::Interrupted
    } else if statuses.contains(&Status::Diverged) {
        Status::Diverged
    } else {
        Status::Ok
    }
}

/// Reports the end of a sweep: fails on an interruption, warns about diverged runs.
fn finish(dir: &Path, runs: usize, diverged: usize, interrupted: bool) -> Result<()> {
    if interrupted {
        return Err(Stopped::interrupted(&format!(
            "the {runs} finished runs are in {}",
            dir.display()
        ))
        .into());
    }
    if diverged > 0 {
        eprintln!(
            "warning: {diverged} of {runs} runs diverged (status 'diverged' in {})",
            dir.join("runs.csv").display()
        );
    }
    println!(
        "sweep: {runs} runs summarised in {}",
        dir.join("summary.csv").display()
    );
    Ok(())
}

// ---------------------------------------------------------------- weight decay

/// One row of the weight-decay sweep's `runs.csv`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct WeightDecayRun {
    pub seed: i64,
    #[serde(rename = "impl")]
    pub implementation: Impl,
    pub wd: f64,
    pub status: Status,
    pub epochs: usize,
    pub w_norm: f64,
    pub final_train_loss: f64,
    pub final_test_loss: f64,
    /// Final test loss − final train loss.
    pub gap: f64,
    pub seconds: f64,
}

/// One row of the weight-decay sweep's `summary.csv`: a setting over its seeds (mean and
/// sample standard deviation over the runs that finished).
#[derive(Debug, Clone, Default, Serialize)]
pub struct WeightDecaySetting {
    #[serde(rename = "impl")]
    pub implementation: Impl,
    pub wd: f64,
    pub status: Status,
    pub seeds: usize,
    pub seeds_ok: usize,
    pub train_loss_mean: f64,
    pub train_loss_std: f64,
    pub test_loss_mean: f64,
    pub test_loss_std: f64,
    pub gap_mean: f64,
    pub gap_std: f64,
    pub w_norm_mean: f64,
    pub w_norm_std: f64,
}

fn weight_decay_sweep(sweep: &WeightDecaySweep, ctx: &Context) -> Result<()> {
    let cfg = &sweep.experiment;
    let seeds = seeds_or(&sweep.seeds, ctx);
    let dir = record::experiment_dir(&record::experiment_dir(&ctx.out, "sweep")?, "weight-decay")?;
    let runs_dir = record::experiment_dir(&dir, "runs")?;
    let mut runs: Vec<WeightDecayRun> = Vec::new();
    let mut interrupted = false;
    'seeds: for &seed in &seeds {
        for implementation in cfg.implementation.impls() {
            let results =
                weight_decay::run_lambdas(cfg, implementation, &cfg.wd, &ctx.with_seed(seed));
            for (&wd, (trained, seconds)) in cfg.wd.iter().zip(results) {
                let stem = weight_decay::stem(implementation, wd);
                record::write_csv(
                    &runs_dir.join(format!("{stem}-seed{seed}.csv")),
                    &trained.curve,
                )?;
                let s = weight_decay::Summary::new(implementation, wd, &trained, seconds);
                runs.push(WeightDecayRun {
                    seed,
                    implementation,
                    wd,
                    status: s.status,
                    epochs: s.epochs,
                    w_norm: s.w_norm,
                    final_train_loss: s.final_train_loss,
                    final_test_loss: s.final_test_loss,
                    gap: s.final_test_loss - s.final_train_loss,
                    seconds,
                });
                interrupted |= trained.status == Status::Interrupted;
            }
            record::write_csv(&dir.join("runs.csv"), &runs)?;
            if interrupted {
                break 'seeds;
            }
        }
    }
    let mut settings = Vec::new();
    for implementation in cfg.implementation.impls() {
        for &wd in &cfg.wd {
            let of: Vec<&WeightDecayRun> = runs
                .iter()
                .filter(|r| r.implementation == implementation && r.wd == wd)
                .collect();
            let ok: Vec<&&WeightDecayRun> = of.iter().filter(|r| r.status == Status::Ok).collect();
            let stat = |f: fn(&WeightDecayRun) -> f64| {
                mean_std(&ok.iter().map(|r| f(r)).collect::<Vec<_>>())
            };
            let (train_loss_mean, train_loss_std) = stat(|r| r.final_train_loss);
            let (test_loss_mean, test_loss_std) = stat(|r| r.final_test_loss);
            let (gap_mean, gap_std) = stat(|r| r.gap);
            let (w_norm_mean, w_norm_std) = stat(|r| r.w_norm);
            settings.push(WeightDecaySetting {
                implementation,
                wd,
                status: setting_status(
                    &of.iter().map(|r| r.status).collect::<Vec<_>>(),
                    seeds.len(),
                ),
                seeds: seeds.len(),
                seeds_ok: ok.len(),
                train_loss_mean,
                train_loss_std,
                test_loss_mean,
                test_loss_std,
                gap_mean,
                gap_std,
                w_norm_mean,
                w_norm_std,
            });
        }
    }
    record::write_csv(&dir.join("summary.csv"), &settings)?;
    let svg = dir.join("summary.svg");
    if ctx.plots {
        write_weight_decay_chart(&svg, cfg, &settings, seeds.len())?;
    } else {
        record::remove_stale(&svg);
    }
    print_table(
        &["impl", "λ", "status", "train loss", "test loss", "gap"],
        settings.iter().map(|s| {
            vec![
                s.implementation.name().to_string(),
                fmt_num(s.wd),
                s.status.name().to_string(),
                format!("{:.3e}", s.train_loss_mean),
                format!("{:.3e}", s.test_loss_mean),
                format!("{:.3e}", s.gap_mean),
            ]
        }),
    );
    let diverged = runs.iter().filter(|r| r.status == Status::Diverged).count();
    finish(&dir, runs.len(), diverged, interrupted)
}

/// Final train and test loss (mean ± sd over the seeds) against λ, for each version.
fn write_weight_decay_chart(
    path: &Path,
    cfg: &weight_decay::Config,
    settings: &[WeightDecaySetting],
    seeds: usize,
) -> Result<()> {
    let mut series = Vec::new();
    for (i, implementation) in cfg.implementation.impls().into_iter().enumerate() {
        let rows: Vec<&WeightDecaySetting> = settings
            .iter()
            .filter(|s| s.implementation == implementation)
            .collect();
        let (points, errors) = at_settings(&rows, |s| (s.train_loss_mean, s.train_loss_std));
        let train =
            Series::line(format!("train {}", implementation.name()), points, i).with_errors(errors);
        let (points, errors) = at_settings(&rows, |s| (s.test_loss_mean, s.test_loss_std));
        let test = Series::line(format!("test {}", implementation.name()), points, i)
            .with_markers()
            .with_errors(errors);
        series.extend([train, test]);
    }
    record::write_chart(
        path,
        &Figure {
            title: title("weight decay: final loss", cfg.epochs, seeds),
            x_label: "λ".into(),
            y_label: "loss".into(),
            log_y: true,
            x_categories: Some(cfg.wd.iter().map(|&l| fmt_num(l)).collect()),
        },
        &series,
    )
}

// ---------------------------------------------------------------- dropout

/// One row of the dropout sweep's `runs.csv`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct DropoutRun {
    pub seed: i64,
    #[serde(rename = "impl")]
    pub implementation: Impl,
    pub dropout1: f64,
    pub dropout2: f64,
    pub status: Status,
    pub epochs: usize,
    pub final_train_loss: f64,
    pub final_train_acc: f64,
    pub final_test_acc: f64,
    /// Final train accuracy − final test accuracy.
    pub gap: f64,
    pub seconds: f64,
}

/// One row of the dropout sweep's `summary.csv`: a setting over its seeds (mean and sample
/// standard deviation over the runs that finished).
#[derive(Debug, Clone, Default, Serialize)]
pub struct DropoutSetting {
    #[serde(rename = "impl")]
    pub implementation: Impl,
    pub dropout1: f64,
    pub dropout2: f64,
    pub status: Status,
    pub seeds: usize,
    pub seeds_ok: usize,
    pub train_loss_mean: f64,
    pub train_loss_std: f64,
    pub train_acc_mean: f64,
    pub train_acc_std: f64,
    pub test_acc_mean: f64,
    pub test_acc_std: f64,
    pub gap_mean: f64,
    pub gap_std: f64,
}

fn dropout_sweep(sweep: &DropoutSweep, ctx: &Context) -> Result<()> {
    let cfg = &sweep.experiment;
    cfg.cuda_graphs(ctx.device)?;
    let seeds = seeds_or(&sweep.seeds, ctx);
    let dir = record::experiment_dir(&record::experiment_dir(&ctx.out, "sweep")?, "dropout")?;
    let runs_dir = record::experiment_dir(&dir, "runs")?;
    let source = fashion_mnist::Source::new(cfg.data_dir.clone(), cfg.offline);
    let data = fashion_mnist::load(&source, ctx.device)?;
    let grid = cfg.grid();
    let mut runs: Vec<DropoutRun> = Vec::new();
    let mut interrupted = false;
    'seeds: for &seed in &seeds {
        for &rates in &grid {
            for implementation in cfg.implementation.impls() {
                let (curve, vs, status) =
                    dropout::run_one(cfg, implementation, rates, &data, &ctx.with_seed(seed));
                let s = dropout::Summary::new(implementation, rates, &curve, status);
                let stem = format!("{}-seed{seed}", dropout::stem(implementation, rates));
                record::write_csv(&runs_dir.join(format!("{stem}.csv")), &curve)?;
                if cfg.save_weights && status == Status::Ok {
                    dropout::save_weights(&vs, &runs_dir.join(format!("{stem}.safetensors")))?;
                }
                runs.push(DropoutRun {
                    seed,
                    implementation,
                    dropout1: rates[0],
                    dropout2: rates[1],
                    status,
                    epochs: s.epochs,
                    final_train_loss: s.final_train_loss,
                    final_train_acc: s.final_train_acc,
                    final_test_acc: s.final_test_acc,
                    gap: s.final_train_acc - s.final_test_acc,
                    seconds: s.seconds,
                });
                record::write_csv(&dir.join("runs.csv"), &runs)?;
                if status == Status::Interrupted {
                    interrupted = true;
                    break 'seeds;
                }
            }
        }
    }
    let mut settings = Vec::new();
    for implementation in cfg.implementation.impls() {
        for &[p1, p2] in &grid {
            let of: Vec<&DropoutRun> = runs
                .iter()
                .filter(|r| {
                    r.implementation == implementation && r.dropout1 == p1 && r.dropout2 == p2
                })
                .collect();
            let ok: Vec<&&DropoutRun> = of.iter().filter(|r| r.status == Status::Ok).collect();
            let stat =
                |f: fn(&DropoutRun) -> f64| mean_std(&ok.iter().map(|r| f(r)).collect::<Vec<_>>());
            let (train_loss_mean, train_loss_std) = stat(|r| r.final_train_loss);
            let (train_acc_mean, train_acc_std) = stat(|r| r.final_train_acc);
            let (test_acc_mean, test_acc_std) = stat(|r| r.final_test_acc);
            let (gap_mean, gap_std) = stat(|r| r.gap);
            settings.push(DropoutSetting {
                implementation,
                dropout1: p1,
                dropout2: p2,
                status: setting_status(
                    &of.iter().map(|r| r.status).collect::<Vec<_>>(),
                    seeds.len(),
                ),
                seeds: seeds.len(),
                seeds_ok: ok.len(),
                train_loss_mean,
                train_loss_std,
                train_acc_mean,
                train_acc_std,
                test_acc_mean,
                test_acc_std,
                gap_mean,
                gap_std,
            });
        }
    }
    record::write_csv(&dir.join("summary.csv"), &settings)?;
    let svg = dir.join("summary.svg");
    if ctx.plots {
        write_dropout_chart(&svg, cfg, &settings, seeds.len())?;
    } else {
        record::remove_stale(&svg);
    }
    print_table(
        &["impl", "p1", "p2", "status", "train acc", "test acc", "gap"],
        settings.iter().map(|s| {
            vec![
                s.implementation.name().to_string(),
                fmt_num(s.dropout1),
                fmt_num(s.dropout2),
                s.status.name().to_string(),
                format!("{:.4}", s.train_acc_mean),
                format!("{:.4}", s.test_acc_mean),
                format!("{:+.4}", s.gap_mean),
            ]
        }),
    );
    let diverged = runs.iter().filter(|r| r.status == Status::Diverged).count();
    finish(&dir, runs.len(), diverged, interrupted)
}

/// Final train and test accuracy against the rate with more values (x), one pair of curves
/// per value of the other rate and per version.
fn write_dropout_chart(
    path: &Path,
    cfg: &dropout::Config,
    settings: &[DropoutSetting],
    seeds: usize,
) -> Result<()> {
    let first_on_x = cfg.dropout1.len() >= cfg.dropout2.len();
    let (xs, others, x_name, other_name) = if first_on_x {
        (&cfg.dropout1, &cfg.dropout2, "p1 (dropout1)", "p2")
    } else {
        (&cfg.dropout2, &cfg.dropout1, "p2 (dropout2)", "p1")
    };
    let mut series = Vec::new();
    for implementation in cfg.implementation.impls() {
        for &other in others {
            let rows: Vec<&DropoutSetting> = xs
                .iter()
                .filter_map(|&x| {
                    let (p1, p2) = if first_on_x { (x, other) } else { (other, x) };
                    settings.iter().find(|s| {
                        s.implementation == implementation && s.dropout1 == p1 && s.dropout2 == p2
                    })
                })
                .collect();
            let color = series.len() / 2;
            let suffix = format!("{} {other_name}={}", implementation.name(), fmt_num(other));
            let (points, errors) = at_settings(&rows, |s| (s.train_acc_mean, s.train_acc_std));
            let train = Series::line(format!("train {suffix}"), points, color).with_errors(errors);
            let (points, errors) = at_settings(&rows, |s| (s.test_acc_mean, s.test_acc_std));
            let test = Series::line(format!("test {suffix}"), points, color)
                .with_markers()
                .with_errors(errors);
            series.extend([train, test]);
        }
    }
    record::write_chart(
        path,
        &Figure {
            title: title("dropout: final accuracy", cfg.epochs, seeds),
            x_label: x_name.into(),
            y_label: "accuracy".into(),
            log_y: false,
            x_categories: Some(xs.iter().map(|&p| fmt_num(p)).collect()),
        },
        &series,
    )
}

/// One point per setting (x = its position, y = a mean) and the matching ± sd, for a
/// [`Series`] on a categorical x axis.
fn at_settings<S>(rows: &[&S], f: fn(&S) -> (f64, f64)) -> (Vec<(f64, f64)>, Vec<f64>) {
    let points = rows
        .iter()
        .enumerate()
        .map(|(x, s)| (x as f64, f(s).0))
        .collect();
    let errors = rows.iter().map(|s| f(s).1).collect();
    (points, errors)
}

/// A sweep figure's title: what it shows, after how many epochs, over how many seeds.
fn title(what: &str, epochs: usize, seeds: usize) -> String {
    format!(
        "{what} after {epochs} epoch{} ({seeds} seed{})",
        if epochs == 1 { "" } else { "s" },
        if seeds == 1 { "" } else { "s, mean ± sd" }
    )
}

/// A small aligned table on stdout.
fn print_table(header: &[&str], rows: impl Iterator<Item = Vec<String>>) {
    let rows: Vec<Vec<String>> = rows.collect();
    let widths: Vec<usize> = (0..header.len())
        .map(|c| {
            rows.iter()
                .map(|r| r[c].chars().count())
                .chain([header[c].chars().count()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let line = |cells: Vec<String>| {
        let padded: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(c, &w)| format!("{c:>w$}"))
            .collect();
        println!("{}", padded.join("  "));
    };
    line(header.iter().map(|s| s.to_string()).collect());
    for r in rows {
        line(r);
    }
}
