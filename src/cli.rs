//! Command-line types (clap derive): global options and one subcommand per experiment — the one
//! place that lists the experiments (a new one is a variant in [`Command`] and in [`Sweep`],
//! and an arm in each `match` below).
//!
//! The experiments' hyper-parameter structs derive `clap::Args` themselves, so each default is
//! written once, beside its flag, and the same struct is saved to `run.json`.
use crate::device::DeviceChoice;
use crate::experiment::{self, Context, Experiment};
use crate::experiments::dropout::{self, DropoutMlp};
use crate::experiments::weight_decay::{self, WeightDecay};
use crate::options::{defaults, parse_device, serialize_display, thread_count};
use crate::sweep::{self, SweepArgs};
use anyhow::Result;
use clap::{Parser, Subcommand};
use serde::Serialize;
use std::path::PathBuf;

#[derive(Parser, Debug)]
#[command(
    name = "d2l-regularization",
    version,
    about = "Weight decay (d2l §4.5) and dropout (d2l §4.6) trained with tch on CPU or CUDA",
    long_about = "Weight decay (d2l §4.5) and dropout (d2l §4.6) trained with tch on CPU or CUDA.\n\
                  With no subcommand every experiment runs with the book's hyper-parameters; \
                  loss curves are written as CSV under --out."
)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// Options shared by every experiment.
#[derive(clap::Args, Debug, Clone, Serialize)]
pub struct Global {
    /// auto (CUDA when available), cpu, cuda or cuda:N
    #[arg(long, global = true, default_value = "auto", value_parser = parse_device)]
    #[serde(serialize_with = "serialize_display")]
    pub device: DeviceChoice,
    /// Seed of libtorch's generator (the same one PyTorch uses)
    #[arg(long, global = true, allow_hyphen_values = true, default_value_t = 0)]
    pub seed: i64,
    /// Directory the results are written to (results/ holds the committed reference: --out
    /// results rewrites it)
    #[arg(long, global = true, default_value = "runs")]
    pub out: PathBuf,
    /// Intra-op CPU threads (default: libtorch's choice, usually one per core; at most 4 per logical CPU)
    #[arg(long, global = true, allow_hyphen_values = true, value_parser = thread_count)]
    pub threads: Option<usize>,
    /// No progress bars or per-epoch lines (results and errors are still printed)
    #[arg(long, short, global = true)]
    pub quiet: bool,
    /// On a terminal, a progress bar only: no live chart of each run's curves
    #[arg(long, global = true)]
    pub no_chart: bool,
    /// Write the CSV files only, no SVG charts
    #[arg(long, global = true)]
    pub no_plot: bool,
    /// Write no TensorBoard event files (by default every run's curve goes to a tensorboard/
    /// directory in --out, and a sweep's to its own, as it trains)
    #[arg(long, global = true)]
    pub no_tensorboard: bool,
    /// CPU only: the same digits on any x86-64 CPU (MKL's COMPATIBLE branch, ATen's AVX2
    /// kernels, 2 threads unless --threads is given), at a cost in speed
    #[arg(long, global = true)]
    pub reproducible: bool,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Book §4.5: L2 penalty on a 200-input linear regression with 20 training examples
    WeightDecay(RunArgs<weight_decay::Config>),
    /// Book §4.6: dropout in a 784-256-256-10 MLP on Fashion-MNIST
    Dropout(RunArgs<dropout::Config>),
    /// Book exercises: train over a grid of λ or dropout rates, over several seeds, and
    /// summarise the final figures and the generalization gap
    #[command(subcommand)]
    Sweep(Sweep),
    /// Timings for scripts/bench.sh, as JSON on stdout (concise dropout epochs, weight-decay runs)
    Bench(crate::bench::Config),
    /// What this binary runs on: libtorch, CUDA runtime and driver, GPUs, cuDNN (for "CUDA is
    /// not available")
    Doctor,
}

/// A run command: the experiment's own flags, and its checkpoints'.
#[derive(clap::Args, Debug, Clone)]
pub struct RunArgs<C: clap::Args> {
    #[command(flatten)]
    pub experiment: C,
    #[command(flatten)]
    pub checkpoints: experiment::Checkpoints,
}

#[derive(Subcommand, Debug)]
pub enum Sweep {
    /// Every λ of --wd (e.g. 0,0.1,0.3,1,3,10,30), once per seed
    WeightDecay(SweepArgs<weight_decay::Config>),
    /// Every combination of --dropout1 × --dropout2 (e.g. 0,0.2,0.5 × 0,0.5,0.8), once per seed
    Dropout(SweepArgs<dropout::Config>),
    /// Summarises a sweep whose shards (--shard K/N) all finished: summary.csv, figures and
    /// workbook from the runs in DIR, refused when runs are missing or of other configurations
    Merge(sweep::MergeArgs),
}

impl Command {
    /// Runs an experiment or a sweep (`bench` and `doctor` are run by `main`).
    pub fn run(&self, ctx: &Context) -> Result<()> {
        match self {
            Command::WeightDecay(a) => {
                experiment::run::<WeightDecay>(&a.experiment, ctx, Some(&a.checkpoints))
            }
            Command::Dropout(a) => {
                experiment::run::<DropoutMlp>(&a.experiment, ctx, Some(&a.checkpoints))
            }
            Command::Sweep(Sweep::WeightDecay(s)) => sweep::run::<WeightDecay>(s, ctx),
            Command::Sweep(Sweep::Dropout(s)) => sweep::run::<DropoutMlp>(s, ctx),
            Command::Sweep(Sweep::Merge(m)) => match sweep::experiment_of(&m.dir)?.as_str() {
                WeightDecay::NAME => sweep::merge::<WeightDecay>(&m.dir, ctx.plots),
                DropoutMlp::NAME => sweep::merge::<DropoutMlp>(&m.dir, ctx.plots),
                other => anyhow::bail!(
                    "'{}' holds runs of '{other}', which this build does not know",
                    m.dir.display()
                ),
            },
            Command::Bench(cfg) => crate::bench::run(cfg, ctx),
            Command::Doctor => crate::doctor::run(),
        }
    }

    /// The flags that decide how much memory the command needs, with their values.
    pub fn memory_flags(&self) -> String {
        match self {
            Command::WeightDecay(a) => WeightDecay::memory_flags(&a.experiment),
            Command::Dropout(a) => DropoutMlp::memory_flags(&a.experiment),
            Command::Sweep(Sweep::WeightDecay(s)) => WeightDecay::memory_flags(&s.experiment),
            Command::Sweep(Sweep::Dropout(s)) => DropoutMlp::memory_flags(&s.experiment),
            Command::Sweep(Sweep::Merge(_)) | Command::Bench(_) | Command::Doctor => {
                "--batch-size".into()
            }
        }
    }
}

/// No command: every experiment with the book's settings, one after the other.
pub fn run_every_experiment(ctx: &Context) -> Result<()> {
    experiment::run::<WeightDecay>(&defaults(), ctx, None)?;
    experiment::run::<DropoutMlp>(&defaults(), ctx, None)
}
