//! Book §4.6, dropout: an MLP 784-256-256-10 on Fashion-MNIST with dropout 0.2 after the
//! first hidden layer and 0.5 after the second, active only while training.
//!
//! From scratch, `dropout_layer` builds the mask itself and the network applies it only in
//! training mode. Concisely, a sequential model holds dropout layers that libtorch switches
//! off in evaluation mode.
pub mod fused;
pub mod kernels;

use crate::cuda::GraphMode;
use crate::data::fashion_mnist::{self, FashionMnist, NUM_CLASSES, NUM_INPUTS};
use crate::data::{batches, Split};
use crate::experiment::{self, fmt_num, Context, EpochRow, Experiment, Run, SettingStats, Stat};
use crate::nn::{dropout_layer, Dropout, Linear};
use crate::options::{
    defaults, positive_f64, positive_usize, probability, Engine, Version, VersionChoice,
};
use crate::plot::Figure;
use crate::progress;
use crate::record::{self, Cell};
use crate::stop::{self, Status};
use crate::sweep;
use crate::train::{self, Learner, Sums};
use anyhow::Result;
use fused::FusedMlp;
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::time::Instant;
use tch::nn::{self as tnn, Module, ModuleT, OptimizerConfig};
use tch::{Reduction, Tensor};

pub const NUM_HIDDENS1: i64 = 256;
pub const NUM_HIDDENS2: i64 = 256;

/// Hyper-parameters of §4.6, the book's values as defaults.
#[derive(clap::Args, Debug, Clone, Serialize)]
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

impl Config {
    /// Every combination of `--dropout1` × `--dropout2`.
    pub fn grid(&self) -> Vec<Rates> {
        self.dropout1
            .iter()
            .flat_map(|&p1| self.dropout2.iter().map(move |&p2| [p1, p2]))
            .collect()
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
/// when (and only when) training.
#[derive(Debug)]
pub struct Net {
    lin1: Linear,
    lin2: Linear,
    lin3: Linear,
    dropout1: f64,
    dropout2: f64,
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
    pub fn new(vs: &tnn::Path, dropout1: f64, dropout2: f64) -> Net {
        let [lin1, lin2, lin3] = scratch_layers(vs);
        Net {
            lin1,
            lin2,
            lin3,
            dropout1,
            dropout2,
        }
    }
}

impl ModuleT for Net {
    fn forward_t(&self, x: &Tensor, train: bool) -> Tensor {
        let mut h1 = self.lin1.forward(&x.reshape([-1, NUM_INPUTS])).relu();
        if train {
            h1 = dropout_layer(&h1, self.dropout1);
        }
        let mut h2 = self.lin2.forward(&h1).relu();
        if train {
            h2 = dropout_layer(&h2, self.dropout2);
        }
        self.lin3.forward(&h2)
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
/// [`concise_layers`].
pub fn concise_net(vs: &tnn::Path, dropout1: f64, dropout2: f64) -> tnn::SequentialT {
    let [lin1, lin2, lin3] = concise_layers(vs);
    tnn::seq_t()
        .add_fn(|x| x.flatten(1, -1))
        .add(lin1)
        .add_fn(|x| x.relu())
        .add(Dropout { p: dropout1 })
        .add(lin2)
        .add_fn(|x| x.relu())
        .add(Dropout { p: dropout2 })
        .add(lin3)
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
}

/// A model of either version with tch's SGD optimizer, trained op by op with autograd.
pub struct AutogradLearner {
    net: Box<dyn ModuleT>,
    trainer: tnn::Optimizer,
    batch_size: usize,
}

/// The book's loss: cross-entropy per example (`reduction='none'`).
pub fn loss(y_hat: &Tensor, y: &Tensor) -> Tensor {
    y_hat.cross_entropy_loss::<Tensor>(y, None, Reduction::None, -100, 0.0)
}

/// Seeds the generator, then builds the model of `version` and its trainer for the
/// configured engine. Returns the variables too (for `--save-weights`).
pub fn learner(
    cfg: &Config,
    version: Version,
    [p1, p2]: Rates,
    ctx: &Context,
) -> (tnn::VarStore, Box<dyn Learner>) {
    tch::manual_seed(ctx.seed);
    let vs = tnn::VarStore::new(ctx.device);
    let learner: Box<dyn Learner> = match cfg.engine {
        Engine::Autograd => {
            let net: Box<dyn ModuleT> = match version {
                Version::Scratch => Box::new(Net::new(&vs.root(), p1, p2)),
                Version::Concise => Box::new(concise_net(&vs.root(), p1, p2)),
            };
            let trainer = tnn::Sgd::default()
                .build(&vs, cfg.lr)
                .expect("SGD over a fresh VarStore");
            Box::new(AutogradLearner {
                net,
                trainer,
                batch_size: cfg.batch_size,
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
                FusedMlp::new(&layers, [p1, p2], cfg.lr, cfg.batch_size).with_cuda_graph(graphs),
            )
        }
    };
    (vs, learner)
}

impl Learner for AutogradLearner {
    /// One pass over shuffled training batches with dropout on; the sums stay on the device.
    fn train_epoch(&mut self, train: &Split) -> Sums {
        let mut sums = Sums::new(train.x.device());
        let net = &self.net;
        let train_mode = |x: &Tensor| net.forward_t(x, true);
        train::train_epoch(
            batches::shuffled(train, self.batch_size),
            &train_mode,
            &loss,
            &mut self.trainer,
            Some(&mut sums),
        );
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

/// Trains a freshly seeded model like the book's `train_ch3`: per epoch the running train
/// loss and accuracy (dropout on), then the test accuracy (dropout off), read in one transfer.
/// Ends early when the loss becomes NaN or infinite (that epoch is not kept) or a stop is
/// requested (Ctrl-C). Returns the finished epochs, the model's variables and how it ended.
pub fn train(
    cfg: &Config,
    version: Version,
    rates: Rates,
    data: &FashionMnist,
    ctx: &Context,
    progress: &progress::Epochs,
) -> (Vec<Epoch>, tnn::VarStore, Status) {
    let (vs, mut learner) = learner(cfg, version, rates, ctx);
    let (curve, status) = experiment::train_epochs(cfg.epochs, progress, |epoch| {
        let start = Instant::now();
        let sums = learner.train_epoch(&data.train);
        if stop::requested().is_some() {
            return None;
        }
        let test_correct = learner.count_correct(&data.test);
        let [loss_sum, correct, test_correct] =
            train::read(&[sums.loss(), sums.correct(), &test_correct]);
        Some(Epoch {
            epoch,
            train_loss: loss_sum / sums.count() as f64,
            train_acc: correct / sums.count() as f64,
            test_acc: test_correct / data.test.len() as f64,
            seconds: start.elapsed().as_secs_f64(),
        })
    });
    (curve, vs, status)
}

/// What a run is called in messages and progress lines.
pub fn label(version: Version, [p1, p2]: Rates) -> String {
    format!(
        "dropout ({}, {}), {}",
        fmt_num(p1),
        fmt_num(p2),
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

/// §4.6 as a command: `dropout`, its runs one per version and pair of rates.
pub struct DropoutMlp;

impl Experiment for DropoutMlp {
    const NAME: &'static str = "dropout";
    const SETTING_COLUMNS: &'static [&'static str] = &["dropout1", "dropout2"];
    const SWEEP_TABLE: &'static [&'static str] =
        &["impl", "p1", "p2", "status", "train acc", "test acc", "gap"];
    type Config = Config;
    type Setting = Rates;
    /// Fashion-MNIST, on the device, loaded once for every run.
    type Data = FashionMnist;
    type Row = Epoch;
    /// The trained variables (for `--save-weights`).
    type Model = tnn::VarStore;

    fn settings(cfg: &Config) -> Vec<Rates> {
        cfg.grid()
    }

    fn setting_cells([p1, p2]: Rates) -> Vec<Cell> {
        vec![Cell::Float(p1), Cell::Float(p2)]
    }

    fn finals(_: &Config) -> Vec<&'static str> {
        vec!["final_train_loss", "final_train_acc", "final_test_acc"]
    }

    fn sweep_stats(_: &Config) -> Vec<(&'static str, Stat)> {
        vec![
            ("train_loss", Stat::Final(0)),
            ("train_acc", Stat::Final(1)),
            ("test_acc", Stat::Final(2)),
            ("gap", Stat::Gap),
        ]
    }

    fn versions(cfg: &Config) -> Vec<Version> {
        cfg.versions.versions()
    }

    /// Pair of rates by pair of rates, each version in turn.
    fn schedule(cfg: &Config) -> Vec<(Version, Vec<Rates>)> {
        cfg.grid()
            .into_iter()
            .flat_map(|rates| {
                cfg.versions
                    .versions()
                    .into_iter()
                    .map(move |v| (v, vec![rates]))
            })
            .collect()
    }

    /// Refuses `--cuda-graph on` where it cannot apply, then loads Fashion-MNIST.
    fn prepare(cfg: &Config, ctx: &Context) -> Result<FashionMnist> {
        cfg.cuda_graphs(ctx.device)?;
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
        settings: &[Rates],
        ctx: &Context,
    ) -> Vec<Run<Self>> {
        settings
            .iter()
            .map(|&rates| {
                let progress = progress::Epochs::new(ctx.tagged(label(version, rates)), cfg.epochs);
                let (curve, vs, status) = train(cfg, version, rates, data, ctx, &progress);
                let last = curve.last();
                Run {
                    finals: vec![
                        last.map_or(f64::NAN, |e| e.train_loss),
                        last.map_or(f64::NAN, |e| e.train_acc),
                        last.map_or(f64::NAN, |e| e.test_acc),
                    ],
                    seconds: curve.iter().fold(0.0, |t, e| t + e.seconds),
                    curve,
                    status,
                    model: vs,
                }
            })
            .collect()
    }

    fn label(version: Version, rates: Rates) -> String {
        label(version, rates)
    }

    /// `<impl>`, or `<impl>-p<p1>-<p2>` among several pairs of rates.
    fn stem(version: Version, [p1, p2]: Rates, alone: bool) -> String {
        if alone {
            version.name().to_string()
        } else {
            format!("{}-p{}-{}", version.name(), fmt_num(p1), fmt_num(p2))
        }
    }

    fn report(run: &Run<Self>) -> String {
        let [loss, train_acc, test_acc] = [run.finals[0], run.finals[1], run.finals[2]];
        format!("loss {loss:.3}, train acc {train_acc:.3}, test acc {test_acc:.3}")
    }

    fn advice(cfg: &Config) -> String {
        format!("try a smaller --lr (this run used {})", cfg.lr)
    }

    /// Final train accuracy − final test accuracy.
    fn gap(finals: &[f64]) -> f64 {
        finals[1] - finals[2]
    }

    /// Train loss, train accuracy and test accuracy against epoch (the book's figure).
    fn curve_chart<'a>(title: &'a str) -> record::Chart<'a, Epoch> {
        record::Chart {
            title,
            x_label: "epoch",
            y_label: "",
            x: |e| e.epoch as f64,
            series: &[
                ("train loss", |e| e.train_loss),
                ("train acc", |e| e.train_acc),
                ("test acc", |e| e.test_acc),
            ],
            log_y: false,
        }
    }

    /// `compare.svg`: train and test accuracy of every run of the command in one figure
    /// (with two runs or more).
    fn write_overview_charts(
        dir: &Path,
        runs: &[(Version, Rates, &Run<Self>)],
        plots: bool,
    ) -> Result<()> {
        let path = dir.join("compare.svg");
        if !plots || runs.len() < 2 {
            record::remove_stale(&path);
            return Ok(());
        }
        let mut series = Vec::new();
        for (i, (version, rates, run)) in runs.iter().enumerate() {
            let name = label(*version, *rates);
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
                log_y: false,
                x_categories: None,
            },
            &series,
        )
    }

    /// `--save-weights`: the trained parameters under PyTorch's names.
    fn save(cfg: &Config, run: &Run<Self>, stem: &Path) -> Result<()> {
        if !cfg.save_weights {
            return Ok(());
        }
        save_weights(&run.model, &record::with_suffix(stem, "safetensors"))
    }

    /// `summary.svg`: final train and test accuracy against the rate with more values (x),
    /// one pair of curves per value of the other rate and per version.
    fn sweep_charts(
        cfg: &Config,
        settings: &[SettingStats<Rates>],
        seeds: usize,
    ) -> Vec<experiment::SweepChart> {
        let first_on_x = cfg.dropout1.len() >= cfg.dropout2.len();
        let (xs, others, x_name, other_name) = if first_on_x {
            (&cfg.dropout1, &cfg.dropout2, "p1 (dropout1)", "p2")
        } else {
            (&cfg.dropout2, &cfg.dropout1, "p2 (dropout2)", "p1")
        };
        let mut series = Vec::new();
        for version in cfg.versions.versions() {
            for &other in others {
                let rows: Vec<&SettingStats<Rates>> = xs
                    .iter()
                    .filter_map(|&x| {
                        let rates = if first_on_x { [x, other] } else { [other, x] };
                        settings
                            .iter()
                            .find(|s| s.version == version && s.setting == rates)
                    })
                    .collect();
                let color = series.len() / 2;
                let suffix = format!("{} {other_name}={}", version.name(), fmt_num(other));
                series.extend(sweep::train_test_series(
                    &rows,
                    ["train_acc", "test_acc"],
                    &suffix,
                    color,
                ));
            }
        }
        let figure = Figure {
            title: sweep::title("dropout: final accuracy", cfg.epochs, seeds),
            x_label: x_name.into(),
            y_label: "accuracy".into(),
            log_y: false,
            x_categories: Some(xs.iter().map(|&p| fmt_num(p)).collect()),
        };
        vec![("summary.svg".into(), figure, series)]
    }

    fn sweep_table_row(s: &SettingStats<Rates>) -> Vec<String> {
        vec![
            s.version.name().to_string(),
            fmt_num(s.setting[0]),
            fmt_num(s.setting[1]),
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
