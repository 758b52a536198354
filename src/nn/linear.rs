//! A fully connected layer whose weight and bias sit in separate optimizer groups.
//!
//! tch's `nn::linear` puts both in one group; this layer creates its weight in
//! [`DECAY_GROUP`] and its bias in [`NO_DECAY_GROUP`], so [`super::decay::optimizer`] decays
//! the weight and leaves the bias alone (the book's "偏置参数没有衰减").
use super::decay::{DECAY_GROUP, NO_DECAY_GROUP};
use super::init;
use tch::{nn, Tensor};

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
