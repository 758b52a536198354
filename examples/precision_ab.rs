//! The fused engine's dropout train epoch in f32 and in bf16-mixed, alternating epoch by epoch
//! in one process (two models trained side by side), so that the machine's drift falls on both
//! alike: `cargo run --release --example precision_ab -- [ROUNDS]`. Prints each precision's
//! median epoch and their ratio. `scripts/bench.sh --precision bf16-mixed` is the benchmark of
//! record (separate processes, PyTorch beside them); this is for quick before/after checks.
use d2l_regularization::data::fashion_mnist::{load, Source};
use d2l_regularization::experiments::dropout::book::concise_layers;
use d2l_regularization::experiments::dropout::fused::FusedMlp;
use d2l_regularization::precision::Precision;
use d2l_regularization::train::Learner;
use std::time::Instant;
use tch::{nn, Device};

fn main() -> anyhow::Result<()> {
    let rounds: usize = std::env::args().nth(1).map_or(Ok(8), |r| r.parse())?;
    let data = load(&Source::new(None, true), Device::Cpu)?;
    tch::manual_seed(0);
    let mut models: Vec<(Precision, nn::VarStore, FusedMlp)> =
        [Precision::F32, Precision::Bf16Mixed]
            .into_iter()
            .map(|precision| {
                let vs = nn::VarStore::new(Device::Cpu);
                let layers = concise_layers(&vs.root());
                let mlp = FusedMlp::new(&layers, [0.2, 0.5], 0.5, 256).with_precision(precision);
                (precision, vs, mlp)
            })
            .collect();
    let mut times = vec![Vec::new(); models.len()];
    for round in 0..=rounds {
        for (k, (_, _, mlp)) in models.iter_mut().enumerate() {
            let start = Instant::now();
            mlp.train_epoch(&data.train);
            if round > 0 {
                times[k].push(start.elapsed().as_secs_f64());
            }
        }
    }
    let median = |t: &mut Vec<f64>| {
        t.sort_by(f64::total_cmp);
        t[t.len() / 2]
    };
    let medians: Vec<f64> = times.iter_mut().map(median).collect();
    for ((precision, _, _), m) in models.iter().zip(&medians) {
        println!(
            "{:>10}: {m:.4} s per epoch (median of {rounds})",
            precision.name()
        );
    }
    println!("bf16-mixed / f32: {:.3}", medians[1] / medians[0]);
    Ok(())
}
