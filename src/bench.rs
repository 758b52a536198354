//! Timings for `scripts/bench.sh`: one process's measurements as JSON on stdout.
//!
//! For each engine, the dropout experiment (concise) is timed per training epoch and per test
//! pass after one warm-up epoch, and the weight-decay experiment per 100-epoch run of each
//! version at λ = 3. Each timing ends with a read of the results, so queued GPU work is included.
use crate::cli::{positive_usize, Impl};
use crate::experiments::{dropout, weight_decay, Context};
use crate::fused::Engine;
use crate::train;
use anyhow::Result;
use serde::Serialize;
use std::path::PathBuf;
use std::time::Instant;

#[derive(clap::Args, Debug, Clone, Serialize)]
pub struct Config {
    /// Timed dropout epochs (after one warm-up epoch)
    #[arg(long, default_value_t = 2, value_parser = positive_usize)]
    pub epochs: usize,
    /// Timed weight-decay runs of each version
    #[arg(long, default_value_t = 3, value_parser = positive_usize)]
    pub wd_runs: usize,
    /// Directory holding Fashion-MNIST (else the usual search)
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
}

/// Timings of one engine.
#[derive(Serialize, Default)]
struct Timings {
    dropout_train_s: Vec<f64>,
    dropout_test_s: Vec<f64>,
    wd_scratch_s: Vec<f64>,
    wd_concise_s: Vec<f64>,
}

#[derive(Serialize)]
struct Report {
    side: &'static str,
    device: String,
    threads: i32,
    libtorch_version: &'static str,
    autograd: Timings,
    fused: Timings,
}

/// Both engines, one after the other, on the same data.
pub fn run(cfg: &Config, ctx: &Context) -> Result<()> {
    let source = crate::data::fashion_mnist::Source::new(cfg.data_dir.clone(), true);
    let data = crate::data::fashion_mnist::load(&source, ctx.device)?;
    let mut report = Report {
        side: "rust",
        device: crate::device::name(ctx.device),
        threads: tch::get_num_threads(),
        libtorch_version: crate::LIBTORCH_VERSION,
        autograd: Timings::default(),
        fused: Timings::default(),
    };
    for engine in [Engine::Autograd, Engine::Fused] {
        let t = match engine {
            Engine::Autograd => &mut report.autograd,
            Engine::Fused => &mut report.fused,
        };
        let wd = weight_decay::Config {
            engine,
            ..Default::default()
        };
        for _ in 0..cfg.wd_runs {
            t.wd_scratch_s
                .push(weight_decay::run_one(&wd, Impl::Scratch, 3.0, ctx).1);
            t.wd_concise_s
                .push(weight_decay::run_one(&wd, Impl::Concise, 3.0, ctx).1);
        }
        let dcfg = dropout::Config {
            engine,
            ..Default::default()
        };
        let (_vs, mut learner) = dropout::learner(&dcfg, Impl::Concise, dcfg.rates(), ctx);
        for epoch in 0..=cfg.epochs {
            let start = Instant::now();
            let sums = learner.train_epoch(&data.train);
            train::read(&[sums.loss()]);
            let trained = Instant::now();
            let correct = learner.count_correct(&data.test);
            train::read(&[&correct]);
            if epoch > 0 {
                t.dropout_train_s.push((trained - start).as_secs_f64());
                t.dropout_test_s.push(trained.elapsed().as_secs_f64());
            }
        }
    }
    println!("{}", serde_json::to_string(&report)?);
    Ok(())
}
