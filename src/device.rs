//! Device choice: `auto|cpu|cuda|cuda:N` → [`tch::Device`], with a clear error when CUDA is absent.
use anyhow::{bail, Result};
use std::fmt;
use std::str::FromStr;
use tch::{Cuda, Device};

/// What the user asked for with `--device`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeviceChoice {
    /// CUDA device 0 when one is usable, otherwise the CPU.
    Auto,
    Cpu,
    Cuda(usize),
}

impl FromStr for DeviceChoice {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim().to_ascii_lowercase();
        match s.as_str() {
            "auto" => Ok(Self::Auto),
            "cpu" => Ok(Self::Cpu),
            "cuda" | "gpu" => Ok(Self::Cuda(0)),
            _ => match s.strip_prefix("cuda:").map(str::parse::<usize>) {
                Some(Ok(i)) => Ok(Self::Cuda(i)),
                _ => Err(format!(
                    "unknown device '{s}': expected auto, cpu, cuda or cuda:N"
                )),
            },
        }
    }
}

impl fmt::Display for DeviceChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Auto => write!(f, "auto"),
            Self::Cpu => write!(f, "cpu"),
            Self::Cuda(i) => write!(f, "cuda:{i}"),
        }
    }
}

/// Turns the user's choice into a device that is really usable, or says why it is not.
pub fn resolve(choice: DeviceChoice) -> Result<Device> {
    match choice {
        DeviceChoice::Cpu => Ok(Device::Cpu),
        DeviceChoice::Auto => Ok(Device::cuda_if_available()),
        DeviceChoice::Cuda(i) => {
            if !crate::LIBTORCH_HAS_CUDA {
                bail!(
                    "--device {choice}: the libtorch this binary is linked against has no CUDA \
                     support (a CPU-only build); rebuild against a CUDA libtorch (scripts/setup.sh \
                     installs torch==2.11.0 with CUDA) or use --device cpu"
                );
            }
            if !Cuda::is_available() {
                bail!(
                    "--device {choice}: no usable CUDA GPU (libtorch has CUDA support, but no GPU \
                     or driver is visible to it); use --device cpu or --device auto"
                );
            }
            let count = Cuda::device_count() as usize;
            if i >= count {
                bail!(
                    "--device {choice}: only {count} CUDA device(s) visible (cuda:0 … cuda:{})",
                    count - 1
                );
            }
            Ok(Device::Cuda(i))
        }
    }
}

/// `cpu` or `cuda:N`, as written in run.json and in file names.
pub fn name(device: Device) -> String {
    match device {
        Device::Cuda(i) => format!("cuda:{i}"),
        Device::Cpu => "cpu".to_string(),
        other => format!("{other:?}").to_lowercase(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_device_strings() {
        assert_eq!("auto".parse(), Ok(DeviceChoice::Auto));
        assert_eq!("CPU".parse(), Ok(DeviceChoice::Cpu));
        assert_eq!("cuda".parse(), Ok(DeviceChoice::Cuda(0)));
        assert_eq!("cuda:3".parse(), Ok(DeviceChoice::Cuda(3)));
        assert!("cuda:x".parse::<DeviceChoice>().is_err());
        assert!("tpu"
            .parse::<DeviceChoice>()
            .unwrap_err()
            .contains("expected auto, cpu"));
    }
}
