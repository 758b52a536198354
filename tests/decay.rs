//! `nn::decay` on someone else's model: stock tch layers built without any group. After
//! `regroup`, whatever the optimizer (SGD, Adam, AdamW), every weight takes exactly the step its
//! optimizer takes with weight decay λ and every bias and norm parameter exactly the step it takes
//! without decay — checked bit for bit against the same optimizer run on copies of the parameters
//! split into a decaying and a non-decaying optimizer, and against the rules' formulas.
mod common;

use common::rng_lock;
use d2l_regularization::nn::decay::{self, DECAY_GROUP, NO_DECAY_GROUP};
use std::collections::BTreeMap;
use tch::nn::{self, Module, OptimizerConfig, VarStore};
use tch::{Device, Kind, Tensor};

const LR: f64 = 0.05;
const LAMBDA: f64 = 0.3;

/// A stock MLP with layer norm, as a tch user would write it: no groups anywhere.
fn stock_model(vs: &VarStore) -> impl Module {
    let root = vs.root();
    nn::seq()
        .add(nn::linear(&root / "fc1", 5, 7, Default::default()))
        .add(nn::layer_norm(&root / "norm", vec![7], Default::default()))
        .add_fn(|x| x.relu())
        .add(nn::linear(&root / "fc2", 7, 3, Default::default()))
}

fn snapshot(vs: &VarStore) -> BTreeMap<String, Tensor> {
    vs.variables()
        .into_iter()
        .map(|(name, t)| (name, t.detach().copy()))
        .collect()
}

#[test]
fn regroup_puts_weights_in_the_decay_group_and_the_rest_in_the_other() {
    let _rng = rng_lock();
    let vs = VarStore::new(Device::Cpu);
    let _model = stock_model(&vs);
    let groups_before: Vec<usize> = vs
        .variables_
        .lock()
        .unwrap()
        .trainable_variables
        .iter()
        .map(|v| v.group)
        .collect();
    assert!(
        groups_before.iter().all(|&g| g == NO_DECAY_GROUP),
        "tch puts every variable in group 0, which must be the group that does not decay"
    );
    let groups = decay::regroup(&vs);
    assert_eq!(groups.decay, ["fc1.weight", "fc2.weight"]);
    assert_eq!(
        groups.no_decay,
        ["fc1.bias", "fc2.bias", "norm.bias", "norm.weight"]
    );
    let variables = vs.variables_.lock().unwrap();
    for var in &variables.trainable_variables {
        let expected = if var.tensor.dim() >= 2 {
            DECAY_GROUP
        } else {
            NO_DECAY_GROUP
        };
        assert_eq!(var.group, expected, "{:?}", var.tensor.size());
    }
}

#[test]
fn regroup_by_follows_a_custom_rule() {
    let _rng = rng_lock();
    let vs = VarStore::new(Device::Cpu);
    let _model = stock_model(&vs);
    let groups = decay::regroup_by(&vs, |name, _| name.starts_with("fc2."));
    assert_eq!(groups.decay, ["fc2.bias", "fc2.weight"]);
    assert_eq!(groups.no_decay.len(), 4);
}

/// Steps `opt` three times with gradients `coefficients[name]` (the gradient of
/// Σ c·p is c, exactly).
fn steps(opt: &mut nn::Optimizer, vs: &VarStore, coefficients: &BTreeMap<String, Tensor>) {
    let variables = vs.variables();
    for _ in 0..3 {
        opt.zero_grad();
        let loss = variables
            .iter()
            .map(|(name, p)| (&coefficients[name] * p).sum(Kind::Float))
            .fold(Tensor::zeros([], (Kind::Float, Device::Cpu)), |a, b| a + b);
        loss.backward();
        opt.step();
    }
}

/// The optimizer's own rule on copies of the parameters: the weights in an optimizer with
/// decay λ, everything else in one with decay 0.
fn reference<C: OptimizerConfig + Clone>(
    config: &C,
    start: &BTreeMap<String, Tensor>,
    coefficients: &BTreeMap<String, Tensor>,
) -> BTreeMap<String, Tensor> {
    let mut result = BTreeMap::new();
    for decays in [true, false] {
        let vs = VarStore::new(Device::Cpu);
        let mut names = BTreeMap::new();
        let mut c = BTreeMap::new();
        for (i, (name, t)) in start.iter().enumerate() {
            if (t.dim() >= 2) == decays {
                let local = format!("v{i}");
                let var = vs.root().var_copy(&local, t);
                names.insert(local.clone(), (name.clone(), var));
                c.insert(local, coefficients[name].shallow_clone());
            }
        }
        let mut opt = config.clone().build(&vs, LR).unwrap();
        opt.set_weight_decay(if decays { LAMBDA } else { 0.0 });
        steps(&mut opt, &vs, &c);
        for (_, (name, var)) in names {
            result.insert(name, var.detach().copy());
        }
    }
    result
}

fn check_against_the_rule<C: OptimizerConfig + Clone>(config: C, what: &str) {
    for zero_gradients in [true, false] {
        tch::manual_seed(7);
        let vs = VarStore::new(Device::Cpu);
        let _model = stock_model(&vs);
        decay::regroup(&vs);
        let start = snapshot(&vs);
        let coefficients: BTreeMap<String, Tensor> = start
            .iter()
            .map(|(name, t)| {
                let c = if zero_gradients {
                    t.zeros_like()
                } else {
                    t.randn_like()
                };
                (name.clone(), c)
            })
            .collect();
        let mut opt = decay::optimizer(config.clone(), &vs, LR, LAMBDA).unwrap();
        steps(&mut opt, &vs, &coefficients);
        let expected = reference(&config, &start, &coefficients);
        for (name, p) in vs.variables() {
            let e = &expected[&name];
            assert!(
                p.equal(e),
                "{what}, zero gradients {zero_gradients}: {name} differs from the rule \
                 (max {:e})",
                (&p - e).abs().max().double_value(&[])
            );
            if p.dim() >= 2 {
                assert!(!p.equal(&start[&name]), "{what}: {name} never moved");
            } else if zero_gradients {
                assert!(
                    p.equal(&start[&name]),
                    "{what}: {name} moved without a gradient: it decayed"
                );
            }
        }
    }
}

#[test]
fn sgd_decays_the_weights_only() {
    let _rng = rng_lock();
    check_against_the_rule(nn::Sgd::default(), "SGD");
}

#[test]
fn adam_decays_the_weights_only() {
    let _rng = rng_lock();
    check_against_the_rule(nn::Adam::default(), "Adam");
}

#[test]
fn adamw_decays_the_weights_only_despite_its_default() {
    let _rng = rng_lock();
    // AdamW's own default decay is 0.01: the wrapper must set the other group to 0.
    assert_eq!(nn::AdamW::default().wd, 0.01);
    check_against_the_rule(nn::AdamW::default(), "AdamW");
}

/// The rules written out, one step with zero gradients: SGD and AdamW multiply a weight by
/// (1 − lr·λ); Adam adds λ·w to the gradient and normalises it, so a weight moves by lr·sign(w).
#[test]
fn one_step_with_zero_gradients_follows_each_optimizers_formula() {
    let _rng = rng_lock();
    type Build = Box<dyn Fn(&VarStore) -> nn::Optimizer>;
    let configs: [(&str, Build); 3] = [
        (
            "SGD",
            Box::new(|vs| decay::optimizer(nn::Sgd::default(), vs, LR, LAMBDA).unwrap()),
        ),
        (
            "AdamW",
            Box::new(|vs| decay::optimizer(nn::AdamW::default(), vs, LR, LAMBDA).unwrap()),
        ),
        (
            "Adam",
            Box::new(|vs| decay::optimizer(nn::Adam::default(), vs, LR, LAMBDA).unwrap()),
        ),
    ];
    for (what, build) in configs {
        tch::manual_seed(3);
        let vs = VarStore::new(Device::Cpu);
        let model = stock_model(&vs);
        decay::regroup(&vs);
        let start = snapshot(&vs);
        let mut opt = build(&vs);
        opt.zero_grad();
        let x = Tensor::ones([2, 5], (Kind::Float, Device::Cpu));
        (model.forward(&x).sum(Kind::Float) * 0.0).backward();
        opt.step();
        for (name, p) in vs.variables() {
            let w = &start[&name];
            if p.dim() < 2 {
                assert!(p.equal(w), "{what}: {name} must not move");
                continue;
            }
            let expected = match what {
                "Adam" => {
                    let g = w * LAMBDA;
                    w - g.sign() * LR * (&g.abs() / (g.abs() + 1e-8))
                }
                _ => w * (1.0 - LR * LAMBDA),
            };
            let diff = (&p - &expected).abs().max().double_value(&[]);
            assert!(diff < 1e-6, "{what}: {name} off the formula by {diff:e}");
        }
    }
}

/// A model nobody regrouped has everything in group 0: the wrapper decays nothing.
#[test]
fn without_regroup_nothing_decays() {
    let _rng = rng_lock();
    let vs = VarStore::new(Device::Cpu);
    let _model = stock_model(&vs);
    let start = snapshot(&vs);
    let mut opt = decay::optimizer(nn::AdamW::default(), &vs, LR, LAMBDA).unwrap();
    let zeros: BTreeMap<String, Tensor> = start
        .iter()
        .map(|(n, t)| (n.clone(), t.zeros_like()))
        .collect();
    steps(&mut opt, &vs, &zeros);
    for (name, p) in vs.variables() {
        assert!(p.equal(&start[&name]), "{name} decayed");
    }
}

/// `optimizer_state`: an optimizer's state saved after some steps and set into a fresh optimizer
/// (over parameters copied from the first) makes the next steps the same bit for bit: Adam's and
/// AdamW's moments and step counts, and SGD's momentum buffers. Without the state the fresh
/// optimizer's next steps differ, so the check can fail.
#[test]
fn an_optimizer_state_saved_and_set_gives_the_same_next_steps() {
    use d2l_regularization::nn::optimizer_state;
    let _guard = rng_lock();
    fn check<C: OptimizerConfig + Clone>(config: C, what: &str) {
        tch::manual_seed(5);
        let coefficients: BTreeMap<String, Tensor> = {
            let vs = VarStore::new(Device::Cpu);
            let _ = stock_model(&vs);
            snapshot(&vs)
                .into_iter()
                .map(|(k, v)| (k, v.randn_like()))
                .collect()
        };
        let build = |seed: i64| {
            tch::manual_seed(seed);
            let vs = VarStore::new(Device::Cpu);
            let _ = stock_model(&vs);
            decay::regroup(&vs);
            let (config, state) = optimizer_state::saveable(config.clone());
            let opt = decay::optimizer(config, &vs, LR, LAMBDA).unwrap();
            (vs, opt, state)
        };
        let (vs, mut opt, state) = build(1);
        steps(&mut opt, &vs, &coefficients);
        let bytes = state.save().unwrap();
        // Fresh models (other initial values) given the first's parameters; one its state too.
        let (mut vs2, mut opt2, state2) = build(2);
        vs2.copy(&vs).unwrap();
        state2.load(&bytes).unwrap();
        let (mut vs3, mut opt3, _) = build(3);
        vs3.copy(&vs).unwrap();
        steps(&mut opt, &vs, &coefficients);
        steps(&mut opt2, &vs2, &coefficients);
        steps(&mut opt3, &vs3, &coefficients);
        let (a, b, c) = (snapshot(&vs), snapshot(&vs2), snapshot(&vs3));
        for (name, t) in &a {
            assert!(
                t.equal(&b[name]),
                "{what}: {name} differs after the state was set"
            );
        }
        assert!(
            a.iter().any(|(name, t)| !t.equal(&c[name])),
            "{what}: without the state the steps should differ"
        );
    }
    check(nn::Adam::default(), "Adam");
    check(nn::AdamW::default(), "AdamW");
    let momentum = nn::Sgd {
        momentum: 0.9,
        ..Default::default()
    };
    check(momentum, "SGD with momentum");
}
