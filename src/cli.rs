//! Command-line types (clap derive): global options and one subcommand per experiment.
//!
//! The experiments' hyper-parameter structs derive `clap::Args` themselves, so each default is
//! written once, beside its flag, and the same struct is saved to `run.json`.
use crate::device::DeviceChoice;
use crate::experiments::{dropout, weight_decay};
use clap::{Parser, Subcommand, ValueEnum};
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
    #[arg(
        long,
        global = true,
        allow_negative_numbers = true,
        default_value_t = 0
    )]
    pub seed: i64,
    /// Directory the results are written to
    #[arg(long, global = true, default_value = "results")]
    pub out: PathBuf,
    /// Intra-op CPU threads (default: libtorch's choice, usually one per core)
    #[arg(long, global = true, allow_negative_numbers = true, value_parser = positive_usize)]
    pub threads: Option<usize>,
    /// No progress bars or per-epoch lines (results and errors are still printed)
    #[arg(long, short, global = true)]
    pub quiet: bool,
    /// Write the CSV files only, no SVG charts
    #[arg(long, global = true)]
    pub no_plot: bool,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Book §4.5: L2 penalty on a 200-input linear regression with 20 training examples
    WeightDecay(weight_decay::Config),
    /// Book §4.6: dropout in a 784-256-256-10 MLP on Fashion-MNIST
    Dropout(dropout::Config),
    /// Book exercises: train over a grid of λ or dropout rates, over several seeds, and
    /// summarise the final figures and the generalization gap
    #[command(subcommand)]
    Sweep(crate::experiments::sweep::Sweep),
    /// Timings for scripts/bench.sh, as JSON on stdout (concise dropout epochs, weight-decay runs)
    Bench(crate::bench::Config),
    /// What this binary runs on: libtorch, CUDA runtime and driver, GPUs, cuDNN (for "CUDA is
    /// not available")
    Doctor,
}

/// Which version of an experiment to run: the book's from-scratch code, its concise code, or both.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ImplChoice {
    Concise,
    Scratch,
    Both,
}

/// One version of an experiment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Impl {
    #[default]
    Scratch,
    Concise,
}

impl Impl {
    pub fn name(self) -> &'static str {
        match self {
            Impl::Scratch => "scratch",
            Impl::Concise => "concise",
        }
    }
}

impl ImplChoice {
    /// The versions to run, scratch first as in the book.
    pub fn impls(self) -> Vec<Impl> {
        match self {
            ImplChoice::Scratch => vec![Impl::Scratch],
            ImplChoice::Concise => vec![Impl::Concise],
            ImplChoice::Both => vec![Impl::Scratch, Impl::Concise],
        }
    }
}

/// The values a `clap::Args` struct takes when no flag is given: its declared defaults, so
/// each default is written once, beside its flag.
pub fn defaults<A: clap::Args + clap::FromArgMatches>() -> A {
    let command = A::augment_args(clap::Command::new("defaults"));
    A::from_arg_matches(&command.get_matches_from(["defaults"])).expect("every flag has a default")
}

fn serialize_display<T: std::fmt::Display, S: serde::Serializer>(
    v: &T,
    s: S,
) -> Result<S::Ok, S::Error> {
    s.collect_str(v)
}

pub fn parse_device(s: &str) -> Result<DeviceChoice, String> {
    s.parse()
}

/// A seed (any i64).
pub fn seed(s: &str) -> Result<i64, String> {
    s.trim()
        .parse()
        .map_err(|_| format!("'{s}' is not a whole number"))
}

/// A finite number that a 32-bit float (the models' precision) can hold.
fn parse_f64(s: &str) -> Result<f64, String> {
    let v: f64 = s
        .trim()
        .parse()
        .map_err(|_| format!("'{s}' is not a number"))?;
    if !v.is_finite() {
        Err(format!("'{s}' is not a finite number"))
    } else if v.abs() > f32::MAX as f64 {
        Err(format!(
            "'{s}' is too large for the 32-bit floats the models use (at most 3.4e38)"
        ))
    } else {
        Ok(v)
    }
}

/// A number > 0 (learning rates).
pub fn positive_f64(s: &str) -> Result<f64, String> {
    let v = parse_f64(s)?;
    if v > 0.0 {
        Ok(v)
    } else {
        Err(format!("must be greater than 0, got {s}"))
    }
}

/// A number ≥ 0 (weight decay λ).
pub fn non_negative_f64(s: &str) -> Result<f64, String> {
    let v = parse_f64(s)?;
    if v >= 0.0 {
        Ok(v)
    } else {
        Err(format!("must be 0 or more, got {s}"))
    }
}

/// A probability in [0, 1] (dropout rates).
pub fn probability(s: &str) -> Result<f64, String> {
    let v = parse_f64(s)?;
    if (0.0..=1.0).contains(&v) {
        Ok(v)
    } else {
        Err(format!("must be a probability between 0 and 1, got {s}"))
    }
}

/// A whole number ≥ 1 (epochs, batch sizes, set sizes).
pub fn positive_usize(s: &str) -> Result<usize, String> {
    match s.trim().parse::<usize>() {
        Ok(0) => Err("must be at least 1, got 0".to_string()),
        Ok(v) => Ok(v),
        Err(_) => Err(format!("'{s}' is not a whole number ≥ 1")),
    }
}
