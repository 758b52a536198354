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
