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
use crate::experiment::{self, Context, Experiment, Run, SettingStats, Stat};
use crate::options::{seed, Version};
use crate::record::{self, Cell};
use crate::stop::{Status, Stopped};
use anyhow::{bail, Context as _, Result};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

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
    #[arg(long, value_delimiter = ',', allow_negative_numbers = true, value_parser = seed)]
    pub seeds: Vec<i64>,
    /// Keep the runs a previous (interrupted) sweep of the same configuration finished in --out and train only the others
    #[arg(long, conflicts_with = "overwrite")]
    pub resume: bool,
    /// Start over in a directory that holds an earlier sweep (its runs are deleted)
    #[arg(long)]
    pub overwrite: bool,
    /// Train only shard K of N (K = 0 … N−1, as Slurm numbers array tasks); the shards write into one --out, then `sweep merge` summarises them
    #[arg(long, value_parser = parse_shard, conflicts_with = "overwrite")]
    #[serde(skip)]
    pub shard: Option<Shard>,
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

/// What `runs/<run>-seed<k>.json` says of a run (NaN figures as null).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunRecord {
    pub experiment: String,
    /// Of the configuration apart from what the sweep varies (see [`fingerprint`]).
    pub fingerprint: String,
    /// The sweep's whole configuration (for `sweep merge`).
    pub config: serde_json::Value,
    pub seeds: Vec<i64>,
    pub seed: i64,
    pub version: Version,
    /// The run's file name without `-seed<k>` and extension.
    pub stem: String,
    pub status: Status,
    pub epochs: usize,
    pub finals: Vec<Option<f64>>,
    pub gap: Option<f64>,
    pub seconds: Option<f64>,
}

fn some(v: f64) -> Option<f64> {
    v.is_finite().then_some(v)
}

fn nan(v: Option<f64>) -> f64 {
    v.unwrap_or(f64::NAN)
}

/// One run of a sweep (a line of `runs.csv`).
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

/// The configuration's fingerprint: an MD5 of its JSON without what the sweep varies (the
/// experiment's swept flags, `--impl`, the seeds) and without what does not change a result
/// (where the data are, `--offline`, `--save-weights`, `--cuda-graph`).
/// The device's kind (`cpu`, `cuda`) is part of it: the same seed gives other numbers there;
/// so is `--reproducible` on the CPU (other kernels).
pub fn fingerprint<E: Experiment>(cfg: &E::Config, device: tch::Device) -> Result<String>
where
    E::Config: Serialize,
{
    use md5::{Digest, Md5};
    let mut value = serde_json::to_value(cfg)?;
    if let Some(map) = value.as_object_mut() {
        for key in E::SWEPT_KEYS.iter().chain(&[
            "implementation",
            "data_dir",
            "offline",
            "save_weights",
            "cuda_graph",
        ]) {
            map.remove(*key);
        }
    }
    let text = serde_json::to_string(&value)?;
    let kind = match (device.is_cuda(), crate::cpu::reproducible()) {
        (true, _) => "cuda",
        (false, false) => "cpu",
        (false, true) => "cpu reproducible",
    };
    let digest = Md5::digest(format!("{}\n{kind}\n{text}", E::NAME).as_bytes());
    Ok(digest.iter().map(|b| format!("{b:02x}")).collect())
}

/// A planned run: which seed, version and setting, its file stem and its group's number.
struct Planned<S> {
    seed: i64,
    version: Version,
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

/// The run records under `runs/`, by stem: every finished run whose curve is whole (as many
/// rows as its record says), and every interrupted run (for the summary of an interrupted
/// sweep; never kept by `--resume`). Damaged records and anything else are left out.
fn read_records(runs_dir: &Path) -> Result<HashMap<String, RunRecord>> {
    let mut found = HashMap::new();
    let Ok(entries) = std::fs::read_dir(runs_dir) else {
        return Ok(found);
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        let Some(stem) = name.strip_suffix(".json") else {
            continue;
        };
        if stem.starts_with('.') {
            continue;
        }
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("cannot read '{}'", path.display()))?;
        let Ok(record) = serde_json::from_str::<RunRecord>(&text) else {
            continue; // not a run record (or a damaged one): trained again
        };
        let whole = || {
            let curve = runs_dir.join(format!("{stem}.csv"));
            csv::Reader::from_path(&curve)
                .ok()
                .map(|mut r| r.records().filter(|r| r.is_ok()).count())
                == Some(record.epochs)
        };
        if record.status == Status::Interrupted || whole() {
            found.insert(stem.to_string(), record);
        }
    }
    Ok(found)
}

/// Whether `records` holds `stem` as a finished run (one `--resume` keeps).
fn finished(records: &HashMap<String, RunRecord>, stem: &str) -> bool {
    records
        .get(stem)
        .is_some_and(|r| r.status != Status::Interrupted)
}

/// Files of a sweep directory that an earlier sweep left.
fn has_sweep(dir: &Path) -> bool {
    dir.join("runs.csv").exists()
        || std::fs::read_dir(dir.join("runs"))
            .map(|mut d| d.next().is_some())
            .unwrap_or(false)
}

/// Removes what an earlier sweep wrote in `dir` (`--overwrite`).
fn clear(dir: &Path) -> Result<()> {
    let runs = dir.join("runs");
    if runs.exists() {
        std::fs::remove_dir_all(&runs)
            .with_context(|| format!("cannot remove '{}'", runs.display()))?;
    }
    for name in ["runs.csv", "summary.csv", "results.xlsx"] {
        record::remove_stale(&dir.join(name));
    }
    for entry in std::fs::read_dir(dir)?.flatten() {
        let p = entry.path();
        if p.extension().is_some_and(|e| e == "svg") {
            record::remove_stale(&p);
        }
    }
    Ok(())
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
    experiment::check_grid::<E>(cfg)?;
    let data = E::prepare(cfg, ctx)?;
    let dir = record::experiment_dir(&record::experiment_dir(&ctx.out, "sweep")?, E::NAME)?;
    let fingerprint = fingerprint::<E>(cfg, ctx.device)?;
    if has_sweep(&dir) && !sweep.resume && sweep.shard.is_none() {
        if !sweep.overwrite {
            bail!(
                "'{}' already holds a sweep; add --resume to finish it (the runs it finished are \
                 kept), or --overwrite to start over",
                dir.display()
            );
        }
        clear(&dir)?;
    }
    let runs_dir = record::experiment_dir(&dir, "runs")?;
    // Read once; every run this process writes is added as it is written.
    let mut records = read_records(&runs_dir)?;
    if let Some((name, _)) = records
        .iter()
        .find(|(stem, r)| finished(&records, stem) && r.fingerprint != fingerprint)
    {
        bail!(
            "'{}' holds runs of another configuration (e.g. runs/{name}.json); finish or merge \
             that sweep, choose another --out, or start over with --overwrite",
            dir.display()
        );
    }
    let planned = plan::<E>(cfg, &seeds);
    let config = serde_json::to_value(cfg)?;
    let mut interrupted = false;
    let (mut trained, mut kept) = (0usize, 0usize);
    let mut group_start = 0;
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
                );
                for (p, run) in missing.iter().zip(runs) {
                    interrupted |= run.status == Status::Interrupted;
                    let record =
                        write_run::<E>(cfg, &runs_dir, p, &run, &fingerprint, &config, &seeds)?;
                    records.insert(p.stem.clone(), record);
                    trained += 1;
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
        println!(
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
        eprintln!("sweep: kept {kept} finished runs, trained {trained}");
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

/// A trained run's curve (and what it saves), then its record — last, so a record exists only
/// beside a whole curve.
fn write_run<E: Experiment>(
    cfg: &E::Config,
    runs_dir: &Path,
    p: &Planned<E::Setting>,
    run: &Run<E>,
    fingerprint: &str,
    config: &serde_json::Value,
    seeds: &[i64],
) -> Result<RunRecord> {
    let stem = runs_dir.join(&p.stem);
    record::write_csv(&record::with_suffix(&stem, "csv"), &run.curve)?;
    if run.status == Status::Ok {
        E::save(cfg, run, &stem, false)?;
    }
    let record = RunRecord {
        experiment: E::NAME.to_string(),
        fingerprint: fingerprint.to_string(),
        config: config.clone(),
        seeds: seeds.to_vec(),
        seed: p.seed,
        version: p.version,
        stem: p.stem.clone(),
        status: run.status,
        epochs: run.curve.len(),
        finals: run.finals.iter().map(|&v| some(v)).collect(),
        gap: some(E::gap(&run.finals)),
        seconds: some(run.seconds),
    };
    let mut bytes = serde_json::to_vec_pretty(&record)?;
    bytes.push(b'\n');
    record::write_atomic(&record::with_suffix(&stem, "json"), &bytes)?;
    Ok(record)
}

/// The lines of `runs.csv`: every planned run that has a record, in the plan's order.
fn lines<E: Experiment>(
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

fn runs_header<E: Experiment>(cfg: &E::Config) -> Vec<String> {
    let mut header: Vec<String> = names(&["seed", "impl"]).collect();
    header.extend(names(E::SETTING_COLUMNS).chain(names(&["status", "epochs"])));
    header.extend(E::finals(cfg).iter().map(|s| s.to_string()));
    header.extend(names(&["gap", "seconds"]));
    header
}

fn write_runs_csv<E: Experiment>(
    cfg: &E::Config,
    dir: &Path,
    runs: &[SweepRun<E::Setting>],
) -> Result<Vec<u8>> {
    let lines: Vec<Vec<Cell>> = runs.iter().map(|r| r.cells::<E>()).collect();
    let bytes = record::table_bytes(&runs_header::<E>(cfg), &lines)?;
    record::write_atomic(&dir.join("runs.csv"), &bytes)?;
    Ok(bytes)
}

/// `sweep merge <dir>` for experiment `E`: the configuration from the runs' records, every
/// planned run required (finished, same configuration), then the summary, figures and
/// workbook.
pub fn merge<E: Experiment>(dir: &Path, plots: bool) -> Result<()>
where
    E::Config: Serialize + serde::de::DeserializeOwned,
{
    let runs_dir = dir.join("runs");
    let records = read_records(&runs_dir)?;
    let Some((_, first)) = records.iter().min_by_key(|(stem, _)| *stem) else {
        bail!(
            "'{}' holds no finished run of a sweep (runs/*.json); run the shards first",
            dir.display()
        );
    };
    if let Some(other) = records.values().find(|r| r.experiment != E::NAME) {
        bail!(
            "'{}' holds runs of {} and of {}; merge the runs of one sweep",
            dir.display(),
            first.experiment,
            other.experiment
        );
    }
    let cfg: E::Config = serde_json::from_value(first.config.clone())
        .with_context(|| format!("cannot read the configuration in '{}'", runs_dir.display()))?;
    let seeds = first.seeds.clone();
    let mut mismatched: Vec<&String> = records
        .iter()
        .filter(|(_, r)| {
            r.fingerprint != first.fingerprint || r.config != first.config || r.seeds != seeds
        })
        .map(|(stem, _)| stem)
        .collect();
    if !mismatched.is_empty() {
        mismatched.sort();
        bail!(
            "'{}' mixes runs of different sweeps: {} do not match the configuration of {}; \
             merge only the runs of one sweep (the same flags and --seeds in every shard)",
            dir.display(),
            list(&mismatched),
            first.stem
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

/// The experiment whose runs a sweep directory holds (for `sweep merge`).
pub fn experiment_of(dir: &Path) -> Result<String> {
    if !dir.is_dir() {
        bail!(
            "'{}' is not a directory; `sweep merge` takes a sweep's directory, e.g. \
             results/sweep/dropout",
            dir.display()
        );
    }
    let records = read_records(&dir.join("runs"))?;
    match records.iter().min_by_key(|(stem, _)| *stem) {
        Some((_, r)) => Ok(r.experiment.clone()),
        None => bail!(
            "'{}' holds no finished run of a sweep (runs/*.json); give the directory the shards \
             wrote into (<out>/sweep/<experiment>), after they finished",
            dir.display()
        ),
    }
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

/// The sweep's summary from its runs' records: `runs.csv`, `summary.csv`, the figures, the
/// workbook, the table on stdout; fails on an interruption, warns of diverged runs.
fn summarise_dir<E: Experiment>(
    cfg: &E::Config,
    dir: &Path,
    planned: &[Planned<E::Setting>],
    records: &HashMap<String, RunRecord>,
    seeds: usize,
    plots: bool,
    interrupted: bool,
) -> Result<()> {
    let runs = lines::<E>(planned, records);
    let runs_bytes = write_runs_csv::<E>(cfg, dir, &runs)?;
    let settings = summarise::<E>(cfg, &runs, seeds);
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
    for (name, title, panels) in E::sweep_charts(cfg, &settings, seeds) {
        let svg = dir.join(&name);
        if plots {
            record::write_panels(&svg, &title, &panels)?;
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
        } else {
            record::remove_stale(&svg);
        }
    }
    let xlsx = dir.join("results.xlsx");
    if plots {
        book.save(&xlsx)?;
    } else {
        record::remove_stale(&xlsx);
    }
    print_table(E::SWEEP_TABLE, settings.iter().map(E::sweep_table_row));
    for note in E::sweep_notes(cfg, &settings) {
        println!("{note}");
    }
    let diverged = runs.iter().filter(|r| r.status == Status::Diverged).count();
    finish(dir, runs.len(), diverged, interrupted)
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
