//! Weight decay on the weights only, for a model built from stock tch layers (none of this
//! project's own): an MLP with layer norm on a small regression, trained with AdamW through
//! `nn::decay`.
//!
//!     cargo run --release --example decay_groups
//!
//! Prints which parameters decay, then every parameter's norm as training goes: with a large λ
//! the weight norms shrink towards what the data need, while the biases and the norm's scale and
//! shift are left to the gradient alone (AdamW's own default would have decayed them by 0.01).
use anyhow::Result;
use d2l_regularization::nn::decay;
use tch::nn::{self, Module};
use tch::{Device, Kind, Tensor};

fn norms(vs: &nn::VarStore) -> Vec<(String, f64)> {
    let mut v: Vec<(String, f64)> = vs
        .variables()
        .into_iter()
        .map(|(name, t)| (name, t.norm().double_value(&[])))
        .collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

fn main() -> Result<()> {
    tch::manual_seed(0);
    let device = Device::Cpu;
    // Someone else's model: stock layers, no parameter groups.
    let vs = nn::VarStore::new(device);
    let root = vs.root();
    let model = nn::seq()
        .add(nn::linear(&root / "fc1", 20, 64, Default::default()))
        .add(nn::layer_norm(&root / "norm", vec![64], Default::default()))
        .add_fn(|x| x.relu())
        .add(nn::linear(&root / "fc2", 64, 1, Default::default()));

    // The data: y depends on the first two of 20 inputs.
    let x = Tensor::randn([256, 20], (Kind::Float, device));
    let y = x.narrow(1, 0, 1) * 2.0 - x.narrow(1, 1, 1) + 0.5;

    let groups = decay::regroup(&vs);
    println!("decay:    {}", groups.decay.join(", "));
    println!("no decay: {}", groups.no_decay.join(", "));
    let mut opt = decay::optimizer(nn::AdamW::default(), &vs, 1e-2, 0.5)?;

    let names: Vec<String> = norms(&vs).into_iter().map(|(n, _)| n).collect();
    println!(
        "\n{:>5} {:>9}  {}",
        "step",
        "loss",
        names
            .iter()
            .map(|n| format!(" {n:>11}"))
            .collect::<String>()
    );
    for step in 0..=300 {
        let loss = (model.forward(&x) - &y).square().mean(None);
        if step % 50 == 0 {
            let row: String = norms(&vs)
                .iter()
                .map(|(_, v)| format!(" {v:>11.4}"))
                .collect();
            println!("{step:>5} {:>9.5}  {row}", loss.double_value(&[]));
        }
        opt.backward_step(&loss);
    }
    Ok(())
}
