//! The book's exercises in one command, for any experiment: train every setting of a grid (λ,
//! or the two dropout rates) once per seed and summarise the final figures, the
//! generalization gap, and their mean and standard deviation over the seeds.
//!
//! Writes `<out>/sweep/<experiment>/`: every run's curve and its record under `runs/`
//! (`<run>-seed<k>.csv`, then `<run>-seed<k>.json`: how it ended, its final figures, and a
//! fingerprint of the configuration apart from what the sweep varies), `runs.csv` (one row per
//! setting and seed, rewritten after every group of runs so an interruption loses nothing
//! finished), `summary.csv` (one row per setting), the figures and `results.xlsx`. A diverged
//! run is recorded (status `diverged`) and the sweep goes on.
//!
//! The records make a sweep resumable and divisible: `--resume` keeps every finished run whose
//! record matches and trains the rest; `--shard K/N` trains only every N-th group of runs
//! (starting at the K-th) and writes nothing but its own runs' files, so N shards can run at once
//! on different machines over one directory; `sweep merge <dir>` then summarises them.
use crate::experiment::{self, Context, Experiment, FinalFigures as _, Run, SettingStats, Stat};
use crate::lock;
use crate::options::{seed, Impl};
use crate::record::{self, Cell};
use crate::stop::{Status, Stopped};
use anyhow::{bail, Context as _, Result};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

mod records;
mod summary;

pub use crate::experiment::fingerprint;
pub use crate::experiment::mean_std;
use records::*;
pub use records::{experiment_of, Identity, RunRecord};
use summary::*;
pub use summary::{at_settings, title, train_test_series};

/// Where a sweep keeps its runs' checkpoints, in its directory.
const CHECKPOINTS_DIR: &str = "checkpoints";

/// The most seeds a sweep takes, and the most shards it is divided into.
pub const MAX_SEEDS: usize = 10_000;
pub const MAX_SHARDS: usize = 10_000;

/// `sweep <experiment>`: the experiment's own flags (those that take lists make the grid), the
/// seeds, and how to treat a directory that already holds a sweep.
#[derive(clap::Args, Debug, Clone, Serialize)]
pub struct SweepArgs<C: clap::Args> {
    #[command(flatten)]
    pub experiment: C,
    /// Seeds, comma-separated (default: --seed); every setting is trained once per seed
    #[arg(long, value_delimiter = ',', allow_hyphen_values = true, value_parser = seed)]
    pub seeds: Vec<i64>,
    /// Keep the runs a previous (interrupted) sweep of the same configuration finished in --out and train only the others
    #[arg(long, conflicts_with = "overwrite")]
    pub resume: bool,
    /// Start over in a directory that holds an earlier sweep (its runs are deleted)
    #[arg(long)]
    pub overwrite: bool,
    /// Train only shard K of N (K = 0 … N−1, as Slurm numbers array tasks); the shards write into one --out, then `sweep merge` summarises them
    #[arg(long, allow_hyphen_values = true, value_parser = parse_shard, conflicts_with = "overwrite")]
    #[serde(skip)]
    pub shard: Option<Shard>,
    /// How runs write checkpoints (dropout): a run stopped midway goes on from its last
    /// checkpoint with --resume (a shard always does), instead of training again
    #[command(flatten)]
    #[serde(skip)]
    pub checkpointing: experiment::CheckpointWriting,
}

/// `--shard K/N`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    pub index: usize,
    pub count: usize,
}

/// `K/N` with 0 ≤ K < N ≤ [`MAX_SHARDS`].
pub fn parse_shard(s: &str) -> Result<Shard, String> {
    let (k, n) = s
        .split_once('/')
        .ok_or_else(|| format!("'{s}' is not K/N (e.g. 0/4: the first of four shards)"))?;
    let (index, count) = (
        k.trim()
            .parse::<usize>()
            .map_err(|_| format!("'{k}' is not a shard number"))?,
        n.trim()
            .parse::<usize>()
            .map_err(|_| format!("'{n}' is not a number of shards"))?,
    );
    if count == 0 || count > MAX_SHARDS {
        return Err(format!(
            "the number of shards must be 1 to {MAX_SHARDS}, got {count}"
        ));
    }
    if index >= count {
        return Err(format!(
            "shard {index} of {count} does not exist: K runs from 0 to {}",
            count - 1
        ));
    }
    Ok(Shard { index, count })
}

/// `sweep merge <dir>`.
#[derive(clap::Args, Debug, Clone, Serialize)]
pub struct MergeArgs {
    /// The sweep's directory (`<out>/sweep/<experiment>`), where its shards wrote their runs
    pub dir: PathBuf,
}

/// A planned run: which seed, version and setting, its file stem and its group's number.
struct Planned<S> {
    seed: i64,
    version: Impl,
    setting: S,
    stem: String,
    group: usize,
}

/// Every run of the sweep in order: seed by seed, the experiment's schedule, each group of
/// runs numbered (the unit a shard takes).
fn plan<E: Experiment>(cfg: &E::Config, seeds: &[i64]) -> Vec<Planned<E::Setting>> {
    let mut runs = Vec::new();
    let mut group = 0;
    for &seed in seeds {
        for (version, settings) in E::schedule(cfg) {
            for setting in settings {
                let stem = format!("{}-seed{seed}", E::stem(version, setting, false));
                runs.push(Planned {
                    seed,
                    version,
                    setting,
                    stem,
                    group,
                });
            }
            group += 1;
        }
    }
    runs
}

/// Trains every version × setting × seed (or one shard of them) and writes the sweep's files;
/// see the module.
pub fn run<E: Experiment>(sweep: &SweepArgs<E::Config>, ctx: &Context) -> Result<()>
where
    E::Config: clap::Args + Serialize,
{
    let cfg = &sweep.experiment;
    let seeds = if sweep.seeds.is_empty() {
        vec![ctx.seed]
    } else {
        sweep.seeds.clone()
    };
    if seeds.len() > MAX_SEEDS {
        bail!(
            "--seeds lists {} seeds, more than the {MAX_SEEDS} a sweep takes; split the sweep",
            seeds.len()
        );
    }
    if let Some((_, seed)) = seeds
        .iter()
        .enumerate()
        .find(|(i, s)| seeds[..*i].contains(s))
    {
        bail!("--seeds lists {seed} twice; name each seed once");
    }
    experiment::check_grid::<E>(cfg)?;
    sweep.checkpointing.check::<E>()?;
    let data = E::prepare(cfg, ctx)?;
    crate::stop::before_first_run(&ctx.out.join("sweep").join(E::NAME))?;
    let dir = record::experiment_dir(&record::experiment_dir(&ctx.out, "sweep")?, E::NAME)?;
    let _lock = lock::lock(
        &dir.join(".lock"),
        &dir,
        match sweep.shard {
            Some(s) => lock::Use::Shard {
                index: s.index,
                count: s.count,
            },
            None => lock::Use::Alone,
        },
    )?;
    let fingerprint = fingerprint::<E>(cfg, ctx.device)?;
    if has_sweep(&dir) && !sweep.resume && sweep.shard.is_none() {
        if !sweep.overwrite {
            bail!(
                "'{}' already holds a sweep; add --resume to finish it (the runs it finished are \
                 kept), or --overwrite to start over",
                dir.display()
            );
        }
        if let Some(other) = records::foreign(&dir) {
            bail!(
                "'{}' is not a file this program writes there, and --overwrite clears '{}'; \
                 move it elsewhere, or choose another --out",
                other.display(),
                dir.display()
            );
        }
        clear(&dir)?;
    }
    let runs_dir = record::experiment_dir(&dir, "runs")?;
    // A run stopped midway goes on from its checkpoint when the sweep resumes (a shard always
    // resumes: it is run again to finish).
    let writing = &sweep.checkpointing;
    let checkpoints =
        (E::CHECKPOINTS && !writing.no_checkpoints).then(|| crate::checkpoint::Plan {
            dir: dir.join(CHECKPOINTS_DIR),
            every: writing.every(),
            resume: sweep.resume || sweep.shard.is_some(),
            config: fingerprint.clone(),
            keep: writing.keep_checkpoints,
        });
    if let Some(plan) = &checkpoints {
        std::fs::create_dir_all(&plan.dir)
            .with_context(|| format!("cannot create '{}'", plan.dir.display()))?;
    }
    let board = (ctx.tensorboard).then(|| crate::tensorboard::Board::new(dir.join("tensorboard")));
    let ctx = &Context {
        checkpoints: checkpoints.clone(),
        board,
        ..ctx.clone()
    };
    if sweep.shard.is_none() {
        // Alone in the directory: what a killed writer left is nobody's.
        crate::atomic::remove_temporaries(&dir);
        crate::atomic::remove_temporaries(&runs_dir);
        crate::atomic::remove_temporaries(&dir.join(CHECKPOINTS_DIR));
    }
    // Read once; every run this process writes is added as it is written.
    let (mut records, damaged) = read_records(&runs_dir)?;
    if sweep.resume {
        for what in &damaged {
            crate::errln!("warning: {what}; training that run again");
        }
    }
    if let Some((name, _)) = records
        .iter()
        .find(|(stem, r)| finished(&records, stem) && r.of.fingerprint != fingerprint)
    {
        bail!(
            "'{}' holds runs of another configuration (e.g. runs/{name}.json); finish or merge \
             that sweep, choose another --out, or start over with --overwrite",
            dir.display()
        );
    }
    let of = Identity {
        experiment: E::NAME.to_string(),
        fingerprint: fingerprint.clone(),
        config: serde_json::to_value(cfg)?,
        seeds: seeds.clone(),
        writer: Some(crate::checkpoint::Writer::now(ctx.device)),
    };
    // Its runs all of one program, device, thread count and kernels (a shard of another
    // machine, a sweep resumed by another build).
    let other_writer = records.iter().find_map(|(stem, r)| {
        finished(&records, stem)
            .then(|| r.of.writer_differs(&of))
            .flatten()
            .map(|why| (stem, why))
    });
    if let Some((name, (what, how))) = other_writer {
        bail!(
            "'{}' holds runs written {what} (e.g. runs/{name}.json); run this command {how}, \
             choose another --out, or start over with --overwrite",
            dir.display()
        );
    }
    let planned = plan::<E>(cfg, &seeds);
    let mut interrupted = false;
    let (mut trained, mut kept) = (0usize, 0usize);
    let mut group_start = 0;
    // On a terminal: the current run's chart, cleared when it ends, over a line per run.
    crate::progress::set_transient(true);
    while group_start < planned.len() {
        let group = planned[group_start].group;
        let group_end = group_start
            + planned[group_start..]
                .iter()
                .take_while(|p| p.group == group)
                .count();
        let mine = sweep.shard.is_none_or(|s| group % s.count == s.index);
        if mine {
            // A group is trained whole or kept whole: its runs may share random draws (the
            // fused engine trains them as one model), so a run trained alone could differ.
            let group_runs = &planned[group_start..group_end];
            let missing: Vec<&Planned<E::Setting>> =
                if group_runs.iter().all(|p| finished(&records, &p.stem)) {
                    Vec::new()
                } else {
                    group_runs.iter().collect()
                };
            kept += group_runs.len() - missing.len();
            if let Some(first) = missing.first() {
                let settings: Vec<E::Setting> = missing.iter().map(|p| p.setting).collect();
                let runs = E::train(
                    cfg,
                    &data,
                    first.version,
                    &settings,
                    &ctx.with_seed(first.seed),
                )?;
                for (p, run) in missing.iter().zip(runs) {
                    interrupted |= run.status == Status::Interrupted;
                    // The event file first (see experiment::command::write_runs).
                    let seeded = ctx.with_seed(p.seed);
                    experiment::finish_board::<E>(cfg, &seeded, p.version, p.setting, &run)?;
                    let record = write_run::<E>(cfg, &runs_dir, p, &run, &of)?;
                    records.insert(p.stem.clone(), record);
                    crate::progress::finished(&format!(
                        "{}: {} ({})",
                        seeded.tagged(E::label(p.version, p.setting)),
                        E::report(&run),
                        run.status.name()
                    ));
                    // Its record written, a run that ended needs its checkpoint no more.
                    if let Some(plan) = checkpoints.as_ref().filter(|_| !writing.keep_checkpoints) {
                        if run.status != Status::Interrupted {
                            let stem = E::stem(p.version, p.setting, false);
                            let c = plan.run(&stem, p.seed, p.version, &p.setting);
                            crate::record::remove_stale(&c.path);
                        }
                    }
                    // A run stopped midway is recorded (for the summary) but not counted.
                    trained += usize::from(run.status != Status::Interrupted);
                }
            }
            if sweep.shard.is_none() {
                let lines = lines::<E>(&planned, &records);
                write_runs_csv::<E>(cfg, &dir, &lines)?;
            }
        }
        if interrupted {
            break;
        }
        group_start = group_end;
    }
    if let Some(shard) = sweep.shard {
        if interrupted {
            return Err(Stopped::interrupted(&format!(
                "shard {}/{}: {trained} runs trained and {kept} kept in {}; run it again to finish",
                shard.index,
                shard.count,
                dir.display()
            ))
            .into());
        }
        crate::outln!(
            "sweep: shard {}/{} trained {trained} runs and kept {kept} in {}; when every shard is \
             done, `sweep merge {}` summarises them",
            shard.index,
            shard.count,
            dir.display(),
            dir.display()
        );
        return Ok(());
    }
    if kept > 0 {
        crate::errln!("sweep: kept {kept} finished runs, trained {trained}");
    }
    if let Some(plan) = checkpoints.as_ref().filter(|_| !interrupted) {
        // Empty unless --keep-checkpoints.
        let _ = std::fs::remove_dir(&plan.dir);
    }
    summarise_dir::<E>(
        cfg,
        &dir,
        &planned,
        &records,
        seeds.len(),
        ctx.plots,
        interrupted,
    )
}

/// `sweep merge <dir>` for experiment `E`: the configuration from the runs' records, every
/// planned run required (finished, same configuration), then the summary, figures and
/// workbook.
pub fn merge<E: Experiment>(dir: &Path, plots: bool) -> Result<()>
where
    E::Config: Serialize + serde::de::DeserializeOwned,
{
    let runs_dir = dir.join("runs");
    if !runs_dir.is_dir() {
        bail!(
            "'{}' holds no finished run of a sweep (runs/*.json); run the shards first",
            dir.display()
        );
    }
    let _lock = lock::lock(&dir.join(".lock"), dir, lock::Use::Alone)?;
    let (records, mut damaged) = read_records(&runs_dir)?;
    let Some((_, first)) = records.iter().min_by_key(|(stem, _)| *stem) else {
        bail!(
            "'{}' holds no finished run of a sweep (runs/*.json); run the shards first",
            dir.display()
        );
    };
    if let Some(other) = records.values().find(|r| r.of.experiment != E::NAME) {
        bail!(
            "'{}' holds runs of {} and of {}; merge the runs of one sweep",
            dir.display(),
            first.of.experiment,
            other.of.experiment
        );
    }
    let cfg: E::Config = serde_json::from_value(first.of.config.clone())
        .with_context(|| format!("cannot read the configuration in '{}'", runs_dir.display()))?;
    let seeds = first.of.seeds.clone();
    let mut mismatched: Vec<(&String, (String, String))> = records
        .iter()
        .filter_map(|(stem, r)| Some((stem, r.of.differs(&first.of)?)))
        .collect();
    if !mismatched.is_empty() {
        mismatched.sort();
        let stems: Vec<&String> = mismatched.iter().map(|(stem, _)| *stem).collect();
        let (what, how) = &mismatched[0].1;
        bail!(
            "'{}' mixes runs of different sweeps: {} do not match {} ({} was trained {what}); \
             merge only the runs of one sweep, every shard run {how}",
            dir.display(),
            list(&stems),
            first.stem,
            stems[0]
        );
    }
    let names: Vec<String> = experiment::figures(&E::unfinished(&cfg))
        .into_iter()
        .map(|(name, _)| name)
        .collect();
    damaged.extend(contradictions(&runs_dir, &records, &names));
    if !damaged.is_empty() {
        bail!(
            "'{}' holds damaged runs: {}; train them again (the sweep's command with --resume \
             retrains them) before merging",
            dir.display(),
            list(&damaged.iter().collect::<Vec<_>>())
        );
    }
    let planned = plan::<E>(&cfg, &seeds);
    let mut missing: Vec<&String> = planned
        .iter()
        .filter(|p| {
            records
                .get(&p.stem)
                .is_none_or(|r| r.status == Status::Interrupted)
        })
        .map(|p| &p.stem)
        .collect();
    if !missing.is_empty() {
        missing.sort();
        bail!(
            "{} of {} runs are missing or unfinished in '{}': {}; run their shards (again) \
             first",
            missing.len(),
            planned.len(),
            runs_dir.display(),
            list(&missing)
        );
    }
    summarise_dir::<E>(&cfg, dir, &planned, &records, seeds.len(), plots, false)
}

/// At most ten names, and how many more.
fn list(names: &[&String]) -> String {
    let shown: Vec<&str> = names.iter().take(10).map(|s| s.as_str()).collect();
    if names.len() > 10 {
        format!("{} and {} more", shown.join(", "), names.len() - 10)
    } else {
        shown.join(", ")
    }
}

/// Reports the end of a sweep: fails on an interruption, warns about diverged runs.
fn finish(
    dir: &Path,
    runs: usize,
    finished: usize,
    diverged: usize,
    interrupted: bool,
) -> Result<()> {
    if interrupted {
        let what = match finished {
            1 => "the 1 finished run is".to_string(),
            n => format!("the {n} finished runs are"),
        };
        return Err(Stopped::interrupted(&format!("{what} in {}", dir.display())).into());
    }
    if diverged > 0 {
        crate::errln!(
            "warning: {diverged} of {runs} runs diverged (status 'diverged' in {})",
            dir.join("runs.csv").display()
        );
    }
    crate::outln!(
        "sweep: {runs} runs summarised in {}",
        dir.join("summary.csv").display()
    );
    Ok(())
}
