//! Mini-batches drawn on the device: shuffled by an on-device permutation, or in order.
//!
//! The last partial batch is kept, as PyTorch's `DataLoader` does by default.
use super::Split;
use tch::{Kind, Tensor};

/// Number of mini-batches of `batch_size` in `n` examples, the last one possibly partial.
pub fn count(n: i64, batch_size: usize) -> i64 {
    (n + batch_size as i64 - 1) / batch_size as i64
}

/// Mini-batches of a split, as `(x, y)` pairs.
pub struct Batches<'a> {
    split: &'a Split,
    order: Option<Tensor>,
    batch_size: i64,
    start: i64,
}

/// The batches of one epoch in a fresh random order: one `randperm` on the split's device.
pub fn shuffled(split: &Split, batch_size: usize) -> Batches<'_> {
    let order = Tensor::randperm(split.len(), (Kind::Int64, split.x.device()));
    Batches {
        split,
        order: Some(order),
        batch_size: batch_size as i64,
        start: 0,
    }
}

/// The batches in the split's own order (views, no copy).
pub fn in_order(split: &Split, batch_size: usize) -> Batches<'_> {
    Batches {
        split,
        order: None,
        batch_size: batch_size as i64,
        start: 0,
    }
}

impl Iterator for Batches<'_> {
    type Item = (Tensor, Tensor);

    fn next(&mut self) -> Option<Self::Item> {
        let n = self.split.len();
        if self.start >= n {
            return None;
        }
        let len = self.batch_size.min(n - self.start);
        let batch = match &self.order {
            Some(order) => {
                let idx = order.narrow(0, self.start, len);
                (
                    self.split.x.index_select(0, &idx),
                    self.split.y.index_select(0, &idx),
                )
            }
            None => (
                self.split.x.narrow(0, self.start, len),
                self.split.y.narrow(0, self.start, len),
            ),
        };
        self.start += len;
        Some(batch)
    }
}
