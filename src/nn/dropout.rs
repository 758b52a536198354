//! Dropout two ways: the book's `dropout_layer` built from a mask, and the train-only layer.
use tch::{nn, Kind, Tensor};

/// The book's `dropout_layer` (§4.6.4): zero each element with probability `p` and scale the
/// kept ones by 1/(1−p), so the expectation is unchanged. The caller applies it only while
/// training.
///
/// `p` must lie in [0, 1] (the command line checks the flags); `p = 1` gives zeros, `p = 0`
/// gives `x` itself.
pub fn dropout_layer(x: &Tensor, p: f64) -> Tensor {
    assert!(
        (0.0..=1.0).contains(&p),
        "dropout probability {p} is outside [0, 1]"
    );
    if p == 1.0 {
        return x.zeros_like();
    }
    if p == 0.0 {
        return x.shallow_clone();
    }
    let mask = x.rand_like().gt(p).to_kind(Kind::Float);
    mask * x / (1.0 - p)
}

/// `nn.Dropout(p)`: libtorch's dropout while training, the identity in evaluation mode.
#[derive(Debug, Clone, Copy)]
pub struct Dropout {
    pub p: f64,
}

impl nn::ModuleT for Dropout {
    fn forward_t(&self, x: &Tensor, train: bool) -> Tensor {
        x.dropout(self.p, train)
    }
}
