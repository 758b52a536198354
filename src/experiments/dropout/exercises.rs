//! §4.6's exercises, each the book's code with one piece swapped:
//!
//! - the **model**: the book's two networks with another noise where they apply dropout —
//!   Gaussian noise with dropout's mean and variance, DropConnect on the next layer's weights,
//!   N(0, σ²) added to the inputs ([`Perturbation`], `noise.rs`);
//! - the **optimizer**: weight decay λ on the weights and not the biases, beside dropout (the
//!   decay group of SGD for the concise version, λ·Σ‖W‖²/2 added to the loss from scratch, as
//!   §4.5 does);
//! - the **evaluation** (Monte-Carlo dropout, activation probes): in `noise.rs`, called by the
//!   command after each epoch or after training.
use super::book::{self, Hyper, NUM_INPUTS};
use super::kernels::Rng;
use super::noise::{Layers, Perturbation};
use super::{Config, Setting};
use crate::d2l::{self, Animator, EpochMetrics, Split, Updater};
use crate::data::fashion_mnist::FashionMnist;
use crate::nn::decay;
use serde::Serialize;
use tch::nn::{self, Module, ModuleT};
use tch::Tensor;

/// The book's scratch `Net` with `noise` where it has `dropout_layer`.
#[derive(Debug)]
pub struct NoisyNet {
    lin1: nn::Linear,
    lin2: nn::Linear,
    lin3: nn::Linear,
    noise: Perturbation,
}

impl NoisyNet {
    pub fn new(vs: &nn::Path, noise: Perturbation) -> NoisyNet {
        let [lin1, lin2, lin3] = book::linear_layers(vs, book::SCRATCH_NAMES);
        NoisyNet {
            lin1,
            lin2,
            lin3,
            noise,
        }
    }
}

/// The forward pass of either network with `noise`: on the input, on each hidden layer's
/// activations (`libtorch_dropout`: the concise model's own dropout layers for `bernoulli`),
/// and on the weights after each hidden layer.
fn noisy_forward(
    [lin1, lin2, lin3]: [&nn::Linear; 3],
    noise: &Perturbation,
    x: &Tensor,
    train: bool,
    libtorch_dropout: bool,
) -> Tensor {
    let hidden = |h: Tensor, k: usize| {
        if libtorch_dropout && noise.kind == super::noise::NoiseKind::Bernoulli {
            h.dropout(noise.rates[k], train)
        } else {
            noise.activations(&h, k, train)
        }
    };
    let x = noise.input(x, train);
    let h1 = hidden(lin1.forward(&x).relu(), 0);
    let w2 = noise.weight(&lin2.ws, 0, train);
    let h2 = hidden(h1.linear(&w2, lin2.bs.as_ref()).relu(), 1);
    let w3 = noise.weight(&lin3.ws, 1, train);
    h2.linear(&w3, lin3.bs.as_ref())
}

impl ModuleT for NoisyNet {
    fn forward_t(&self, x: &Tensor, train: bool) -> Tensor {
        let layers = [&self.lin1, &self.lin2, &self.lin3];
        noisy_forward(
            layers,
            &self.noise,
            &x.reshape([-1, NUM_INPUTS]),
            train,
            false,
        )
    }
}

/// The book's concise model with `noise` where it has its dropout layers.
#[derive(Debug)]
pub struct NoisyConciseNet {
    layers: [nn::Linear; 3],
    noise: Perturbation,
}

impl NoisyConciseNet {
    pub fn new(vs: &nn::Path, noise: Perturbation) -> NoisyConciseNet {
        NoisyConciseNet {
            layers: book::concise_layers(vs),
            noise,
        }
    }
}

impl ModuleT for NoisyConciseNet {
    fn forward_t(&self, x: &Tensor, train: bool) -> Tensor {
        let layers = self.layers.each_ref();
        noisy_forward(layers, &self.noise, &x.flatten(1, -1), train, true)
    }
}

/// The book's training with weight decay λ on the weights of `vs`, never the biases (see
/// [`sgd_with_decay`]).
pub fn train_with_decay(
    net: &dyn ModuleT,
    vs: &nn::VarStore,
    concise: bool,
    wd: f64,
    hp: &Hyper,
    (train, test): (&Split, &Split),
    animator: Animator<EpochMetrics>,
) {
    let mut trainer = sgd_with_decay(vs, concise, wd, hp.lr);
    d2l::train_ch3(
        net,
        (train, test),
        hp.batch_size,
        book::loss,
        hp.num_epochs,
        trainer.as_mut(),
        animator,
    );
}

/// The book's `torch.optim.SGD` with weight decay λ on the weights (variables of two or more
/// dimensions) of `vs`, never the biases: concisely through SGD's decay group; from scratch as
/// λ·Σ‖W‖²/2 added to the mean loss, as §4.5 does.
pub fn sgd_with_decay(vs: &nn::VarStore, concise: bool, wd: f64, lr: f64) -> Box<dyn Updater> {
    decay::regroup(vs);
    let optimizer_decay = if concise { wd } else { 0.0 };
    let trainer =
        decay::optimizer(nn::Sgd::default(), vs, lr, optimizer_decay).expect("SGD over a VarStore");
    if concise {
        Box::new(trainer)
    } else {
        Box::new(Penalized {
            trainer,
            lambda: wd,
            weights: decay::decaying_variables(vs),
        })
    }
}

/// SGD on the mean loss plus λ·Σ‖W‖²/2.
struct Penalized {
    trainer: nn::Optimizer,
    lambda: f64,
    weights: Vec<Tensor>,
}

impl Updater for Penalized {
    fn update(&mut self, losses: &Tensor) {
        let l2 = self
            .weights
            .iter()
            .map(|w| w.pow_tensor_scalar(2).sum(None) / 2)
            .fold(
                Tensor::zeros([], (tch::Kind::Float, losses.device())),
                |a, b| a + b,
            );
        self.trainer.zero_grad();
        (losses.mean(None) + l2 * self.lambda).backward();
        self.trainer.step();
    }
}

/// One line of `<run>-activations.csv`: a hidden layer's activations on the probe batch after
/// an epoch.
#[derive(Debug, Clone, Default, Serialize, serde::Deserialize)]
pub struct ActivationRow {
    pub epoch: usize,
    /// `hidden1` or `hidden2`.
    pub layer: String,
    /// `relu` (after the nonlinearity) or `noise` (as the next layer sees it).
    pub stage: String,
    /// `train` (noise on) or `eval` (noise off).
    pub mode: String,
    pub mean: f64,
    pub var: f64,
}

/// Rows of the probe batch (the first of the test set) for `--track-activations`.
pub const PROBE_ROWS: i64 = 1000;

/// The activation statistics after `epoch`, train and eval mode (the train-mode noise drawn
/// on the host, so probing never moves what training draws).
pub fn probe(
    cfg: &Config,
    setting: Setting,
    layers: &Layers,
    data: &FashionMnist,
    epoch: usize,
) -> Vec<ActivationRow> {
    let _guard = tch::no_grad_guard();
    let x = data.test.x.narrow(0, 0, PROBE_ROWS.min(data.test.len()));
    let noise = cfg.perturbation(setting);
    let mut rows = Vec::new();
    for (mode, train) in [("train", true), ("eval", false)] {
        let mut rng = Rng::new(epoch as u64);
        let hidden = noise.probe(layers, &x, train, &mut rng);
        for (layer, (relu, seen)) in ["hidden1", "hidden2"].into_iter().zip(hidden) {
            for (stage, t) in [("relu", relu), ("noise", seen)] {
                let t = t.to_kind(tch::Kind::Double);
                rows.push(ActivationRow {
                    epoch,
                    layer: layer.into(),
                    stage: stage.into(),
                    mode: mode.into(),
                    mean: t.mean(None).double_value(&[]),
                    var: t.var(false).double_value(&[]),
                });
            }
        }
    }
    rows
}
