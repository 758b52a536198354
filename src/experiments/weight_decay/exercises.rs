//! §4.5's exercises, each the book's training function with one piece swapped:
//!
//! - the **penalty** (exercise 3): λ‖w‖₁ where the book has λ‖w‖²/2, differentiated by
//!   autograd to its subgradient λ·sign(w) (`--penalty l1`), or taken as a proximal step after
//!   each SGD step, w ← sign(w)·max(|w| − t, 0), which sets small weights exactly to 0
//!   (`--penalty l1-prox`);
//! - the **optimizer** of the concise version: Adam (λ·w added to the gradient, then
//!   normalised) or AdamW (w multiplied by 1 − lr·λ beside Adam's step), through the same
//!   decay groups (`--optimizer adam|adamw`);
//! - a **validation** split to choose λ on (exercise 2, `--n-val`), drawn after training.
use super::book::{self, Data, Hyper};
use crate::d2l::{self, Animator, Split};
use crate::nn::decay;
use crate::nn::optimizer_state::{self, State};
use anyhow::Result;
use serde::Serialize;
use tch::nn::{self, Module};
use tch::{Device, Kind, Reduction, Tensor};

/// `--penalty`: what is added to every example's loss (scratch) or decays the weights (concise).
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Penalty {
    /// λ‖w‖²/2: weight decay, the book's
    L2,
    /// λ‖w‖₁, by its subgradient λ·sign(w)
    L1,
    /// λ‖w‖₁ by a proximal step: after each SGD step on the data loss, w ← sign(w)·max(|w| − t, 0) with t what the subgradient step would subtract
    #[value(name = "l1-prox")]
    #[serde(rename = "l1-prox")]
    L1Prox,
}

impl Penalty {
    pub fn name(self) -> &'static str {
        match self {
            Penalty::L2 => "l2",
            Penalty::L1 => "l1",
            Penalty::L1Prox => "l1-prox",
        }
    }
}

/// `--optimizer`: what updates the concise version (the scratch version is the book's own SGD).
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Optimizer {
    /// The book's: λ·w added to the gradient
    Sgd,
    /// λ·w added to the gradient, then Adam's normalisation (coupled decay)
    Adam,
    /// w multiplied by (1 − lr·λ) beside Adam's step (decoupled decay)
    Adamw,
}

impl Optimizer {
    pub fn name(self) -> &'static str {
        match self {
            Optimizer::Sgd => "sgd",
            Optimizer::Adam => "adam",
            Optimizer::Adamw => "adamw",
        }
    }

    /// This optimizer over `vs` (its variables regrouped: the weights decay by `wd`, the bias
    /// not), and the handle on its state (Adam's moments and step counts).
    pub fn build(self, vs: &nn::VarStore, lr: f64, wd: f64) -> Result<(nn::Optimizer, State)> {
        decay::regroup(vs);
        fn with_state(
            config: impl nn::OptimizerConfig,
            vs: &nn::VarStore,
            lr: f64,
            wd: f64,
        ) -> Result<(nn::Optimizer, State)> {
            let (config, state) = optimizer_state::saveable(config);
            Ok((decay::optimizer(config, vs, lr, wd)?, state))
        }
        match self {
            Optimizer::Sgd => with_state(nn::Sgd::default(), vs, lr, wd),
            Optimizer::Adam => with_state(nn::Adam::default(), vs, lr, wd),
            Optimizer::Adamw => with_state(nn::AdamW::default(), vs, lr, wd),
        }
    }
}

/// ‖w‖₁.
pub fn l1_penalty(w: &Tensor) -> Tensor {
    w.abs().sum(None)
}

/// The proximal step of t·‖w‖₁ on each of `weights`: w ← sign(w)·max(|w| − t, 0).
pub fn soft_threshold(weights: &[&Tensor], t: f64) {
    tch::no_grad(|| {
        for w in weights {
            let shrunk = w.sign() * (w.abs() - t).clamp_min(0.0);
            w.shallow_clone().copy_(&shrunk);
        }
    });
}

/// [`book::train`] with λ‖w‖₁ in place of λ‖w‖²/2: in every example's loss
/// (`Penalty::L1`), or as a proximal step after each SGD step on the data loss alone, by the
/// threshold the subgradient step would take, lr·λ·B/batch_size for a batch of B
/// (`Penalty::L1Prox`).
pub fn train_scratch_l1(
    penalty: Penalty,
    lambd: f64,
    (w, b): (&Tensor, &Tensor),
    hp: &Hyper,
    data: &Data,
    animator: Animator<[Tensor; 2]>,
) {
    let net = |x: &Tensor| d2l::linreg(x, w, b);
    let loss = d2l::squared_loss;
    for epoch in 1..=hp.num_epochs {
        for (x, y) in d2l::load_array(&data.train, hp.batch_size) {
            let l = match penalty {
                Penalty::L1Prox => loss(&net(&x), &y),
                _ => loss(&net(&x), &y) + l1_penalty(w) * lambd,
            };
            l.sum(None).backward();
            d2l::sgd(&[w, b], hp.lr, hp.batch_size);
            if penalty == Penalty::L1Prox {
                let t = hp.lr * lambd / hp.batch_size as f64 * l.size()[0] as f64;
                soft_threshold(&[w], t);
            }
        }
        let losses = [
            d2l::evaluate_loss(net, &data.train, loss),
            d2l::evaluate_loss(net, &data.test, loss),
        ];
        if animator.add(epoch, losses).is_break() {
            break;
        }
    }
}

/// [`book::train_concise`] with another optimizer and another penalty: L2 through the
/// optimizer's decay group (as the book; `trainer` from [`Optimizer::build`] with λ), L1 as
/// λ‖w‖₁ of the decay group added to the mean loss (libtorch's optimizers have no L1; the
/// trainer built with 0), `l1-prox` as soft-thresholding of the decay group by lr·λ after
/// each step (likewise).
#[allow(clippy::too_many_arguments)]
pub fn train_concise_with(
    penalty: Penalty,
    lambd: f64,
    net: &nn::Linear,
    vs: &nn::VarStore,
    trainer: &mut nn::Optimizer,
    hp: &Hyper,
    data: &Data,
    animator: Animator<[Tensor; 2]>,
) {
    let mse = |y_hat: &Tensor, y: &Tensor| y_hat.mse_loss(y, Reduction::None);
    let decaying = decay::decaying_variables(vs);
    for epoch in 1..=hp.num_epochs {
        for (x, y) in d2l::load_array(&data.train, hp.batch_size) {
            trainer.zero_grad();
            let data_loss = mse(&net.forward(&x), &y);
            let l = match penalty {
                Penalty::L1 => {
                    let l1 = decaying
                        .iter()
                        .map(l1_penalty)
                        .fold(Tensor::zeros([], (Kind::Float, y.device())), |a, b| a + b);
                    data_loss + l1 * lambd
                }
                _ => data_loss,
            };
            l.mean(None).backward();
            trainer.step();
            if penalty == Penalty::L1Prox {
                soft_threshold(&decaying.iter().collect::<Vec<_>>(), hp.lr * lambd);
            }
        }
        let losses = [
            d2l::evaluate_loss(|x| net.forward(x), &data.train, mse),
            d2l::evaluate_loss(|x| net.forward(x), &data.test, mse),
        ];
        if animator.add(epoch, losses).is_break() {
            break;
        }
    }
}

/// What the validation split's generator is seeded with, beside the run's seed.
pub const VALIDATION_SEED: i64 = 0x7a11d;

/// `n` more examples from the same distribution, drawn after training from a generator seeded
/// with the run's seed and [`VALIDATION_SEED`]: the same split for every run of a seed, and no
/// draw of the training (data, initialisation, batches) moves.
pub fn validation_split(n: usize, num_inputs: usize, seed: i64, device: Device) -> Split {
    tch::manual_seed(seed.wrapping_mul(31).wrapping_add(VALIDATION_SEED));
    let (true_w, true_b) = book::true_params(num_inputs, device);
    d2l::synthetic_data(&true_w, true_b, n)
}

/// The mean loss of the trained (flattened) weight and bias over `val`, in f64: ½·squared
/// error for scratch (`half`), squared error for concise.
pub fn validation_loss(weight: &Tensor, bias: &Tensor, val: &Split, half: bool) -> f64 {
    let w = weight.to_kind(Kind::Double).unsqueeze(1);
    let predicted = val.x.to_kind(Kind::Double).matmul(&w) + bias.to_kind(Kind::Double);
    let se = (predicted - val.y.to_kind(Kind::Double)).square();
    se.mean(None).double_value(&[]) * if half { 0.5 } else { 1.0 }
}
