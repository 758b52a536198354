//! The kinds of training noise §4.6's exercises compare, and two ways to look into a trained
//! MLP with them: its Monte-Carlo predictions (noise left on at test time) and the statistics of
//! its hidden activations.
//!
//! - `bernoulli` (the book's dropout): each activation kept with probability 1 − p, scaled by
//!   1/(1 − p);
//! - `gaussian`: each activation multiplied by N(1, p/(1 − p)) noise, the same mean and
//!   variance as dropout at rate p (Srivastava et al. 2014);
//! - `dropconnect`: each weight of the following linear layer dropped with probability p and
//!   the kept ones scaled by 1/(1 − p), a fresh mask per mini-batch (Wan et al. 2013);
//! - input noise: N(0, σ²) added to the inputs (Bishop 1995, the noise the note describes).
//!
//! All of them act only while training; evaluation is the noise-free network.
use super::book::dropout_layer;
use crate::experiments::dropout::kernels::{keep_mask, Rng};
use serde::Serialize;
use tch::{Kind, Tensor};

/// `--noise`: what perturbs the hidden layers while training.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NoiseKind {
    /// Dropout, the book's: activations zeroed with probability p, the rest scaled by 1/(1−p)
    Bernoulli,
    /// Activations multiplied by N(1, p/(1−p)): dropout's mean and variance, without zeros
    Gaussian,
    /// Weights of the following layer dropped with probability p (scaled by 1/(1−p)), per mini-batch
    Dropconnect,
}

impl NoiseKind {
    pub fn name(self) -> &'static str {
        match self {
            NoiseKind::Bernoulli => "bernoulli",
            NoiseKind::Gaussian => "gaussian",
            NoiseKind::Dropconnect => "dropconnect",
        }
    }
}

/// The noise of one model: its kind at the two hidden layers' rates, and the input noise σ.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Perturbation {
    pub kind: NoiseKind,
    pub rates: [f64; 2],
    pub input_sigma: f64,
}

/// The (weight, bias) of the three linear layers.
pub type Layers = [(Tensor, Tensor); 3];

/// `h` multiplied by N(1, p/(1 − p)) noise drawn from libtorch's generator (p < 1).
pub fn gaussian(h: &Tensor, p: f64) -> Tensor {
    if p == 0.0 {
        return h.shallow_clone();
    }
    h * (h.randn_like() * (p / (1.0 - p)).sqrt() + 1.0)
}

impl Perturbation {
    /// The book's: dropout at `rates`, no input noise.
    pub fn dropout(rates: [f64; 2]) -> Perturbation {
        Perturbation {
            kind: NoiseKind::Bernoulli,
            rates,
            input_sigma: 0.0,
        }
    }

    /// The input with N(0, σ²) added while training.
    pub fn input(&self, x: &Tensor, train: bool) -> Tensor {
        if train && self.input_sigma > 0.0 {
            x + x.randn_like() * self.input_sigma
        } else {
            x.shallow_clone()
        }
    }

    /// Hidden layer `k`'s output `h` (after ReLU) as the next layer sees it while training,
    /// for the kinds that act on activations (`bernoulli` as the book's `dropout_layer`).
    pub fn activations(&self, h: &Tensor, k: usize, train: bool) -> Tensor {
        match self.kind {
            NoiseKind::Bernoulli if train => dropout_layer(h, self.rates[k]),
            NoiseKind::Gaussian if train => gaussian(h, self.rates[k]),
            _ => h.shallow_clone(),
        }
    }

    /// The weight of the layer after hidden layer `k` as it is used while training: with
    /// `dropconnect` a fresh mask, else the weight itself.
    pub fn weight(&self, w: &Tensor, k: usize, train: bool) -> Tensor {
        match self.kind {
            NoiseKind::Dropconnect if train => dropout_layer(w, self.rates[k]),
            _ => w.shallow_clone(),
        }
    }

    /// One pass of the network with its training noise on, drawn from libtorch's generator.
    pub fn stochastic_logits(&self, layers: &Layers, x: &Tensor) -> Tensor {
        let mut h = self.input(&x.flatten(1, -1), true);
        for (k, (w, b)) in layers.iter().enumerate() {
            let w = if k == 0 {
                w.shallow_clone()
            } else {
                self.weight(w, k - 1, true)
            };
            h = h.linear(&w, Some(b));
            if k < 2 {
                h = self.activations(&h.relu(), k, true);
            }
        }
        h
    }

    /// The hidden layers' activations on `x`: for each, after the ReLU and as the next layer
    /// sees it (after the noise in `train` mode; the same tensor in eval mode). The noise is
    /// drawn from `rng` on the host, never from libtorch's generator, so looking does not
    /// change what training draws next.
    pub fn probe(
        &self,
        layers: &Layers,
        x: &Tensor,
        train: bool,
        rng: &mut Rng,
    ) -> [(Tensor, Tensor); 2] {
        let device = x.device();
        let host_mask = |shape: &[i64], p: f64, rng: &mut Rng| {
            let (rows, cols) = (
                shape[0] as usize,
                shape[1..].iter().product::<i64>() as usize,
            );
            let scale = if p >= 1.0 { 0.0 } else { 1.0 / (1.0 - p) };
            Tensor::from_slice(&keep_mask(rows, cols, p, rng))
                .view(shape)
                .to_device(device)
                * scale
        };
        let host_normal = |shape: &[i64], rng: &mut Rng| {
            let n: i64 = shape.iter().product();
            Tensor::from_slice(&normals(n as usize, rng))
                .view(shape)
                .to_device(device)
        };
        let mut h = x.flatten(1, -1);
        if train && self.input_sigma > 0.0 {
            h = &h + host_normal(&h.size(), rng) * self.input_sigma;
        }
        let mut out = Vec::with_capacity(2);
        for (k, (w, b)) in layers.iter().enumerate() {
            let w = match self.kind {
                NoiseKind::Dropconnect if train && k > 0 => {
                    w * host_mask(&w.size(), self.rates[k - 1], rng)
                }
                _ => w.shallow_clone(),
            };
            let z = h.linear(&w, Some(b));
            if k == 2 {
                break;
            }
            let relu = z.relu();
            let p = self.rates[k];
            let seen = match self.kind {
                NoiseKind::Bernoulli if train => &relu * host_mask(&relu.size(), p, rng),
                NoiseKind::Gaussian if train && p > 0.0 => {
                    &relu * (host_normal(&relu.size(), rng) * (p / (1.0 - p)).sqrt() + 1.0)
                }
                _ => relu.shallow_clone(),
            };
            h = seen.shallow_clone();
            out.push((relu, seen));
        }
        let second = out.pop().expect("two hidden layers");
        let first = out.pop().expect("two hidden layers");
        [first, second]
    }

    /// Test accuracy with the noise left on (Monte-Carlo dropout): of a single stochastic pass,
    /// and of the average of `k` passes' class probabilities. Draws from libtorch's generator.
    pub fn mc_accuracy(&self, layers: &Layers, x: &Tensor, y: &Tensor, k: usize) -> (f64, f64) {
        let _guard = tch::no_grad_guard();
        let (mut single, mut averaged) = (0i64, 0i64);
        let n = x.size()[0];
        for start in (0..n).step_by(2000) {
            let len = 2000.min(n - start);
            let (x, y) = (x.narrow(0, start, len), y.narrow(0, start, len));
            let mut probabilities = Tensor::zeros([len, 10], (Kind::Float, x.device()));
            for pass in 0..k {
                let logits = self.stochastic_logits(layers, &x);
                if pass == 0 {
                    single += correct(&logits, &y);
                }
                probabilities += logits.softmax(1, Kind::Float);
            }
            averaged += correct(&probabilities, &y);
        }
        (single as f64 / n as f64, averaged as f64 / n as f64)
    }
}

fn correct(scores: &Tensor, y: &Tensor) -> i64 {
    scores
        .argmax(1, false)
        .eq_tensor(y)
        .sum(Kind::Int64)
        .int64_value(&[])
}

/// `n` draws of N(0, 1) from `rng` (Box–Muller).
fn normals(n: usize, rng: &mut Rng) -> Vec<f32> {
    let mut out = Vec::with_capacity(n + 1);
    let uniform = |rng: &mut Rng| ((rng.next_u64() >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
    while out.len() < n {
        let (u, v) = (uniform(rng), uniform(rng));
        let r = (-2.0 * u.ln()).sqrt();
        let t = 2.0 * std::f64::consts::PI * v;
        out.push((r * t.cos()) as f32);
        out.push((r * t.sin()) as f32);
    }
    out.truncate(n);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_normals_are_standard() {
        let v = normals(200_001, &mut Rng::new(3));
        let n = v.len() as f64;
        let mean = v.iter().map(|&x| x as f64).sum::<f64>() / n;
        let var = v.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / n;
        assert!(
            mean.abs() < 0.01 && (var - 1.0).abs() < 0.01,
            "{mean} {var}"
        );
    }

    #[test]
    fn gaussian_noise_has_dropouts_mean_and_variance() {
        tch::manual_seed(0);
        let h = Tensor::ones([1_000_000], (Kind::Float, tch::Device::Cpu));
        for p in [0.2, 0.5] {
            let g = gaussian(&h, p);
            let d = dropout_layer(&h, p);
            for (what, t) in [("gaussian", &g), ("dropout", &d)] {
                let (mean, var) = (
                    t.mean(None).double_value(&[]),
                    t.var(true).double_value(&[]),
                );
                assert!((mean - 1.0).abs() < 0.005, "{what} p={p}: mean {mean}");
                let expected = p / (1.0 - p);
                assert!(
                    (var - expected).abs() < 0.01 * (1.0 + expected),
                    "{what} p={p}: var {var}"
                );
            }
        }
    }
}
