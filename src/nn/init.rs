//! PyTorch's default initialisation of `nn.Linear` (tch's own default differs).
//!
//! PyTorch draws the weight with `kaiming_uniform_(w, a=√5)` and the bias from
//! U(−1/√fan_in, 1/√fan_in). The bounds are computed here with PyTorch's own floating-point
//! steps, so the same seed gives bit-identical parameters.
use tch::nn::{self, Init};

/// `kaiming_uniform_(a=√5)`: gain = √(2 / (1 + a²)), std = gain / √fan_in, bound = √3 · std.
pub fn linear_weight(fan_in: i64) -> Init {
    let a = 5f64.sqrt();
    let gain = (2.0 / (1.0 + a.powi(2))).sqrt();
    let std = gain / (fan_in as f64).sqrt();
    let bound = 3f64.sqrt() * std;
    Init::Uniform {
        lo: -bound,
        up: bound,
    }
}

/// U(−1/√fan_in, 1/√fan_in).
pub fn linear_bias(fan_in: i64) -> Init {
    let bound = if fan_in > 0 {
        1.0 / (fan_in as f64).sqrt()
    } else {
        0.0
    };
    Init::Uniform {
        lo: -bound,
        up: bound,
    }
}

/// PyTorch's `nn.Linear(in_dim, out_dim)` as a stock tch [`nn::Linear`]: `nn::linear` with the
/// weight's init from PyTorch, and the bias drawn *after* the weight, as PyTorch draws them
/// (tch's `nn::linear` creates the bias first, which would give the same seed other numbers).
pub fn linear(vs: &nn::Path, in_dim: i64, out_dim: i64) -> nn::Linear {
    let config = nn::LinearConfig {
        ws_init: linear_weight(in_dim),
        bs_init: Some(Init::Const(0.0)),
        bias: true,
    };
    let layer = nn::linear(vs, in_dim, out_dim, config);
    if let (Some(bs), Init::Uniform { lo, up }) = (&layer.bs, linear_bias(in_dim)) {
        tch::no_grad(|| {
            let _ = bs.shallow_clone().uniform_(lo, up);
        });
    }
    layer
}
