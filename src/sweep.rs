//! The book's exercises in one command, for any experiment: train every setting of a grid (λ,
//! or the two dropout rates) once per seed and summarise the final figures, the
//! generalization gap, and their mean and standard deviation over the seeds.
//!
//! Writes `<out>/sweep/<experiment>/`: `runs.csv` (one row per setting and seed, rewritten
//! after every group of runs so an interruption loses nothing finished), `summary.csv` (one row
//! per setting), `summary.svg` (final train and test figures against the settings) and every
//! run's curve under `runs/`. A diverged run is recorded (status `diverged`) and the sweep goes
//! on.
use crate::experiment::{self, Context, Experiment, SettingStats, Stat};
use crate::options::{seed, Version};
use crate::record::{self, Cell};
use crate::stop::{Status, Stopped};
use anyhow::Result;
use serde::Serialize;
use std::path::Path;

/// `sweep <experiment>`: the experiment's own flags (those that take lists make the grid) and
/// the seeds.
#[derive(clap::Args, Debug, Clone, Serialize)]
pub struct SweepArgs<C: clap::Args> {
    #[command(flatten)]
    pub experiment: C,
    /// Seeds, comma-separated (default: --seed); every setting is trained once per seed
    #[arg(long, value_delimiter = ',', allow_negative_numbers = true, value_parser = seed)]
    pub seeds: Vec<i64>,
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

/// One finished run of a sweep (a line of `runs.csv`).
struct SweepRun<S> {
    seed: i64,
    version: Version,
    setting: S,
    status: Status,
    epochs: usize,
    finals: Vec<f64>,
    gap: f64,
    seconds: f64,
}

impl<S: Copy> SweepRun<S> {
    fn cells<E: Experiment<Setting = S>>(&self) -> Vec<Cell> {
        let mut line = vec![Cell::Int(self.seed)];
        line.extend(experiment::setting_cells::<E>(self.version, self.setting));
        line.extend([
            Cell::text(self.status.name()),
            Cell::Int(self.epochs as i64),
        ]);
        line.extend(self.finals.iter().map(|&v| Cell::Float(v)));
        line.extend([Cell::Float(self.gap), Cell::Float(self.seconds)]);
        line
    }

    /// The value of a statistic of this run.
    fn value(&self, stat: Stat) -> f64 {
        match stat {
            Stat::Final(i) => self.finals[i],
            Stat::Gap => self.gap,
        }
    }
}

fn names<'a>(columns: &'a [&'a str]) -> impl Iterator<Item = String> + 'a {
    columns.iter().map(|s| s.to_string())
}

/// Trains every version × setting × seed and writes the sweep's files; see the module.
pub fn run<E: Experiment>(sweep: &SweepArgs<E::Config>, ctx: &Context) -> Result<()>
where
    E::Config: clap::Args,
{
    let cfg = &sweep.experiment;
    let seeds = if sweep.seeds.is_empty() {
        vec![ctx.seed]
    } else {
        sweep.seeds.clone()
    };
    let data = E::prepare(cfg, ctx)?;
    let dir = record::experiment_dir(&record::experiment_dir(&ctx.out, "sweep")?, E::NAME)?;
    let runs_dir = record::experiment_dir(&dir, "runs")?;
    let mut header: Vec<String> = names(&["seed", "impl"]).collect();
    header.extend(names(E::SETTING_COLUMNS).chain(names(&["status", "epochs"])));
    header.extend(E::finals(cfg).iter().map(|s| s.to_string()));
    header.extend(names(&["gap", "seconds"]));
    let mut runs: Vec<SweepRun<E::Setting>> = Vec::new();
    let mut interrupted = false;
    'seeds: for &seed in &seeds {
        let ctx = ctx.with_seed(seed);
        for (version, settings) in E::schedule(cfg) {
            let trained = E::train(cfg, &data, version, &settings, &ctx);
            for (setting, run) in settings.into_iter().zip(trained) {
                let stem =
                    runs_dir.join(format!("{}-seed{seed}", E::stem(version, setting, false)));
                record::write_csv(&record::with_suffix(&stem, "csv"), &run.curve)?;
                if run.status == Status::Ok {
                    E::save(cfg, &run, &stem, false)?;
                }
                interrupted |= run.status == Status::Interrupted;
                runs.push(SweepRun {
                    seed,
                    version,
                    setting,
                    status: run.status,
                    epochs: run.curve.len(),
                    gap: E::gap(&run.finals),
                    finals: run.finals,
                    seconds: run.seconds,
                });
            }
            let lines: Vec<Vec<Cell>> = runs.iter().map(|r| r.cells::<E>()).collect();
            record::write_table(&dir.join("runs.csv"), &header, &lines)?;
            if interrupted {
                break 'seeds;
            }
        }
    }
    let runs_bytes = record::table_bytes(
        &header,
        &runs.iter().map(|r| r.cells::<E>()).collect::<Vec<_>>(),
    )?;
    let settings = summarise::<E>(cfg, &runs, seeds.len());
    let mut header: Vec<String> = names(&["impl"]).collect();
    header.extend(names(E::SETTING_COLUMNS));
    header.extend(names(&["status", "seeds", "seeds_ok"]));
    for (name, _) in E::sweep_stats(cfg) {
        header.extend([format!("{name}_mean"), format!("{name}_std")]);
    }
    let (mark_columns, marks) = E::sweep_marks(cfg, &settings);
    header.extend(names(&mark_columns));
    let lines: Vec<Vec<Cell>> = settings
        .iter()
        .zip(marks)
        .map(|(s, marks)| {
            let mut line = experiment::setting_cells::<E>(s.version, s.setting);
            line.extend([
                Cell::text(s.status.name()),
                Cell::Int(s.seeds as i64),
                Cell::Int(s.seeds_ok as i64),
            ]);
            for &(_, (mean, std)) in &s.stats {
                line.extend([Cell::Float(mean), Cell::Float(std)]);
            }
            line.extend(marks);
            line
        })
        .collect();
    let summary_bytes = record::table_bytes(&header, &lines)?;
    record::write_atomic(&dir.join("summary.csv"), &summary_bytes)?;
    let mut book = crate::workbook::Book::new();
    book.add_table("summary", &summary_bytes)?;
    book.add_table("runs", &runs_bytes)?;
    for (name, title, panels) in E::sweep_charts(cfg, &settings, seeds.len()) {
        let svg = dir.join(&name);
        if ctx.plots {
            record::write_panels(&svg, &title, &panels)?;
            for (i, (figure, series)) in panels.iter().enumerate() {
                let sheet = format!("{} {}", name.trim_end_matches(".svg"), i + 1);
                let mut figure = figure.clone();
                if panels.len() > 1 {
                    figure.title = format!("{title}: {}", figure.title);
                } else {
                    figure.title = title.clone();
                }
                book.add_figure(&sheet, &figure, series)?;
            }
        } else {
            record::remove_stale(&svg);
        }
    }
    let xlsx = dir.join("results.xlsx");
    if ctx.plots {
        book.save(&xlsx)?;
    } else {
        record::remove_stale(&xlsx);
    }
    print_table(E::SWEEP_TABLE, settings.iter().map(E::sweep_table_row));
    for note in E::sweep_notes(cfg, &settings) {
        println!("{note}");
    }
    let diverged = runs.iter().filter(|r| r.status == Status::Diverged).count();
    finish(&dir, runs.len(), diverged, interrupted)
}

/// Every version × setting over its seeds (mean and sd over the runs that finished).
fn summarise<E: Experiment>(
    cfg: &E::Config,
    runs: &[SweepRun<E::Setting>],
    seeds: usize,
) -> Vec<SettingStats<E::Setting>> {
    let mut settings = Vec::new();
    let stats = E::sweep_stats(cfg);
    for version in E::versions(cfg) {
        for setting in E::settings_for(cfg, version) {
            let of: Vec<&SweepRun<E::Setting>> = runs
                .iter()
                .filter(|r| r.version == version && r.setting == setting)
                .collect();
            let ok: Vec<&&SweepRun<E::Setting>> =
                of.iter().filter(|r| r.status == Status::Ok).collect();
            let stats = stats
                .iter()
                .map(|&(name, stat)| {
                    let values: Vec<f64> = ok.iter().map(|r| r.value(stat)).collect();
                    (name, mean_std(&values))
                })
                .collect();
            settings.push(SettingStats {
                version,
                setting,
                status: setting_status(&of.iter().map(|r| r.status).collect::<Vec<_>>(), seeds),
                seeds,
                seeds_ok: ok.len(),
                stats,
            });
        }
    }
    settings
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

/// One point per setting (x = `x(setting)`, y = a mean) and the matching ± sd.
pub fn at_settings<S>(
    rows: &[&SettingStats<S>],
    x: impl Fn(&S) -> f64,
    f: impl Fn(&SettingStats<S>) -> (f64, f64),
) -> (Vec<(f64, f64)>, Vec<f64>) {
    let points = rows.iter().map(|s| (x(&s.setting), f(s).0)).collect();
    let errors = rows.iter().map(|s| f(s).1).collect();
    (points, errors)
}

/// The pair of curves a sweep figure draws for one group of settings: the mean ± sd of the
/// statistics `train` (solid) and `test` (dashed, with markers), named `train <suffix>` and
/// `test <suffix>`, in one colour, at x = `x(setting)`.
pub fn train_test_series<S>(
    rows: &[&SettingStats<S>],
    x: impl Fn(&S) -> f64 + Copy,
    [train, test]: [&str; 2],
    suffix: &str,
    color: usize,
) -> [crate::plot::Series; 2] {
    use crate::plot::Series;
    let (points, errors) = at_settings(rows, x, |s| s.stat(train));
    let train = Series::line(format!("train {suffix}"), points, color).with_errors(errors);
    let (points, errors) = at_settings(rows, x, |s| s.stat(test));
    let test = Series::line(format!("test {suffix}"), points, color)
        .with_markers()
        .dashed()
        .with_errors(errors);
    [train, test]
}

/// A sweep figure's title: what it shows, after how many epochs, over how many seeds.
pub fn title(what: &str, epochs: usize, seeds: usize) -> String {
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
