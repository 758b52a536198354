//! Book §4.5, weight decay: a linear model with 200 inputs and only 20 training examples
//! overfits; an L2 penalty λ‖w‖²/2 keeps ‖w‖ small and the test loss low.
//!
//! From scratch, the penalty is added to the loss and plain SGD does the rest. Concisely, the
//! optimizer decays the weight through its parameter groups and leaves the bias alone. The
//! fused engine (`fused.rs`) trains the same models with closed-form gradients.
pub mod fused;

use crate::data::{batches, synthetic, Split};
use crate::experiment::{self, fmt_num, Context, EpochRow, Experiment, Run, SettingStats, Stat};
use crate::nn::{decay, Linear};
use crate::options::{
    defaults, non_negative_f64, positive_f64, positive_usize, Engine, Version, VersionChoice,
};
use crate::plot::{Figure, Series};
use crate::progress;
use crate::record;
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
#[derive(clap::Args, Debug, Clone, Serialize)]
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

/// One row of `<impl>-wd<λ>.csv`: the mean per-example loss, without the penalty, after an epoch.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Epoch {
    pub epoch: usize,
    pub train_loss: f64,
    pub test_loss: f64,
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
    fn new(epoch: usize, train_loss: f64, test_loss: f64) -> Epoch {
        Epoch {
            epoch,
            train_loss,
            test_loss,
        }
    }
}

/// A trained model's curve (its finished epochs), the norm of its weight and how it ended.
#[derive(Debug, Clone)]
pub struct Trained {
    pub curve: Vec<Epoch>,
    pub w_norm: f64,
    pub status: Status,
}

impl From<fused::Column<Epoch>> for Trained {
    fn from(c: fused::Column<Epoch>) -> Trained {
        Trained {
            curve: c.curve,
            w_norm: c.w_norm,
            status: c.status,
        }
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

/// Trains with the penalty λ‖w‖²/2 added to every example's loss and the book's minibatch SGD.
pub fn train_scratch(
    cfg: &Config,
    lambd: f64,
    data: &Data,
    progress: &progress::Epochs,
) -> Trained {
    let (w, b) = init_params(cfg.num_inputs, data.train.x.device());
    let net = |x: &Tensor| linreg(x, &w, &b);
    let penalized = |y_hat: &Tensor, y: &Tensor| squared_loss(y_hat, y) + l2_penalty(&w) * lambd;
    let mut sgd = MinibatchSgd {
        params: vec![w.shallow_clone(), b.shallow_clone()],
        lr: cfg.lr,
        batch_size: cfg.batch_size,
    };
    let (curve, status) = train(
        cfg,
        data,
        &net,
        &penalized,
        &squared_loss,
        &mut sgd,
        progress,
    );
    Trained {
        curve,
        w_norm: w.norm().double_value(&[]),
        status,
    }
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

/// Trains [`concise_net`] with an SGD optimizer whose weight group has weight decay `wd` and
/// whose bias group has none.
pub fn train_concise(cfg: &Config, wd: f64, data: &Data, progress: &progress::Epochs) -> Trained {
    let vs = tnn::VarStore::new(data.train.x.device());
    let net = concise_net(&vs.root(), cfg.num_inputs);
    let mse = |y_hat: &Tensor, y: &Tensor| y_hat.mse_loss(y, Reduction::None);
    let mut trainer = sgd_decaying_weights(&vs, cfg.lr, wd);
    let forward = |x: &Tensor| net.forward(x);
    let (curve, status) = train(cfg, data, &forward, &mse, &mse, &mut trainer, progress);
    Trained {
        curve,
        w_norm: net.weight.norm().double_value(&[]),
        status,
    }
}

/// The book's `torch.optim.SGD([{"params": weight, "weight_decay": wd}, {"params": bias}])`:
/// every variable of `vs` in the decay group decays by `wd`, the others do not.
pub fn sgd_decaying_weights(vs: &tnn::VarStore, lr: f64, wd: f64) -> tnn::Optimizer {
    decay::optimizer(tnn::Sgd::default(), vs, lr, wd).expect("SGD over a fresh VarStore")
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
        Some(Epoch::new(epoch, train_loss, test_loss))
    })
}

// ---------------------------------------------------------------- runs

/// Trains one version at one λ from a freshly seeded generator, so every run is reproducible
/// on its own: the data are the same for every λ and version. Returns the wall time too.
pub fn run_one(cfg: &Config, version: Version, wd: f64, ctx: &Context) -> (Trained, f64) {
    let mut runs = run_lambdas(cfg, version, &[wd], ctx);
    runs.remove(0)
}

/// Every λ of `lambdas` for one version, each with its wall time. The autograd engine trains
/// them one after the other (none after an interrupted one); the fused engine trains them
/// together as one batched model (same seed, so same data, initialisation and batches) and
/// reports that shared time for each.
pub fn run_lambdas(
    cfg: &Config,
    version: Version,
    lambdas: &[f64],
    ctx: &Context,
) -> Vec<(Trained, f64)> {
    match cfg.engine {
        Engine::Autograd => {
            let mut runs = Vec::new();
            for &wd in lambdas {
                tch::manual_seed(ctx.seed);
                let start = Instant::now();
                let data = Data::new(cfg, ctx.device);
                let progress = progress::Epochs::new(ctx.tagged(label(version, &[wd])), cfg.epochs);
                let trained = match version {
                    Version::Scratch => train_scratch(cfg, wd, &data, &progress),
                    Version::Concise => train_concise(cfg, wd, &data, &progress),
                };
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
            let name = format!("{} (fused)", label(version, lambdas));
            let progress = progress::Epochs::new(ctx.tagged(name), cfg.epochs);
            let trained = train_fused(cfg, version, lambdas, &data, fused::Loops::Host, &progress);
            let seconds = start.elapsed().as_secs_f64();
            trained.into_iter().map(|t| (t, seconds)).collect()
        }
    }
}

/// The fused engine on the book's data and initialisation (drawn here, after the data, as the
/// autograd engine draws them).
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
    fused::train(
        schedule,
        version,
        lambdas,
        (&data.train, &data.test),
        (&w0, &b0),
        loops,
        progress,
        Epoch::new,
    )
    .into_iter()
    .map(Trained::from)
    .collect()
}

/// What a run is called in messages and progress lines.
pub fn label(version: Version, lambdas: &[f64]) -> String {
    let lambdas: Vec<String> = lambdas.iter().map(|&l| fmt_num(l)).collect();
    format!("weight decay, {} λ={}", version.name(), lambdas.join(","))
}

// ---------------------------------------------------------------- the experiment

/// §4.5 as a command: `weight-decay`, its runs one per version and λ.
pub struct WeightDecay;

impl Experiment for WeightDecay {
    const NAME: &'static str = "weight-decay";
    const SETTING_COLUMNS: &'static [&'static str] = &["wd"];
    const FINALS: &'static [&'static str] = &["w_norm", "final_train_loss", "final_test_loss"];
    const SWEEP_STATS: &'static [(&'static str, Stat)] = &[
        ("train_loss", Stat::Final(1)),
        ("test_loss", Stat::Final(2)),
        ("gap", Stat::Gap),
        ("w_norm", Stat::Final(0)),
    ];
    const SWEEP_TABLE: &'static [&'static str] =
        &["impl", "λ", "status", "train loss", "test loss", "gap"];
    type Config = Config;
    /// λ.
    type Setting = f64;
    /// Nothing: each run draws its data from its own seed.
    type Data = ();
    type Row = Epoch;
    type Model = ();

    fn settings(cfg: &Config) -> Vec<f64> {
        cfg.wd.clone()
    }

    fn setting_values(wd: f64) -> Vec<f64> {
        vec![wd]
    }

    fn versions(cfg: &Config) -> Vec<Version> {
        cfg.versions.versions()
    }

    /// Version by version, every λ of a version together (the fused engine trains them as one
    /// batched model).
    fn schedule(cfg: &Config) -> Vec<(Version, Vec<f64>)> {
        cfg.versions
            .versions()
            .into_iter()
            .map(|v| (v, cfg.wd.clone()))
            .collect()
    }

    fn prepare(_cfg: &Config, _ctx: &Context) -> Result<()> {
        Ok(())
    }

    fn train(
        cfg: &Config,
        _: &(),
        version: Version,
        lambdas: &[f64],
        ctx: &Context,
    ) -> Vec<Run<Self>> {
        run_lambdas(cfg, version, lambdas, ctx)
            .into_iter()
            .map(|(trained, seconds)| {
                let last = trained.curve.last();
                Run {
                    finals: vec![
                        trained.w_norm,
                        last.map_or(f64::NAN, |e| e.train_loss),
                        last.map_or(f64::NAN, |e| e.test_loss),
                    ],
                    curve: trained.curve,
                    status: trained.status,
                    seconds,
                    model: (),
                }
            })
            .collect()
    }

    fn label(version: Version, wd: f64) -> String {
        label(version, &[wd])
    }

    /// `<impl>-wd<λ>`.
    fn stem(version: Version, wd: f64, _alone: bool) -> String {
        format!("{}-wd{}", version.name(), fmt_num(wd))
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
        finals[2] - finals[1]
    }

    /// Train and test loss against epoch, log scale (the book's figure).
    fn curve_chart<'a>(title: &'a str) -> record::Chart<'a, Epoch> {
        record::Chart {
            title,
            x_label: "epoch",
            y_label: "loss",
            x: |e| e.epoch as f64,
            series: &[("train", |e| e.train_loss), ("test", |e| e.test_loss)],
            log_y: true,
        }
    }

    fn curve_title(version: Version, wd: f64, run: &Run<Self>) -> String {
        format!(
            "weight decay, {}, λ = {}: ‖w‖ = {:.3}",
            version.name(),
            fmt_num(wd),
            run.finals[0]
        )
    }

    /// `<impl>-all.svg`: the train and test curves of every λ of a version in one figure.
    fn write_overview_charts(
        dir: &Path,
        runs: &[(Version, f64, &Run<Self>)],
        plots: bool,
    ) -> Result<()> {
        let mut versions: Vec<Version> = runs.iter().map(|r| r.0).collect();
        versions.dedup();
        for version in versions {
            let path = dir.join(format!("{}-all.svg", version.name()));
            if !plots {
                record::remove_stale(&path);
                continue;
            }
            let mut series = Vec::new();
            for (i, (_, wd, run)) in runs.iter().filter(|r| r.0 == version).enumerate() {
                let l = fmt_num(*wd);
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
                    title: format!("weight decay, {}: every λ", version.name()),
                    x_label: "epoch".into(),
                    y_label: "loss".into(),
                    log_y: true,
                    x_categories: None,
                },
                &series,
            )?;
        }
        Ok(())
    }

    /// Final train and test loss (mean ± sd over the seeds) against λ, for each version.
    fn sweep_chart(
        cfg: &Config,
        settings: &[SettingStats<f64>],
        seeds: usize,
    ) -> (Figure, Vec<Series>) {
        let mut series = Vec::new();
        for (i, version) in cfg.versions.versions().into_iter().enumerate() {
            let rows: Vec<&SettingStats<f64>> =
                settings.iter().filter(|s| s.version == version).collect();
            series.extend(sweep::train_test_series::<Self>(
                &rows,
                ["train_loss", "test_loss"],
                version.name(),
                i,
            ));
        }
        let figure = Figure {
            title: sweep::title("weight decay: final loss", cfg.epochs, seeds),
            x_label: "λ".into(),
            y_label: "loss".into(),
            log_y: true,
            x_categories: Some(cfg.wd.iter().map(|&l| fmt_num(l)).collect()),
        };
        (figure, series)
    }

    fn sweep_table_row(s: &SettingStats<f64>) -> Vec<String> {
        vec![
            s.version.name().to_string(),
            fmt_num(s.setting),
            s.status.name().to_string(),
            format!("{:.3e}", s.stat::<Self>("train_loss").0),
            format!("{:.3e}", s.stat::<Self>("test_loss").0),
            format!("{:.3e}", s.stat::<Self>("gap").0),
        ]
    }

    fn memory_flags(c: &Config) -> String {
        format!(
            "--n-train / --n-test / --num-inputs / --batch-size (now {} / {} / {} / {})",
            c.n_train, c.n_test, c.num_inputs, c.batch_size
        )
    }
}
