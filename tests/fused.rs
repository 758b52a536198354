//! The fused engine computes what the autograd engine computes: the weight-decay regression to
//! rounding (same data, initialisation and batches), the dropout MLP statistically (its masks
//! come from its own generator).
mod common;

use common::*;
use d2l_regularization::data::fashion_mnist;
use d2l_regularization::data::Split;
use d2l_regularization::device::DeviceChoice;
use d2l_regularization::experiment::Context;
use d2l_regularization::experiments::dropout::fused::{FusedMlp, StepPath};
use d2l_regularization::experiments::weight_decay::fused::Loops;
use d2l_regularization::experiments::{dropout, weight_decay};
use d2l_regularization::options::{Engine, Impl};
use d2l_regularization::train::Learner;
use tch::nn::VarStore;
use tch::{Device, Kind, Tensor};

fn quiet(epochs: usize) -> d2l_regularization::progress::Epochs {
    d2l_regularization::progress::Epochs::new("test", epochs)
}

fn ctx(seed: i64) -> Context {
    Context {
        device: Device::Cpu,
        device_requested: DeviceChoice::Cpu,
        seed,
        out: std::env::temp_dir(),
        plots: false,
        tag: None,
        checkpoints: None,
        tensorboard: false,
        board: None,
    }
}

/// Every λ, both versions, both fused paths, the book's batch size and one that leaves a
/// partial batch (20 examples in batches of 3), every epoch, against the autograd engine:
/// ‖w‖ and the test loss within 1e-4 relative; the training loss within 1e-3 relative + 1e-8
/// absolute, the absolute part for the concise fit at λ = 0, whose loss falls to 1e-10, where
/// f32 resolves the residuals no better. Measured with `MKL_CBWR` unset (AVX512_E1 on an Intel
/// Xeon), AVX2, COMPATIBLE and AVX512 (the test prints it): at most 0.073 of the ‖w‖ bound,
/// 0.143 of the test-loss bound and 0.525 (COMPATIBLE; 0.39 on an AMD EPYC) of the
/// training-loss bound.
#[test]
fn fused_weight_decay_matches_autograd_to_rounding() {
    let _rng = rng_lock();
    let lambdas = [0.0, 3.0, 0.5];
    // The largest share of its bound each figure used (printed: `--nocapture` shows them).
    let worst = std::cell::RefCell::new([0.0f64; 3]);
    for batch_size in [5, 3] {
        let cfg = weight_decay::Config {
            batch_size,
            ..Default::default()
        };
        for version in [Impl::Scratch, Impl::Concise] {
            let reference: Vec<_> = lambdas
                .iter()
                .map(|&wd| {
                    let setting = weight_decay::Setting::book(wd);
                    weight_decay::run_one(&cfg, version, setting, &ctx(11))
                        .unwrap()
                        .0
                })
                .collect();
            for loops in [Loops::Host, Loops::Tensors] {
                tch::manual_seed(11);
                let data = weight_decay::Data::new(&cfg.hyper(), Device::Cpu);
                let fused = weight_decay::train_fused(
                    &cfg,
                    version,
                    &lambdas,
                    &data,
                    loops,
                    &quiet(cfg.epochs),
                    (None, Vec::new()),
                )
                .unwrap();
                for ((r, f), wd) in reference.iter().zip(&fused).zip(lambdas) {
                    let what = format!("batch {batch_size} {version:?} λ={wd} {loops:?}");
                    assert_eq!(f.curve.len(), cfg.epochs, "{what}");
                    assert_eq!(r.curve.len(), cfg.epochs, "{what}");
                    let check = |name: &str, f: f64, r: f64, relative: f64, absolute: f64| {
                        let share = (f - r).abs() / (relative * r.abs() + absolute);
                        let k = if name == "‖w‖" {
                            0
                        } else if name.ends_with("test loss") {
                            1
                        } else {
                            2
                        };
                        let mut w = worst.borrow_mut();
                        w[k] = w[k].max(share);
                        assert!(
                            (f - r).abs() <= relative * r.abs() + absolute,
                            "{what}: {name} {f:e} vs {r:e} (relative {:e})",
                            (f - r).abs() / r.abs()
                        );
                    };
                    check("‖w‖", f.w_norm, r.w_norm, 1e-4, 0.0);
                    for (fe, re) in f.curve.iter().zip(&r.curve) {
                        let e = fe.epoch;
                        let (f_test, r_test) = (fe.test_loss, re.test_loss);
                        check(&format!("epoch {e} test loss"), f_test, r_test, 1e-4, 0.0);
                        let (f_train, r_train) = (fe.train_loss, re.train_loss);
                        check(
                            &format!("epoch {e} train loss"),
                            f_train,
                            r_train,
                            1e-3,
                            1e-8,
                        );
                    }
                }
            }
        }
    }
    let [w, test, train] = *worst.borrow();
    eprintln!(
        "measured: fused weight decay used {w:.3} of the ‖w‖ bound, {test:.3} of the test-loss \
         bound, {train:.3} of the train-loss bound"
    );
}

#[test]
fn fused_cli_writes_the_same_files() {
    let out = tempfile::tempdir().unwrap();
    let o = run_on_cpu(
        out.path(),
        &["weight-decay", "--engine", "fused", "--wd", "0,3,1"],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let dir = out.path().join("weight-decay");
    for name in [
        "scratch-wd0.csv",
        "scratch-wd3.csv",
        "scratch-wd1.csv",
        "concise-wd0.csv",
        "concise-wd3.csv",
        "concise-wd1.csv",
    ] {
        assert_eq!(read_csv(&dir.join(name)).1.len(), 100, "{name}");
    }
    let run = read_json(&dir.join("run.json"));
    assert_eq!(run["config"]["engine"], "fused");
}

/// Over 10 epochs and `seeds`, the means of: the final running train accuracy, the final
/// running train loss, and the test accuracy of the last three epochs.
fn statistics(
    engine: Engine,
    version: Impl,
    seeds: &[i64],
    data: &fashion_mnist::FashionMnist,
) -> [f64; 3] {
    let cfg = dropout::Config {
        engine,
        ..Default::default()
    };
    let mut stats = [0.0; 3];
    for &seed in seeds {
        let setting = dropout::Setting::book(cfg.rates());
        let trained =
            dropout::train(&cfg, version, setting, data, &ctx(seed), &quiet(cfg.epochs)).unwrap();
        let curve = trained.curve;
        let last = curve.last().unwrap();
        let late_test: f64 = curve.iter().rev().take(3).map(|e| e.test_acc).sum::<f64>() / 3.0;
        for (s, v) in stats
            .iter_mut()
            .zip([last.train_acc, last.train_loss, late_test])
        {
            *s += v / seeds.len() as f64;
        }
    }
    stats
}

/// The fused engine's statistics equal the autograd engine's, each statistic a mean over
/// seeds 0, 1, 2 of the book's 10-epoch run (both versions). The engines draw other masks, so
/// these are two samples of one distribution; and at lr 0.5 training is chaotic enough that
/// another CPU's kernels (a last-bit change in a GEMM) move a run as far as another seed does,
/// so on another CPU each 3-seed mean is a fresh sample. The bounds are four standard
/// deviations of the difference of two 3-seed means, with the spread of one run measured over
/// 20 seeds (concise) and 10 (scratch) for each engine: final train accuracy sd 0.0020–0.0026
/// → 4 sd 0.0075, bound 0.01; final train loss sd 0.0045–0.0067 → 4 sd 0.020, bound 0.02;
/// test accuracy of the last three epochs sd 0.007–0.011 → 4 sd 0.035, bound 0.035; and the
/// fused test accuracy above 0.81 (its mean 0.844 minus 4 sd of a 3-seed mean, 0.006).
/// Measured with `MKL_CBWR` unset, AVX2, COMPATIBLE, AVX512: at most 0.0016, 0.0063, 0.017.
#[test]
fn fused_dropout_has_the_same_statistics_over_three_seeds() {
    let _rng = rng_lock();
    let Some(dir) = real_data_dir() else { return };
    let data = fashion_mnist::load_dir(&dir, Device::Cpu).unwrap();
    let seeds = [0, 1, 2];
    for version in [Impl::Concise, Impl::Scratch] {
        let [a_acc, a_loss, a_test] = statistics(Engine::Autograd, version, &seeds, &data);
        let [f_acc, f_loss, f_test] = statistics(Engine::Fused, version, &seeds, &data);
        let what = format!("{version:?}: autograd acc {a_acc:.4} loss {a_loss:.4} test {a_test:.4}; fused acc {f_acc:.4} loss {f_loss:.4} test {f_test:.4}");
        eprintln!("{what}");
        assert!((a_acc - f_acc).abs() <= 0.01, "train accuracy: {what}");
        assert!((a_loss - f_loss).abs() <= 0.02, "train loss: {what}");
        assert!((a_test - f_test).abs() <= 0.035, "test accuracy: {what}");
        assert!(f_test > 0.81, "test accuracy: {what}");
    }
}

#[test]
fn tensor_op_path_trains_like_the_cpu_kernels() {
    let _rng = rng_lock();
    // The path GPUs take, run on the CPU: same model, same SGD, libtorch's masks.
    let Some(dir) = real_data_dir() else { return };
    let data = fashion_mnist::load_dir(&dir, Device::Cpu).unwrap();
    let cfg = dropout::Config::default();
    let mut accuracies = Vec::new();
    for path in [StepPath::CpuKernels, StepPath::TensorOps] {
        tch::manual_seed(4);
        let vs = tch::nn::VarStore::new(Device::Cpu);
        let layers = dropout::concise_layers(&vs.root());
        let mut learner =
            FusedMlp::new(&layers, [0.2, 0.5], cfg.lr, cfg.batch_size).with_path(path);
        for _ in 0..2 {
            learner.train_epoch(&data.train);
        }
        let correct = learner.count_correct(&data.test).int64_value(&[]);
        accuracies.push(correct as f64 / data.test.len() as f64);
    }
    assert!(accuracies.iter().all(|&a| a > 0.70), "{accuracies:?}");
}

// ---------------------------------------------------------------- deterministic engine checks
//
// One epoch of 300 examples in batches of 256 (a full step, then a partial one of 44) from
// the same weights and the same order (libtorch's generator re-seeded before each epoch):
// every way of training the MLP must end with the same six parameters, to 1e-5.

const ROWS: i64 = 300;
const LR: f64 = 0.5;
const BATCH: usize = 256;
const ORDER_SEED: i64 = 77;
const MASK_SEED: u64 = 1234;
const TOLERANCE: f64 = 1e-5;

/// `n` Fashion-MNIST-shaped examples: pixels in [0, 1), labels 0–9.
fn synthetic_split(n: i64, seed: i64) -> Split {
    tch::manual_seed(seed);
    Split {
        x: Tensor::rand([n, 784], (Kind::Float, Device::Cpu)),
        y: Tensor::randint(10, [n], (Kind::Int64, Device::Cpu)),
    }
}

/// A fused learner over freshly seeded layers of `version`.
fn fused(version: Impl, rates: [f64; 2], path: StepPath) -> (VarStore, FusedMlp) {
    tch::manual_seed(3);
    let vs = VarStore::new(Device::Cpu);
    let layers = match version {
        Impl::Scratch => dropout::scratch_layers(&vs.root()),
        Impl::Concise => dropout::concise_layers(&vs.root()),
    };
    let learner = FusedMlp::new(&layers, rates, LR, BATCH)
        .with_path(path)
        .with_mask_seed(MASK_SEED);
    (vs, learner)
}

/// The experiment's own autograd learner (the book's model and tch's SGD), same seed.
fn autograd(version: Impl, rates: [f64; 2]) -> (VarStore, Box<dyn Learner>) {
    autograd_with_decay(version, rates, 0.0)
}

/// [`autograd`] with weight decay λ (concise: the optimizer's weight group; scratch: the L2
/// term in the loss).
fn autograd_with_decay(version: Impl, rates: [f64; 2], wd: f64) -> (VarStore, Box<dyn Learner>) {
    let cfg = dropout::Config {
        lr: LR,
        batch_size: BATCH,
        ..Default::default()
    };
    let setting = dropout::Setting {
        wd,
        ..dropout::Setting::book(rates)
    };
    dropout::learner(&cfg, version, setting, &ctx(3))
}

/// One epoch with the order drawn from [`ORDER_SEED`]: the sum of the losses and the number
/// of correct predictions.
fn epoch(learner: &mut dyn Learner, split: &Split) -> (f64, i64) {
    tch::manual_seed(ORDER_SEED);
    let sums = learner.train_epoch(split);
    assert_eq!(
        sums.count, ROWS,
        "every example is seen, the partial batch too"
    );
    (
        sums.loss_sum.double_value(&[]),
        sums.correct.int64_value(&[]),
    )
}

fn max_difference(a: &Tensor, b: &Tensor) -> f64 {
    (a - b).abs().max().double_value(&[])
}

/// The six parameters of `b` equal those of `a` to [`TOLERANCE`].
fn assert_same_parameters(a: &VarStore, b: &VarStore, what: &str) {
    let (a, b) = (a.variables(), b.variables());
    assert_eq!(a.len(), 6, "{what}: three weights and three biases");
    let mut worst: f64 = 0.0;
    for (name, ta) in &a {
        let diff = max_difference(ta, &b[name]);
        assert!(diff <= TOLERANCE, "{what}: {name} differs by {diff:e}");
        worst = worst.max(diff);
    }
    eprintln!("measured: {what}: parameters within {worst:.2e} (bound {TOLERANCE:e})");
}

/// Training moved the parameters far more than the tolerance (so agreeing means something).
fn assert_trained(vs: &VarStore, version: Impl, what: &str) {
    let (initial, _) = fused(version, [0.0, 0.0], StepPath::CpuKernels);
    let moved = vs
        .variables()
        .iter()
        .map(|(name, t)| max_difference(t, &initial.variables()[name]))
        .fold(0.0, f64::max);
    assert!(moved > 1000.0 * TOLERANCE, "{what}: moved only {moved:e}");
}

#[test]
fn without_dropout_every_engine_and_path_takes_the_same_steps() {
    let _rng = rng_lock();
    let split = synthetic_split(ROWS, 21);
    // λ = 0.05 (SGD's decay folded into the fused update; the L2 term in the scratch model's
    // loss; the optimizer's weight group for the concise one): large enough to move the
    // weights by far more than the tolerance in two steps.
    for (version, wd) in [Impl::Concise, Impl::Scratch]
        .into_iter()
        .flat_map(|v| [(v, 0.0), (v, 0.05)])
    {
        let (vs_ref, mut reference) = autograd_with_decay(version, [0.0, 0.0], wd);
        let (loss_ref, correct_ref) = epoch(reference.as_mut(), &split);
        assert_trained(&vs_ref, version, "autograd");
        for path in [
            StepPath::CpuKernels,
            StepPath::TensorOps,
            StepPath::TensorOpsHostMasks,
        ] {
            let what = format!("{version:?} λ={wd} {path:?} against autograd");
            let (vs, learner) = fused(version, [0.0, 0.0], path);
            let mut learner = learner.with_weight_decay(wd);
            let (loss, correct) = epoch(&mut learner, &split);
            assert_same_parameters(&vs_ref, &vs, &what);
            assert!(
                (loss - loss_ref).abs() <= TOLERANCE * loss_ref,
                "{what}: loss sum {loss} vs {loss_ref}"
            );
            assert_eq!(correct, correct_ref, "{what}: correct predictions");
        }
    }
}

/// The tensor-op path with libtorch's masks draws exactly what the book's `dropout_layer`
/// draws (`rand_like(h) > p`, layer 1 then layer 2, batch after batch), so it must take the
/// scratch model's steps; and the CPU kernels must take the tensor-op path's steps when both
/// use the kernels' masks. Together: every fused path computes the book's dropout MLP, with
/// each layer's own rate and the 1/(1 − p) scaling in both directions.
#[test]
fn with_dropout_every_fused_path_takes_the_book_models_steps() {
    let _rng = rng_lock();
    let split = synthetic_split(ROWS, 22);

    // Rates where the book's dropout_layer and the tensor-op path draw the same numbers (a
    // rate of 1 draws nothing in dropout_layer).
    for rates in [[0.2, 0.5], [0.0, 0.5], [0.5, 0.0]] {
        let (vs_ref, mut reference) = autograd(Impl::Scratch, rates);
        let (loss_ref, _) = epoch(reference.as_mut(), &split);
        assert_trained(&vs_ref, Impl::Scratch, "autograd");
        let (vs, mut learner) = fused(Impl::Scratch, rates, StepPath::TensorOps);
        let (loss, _) = epoch(&mut learner, &split);
        let what =
            format!("{rates:?}: tensor-op path (libtorch's masks) against the scratch model");
        assert_same_parameters(&vs_ref, &vs, &what);
        assert!(
            (loss - loss_ref).abs() <= TOLERANCE * loss_ref,
            "{what}: {loss} vs {loss_ref}"
        );
    }

    // Rates of 1 too: a layer whose output is all zeros (its scale cannot be folded).
    for rates in [[0.2, 0.5], [1.0, 0.3], [0.5, 1.0]] {
        for version in [Impl::Concise, Impl::Scratch] {
            let (vs_cpu, mut cpu) = fused(version, rates, StepPath::CpuKernels);
            let (loss_cpu, correct_cpu) = epoch(&mut cpu, &split);
            assert_trained(&vs_cpu, version, "CPU kernels");
            let (vs_t, mut tensor) = fused(version, rates, StepPath::TensorOpsHostMasks);
            let (loss_t, correct_t) = epoch(&mut tensor, &split);
            let what = format!("{version:?} {rates:?}: CPU kernels against tensor ops, same masks");
            assert_same_parameters(&vs_cpu, &vs_t, &what);
            assert!(
                (loss_t - loss_cpu).abs() <= TOLERANCE * loss_cpu,
                "{what}: {loss_t} vs {loss_cpu}"
            );
            assert_eq!(correct_t, correct_cpu, "{what}");
        }
    }
}

/// The fused model's evaluation is the network without dropout, as the autograd model's is
/// in evaluation mode: on the same weights both count exactly the same correct predictions,
/// every time (2 500 rows: a partial chunk for either).
#[test]
fn fused_count_correct_equals_the_autograd_model_in_eval_mode() {
    let _rng = rng_lock();
    let (train, test) = (synthetic_split(ROWS, 23), synthetic_split(2500, 24));
    let rates = [0.2, 0.5];
    for version in [Impl::Concise, Impl::Scratch] {
        let (vs_f, mut fused) = fused(version, rates, StepPath::CpuKernels);
        epoch(&mut fused, &train);
        let (mut vs_a, autograd) = autograd(version, rates);
        vs_a.copy(&vs_f).unwrap();
        let counts: Vec<i64> = (0..2)
            .flat_map(|_| [fused.count_correct(&test), autograd.count_correct(&test)])
            .map(|t| t.int64_value(&[]))
            .collect();
        assert!(
            counts.iter().all(|&c| c == counts[1]),
            "{version:?}: fused, autograd, fused, autograd: {counts:?}"
        );
        // And the count is that of the plain network, x → 784-256-256-10 with ReLU.
        let v = vs_f.variables();
        let prefix = match version {
            Impl::Scratch => dropout::book::SCRATCH_NAMES,
            Impl::Concise => dropout::book::CONCISE_NAMES,
        };
        let layer = |x: &Tensor, k: usize| {
            x.linear(
                &v[&format!("{}.weight", prefix[k])],
                Some(&v[&format!("{}.bias", prefix[k])]),
            )
        };
        let logits = tch::no_grad(|| layer(&layer(&layer(&test.x, 0).relu(), 1).relu(), 2));
        let plain = logits.argmax(1, false).eq_tensor(&test.y).sum(Kind::Int64);
        assert_eq!(counts[0], plain.int64_value(&[]), "{version:?}");
    }
}
