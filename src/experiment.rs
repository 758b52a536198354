//! The one shape every experiment has, and the command that runs one.
//!
//! An experiment (a book section) provides its configuration, its settings (what a sweep
//! varies: λ, the dropout rates), its epoch row, its training and its final figures, by
//! implementing [`Experiment`]. Everything else exists once, here and in `sweep`: training the
//! versions × settings in order, printing each result, recording divergence and interruption,
//! writing every curve (CSV and chart), `summary.csv` and `run.json`, and the exit status.
use crate::device::DeviceChoice;
use crate::options::Version;
use crate::plot::{Figure, Series};
use crate::progress;
use crate::record::{self, Cell};
use crate::stop::{self, Status};
use crate::workbook;
use anyhow::Result;
use serde::Serialize;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use tch::Device;

/// What every experiment needs besides its own hyper-parameters.
#[derive(Debug, Clone)]
pub struct Context {
    pub device: Device,
    pub device_requested: DeviceChoice,
    pub seed: i64,
    pub out: PathBuf,
    /// Draw an SVG beside every CSV (`--no-plot` turns it off).
    pub plots: bool,
    /// Added to progress lines (a sweep's seed).
    pub tag: Option<String>,
}

impl Context {
    /// The same context with another seed, named in progress lines (sweeps).
    pub fn with_seed(&self, seed: i64) -> Context {
        Context {
            seed,
            tag: Some(format!("seed {seed}")),
            ..self.clone()
        }
    }

    /// A progress label with the context's tag.
    pub fn tagged(&self, label: String) -> String {
        match &self.tag {
            Some(tag) => format!("{label}, {tag}"),
            None => label,
        }
    }
}

/// `3` for 3.0, `0.5` for 0.5, `1e300` for 1e300: λ or p as it appears in file names and
/// messages (short enough for any file system).
pub fn fmt_num(v: f64) -> String {
    let plain = format!("{v}");
    if plain.len() <= 10 {
        plain
    } else {
        format!("{v:e}")
    }
}

/// One row of a curve (`<run>.csv`): the figures after an epoch.
pub trait EpochRow: Serialize + Default + Clone {
    /// Whether every value read this epoch is a finite number (else the run has diverged).
    fn finite(&self) -> bool;
    /// What a progress line shows (`train loss 0.34, …`).
    fn figures(&self) -> String;
}

/// One run of an experiment: a version at a setting, trained from a fresh seed.
pub struct Run<E: Experiment> {
    /// The finished epochs.
    pub curve: Vec<E::Row>,
    pub status: Status,
    /// The final figures, in the order of [`Experiment::finals`] (NaN where none finished).
    pub finals: Vec<f64>,
    /// Wall time (shared by the runs trained together).
    pub seconds: f64,
    /// What else the run leaves for [`Experiment::save`] (the trained variables, say).
    pub model: E::Model,
}

/// Where a figure a sweep summarises comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stat {
    /// A final figure, by its index in [`Experiment::finals`].
    Final(usize),
    /// The generalization gap ([`Experiment::gap`]).
    Gap,
}

/// One setting of one version over a sweep's seeds: how it ended and, over the runs that
/// finished, the mean and sample standard deviation of each of [`Experiment::sweep_stats`].
pub struct SettingStats<S> {
    pub version: Version,
    pub setting: S,
    pub status: Status,
    pub seeds: usize,
    pub seeds_ok: usize,
    /// Each statistic's name and (mean, sd), in the order of [`Experiment::sweep_stats`].
    pub stats: Vec<(&'static str, (f64, f64))>,
}

impl<S> SettingStats<S> {
    /// The (mean, sd) of the statistic `name`.
    pub fn stat(&self, name: &str) -> (f64, f64) {
        self.stats
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| *v)
            .unwrap_or_else(|| panic!("no sweep statistic {name}"))
    }
}

/// A figure of a sweep: its file name, its title and its panels.
pub type SweepChart = (String, String, Vec<(Figure, Vec<Series>)>);

/// `v` rounded to 12 significant digits: a figure derived by subtraction (a generalization
/// gap) without the subtraction's noise (`0.0667`, not `0.06669999999999998`).
pub fn round_derived(v: f64) -> f64 {
    if v == 0.0 || !v.is_finite() {
        return v;
    }
    format!("{v:.11e}").parse().unwrap_or(v)
}

/// A book section as a command: what it trains and what it reports.
pub trait Experiment: Sized {
    /// The subcommand and the results directory: `weight-decay`.
    const NAME: &'static str;
    /// The header of the table a sweep prints.
    const SWEEP_TABLE: &'static [&'static str];
    /// The configuration's fields (as saved in `run.json`) that do not change a result (where
    /// the data are, what else is saved): left out of a sweep's fingerprint.
    const NOT_RESULTS: &'static [&'static str] = &[];

    /// The hyper-parameters (the subcommand's flags), saved in `run.json`.
    type Config: Serialize;
    /// What a sweep varies: a struct whose fields (serde) are the flags' names, so they are
    /// the summary's columns, the lists a grid is made of, and what a sweep's fingerprint leaves out.
    type Setting: Copy + PartialEq + Serialize;
    /// What the command loads once for all its runs.
    type Data;
    /// One row of a run's curve.
    type Row: EpochRow;
    /// What a run leaves besides its curve (for [`Experiment::save`]).
    type Model;

    /// Every setting the flags ask for.
    fn settings(cfg: &Self::Config) -> Vec<Self::Setting>;
    /// The settings a version runs (all of them unless a version has fewer).
    fn settings_for(cfg: &Self::Config, version: Version) -> Vec<Self::Setting> {
        let _ = version;
        Self::settings(cfg)
    }
    /// The final figures of a run (summary columns after `status` and `epochs`).
    fn finals(cfg: &Self::Config) -> Vec<&'static str>;
    /// What a sweep summarises over its seeds, in column order (each `<name>_mean`,
    /// `<name>_std`).
    fn sweep_stats(cfg: &Self::Config) -> Vec<(&'static str, Stat)>;
    /// The versions the flags ask for.
    fn versions(cfg: &Self::Config) -> Vec<Version>;
    /// The runs in the order they train, in groups trained together: each a version and its
    /// settings.
    fn schedule(cfg: &Self::Config) -> Vec<(Version, Vec<Self::Setting>)>;
    /// Refuses what cannot work before anything is written, then loads what every run shares.
    fn prepare(cfg: &Self::Config, ctx: &Context) -> Result<Self::Data>;
    /// Trains one group of the schedule, with progress; one run per setting, in order (fewer
    /// when a run was interrupted).
    fn train(
        cfg: &Self::Config,
        data: &Self::Data,
        version: Version,
        settings: &[Self::Setting],
        ctx: &Context,
    ) -> Vec<Run<Self>>;

    /// What a run is called in messages and progress: `weight decay, scratch λ=3`.
    fn label(version: Version, setting: Self::Setting) -> String;
    /// A run's file name without extension; `alone` when the command has one setting only.
    fn stem(version: Version, setting: Self::Setting, alone: bool) -> String;
    /// The result printed for a finished run, after its label and a colon.
    fn report(run: &Run<Self>) -> String;
    /// What to change when a run diverges.
    fn advice(cfg: &Self::Config) -> String;
    /// The generalization gap from the final figures.
    fn gap(finals: &[f64]) -> f64;
    /// The chart of one run's curve.
    fn curve_chart<'a>(title: &'a str) -> record::Chart<'a, Self::Row>;
    /// The title of that chart.
    fn curve_title(version: Version, setting: Self::Setting, run: &Run<Self>) -> String {
        let _ = run;
        Self::label(version, setting)
    }
    /// Charts over several runs of the command (`--no-plot`: remove older ones).
    fn write_overview_charts(
        dir: &Path,
        runs: &[(Version, Self::Setting, &Run<Self>)],
        plots: bool,
    ) -> Result<()>;
    /// Stores what a finished run leaves besides its curve, at `stem` plus a suffix (with
    /// its charts when `plots`).
    fn save(cfg: &Self::Config, run: &Run<Self>, stem: &Path, plots: bool) -> Result<()> {
        let _ = (cfg, run, stem, plots);
        Ok(())
    }
    /// A sweep's figures: the final figures against the settings.
    fn sweep_charts(
        cfg: &Self::Config,
        settings: &[SettingStats<Self::Setting>],
        seeds: usize,
    ) -> Vec<SweepChart>;
    /// Columns a sweep's summary adds after the statistics, and their values per setting.
    fn sweep_marks(
        cfg: &Self::Config,
        settings: &[SettingStats<Self::Setting>],
    ) -> (Vec<&'static str>, Vec<Vec<Cell>>) {
        let _ = cfg;
        (Vec::new(), vec![Vec::new(); settings.len()])
    }
    /// Lines a sweep prints after its table.
    fn sweep_notes(cfg: &Self::Config, settings: &[SettingStats<Self::Setting>]) -> Vec<String> {
        let _ = (cfg, settings);
        Vec::new()
    }
    /// A row of the table a sweep prints ([`Experiment::SWEEP_TABLE`]).
    fn sweep_table_row(setting: &SettingStats<Self::Setting>) -> Vec<String>;
    /// The flags that size the job, with their values (for an out-of-memory message).
    fn memory_flags(cfg: &Self::Config) -> String;
}

/// What the command keeps of a run through the book's animator: the finished epochs, shown as
/// progress, and how the run ended (a NaN or infinite row ends it as diverged, unkept).
pub struct Recorder<'a, R> {
    curve: Vec<R>,
    status: Status,
    progress: &'a progress::Epochs,
}

impl<'a, R: EpochRow> Recorder<'a, R> {
    pub fn new(progress: &'a progress::Epochs) -> Self {
        Recorder {
            curve: Vec::new(),
            status: Status::Ok,
            progress,
        }
    }

    /// Keeps epoch `epoch`'s row, or stops the run if it has diverged.
    pub fn add(&mut self, epoch: usize, row: R) -> ControlFlow<()> {
        if !row.finite() {
            self.status = Status::Diverged;
            return ControlFlow::Break(());
        }
        self.progress.epoch(epoch, &row.figures());
        self.curve.push(row);
        ControlFlow::Continue(())
    }

    /// Stops the run because a stop was requested (its unfinished epoch is dropped).
    pub fn interrupted(&mut self) -> ControlFlow<()> {
        self.status = Status::Interrupted;
        ControlFlow::Break(())
    }

    /// The finished epochs and how the run ended.
    pub fn finish(self) -> (Vec<R>, Status) {
        (self.curve, self.status)
    }
}

/// The loop every run shares: `epoch(i)` trains epoch i and returns its row from values read
/// once, or `None` when a stop was requested during it (the unfinished epoch is dropped). A row
/// with a NaN or infinite value ends the run as diverged, without being kept; every kept row is
/// shown by `progress`.
pub fn train_epochs<R: EpochRow>(
    epochs: usize,
    progress: &progress::Epochs,
    mut epoch: impl FnMut(usize) -> Option<R>,
) -> (Vec<R>, Status) {
    let mut curve = Vec::with_capacity(epochs);
    for i in 1..=epochs {
        let Some(row) = epoch(i) else {
            return (curve, Status::Interrupted);
        };
        if !row.finite() {
            return (curve, Status::Diverged);
        }
        progress.epoch(i, &row.figures());
        curve.push(row);
    }
    (curve, Status::Ok)
}

/// A named figure of a curve's rows.
pub type Named<R> = (String, fn(&R) -> f64);

/// A run's train curve (a line) and test curve (with markers) against epoch, in one colour:
/// the series an overview chart draws for each run.
pub fn train_test_curves<R>(
    curve: &[R],
    epoch: fn(&R) -> f64,
    [(train_name, train), (test_name, test)]: [Named<R>; 2],
    color: usize,
) -> [Series; 2] {
    let points = |f: fn(&R) -> f64| curve.iter().map(|e| (epoch(e), f(e))).collect();
    [
        Series::line(train_name, points(train), color),
        Series::line(test_name, points(test), color)
            .with_markers()
            .dashed(),
    ]
}

/// The leading columns of a run's line: version, then the setting's values.
pub fn setting_cells<E: Experiment>(version: Version, setting: E::Setting) -> Vec<Cell> {
    std::iter::once(Cell::text(version.name()))
        .chain(setting_fields(&setting).into_iter().map(|(_, cell)| cell))
        .collect()
}

/// A setting's fields, by serde, in their declared order: their names and values (strings as
/// text, numbers as floats).
pub fn setting_fields<S: Serialize>(setting: &S) -> Vec<(String, Cell)> {
    let text = serde_json::to_string(setting).expect("a setting serialises");
    let mut de = serde_json::Deserializer::from_str(&text);
    let OrderedFields(fields) =
        serde::Deserialize::deserialize(&mut de).expect("a setting serialises to a struct");
    fields
        .into_iter()
        .map(|(name, v)| {
            let cell = match v {
                serde_json::Value::String(s) => Cell::Text(s),
                v => Cell::Float(v.as_f64().expect("a setting's number")),
            };
            (name, cell)
        })
        .collect()
}

/// A JSON object's entries in the order they are written (serde_json's `Map` sorts them).
struct OrderedFields(Vec<(String, serde_json::Value)>);

impl<'de> serde::Deserialize<'de> for OrderedFields {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct Fields;
        impl<'de> serde::de::Visitor<'de> for Fields {
            type Value = OrderedFields;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a struct")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> std::result::Result<OrderedFields, A::Error> {
                let mut fields = Vec::new();
                while let Some(entry) = map.next_entry()? {
                    fields.push(entry);
                }
                Ok(OrderedFields(fields))
            }
        }
        d.deserialize_map(Fields)
    }
}

/// The names of an experiment's setting fields: the summary's setting columns, and the flags a
/// sweep varies.
pub fn setting_columns<E: Experiment>(cfg: &E::Config) -> Vec<String> {
    E::settings(cfg)
        .first()
        .map(|s| {
            setting_fields(s)
                .into_iter()
                .map(|(name, _)| name)
                .collect()
        })
        .unwrap_or_default()
}

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
    Ok(())
}

/// Every run the flags ask for, in the schedule's order; writes `<out>/<NAME>/{<run>.csv and
/// its chart, summary.csv, run.json}` and the overview charts. A diverged run is recorded and
/// the others go on; the command then fails. An interruption records what finished and stops.
pub fn run<E: Experiment>(cfg: &E::Config, ctx: &Context) -> Result<()> {
    check_grid::<E>(cfg)?;
    let data = E::prepare(cfg, ctx)?;
    let dir = record::experiment_dir(&ctx.out, E::NAME)?;
    let alone = E::settings(cfg).len() == 1;
    let mut header: Vec<String> = ["impl"].iter().map(|s| s.to_string()).collect();
    header.extend(setting_columns::<E>(cfg));
    header.extend(["status", "epochs"].map(String::from));
    header.extend(E::finals(cfg).iter().map(|s| s.to_string()));
    header.push("seconds".into());
    let mut summary: Vec<Vec<Cell>> = Vec::new();
    let mut done: Vec<(Version, E::Setting, Run<E>)> = Vec::new();
    let mut curves: Vec<(String, String, Vec<u8>)> = Vec::new();
    let mut outcome = stop::Outcome::default();
    'schedule: for (version, settings) in E::schedule(cfg) {
        let runs = E::train(cfg, &data, version, &settings, ctx);
        for (setting, run) in settings.into_iter().zip(runs) {
            let name = E::label(version, setting);
            if run.status == Status::Ok {
                println!("{name}: {}", E::report(&run));
            }
            let stop = outcome.record(&name, run.status, run.curve.len(), &E::advice(cfg));
            let stem = E::stem(version, setting, alone);
            let title = E::curve_title(version, setting, &run);
            let chart = ctx.plots.then(|| E::curve_chart(&title));
            let bytes = record::write_curve(&dir, &stem, &run.curve, chart)?;
            if run.status == Status::Ok {
                E::save(cfg, &run, &dir.join(&stem), ctx.plots)?;
            }
            let mut line = setting_cells::<E>(version, setting);
            line.extend([
                Cell::text(run.status.name()),
                Cell::Int(run.curve.len() as i64),
            ]);
            line.extend(run.finals.iter().map(|&v| Cell::Float(v)));
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
    E::write_overview_charts(&dir, &runs, ctx.plots)?;
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
    } else {
        record::remove_stale(&xlsx);
    }
    outcome.result(&dir)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn numbers_in_file_names_stay_short() {
        use super::fmt_num;
        assert_eq!(fmt_num(3.0), "3");
        assert_eq!(fmt_num(0.5), "0.5");
        assert_eq!(fmt_num(0.0001), "0.0001");
        assert_eq!(fmt_num(1e308), "1e308");
        assert_eq!(fmt_num(1.5e-12), "1.5e-12");
    }
}
