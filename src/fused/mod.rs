//! The fused engine: the same models and the same SGD, trained without autograd.
//!
//! Where the default (`autograd`) engine runs the book's code op by op — autograd records
//! every operation, the optimizer walks its parameter list — the fused engine writes out the
//! backward pass of these small models by hand: each SGD update is folded into the GEMM that
//! computes the weight gradient (`W += gᵀ·x` with g already scaled by −lr), and on the CPU all
//! element-wise work (ReLU + dropout, their backward + the bias update, softmax cross-entropy +
//! accuracy) is done by single-pass loops with a fast mask generator.
//!
//! On the CPU it draws its dropout masks from its own generator (seeded from libtorch's, so
//! `--seed` still decides everything) and it rounds differently, so its numbers are not
//! PyTorch's to the last bit. Given the same masks, every path takes the autograd model's SGD
//! steps to rounding, and over whole runs its results match the default engine's
//! statistically (tests/fused.rs).
pub mod kernels;
pub mod linreg;

pub mod mlp;

use serde::Serialize;

/// How a model is trained.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq, Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Engine {
    /// The book's code op by op with autograd and tch's optimizer: PyTorch's numbers on the CPU
    #[default]
    Autograd,
    /// Hand-written backward, SGD folded into the GEMMs, fused element-wise loops: faster
    Fused,
}

/// A seed for the engine's own generator, drawn from libtorch's so that `--seed` decides it.
pub fn seed_from_libtorch() -> u64 {
    tch::Tensor::randint(i64::MAX, [1], (tch::Kind::Int64, tch::Device::Cpu)).int64_value(&[0])
        as u64
}
