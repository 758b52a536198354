//! The run command: every run the flags ask for, trained in the schedule's order, with its
//! curve, chart, summary line, `run.json` and workbook.
use super::{figures, setting_cells, setting_columns, Context, Experiment, Run};
use crate::atomic;
use crate::checkpoint;
use crate::options::Impl;
use crate::record::{self, Cell};
use crate::stop::{self, Status};
use crate::tensorboard::Board;
use crate::workbook;
use anyhow::{bail, Context as _, Result};
use serde::Serialize;
use std::path::{Path, PathBuf};

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
///
/// With `checkpoints` (the command's flags), every run keeps a checkpoint in
/// `<out>/.<NAME>.checkpoints/` (see [`crate::checkpoint`]); a command stopped or killed leaves
/// them, and the next one continues from them with `--resume` (or starts over with
/// `--overwrite`; without either it refuses, naming both). They are removed when the command
/// has finished, unless `--keep-checkpoints`.
pub fn run<E: Experiment>(
    cfg: &E::Config,
    ctx: &Context,
    checkpoints: Option<&Checkpoints>,
) -> Result<()> {
    check_grid::<E>(cfg)?;
    if let Some(c) = checkpoints {
        c.writing.check::<E>()?;
    }
    let data = E::prepare(cfg, ctx)?;
    stop::before_first_run(&ctx.out.join(E::NAME))?;
    let dir = record::experiment_dir(&ctx.out, E::NAME)?;
    let lock_file = ctx.out.join(format!(".{}.lock", E::NAME));
    let _lock = crate::lock::lock(&lock_file, &dir, crate::lock::Use::Alone)?;
    if let Some(pid) = atomic::live_writer(&ctx.out, E::NAME) {
        bail!(
            "'{}' is being written by PID {pid}, whose lock file '{}' was removed; wait for it \
             to finish, or stop it",
            dir.display(),
            lock_file.display()
        );
    }
    if let Some(other) = not_ours(&dir) {
        bail!(
            "'{}' is not a file this program writes there, and a run replaces '{}' whole; move \
             it elsewhere, or choose another --out",
            other.display(),
            dir.display()
        );
    }
    let plan = match checkpoints.filter(|c| E::CHECKPOINTS && !c.writing.no_checkpoints) {
        Some(flags) => {
            let (plan, found) = checkpoint_plan::<E>(cfg, ctx, flags)?;
            if flags.resume && !found {
                if finished_here::<E>(cfg, ctx, &dir) {
                    std::fs::remove_dir_all(&plan.dir).ok();
                    crate::errln!(
                        "nothing to resume: {} holds this command's finished results, kept as \
                         they are",
                        dir.display()
                    );
                    return Ok(());
                }
                crate::errln!(
                    "note: no checkpoints in {}: every run trains from its first epoch",
                    plan.dir.display()
                );
            }
            Some(plan)
        }
        None => None,
    };
    // The event files belong to the set: written (live, epoch by epoch) into a staging
    // directory of their own, `<out>/tensorboard/.<NAME>.<pid>.staging`, swapped in as
    // `<out>/tensorboard/<NAME>` right after the set.
    let boards = ctx.out.join("tensorboard");
    let board_dir = boards.join(E::NAME);
    let board_stage = match ctx.tensorboard {
        true => {
            std::fs::create_dir_all(&boards).with_context(|| {
                format!(
                    "cannot create '{}' (choose a writable --out, or add --no-tensorboard)",
                    boards.display()
                )
            })?;
            Some(atomic::staging_dir(&boards, E::NAME)?)
        }
        false => {
            atomic::clear_left(&boards, E::NAME);
            None
        }
    };
    let ctx = &Context {
        checkpoints: plan.clone(),
        board: board_stage.as_ref().map(|s| Board::new(s.clone())),
        ..ctx.clone()
    };
    let stage = atomic::staging_dir(&ctx.out, E::NAME)?;
    // Removed however the runs end, a libtorch error raised as a panic (out of memory) too;
    // with it the checkpoint directory, where no checkpoint was written.
    let _cleanup = Cleanup {
        stages: [Some(stage.as_path()), board_stage.as_deref()],
        checkpoints: plan.as_ref().map(|p| p.dir.as_path()),
    };
    let outcome = match write_runs::<E>(cfg, ctx, &data, &stage) {
        Ok(outcome) => outcome,
        Err(e) => {
            // Only where a checkpoint was written (its first write may be what failed; a
            // failed write removes its temporary).
            if let Some(plan) = plan.as_ref().filter(|p| !p.files().is_empty()) {
                crate::errln!(
                    "note: the runs' checkpoints are kept in {}: once the cause below is fixed, \
                     --resume goes on from them (--overwrite starts over)",
                    plan.dir.display()
                );
            }
            let e = atomic::named_as(e, &stage, &dir);
            return Err(match &board_stage {
                Some(s) => atomic::named_as(e, s, &board_dir),
                None => e,
            });
        }
    };
    atomic::swap_in(&stage, &dir)?;
    // Without TensorBoard, the previous set's event files would describe other runs.
    match &board_stage {
        Some(s) => atomic::swap_in(s, &board_dir)?,
        None if board_dir.exists() => std::fs::remove_dir_all(&board_dir)
            .with_context(|| format!("cannot remove '{}'", board_dir.display()))?,
        None => {}
    }
    if let Some(plan) = &plan {
        if outcome.interrupted() {
            let mut stopped = outcome.result(&dir).expect_err("an interrupted command");
            stopped.message += &format!(
                "; add --resume to continue from the checkpoints in {}",
                plan.dir.display()
            );
            return Err(stopped.into());
        }
        if !checkpoints.is_some_and(|c| c.writing.keep_checkpoints) {
            std::fs::remove_dir_all(&plan.dir).with_context(|| {
                format!("cannot remove the checkpoints in '{}'", plan.dir.display())
            })?;
        }
    }
    outcome.result(&dir)?;
    Ok(())
}

/// What a run command leaves behind when it ends early: its staging directories (the set's and
/// its event files'; swapped in, they are gone already) and an empty checkpoint directory.
struct Cleanup<'a> {
    stages: [Option<&'a Path>; 2],
    checkpoints: Option<&'a Path>,
}

impl Drop for Cleanup<'_> {
    fn drop(&mut self) {
        for stage in self.stages.into_iter().flatten() {
            let _ = std::fs::remove_dir_all(stage);
        }
        if let Some(dir) = self.checkpoints {
            // Only when empty: checkpoints are what --resume goes on from.
            let _ = std::fs::remove_dir(dir);
        }
    }
}

/// The run command's flags besides the experiment's: its checkpoints, and what to do with
/// those a stopped command left.
#[derive(clap::Args, Debug, Clone, Default, Serialize)]
pub struct Checkpoints {
    /// Continue from the checkpoints a stopped or killed command left (its finished runs are kept, the others go on from their last checkpoint)
    #[arg(long, conflicts_with = "overwrite")]
    pub resume: bool,
    /// Start over where a stopped command left checkpoints (they are deleted)
    #[arg(long)]
    pub overwrite: bool,
    #[command(flatten)]
    pub writing: CheckpointWriting,
}

/// How runs write checkpoints (the run command's and a sweep's flags).
#[derive(clap::Args, Debug, Clone, Default, Serialize)]
pub struct CheckpointWriting {
    /// Write each run's checkpoint after every N-th epoch (and after the last); by default after the first epoch that ends at least 1 s and 100 times the last checkpoint's write time after it (at most 1 % of the training)
    #[arg(long, allow_hyphen_values = true, value_parser = crate::options::epochs)]
    pub checkpoint_every: Option<usize>,
    /// Keep the checkpoints of finished runs (they are removed by default)
    #[arg(long)]
    pub keep_checkpoints: bool,
    /// Write no checkpoints (a stopped run then trains again from its first epoch)
    #[arg(long, conflicts_with_all = ["resume", "keep_checkpoints"])]
    pub no_checkpoints: bool,
}

impl CheckpointWriting {
    /// Refuses checkpoint flags for an experiment that keeps no checkpoints.
    pub fn check<E: Experiment>(&self) -> Result<()> {
        if !E::CHECKPOINTS && (self.checkpoint_every.is_some() || self.keep_checkpoints) {
            bail!(
                "--checkpoint-every and --keep-checkpoints are not for {}: its runs keep no \
                 checkpoints",
                E::NAME
            );
        }
        Ok(())
    }

    /// When a run writes its checkpoint: `--checkpoint-every`, or the default.
    pub fn every(&self) -> checkpoint::Every {
        self.checkpoint_every
            .map_or(checkpoint::Every::Affordable, checkpoint::Every::Epochs)
    }
}

/// `<out>/.<NAME>.checkpoints`, checked against the flags: what a stopped command left there is
/// refused without `--resume` or `--overwrite`, removed with `--overwrite`, and with `--resume`
/// read through (every checkpoint must be of a run these flags train, of this configuration
/// and this build) before anything trains.
fn checkpoint_plan<E: Experiment>(
    cfg: &E::Config,
    ctx: &Context,
    flags: &Checkpoints,
) -> Result<(checkpoint::Plan, bool)> {
    let dir = ctx.out.join(format!(".{}.checkpoints", E::NAME));
    let plan = checkpoint::Plan {
        dir: dir.clone(),
        every: flags.writing.every(),
        resume: flags.resume,
        config: super::fingerprint::<E>(cfg, ctx.device)?,
        keep: flags.writing.keep_checkpoints,
    };
    // Held alone (the lock): a temporary file there is a killed writer's.
    atomic::remove_temporaries(&dir);
    let found = plan.files();
    if found.is_empty() {
        // Said by the caller, who knows whether the results are already finished.
    } else if flags.overwrite {
        std::fs::remove_dir_all(&dir)
            .with_context(|| format!("cannot remove '{}'", dir.display()))?;
    } else if !flags.resume {
        let first = &found[0];
        let metas: Vec<Option<checkpoint::Meta>> =
            found.iter().map(|f| checkpoint::describe(f).ok()).collect();
        let what = match &metas[0] {
            Some(meta) => format!(
                "{} at epoch {} of {}",
                name_of(first),
                meta.epoch,
                meta.epochs
            ),
            None => name_of(first),
        };
        let all_finished = metas
            .iter()
            .all(|m| m.as_ref().is_some_and(|m| m.epoch == m.epochs));
        let whose = if all_finished {
            "a command that finished and kept them (--keep-checkpoints)"
        } else {
            "a command that was stopped"
        };
        bail!(
            "{} holds the checkpoints of {whose} ({what}{}); add --resume to continue from them \
             (a finished run is not trained again), or --overwrite to start over (they are \
             deleted)",
            dir.display(),
            if found.len() > 1 {
                format!(", and {} more", found.len() - 1)
            } else {
                String::new()
            }
        );
    } else {
        let mut expected = std::collections::HashMap::new();
        for (version, settings) in E::schedule(cfg) {
            for setting in settings {
                let run = plan.run(
                    &E::stem(version, setting, false),
                    ctx.seed,
                    version,
                    &setting,
                );
                expected.insert(run.path.clone(), run.fingerprint);
            }
        }
        for path in &found {
            let Some(fingerprint) = expected.get(path) else {
                bail!(
                    "the checkpoint '{}' is of no run these flags train (another configuration or \
                     seed); {}, or resume with the flags that wrote it",
                    path.display(),
                    checkpoint::WAY_ON
                );
            };
            checkpoint::load(path, fingerprint, ctx.device)?;
        }
    }
    std::fs::create_dir_all(&dir).with_context(|| {
        format!(
            "cannot create '{}' for the checkpoints (check the permissions there, or choose \
             another --out)",
            dir.display()
        )
    })?;
    Ok((plan, !found.is_empty() && flags.resume))
}

/// Whether `dir` holds the finished results (`run.json` with status ok) of this very command:
/// the same experiment, configuration, seed, device and CPU kernels.
fn finished_here<E: Experiment>(cfg: &E::Config, ctx: &Context, dir: &Path) -> bool {
    let Ok(bytes) = std::fs::read(dir.join("run.json")) else {
        return false;
    };
    let Ok(old) = serde_json::from_slice::<serde_json::Value>(&bytes) else {
        return false;
    };
    let info = record::RunInfo::new(E::NAME, cfg, ctx.seed, ctx.device_requested, ctx.device);
    let Ok(now) = serde_json::to_value(&info) else {
        return false;
    };
    let same = ["experiment", "config", "seed", "device", "cpu_kernels"]
        .iter()
        .all(|k| old.get(k) == now.get(k));
    same && old.get("status").and_then(|s| s.as_str()) == Some("ok")
}

/// The first entry of a run command's directory (by name) that this program did not write
/// there: anything but a regular file with the extension of a set's files (`.csv`, `.svg`,
/// `.xlsx`, `.json`, `.safetensors`) — a user's notes, another command's output nested in it
/// (`--out <out>/weight-decay`), a link. A rerun replaces the directory whole, so it refuses
/// instead of removing them.
fn not_ours(dir: &Path) -> Option<PathBuf> {
    record::foreign(dir, |name, kind| {
        let known = record::visible_with(name, &["csv", "svg", "xlsx", "json", "safetensors"]);
        kind == record::Entry::File && (record::is_probe(name) || known)
    })
}

fn name_of(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
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
    let mut done: Vec<(Impl, E::Setting, Run<E>)> = Vec::new();
    let mut curves: Vec<(String, String, Vec<u8>)> = Vec::new();
    let mut outcome = stop::Outcome::default();
    'schedule: for (version, settings) in E::schedule(cfg) {
        let runs = E::train(cfg, data, version, &settings, ctx)?;
        for (setting, run) in settings.into_iter().zip(runs) {
            let name = E::label(version, setting);
            if run.status == Status::Ok {
                crate::outln!("{name}: {}", E::report(&run));
            }
            let stop = outcome.record(&name, run.status, run.curve.len(), &E::advice(cfg));
            let stem = E::stem(version, setting, alone);
            let title = E::curve_title(version, setting, &run);
            let chart = ctx.plots.then(|| E::curve_chart(&title));
            // The event file first: a run it stopped (a full disk, a size cap) is reported
            // by the write that failed, not by the next file that cannot be written either.
            super::finish_board::<E>(cfg, ctx, version, setting, &run)?;
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
    let runs: Vec<(Impl, E::Setting, &Run<E>)> = done.iter().map(|(v, s, r)| (*v, *s, r)).collect();
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
