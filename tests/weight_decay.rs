//! Book §4.5: the parameter-group contract, gradients on a tiny case, the default run, and
//! every bad input of the command line.
mod common;

use common::*;
use d2l_regularization::d2l::{self, linreg, squared_loss, Updater};
use d2l_regularization::experiments::weight_decay::{self, book::l2_penalty, Optimizer};
use d2l_regularization::nn::{decay, init};
use tch::nn::{Module, VarStore};
use tch::{Device, Kind, Reduction, Tensor};

fn values(t: &Tensor) -> Vec<f32> {
    Vec::<f32>::try_from(t.flatten(0, -1)).unwrap()
}

/// One SGD step on a loss whose gradient is zero: only the decay acts.
fn step_with_zero_gradient(wd: f64, lr: f64) -> (Vec<f32>, Vec<f32>, Vec<f32>, Vec<f32>) {
    tch::manual_seed(1);
    let vs = VarStore::new(Device::Cpu);
    let lin = init::linear(&vs.root(), 7, 3);
    decay::regroup(&vs);
    let (w0, b0) = (values(&lin.ws), values(lin.bs.as_ref().unwrap()));
    let (mut opt, _) = Optimizer::Sgd.build(&vs, lr, wd).unwrap();
    let zero_grad_loss = (lin.ws.sum(None) + lin.bs.as_ref().unwrap().sum(None)) * 0.0;
    opt.zero_grad();
    zero_grad_loss.backward();
    opt.step();
    (w0, b0, values(&lin.ws), values(lin.bs.as_ref().unwrap()))
}

#[test]
fn decay_multiplies_the_weight_and_leaves_the_bias_bit_for_bit() {
    let _rng = rng_lock();
    let (lr, wd) = (0.1, 3.0);
    let (w0, b0, w1, b1) = step_with_zero_gradient(wd, lr);
    let factor = (1.0 - lr * wd) as f32;
    for (before, after) in w0.iter().zip(&w1) {
        assert!(
            (after - before * factor).abs() <= 1e-6 * before.abs().max(1e-6),
            "{after} != {before} × {factor}"
        );
    }
    assert!(
        w0.iter().zip(&w1).any(|(a, b)| a != b),
        "the weight did not move"
    );
    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    assert_eq!(bits(&b0), bits(&b1), "the bias changed");
}

#[test]
fn without_decay_a_zero_gradient_moves_nothing() {
    let _rng = rng_lock();
    let (w0, b0, w1, b1) = step_with_zero_gradient(0.0, 0.1);
    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    assert_eq!(bits(&w0), bits(&w1));
    assert_eq!(bits(&b0), bits(&b1));
}

fn close(a: &[f32], b: &[f32]) {
    assert_eq!(a.len(), b.len());
    for (x, y) in a.iter().zip(b) {
        assert!((x - y).abs() < 1e-5 * y.abs().max(1.0), "{a:?} != {b:?}");
    }
}

// x = [1, 2], y = 3, w = [0.5, -1], b = 0.25: ŷ = -1.25, ŷ - y = -4.25.

#[test]
fn scratch_gradients_and_step_match_hand_computed_values() {
    let lambd = 3.0;
    let x = Tensor::from_slice(&[1.0f32, 2.0]).reshape([1, 2]);
    let y = Tensor::from_slice(&[3.0f32]).reshape([1, 1]);
    let w = Tensor::from_slice(&[0.5f32, -1.0])
        .reshape([2, 1])
        .set_requires_grad(true);
    let b = Tensor::from_slice(&[0.25f32]).set_requires_grad(true);
    let loss = || squared_loss(&linreg(&x, &w, &b), &y) + l2_penalty(&w) * lambd;
    let l = loss();
    // loss = ½·4.25² + 3·(0.25 + 1)/2
    close(&values(&l), &[0.5 * 4.25 * 4.25 + 1.875]);
    l.sum(None).backward();
    // ∂/∂w = (ŷ - y)·x + λw = [-4.25 + 1.5, -8.5 - 3];  ∂/∂b = -4.25
    close(&values(&w.grad()), &[-2.75, -11.5]);
    close(&values(&b.grad()), &[-4.25]);
    let _ = w.grad().zero_();
    let _ = b.grad().zero_();
    loss().sum(None).backward();
    d2l::sgd(&[&w, &b], 0.1, 1);
    close(&values(&w), &[0.5 + 0.275, -1.0 + 1.15]);
    close(&values(&b), &[0.25 + 0.425]);
    close(&values(&w.grad()), &[0.0, 0.0]);
}

#[test]
fn concise_gradients_and_step_match_hand_computed_values() {
    let (lr, wd) = (0.1, 3.0);
    let vs = VarStore::new(Device::Cpu);
    let lin = init::linear(&vs.root(), 2, 1);
    decay::regroup(&vs);
    tch::no_grad(|| {
        lin.ws
            .shallow_clone()
            .copy_(&Tensor::from_slice(&[0.5f32, -1.0]).reshape([1, 2]));
        lin.bs
            .as_ref()
            .unwrap()
            .shallow_clone()
            .copy_(&Tensor::from_slice(&[0.25f32]));
    });
    let x = Tensor::from_slice(&[1.0f32, 2.0]).reshape([1, 2]);
    let y = Tensor::from_slice(&[3.0f32]).reshape([1, 1]);
    let l = lin.forward(&x).mse_loss(&y, Reduction::None);
    close(&values(&l), &[4.25 * 4.25]);
    let (mut opt, _) = Optimizer::Sgd.build(&vs, lr, wd).unwrap();
    opt.update(&l);
    // MSE without ½: ∂/∂w = 2(ŷ - y)·x = [-8.5, -17], ∂/∂b = -8.5; the decay adds λw to the weight only.
    close(&values(&lin.ws.grad()), &[-8.5, -17.0]);
    close(&values(&lin.bs.as_ref().unwrap().grad()), &[-8.5]);
    close(
        &values(&lin.ws),
        &[0.5 - 0.1 * (-8.5 + 1.5), -1.0 - 0.1 * (-17.0 - 3.0)],
    );
    close(&values(lin.bs.as_ref().unwrap()), &[0.25 + 0.85]);
}

#[test]
fn default_run_writes_the_curves_and_shows_the_effect_of_decay() {
    let out = tempfile::tempdir().unwrap();
    let o = run_on_cpu(out.path(), &["weight-decay"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let printed = stdout(&o);
    let dir = out.path().join("weight-decay");
    for name in ["scratch", "concise"] {
        for wd in ["0", "3"] {
            let path = dir.join(format!("{name}-wd{wd}.csv"));
            let (header, rows) = read_csv(&path);
            assert_eq!(header, ["epoch", "train_loss", "test_loss", "elapsed_s"]);
            assert_eq!(rows.len(), 100, "{}", path.display());
            assert_eq!(rows[99][0], "100");
            let (series, _) = svg_series(&dir.join(format!("{name}-wd{wd}.svg")));
            assert_eq!(series, [100, 100], "{name}-wd{wd}.svg: train and test");
            assert!(
                printed.contains(&format!("{name} λ={wd}: L2 norm of w: ")),
                "{printed}"
            );
        }
    }
    let summary = dir.join("summary.csv");
    let (header, rows) = read_csv(&summary);
    assert_eq!(
        header,
        [
            "impl",
            "optimizer",
            "penalty",
            "wd",
            "status",
            "epochs",
            "w_norm",
            "w_l1",
            "w_small",
            "final_train_loss",
            "final_test_loss",
            "seconds"
        ]
    );
    assert_eq!(rows.len(), 4);
    let get = |name: &str, wd: f64| {
        let r = rows
            .iter()
            .find(|r| r[0] == name && r[3].parse::<f64>().unwrap() == wd)
            .unwrap();
        assert_eq!(&r[1..3], ["sgd", "l2"]);
        assert_eq!(&r[4..6], ["ok", "100"]);
        (r[6].parse::<f64>().unwrap(), r[10].parse::<f64>().unwrap())
    };
    for name in ["scratch", "concise"] {
        let (series, texts) = svg_series(&dir.join(format!("{name}-all.svg")));
        assert_eq!(series, [100; 4], "{name}-all.svg: train and test of both λ");
        for legend in ["train λ=0", "test λ=0", "train λ=3", "test λ=3"] {
            assert!(texts.iter().any(|t| t == legend), "{legend} in {texts:?}");
        }
    }
    for name in ["scratch", "concise"] {
        let (norm0, test0) = get(name, 0.0);
        let (norm3, test3) = get(name, 3.0);
        assert!(norm0 > 5.0, "{name}: ‖w‖ at λ=0 is {norm0}");
        assert!(norm3 < 1.0, "{name}: ‖w‖ at λ=3 is {norm3}");
        assert!(
            test3 < test0,
            "{name}: test loss {test3} at λ=3 is not below {test0} at λ=0"
        );
    }
    let run = read_json(&dir.join("run.json"));
    assert_eq!(run["device"], "cpu");
    assert_eq!(run["seed"], 0);
    assert_eq!(run["config"]["epochs"], 100);
    assert_eq!(run["tch_version"], "0.24.0");
    assert!(
        run["libtorch_version"]
            .as_str()
            .unwrap()
            .starts_with("2.11.0"),
        "{run}"
    );
    let leftovers: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with('.'))
        .collect();
    assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");
}

#[test]
fn each_run_is_reproducible_on_its_own() {
    let _rng = rng_lock();
    let cfg = weight_decay::Config {
        epochs: 5,
        ..Default::default()
    };
    let ctx = d2l_regularization::experiment::Context {
        device: Device::Cpu,
        device_requested: d2l_regularization::device::DeviceChoice::Cpu,
        seed: 7,
        out: std::env::temp_dir(),
        plots: false,
        tag: None,
        checkpoints: None,
        tensorboard: false,
        board: None,
    };
    let (a, _) = weight_decay::run_one(
        &cfg,
        d2l_regularization::options::Impl::Concise,
        weight_decay::Setting::book(3.0),
        &ctx,
    )
    .unwrap();
    let _ = Tensor::randn([10], (Kind::Float, Device::Cpu)); // disturb the generator
    let (b, _) = weight_decay::run_one(
        &cfg,
        d2l_regularization::options::Impl::Concise,
        weight_decay::Setting::book(3.0),
        &ctx,
    )
    .unwrap();
    assert_eq!(a.w_norm, b.w_norm);
    assert_eq!(
        a.curve.last().unwrap().test_loss,
        b.curve.last().unwrap().test_loss
    );
}

#[test]
fn bad_flags_are_refused_with_the_flag_named() {
    let cases: &[(&[&str], &str)] = &[
        (&["weight-decay", "--wd", "0,-1"], "--wd"),
        (&["weight-decay", "--lr", "0"], "--lr"),
        (&["weight-decay", "--lr", "-0.1"], "--lr"),
        (&["weight-decay", "--batch-size", "0"], "--batch-size"),
        (&["weight-decay", "--epochs", "0"], "--epochs"),
        (&["weight-decay", "--epochs", "-3"], "--epochs"),
        (&["--device", "tpu", "weight-decay"], "--device"),
        (&["weight-decay", "--lr", "fast"], "--lr"),
        (
            &["weight-decay", "--wd", "1e308"],
            "too large for the 32-bit floats",
        ),
        (
            &["weight-decay", "--lr", "1e39"],
            "too large for the 32-bit floats",
        ),
        (&["sweep", "weight-decay", "--seeds", "0,x"], "--seeds"),
        (&["sweep", "dropout", "--dropout2", "0.5,2"], "--dropout2"),
        (&["dropout", "--dropout1", ""], "--dropout1"),
    ];
    for (args, flag) in cases {
        let o = run(args);
        assert_fails_with(&o, &[flag]);
        assert_eq!(
            o.status.code(),
            Some(2),
            "{args:?}: clap's usage-error status"
        );
    }
}

#[test]
fn cuda_without_a_gpu_is_one_clear_line() {
    if tch::Cuda::is_available() {
        eprintln!("skipped: this machine has a GPU");
        return;
    }
    let out = tempfile::tempdir().unwrap();
    let o = run(&[
        "--device",
        "cuda",
        "--out",
        out.path().to_str().unwrap(),
        "weight-decay",
    ]);
    assert_fails_with(&o, &["--device cuda:0", "CUDA"]);
    assert_eq!(stderr(&o).lines().count(), 1, "{}", stderr(&o));
    assert!(
        !out.path().join("weight-decay").exists(),
        "nothing is written before the device is known"
    );
}

#[test]
fn an_unwritable_out_is_named() {
    let file = tempfile::NamedTempFile::new().unwrap();
    let out = file.path().join("results");
    let o = run(&[
        "--device",
        "cpu",
        "--out",
        out.to_str().unwrap(),
        "weight-decay",
        "--epochs",
        "1",
    ]);
    assert_fails_with(&o, &[out.to_str().unwrap(), "--out"]);
}
