//! The CUDA side as far as this machine can check it: the shim is built and says clearly when
//! there is no GPU; the fused engine's tensor-op epoch (what a CUDA graph captures) reuses its
//! buffers and reads nothing back to the host; `--cuda-graph` is refused where it cannot
//! apply and changes nothing where it does not; `doctor` reports. With a GPU (the test binary
//! carried to `scripts/gpu-check.sh`) the graph tests run for real; without one they skip.
mod common;

use common::*;
use d2l_regularization::cuda::{self, CudaGraph, GraphMode};
use d2l_regularization::data::Split;
use d2l_regularization::experiments::dropout;
use d2l_regularization::experiments::dropout::fused::{FusedMlp, StepPath};
use d2l_regularization::train::Learner;
use tch::{Device, Kind, Tensor};

fn gpu() -> bool {
    let available = tch::Cuda::is_available();
    if !available {
        eprintln!("no GPU here: the GPU half of this test is skipped");
    }
    available
}

#[test]
fn the_shim_is_built_against_a_cuda_libtorch() {
    if d2l_regularization::LIBTORCH_HAS_CUDA {
        let shim = cuda::SHIM;
        assert!(
            shim,
            "libtorch has CUDA but the shim was not built (are nvidia-cuda-crt's headers installed?)"
        );
        let (runtime, _driver) = cuda::impls().unwrap();
        assert!(runtime >= 12000, "CUDA runtime {runtime}");
    }
}

#[test]
fn a_graph_without_a_gpu_is_a_clear_error_and_with_one_replays() {
    let _lock = rng_lock();
    if !gpu() {
        let e = CudaGraph::capture(0, || {}, || {})
            .err()
            .expect("no GPU, no graph");
        let message = format!("{e:#}");
        assert!(message.contains("no usable CUDA GPU"), "{message}");
        assert!(!message.contains('\n'), "one line: {message}");
        assert!(cuda::device_count().is_err() || cuda::device_count().unwrap() == 0);
        return;
    }
    let device = Device::Cuda(0);
    let mut x = Tensor::zeros([4], (Kind::Float, device));
    let noise = Tensor::zeros([1000], (Kind::Float, device));
    let mut y = x.shallow_clone();
    let mut r = noise.shallow_clone();
    let graph = CudaGraph::capture(
        0,
        || {
            let _ = x.g_add_scalar_(1.0);
        },
        || {
            let _ = y.g_add_scalar_(1.0);
            r.copy_(&r.rand_like());
        },
    )
    .unwrap();
    assert_eq!(
        x.sum(Kind::Float).double_value(&[]),
        4.0,
        "the warm-up ran once"
    );
    graph.replay().unwrap();
    let first = noise.copy();
    graph.replay().unwrap();
    graph.replay().unwrap();
    assert_eq!(
        x.sum(Kind::Float).double_value(&[]),
        16.0,
        "1 warm-up + 3 replays"
    );
    let same = noise.eq_tensor(&first).sum(Kind::Int64).int64_value(&[]);
    assert!(
        same < 10,
        "random draws are fresh on every replay ({same} of 1000 equal)"
    );
}

#[test]
fn count_ops_counts_launches_views_and_host_reads() {
    let _lock = rng_lock();
    let a = Tensor::ones([3], (Kind::Float, Device::Cpu));
    let counts = cuda::count_ops(|| {
        let b = &a + 1.0;
        let _view = b.unsqueeze(0);
        let _ = b.sum(Kind::Float);
    })
    .unwrap();
    assert_eq!((counts.launching, counts.all, counts.host_reads), (2, 3, 0));
    let counts = cuda::count_ops(|| {
        a.sum(Kind::Float).double_value(&[]);
    })
    .unwrap();
    assert!(counts.host_reads >= 1, "{counts:?}");
}

/// `n` Fashion-MNIST-shaped examples.
fn synthetic_split(n: i64, device: Device) -> Split {
    tch::manual_seed(5);
    Split {
        x: Tensor::rand([n, 784], (Kind::Float, device)),
        y: Tensor::randint(10, [n], (Kind::Int64, device)),
    }
}

/// What a CUDA graph needs of an epoch, checked on the path the GPU runs (here on the CPU,
/// and on the GPU when there is one): every epoch uses the same buffers and parameters (the
/// same memory) and no operator inside it reads a value back to the host.
#[test]
fn a_tensor_op_epoch_reuses_its_memory_and_reads_nothing_back() {
    let _lock = rng_lock();
    let devices = if tch::Cuda::is_available() {
        vec![Device::Cpu, Device::Cuda(0)]
    } else {
        vec![Device::Cpu]
    };
    for device in devices {
        let split = synthetic_split(600, device);
        let vs = tch::nn::VarStore::new(device);
        let layers = dropout::concise_layers(&vs.root());
        let mut learner =
            FusedMlp::new(&layers, [0.2, 0.5], 0.5, 256).with_path(StepPath::TensorOps);
        learner.train_epoch(&split);
        let pointers = |l: &FusedMlp| {
            let b = l.epoch_buffers().expect("an epoch ran");
            let mut p: Vec<usize> = [&b.order, &b.loss, &b.correct]
                .iter()
                .map(|t| t.data_ptr() as usize)
                .collect();
            let mut params: Vec<_> = vs.variables().into_iter().collect();
            params.sort_by(|a, b| a.0.cmp(&b.0));
            p.extend(params.iter().map(|(_, t)| t.data_ptr() as usize));
            p
        };
        let before = pointers(&learner);
        for _ in 0..2 {
            let counts = cuda::count_ops(|| drop(learner.train_epoch(&split))).unwrap();
            assert_eq!(
                counts.host_reads, 0,
                "{device:?}: a host read inside the epoch"
            );
            assert!(counts.launching > 0);
            assert_eq!(pointers(&learner), before, "{device:?}: memory moved");
        }
    }
}

#[test]
fn cuda_graph_on_is_refused_where_it_cannot_apply() {
    let out = tempfile::tempdir().unwrap();
    for engine in ["fused", "autograd"] {
        let o = run_on_cpu(
            out.path(),
            &["dropout", "--engine", engine, "--cuda-graph", "on"],
        );
        assert_fails_with(
            &o,
            &["--cuda-graph on needs a CUDA device", "--device cuda"],
        );
        assert_eq!(o.status.code(), Some(1));
    }
    assert!(
        !out.path().join("dropout").exists(),
        "refused before anything is written"
    );
    let e = GraphMode::On.resolve(Device::Cuda(0), false).unwrap_err();
    assert!(format!("{e}").contains("--engine fused"), "{e}");
    assert!(!GraphMode::Auto.resolve(Device::Cpu, true).unwrap());
    assert!(!GraphMode::Off.resolve(Device::Cuda(0), true).unwrap());
    assert_eq!(
        GraphMode::Auto.resolve(Device::Cuda(0), true).unwrap(),
        cuda::SHIM
    );
}

#[test]
fn cuda_graph_off_changes_nothing_on_the_cpu() {
    let Some(data) = real_data_dir() else { return };
    let data = data.to_str().unwrap();
    let mut curves = Vec::new();
    for mode in ["auto", "off"] {
        let out = tempfile::tempdir().unwrap();
        let o = run_on_cpu(
            out.path(),
            &[
                "--quiet",
                "dropout",
                "--engine",
                "fused",
                "--epochs",
                "1",
                "--cuda-graph",
                mode,
                "--data-dir",
                data,
            ],
        );
        assert!(o.status.success(), "{}", stderr(&o));
        let dir = out.path().join("dropout");
        let run = read_json(&dir.join("run.json"));
        assert_eq!(run["config"]["cuda_graph"], mode);
        curves.push(
            ["train_loss", "train_acc", "test_acc"].map(|c| column(&dir.join("concise.csv"), c)),
        );
    }
    assert_eq!(curves[0], curves[1]);
}

#[test]
fn doctor_reports_libtorch_cuda_and_the_gpus() {
    let o = run(&["doctor"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = stdout(&o);
    for needle in [
        "tch                   0.24.0",
        "libtorch              2.11.0",
        "libtorch (loaded)     /",
        "CPU kernels           MKL ",
    ] {
        assert!(text.contains(needle), "lacks {needle:?}:\n{text}");
    }
    let o = run(&["--reproducible", "doctor"]);
    assert!(
        stdout(&o).contains("CPU kernels           MKL COMPATIBLE (fixed by MKL_CBWR), ATen AVX2"),
        "{}",
        stdout(&o)
    );
    if d2l_regularization::LIBTORCH_HAS_CUDA {
        assert!(
            text.contains("CUDA in libtorch      yes, libtorch_cuda.so loaded"),
            "{text}"
        );
        assert!(text.contains("CUDA runtime          13."), "{text}");
        if tch::Cuda::is_available() {
            assert!(text.contains("  cuda:0"), "{text}");
        } else {
            assert!(
                text.contains("GPUs                  none visible"),
                "{text}"
            );
            assert!(text.contains("--device auto         cpu"), "{text}");
        }
    }
    // It works where --device cuda would not: it is what to run when CUDA is missing.
    let o = run(&["--device", "cuda", "doctor"]);
    assert!(o.status.success(), "{}", stderr(&o));
}
