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
pub mod fused;

use crate::data::{batches, synthetic, Split};
use crate::experiment::{self, fmt_num, Context, EpochRow, Experiment, Run, SettingStats, Stat};
use crate::nn::{decay, Linear};
use crate::options::{
    defaults, non_negative_f64, positive_f64, positive_usize, Engine, Version, VersionChoice,
};
use crate::plot::{Figure, Series};
use crate::progress;
use crate::record::{self, Cell};
use crate::stop::{self, Status};
use crate::sweep;
use crate::train::{self, MinibatchSgd, Updater};
use anyhow::Result;
use serde::Serialize;
use std::path::Path;
use std::time::Instant;
use tch::nn::{self as tnn, Module};
use tch::{Device, Kind, Reduction, Tensor};

/// Hyper-parameters of §4.5, the book's values as defaults.
#[derive(clap::Args, Debug, Clone, Serialize, serde::Deserialize)]
pub struct Config {
    /// Weight decay λ values, comma-separated; every version runs once per λ
    #[arg(long, value_delimiter = ',', allow_negative_numbers = true, default_value = "0,3", value_parser = non_negative_f64)]
    pub wd: Vec<f64>,
    /// Which version of the book's code to run
    #[arg(long = "impl", value_enum, default_value_t = VersionChoice::Both)]
    #[serde(rename = "implementation")]
    pub versions: VersionChoice,
    /// autograd: the book's code op by op, PyTorch's numbers on the CPU; fused: closed-form gradients, every λ in one batched model
    #[arg(long, value_enum, default_value_t = Engine::Autograd)]
    pub engine: Engine,
    #[arg(long, allow_negative_numbers = true, default_value_t = 100, value_parser = positive_usize)]
    pub epochs: usize,
    #[arg(long, allow_negative_numbers = true, default_value_t = 0.003, value_parser = positive_f64)]
    pub lr: f64,
    #[arg(long, allow_negative_numbers = true, default_value_t = 5, value_parser = positive_usize)]
    pub batch_size: usize,
    #[arg(long, allow_negative_numbers = true, default_value_t = 20, value_parser = positive_usize)]
    pub n_train: usize,
    #[arg(long, allow_negative_numbers = true, default_value_t = 100, value_parser = positive_usize)]
    pub n_test: usize,
    #[arg(long, allow_negative_numbers = true, default_value_t = 200, value_parser = positive_usize)]
    pub num_inputs: usize,
    /// Penalty on the weight: l2 (λ‖w‖²/2, the book's), l1 (λ‖w‖₁ by its subgradient) or l1-prox (λ‖w‖₁ by soft-thresholding); several (comma-separated) train each
    #[arg(long, value_enum, value_delimiter = ',', default_value = "l2")]
    pub penalty: Vec<Penalty>,
    /// Optimizer of the concise version: sgd (the book's), adam (λ·w added to the gradient, then normalised), adamw (decoupled decay); several train each
    #[arg(long, value_enum, value_delimiter = ',', default_value = "sgd")]
    pub optimizer: Vec<Optimizer>,
    /// Also draw a validation split of N examples (after the train and test splits, which stay the same) and record each run's final validation loss; sweeps then mark the λ it chooses
    #[arg(long, allow_negative_numbers = true, value_parser = positive_usize)]
    pub n_val: Option<usize>,
}

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

    /// This optimizer over `vs`, the weights (decay group) decaying by `wd`, the bias not.
    pub fn build(self, vs: &tnn::VarStore, lr: f64, wd: f64) -> Result<tnn::Optimizer> {
        match self {
            Optimizer::Sgd => decay::optimizer(tnn::Sgd::default(), vs, lr, wd),
            Optimizer::Adam => decay::optimizer(tnn::Adam::default(), vs, lr, wd),
            Optimizer::Adamw => decay::optimizer(tnn::AdamW::default(), vs, lr, wd),
        }
    }
}

/// One run's setting: the optimizer (concise), the penalty and λ.
#[derive(Debug, Clone, Copy, PartialEq)]
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

// ---------------------------------------------------------------- §4.5.1 data

/// The §4.5 data: y = 0.05 + Σ 0.01·xᵢ + ε, training set first, then the test set.
pub struct Data {
    pub train: Split,
    pub test: Split,
}

impl Data {
    pub fn new(cfg: &Config, device: Device) -> Data {
        let (true_w, true_b) = synthetic::true_params(cfg.num_inputs, device);
        let train = synthetic::synthetic_data(&true_w, true_b, cfg.n_train);
        let test = synthetic::synthetic_data(&true_w, true_b, cfg.n_test);
        Data { train, test }
    }
}

/// What the validation split's generator is seeded with, beside the run's seed.
const VALIDATION_SEED: i64 = 0x7a11d;

/// `--n-val` examples from the same distribution, drawn after training from a generator seeded
/// with the run's seed and `VALIDATION_SEED`: the same split for every run of a seed, and no
/// draw of the training (data, initialisation, batches) moves.
pub fn validation_split(cfg: &Config, seed: i64, device: Device) -> Option<Split> {
    let n = cfg.n_val?;
    tch::manual_seed(seed.wrapping_mul(31).wrapping_add(VALIDATION_SEED));
    let (true_w, true_b) = synthetic::true_params(cfg.num_inputs, device);
    Some(synthetic::synthetic_data(&true_w, true_b, n))
}

/// One row of `<impl>-wd<λ>.csv`: the mean per-example loss, without the penalty, after an epoch.
#[derive(Debug, Clone, Copy, Default, Serialize)]
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
    /// The final mean loss on the validation split (NaN without one; see [`Trained::validate`]).
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

    /// Sets the validation loss: the mean of the version's loss (½·squared error for scratch,
    /// squared error for concise) over `val`, in f64.
    pub fn validate(&mut self, val: &Split, version: Version) {
        let w = self.weight.to_kind(Kind::Double).unsqueeze(1);
        let predicted = val.x.to_kind(Kind::Double).matmul(&w) + self.bias.to_kind(Kind::Double);
        let se = (predicted - val.y.to_kind(Kind::Double)).square();
        let half = if version == Version::Scratch {
            0.5
        } else {
            1.0
        };
        self.val_loss = se.mean(None).double_value(&[]) * half;
    }
}

// ---------------------------------------------------------------- §4.5.2 from scratch

/// w ~ N(0, 1) of shape `[num_inputs, 1]`, b = 0.
pub fn init_params(num_inputs: usize, device: Device) -> (Tensor, Tensor) {
    let w = Tensor::empty([num_inputs as i64, 1], (Kind::Float, device))
        .normal_(0.0, 1.0)
        .set_requires_grad(true);
    let b = Tensor::zeros([1], (Kind::Float, device)).set_requires_grad(true);
    (w, b)
}

/// ‖w‖² / 2.
pub fn l2_penalty(w: &Tensor) -> Tensor {
    w.pow_tensor_scalar(2).sum(None) / 2
}

/// The book's `linreg`: Xw + b.
pub fn linreg(x: &Tensor, w: &Tensor, b: &Tensor) -> Tensor {
    x.matmul(w) + b
}

/// The book's `squared_loss`, per example: (ŷ − y)² / 2.
pub fn squared_loss(y_hat: &Tensor, y: &Tensor) -> Tensor {
    (y_hat - y.reshape(y_hat.size())).pow_tensor_scalar(2) / 2
}

/// ‖w‖₁ (book §4.5, exercise 3: what happens with an L1 penalty).
pub fn l1_penalty(w: &Tensor) -> Tensor {
    w.abs().sum(None)
}

/// Trains with the penalty (λ‖w‖²/2, or λ‖w‖₁) added to every example's loss and the book's
/// minibatch SGD. Autograd differentiates ‖w‖₁ to its subgradient sign(w) (0 at 0), so the L1
/// update is w −= lr·(Σ ∂loss/∂w + B·λ·sign(w)) / batch_size. With `l1-prox` the step is on the
/// data loss alone, then w is soft-thresholded by lr·λ·B/batch_size (the proximal step of the
/// same penalty).
pub fn train_scratch(
    cfg: &Config,
    setting: Setting,
    data: &Data,
    progress: &progress::Epochs,
) -> Trained {
    let (w, b) = init_params(cfg.num_inputs, data.train.x.device());
    let net = |x: &Tensor| linreg(x, &w, &b);
    let (lambd, penalty) = (setting.wd, setting.penalty);
    let penalized = |y_hat: &Tensor, y: &Tensor| {
        let p = match penalty {
            Penalty::L2 => l2_penalty(&w),
            Penalty::L1 => l1_penalty(&w),
            Penalty::L1Prox => return squared_loss(y_hat, y),
        };
        squared_loss(y_hat, y) + p * lambd
    };
    let mut sgd = MinibatchSgd {
        params: vec![w.shallow_clone(), b.shallow_clone()],
        lr: cfg.lr,
        batch_size: cfg.batch_size,
    };
    let mut prox = SoftThreshold {
        inner: &mut sgd,
        weights: vec![w.shallow_clone()],
        per_example: Some(cfg.lr * lambd / cfg.batch_size as f64),
        per_step: 0.0,
    };
    let updater: &mut dyn Updater = match penalty {
        Penalty::L1Prox => &mut prox,
        _ => prox.inner,
    };
    let (curve, status) = train(
        cfg,
        data,
        &net,
        &penalized,
        &squared_loss,
        updater,
        progress,
    );
    let w_norm = w.norm().double_value(&[]);
    Trained::new(curve, status, w_norm, (&w, &b))
}

// ---------------------------------------------------------------- §4.5.3 concise

/// `nn.Linear(num_inputs, 1)` with both parameters re-drawn from N(0, 1) (the book's
/// `param.data.normal_()`), the weight in the decay group, the bias not.
pub fn concise_net(vs: &tnn::Path, num_inputs: usize) -> Linear {
    let mut net = Linear::new(vs, num_inputs as i64, 1);
    tch::no_grad(|| {
        for param in [&mut net.weight, &mut net.bias] {
            let _ = param.normal_(0.0, 1.0);
        }
    });
    net
}

/// Trains [`concise_net`] with the setting's optimizer. With L2 the optimizer decays the
/// weight group by λ and the bias group not at all; libtorch's optimizers have no L1, so with
/// L1 the penalty λ‖w‖₁ of the decay group's variables is added to the loss instead, and with
/// `l1-prox` (SGD only) the decay group is soft-thresholded by lr·λ after each step.
pub fn train_concise(
    cfg: &Config,
    setting: Setting,
    data: &Data,
    progress: &progress::Epochs,
) -> Trained {
    let vs = tnn::VarStore::new(data.train.x.device());
    let net = concise_net(&vs.root(), cfg.num_inputs);
    let mse = |y_hat: &Tensor, y: &Tensor| y_hat.mse_loss(y, Reduction::None);
    let decaying = decay::decaying_variables(&vs);
    let (lambd, penalty) = (setting.wd, setting.penalty);
    let penalized = |y_hat: &Tensor, y: &Tensor| match penalty {
        Penalty::L2 | Penalty::L1Prox => mse(y_hat, y),
        Penalty::L1 => {
            let l1 = decaying
                .iter()
                .map(l1_penalty)
                .fold(Tensor::zeros([], (Kind::Float, y.device())), |a, b| a + b);
            mse(y_hat, y) + l1 * lambd
        }
    };
    let optimizer_decay = match penalty {
        Penalty::L2 => lambd,
        Penalty::L1 | Penalty::L1Prox => 0.0,
    };
    let mut trainer = setting
        .optimizer
        .build(&vs, cfg.lr, optimizer_decay)
        .expect("an optimizer over a fresh VarStore");
    let mut prox = SoftThreshold {
        inner: &mut trainer,
        weights: decaying.iter().map(Tensor::shallow_clone).collect(),
        per_example: None,
        per_step: cfg.lr * lambd,
    };
    let updater: &mut dyn Updater = match penalty {
        Penalty::L1Prox => &mut prox,
        _ => prox.inner,
    };
    let forward = |x: &Tensor| net.forward(x);
    let (curve, status) = train(cfg, data, &forward, &penalized, &mse, updater, progress);
    let w_norm = net.weight.norm().double_value(&[]);
    Trained::new(curve, status, w_norm, (&net.weight, &net.bias))
}

/// An updater followed by the proximal step of λ‖w‖₁ on `weights`: soft-thresholding,
/// w ← sign(w)·max(|w| − t, 0), which sets small weights to exactly 0 (ISTA). The threshold t
/// is `per_step`, or `per_example` times the batch's examples (the scratch version's penalty is
/// in every example's loss).
struct SoftThreshold<'a> {
    inner: &'a mut dyn Updater,
    weights: Vec<Tensor>,
    per_example: Option<f64>,
    per_step: f64,
}

impl Updater for SoftThreshold<'_> {
    fn update(&mut self, losses: &Tensor) {
        self.inner.update(losses);
        let t = self
            .per_example
            .map_or(self.per_step, |t| t * losses.size()[0] as f64);
        tch::no_grad(|| {
            for w in &mut self.weights {
                let shrunk = w.sign() * (w.abs() - t).clamp_min(0.0);
                w.copy_(&shrunk);
            }
        });
    }
}

/// The book's `torch.optim.SGD([{"params": weight, "weight_decay": wd}, {"params": bias}])`:
/// every variable of `vs` in the decay group decays by `wd`, the others do not.
pub fn sgd_decaying_weights(vs: &tnn::VarStore, lr: f64, wd: f64) -> tnn::Optimizer {
    Optimizer::Sgd
        .build(vs, lr, wd)
        .expect("SGD over a fresh VarStore")
}

/// The loop both versions share: every epoch, shuffled mini-batches, then the train and test
/// losses evaluated without gradients and read in one transfer.
fn train(
    cfg: &Config,
    data: &Data,
    net: &dyn Fn(&Tensor) -> Tensor,
    train_loss: &dyn Fn(&Tensor, &Tensor) -> Tensor,
    eval_loss: &dyn Fn(&Tensor, &Tensor) -> Tensor,
    updater: &mut dyn Updater,
    progress: &progress::Epochs,
) -> (Vec<Epoch>, Status) {
    let start = Instant::now();
    experiment::train_epochs(cfg.epochs, progress, |epoch| {
        let shuffled = batches::shuffled(&data.train, cfg.batch_size);
        train::train_epoch(shuffled, net, train_loss, updater, None);
        if stop::requested().is_some() {
            return None;
        }
        let [train_loss, test_loss] = train::read(&[
            &train::evaluate_loss(&data.train, net, eval_loss),
            &train::evaluate_loss(&data.test, net, eval_loss),
        ]);
        let elapsed = start.elapsed().as_secs_f64();
        Some(Epoch::new(epoch, train_loss, test_loss, elapsed))
    })
}

// ---------------------------------------------------------------- runs

/// Trains one version at one setting from a freshly seeded generator, so every run is
/// reproducible on its own: the data are the same for every setting and version. Returns the
/// wall time too.
pub fn run_one(cfg: &Config, version: Version, setting: Setting, ctx: &Context) -> (Trained, f64) {
    let mut runs = run_group(cfg, version, &[setting], ctx);
    runs.remove(0)
}

/// Every setting of `settings` for one version, each with its wall time. The autograd engine
/// trains them one after the other (none after an interrupted one); the fused engine trains
/// them together as one batched model (same seed, so same data, initialisation and batches)
/// and reports that shared time for each (it trains the book's SGD with L2 only: `prepare`
/// refuses the others).
pub fn run_group(
    cfg: &Config,
    version: Version,
    settings: &[Setting],
    ctx: &Context,
) -> Vec<(Trained, f64)> {
    match cfg.engine {
        Engine::Autograd => {
            let mut runs = Vec::new();
            for &setting in settings {
                tch::manual_seed(ctx.seed);
                let start = Instant::now();
                let data = Data::new(cfg, ctx.device);
                let name = label(version, setting, &[setting.wd]);
                let progress = progress::Epochs::new(ctx.tagged(name), cfg.epochs);
                let mut trained = match version {
                    Version::Scratch => train_scratch(cfg, setting, &data, &progress),
                    Version::Concise => train_concise(cfg, setting, &data, &progress),
                };
                if let Some(val) = validation_split(cfg, ctx.seed, ctx.device) {
                    trained.validate(&val, version);
                }
                let interrupted = trained.status == Status::Interrupted;
                runs.push((trained, start.elapsed().as_secs_f64()));
                if interrupted {
                    break;
                }
            }
            runs
        }
        Engine::Fused => {
            tch::manual_seed(ctx.seed);
            let start = Instant::now();
            let data = Data::new(cfg, ctx.device);
            let lambdas: Vec<f64> = settings.iter().map(|s| s.wd).collect();
            let name = format!("{} (fused)", label(version, settings[0], &lambdas));
            let progress = progress::Epochs::new(ctx.tagged(name), cfg.epochs);
            let mut trained =
                train_fused(cfg, version, &lambdas, &data, fused::Loops::Host, &progress);
            if let Some(val) = validation_split(cfg, ctx.seed, ctx.device) {
                for t in &mut trained {
                    t.validate(&val, version);
                }
            }
            let seconds = start.elapsed().as_secs_f64();
            trained.into_iter().map(|t| (t, seconds)).collect()
        }
    }
}

/// The fused engine on the book's data and initialisation (drawn here, after the data, as the
/// autograd engine draws them): SGD with the L2 penalty, every λ of `lambdas` at once.
pub fn train_fused(
    cfg: &Config,
    version: Version,
    lambdas: &[f64],
    data: &Data,
    loops: fused::Loops,
    progress: &progress::Epochs,
) -> Vec<Trained> {
    let device = data.train.x.device();
    let (w0, b0) = match version {
        Version::Scratch => init_params(cfg.num_inputs, device),
        Version::Concise => {
            let vs = tnn::VarStore::new(device);
            let net = concise_net(&vs.root(), cfg.num_inputs);
            (net.weight.tr(), net.bias.shallow_clone())
        }
    };
    let schedule = fused::Schedule {
        epochs: cfg.epochs,
        lr: cfg.lr,
        batch_size: cfg.batch_size,
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
    );
    columns
        .into_iter()
        .map(|c| {
            let bias = Tensor::from(c.bias);
            Trained::new(c.curve, c.status, c.w_norm, (&c.weight, &bias))
        })
        .collect()
}

/// What a run is called in messages and progress lines: `weight decay, concise adamw λ=0,3`.
pub fn label(version: Version, setting: Setting, lambdas: &[f64]) -> String {
    let lambdas: Vec<String> = lambdas.iter().map(|&l| fmt_num(l)).collect();
    format!(
        "weight decay, {}{} λ={}",
        version.name(),
        setting.variant(),
        lambdas.join(",")
    )
}

// ---------------------------------------------------------------- the experiment

/// §4.5 as a command: `weight-decay`, its runs one per version and setting (optimizer,
/// penalty, λ).
pub struct WeightDecay;

/// The final figures: always the first five, the validation loss with `--n-val`.
const FINALS: [&str; 6] = [
    "w_norm",
    "w_l1",
    "w_small",
    "final_train_loss",
    "final_test_loss",
    "final_val_loss",
];

impl WeightDecay {
    /// The groups of settings a sweep compares λ within: one per version, optimizer and
    /// penalty (each group's `[first, end)` range in `settings`).
    fn groups(settings: &[SettingStats<Setting>]) -> Vec<std::ops::Range<usize>> {
        let mut groups: Vec<std::ops::Range<usize>> = Vec::new();
        for (i, s) in settings.iter().enumerate() {
            let same = |o: &SettingStats<Setting>| {
                o.version == s.version
                    && o.setting.optimizer == s.setting.optimizer
                    && o.setting.penalty == s.setting.penalty
            };
            match groups.last_mut() {
                Some(g) if same(&settings[g.start]) => g.end = i + 1,
                _ => groups.push(i..i + 1),
            }
        }
        groups
    }

    /// The setting of `range` with the lowest mean of `stat` among those that finished.
    fn lowest(
        settings: &[SettingStats<Setting>],
        range: std::ops::Range<usize>,
        stat: &str,
    ) -> Option<usize> {
        range
            .filter(|&i| settings[i].seeds_ok > 0 && settings[i].stat(stat).0.is_finite())
            .min_by(|&a, &b| {
                settings[a]
                    .stat(stat)
                    .0
                    .total_cmp(&settings[b].stat(stat).0)
            })
    }

    /// `concise adamw l1`: a group's name in notes and legends.
    fn group_name(version: Version, setting: Setting) -> String {
        format!("{}{}", version.name(), setting.variant())
    }
}

impl Experiment for WeightDecay {
    const NAME: &'static str = "weight-decay";
    const SETTING_COLUMNS: &'static [&'static str] = &["optimizer", "penalty", "wd"];
    const SWEEP_TABLE: &'static [&'static str] = &[
        "impl",
        "optimizer",
        "penalty",
        "λ",
        "status",
        "train loss",
        "test loss",
        "gap",
        "‖w‖",
        "val loss",
    ];
    const SWEPT_KEYS: &'static [&'static str] = &["wd", "penalty", "optimizer"];
    type Config = Config;
    type Setting = Setting;
    /// Nothing: each run draws its data from its own seed.
    type Data = ();
    type Row = Epoch;
    type Model = ();

    /// Penalty by penalty, optimizer by optimizer, every λ.
    fn settings(cfg: &Config) -> Vec<Setting> {
        let mut settings = Vec::new();
        for &penalty in &cfg.penalty {
            for &optimizer in &cfg.optimizer {
                for &wd in &cfg.wd {
                    settings.push(Setting {
                        optimizer,
                        penalty,
                        wd,
                    });
                }
            }
        }
        settings
    }

    /// The scratch version has one optimizer, the book's minibatch SGD.
    fn settings_for(cfg: &Config, version: Version) -> Vec<Setting> {
        let mut settings = Self::settings(cfg);
        if version == Version::Scratch {
            settings.retain(|s| s.optimizer == cfg.optimizer[0]);
            for s in &mut settings {
                s.optimizer = Optimizer::Sgd;
            }
        }
        settings
    }

    fn setting_cells(s: Setting) -> Vec<Cell> {
        vec![
            Cell::text(s.optimizer.name()),
            Cell::text(s.penalty.name()),
            Cell::Float(s.wd),
        ]
    }

    fn finals(cfg: &Config) -> Vec<&'static str> {
        let n = if cfg.n_val.is_some() { 6 } else { 5 };
        FINALS[..n].to_vec()
    }

    fn sweep_stats(cfg: &Config) -> Vec<(&'static str, Stat)> {
        let mut stats = vec![
            ("train_loss", Stat::Final(3)),
            ("test_loss", Stat::Final(4)),
            ("gap", Stat::Gap),
            ("w_norm", Stat::Final(0)),
            ("w_l1", Stat::Final(1)),
            ("w_small", Stat::Final(2)),
        ];
        if cfg.n_val.is_some() {
            stats.push(("val_loss", Stat::Final(5)));
        }
        stats
    }

    fn versions(cfg: &Config) -> Vec<Version> {
        cfg.versions.versions()
    }

    /// Version by version, then penalty by penalty and optimizer by optimizer, every λ of a
    /// group together (the fused engine trains them as one batched model).
    fn schedule(cfg: &Config) -> Vec<(Version, Vec<Setting>)> {
        let mut groups = Vec::new();
        for version in cfg.versions.versions() {
            let settings = Self::settings_for(cfg, version);
            for chunk in settings.chunks(cfg.wd.len()) {
                groups.push((version, chunk.to_vec()));
            }
        }
        groups
    }

    /// Refuses what cannot run: an optimizer for the scratch version alone, and the fused
    /// engine with anything but the book's SGD and L2.
    fn prepare(cfg: &Config, _ctx: &Context) -> Result<()> {
        let non_sgd: Vec<&str> = cfg
            .optimizer
            .iter()
            .filter(|o| **o != Optimizer::Sgd)
            .map(|o| o.name())
            .collect();
        if cfg.versions == VersionChoice::Scratch && !non_sgd.is_empty() {
            anyhow::bail!(
                "--optimizer {} applies to the concise version; the scratch version is the \
                 book's own minibatch SGD. Add --impl concise (or both), or drop --optimizer",
                non_sgd.join(",")
            );
        }
        if cfg.penalty.contains(&Penalty::L1Prox) && !non_sgd.is_empty() {
            anyhow::bail!(
                "--penalty l1-prox is a proximal step for SGD; with --optimizer {} use --penalty \
                 l1 (the subgradient) or l2",
                non_sgd.join(",")
            );
        }
        if cfg.engine == Engine::Fused
            && (!non_sgd.is_empty() || cfg.penalty.iter().any(|p| *p != Penalty::L2))
        {
            anyhow::bail!(
                "--engine fused trains the book's SGD with the L2 penalty only; use --engine \
                 autograd for --optimizer adam/adamw or --penalty l1/l1-prox"
            );
        }
        Ok(())
    }

    fn train(
        cfg: &Config,
        _: &(),
        version: Version,
        settings: &[Setting],
        ctx: &Context,
    ) -> Vec<Run<Self>> {
        let with_val = cfg.n_val.is_some();
        run_group(cfg, version, settings, ctx)
            .into_iter()
            .map(|(trained, seconds)| {
                let last = trained.curve.last();
                let mut finals = vec![
                    trained.w_norm,
                    trained.w_l1,
                    trained.w_small,
                    last.map_or(f64::NAN, |e| e.train_loss),
                    last.map_or(f64::NAN, |e| e.test_loss),
                ];
                if with_val {
                    finals.push(trained.val_loss);
                }
                Run {
                    finals,
                    curve: trained.curve,
                    status: trained.status,
                    seconds,
                    model: (),
                }
            })
            .collect()
    }

    fn label(version: Version, setting: Setting) -> String {
        label(version, setting, &[setting.wd])
    }

    /// `<impl>[-<optimizer>][-<penalty>]-wd<λ>`, naming only what differs from the book's.
    fn stem(version: Version, setting: Setting, _alone: bool) -> String {
        format!(
            "{}{}-wd{}",
            version.name(),
            setting.suffix(),
            fmt_num(setting.wd)
        )
    }

    fn report(run: &Run<Self>) -> String {
        format!("L2 norm of w: {:.6}", run.finals[0])
    }

    fn advice(cfg: &Config) -> String {
        format!(
            "try a smaller --lr (this run used {}) or a smaller λ (--wd)",
            cfg.lr
        )
    }

    /// Final test loss − final train loss.
    fn gap(finals: &[f64]) -> f64 {
        experiment::round_derived(finals[4] - finals[3])
    }

    /// Train and test loss against epoch, log scale (the book's figure).
    fn curve_chart<'a>(title: &'a str) -> record::Chart<'a, Epoch> {
        record::Chart {
            title,
            x: ("epoch", "epoch", |e| e.epoch as f64),
            panels: &[record::Panel {
                y_label: "loss",
                log_y: true,
                series: &[
                    ("train", "train_loss", |e| e.train_loss),
                    ("test", "test_loss", |e| e.test_loss),
                ],
                color_offset: 0,
            }],
        }
    }

    fn curve_title(version: Version, setting: Setting, run: &Run<Self>) -> String {
        format!(
            "weight decay, {}{}, λ = {}: ‖w‖ = {:.3}",
            version.name(),
            setting.variant(),
            fmt_num(setting.wd),
            run.finals[0]
        )
    }

    /// `<impl>[-<optimizer>][-<penalty>]-all.svg`: the train and test curves of every λ of a
    /// group in one figure.
    fn write_overview_charts(
        dir: &Path,
        runs: &[(Version, Setting, &Run<Self>)],
        plots: bool,
    ) -> Result<()> {
        let same = |a: &(Version, Setting, &Run<Self>), b: &(Version, Setting, &Run<Self>)| {
            a.0 == b.0 && a.1.optimizer == b.1.optimizer && a.1.penalty == b.1.penalty
        };
        let mut start = 0;
        while start < runs.len() {
            let end = start
                + runs[start..]
                    .iter()
                    .take_while(|r| same(r, &runs[start]))
                    .count();
            let (version, setting, _) = runs[start];
            let path = dir.join(format!("{}{}-all.svg", version.name(), setting.suffix()));
            if plots {
                let mut series = Vec::new();
                for (i, (_, s, run)) in runs[start..end].iter().enumerate() {
                    let l = fmt_num(s.wd);
                    series.extend(experiment::train_test_curves(
                        &run.curve,
                        |e| e.epoch as f64,
                        [
                            (format!("train λ={l}"), |e| e.train_loss),
                            (format!("test λ={l}"), |e| e.test_loss),
                        ],
                        i,
                    ));
                }
                record::write_chart(
                    &path,
                    &Figure {
                        title: format!(
                            "weight decay, {}{}: every λ",
                            version.name(),
                            setting.variant()
                        ),
                        x_label: "epoch".into(),
                        y_label: "loss".into(),
                        log_y: true,
                        ..Default::default()
                    },
                    &series,
                )?;
            } else {
                record::remove_stale(&path);
            }
            start = end;
        }
        Ok(())
    }

    /// `summary.svg`: final train and test loss (mean ± sd over the seeds) against λ (a log
    /// axis, 0 drawn apart), one pair of curves per version, optimizer and penalty;
    /// `summary-w.svg`: ‖w‖ against λ, one curve each (Adam's coupled decay against AdamW's at
    /// equal λ).
    fn sweep_charts(
        cfg: &Config,
        settings: &[SettingStats<Setting>],
        seeds: usize,
    ) -> Vec<experiment::SweepChart> {
        let mut losses = Vec::new();
        let mut norms = Vec::new();
        let wd = |s: &Setting| s.wd;
        for (i, range) in Self::groups(settings).into_iter().enumerate() {
            let rows: Vec<&SettingStats<Setting>> = settings[range].iter().collect();
            let name = Self::group_name(rows[0].version, rows[0].setting);
            losses.extend(sweep::train_test_series(
                &rows,
                wd,
                ["train_loss", "test_loss"],
                &name,
                i,
            ));
            let (points, errors) = sweep::at_settings(&rows, wd, |s| s.stat("w_norm"));
            norms.push(
                Series::line(format!("‖w‖ {name}"), points, i)
                    .with_markers()
                    .with_errors(errors),
            );
        }
        let axes = |y_label: &str| Figure {
            x_label: "λ (weight decay)".into(),
            y_label: y_label.into(),
            log_y: true,
            x_log: true,
            ..Default::default()
        };
        vec![
            (
                "summary.svg".into(),
                sweep::title("weight decay: final loss", cfg.epochs, seeds),
                vec![(axes("loss"), losses)],
            ),
            (
                "summary-w.svg".into(),
                sweep::title("weight decay: ‖w‖", cfg.epochs, seeds),
                vec![(axes("‖w‖"), norms)],
            ),
        ]
    }

    /// With `--n-val`: `chosen_by_validation` (the λ of lowest mean validation loss) and
    /// `best_by_test` (of lowest mean test loss), true on one row per version, optimizer and
    /// penalty.
    fn sweep_marks(
        cfg: &Config,
        settings: &[SettingStats<Setting>],
    ) -> (Vec<&'static str>, Vec<Vec<Cell>>) {
        if cfg.n_val.is_none() {
            return (Vec::new(), vec![Vec::new(); settings.len()]);
        }
        let mut marks = vec![vec![Cell::text("false"), Cell::text("false")]; settings.len()];
        for range in Self::groups(settings) {
            if let Some(i) = Self::lowest(settings, range.clone(), "val_loss") {
                marks[i][0] = Cell::text("true");
            }
            if let Some(i) = Self::lowest(settings, range, "test_loss") {
                marks[i][1] = Cell::text("true");
            }
        }
        (vec!["chosen_by_validation", "best_by_test"], marks)
    }

    /// With `--n-val`: for each group, the λ validation picks and the best λ on the test set,
    /// with their test losses.
    fn sweep_notes(cfg: &Config, settings: &[SettingStats<Setting>]) -> Vec<String> {
        let Some(n_val) = cfg.n_val else {
            return Vec::new();
        };
        let mut notes = Vec::new();
        for range in Self::groups(settings) {
            let chosen = Self::lowest(settings, range.clone(), "val_loss");
            let best = Self::lowest(settings, range, "test_loss");
            if let (Some(c), Some(b)) = (chosen, best) {
                let (c, b) = (&settings[c], &settings[b]);
                notes.push(format!(
                    "{}: validation ({n_val} examples) picks λ={} (test loss {:.3e}); the lowest \
                     test loss is at λ={} ({:.3e})",
                    Self::group_name(c.version, c.setting),
                    fmt_num(c.setting.wd),
                    c.stat("test_loss").0,
                    fmt_num(b.setting.wd),
                    b.stat("test_loss").0
                ));
            }
        }
        notes
    }

    fn sweep_table_row(s: &SettingStats<Setting>) -> Vec<String> {
        let val = s
            .stats
            .iter()
            .find(|(n, _)| *n == "val_loss")
            .map_or("—".to_string(), |(_, v)| format!("{:.3e}", v.0));
        vec![
            s.version.name().to_string(),
            s.setting.optimizer.name().to_string(),
            s.setting.penalty.name().to_string(),
            fmt_num(s.setting.wd),
            s.status.name().to_string(),
            format!("{:.3e}", s.stat("train_loss").0),
            format!("{:.3e}", s.stat("test_loss").0),
            format!("{:.3e}", s.stat("gap").0),
            format!("{:.3}", s.stat("w_norm").0),
            val,
        ]
    }

    fn memory_flags(c: &Config) -> String {
        format!(
            "--n-train / --n-test / --num-inputs / --batch-size (now {} / {} / {} / {})",
            c.n_train, c.n_test, c.num_inputs, c.batch_size
        )
    }
}
