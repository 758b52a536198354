//! A sweep's tables and summary: `runs.csv` (a line per run), `summary.csv` (mean and sample
//! sd over the seeds per setting), the printed table, and the series the figures draw.
use super::*;

/// `ok` when every seed finished; otherwise the first of interrupted, diverged.
pub(super) fn setting_status(statuses: &[Status], seeds: usize) -> Status {
    if statuses.contains(&Status::Interrupted) || statuses.len() < seeds {
        Status::Interrupted
    } else if statuses.contains(&Status::Diverged) {
        Status::Diverged
    } else {
        Status::Ok
    }
}

/// One run of a sweep (a line of `runs.csv`).
pub(super) struct SweepRun<S> {
    seed: i64,
    version: Impl,
    setting: S,
    status: Status,
    epochs: usize,
    finals: Vec<f64>,
    gap: f64,
    seconds: f64,
}

impl<S: Copy> SweepRun<S> {
    pub(super) fn cells<E: Experiment<Setting = S>>(&self) -> Vec<Cell> {
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
}

pub(super) fn names<'a>(columns: &'a [&'a str]) -> impl Iterator<Item = String> + 'a {
    columns.iter().map(|s| s.to_string())
}

/// The lines of `runs.csv`: every planned run that has a record, in the plan's order.
pub(super) fn lines<E: Experiment>(
    planned: &[Planned<E::Setting>],
    records: &HashMap<String, RunRecord>,
) -> Vec<SweepRun<E::Setting>> {
    planned
        .iter()
        .filter_map(|p| {
            let r = records.get(&p.stem)?;
            Some(SweepRun {
                seed: p.seed,
                version: p.version,
                setting: p.setting,
                status: r.status,
                epochs: r.epochs,
                finals: r.finals.iter().map(|&v| nan(v)).collect(),
                gap: nan(r.gap),
                seconds: nan(r.seconds),
            })
        })
        .collect()
}

pub(super) fn runs_header<E: Experiment>(cfg: &E::Config) -> Vec<String> {
    let mut header: Vec<String> = names(&["seed", "impl"]).collect();
    header.extend(experiment::setting_columns::<E>(cfg));
    header.extend(names(&["status", "epochs"]));
    header.extend(final_names::<E>(cfg));
    header.extend(names(&["gap", "seconds"]));
    header
}

/// The names of the final figures a run of `cfg` reports.
fn final_names<E: Experiment>(cfg: &E::Config) -> Vec<String> {
    experiment::figures(&E::unfinished(cfg))
        .into_iter()
        .map(|(name, _)| name)
        .collect()
}

pub(super) fn write_runs_csv<E: Experiment>(
    cfg: &E::Config,
    dir: &Path,
    runs: &[SweepRun<E::Setting>],
) -> Result<Vec<u8>> {
    let lines: Vec<Vec<Cell>> = runs.iter().map(|r| r.cells::<E>()).collect();
    let bytes = record::table_bytes(&runs_header::<E>(cfg), &lines)?;
    record::write_atomic(&dir.join("runs.csv"), &bytes)?;
    Ok(bytes)
}

/// The sweep's summary from its runs' records: `runs.csv`, `summary.csv`, the figures, the
/// workbook, the table on stdout; fails on an interruption, warns of diverged runs.
pub(super) fn summarise_dir<E: Experiment>(
    cfg: &E::Config,
    dir: &Path,
    planned: &[Planned<E::Setting>],
    records: &HashMap<String, RunRecord>,
    seeds: usize,
    plots: bool,
    interrupted: bool,
) -> Result<()> {
    let runs = lines::<E>(planned, records);
    // The previous summary goes first: a write that fails below leaves a summary that is
    // missing files (the error names the one), never one whose files disagree; and
    // `--no-plot` leaves no older figure or workbook.
    remove_summary(dir);
    let runs_bytes = write_runs_csv::<E>(cfg, dir, &runs)?;
    let settings = summarise::<E>(cfg, &runs, seeds)?;
    let mut header: Vec<String> = names(&["impl"]).collect();
    header.extend(experiment::setting_columns::<E>(cfg));
    header.extend(names(&["status", "seeds", "seeds_ok"]));
    let stats = E::sweep_stats(cfg);
    for (name, _) in &stats {
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
            for &(_, stat) in &stats {
                let (mean, std) = s.stat(stat);
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
    if plots {
        for (name, title, panels) in E::sweep_charts(cfg, &settings, seeds) {
            record::write_panels(&dir.join(&name), &title, &panels)?;
            for (i, (figure, series)) in panels.iter().enumerate() {
                let sheet = format!("{} {}", name.trim_end_matches(".svg"), i + 1);
                let mut figure = figure.clone();
                figure.title = if panels.len() > 1 {
                    format!("{title}: {}", figure.title)
                } else {
                    title.clone()
                };
                book.add_figure(&sheet, &figure, series)?;
            }
        }
        book.save(&dir.join("results.xlsx"))?;
    }
    print_table(settings.iter().map(|s| E::sweep_table_row(cfg, s)));
    for note in E::sweep_notes(cfg, &settings) {
        crate::outln!("{note}");
    }
    let diverged = runs.iter().filter(|r| r.status == Status::Diverged).count();
    let finished = runs
        .iter()
        .filter(|r| r.status != Status::Interrupted)
        .count();
    finish(dir, runs.len(), finished, diverged, interrupted)
}

/// Every version × setting over its seeds, with the final figures of the runs that finished.
pub(super) fn summarise<E: Experiment>(
    cfg: &E::Config,
    runs: &[SweepRun<E::Setting>],
    seeds: usize,
) -> Result<Vec<SettingStats<E>>> {
    let mut settings = Vec::new();
    let names = final_names::<E>(cfg);
    for version in E::impls(cfg) {
        for setting in E::settings_for(cfg, version) {
            let of: Vec<&SweepRun<E::Setting>> = runs
                .iter()
                .filter(|r| r.version == version && r.setting == setting)
                .collect();
            let ok: Vec<&&SweepRun<E::Setting>> =
                of.iter().filter(|r| r.status == Status::Ok).collect();
            let finals = ok
                .iter()
                .map(|r| experiment::finals_from(&names, &r.finals))
                .collect::<Result<Vec<E::Finals>>>()?;
            settings.push(SettingStats {
                version,
                setting,
                status: setting_status(&of.iter().map(|r| r.status).collect::<Vec<_>>(), seeds),
                seeds,
                seeds_ok: ok.len(),
                finals,
            });
        }
    }
    Ok(settings)
}

/// One point per setting (x = `x(setting)`, y = a mean) and the matching ± sd.
pub fn at_settings<E: Experiment>(
    rows: &[&SettingStats<E>],
    x: impl Fn(&E::Setting) -> f64,
    f: impl Fn(&SettingStats<E>) -> (f64, f64),
) -> (Vec<(f64, f64)>, Vec<f64>) {
    let points = rows.iter().map(|s| (x(&s.setting), f(s).0)).collect();
    let errors = rows.iter().map(|s| f(s).1).collect();
    (points, errors)
}

/// The pair of curves a sweep figure draws for one group of settings: the mean ± sd of the
/// statistics `train` (solid) and `test` (dashed, with markers), named `train <suffix>` and
/// `test <suffix>`, in one colour, at x = `x(setting)`.
pub fn train_test_series<E: Experiment>(
    rows: &[&SettingStats<E>],
    x: impl Fn(&E::Setting) -> f64 + Copy,
    [train, test]: [Stat<E::Finals>; 2],
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

/// A small aligned table on stdout: a header of the first row's names, then the values.
pub(super) fn print_table(rows: impl Iterator<Item = Vec<(String, String)>>) {
    let rows: Vec<Vec<(String, String)>> = rows.collect();
    let Some(first) = rows.first() else {
        return;
    };
    let header: Vec<String> = first.iter().map(|(name, _)| name.clone()).collect();
    let rows: Vec<Vec<String>> = rows
        .into_iter()
        .map(|r| r.into_iter().map(|(_, v)| v).collect())
        .collect();
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
        crate::outln!("{}", padded.join("  "));
    };
    line(header.iter().map(|s| s.to_string()).collect());
    for r in rows {
        line(r);
    }
}
