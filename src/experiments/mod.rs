//! The two book sections, each readable top to bottom like its section.
pub mod dropout;
pub mod sweep;
pub mod weight_decay;

use crate::device::DeviceChoice;
use std::path::PathBuf;
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

/// `3` for 3.0, `0.5` for 0.5: λ as it appears in file names and messages.
pub fn fmt_num(v: f64) -> String {
    format!("{v}")
}
