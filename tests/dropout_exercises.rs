//! The book's §4.6 exercises as flags: `--wd`, `--noise gaussian|dropconnect`,
//! `--input-noise`, `--mc-samples`, `--track-activations`. Every noise acts only while
//! training; what each flag writes; that looking (activations, Monte-Carlo) changes nothing of
//! the training; bad input refused.
mod common;

use common::*;
use d2l_regularization::experiments::dropout::kernels::Rng;
use d2l_regularization::experiments::dropout::noise::{NoiseKind, Perturbation};
use d2l_regularization::experiments::dropout::{self, layers};
use d2l_regularization::options::Impl;
use tch::nn::{ModuleT, VarStore};
use tch::{Device, Kind, Tensor};

fn noises() -> Vec<Perturbation> {
    let mut all = Vec::new();
    for kind in [
        NoiseKind::Bernoulli,
        NoiseKind::Gaussian,
        NoiseKind::Dropconnect,
    ] {
        for input_sigma in [0.0, 0.3] {
            all.push(Perturbation {
                kind,
                rates: [0.2, 0.5],
                input_sigma,
            });
        }
    }
    all
}

/// The network without any noise, computed from its three layers.
fn plain(layers: &dropout::noise::Layers, x: &Tensor) -> Tensor {
    let mut h = x.flatten(1, -1);
    for (k, (w, b)) in layers.iter().enumerate() {
        h = h.linear(w, Some(b));
        if k < 2 {
            h = h.relu();
        }
    }
    h
}

/// Every kind of noise, both versions, with and without input noise: evaluation is
/// deterministic and equals the noise-free network; training is not.
#[test]
fn every_noise_acts_only_while_training() {
    let _rng = rng_lock();
    tch::manual_seed(1);
    let x = Tensor::rand([64, 784], (Kind::Float, Device::Cpu));
    for noise in noises() {
        for version in [Impl::Scratch, Impl::Concise] {
            let vs = VarStore::new(Device::Cpu);
            let net: Box<dyn ModuleT> = match version {
                Impl::Scratch => Box::new(dropout::exercises::NoisyNet::new(&vs.root(), noise)),
                Impl::Concise => {
                    Box::new(dropout::exercises::NoisyConciseNet::new(&vs.root(), noise))
                }
            };
            let what = format!("{version:?} {noise:?}");
            let expected = tch::no_grad(|| plain(&layers(&vs, version), &x));
            let (a, b) = tch::no_grad(|| (net.forward_t(&x, false), net.forward_t(&x, false)));
            assert!(a.equal(&b), "{what}: evaluation is not deterministic");
            let diff = (&a - &expected).abs().max().double_value(&[]);
            assert!(
                diff < 1e-6,
                "{what}: evaluation is not the plain network ({diff:e})"
            );
            let (t1, t2) = tch::no_grad(|| (net.forward_t(&x, true), net.forward_t(&x, true)));
            assert!(!t1.equal(&a), "{what}: training adds no noise");
            assert!(!t1.equal(&t2), "{what}: the same noise twice");
            // The probe's eval mode and the stochastic pass follow the same rule.
            let params = layers(&vs, version);
            let hidden = noise.probe(&params, &x, false, &mut Rng::new(0));
            for (relu, seen) in &hidden {
                assert!(relu.equal(seen), "{what}: the eval probe adds noise");
            }
            let stochastic = tch::no_grad(|| noise.stochastic_logits(&params, &x));
            assert!(
                !stochastic.equal(&a),
                "{what}: the stochastic pass is the eval pass"
            );
        }
    }
}

/// `dropout` on the real data, one epoch unless `args` says otherwise.
fn run_dropout(out: &std::path::Path, args: &[&str]) -> std::process::Output {
    let data = real_data_dir().expect("checked by the caller");
    let mut all = vec!["--quiet", "dropout", "--data-dir"];
    all.push(data.to_str().unwrap());
    if !args.contains(&"--epochs") {
        all.extend(["--epochs", "1"]);
    }
    all.extend_from_slice(args);
    run_on_cpu(out, &all)
}

fn numbers(path: &std::path::Path, columns: &[&str]) -> Vec<Vec<f64>> {
    columns.iter().map(|c| column(path, c)).collect()
}

#[test]
fn weight_decay_monte_carlo_and_activations_write_their_columns_and_files() {
    if real_data_dir().is_none() {
        return;
    }
    let out = tempfile::tempdir().unwrap();
    let o = run_dropout(
        out.path(),
        &[
            "--impl",
            "concise",
            "--wd",
            "1e-4",
            "--mc-samples",
            "3",
            "--track-activations",
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("Monte-Carlo"), "{}", stdout(&o));
    let dir = out.path().join("dropout");
    let rows = csv_rows(&dir.join("summary.csv"));
    assert_eq!(rows[0]["noise"], "bernoulli");
    assert_eq!(rows[0]["wd"], "0.0001");
    for c in ["test_acc_stochastic", "test_acc_mc", "final_test_acc"] {
        let v: f64 = rows[0][c].parse().unwrap();
        assert!((0.5..=1.0).contains(&v), "{c} = {v}");
    }
    assert!(dir.join("concise-wd0.0001.csv").is_file());
    let activations = csv_rows(&dir.join("concise-wd0.0001-activations.csv"));
    assert_eq!(
        activations.len(),
        8,
        "2 layers × 2 stages × 2 modes, one epoch"
    );
    for r in &activations {
        let var: f64 = r["var"].parse().unwrap();
        assert!(var > 0.0, "{r:?}");
    }
    let get = |layer: &str, stage: &str, mode: &str| -> f64 {
        activations
            .iter()
            .find(|r| r["layer"] == layer && r["stage"] == stage && r["mode"] == mode)
            .unwrap()["var"]
            .parse()
            .unwrap()
    };
    for layer in ["hidden1", "hidden2"] {
        assert_eq!(get(layer, "relu", "eval"), get(layer, "noise", "eval"));
        assert!(
            get(layer, "noise", "train") > get(layer, "relu", "train"),
            "dropout adds variance"
        );
    }
    let (series, _) = svg_series(&dir.join("concise-wd0.0001-activations.svg"));
    assert_eq!(series.len(), 6);
}

#[test]
fn other_noises_are_named_in_the_files_and_the_summary() {
    if real_data_dir().is_none() {
        return;
    }
    let out = tempfile::tempdir().unwrap();
    let o = run_dropout(
        out.path(),
        &[
            "--impl",
            "scratch",
            "--noise",
            "gaussian,dropconnect",
            "--input-noise",
            "0.1",
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let dir = out.path().join("dropout");
    for name in ["scratch-gaussian-p0.2-0.5", "scratch-dropconnect-p0.2-0.5"] {
        assert_eq!(
            read_csv(&dir.join(format!("{name}.csv"))).1.len(),
            1,
            "{name}"
        );
    }
    let rows = csv_rows(&dir.join("summary.csv"));
    let kinds: Vec<&str> = rows.iter().map(|r| r["noise"].as_str()).collect();
    assert_eq!(kinds, ["gaussian", "dropconnect"]);
    assert_eq!(
        read_json(&dir.join("run.json"))["config"]["input_noise"],
        0.1
    );
}

/// Probing the activations and the Monte-Carlo passes draw nothing that training draws.
#[test]
fn looking_changes_nothing_of_the_training() {
    if real_data_dir().is_none() {
        return;
    }
    let (plain, looking) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let o = run_dropout(plain.path(), &["--impl", "scratch", "--epochs", "2"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = run_dropout(
        looking.path(),
        &[
            "--impl",
            "scratch",
            "--epochs",
            "2",
            "--track-activations",
            "--mc-samples",
            "2",
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let columns = ["train_loss", "train_acc", "test_acc"];
    assert_eq!(
        numbers(&plain.path().join("dropout/scratch.csv"), &columns),
        numbers(&looking.path().join("dropout/scratch.csv"), &columns)
    );
}

#[test]
fn a_sweep_over_weight_decay_draws_its_figures() {
    if real_data_dir().is_none() {
        return;
    }
    let data = real_data_dir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let o = run_on_cpu(
        out.path(),
        &[
            "--quiet",
            "sweep",
            "dropout",
            "--engine",
            "fused",
            "--impl",
            "concise",
            "--epochs",
            "1",
            "--wd",
            "0,0.001",
            "--dropout1",
            "0,0.5",
            "--data-dir",
            data.to_str().unwrap(),
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let dir = out.path().join("sweep/dropout");
    assert_eq!(csv_rows(&dir.join("summary.csv")).len(), 4);
    for (name, curves) in [("summary-wd.svg", 2), ("summary-gap.svg", 2)] {
        let (series, texts) = svg_series(&dir.join(name));
        assert_eq!(
            series,
            vec![2; curves],
            "{name}: one curve per pair of rates, 2 λ each"
        );
        assert!(texts.iter().any(|t| t.contains("λ")), "{name}: {texts:?}");
    }
}

#[test]
fn bad_dropout_exercise_flags_are_refused_naming_the_flag() {
    let out = tempfile::tempdir().unwrap();
    let cases: [(&[&str], &[&str]); 6] = [
        (&["--mc-samples", "0"], &["--mc-samples", "at least 1"]),
        (&["--input-noise", "-0.1"], &["--input-noise", "0 or more"]),
        (
            &["--noise", "salt"],
            &["--noise", "bernoulli", "gaussian", "dropconnect"],
        ),
        (
            &["--engine", "fused", "--noise", "dropconnect"],
            &["--engine fused", "--engine autograd"],
        ),
        (
            &["--engine", "fused", "--input-noise", "0.1"],
            &["--engine fused", "--input-noise"],
        ),
        (
            &["--noise", "gaussian", "--dropout2", "1"],
            &["--noise gaussian at a rate of 1"],
        ),
    ];
    for (args, needles) in cases {
        let mut all = vec!["dropout", "--data-dir", "/nonexistent"];
        all.extend_from_slice(args);
        let o = run_on_cpu(out.path(), &all);
        assert_fails_with(&o, needles);
        assert!(o.status.code().unwrap_or(0) > 0, "{args:?}");
    }
}
