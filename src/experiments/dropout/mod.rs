//! Book §4.6, dropout: an MLP 784-256-256-10 on Fashion-MNIST with dropout 0.2 after the
//! first hidden layer and 0.5 after the second, active only while training.
//!
//! From scratch, `dropout_layer` builds the mask itself and the network applies it only in
//! training mode. Concisely, a sequential model holds dropout layers that libtorch switches
//! off in evaluation mode.
pub mod fused;
pub mod kernels;
pub mod noise;

use crate::cuda::GraphMode;
use crate::data::fashion_mnist::{self, FashionMnist, NUM_CLASSES, NUM_INPUTS};
use crate::data::{batches, Split};
use crate::experiment::{self, fmt_num, Context, EpochRow, Experiment, Run, SettingStats, Stat};
use crate::nn::decay;
use crate::nn::{Dropout, Linear};
use crate::options::{
    defaults, mc_samples, non_negative_f64, positive_f64, positive_usize, probability, Engine,
    Version, VersionChoice,
};
use crate::plot::Figure;
use crate::progress;
use crate::record::{self, Cell};
use crate::stop::{self, Status};
use crate::sweep;
use crate::train::{self, Learner, Sums};
use anyhow::Result;
use fused::FusedMlp;
use noise::{Layers, NoiseKind, Perturbation};
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::time::Instant;
use tch::nn::{self as tnn, Module, ModuleT};
use tch::{Reduction, Tensor};

pub const NUM_HIDDENS1: i64 = 256;
pub const NUM_HIDDENS2: i64 = 256;

/// Hyper-parameters of §4.6, the book's values as defaults.
#[derive(clap::Args, Debug, Clone, Serialize, serde::Deserialize)]
pub struct Config {
    /// Which version of the book's code to run
    #[arg(long = "impl", value_enum, default_value_t = VersionChoice::Both)]
    #[serde(rename = "implementation")]
    pub versions: VersionChoice,
    #[arg(long, allow_negative_numbers = true, default_value_t = 10, value_parser = positive_usize)]
    pub epochs: usize,
    #[arg(long, allow_negative_numbers = true, default_value_t = 0.5, value_parser = positive_f64)]
    pub lr: f64,
    #[arg(long, allow_negative_numbers = true, default_value_t = 256, value_parser = positive_usize)]
    pub batch_size: usize,
    /// Dropout probability after the first hidden layer, in [0, 1]; several (comma-separated) train every combination with --dropout2
    #[arg(long, value_delimiter = ',', allow_negative_numbers = true, default_value = "0.2", value_parser = probability)]
    pub dropout1: Vec<f64>,
    /// Dropout probability after the second hidden layer, in [0, 1]; several allowed, as for --dropout1
    #[arg(long, value_delimiter = ',', allow_negative_numbers = true, default_value = "0.5", value_parser = probability)]
    pub dropout2: Vec<f64>,
    /// autograd: the book's code op by op, PyTorch's numbers on the CPU; fused: hand-written backward, faster
    #[arg(long, value_enum, default_value_t = Engine::Autograd)]
    pub engine: Engine,
    /// Replay each training epoch of the fused engine as one CUDA graph: auto (on with --engine fused on CUDA), on, off
    #[arg(long, value_enum, default_value_t = GraphMode::Auto)]
    pub cuda_graph: GraphMode,
    /// Directory holding the four Fashion-MNIST files (.gz or uncompressed)
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Never download the data set; fail if it is not found locally
    #[arg(long)]
    pub offline: bool,
    /// Weight decay λ on the weights (never the biases); several (comma-separated) train each
    #[arg(long, value_delimiter = ',', allow_negative_numbers = true, default_value = "0", value_parser = non_negative_f64)]
    pub wd: Vec<f64>,
    /// Training noise at the hidden layers' rates: bernoulli (dropout, the book's), gaussian (N(1, p/(1−p))), dropconnect (on the following layer's weights); several train each
    #[arg(long, value_enum, value_delimiter = ',', default_value = "bernoulli")]
    pub noise: Vec<NoiseKind>,
    /// Standard deviation of N(0, σ²) noise added to the inputs while training (Bishop's noise)
    #[arg(long, allow_negative_numbers = true, default_value_t = 0.0, value_parser = non_negative_f64)]
    pub input_noise: f64,
    /// After training, also the test accuracy with the noise left on: of one pass, and of the average of K passes' probabilities (Monte-Carlo dropout)
    #[arg(long, allow_negative_numbers = true, value_parser = mc_samples)]
    pub mc_samples: Option<usize>,
    /// Every epoch, the mean and variance of each hidden layer's activations on a fixed probe
    /// batch of the test set, in train and eval mode (`<run>-activations.csv`)
    #[arg(
        long,
        help = "Every epoch, the mean and variance of each hidden layer's activations on a fixed probe batch of the test set, in train and eval mode (<run>-activations.csv)"
    )]
    pub track_activations: bool,
    /// Also store each trained model as `<impl>.safetensors` (PyTorch's parameter names)
    #[arg(
        long,
        help = "Also store each trained model as <impl>.safetensors (PyTorch's parameter names)"
    )]
    pub save_weights: bool,
}

impl Default for Config {
    /// The book's hyper-parameters (the flags' defaults).
    fn default() -> Self {
        defaults()
    }
}

/// The two dropout probabilities of one model (after the first and the second hidden layer).
pub type Rates = [f64; 2];

/// One run's setting: the noise kind, its two rates, and the weight decay.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Setting {
    pub noise: NoiseKind,
    pub rates: Rates,
    pub wd: f64,
}

impl Setting {
    /// The book's: dropout at `rates`, no weight decay.
    pub fn book(rates: Rates) -> Setting {
        Setting {
            noise: NoiseKind::Bernoulli,
            rates,
            wd: 0.0,
        }
    }

    /// ` gaussian, λ=0.0001`: what differs from the book's, for labels.
    fn variant(self) -> String {
        let mut v = String::new();
        if self.noise != NoiseKind::Bernoulli {
            v += &format!(" {}", self.noise.name());
        }
        if self.wd > 0.0 {
            v += &format!(" λ={}", fmt_num(self.wd));
        }
        v
    }
}

impl Config {
    /// Every combination of `--dropout1` × `--dropout2`.
    pub fn grid(&self) -> Vec<Rates> {
        self.dropout1
            .iter()
            .flat_map(|&p1| self.dropout2.iter().map(move |&p2| [p1, p2]))
            .collect()
    }

    /// Every setting: noise by noise, λ by λ, every pair of rates.
    pub fn settings(&self) -> Vec<Setting> {
        let mut settings = Vec::new();
        for &noise in &self.noise {
            for &wd in &self.wd {
                for rates in self.grid() {
                    settings.push(Setting { noise, rates, wd });
                }
            }
        }
        settings
    }

    /// The noise of a model at `setting`.
    pub fn perturbation(&self, setting: Setting) -> Perturbation {
        Perturbation {
            kind: setting.noise,
            rates: setting.rates,
            input_sigma: self.input_noise,
        }
    }

    /// The book's single setting, or the first of the grid.
    pub fn rates(&self) -> Rates {
        self.grid()[0]
    }

    /// Whether the fused engine replays its epochs as CUDA graphs on `device`; refuses
    /// `--cuda-graph on` where it cannot be honoured, before any work starts.
    pub fn cuda_graphs(&self, device: tch::Device) -> Result<bool> {
        self.cuda_graph
            .resolve(device, self.engine == Engine::Fused)
    }
}

// ---------------------------------------------------------------- §4.6.4 from scratch

/// The book's `Net`: three linear layers, ReLU, and `dropout_layer` after each hidden layer
/// when (and only when) training — or, for the exercises, another noise ([`Perturbation`]).
#[derive(Debug)]
pub struct Net {
    lin1: Linear,
    lin2: Linear,
    lin3: Linear,
    noise: Perturbation,
}

/// The book's `Net.__init__`: `lin1`, `lin2`, `lin3` with PyTorch's default initialisation.
pub fn scratch_layers(vs: &tnn::Path) -> [Linear; 3] {
    [
        Linear::new(&(vs / "lin1"), NUM_INPUTS, NUM_HIDDENS1),
        Linear::new(&(vs / "lin2"), NUM_HIDDENS1, NUM_HIDDENS2),
        Linear::new(&(vs / "lin3"), NUM_HIDDENS2, NUM_CLASSES),
    ]
}

impl Net {
    /// The book's model: dropout `dropout1` and `dropout2`.
    pub fn new(vs: &tnn::Path, dropout1: f64, dropout2: f64) -> Net {
        Net::with_noise(vs, Perturbation::dropout([dropout1, dropout2]))
    }

    pub fn with_noise(vs: &tnn::Path, noise: Perturbation) -> Net {
        let [lin1, lin2, lin3] = scratch_layers(vs);
        Net {
            lin1,
            lin2,
            lin3,
            noise,
        }
    }
}

impl ModuleT for Net {
    fn forward_t(&self, x: &Tensor, train: bool) -> Tensor {
        let x = self.noise.input(&x.reshape([-1, NUM_INPUTS]), train);
        let h1 = self.lin1.forward(&x).relu();
        let h1 = self.noise.activations(&h1, 0, train);
        let w2 = self.noise.weight(&self.lin2.weight, 0, train);
        let h2 = h1.linear(&w2, Some(&self.lin2.bias)).relu();
        let h2 = self.noise.activations(&h2, 1, train);
        let w3 = self.noise.weight(&self.lin3.weight, 1, train);
        h2.linear(&w3, Some(&self.lin3.bias))
    }
}

// ---------------------------------------------------------------- §4.6.5 concise

/// The linear layers of the concise model, named as PyTorch's `nn.Sequential` names them
/// (`1`, `4`, `7`), with the weights re-drawn from N(0, 0.01) (the book's `init_weights`) and
/// the biases left at PyTorch's default.
pub fn concise_layers(vs: &tnn::Path) -> [Linear; 3] {
    let layers = [
        Linear::new(&(vs / "1"), NUM_INPUTS, NUM_HIDDENS1),
        Linear::new(&(vs / "4"), NUM_HIDDENS1, NUM_HIDDENS2),
        Linear::new(&(vs / "7"), NUM_HIDDENS2, NUM_CLASSES),
    ];
    tch::no_grad(|| {
        for layer in &layers {
            let _ = layer.weight.shallow_clone().normal_(0.0, 0.01);
        }
    });
    layers
}

/// `nn.Sequential(Flatten, Linear, ReLU, Dropout, Linear, ReLU, Dropout, Linear)` over
/// [`concise_layers`], with libtorch's dropout (off in evaluation mode) — or another noise.
pub struct ConciseNet {
    layers: [Linear; 3],
    noise: Perturbation,
}

/// The book's concise model with dropout `dropout1` and `dropout2`.
pub fn concise_net(vs: &tnn::Path, dropout1: f64, dropout2: f64) -> ConciseNet {
    concise_net_with(vs, Perturbation::dropout([dropout1, dropout2]))
}

pub fn concise_net_with(vs: &tnn::Path, noise: Perturbation) -> ConciseNet {
    ConciseNet {
        layers: concise_layers(vs),
        noise,
    }
}

impl std::fmt::Debug for ConciseNet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConciseNet")
            .field("noise", &self.noise)
            .finish()
    }
}

impl ModuleT for ConciseNet {
    fn forward_t(&self, x: &Tensor, train: bool) -> Tensor {
        let [lin1, lin2, lin3] = &self.layers;
        let noise = &self.noise;
        let hidden = |h: Tensor, k: usize| match noise.kind {
            NoiseKind::Bernoulli => Dropout { p: noise.rates[k] }.forward_t(&h, train),
            _ => noise.activations(&h, k, train),
        };
        let x = noise.input(&x.flatten(1, -1), train);
        let h1 = hidden(lin1.forward(&x).relu(), 0);
        let w2 = noise.weight(&lin2.weight, 0, train);
        let h2 = hidden(h1.linear(&w2, Some(&lin2.bias)).relu(), 1);
        let w3 = noise.weight(&lin3.weight, 1, train);
        h2.linear(&w3, Some(&lin3.bias))
    }
}

/// The three layers' (weight, bias) of a model of `version` in `vs`.
pub fn layers(vs: &tnn::VarStore, version: Version) -> Layers {
    let names = match version {
        Version::Scratch => ["lin1", "lin2", "lin3"],
        Version::Concise => ["1", "4", "7"],
    };
    let v = vs.variables();
    names.map(|n| {
        (
            v[&format!("{n}.weight")].shallow_clone(),
            v[&format!("{n}.bias")].shallow_clone(),
        )
    })
}

// ---------------------------------------------------------------- training (train_ch3)

/// One row of `<impl>.csv`.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Epoch {
    pub epoch: usize,
    /// Running mean of the training loss over the epoch, dropout on.
    pub train_loss: f64,
    /// Running training accuracy over the epoch, dropout on.
    pub train_acc: f64,
    /// Test accuracy after the epoch, in evaluation mode (dropout off).
    pub test_acc: f64,
    /// Wall time of this epoch (training and test pass).
    pub seconds: f64,
    /// Seconds since the run started, at the end of this epoch.
    pub elapsed_s: f64,
}

/// A model of either version with tch's SGD optimizer, trained op by op with autograd.
pub struct AutogradLearner {
    net: Box<dyn ModuleT>,
    trainer: tnn::Optimizer,
    batch_size: usize,
    /// Scratch weight decay: λ and the weights of the L2 term λ·Σ‖W‖²/2 added to the loss.
    penalty: Option<(f64, Vec<Tensor>)>,
}

/// The book's loss: cross-entropy per example (`reduction='none'`).
pub fn loss(y_hat: &Tensor, y: &Tensor) -> Tensor {
    y_hat.cross_entropy_loss::<Tensor>(y, None, Reduction::None, -100, 0.0)
}

/// Seeds the generator, then builds the model of `version` at `setting` and its trainer for
/// the configured engine. Returns the variables too (for `--save-weights`).
pub fn learner(
    cfg: &Config,
    version: Version,
    setting: Setting,
    ctx: &Context,
) -> (tnn::VarStore, Box<dyn Learner>) {
    tch::manual_seed(ctx.seed);
    let vs = tnn::VarStore::new(ctx.device);
    let noise = cfg.perturbation(setting);
    let learner: Box<dyn Learner> = match cfg.engine {
        Engine::Autograd => {
            let net: Box<dyn ModuleT> = match version {
                Version::Scratch => Box::new(Net::with_noise(&vs.root(), noise)),
                Version::Concise => Box::new(concise_net_with(&vs.root(), noise)),
            };
            // Concise: the optimizer decays the weights' group. Scratch: the L2 term on its
            // weights, added to the loss (book §4.5's way).
            let (optimizer_decay, penalty) = match version {
                Version::Concise => (setting.wd, None),
                Version::Scratch if setting.wd > 0.0 => {
                    (0.0, Some((setting.wd, decay::decaying_variables(&vs))))
                }
                Version::Scratch => (0.0, None),
            };
            let trainer = decay::optimizer(tnn::Sgd::default(), &vs, cfg.lr, optimizer_decay)
                .expect("SGD over a fresh VarStore");
            Box::new(AutogradLearner {
                net,
                trainer,
                batch_size: cfg.batch_size,
                penalty,
            })
        }
        Engine::Fused => {
            let layers = match version {
                Version::Scratch => scratch_layers(&vs.root()),
                Version::Concise => concise_layers(&vs.root()),
            };
            // Refused earlier (`Config::cuda_graphs` in `run`) where `on` is impossible.
            let graphs = cfg.cuda_graphs(ctx.device).unwrap_or(false);
            Box::new(
                FusedMlp::new(&layers, setting.rates, cfg.lr, cfg.batch_size)
                    .with_weight_decay(setting.wd)
                    .with_cuda_graph(graphs),
            )
        }
    };
    (vs, learner)
}

/// SGD on the mean loss plus λ·Σ‖W‖²/2 (the scratch version's weight decay).
struct Penalized<'a> {
    trainer: &'a mut tnn::Optimizer,
    lambda: f64,
    weights: &'a [Tensor],
}

impl train::Updater for Penalized<'_> {
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

impl Learner for AutogradLearner {
    /// One pass over shuffled training batches with dropout on; the sums (of the data loss,
    /// without a penalty) stay on the device.
    fn train_epoch(&mut self, train: &Split) -> Sums {
        let mut sums = Sums::new(train.x.device());
        let net = &self.net;
        let train_mode = |x: &Tensor| net.forward_t(x, true);
        let batches = batches::shuffled(train, self.batch_size);
        match &self.penalty {
            Some((lambda, weights)) => {
                let mut updater = Penalized {
                    trainer: &mut self.trainer,
                    lambda: *lambda,
                    weights,
                };
                train::train_epoch(batches, &train_mode, &loss, &mut updater, Some(&mut sums))
            }
            None => train::train_epoch(
                batches,
                &train_mode,
                &loss,
                &mut self.trainer,
                Some(&mut sums),
            ),
        }
        sums
    }

    /// Correct predictions over a split with dropout off (an on-device scalar).
    fn count_correct(&self, split: &Split) -> Tensor {
        let eval_mode = |x: &Tensor| self.net.forward_t(x, false);
        train::count_correct(split, &eval_mode, self.batch_size)
    }
}

impl EpochRow for Epoch {
    /// Only the loss can be NaN or infinite (the accuracies are counts).
    fn finite(&self) -> bool {
        stop::finite(&[self.train_loss])
    }

    fn figures(&self) -> String {
        let loss = if self.train_loss.abs() < 1e4 {
            format!("{:.4}", self.train_loss)
        } else {
            format!("{:.3e}", self.train_loss)
        };
        format!(
            "train loss {loss}, train acc {:.4}, test acc {:.4}",
            self.train_acc, self.test_acc
        )
    }
}

/// One line of `<run>-activations.csv`: a hidden layer's activations on the probe batch after
/// an epoch.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ActivationRow {
    pub epoch: usize,
    /// `hidden1` or `hidden2`.
    pub layer: &'static str,
    /// `relu` (after the nonlinearity) or `noise` (as the next layer sees it).
    pub stage: &'static str,
    /// `train` (noise on) or `eval` (noise off).
    pub mode: &'static str,
    pub mean: f64,
    pub var: f64,
}

/// Rows of the probe batch (the first of the test set) for `--track-activations`.
pub const PROBE_ROWS: i64 = 1000;

/// The activation statistics after `epoch`, train and eval mode (the train-mode noise drawn
/// on the host, so probing never moves what training draws).
fn probe(
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
        let mut rng = kernels::Rng::new(epoch as u64);
        let hidden = noise.probe(layers, &x, train, &mut rng);
        for (layer, (relu, seen)) in ["hidden1", "hidden2"].into_iter().zip(hidden) {
            for (stage, t) in [("relu", relu), ("noise", seen)] {
                let t = t.to_kind(tch::Kind::Double);
                rows.push(ActivationRow {
                    epoch,
                    layer,
                    stage,
                    mode,
                    mean: t.mean(None).double_value(&[]),
                    var: t.var(false).double_value(&[]),
                });
            }
        }
    }
    rows
}

/// A trained model: its finished epochs, variables and end; the activation statistics
/// (`--track-activations`) and the Monte-Carlo test accuracies (`--mc-samples`).
pub struct Trained {
    pub curve: Vec<Epoch>,
    pub vs: tnn::VarStore,
    pub status: Status,
    pub activations: Vec<ActivationRow>,
    /// Test accuracy of one stochastic pass, and of the average of K passes.
    pub mc: Option<(f64, f64)>,
}

/// Trains a freshly seeded model like the book's `train_ch3`: per epoch the running train
/// loss and accuracy (dropout on), then the test accuracy (dropout off), read in one transfer.
/// Ends early when the loss becomes NaN or infinite (that epoch is not kept) or a stop is
/// requested (Ctrl-C).
pub fn train(
    cfg: &Config,
    version: Version,
    setting: Setting,
    data: &FashionMnist,
    ctx: &Context,
    progress: &progress::Epochs,
) -> Trained {
    let (vs, mut learner) = learner(cfg, version, setting, ctx);
    let params = layers(&vs, version);
    let mut activations = Vec::new();
    let begin = Instant::now();
    let (curve, status) = experiment::train_epochs(cfg.epochs, progress, |epoch| {
        let start = Instant::now();
        let sums = learner.train_epoch(&data.train);
        if stop::requested().is_some() {
            return None;
        }
        let test_correct = learner.count_correct(&data.test);
        let [loss_sum, correct, test_correct] =
            train::read(&[sums.loss(), sums.correct(), &test_correct]);
        if cfg.track_activations {
            activations.extend(probe(cfg, setting, &params, data, epoch));
        }
        Some(Epoch {
            epoch,
            train_loss: loss_sum / sums.count() as f64,
            train_acc: correct / sums.count() as f64,
            test_acc: test_correct / data.test.len() as f64,
            seconds: start.elapsed().as_secs_f64(),
            elapsed_s: begin.elapsed().as_secs_f64(),
        })
    });
    let mc = match (cfg.mc_samples, status) {
        (Some(k), Status::Ok) => {
            let noise = cfg.perturbation(setting);
            Some(noise.mc_accuracy(&params, &data.test.x, &data.test.y, k))
        }
        _ => None,
    };
    Trained {
        curve,
        vs,
        status,
        activations,
        mc,
    }
}

/// What a run is called in messages and progress lines: `dropout (0.2, 0.5), scratch`.
pub fn label(version: Version, setting: Setting) -> String {
    let [p1, p2] = setting.rates;
    format!(
        "dropout ({}, {}){}, {}",
        fmt_num(p1),
        fmt_num(p2),
        setting.variant(),
        version.name()
    )
}

/// The trained variables as safetensors, written to a temporary file and renamed into place.
pub fn save_weights(vs: &tnn::VarStore, path: &Path) -> Result<()> {
    let mut named: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
    named.sort_by(|a, b| a.0.cmp(&b.0));
    record::replace_atomically(path, "safetensors", |tmp| {
        Ok(Tensor::write_safetensors(&named, tmp)?)
    })
}

// ---------------------------------------------------------------- the experiment

/// §4.6 as a command: `dropout`, its runs one per version and setting (noise, rates, λ).
pub struct DropoutMlp;

/// What a run leaves besides its curve.
pub struct Model {
    /// The trained variables (for `--save-weights`).
    pub vs: tnn::VarStore,
    /// `--track-activations`.
    pub activations: Vec<ActivationRow>,
}

impl DropoutMlp {
    /// Settings that differ only in the pair of rates (same version, noise and λ), in order.
    fn same_but_rates(a: &SettingStats<Setting>, b: &SettingStats<Setting>) -> bool {
        a.version == b.version && a.setting.noise == b.setting.noise && a.setting.wd == b.setting.wd
    }

    /// A panel of one statistic against λ (a log axis, 0 drawn apart), one curve per
    /// version, noise and pair of rates.
    fn against_lambda(
        cfg: &Config,
        settings: &[SettingStats<Setting>],
        stat: &str,
        y_label: &str,
    ) -> (Figure, Vec<crate::plot::Series>) {
        let mut series = Vec::new();
        let mut seen: Vec<(Version, NoiseKind, Rates)> = Vec::new();
        for s in settings {
            let key = (s.version, s.setting.noise, s.setting.rates);
            if seen.contains(&key) {
                continue;
            }
            seen.push(key);
            let rows: Vec<&SettingStats<Setting>> = settings
                .iter()
                .filter(|o| (o.version, o.setting.noise, o.setting.rates) == key)
                .collect();
            let (points, errors) = sweep::at_settings(&rows, |s| s.wd, |s| s.stat(stat));
            let [p1, p2] = key.2;
            let mut name = format!("{} ({}, {})", key.0.name(), fmt_num(p1), fmt_num(p2));
            if cfg.noise.len() > 1 {
                name += &format!(" {}", key.1.name());
            }
            let color = series.len();
            series.push(
                crate::plot::Series::line(name, points, color)
                    .with_markers()
                    .with_errors(errors),
            );
        }
        let figure = Figure {
            x_label: "λ (weight decay)".into(),
            y_label: y_label.into(),
            x_log: true,
            ..Default::default()
        };
        (figure, series)
    }
}

impl Experiment for DropoutMlp {
    const NAME: &'static str = "dropout";
    const SETTING_COLUMNS: &'static [&'static str] = &["noise", "dropout1", "dropout2", "wd"];
    const SWEEP_TABLE: &'static [&'static str] = &[
        "impl",
        "noise",
        "p1",
        "p2",
        "λ",
        "status",
        "train acc",
        "test acc",
        "gap",
    ];
    const SWEPT_KEYS: &'static [&'static str] = &["dropout1", "dropout2", "wd", "noise"];
    type Config = Config;
    type Setting = Setting;
    /// Fashion-MNIST, on the device, loaded once for every run.
    type Data = FashionMnist;
    type Row = Epoch;
    type Model = Model;

    fn settings(cfg: &Config) -> Vec<Setting> {
        cfg.settings()
    }

    fn setting_cells(s: Setting) -> Vec<Cell> {
        vec![
            Cell::text(s.noise.name()),
            Cell::Float(s.rates[0]),
            Cell::Float(s.rates[1]),
            Cell::Float(s.wd),
        ]
    }

    fn finals(cfg: &Config) -> Vec<&'static str> {
        let mut finals = vec!["final_train_loss", "final_train_acc", "final_test_acc"];
        if cfg.mc_samples.is_some() {
            finals.extend(["test_acc_stochastic", "test_acc_mc"]);
        }
        finals
    }

    fn sweep_stats(cfg: &Config) -> Vec<(&'static str, Stat)> {
        let mut stats = vec![
            ("train_loss", Stat::Final(0)),
            ("train_acc", Stat::Final(1)),
            ("test_acc", Stat::Final(2)),
            ("gap", Stat::Gap),
        ];
        if cfg.mc_samples.is_some() {
            stats.extend([
                ("test_acc_stochastic", Stat::Final(3)),
                ("test_acc_mc", Stat::Final(4)),
            ]);
        }
        stats
    }

    fn versions(cfg: &Config) -> Vec<Version> {
        cfg.versions.versions()
    }

    /// Setting by setting, each version in turn.
    fn schedule(cfg: &Config) -> Vec<(Version, Vec<Setting>)> {
        cfg.settings()
            .into_iter()
            .flat_map(|s| {
                cfg.versions
                    .versions()
                    .into_iter()
                    .map(move |v| (v, vec![s]))
            })
            .collect()
    }

    /// Refuses what cannot run (`--cuda-graph on` where it cannot apply, a noise the fused
    /// engine lacks, Gaussian noise at a rate of 1), then loads Fashion-MNIST.
    fn prepare(cfg: &Config, ctx: &Context) -> Result<FashionMnist> {
        cfg.cuda_graphs(ctx.device)?;
        if cfg.engine == Engine::Fused
            && (cfg.noise.iter().any(|n| *n != NoiseKind::Bernoulli) || cfg.input_noise > 0.0)
        {
            anyhow::bail!(
                "--engine fused implements the book's dropout (--noise bernoulli) without \
                 --input-noise; use --engine autograd for --noise gaussian/dropconnect or \
                 --input-noise"
            );
        }
        if cfg.noise.contains(&NoiseKind::Gaussian)
            && cfg.dropout1.iter().chain(&cfg.dropout2).any(|&p| p >= 1.0)
        {
            anyhow::bail!(
                "--noise gaussian at a rate of 1 has infinite variance (p/(1−p)); choose \
                 --dropout1/--dropout2 below 1"
            );
        }
        let source = fashion_mnist::Source::new(cfg.data_dir.clone(), cfg.offline);
        let data = fashion_mnist::load(&source, ctx.device)?;
        if progress::mode() != progress::Mode::Quiet {
            eprintln!(
                "dropout: Fashion-MNIST from {} on {}",
                data.dir.display(),
                crate::device::name(ctx.device)
            );
        }
        Ok(data)
    }

    fn train(
        cfg: &Config,
        data: &FashionMnist,
        version: Version,
        settings: &[Setting],
        ctx: &Context,
    ) -> Vec<Run<Self>> {
        settings
            .iter()
            .map(|&setting| {
                let progress =
                    progress::Epochs::new(ctx.tagged(label(version, setting)), cfg.epochs);
                let trained = train(cfg, version, setting, data, ctx, &progress);
                let last = trained.curve.last();
                let mut finals = vec![
                    last.map_or(f64::NAN, |e| e.train_loss),
                    last.map_or(f64::NAN, |e| e.train_acc),
                    last.map_or(f64::NAN, |e| e.test_acc),
                ];
                if cfg.mc_samples.is_some() {
                    let (single, mc) = trained.mc.unwrap_or((f64::NAN, f64::NAN));
                    finals.extend([single, mc]);
                }
                Run {
                    finals,
                    seconds: trained.curve.iter().fold(0.0, |t, e| t + e.seconds),
                    curve: trained.curve,
                    status: trained.status,
                    model: Model {
                        vs: trained.vs,
                        activations: trained.activations,
                    },
                }
            })
            .collect()
    }

    fn label(version: Version, setting: Setting) -> String {
        label(version, setting)
    }

    /// `<impl>[-<noise>][-wd<λ>]` alone, `<impl>[-<noise>]-p<p1>-<p2>[-wd<λ>]` among several
    /// settings (naming the noise when it is not the book's dropout, λ when not 0).
    fn stem(version: Version, s: Setting, alone: bool) -> String {
        let mut stem = version.name().to_string();
        if s.noise != NoiseKind::Bernoulli {
            stem += &format!("-{}", s.noise.name());
        }
        if !alone {
            stem += &format!("-p{}-{}", fmt_num(s.rates[0]), fmt_num(s.rates[1]));
        }
        if s.wd > 0.0 {
            stem += &format!("-wd{}", fmt_num(s.wd));
        }
        stem
    }

    fn report(run: &Run<Self>) -> String {
        let [loss, train_acc, test_acc] = [run.finals[0], run.finals[1], run.finals[2]];
        let mut report =
            format!("loss {loss:.3}, train acc {train_acc:.3}, test acc {test_acc:.3}");
        if let [single, mc] = run.finals[3..] {
            report += &format!(", with the noise on: one pass {single:.3}, Monte-Carlo {mc:.3}");
        }
        report
    }

    fn advice(cfg: &Config) -> String {
        format!("try a smaller --lr (this run used {})", cfg.lr)
    }

    /// Final train accuracy − final test accuracy.
    fn gap(finals: &[f64]) -> f64 {
        experiment::round_derived(finals[1] - finals[2])
    }

    /// Train loss, train accuracy and test accuracy against epoch (the book's figure).
    /// Two panels: the training loss; the train and test accuracy.
    fn curve_chart<'a>(title: &'a str) -> record::Chart<'a, Epoch> {
        record::Chart {
            title,
            x: ("epoch", "epoch", |e| e.epoch as f64),
            panels: &[
                record::Panel {
                    y_label: "loss",
                    log_y: false,
                    series: &[("train loss", "train_loss", |e| e.train_loss)],
                    color_offset: 0,
                },
                record::Panel {
                    y_label: "accuracy",
                    log_y: false,
                    series: &[
                        ("train acc", "train_acc", |e| e.train_acc),
                        ("test acc", "test_acc", |e| e.test_acc),
                    ],
                    color_offset: 1,
                },
            ],
        }
    }

    /// `compare.svg`: train and test accuracy of every run of the command in one figure
    /// (with two runs or more).
    fn write_overview_charts(
        dir: &Path,
        runs: &[(Version, Setting, &Run<Self>)],
        plots: bool,
    ) -> Result<()> {
        let path = dir.join("compare.svg");
        if !plots || runs.len() < 2 {
            record::remove_stale(&path);
            return Ok(());
        }
        let mut series = Vec::new();
        for (i, (version, setting, run)) in runs.iter().enumerate() {
            let name = label(*version, *setting);
            let name = name.trim_start_matches("dropout ");
            series.extend(experiment::train_test_curves(
                &run.curve,
                |e| e.epoch as f64,
                [
                    (format!("train acc {name}"), |e| e.train_acc),
                    (format!("test acc {name}"), |e| e.test_acc),
                ],
                i,
            ));
        }
        record::write_chart(
            &path,
            &Figure {
                title: "dropout: train and test accuracy of every run".into(),
                x_label: "epoch".into(),
                y_label: "accuracy".into(),
                ..Default::default()
            },
            &series,
        )
    }

    /// `--save-weights`: the trained parameters under PyTorch's names; `--track-activations`:
    /// `<run>-activations.csv` and its chart.
    fn save(cfg: &Config, run: &Run<Self>, stem: &Path, plots: bool) -> Result<()> {
        if cfg.save_weights {
            save_weights(&run.model.vs, &record::with_suffix(stem, "safetensors"))?;
        }
        if cfg.track_activations {
            let dir = stem.parent().unwrap_or(Path::new("."));
            let name = stem
                .file_name()
                .map_or("run".into(), |n| n.to_string_lossy());
            let name = format!("{name}-activations");
            write_activations(dir, &name, &run.model.activations, plots)?;
        }
        Ok(())
    }

    /// `summary.svg`: final train (solid) and test (dashed) accuracy against the rate with
    /// more values, one panel per value of the other rate, one pair of curves per version
    /// (and noise and λ when there are several); with several λ also `summary-wd.svg` (test
    /// accuracy against λ) and `summary-gap.svg` (the gap against λ), one curve per version,
    /// noise and pair of rates.
    fn sweep_charts(
        cfg: &Config,
        settings: &[SettingStats<Setting>],
        seeds: usize,
    ) -> Vec<experiment::SweepChart> {
        let first_on_x = cfg.dropout1.len() >= cfg.dropout2.len();
        let (others, x_name, other_name) = if first_on_x {
            (
                &cfg.dropout2,
                "p1 (dropout after the first hidden layer)",
                "p2",
            )
        } else {
            (
                &cfg.dropout1,
                "p2 (dropout after the second hidden layer)",
                "p1",
            )
        };
        type Rate = fn(&Setting) -> f64;
        let (x_of, other_of): (Rate, Rate) = if first_on_x {
            (|s| s.rates[0], |s| s.rates[1])
        } else {
            (|s| s.rates[1], |s| s.rates[0])
        };
        let mut groups: Vec<&SettingStats<Setting>> = Vec::new();
        for s in settings {
            if !groups.iter().any(|g| Self::same_but_rates(g, s)) {
                groups.push(s);
            }
        }
        let mut panels = Vec::new();
        for &other in others {
            let mut series = Vec::new();
            for (color, group) in groups.iter().enumerate() {
                let rows: Vec<&SettingStats<Setting>> = settings
                    .iter()
                    .filter(|s| Self::same_but_rates(group, s) && other_of(&s.setting) == other)
                    .collect();
                let name = format!("{}{}", group.version.name(), group.setting.variant());
                series.extend(sweep::train_test_series(
                    &rows,
                    x_of,
                    ["train_acc", "test_acc"],
                    &name,
                    color,
                ));
            }
            let figure = Figure {
                title: format!("{other_name} = {}", fmt_num(other)),
                x_label: x_name.into(),
                y_label: "accuracy".into(),
                ..Default::default()
            };
            panels.push((figure, series));
        }
        let mut charts = vec![(
            "summary.svg".to_string(),
            sweep::title("dropout: final accuracy", cfg.epochs, seeds),
            panels,
        )];
        if cfg.wd.len() > 1 {
            let test = Self::against_lambda(cfg, settings, "test_acc", "test accuracy");
            charts.push((
                "summary-wd.svg".into(),
                sweep::title("dropout × weight decay: test accuracy", cfg.epochs, seeds),
                vec![test],
            ));
            let gap = Self::against_lambda(cfg, settings, "gap", "train − test accuracy");
            charts.push((
                "summary-gap.svg".into(),
                sweep::title("dropout × weight decay: the gap", cfg.epochs, seeds),
                vec![gap],
            ));
        }
        charts
    }

    fn sweep_table_row(s: &SettingStats<Setting>) -> Vec<String> {
        vec![
            s.version.name().to_string(),
            s.setting.noise.name().to_string(),
            fmt_num(s.setting.rates[0]),
            fmt_num(s.setting.rates[1]),
            fmt_num(s.setting.wd),
            s.status.name().to_string(),
            format!("{:.4}", s.stat("train_acc").0),
            format!("{:.4}", s.stat("test_acc").0),
            format!("{:+.4}", s.stat("gap").0),
        ]
    }

    fn memory_flags(c: &Config) -> String {
        format!("--batch-size (now {})", c.batch_size)
    }
}

/// `<stem>.csv` of the activation statistics and `<stem>.svg`: each hidden layer's variance
/// against epoch, after the ReLU and after the noise, in train and eval mode.
fn write_activations(dir: &Path, stem: &str, rows: &[ActivationRow], plots: bool) -> Result<()> {
    record::write_csv(&dir.join(format!("{stem}.csv")), rows)?;
    let svg = dir.join(format!("{stem}.svg"));
    if !plots {
        record::remove_stale(&svg);
        return Ok(());
    }
    let mut series = Vec::new();
    for layer in ["hidden1", "hidden2"] {
        for (stage, mode) in [("relu", "eval"), ("relu", "train"), ("noise", "train")] {
            let points: Vec<(f64, f64)> = rows
                .iter()
                .filter(|r| r.layer == layer && r.stage == stage && r.mode == mode)
                .map(|r| (r.epoch as f64, r.var))
                .collect();
            let color = series.len();
            let s = crate::plot::Series::line(format!("{layer} {stage} ({mode})"), points, color);
            series.push(if mode == "eval" { s.with_markers() } else { s });
        }
    }
    record::write_chart(
        &svg,
        &Figure {
            title: "variance of the hidden activations on the probe batch".into(),
            x_label: "epoch".into(),
            y_label: "variance".into(),
            ..Default::default()
        },
        &series,
    )
}
