//! Values the command line gives that several modules share — which version of the book's code
//! runs (`--impl`), which engine trains it (`--engine`) — and the parsers that check each flag.
//! A leaf: it imports nothing of this crate but the device choice.
use crate::device::DeviceChoice;
use clap::ValueEnum;
use serde::Serialize;

/// One version of an experiment: the book's from-scratch code or its concise code.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
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

/// `--impl`: which versions to run.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ImplChoice {
    Concise,
    Scratch,
    Both,
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

/// `--engine`: how a model is trained.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq, Serialize, serde::Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Engine {
    /// The book's code op by op with autograd and tch's optimizer: PyTorch's numbers on the CPU
    #[default]
    Autograd,
    /// Hand-written backward, SGD folded into the GEMMs, fused element-wise loops: faster
    Fused,
}

/// The values a `clap::Args` struct takes when no flag is given: its declared defaults, so
/// each default is written once, beside its flag.
pub fn defaults<A: clap::Args + clap::FromArgMatches>() -> A {
    let command = A::augment_args(clap::Command::new("defaults"));
    A::from_arg_matches(&command.get_matches_from(["defaults"])).expect("every flag has a default")
}

/// Serialises a value as its `Display` text (for `run.json`).
pub fn serialize_display<T: std::fmt::Display, S: serde::Serializer>(
    v: &T,
    s: S,
) -> Result<S::Ok, S::Error> {
    s.collect_str(v)
}

/// The command line as typed, for `run.json` and the lock file: any bytes a Linux argument
/// can hold, those that are not UTF-8 shown as U+FFFD (`std::env::args` would panic on them).
pub fn command_line() -> Vec<String> {
    std::env::args_os()
        .map(|a| a.to_string_lossy().into_owned())
        .collect()
}

/// Serializes a path for `run.json`, its non-UTF-8 bytes as U+FFFD (serde refuses them).
pub fn serialize_path<S: serde::Serializer>(
    path: &Option<std::path::PathBuf>,
    s: S,
) -> Result<S::Ok, S::Error> {
    match path {
        Some(p) => s.serialize_some(&p.to_string_lossy()),
        None => s.serialize_none(),
    }
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

/// `--lr`: a number > 0 that stays > 0 in the 32-bit floats the models use (1e-46 would be 0,
/// and every step would leave the weights as they are).
pub fn learning_rate(s: &str) -> Result<f64, String> {
    let v = positive_f64(s)?;
    if v as f32 == 0.0 {
        return Err(format!(
            "{s} is 0 in the 32-bit floats the models use (the smallest positive one is 1.4e-45), \
             so no step would change a weight; use a larger learning rate"
        ));
    }
    Ok(v)
}

/// The most epochs `--epochs` accepts: a million (the book trains 10 and 100; a million
/// dropout epochs would take about two weeks on a 2-core CPU).
pub const MAX_EPOCHS: usize = 1_000_000;

/// `--epochs`: 1 to [`MAX_EPOCHS`].
pub fn epochs(s: &str) -> Result<usize, String> {
    at_most(
        positive_usize(s)?,
        MAX_EPOCHS,
        "epochs",
        "the book trains 10 and 100",
    )
}

/// The most examples a set size or a batch holds (`--n-train`, `--n-test`, `--n-val`,
/// `--batch-size`): a hundred million (with the book's 200 inputs, 80 GB of 32-bit floats;
/// beyond it no machine here holds the data, and every count stays far from i64's range).
pub const MAX_EXAMPLES: usize = 100_000_000;

/// A set size or a batch size: 1 to [`MAX_EXAMPLES`].
pub fn examples(s: &str) -> Result<usize, String> {
    at_most(
        positive_usize(s)?,
        MAX_EXAMPLES,
        "examples",
        "the book uses 5 to 60000",
    )
}

/// The most inputs `--num-inputs` accepts: a million (the book's 200; a million is 4 MB per
/// example).
pub const MAX_INPUTS: usize = 1_000_000;

/// `--num-inputs`: 1 to [`MAX_INPUTS`].
pub fn num_inputs(s: &str) -> Result<usize, String> {
    at_most(
        positive_usize(s)?,
        MAX_INPUTS,
        "inputs",
        "the book uses 200",
    )
}

fn at_most(n: usize, max: usize, what: &str, why: &str) -> Result<usize, String> {
    if n > max {
        Err(format!("at most {max} {what} ({why}), got {n}"))
    } else {
        Ok(n)
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
/// The most intra-op threads `--threads` accepts: four per logical CPU. libtorch starts every
/// thread asked for; 100000 exhausted the process table of the machine that tried it.
pub fn max_threads() -> usize {
    4 * logical_cpus()
}

fn logical_cpus() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// `--threads`: 1 to [`max_threads`].
pub fn thread_count(s: &str) -> Result<usize, String> {
    let n = positive_usize(s)?;
    if n > max_threads() {
        return Err(format!(
            "{n} threads is more than this machine can use: at most {} (4 per logical CPU, \
             {} here); leave --threads out for one per core",
            max_threads(),
            logical_cpus()
        ));
    }
    Ok(n)
}

/// The most Monte-Carlo passes `--mc-samples` accepts (each is a pass over the test set).
pub const MAX_MC_SAMPLES: usize = 10_000;

/// `--mc-samples`: 1 to [`MAX_MC_SAMPLES`].
pub fn mc_samples(s: &str) -> Result<usize, String> {
    let n = positive_usize(s)?;
    if n > MAX_MC_SAMPLES {
        return Err(format!(
            "at most {MAX_MC_SAMPLES} passes (each is a pass over the whole test set), got {n}; \
             the accuracy of the average settles within a few hundred"
        ));
    }
    Ok(n)
}

pub fn positive_usize(s: &str) -> Result<usize, String> {
    match s.trim().parse::<usize>() {
        Ok(0) => Err("must be at least 1, got 0".to_string()),
        Ok(v) => Ok(v),
        Err(_) => Err(format!("'{s}' is not a whole number ≥ 1")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The value that once exhausted a machine's process table is refused by the parser,
    /// before libtorch sees it; the ceiling itself is accepted.
    #[test]
    fn a_thread_count_above_the_ceiling_is_refused() {
        let err = thread_count("100000").unwrap_err();
        assert!(err.contains(&format!("at most {}", max_threads())), "{err}");
        assert!(thread_count(&(max_threads() + 1).to_string()).is_err());
        assert_eq!(thread_count(&max_threads().to_string()), Ok(max_threads()));
        assert!(thread_count("0").is_err());
    }

    #[test]
    fn monte_carlo_passes_have_a_ceiling() {
        assert!(mc_samples("10001").unwrap_err().contains("at most 10000"));
        assert_eq!(mc_samples("10000"), Ok(10_000));
    }
}
