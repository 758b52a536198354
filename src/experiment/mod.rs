//! The one shape every experiment has, and the command that runs one.
//!
//! An experiment (a book section) provides its configuration, its settings (what a sweep
//! varies: λ, the dropout rates), its epoch row, its training and its final figures, by
//! implementing [`Experiment`]. Everything else exists once, here and in `sweep`: training the
//! versions × settings in order, printing each result, recording divergence and interruption,
//! writing every curve (CSV and chart), `summary.csv` and `run.json`, and the exit status.
use crate::device::DeviceChoice;
use crate::options::Impl;
use crate::plot::{Figure, Series};
use crate::progress;
use crate::record::{self, Cell};
use crate::stop::Status;
use anyhow::Result;
use serde::Serialize;

mod command;
mod fields;

pub use command::{check_grid, run, CheckpointWriting, Checkpoints, MAX_SETTINGS};
use fields::cell_text;
pub use fields::{
    figures, finals_from, fingerprint, finish_board, setting_cells, setting_columns, setting_fields,
};
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
    /// Where the runs keep their checkpoints (none: no checkpoints).
    pub checkpoints: Option<crate::checkpoint::Plan>,
    /// Whether runs write TensorBoard event files (`--no-tensorboard` turns it off).
    pub tensorboard: bool,
    /// Where this command's runs write them (set by the run command and the sweep).
    pub board: Option<crate::tensorboard::Board>,
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

    /// The TensorBoard run of the run `stem` at this seed (`<stem>-seed<k>`), started afresh.
    pub fn board_run(&self, stem: &str) -> Option<crate::tensorboard::Run> {
        (self.board.as_ref()).map(|b| b.run(&format!("{stem}-seed{}", self.seed)))
    }

    /// A run's live chart title: its label and the seed, always.
    pub fn titled(&self, label: &str) -> String {
        format!("{label}, seed {}", self.seed)
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
    /// The series of the run's live figure (the book's `legend=[…]`), and whether its y axis
    /// is logarithmic (`yscale='log'`) and how it is labelled (`ylabel=…`).
    const LEGEND: &'static [&'static str] = &[];
    const LOG_Y: bool = false;
    const Y_LABEL: &'static str = "";
    /// This epoch's values of the figure's series, in the legend's order.
    fn plotted(&self) -> Vec<f64> {
        Vec::new()
    }
}

/// The live figure of a run of `R` rows called `title`, over `epochs` epochs.
pub fn live_figure<R: EpochRow>(title: &str, epochs: usize) -> progress::Figure {
    progress::Figure {
        title: title.to_string(),
        y_label: R::Y_LABEL,
        legend: R::LEGEND.iter().map(|s| s.to_string()).collect(),
        log_y: R::LOG_Y,
        epochs,
    }
}

/// A run's final figures: a struct of `f64` fields whose serde names are the summary's
/// columns, in their declared order. Figures a configuration may leave out form a struct of
/// their own, held as a `#[serde(flatten)] Option<…>` last.
pub trait FinalFigures: Serialize + serde::de::DeserializeOwned + Clone {
    /// The generalization gap (train − test accuracy, or test − train loss), through
    /// [`round_derived`].
    fn gap(&self) -> f64;
}

/// One run of an experiment: a version at a setting, trained from a fresh seed.
pub struct Run<E: Experiment> {
    /// The finished epochs.
    pub curve: Vec<E::Row>,
    pub status: Status,
    /// The final figures (NaN where none finished).
    pub finals: E::Finals,
    /// Wall time (shared by the runs trained together).
    pub seconds: f64,
    /// What else the run leaves for [`Experiment::save`] (the trained variables, say).
    pub artifacts: E::Artifacts,
}

/// A figure a sweep summarises, read off a run's final figures.
pub type Stat<F> = fn(&F) -> f64;

/// One setting of one version over a sweep's seeds: how it ended and the final figures of the
/// runs that finished.
pub struct SettingStats<E: Experiment> {
    pub version: Impl,
    pub setting: E::Setting,
    pub status: Status,
    pub seeds: usize,
    pub seeds_ok: usize,
    /// The final figures of the seeds that finished.
    pub finals: Vec<E::Finals>,
}

impl<E: Experiment> SettingStats<E> {
    /// The mean and sample standard deviation of a figure over the seeds that finished (NaN
    /// when none did).
    pub fn stat(&self, figure: impl Fn(&E::Finals) -> f64) -> (f64, f64) {
        let values: Vec<f64> = self.finals.iter().map(figure).collect();
        mean_std(&values)
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
///
/// Fourteen items are required: the name, six types (the flags, a setting, shared data, a
/// curve's row, the final figures, what a run leaves), and what only the section knows: its
/// settings and versions, the figures of an unfinished run and what a sweep summarises,
/// `prepare` and `train`, and the chart of a curve. The rest (names and file names from the
/// setting's fields, the schedule, the printed result and table, overview and sweep charts)
/// have defaults that a section overrides to speak its own language.
pub trait Experiment: Sized {
    /// The subcommand and the results directory: `weight-decay`.
    const NAME: &'static str;
    /// The configuration's fields (as saved in `run.json`) that do not change a result (where
    /// the data are, what else is saved): left out of a sweep's fingerprint.
    const NOT_RESULTS: &'static [&'static str] = &[];
    /// Whether its runs keep checkpoints (`ctx.checkpoints`) and resume from them.
    const CHECKPOINTS: bool = false;

    /// The hyper-parameters (the subcommand's flags), saved in `run.json`.
    type Config: Serialize;
    /// What a sweep varies: a struct whose fields (serde) are the flags' names, so they are
    /// the summary's columns, the lists a grid is made of, and what a sweep's fingerprint leaves out.
    type Setting: Copy + PartialEq + Serialize;
    /// What the command loads once for all its runs.
    type Data;
    /// One row of a run's curve.
    type Row: EpochRow;
    /// A run's final figures.
    type Finals: FinalFigures;
    /// What a run leaves besides its curve (for [`Experiment::save`]).
    type Artifacts;

    /// Every setting the flags ask for.
    fn settings(cfg: &Self::Config) -> Vec<Self::Setting>;
    /// The settings a version runs (all of them unless a version has fewer).
    fn settings_for(cfg: &Self::Config, version: Impl) -> Vec<Self::Setting> {
        let _ = version;
        Self::settings(cfg)
    }
    /// The final figures of a run that did not finish: NaN in every figure this configuration
    /// reports (their names are the summary's columns after `status` and `epochs`).
    fn unfinished(cfg: &Self::Config) -> Self::Finals;
    /// What a sweep summarises over its seeds, in column order (each `<name>_mean`,
    /// `<name>_std`).
    fn sweep_stats(cfg: &Self::Config) -> Vec<(&'static str, Stat<Self::Finals>)>;
    /// The versions the flags ask for.
    fn impls(cfg: &Self::Config) -> Vec<Impl>;
    /// The runs in the order they train, in groups trained together: each a version and its
    /// settings. By default setting by setting, each version in turn, one run per group.
    fn schedule(cfg: &Self::Config) -> Vec<(Impl, Vec<Self::Setting>)> {
        let versions = Self::impls(cfg);
        let of_version: Vec<Vec<Self::Setting>> = versions
            .iter()
            .map(|&v| Self::settings_for(cfg, v))
            .collect();
        let mut groups = Vec::new();
        for setting in Self::settings(cfg) {
            for (&version, settings) in versions.iter().zip(&of_version) {
                if settings.contains(&setting) {
                    groups.push((version, vec![setting]));
                }
            }
        }
        groups
    }
    /// Refuses what cannot work before anything is written, then loads what every run shares.
    fn prepare(cfg: &Self::Config, ctx: &Context) -> Result<Self::Data>;
    /// Trains one group of the schedule, with progress; one run per setting, in order (fewer
    /// when a run was interrupted). Fails only when a checkpoint cannot be read or written.
    fn train(
        cfg: &Self::Config,
        data: &Self::Data,
        version: Impl,
        settings: &[Self::Setting],
        ctx: &Context,
    ) -> Result<Vec<Run<Self>>>;

    /// What a run is called in messages and progress: `weight decay, scratch λ=3`. By
    /// default the name, the version and the setting's fields (`toy, scratch lr=0.1`).
    fn label(version: Impl, setting: Self::Setting) -> String {
        let fields: Vec<String> = setting_fields(&setting)
            .into_iter()
            .map(|(name, value)| format!("{name}={}", cell_text(&value)))
            .collect();
        format!("{}, {} {}", Self::NAME, version.name(), fields.join(" "))
    }
    /// A run's file name without extension; `alone` when the command has one setting only. By
    /// default the version and the setting's fields (`scratch-lr0.1`).
    fn stem(version: Impl, setting: Self::Setting, alone: bool) -> String {
        let _ = alone;
        let mut stem = version.name().to_string();
        for (name, value) in setting_fields(&setting) {
            stem += &format!("-{}{}", name.replace('_', "-"), cell_text(&value));
        }
        stem
    }
    /// The result printed for a finished run, after its label and a colon. By default every
    /// final figure (`final_loss 0.0123`).
    fn report(run: &Run<Self>) -> String {
        figures(&run.finals)
            .into_iter()
            .map(|(name, v)| format!("{name} {v:.4}"))
            .collect::<Vec<_>>()
            .join(", ")
    }
    /// What to change when a run diverges.
    fn advice(cfg: &Self::Config) -> String {
        let _ = cfg;
        "try a smaller learning rate (--lr)".into()
    }
    /// The chart of one run's curve.
    fn curve_chart<'a>(title: &'a str) -> record::Chart<'a, Self::Row>;
    /// The title of that chart.
    fn curve_title(version: Impl, setting: Self::Setting, run: &Run<Self>) -> String {
        let _ = run;
        Self::label(version, setting)
    }
    /// Charts over several runs of the command (`--no-plot`: remove older ones). None by
    /// default.
    fn write_overview_charts(
        dir: &Path,
        runs: &[(Impl, Self::Setting, &Run<Self>)],
        plots: bool,
    ) -> Result<()> {
        let _ = (dir, runs, plots);
        Ok(())
    }
    /// Stores what a finished run leaves besides its curve, at `stem` plus a suffix (with
    /// its charts when `plots`).
    fn save(cfg: &Self::Config, run: &Run<Self>, stem: &Path, plots: bool) -> Result<()> {
        let _ = (cfg, run, stem, plots);
        Ok(())
    }
    /// A sweep's figures: the final figures against the settings. None by default.
    fn sweep_charts(
        cfg: &Self::Config,
        settings: &[SettingStats<Self>],
        seeds: usize,
    ) -> Vec<SweepChart> {
        let _ = (cfg, settings, seeds);
        Vec::new()
    }
    /// Columns a sweep's summary adds after the statistics, and their values per setting.
    fn sweep_marks(
        cfg: &Self::Config,
        settings: &[SettingStats<Self>],
    ) -> (Vec<&'static str>, Vec<Vec<Cell>>) {
        let _ = cfg;
        (Vec::new(), vec![Vec::new(); settings.len()])
    }
    /// Lines a sweep prints after its table.
    fn sweep_notes(cfg: &Self::Config, settings: &[SettingStats<Self>]) -> Vec<String> {
        let _ = (cfg, settings);
        Vec::new()
    }
    /// A row of the table a sweep prints: each column's header and value. By default the
    /// version, the setting's fields, the status and the mean of each of
    /// [`Experiment::sweep_stats`].
    fn sweep_table_row(cfg: &Self::Config, setting: &SettingStats<Self>) -> Vec<(String, String)> {
        let mut row = vec![("impl".to_string(), setting.version.name().to_string())];
        for (name, value) in setting_fields(&setting.setting) {
            row.push((name, cell_text(&value)));
        }
        row.push(("status".into(), setting.status.name().to_string()));
        for (name, stat) in Self::sweep_stats(cfg) {
            row.push((name.to_string(), format!("{:.4}", setting.stat(stat).0)));
        }
        row
    }
    /// The flags that size the job, with their values (for an out-of-memory message).
    fn memory_flags(cfg: &Self::Config) -> String {
        let _ = cfg;
        "the job (its sizes)".into()
    }
}

/// What the command keeps of a run through the book's animator: the finished epochs, shown as
/// progress, and how the run ended (a NaN or infinite row ends it as diverged, unkept).
pub struct Recorder<'a, R> {
    curve: Vec<R>,
    status: Status,
    progress: &'a progress::Epochs,
    /// The run's TensorBoard event file, which gets every kept row as it comes.
    board: Option<crate::tensorboard::Run>,
}

impl<'a, R: EpochRow> Recorder<'a, R> {
    pub fn new(progress: &'a progress::Epochs) -> Self {
        Recorder {
            curve: Vec::new(),
            status: Status::Ok,
            progress,
            board: None,
        }
    }

    /// The same, writing every row to `board` too (see [`board_scalars`]).
    pub fn with_board(mut self, board: Option<crate::tensorboard::Run>) -> Self {
        self.board = board;
        self
    }

    /// Writes `row` to the board; false when that failed (the run then stops, and the
    /// command reports the failure as it ends the run).
    fn log(&self, row: &R) -> bool {
        self.board.as_ref().is_none_or(|b| {
            let step = board_step(row);
            b.scalars(step, &board_scalars(row))
        })
    }

    /// Keeps epoch `epoch`'s row, or stops the run if it has diverged.
    pub fn add(&mut self, epoch: usize, row: R) -> ControlFlow<()> {
        if !row.finite() {
            self.status = Status::Diverged;
            return ControlFlow::Break(());
        }
        self.progress.epoch(epoch, &row.figures(), &row.plotted());
        let logged = self.log(&row);
        self.curve.push(row);
        if !logged {
            self.status = Status::Interrupted;
            return ControlFlow::Break(());
        }
        ControlFlow::Continue(())
    }

    /// Continues a run from the rows of its finished epochs (a checkpoint's), written to the
    /// board again (its event file was started afresh).
    pub fn resume(&mut self, rows: Vec<R>) {
        for row in &rows {
            if !self.log(row) {
                break;
            }
        }
        for (i, row) in rows.iter().enumerate() {
            self.progress.resumed(i + 1, &row.plotted());
        }
        self.curve = rows;
    }

    /// The finished epochs' rows.
    pub fn rows(&self) -> &[R] {
        &self.curve
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

/// A row's `epoch` field: its step on the board.
pub fn board_step<R: Serialize>(row: &R) -> i64 {
    serde_json::to_value(row)
        .ok()
        .and_then(|v| v.get("epoch").and_then(|e| e.as_i64()))
        .unwrap_or(0)
}

/// A row's figures as TensorBoard scalars: every number but the epoch (the step), tagged with
/// its CSV column's name.
pub fn board_scalars<R: Serialize>(row: &R) -> Vec<(String, f64)> {
    let Ok(serde_json::Value::Object(fields)) = serde_json::to_value(row) else {
        return Vec::new();
    };
    fields
        .into_iter()
        .filter(|(name, _)| name != "epoch")
        .filter_map(|(name, v)| Some((name, v.as_f64()?)))
        .collect()
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
