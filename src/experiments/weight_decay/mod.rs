//! Book §4.5, weight decay: a linear model with 200 inputs and only 20 training examples
//! overfits; an L2 penalty λ‖w‖²/2 keeps ‖w‖ small and the test loss low.
//!
//! From scratch, the penalty is added to the loss and plain SGD does the rest. Concisely, the
//! optimizer decays the weight through its parameter groups and leaves the bias alone. The
//! fused engine (`fused.rs`) trains the same models with closed-form gradients.
//!
//! The book's exercises as flags: `--penalty l1` (λ‖w‖₁ instead of λ‖w‖²/2), `--optimizer
//! adam|adamw` for the concise version (what "weight decay" means beyond SGD), and `--n-val`
//! (a validation split to choose λ on, in sweeps).
pub mod book;
mod charts;
mod command;
pub mod exercises;
pub mod fused;
mod resume;

pub use book::{Data, Hyper};
pub use command::{Finals, ValFinals, WeightDecay};
pub use exercises::{Optimizer, Penalty};

use crate::checkpoint;
use crate::experiment::{self, fmt_num, Context, EpochRow, Recorder, Run, SettingStats, Stat};
use crate::options::{
    defaults, epochs, examples, learning_rate, non_negative_f64, num_inputs, Engine, Impl,
    ImplChoice,
};
use crate::precision::{Autocast, Precision};
use crate::progress;
use crate::record::{self, Cell};
use crate::stop::{self, Status};
use anyhow::Result;
use serde::Serialize;
use std::path::Path;
use std::time::Instant;
use tch::nn as tnn;
use tch::{Kind, Tensor};

/// Hyper-parameters of §4.5, the book's values as defaults.
#[derive(clap::Args, Debug, Clone, Serialize, serde::Deserialize)]
pub struct Config {
    /// Weight decay λ values, comma-separated; every version runs once per λ
    #[arg(long, value_delimiter = ',', allow_hyphen_values = true, default_value = "0,3", value_parser = non_negative_f64)]
    pub wd: Vec<f64>,
    /// Which version of the book's code to run
    #[arg(long = "impl", value_enum, default_value_t = ImplChoice::Both)]
    #[serde(rename = "implementation")]
    pub impls: ImplChoice,
    /// autograd: the book's code op by op, PyTorch's numbers on the CPU; fused: closed-form gradients, every λ in one batched model
    #[arg(long, value_enum, default_value_t = Engine::Autograd)]
    pub engine: Engine,
    #[arg(long, allow_hyphen_values = true, default_value_t = Hyper::BOOK.num_epochs, value_parser = epochs)]
    pub epochs: usize,
    #[arg(long, allow_hyphen_values = true, default_value_t = Hyper::BOOK.lr, value_parser = learning_rate)]
    pub lr: f64,
    #[arg(long, allow_hyphen_values = true, default_value_t = Hyper::BOOK.batch_size, value_parser = examples)]
    pub batch_size: usize,
    #[arg(long, allow_hyphen_values = true, default_value_t = Hyper::BOOK.n_train, value_parser = examples)]
    pub n_train: usize,
    #[arg(long, allow_hyphen_values = true, default_value_t = Hyper::BOOK.n_test, value_parser = examples)]
    pub n_test: usize,
    #[arg(long, allow_hyphen_values = true, default_value_t = Hyper::BOOK.num_inputs, value_parser = num_inputs)]
    pub num_inputs: usize,
    /// Penalty on the weight: l2 (λ‖w‖²/2, the book's), l1 (λ‖w‖₁ by its subgradient) or l1-prox (λ‖w‖₁ by soft-thresholding); several (comma-separated) train each
    #[arg(long, value_enum, value_delimiter = ',', default_value = "l2")]
    pub penalty: Vec<Penalty>,
    /// Optimizer of the concise version: sgd (the book's), adam (λ·w added to the gradient, then normalised), adamw (decoupled decay); several train each
    #[arg(long, value_enum, value_delimiter = ',', default_value = "sgd")]
    pub optimizer: Vec<Optimizer>,
    /// Also draw a validation split of N examples (after the train and test splits, which stay the same) and record each run's final validation loss; sweeps then mark the λ it chooses
    #[arg(long, allow_hyphen_values = true, value_parser = examples)]
    pub n_val: Option<usize>,
    /// f32 (the book's) or bf16-mixed: the book's training under libtorch's autocast (matrix products in bf16), f32 parameters and optimizer (autograd engine)
    #[arg(long, value_enum, default_value_t = Precision::F32)]
    pub precision: Precision,
}

/// One run's setting: the optimizer (concise), the penalty and λ (serde: the flags' names,
/// which are the summary's columns).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Setting {
    pub optimizer: Optimizer,
    pub penalty: Penalty,
    pub wd: f64,
}

impl Setting {
    /// The book's: SGD, L2, λ = `wd`.
    pub fn book(wd: f64) -> Setting {
        Setting {
            optimizer: Optimizer::Sgd,
            penalty: Penalty::L2,
            wd,
        }
    }

    /// ` adamw l1`: what differs from the book's, for labels.
    fn variant(self) -> String {
        let mut v = String::new();
        if self.optimizer != Optimizer::Sgd {
            v += &format!(" {}", self.optimizer.name());
        }
        if self.penalty != Penalty::L2 {
            v += &format!(" {}", self.penalty.name());
        }
        v
    }

    /// `-adamw-l1`: what differs from the book's, for file names.
    fn suffix(self) -> String {
        self.variant().replace(' ', "-")
    }
}

impl Default for Config {
    /// The book's hyper-parameters (the flags' defaults).
    fn default() -> Self {
        defaults()
    }
}

impl Config {
    /// The book's hyper-parameters as these flags set them.
    pub fn hyper(&self) -> Hyper {
        Hyper {
            n_train: self.n_train,
            n_test: self.n_test,
            num_inputs: self.num_inputs,
            batch_size: self.batch_size,
            num_epochs: self.epochs,
            lr: self.lr,
        }
    }
}

/// One row of `<impl>-wd<λ>.csv`: the mean per-example loss, without the penalty, after an epoch.
#[derive(Debug, Clone, Copy, Default, Serialize, serde::Deserialize)]
pub struct Epoch {
    pub epoch: usize,
    pub train_loss: f64,
    pub test_loss: f64,
    /// Seconds since the run started, at the end of this epoch.
    pub elapsed_s: f64,
}

impl EpochRow for Epoch {
    fn finite(&self) -> bool {
        stop::finite(&[self.train_loss, self.test_loss])
    }

    fn figures(&self) -> String {
        format!(
            "train loss {:.3e}, test loss {:.3e}",
            self.train_loss, self.test_loss
        )
    }

    /// `d2l.Animator(xlabel='epochs', ylabel='loss', yscale='log', legend=['train', 'test'])`.
    const LEGEND: &'static [&'static str] = &["train", "test"];
    const LOG_Y: bool = true;
    const Y_LABEL: &'static str = "loss";

    fn plotted(&self) -> Vec<f64> {
        vec![self.train_loss, self.test_loss]
    }
}

impl Epoch {
    fn new(epoch: usize, train_loss: f64, test_loss: f64, elapsed_s: f64) -> Epoch {
        Epoch {
            epoch,
            train_loss,
            test_loss,
            elapsed_s,
        }
    }
}

/// A trained model's curve (its finished epochs), what its weight became, its validation loss
/// and how it ended.
#[derive(Debug)]
pub struct Trained {
    pub curve: Vec<Epoch>,
    /// ‖w‖₂.
    pub w_norm: f64,
    /// ‖w‖₁.
    pub w_l1: f64,
    /// The fraction of weights with |wᵢ| < 1e-4.
    pub w_small: f64,
    /// The final mean loss on the validation split (NaN without one; see [`exercises::validation_loss`]).
    pub val_loss: f64,
    pub status: Status,
    /// The final weight (flattened) and bias, detached.
    pub weight: Tensor,
    pub bias: Tensor,
}

/// |wᵢ| below this counts as zero in `w_small`.
pub const SMALL: f64 = 1e-4;

impl Trained {
    /// The final figures of a model with weight `w` and bias `b`, given its curve, status and
    /// ‖w‖₂ as its engine computed it.
    fn new(curve: Vec<Epoch>, status: Status, w_norm: f64, (w, b): (&Tensor, &Tensor)) -> Trained {
        let weight = w.detach().flatten(0, -1).copy();
        let abs = weight.to_kind(Kind::Double).abs();
        Trained {
            curve,
            w_norm,
            w_l1: abs.sum(Kind::Double).double_value(&[]),
            w_small: abs
                .lt(SMALL)
                .to_kind(Kind::Double)
                .mean(None)
                .double_value(&[]),
            val_loss: f64::NAN,
            status,
            weight,
            bias: b.detach().copy(),
        }
    }
}

// ---------------------------------------------------------------- runs

/// Trains one version at one setting from a freshly seeded generator, so every run is
/// reproducible on its own: the data are the same for every setting and version. Returns the
/// wall time too.
pub fn run_one(
    cfg: &Config,
    version: Impl,
    setting: Setting,
    ctx: &Context,
) -> Result<(Trained, f64)> {
    let mut runs = run_group(cfg, version, &[setting], ctx)?;
    Ok(runs.remove(0))
}

/// The model one autograd run trains, built by the book's functions in the book's order (its
/// draws from the generator made as always): the scratch parameters, or the concise network
/// with its trainer (the book's SGD, or an exercise's optimizer with the handle on its state).
enum BookModel {
    Scratch(Tensor, Tensor),
    Concise {
        vs: tnn::VarStore,
        net: tnn::Linear,
        trainer: tnn::Optimizer,
        state: Option<crate::nn::optimizer_state::State>,
    },
}

impl BookModel {
    fn new(version: Impl, setting: Setting, hp: &Hyper, device: tch::Device) -> BookModel {
        match version {
            Impl::Scratch => {
                let (w, b) = book::init_params(hp.num_inputs, device);
                BookModel::Scratch(w, b)
            }
            Impl::Concise => {
                let vs = tnn::VarStore::new(device);
                let net = book::concise_net(&vs.root(), hp.num_inputs);
                let (trainer, state) = if setting == Setting::book(setting.wd) {
                    (book::trainer(&vs, setting.wd, hp.lr), None)
                } else {
                    // The optimizer decays by λ for L2; an L1 penalty is the loss's.
                    let wd = if setting.penalty == Penalty::L2 {
                        setting.wd
                    } else {
                        0.0
                    };
                    let (trainer, state) = (setting.optimizer)
                        .build(&vs, hp.lr, wd)
                        .expect("an optimizer over a fresh VarStore");
                    (trainer, Some(state))
                };
                BookModel::Concise {
                    vs,
                    net,
                    trainer,
                    state,
                }
            }
        }
    }

    /// Its variables by name, as its checkpoint keeps them.
    fn variables(&self) -> Vec<(String, Tensor)> {
        match self {
            BookModel::Scratch(w, b) => vec![
                ("w".into(), w.shallow_clone()),
                ("b".into(), b.shallow_clone()),
            ],
            BookModel::Concise { net, .. } => vec![
                ("weight".into(), net.ws.shallow_clone()),
                (
                    "bias".into(),
                    net.bs.as_ref().expect("a bias").shallow_clone(),
                ),
            ],
        }
    }

    /// The trained weight and bias.
    fn weights(&self) -> (Tensor, Tensor) {
        let [(_, w), (_, b)]: [(String, Tensor); 2] =
            self.variables().try_into().expect("a weight and a bias");
        (w, b)
    }
}

/// Trains one run with the autograd engine: the model built as the book builds it, set to its
/// checkpoint when the run resumes (the one resume driver, [`checkpoint::Resumable`]), then
/// the book's function for the book's setting (SGD, L2), its exercise variant otherwise, over
/// the epochs left; each epoch's losses read in one transfer, recorded and checkpointed.
fn train_autograd(
    cfg: &Config,
    version: Impl,
    setting: Setting,
    data: &Data,
    mut recorder: Recorder<'_, Epoch>,
    (checkpoint, label): (Option<&checkpoint::RunCheckpoint>, String),
) -> Result<Trained> {
    let hp = cfg.hyper();
    let device = data.train.x.device();
    let mut model = BookModel::new(version, setting, &hp, device);
    let state = match &model {
        BookModel::Concise { state, .. } => state.clone(),
        BookModel::Scratch(..) => None,
    };
    let resumable =
        checkpoint::Resumable::new(checkpoint, cfg.epochs, device, model.variables(), state);
    let (mut start, mut before) = (0, 0.0);
    if let Some(resumed) = resumable.restore::<Epoch, ()>()? {
        crate::errln!(
            "{label}: continuing from its checkpoint after epoch {} of {}",
            resumed.epoch,
            cfg.epochs
        );
        (start, before) = (
            resumed.epoch,
            resumed.rows.last().map_or(0.0, |r| r.elapsed_s),
        );
        recorder.resume(resumed.rows);
    }
    let begin = Instant::now();
    let mut failure = None;
    // The book's animator: the epochs it counts are those left, numbered here from the first.
    let mut animator = |epoch: usize, [train, test]: [Tensor; 2]| {
        if stop::requested().is_some() {
            return recorder.interrupted();
        }
        let epoch = start + epoch;
        let [train_loss, test_loss] = crate::train::read(&[&train, &test]);
        let elapsed = before + begin.elapsed().as_secs_f64();
        let flow = recorder.add(epoch, Epoch::new(epoch, train_loss, test_loss, elapsed));
        if flow.is_continue() {
            if let Err(e) = resumable.after_epoch(epoch, recorder.rows(), &()) {
                failure = Some(e);
                return std::ops::ControlFlow::Break(());
            }
        }
        flow
    };
    let left = Hyper {
        num_epochs: cfg.epochs - start,
        ..hp
    };
    let (penalty, wd) = (setting.penalty, setting.wd);
    // `--precision bf16-mixed`: the book's training, as it is, under autocast.
    let autocast = (cfg.precision == Precision::Bf16Mixed)
        .then(|| Autocast::bf16(device))
        .transpose()?;
    match &mut model {
        BookModel::Scratch(w, b) if penalty == Penalty::L2 => {
            book::train(wd, (w, b), &left, data, &mut animator)
        }
        BookModel::Scratch(w, b) => {
            exercises::train_scratch_l1(penalty, wd, (w, b), &left, data, &mut animator)
        }
        BookModel::Concise { net, trainer, .. } if setting == Setting::book(wd) => {
            book::train_concise(net, trainer, &left, data, &mut animator)
        }
        BookModel::Concise {
            vs, net, trainer, ..
        } => {
            exercises::train_concise_with(penalty, wd, net, vs, trainer, &left, data, &mut animator)
        }
    }
    drop(autocast);
    if let Some(e) = failure {
        return Err(e);
    }
    let (curve, status) = recorder.finish();
    let (w, b) = model.weights();
    let w_norm = w.norm().double_value(&[]);
    Ok(Trained::new(curve, status, w_norm, (&w, &b)))
}

/// Every setting of `settings` for one version, each with its wall time. The autograd engine
/// trains them one after the other (none after an interrupted one); the fused engine trains
/// them together as one batched model (same seed, so same data, initialisation and batches)
/// and reports that shared time for each (it trains the book's SGD with L2 only: `prepare`
/// refuses the others). With checkpoints (`ctx.checkpoints`), each autograd run keeps its
/// own, a fused group one (under its first setting's name). Fails only when a checkpoint
/// cannot be read or written.
pub fn run_group(
    cfg: &Config,
    version: Impl,
    settings: &[Setting],
    ctx: &Context,
) -> Result<Vec<(Trained, f64)>> {
    let validation = |trained: &mut Trained| {
        if let Some(n) = cfg.n_val {
            let val = exercises::validation_split(n, cfg.num_inputs, ctx.seed, ctx.device);
            trained.val_loss = exercises::validation_loss(
                &trained.weight,
                &trained.bias,
                &val,
                version == Impl::Scratch,
            );
        }
    };
    let stem =
        |setting: Setting| <WeightDecay as experiment::Experiment>::stem(version, setting, false);
    let checkpoint = |setting: Setting| {
        (ctx.checkpoints.as_ref()).map(|plan| plan.run(&stem(setting), ctx.seed, version, &setting))
    };
    match cfg.engine {
        Engine::Autograd => {
            let mut runs = Vec::new();
            for &setting in settings {
                tch::manual_seed(ctx.seed);
                let start = Instant::now();
                let data = Data::new(&cfg.hyper(), ctx.device);
                let plain = label(version, setting, &[setting.wd]);
                let figure = experiment::live_figure::<Epoch>(&ctx.titled(&plain), cfg.epochs);
                let name = ctx.tagged(plain);
                let progress = progress::Epochs::new(name.clone(), cfg.epochs).with_figure(figure);
                let c = checkpoint(setting);
                let recorder = Recorder::new(&progress).with_board(ctx.board_run(&stem(setting)));
                let mut trained =
                    train_autograd(cfg, version, setting, &data, recorder, (c.as_ref(), name))?;
                validation(&mut trained);
                let interrupted = trained.status == Status::Interrupted;
                runs.push((trained, start.elapsed().as_secs_f64()));
                if interrupted {
                    break;
                }
            }
            Ok(runs)
        }
        Engine::Fused => {
            tch::manual_seed(ctx.seed);
            let start = Instant::now();
            let data = Data::new(&cfg.hyper(), ctx.device);
            let lambdas: Vec<f64> = settings.iter().map(|s| s.wd).collect();
            let plain = format!("{} (fused)", label(version, settings[0], &lambdas));
            let name = ctx.tagged(plain.clone());
            // Every λ's train and test loss, as the autograd runs draw them one by one.
            let legend = (lambdas.iter())
                .flat_map(|&l| ["train", "test"].map(|s| format!("{s} λ={}", fmt_num(l))))
                .collect();
            let figure = progress::Figure {
                legend,
                ..experiment::live_figure::<Epoch>(&ctx.titled(&plain), cfg.epochs)
            };
            let progress = progress::Epochs::new(name, cfg.epochs).with_figure(figure);
            let c = checkpoint(settings[0]);
            let boards = settings
                .iter()
                .filter_map(|&s| ctx.board_run(&stem(s)))
                .collect();
            let mut trained = train_fused(
                cfg,
                version,
                &lambdas,
                &data,
                fused::Loops::Host,
                &progress,
                (c.as_ref(), boards),
            )?;
            for t in &mut trained {
                validation(t);
            }
            let seconds = start.elapsed().as_secs_f64();
            Ok(trained.into_iter().map(|t| (t, seconds)).collect())
        }
    }
}

/// The fused engine on the book's data and initialisation (drawn here, after the data, as the
/// autograd engine draws them): SGD with the L2 penalty, every λ of `lambdas` at once; with
/// `checkpoint`, the group's checkpoint written after each due epoch and, resuming, gone on
/// from (the initial parameters drawn first, as always); each λ's rows to its board, if any.
pub fn train_fused(
    cfg: &Config,
    version: Impl,
    lambdas: &[f64],
    data: &Data,
    loops: fused::Loops,
    progress: &progress::Epochs,
    (checkpoint, boards): (
        Option<&checkpoint::RunCheckpoint>,
        Vec<crate::tensorboard::Run>,
    ),
) -> Result<Vec<Trained>> {
    let device = data.train.x.device();
    let (w0, b0) = match version {
        Impl::Scratch => book::init_params(cfg.num_inputs, device),
        Impl::Concise => {
            let vs = tnn::VarStore::new(device);
            let net = book::concise_net(&vs.root(), cfg.num_inputs);
            (net.ws.tr(), net.bs.expect("a bias"))
        }
    };
    let schedule = fused::Schedule {
        epochs: cfg.epochs,
        lr: cfg.lr,
        batch_size: cfg.batch_size,
    };
    let shape = (cfg.num_inputs as i64, lambdas.len() as i64);
    let start = match checkpoint.filter(|c| c.resume) {
        Some(c) => resume::restore_fused(c, cfg.epochs, shape, device, progress.label())?,
        None => None,
    };
    let mut failure = None;
    let mut keep = |snapshot: fused::Snapshot<'_, Epoch>| {
        let Some(c) = checkpoint.filter(|c| c.due(snapshot.epoch, cfg.epochs)) else {
            return std::ops::ControlFlow::Continue(());
        };
        match resume::save_fused(c, cfg.epochs, snapshot, device) {
            Ok(()) => std::ops::ControlFlow::Continue(()),
            Err(e) => {
                failure = Some(e);
                std::ops::ControlFlow::Break(())
            }
        }
    };
    let hooks = fused::Hooks {
        start,
        keep: checkpoint.map(|_| &mut keep as fused::Keep<'_, Epoch>),
        boards,
    };
    let columns = fused::train(
        schedule,
        version,
        lambdas,
        (&data.train, &data.test),
        (&w0, &b0),
        loops,
        progress,
        Epoch::new,
        hooks,
    );
    if let Some(e) = failure {
        return Err(e);
    }
    Ok(columns
        .into_iter()
        .map(|c| {
            let bias = Tensor::from(c.bias);
            Trained::new(c.curve, c.status, c.w_norm, (&c.weight, &bias))
        })
        .collect())
}

/// What a run is called in messages and progress lines: `weight decay, concise adamw λ=0,3`.
pub fn label(version: Impl, setting: Setting, lambdas: &[f64]) -> String {
    let lambdas: Vec<String> = lambdas.iter().map(|&l| fmt_num(l)).collect();
    format!(
        "weight decay, {}{} λ={}",
        version.name(),
        setting.variant(),
        lambdas.join(",")
    )
}
