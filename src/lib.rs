//! Weight decay (§4.5) and dropout (§4.6) of *Dive into Deep Learning*, trained with tch.
//!
//! The binary is a thin layer over this library, so the tests and benchmarks run the same code
//! as the command line. Data flows one way: CLI → config → data on the device → model →
//! train loop → records.
/// `println!` that never panics: a line to a closed stdout (`… | head -1`) is lost, the run
/// is not (see [`stop`]).
#[macro_export]
macro_rules! outln {
    ($($t:tt)*) => { $crate::stop::line(1, format_args!($($t)*)) };
}

/// `eprintln!` that never panics (a closed terminal or pipe; see [`stop`]).
#[macro_export]
macro_rules! errln {
    ($($t:tt)*) => { $crate::stop::line(2, format_args!($($t)*)) };
}

pub mod atomic;
pub mod bench;
pub mod checkpoint;
pub mod cli;
pub mod cpu;
pub mod cuda;
pub mod d2l;
pub mod data;
pub mod device;
pub mod doctor;
pub mod experiment;
pub mod experiments;
pub mod lock;
pub mod nn;
pub mod options;
pub mod plot;
pub mod precision;
pub mod progress;
pub mod record;
pub mod stop;
pub mod sweep;
pub mod tensorboard;
pub mod train;
pub mod workbook;

/// The version of the tch crate this binary was built with.
pub const TCH_VERSION: &str = "0.24.0";

/// The version of the libtorch this binary was linked against, read by `build.rs`.
pub const LIBTORCH_VERSION: &str = env!("D2L_LIBTORCH_VERSION");

/// Whether the linked libtorch was built with CUDA (it ships `libtorch_cuda.so`).
pub const LIBTORCH_HAS_CUDA: bool = matches!(env!("D2L_LIBTORCH_CUDA").as_bytes(), b"1");
