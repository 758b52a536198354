//! The book's `synthetic_data`: y = Xw + b + ε with ε ~ N(0, 0.01²).
use super::Split;
use tch::{Device, Kind, Tensor};

/// Draws `n` examples with X ~ N(0, 1) of shape `[n, len(w)]` and y of shape `[n, 1]`.
///
/// The random operations are the book's, in the book's order (X first, then the noise), so
/// PyTorch with the same seed draws the same numbers.
pub fn synthetic_data(w: &Tensor, b: f64, n: usize) -> Split {
    let (kind, device) = (w.kind(), w.device());
    let x = Tensor::empty([n as i64, w.size()[0]], (kind, device)).normal_(0.0, 1.0);
    let mut y = x.matmul(w) + b;
    y += Tensor::empty(y.size(), (kind, device)).normal_(0.0, 0.01);
    Split {
        x,
        y: y.reshape([-1, 1]),
    }
}

/// The true parameters of §4.5: every weight 0.01, bias 0.05.
pub fn true_params(num_inputs: usize, device: Device) -> (Tensor, f64) {
    (
        Tensor::ones([num_inputs as i64, 1], (Kind::Float, device)) * 0.01,
        0.05,
    )
}
