//! Book §4.5, weight decay: a linear model with 200 inputs and only 20 training examples
//! overfits; an L2 penalty λ‖w‖²/2 keeps ‖w‖ small and the test loss low.
//!
//! From scratch, the penalty is added to the loss and plain SGD does the rest. Concisely, the
//! optimizer decays the weight through its parameter groups and leaves the bias alone.
use super::{fmt_num, Context};
use crate::cli::{non_negative_f64, positive_f64, positive_usize, Impl, ImplChoice};
use crate::data::{batches, synthetic, Split};
use crate::fused::{linreg, Engine};
use crate::nn::{decay, Linear};
use crate::plot::{Figure, Series};
use crate::progress;
use crate::record;
use crate::stop::{self, Status};
use crate::train::{self, MinibatchSgd, Updater};
use anyhow::Result;
use serde::Serialize;
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
    #[arg(long = "impl", value_enum, default_value_t = ImplChoice::Both)]
    pub implementation: ImplChoice,
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
        crate::cli::defaults()
    }
}

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

impl Epoch {
    /// The figures a progress bar shows.
    pub fn figures(&self) -> String {
        format!(
            "train loss {:.3e}, test loss {:.3e}",
            self.train_loss, self.test_loss
        )
    }
}

/// A trained model's curve (its finished epochs), the norm of its weight and how it ended.
#[derive(Debug, Clone)]
pub struct Trained {
    pub curve: Vec<Epoch>,
    pub w_norm: f64,
    pub status: Status,
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

/// Trains [`concise_net`] with an SGD
/// optimizer whose weight group has weight decay `wd` and whose bias group has none.
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
/// losses evaluated without gradients and read in one transfer. It ends early when a loss is
/// NaN or infinite (that epoch is not kept) or when a stop was requested (Ctrl-C).
fn train(
    cfg: &Config,
    data: &Data,
    net: &dyn Fn(&Tensor) -> Tensor,
    train_loss: &dyn Fn(&Tensor, &Tensor) -> Tensor,
    eval_loss: &dyn Fn(&Tensor, &Tensor) -> Tensor,
    updater: &mut dyn Updater,
    progress: &progress::Epochs,
) -> (Vec<Epoch>, Status) {
    let mut curve = Vec::with_capacity(cfg.epochs);
    for epoch in 1..=cfg.epochs {
        train::train_epoch(
            batches::shuffled(&data.train, cfg.batch_size),
            net,
            train_loss,
            updater,
            None,
        );
        if stop::requested().is_some() {
            return (curve, Status::Interrupted);
        }
        let [train_loss, test_loss] = train::read(&[
            &train::evaluate_loss(&data.train, net, eval_loss),
            &train::evaluate_loss(&data.test, net, eval_loss),
        ]);
        if !stop::finite(&[train_loss, test_loss]) {
            return (curve, Status::Diverged);
        }
        let row = Epoch {
            epoch,
            train_loss,
            test_loss,
        };
        progress.epoch(epoch, &row.figures());
        curve.push(row);
    }
    (curve, Status::Ok)
}

// ---------------------------------------------------------------- running and recording

/// One line of `summary.csv`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Summary {
    #[serde(rename = "impl")]
    pub implementation: Impl,
    pub wd: f64,
    /// ok, diverged or interrupted.
    pub status: Status,
    /// Epochs finished (the curve's rows).
    pub epochs: usize,
    pub w_norm: f64,
    pub final_train_loss: f64,
    pub final_test_loss: f64,
    pub seconds: f64,
}

impl Summary {
    pub fn new(implementation: Impl, wd: f64, trained: &Trained, seconds: f64) -> Summary {
        let last = trained.curve.last();
        Summary {
            implementation,
            wd,
            status: trained.status,
            epochs: trained.curve.len(),
            w_norm: trained.w_norm,
            final_train_loss: last.map_or(f64::NAN, |e| e.train_loss),
            final_test_loss: last.map_or(f64::NAN, |e| e.test_loss),
            seconds,
        }
    }
}

/// The file name (without extension) of one run's curve: `<impl>-wd<λ>`.
pub fn stem(implementation: Impl, wd: f64) -> String {
    format!("{}-wd{}", implementation.name(), fmt_num(wd))
}

/// What a run is called in messages and progress lines.
pub fn label(implementation: Impl, lambdas: &[f64]) -> String {
    let lambdas: Vec<String> = lambdas.iter().map(|&l| fmt_num(l)).collect();
    format!(
        "weight decay, {} λ={}",
        implementation.name(),
        lambdas.join(",")
    )
}

/// Trains one version at one λ from a freshly seeded generator, so every run is reproducible
/// on its own: the data are the same for every λ and version.
pub fn run_one(cfg: &Config, implementation: Impl, wd: f64, ctx: &Context) -> (Trained, f64) {
    tch::manual_seed(ctx.seed);
    let start = Instant::now();
    let data = Data::new(cfg, ctx.device);
    let progress = progress::Epochs::new(ctx.tagged(label(implementation, &[wd])), cfg.epochs);
    let trained = match (cfg.engine, implementation) {
        (Engine::Autograd, Impl::Scratch) => train_scratch(cfg, wd, &data, &progress),
        (Engine::Autograd, Impl::Concise) => train_concise(cfg, wd, &data, &progress),
        (Engine::Fused, _) => linreg::train(cfg, implementation, &[wd], &data, &progress).remove(0),
    };
    (trained, start.elapsed().as_secs_f64())
}

/// Every λ of `lambdas` for one version, each with its wall time. The autograd engine trains
/// them one after the other (none after an interrupted one); the fused engine trains them
/// together as one batched model (same seed, so same data, initialisation and batches) and
/// reports that shared time for each.
pub fn run_lambdas(
    cfg: &Config,
    implementation: Impl,
    lambdas: &[f64],
    ctx: &Context,
) -> Vec<(Trained, f64)> {
    match cfg.engine {
        Engine::Autograd => {
            let mut runs = Vec::new();
            for &wd in lambdas {
                let run = run_one(cfg, implementation, wd, ctx);
                let interrupted = run.0.status == Status::Interrupted;
                runs.push(run);
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
            let progress = progress::Epochs::new(
                ctx.tagged(format!("{} (fused)", label(implementation, lambdas))),
                cfg.epochs,
            );
            let trained = linreg::train(cfg, implementation, lambdas, &data, &progress);
            let seconds = start.elapsed().as_secs_f64();
            trained.into_iter().map(|t| (t, seconds)).collect()
        }
    }
}

/// Every requested version × λ; writes `<out>/weight-decay/{<impl>-wd<λ>.csv, summary.csv,
/// run.json}` and the charts. A diverged run is recorded and the others go on; the command
/// then fails. An interruption records what finished and stops at once.
pub fn run(cfg: &Config, ctx: &Context) -> Result<Vec<Summary>> {
    let dir = record::experiment_dir(&ctx.out, "weight-decay")?;
    let mut summaries = Vec::new();
    let mut outcome = stop::Outcome::default();
    for implementation in cfg.implementation.impls() {
        let mut all = Vec::new();
        for (&wd, (trained, seconds)) in
            cfg.wd
                .iter()
                .zip(run_lambdas(cfg, implementation, &cfg.wd, ctx))
        {
            let name = label(implementation, &[wd]);
            if trained.status == Status::Ok {
                println!("{name}: L2 norm of w: {:.6}", trained.w_norm);
            }
            let advice = format!(
                "try a smaller --lr (this run used {}) or a smaller λ (--wd)",
                cfg.lr
            );
            outcome.record(&name, trained.status, trained.curve.len(), &advice);
            write_run(&dir, implementation, wd, &trained, ctx.plots)?;
            summaries.push(Summary::new(implementation, wd, &trained, seconds));
            all.push((wd, trained));
            if outcome.interrupted() {
                break;
            }
        }
        if ctx.plots {
            write_lambdas_chart(&dir, implementation, &all)?;
        } else {
            record::remove_stale(&dir.join(format!("{}-all.svg", implementation.name())));
        }
        if outcome.interrupted() {
            break;
        }
    }
    record::write_csv(&dir.join("summary.csv"), &summaries)?;
    record::write_json(
        &dir.join("run.json"),
        &record::RunInfo::new("weight-decay", cfg, ctx).with_status(outcome.status()),
    )?;
    outcome.result(&dir)?;
    Ok(summaries)
}

/// `<impl>-wd<λ>.csv` and its chart: train and test loss against epoch, log scale (the
/// book's figure).
fn write_run(
    dir: &std::path::Path,
    implementation: Impl,
    wd: f64,
    trained: &Trained,
    plots: bool,
) -> Result<()> {
    let title = format!(
        "weight decay, {}, λ = {}: ‖w‖ = {:.3}",
        implementation.name(),
        fmt_num(wd),
        trained.w_norm
    );
    record::write_curve(
        dir,
        &stem(implementation, wd),
        &trained.curve,
        plots.then_some(record::Chart {
            title: &title,
            x_label: "epoch",
            y_label: "loss",
            x: |e| e.epoch as f64,
            series: &[("train", |e| e.train_loss), ("test", |e| e.test_loss)],
            log_y: true,
        }),
    )
}

/// `<impl>-all.svg`: the train and test curves of every λ in one figure.
fn write_lambdas_chart(
    dir: &std::path::Path,
    implementation: Impl,
    runs: &[(f64, Trained)],
) -> Result<()> {
    let mut series = Vec::new();
    for (i, (wd, trained)) in runs.iter().enumerate() {
        let points = |f: fn(&Epoch) -> f64| {
            trained
                .curve
                .iter()
                .map(|e| (e.epoch as f64, f(e)))
                .collect()
        };
        let l = fmt_num(*wd);
        series.push(Series::line(
            format!("train λ={l}"),
            points(|e| e.train_loss),
            i,
        ));
        series.push(Series::line(format!("test λ={l}"), points(|e| e.test_loss), i).with_markers());
    }
    record::write_chart(
        &dir.join(format!("{}-all.svg", implementation.name())),
        &Figure {
            title: format!("weight decay, {}: every λ", implementation.name()),
            x_label: "epoch".into(),
            y_label: "loss".into(),
            log_y: true,
            x_categories: None,
        },
        &series,
    )
}
