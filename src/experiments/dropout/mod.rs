//! Book §4.6, dropout: an MLP 784-256-256-10 on Fashion-MNIST with dropout 0.2 after the
//! first hidden layer and 0.5 after the second, active only while training.
//!
//! From scratch, `dropout_layer` builds the mask itself and the network applies it only in
//! training mode. Concisely, a sequential model holds dropout layers that libtorch switches
//! off in evaluation mode.
pub mod book;
mod charts;
mod command;
mod engines;
pub mod exercises;
pub mod fused;
pub mod kernels;
pub mod noise;

pub use book::{concise_layers, concise_net, Hyper, Net, NUM_HIDDENS1, NUM_HIDDENS2};
pub use command::{Artifacts, DropoutMlp, Finals, McFinals};
use engines::fused_learner;
pub use engines::{autograd_net, learner, scratch_layers, train_autograd};
pub use exercises::{probe, ActivationRow, PROBE_ROWS};

use crate::checkpoint;
use crate::cuda::GraphMode;
use crate::d2l::EpochMetrics;
use crate::data::fashion_mnist::{self, FashionMnist};
use crate::experiment::{self, fmt_num, Context, EpochRow, Recorder, Run, SettingStats, Stat};
use crate::options::{
    defaults, epochs, examples, learning_rate, mc_samples, non_negative_f64, probability, Engine,
    Impl, ImplChoice,
};
use crate::precision::Precision;
use crate::progress;
use crate::record::{self};
use crate::stop::{self, Status};
use crate::train::{self, Learner};
use anyhow::Result;
use noise::{Layers, NoiseKind, Perturbation};
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::time::Instant;
use tch::nn::{self as tnn};
use tch::Tensor;

/// Hyper-parameters of §4.6, the book's values as defaults.
#[derive(clap::Args, Debug, Clone, Serialize, serde::Deserialize)]
pub struct Config {
    /// Which version of the book's code to run
    #[arg(long = "impl", value_enum, default_value_t = ImplChoice::Both)]
    #[serde(rename = "implementation")]
    pub impls: ImplChoice,
    #[arg(long, allow_hyphen_values = true, default_value_t = Hyper::BOOK.num_epochs, value_parser = epochs)]
    pub epochs: usize,
    #[arg(long, allow_hyphen_values = true, default_value_t = Hyper::BOOK.lr, value_parser = learning_rate)]
    pub lr: f64,
    #[arg(long, allow_hyphen_values = true, default_value_t = Hyper::BOOK.batch_size, value_parser = examples)]
    pub batch_size: usize,
    /// Dropout probability after the first hidden layer, in [0, 1]; several (comma-separated) train every combination with --dropout2
    #[arg(long, value_delimiter = ',', allow_hyphen_values = true, default_values_t = [Hyper::BOOK.dropout1], value_parser = probability)]
    pub dropout1: Vec<f64>,
    /// Dropout probability after the second hidden layer, in [0, 1]; several allowed, as for --dropout1
    #[arg(long, value_delimiter = ',', allow_hyphen_values = true, default_values_t = [Hyper::BOOK.dropout2], value_parser = probability)]
    pub dropout2: Vec<f64>,
    /// autograd: the book's code op by op, PyTorch's numbers on the CPU; fused: hand-written backward, faster
    #[arg(long, value_enum, default_value_t = Engine::Autograd)]
    pub engine: Engine,
    /// Replay each training epoch of the fused engine as one CUDA graph: auto (on with --engine fused on CUDA), on, off
    #[arg(long, value_enum, default_value_t = GraphMode::Auto)]
    pub cuda_graph: GraphMode,
    /// Directory holding the four Fashion-MNIST files (.gz or uncompressed)
    #[arg(long)]
    #[serde(serialize_with = "crate::options::serialize_path")]
    pub data_dir: Option<PathBuf>,
    /// Never download the data set; fail if it is not found locally
    #[arg(long)]
    pub offline: bool,
    /// Weight decay λ on the weights (never the biases); several (comma-separated) train each
    #[arg(long, value_delimiter = ',', allow_hyphen_values = true, default_value = "0", value_parser = non_negative_f64)]
    pub wd: Vec<f64>,
    /// Training noise at the hidden layers' rates: bernoulli (dropout, the book's), gaussian (N(1, p/(1−p))), dropconnect (on the following layer's weights); several train each
    #[arg(long, value_enum, value_delimiter = ',', default_value = "bernoulli")]
    pub noise: Vec<NoiseKind>,
    /// Standard deviation of N(0, σ²) noise added to the inputs while training (Bishop's noise)
    #[arg(long, allow_hyphen_values = true, default_value_t = 0.0, value_parser = non_negative_f64)]
    pub input_noise: f64,
    /// After training, also the test accuracy with the noise left on: of one pass, and of the average of K passes' probabilities (Monte-Carlo dropout)
    #[arg(long, allow_hyphen_values = true, value_parser = mc_samples)]
    pub mc_samples: Option<usize>,
    /// Every epoch, the mean and variance of each hidden layer's activations on a fixed probe
    /// batch of the test set, in train and eval mode (`<run>-activations.csv`)
    #[arg(
        long,
        help = "Every epoch, the mean and variance of each hidden layer's activations on a fixed probe batch of the test set, in train and eval mode (<run>-activations.csv)"
    )]
    pub track_activations: bool,
    /// f32 (the book's) or bf16-mixed: the forward pass's matrix products in bf16 under libtorch's autocast, f32 weights, loss, gradients and SGD (autograd engine)
    #[arg(long, value_enum, default_value_t = Precision::F32)]
    pub precision: Precision,
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

/// As the flags that set it, which are the summary's columns: `noise`, `dropout1`,
/// `dropout2`, `wd`.
impl Serialize for Setting {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let mut fields = s.serialize_struct("Setting", 4)?;
        fields.serialize_field("noise", &self.noise)?;
        fields.serialize_field("dropout1", &self.rates[0])?;
        fields.serialize_field("dropout2", &self.rates[1])?;
        fields.serialize_field("wd", &self.wd)?;
        fields.end()
    }
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

    /// The book's hyper-parameters as these flags set them, at `setting`'s rates.
    pub fn hyper(&self, setting: Setting) -> Hyper {
        Hyper {
            num_epochs: self.epochs,
            lr: self.lr,
            batch_size: self.batch_size,
            dropout1: setting.rates[0],
            dropout2: setting.rates[1],
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

/// The three layers' (weight, bias) of a model of `version` in `vs`.
pub fn layers(vs: &tnn::VarStore, version: Impl) -> Layers {
    let names = match version {
        Impl::Scratch => book::SCRATCH_NAMES,
        Impl::Concise => book::CONCISE_NAMES,
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

/// What a dropout checkpoint keeps besides the variables and the generators.
#[derive(Serialize, serde::Deserialize)]
struct Extra {
    /// The fused engine's mask generator.
    masks: Option<[u64; 4]>,
    /// The activation rows so far (`--track-activations`).
    activations: Vec<ActivationRow>,
}

/// One row of `<impl>.csv`.
#[derive(Debug, Clone, Copy, Default, Serialize, serde::Deserialize)]
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

    /// `train_ch3`'s `Animator(xlabel='epoch', xlim=[1, num_epochs], ylim=[0.3, 0.9],
    /// legend=['train loss', 'train acc', 'test acc'])`, its y axis from 0.
    const LEGEND: &'static [&'static str] = &["train loss", "train acc", "test acc"];

    fn plotted(&self) -> Vec<f64> {
        vec![self.train_loss, self.train_acc, self.test_acc]
    }
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
/// The autograd engine runs the book's code (`book.rs`, or its exercise variant), the fused
/// engine its own loop. Ends early when the loss becomes NaN or infinite (that epoch is not
/// kept) or a stop is requested (Ctrl-C).
///
/// With checkpoints (`ctx.checkpoints`), the model, the generators and the rows so far are
/// saved after every `every`-th epoch; resuming, the freshly built model (its initial draws
/// made as always) takes the checkpoint's variables and generator states and trains the epochs
/// left, so the run ends with the very numbers of an uninterrupted one.
pub fn train(
    cfg: &Config,
    version: Impl,
    setting: Setting,
    data: &FashionMnist,
    ctx: &Context,
    progress: &progress::Epochs,
) -> Result<Trained> {
    let stem = <DropoutMlp as experiment::Experiment>::stem(version, setting, false);
    let checkpoint =
        (ctx.checkpoints.as_ref()).map(|plan| plan.run(&stem, ctx.seed, version, &setting));
    let mut recorder = Recorder::new(progress).with_board(ctx.board_run(&stem));
    let mut activations = Vec::new();
    let begin = Instant::now();
    let mut epoch_start = Instant::now();
    // The seconds a resumed run had trained before.
    let mut before = 0.0;
    tch::manual_seed(ctx.seed);
    let vs = tnn::VarStore::new(ctx.device);
    // Built here, before a checkpoint is restored: building draws from the generator.
    let (net, mut fused) = match cfg.engine {
        Engine::Autograd => (Some(autograd_net(cfg, version, setting, &vs)), None),
        Engine::Fused => (None, Some(fused_learner(cfg, version, setting, &vs, ctx))),
    };
    let params = layers(&vs, version);
    let resumable = checkpoint::Resumable::new(
        checkpoint.as_ref(),
        cfg.epochs,
        ctx.device,
        checkpoint::variables(&vs),
        None,
    );
    let mut start = 0;
    if let Some(resumed) = resumable.restore::<Epoch, Extra>()? {
        if let (Some(learner), Some(state)) = (fused.as_mut(), resumed.extra.masks) {
            learner.set_mask_state(state);
        }
        start = resumed.epoch;
        before = resumed.rows.last().map_or(0.0, |r| r.elapsed_s);
        crate::errln!(
            "{}: continuing from its checkpoint after epoch {start} of {}",
            ctx.tagged(label(version, setting)),
            cfg.epochs
        );
        recorder.resume(resumed.rows);
        activations = resumed.extra.activations;
    }
    let mut failure: Option<anyhow::Error> = None;
    // What the command keeps of epoch `epoch`, given its sums (on the device), and its
    // checkpoint when one is due; `masks`, the fused engine's mask generator.
    let mut record = |epoch: usize,
                      sums: [&Tensor; 3],
                      count: i64,
                      recorder: &mut Recorder<Epoch>,
                      masks: Option<[u64; 4]>|
     -> std::ops::ControlFlow<()> {
        let [loss_sum, correct, test_correct] = train::read(&sums);
        if cfg.track_activations {
            activations.extend(probe(cfg, setting, &params, data, epoch));
        }
        let row = Epoch {
            epoch,
            train_loss: loss_sum / count as f64,
            train_acc: correct / count as f64,
            test_acc: test_correct / data.test.len() as f64,
            seconds: epoch_start.elapsed().as_secs_f64(),
            elapsed_s: before + begin.elapsed().as_secs_f64(),
        };
        let flow = recorder.add(epoch, row);
        if flow.is_continue() {
            let extra = Extra {
                masks,
                activations: activations.clone(),
            };
            if let Err(e) = resumable.after_epoch(epoch, recorder.rows(), &extra) {
                failure = Some(e);
                return std::ops::ControlFlow::Break(());
            }
        }
        epoch_start = Instant::now();
        flow
    };
    match (net, fused.as_mut()) {
        (Some(net), _) => {
            // The book's loop trains the epochs left, numbered from where the checkpoint was.
            let left = Config {
                epochs: cfg.epochs - start,
                ..cfg.clone()
            };
            let mut animator = |epoch: usize, m: EpochMetrics| {
                if stop::requested().is_some() {
                    return recorder.interrupted();
                }
                let sums = [&m.train.loss_sum, &m.train.correct, &m.test_correct];
                record(start + epoch, sums, m.train.count, &mut recorder, None)
            };
            if left.epochs > 0 {
                let splits = (&data.train, &data.test);
                train_autograd(
                    &left,
                    version,
                    setting,
                    net.as_ref(),
                    &vs,
                    splits,
                    &mut animator,
                );
            }
        }
        (None, Some(learner)) => {
            for epoch in start + 1..=cfg.epochs {
                let sums = learner.train_epoch(&data.train);
                if stop::requested().is_some() {
                    let _ = recorder.interrupted();
                    break;
                }
                let test_correct = learner.count_correct(&data.test);
                let masks = Some(learner.mask_state());
                let (count, sums) = (sums.count, [&sums.loss_sum, &sums.correct, &test_correct]);
                if record(epoch, sums, count, &mut recorder, masks).is_break() {
                    break;
                }
            }
        }
        (None, None) => unreachable!("one engine builds the model"),
    }
    if let Some(e) = failure {
        return Err(e);
    }
    let (curve, status) = recorder.finish();
    let mc = match (cfg.mc_samples, status) {
        (Some(k), Status::Ok) => {
            let noise = cfg.perturbation(setting);
            Some(noise.mc_accuracy(&params, &data.test.x, &data.test.y, k))
        }
        _ => None,
    };
    Ok(Trained {
        curve,
        vs,
        status,
        activations,
        mc,
    })
}

/// What a run is called in messages and progress lines: `dropout (0.2, 0.5), scratch`.
pub fn label(version: Impl, setting: Setting) -> String {
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
    let named = crate::checkpoint::variables(vs);
    record::replace_atomically(path, "safetensors", |tmp| {
        Ok(Tensor::write_safetensors(&named, tmp)?)
    })
}
