//! Data sets, kept on the device as tensors, and the mini-batches drawn from them.
pub mod batches;
pub mod download;
pub mod fashion_mnist;
pub mod idx;
pub mod synthetic;

use tch::Tensor;

/// Features and targets of one split, both on the device the model trains on.
pub struct Split {
    pub x: Tensor,
    pub y: Tensor,
}

impl Split {
    pub fn len(&self) -> i64 {
        self.x.size()[0]
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
