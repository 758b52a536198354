//! Timings for `scripts/bench.sh`: one process's measurements as JSON on stdout.
//!
//! For each engine, the dropout experiment (concise) is timed per training epoch and per test
//! pass after one warm-up epoch, and the weight-decay experiment per 100-epoch run of each
//! version at λ = 3. Each timing ends with a read of the results, so queued GPU work is included.
//! On a GPU the fused engine is timed with CUDA graphs (its default there) and without. After
//! each timed epoch a checkpoint of the model is written (as the dropout command writes one
//! after every epoch) and timed on its own, so its cost is a ratio measured in the same run.
//! Last, the libtorch operators per training step of each engine are counted.
use crate::checkpoint;
use crate::cuda::GraphMode;
use crate::data::fashion_mnist::FashionMnist;
use crate::data::Split;
use crate::experiment::Context;
use crate::experiments::dropout::fused::{FusedMlp, StepPath};
use crate::experiments::{dropout, weight_decay};
use crate::options::{Engine, Impl};
use crate::precision::Precision;
use crate::train::{self, Learner};
use anyhow::Result;
use serde::Serialize;
use std::path::PathBuf;
use std::time::Instant;

#[derive(clap::Args, Debug, Clone, Serialize)]
pub struct Config {
    /// Timed dropout epochs (after one warm-up epoch)
    #[arg(long, default_value_t = 2, value_parser = crate::options::epochs)]
    pub epochs: usize,
    /// Timed weight-decay runs of each version
    #[arg(long, default_value_t = 3, value_parser = crate::options::epochs)]
    pub wd_runs: usize,
    /// Directory holding Fashion-MNIST (else the usual search)
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// The dropout model's precision in both engines and the autograd weight-decay runs' (the
    /// fused weight-decay engine trains in f32)
    #[arg(long, value_enum, default_value_t = Precision::F32)]
    pub precision: Precision,
}

/// Timings of one engine.
#[derive(Serialize, Default)]
struct Timings {
    dropout_train_s: Vec<f64>,
    dropout_test_s: Vec<f64>,
    wd_scratch_s: Vec<f64>,
    wd_concise_s: Vec<f64>,
    /// Writing a checkpoint after an epoch (variables, generators, rows; synced and renamed).
    checkpoint_s: Vec<f64>,
    checkpoint_bytes: u64,
}

#[derive(Serialize)]
struct Report {
    side: &'static str,
    precision: Precision,
    device: String,
    threads: i32,
    libtorch_version: &'static str,
    /// The CPU kernels this process ran (`--reproducible`, `MKL_CBWR`).
    cpu_kernels: crate::cpu::KernelPaths,
    autograd: Timings,
    /// The fused engine as it runs by default: CUDA graphs on a GPU.
    fused: Timings,
    /// On a GPU, the fused engine with every step launched from the host.
    fused_eager: Option<Timings>,
    ops_per_step: OpsPerStep,
    /// One draw of the live chart as a terminal gets it (the figure rendered at 100 × 22 with
    /// its colours, and its text joined), median seconds: a finished weight-decay run's (100
    /// epochs, log axis) and a dropout run's (10 epochs, three series).
    chart_draw_s: [f64; 2],
}

/// The median time of one draw of a live chart holding `epochs` epochs of `values`.
fn chart_draw(figure: crate::progress::Figure, values: &[f64]) -> f64 {
    let mut curves = crate::progress::Curves::new(figure);
    for e in 1..=curves.figure.epochs {
        let v: Vec<f64> = values.iter().map(|v| v / e as f64).collect();
        curves.add(e, &v);
    }
    let mut times: Vec<f64> = (0..31)
        .map(|_| {
            let start = Instant::now();
            let text = curves.render(100, 22, true).join("\n");
            std::hint::black_box(text);
            start.elapsed().as_secs_f64()
        })
        .collect();
    times.sort_by(f64::total_cmp);
    times[times.len() / 2]
}

/// libtorch operators per training step of the concise dropout model (those that do work,
/// about one kernel launch each on a GPU; and all, views included), counted on this device.
#[derive(Serialize, Default)]
struct OpsPerStep {
    autograd: Option<[i64; 2]>,
    /// The fused engine's tensor-op path, the one a GPU runs (and a graph replays).
    fused_tensor_ops: Option<[i64; 2]>,
}

/// Times one engine: the weight-decay runs, then the dropout epochs after a warm-up epoch.
fn time_engine(
    engine: Engine,
    cuda_graph: GraphMode,
    cfg: &Config,
    data: &FashionMnist,
    ctx: &Context,
) -> Result<Timings> {
    let mut t = Timings::default();
    let wd = weight_decay::Config {
        engine,
        precision: match engine {
            Engine::Autograd => cfg.precision,
            Engine::Fused => Precision::F32,
        },
        ..Default::default()
    };
    for _ in 0..cfg.wd_runs {
        t.wd_scratch_s.push(
            weight_decay::run_one(&wd, Impl::Scratch, weight_decay::Setting::book(3.0), ctx)?.1,
        );
        t.wd_concise_s.push(
            weight_decay::run_one(&wd, Impl::Concise, weight_decay::Setting::book(3.0), ctx)?.1,
        );
    }
    let dcfg = dropout::Config {
        engine,
        cuda_graph,
        precision: cfg.precision,
        ..Default::default()
    };
    let (vs, mut learner) = dropout::learner(
        &dcfg,
        Impl::Concise,
        dropout::Setting::book(dcfg.rates()),
        ctx,
    );
    let file = std::env::temp_dir().join(format!("d2l-bench-{}.safetensors", std::process::id()));
    let mut rows = Vec::new();
    for epoch in 0..=cfg.epochs {
        let start = Instant::now();
        let sums = learner.train_epoch(&data.train);
        let [loss] = train::read(&[&sums.loss_sum]);
        let trained = Instant::now();
        let correct = learner.count_correct(&data.test);
        train::read(&[&correct]);
        let tested = Instant::now();
        rows.push(dropout::Epoch {
            epoch: epoch + 1,
            train_loss: loss,
            ..Default::default()
        });
        let at = (epoch + 1, cfg.epochs + 1);
        let saved = checkpoint::Meta::new("", at, &rows, &(), ctx.device).and_then(|meta| {
            checkpoint::save(&file, &meta, &checkpoint::variables(&vs), ctx.device)
        });
        if epoch > 0 {
            t.dropout_train_s.push((trained - start).as_secs_f64());
            t.dropout_test_s.push((tested - trained).as_secs_f64());
            if let Ok(bytes) = saved {
                t.checkpoint_s.push(tested.elapsed().as_secs_f64());
                t.checkpoint_bytes = bytes;
            }
        }
    }
    let _ = std::fs::remove_file(&file);
    Ok(t)
}

/// The first `n` training examples.
fn head(split: &Split, n: i64) -> Split {
    Split {
        x: split.x.narrow(0, 0, n),
        y: split.y.narrow(0, 0, n),
    }
}

/// Operators per step: those of an epoch of three batches minus those of an epoch of two
/// (what an epoch adds once, the permutation and the sums, cancels), each counted after an
/// epoch of the same size (so buffers sized by the epoch are already made).
fn ops_per_step(learner: &mut dyn Learner, train: &Split) -> Option<[i64; 2]> {
    let mut count = |n: i64| {
        let part = head(train, n);
        learner.train_epoch(&part);
        crate::cuda::count_ops(|| drop(learner.train_epoch(&part))).ok()
    };
    let (two, three) = (count(512)?, count(768)?);
    Some([three.launching - two.launching, three.all - two.all])
}

fn count_ops_per_step(data: &FashionMnist, ctx: &Context) -> OpsPerStep {
    let cfg = dropout::Config::default();
    let (_vs, mut autograd) = dropout::learner(
        &cfg,
        Impl::Concise,
        dropout::Setting::book(cfg.rates()),
        ctx,
    );
    let vs = tch::nn::VarStore::new(ctx.device);
    let layers = dropout::concise_layers(&vs.root());
    let mut fused =
        FusedMlp::new(&layers, cfg.rates(), cfg.lr, cfg.batch_size).with_path(StepPath::TensorOps);
    OpsPerStep {
        autograd: ops_per_step(autograd.as_mut(), &data.train),
        fused_tensor_ops: ops_per_step(&mut fused, &data.train),
    }
}

/// Both engines, one after the other, on the same data (on a GPU the fused engine also
/// without graphs), then the operator counts.
pub fn run(cfg: &Config, ctx: &Context) -> Result<()> {
    let source = crate::data::fashion_mnist::Source::new(cfg.data_dir.clone(), true);
    let cuda = ctx.device.is_cuda();
    if cuda && cfg.precision != Precision::F32 {
        anyhow::bail!(
            "bench --precision {} times the fused engine's CPU kernels: use --device cpu",
            cfg.precision.name()
        );
    }
    cfg.precision.check(ctx.device)?;
    let data = crate::data::fashion_mnist::load(&source, ctx.device)?;
    let report = Report {
        side: "rust",
        precision: cfg.precision,
        device: crate::device::name(ctx.device),
        threads: tch::get_num_threads(),
        libtorch_version: crate::LIBTORCH_VERSION,
        cpu_kernels: crate::cpu::KernelPaths::current(),
        autograd: time_engine(Engine::Autograd, GraphMode::Auto, cfg, &data, ctx)?,
        fused: time_engine(Engine::Fused, GraphMode::Auto, cfg, &data, ctx)?,
        fused_eager: match cuda {
            true => Some(time_engine(Engine::Fused, GraphMode::Off, cfg, &data, ctx)?),
            false => None,
        },
        ops_per_step: count_ops_per_step(&data, ctx),
        chart_draw_s: [
            chart_draw(
                crate::experiment::live_figure::<weight_decay::Epoch>("weight decay", 100),
                &[100.0, 96.0],
            ),
            chart_draw(
                crate::experiment::live_figure::<dropout::Epoch>("dropout", 10),
                &[1.2, 0.8, 0.8],
            ),
        ],
    };
    crate::outln!("{}", serde_json::to_string(&report)?);
    Ok(())
}
