//! A fully connected layer whose weight and bias sit in separate optimizer groups.
//!
//! tch's `nn::linear` puts both in one group; with the weight in [`DECAY_GROUP`] and the bias
//! in [`NO_DECAY_GROUP`], `opt.set_weight_decay_group(DECAY_GROUP, λ)` decays the weight and
//! leaves the bias alone (the book's "偏置参数没有衰减").
use super::init;
use tch::{nn, Tensor};

/// Optimizer group of every weight matrix.
pub const DECAY_GROUP: usize = 0;
/// Optimizer group of every bias.
pub const NO_DECAY_GROUP: usize = 1;

#[derive(Debug)]
pub struct Linear {
    /// `[out, in]`, as in PyTorch.
    pub weight: Tensor,
    /// `[out]`.
    pub bias: Tensor,
}

impl Linear {
    /// `nn.Linear(in_dim, out_dim)` with PyTorch's default initialisation: the weight is drawn
    /// first, then the bias, exactly as PyTorch's `reset_parameters` does.
    pub fn new(vs: &nn::Path, in_dim: i64, out_dim: i64) -> Linear {
        let weight = vs.set_group(DECAY_GROUP).var(
            "weight",
            &[out_dim, in_dim],
            init::linear_weight(in_dim),
        );
        let bias = vs
            .set_group(NO_DECAY_GROUP)
            .var("bias", &[out_dim], init::linear_bias(in_dim));
        Linear { weight, bias }
    }
}

impl nn::Module for Linear {
    fn forward(&self, x: &Tensor) -> Tensor {
        x.linear(&self.weight, Some(&self.bias))
    }
}
