//! The run command: every run the flags ask for, trained in the schedule's order, with its
//! curve, chart, summary line, `run.json` and workbook.
use super::{figures, setting_cells, setting_columns, Context, Experiment, Run};
use crate::atomic;
use crate::options::Version;
use crate::record::{self, Cell};
use crate::stop::{self, Status};
use crate::workbook;
use anyhow::Result;
use std::path::Path;

/// The most settings one command trains (the product of its list flags' lengths).
pub const MAX_SETTINGS: usize = 10_000;

/// Refuses a grid of more than [`MAX_SETTINGS`] settings before anything is loaded or trained.
pub fn check_grid<E: Experiment>(cfg: &E::Config) -> Result<()> {
    let n = E::settings(cfg).len();
    if n > MAX_SETTINGS {
        anyhow::bail!(
            "the flags {} make {n} settings, more than the {MAX_SETTINGS} one command trains; \
             shorten the lists (or split the grid over several --out directories)",
            setting_columns::<E>(cfg)
                .iter()
                .map(|k| format!("--{}", k.replace('_', "-")))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    check_lists(&serde_json::to_value(cfg)?)
}

/// Refuses a list flag that names a value twice (`--wd 3,3`): the grid would train the same
/// run twice and a sweep would count one run as two seeds.
fn check_lists(cfg: &serde_json::Value) -> Result<()> {
    let Some(fields) = cfg.as_object() else {
        return Ok(());
    };
    for (name, value) in fields {
        let Some(items) = value.as_array() else {
            continue;
        };
        let same = |a: &serde_json::Value, b: &serde_json::Value| match (a.as_f64(), b.as_f64()) {
            (Some(a), Some(b)) => a == b,
            _ => a == b,
        };
        for (i, item) in items.iter().enumerate() {
            if items[..i].iter().any(|earlier| same(earlier, item)) {
                let shown = match (item.as_f64(), item.as_str()) {
                    (Some(v), _) => super::fmt_num(v),
                    (_, Some(text)) => text.to_string(),
                    _ => item.to_string(),
                };
                anyhow::bail!(
                    "--{} lists {shown} twice; name each value once",
                    name.replace('_', "-")
                );
            }
        }
    }
    Ok(())
}

/// Every run the flags ask for, in the schedule's order; writes `<out>/<NAME>/{<run>.csv and
/// its chart, summary.csv, run.json}` and the overview charts. A diverged run is recorded and
/// the others go on; the command then fails. An interruption records what finished and stops.
///
/// The files appear together: they are written into a hidden directory beside
/// (`<out>/.<NAME>.<pid>.staging`) that then takes the place of `<out>/<NAME>` in one rename.
/// A command that fails or is killed leaves the previous set as it was; the next command
/// removes what it left. One command at a time writes there (`<out>/.<NAME>.lock`).
pub fn run<E: Experiment>(cfg: &E::Config, ctx: &Context) -> Result<()> {
    check_grid::<E>(cfg)?;
    let data = E::prepare(cfg, ctx)?;
    let dir = record::experiment_dir(&ctx.out, E::NAME)?;
    let lock_file = ctx.out.join(format!(".{}.lock", E::NAME));
    let _lock = crate::lock::lock(&lock_file, &dir, crate::lock::Use::Alone)?;
    let stage = atomic::staging_dir(&ctx.out, E::NAME)?;
    let outcome = match write_runs::<E>(cfg, ctx, &data, &stage) {
        Ok(outcome) => outcome,
        Err(e) => {
            let _ = std::fs::remove_dir_all(&stage);
            return Err(atomic::named_as(e, &stage, &dir));
        }
    };
    atomic::swap_in(&stage, &dir)?;
    outcome.result(&dir)?;
    Ok(())
}

/// Trains and writes every run into `dir`; how they ended.
fn write_runs<E: Experiment>(
    cfg: &E::Config,
    ctx: &Context,
    data: &E::Data,
    dir: &Path,
) -> Result<stop::Outcome> {
    let alone = E::settings(cfg).len() == 1;
    let mut header: Vec<String> = ["impl"].iter().map(|s| s.to_string()).collect();
    header.extend(setting_columns::<E>(cfg));
    header.extend(["status", "epochs"].map(String::from));
    header.extend(
        figures(&E::unfinished(cfg))
            .into_iter()
            .map(|(name, _)| name),
    );
    header.push("seconds".into());
    let mut summary: Vec<Vec<Cell>> = Vec::new();
    let mut done: Vec<(Version, E::Setting, Run<E>)> = Vec::new();
    let mut curves: Vec<(String, String, Vec<u8>)> = Vec::new();
    let mut outcome = stop::Outcome::default();
    'schedule: for (version, settings) in E::schedule(cfg) {
        let runs = E::train(cfg, data, version, &settings, ctx);
        for (setting, run) in settings.into_iter().zip(runs) {
            let name = E::label(version, setting);
            if run.status == Status::Ok {
                println!("{name}: {}", E::report(&run));
            }
            let stop = outcome.record(&name, run.status, run.curve.len(), &E::advice(cfg));
            let stem = E::stem(version, setting, alone);
            let title = E::curve_title(version, setting, &run);
            let chart = ctx.plots.then(|| E::curve_chart(&title));
            let bytes = record::write_curve(dir, &stem, &run.curve, chart)?;
            if run.status == Status::Ok {
                E::save(cfg, &run, &dir.join(&stem), ctx.plots)?;
            }
            let mut line = setting_cells::<E>(version, setting);
            line.extend([
                Cell::text(run.status.name()),
                Cell::Int(run.curve.len() as i64),
            ]);
            line.extend(
                figures(&run.finals)
                    .into_iter()
                    .map(|(_, v)| Cell::Float(v)),
            );
            line.push(Cell::Float(run.seconds));
            summary.push(line);
            curves.push((stem, title, bytes));
            done.push((version, setting, run));
            if stop {
                break 'schedule;
            }
        }
    }
    let runs: Vec<(Version, E::Setting, &Run<E>)> =
        done.iter().map(|(v, s, r)| (*v, *s, r)).collect();
    E::write_overview_charts(dir, &runs, ctx.plots)?;
    let summary_bytes = record::table_bytes(&header, &summary)?;
    record::write_atomic(&dir.join("summary.csv"), &summary_bytes)?;
    let info = record::RunInfo::new(E::NAME, cfg, ctx.seed, ctx.device_requested, ctx.device)
        .with_status(outcome.status());
    record::write_json(&dir.join("run.json"), &info)?;
    let xlsx = dir.join("results.xlsx");
    if ctx.plots {
        let mut book = workbook::Book::new();
        book.add_table("summary", &summary_bytes)?;
        for (stem, title, bytes) in &curves {
            let table = book.add_table(stem, bytes)?;
            for (i, spec) in E::curve_chart(title).workbook_specs().iter().enumerate() {
                book.add_chart(&table, spec, i as u32)?;
            }
        }
        book.add_json("run", &serde_json::to_value(&info)?)?;
        book.save(&xlsx)?;
    }
    Ok(outcome)
}
