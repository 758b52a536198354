//! What the harness needs around the book's training loop (`d2l.rs`): a model trained one
//! epoch at a time by either engine, and reading on-device figures in one transfer.
use crate::d2l::Metrics;
use crate::data::Split;
use tch::{Kind, Tensor};

/// A classifier with its updater, one epoch at a time, as the fused engine, the benchmark and
/// the engine tests drive it (the autograd engine through the book's `train_epoch_ch3`).
pub trait Learner {
    /// One pass over shuffled training batches with dropout on: `train_epoch_ch3`'s metrics.
    fn train_epoch(&mut self, train: &Split) -> Metrics;
    /// Correct predictions over a split with dropout off (an on-device scalar).
    fn count_correct(&self, split: &Split) -> Tensor;
}

/// Reads several on-device scalars with a single transfer (one synchronisation).
pub fn read<const N: usize>(scalars: &[&Tensor; N]) -> [f64; N] {
    let all: Vec<Tensor> = scalars
        .iter()
        .map(|t| t.to_kind(Kind::Double).reshape([1]))
        .collect();
    let values = Vec::<f64>::try_from(Tensor::cat(&all, 0)).expect("f64 scalars");
    values.try_into().expect("one value per scalar")
}
