//! Book §4.6: dropout only while training, the IDX reader and its errors, the download path
//! against a local server, and two real epochs on Fashion-MNIST.
mod common;

use common::*;
use d2l_regularization::data::download::{self, Resource};
use d2l_regularization::data::fashion_mnist::{self, Source};
use d2l_regularization::data::idx::{self, IMAGES_MAGIC, LABELS_MAGIC};
use d2l_regularization::experiments::dropout::book::dropout_layer;
use d2l_regularization::experiments::dropout::{concise_net, Net};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use tch::nn::{ModuleT, VarStore};
use tch::{Device, Kind, Tensor};

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f64 {
    (a - b).abs().max().double_value(&[])
}

// ------------------------------------------------------------------ dropout modes

/// Both models at p = (0.2, 0.5) and at p = 0, built from the same seed (same weights).
fn models(p1: f64, p2: f64) -> Vec<(&'static str, Box<dyn ModuleT>, VarStore)> {
    let mut out: Vec<(&'static str, Box<dyn ModuleT>, VarStore)> = Vec::new();
    tch::manual_seed(3);
    let vs = VarStore::new(Device::Cpu);
    out.push(("scratch", Box::new(Net::new(&vs.root(), p1, p2)), vs));
    tch::manual_seed(3);
    let vs = VarStore::new(Device::Cpu);
    out.push(("concise", Box::new(concise_net(&vs.root(), p1, p2)), vs));
    out
}

#[test]
fn evaluation_mode_is_deterministic_and_equals_no_dropout() {
    let _rng = rng_lock();
    let x = Tensor::rand([64, 784], (Kind::Float, Device::Cpu));
    for ((name, with, _a), (_, without, _b)) in models(0.2, 0.5).into_iter().zip(models(0.0, 0.0)) {
        let eval1 = with.forward_t(&x, false);
        let eval2 = with.forward_t(&x, false);
        assert_eq!(
            max_abs_diff(&eval1, &eval2),
            0.0,
            "{name}: evaluation is not deterministic"
        );
        assert_eq!(
            max_abs_diff(&eval1, &without.forward_t(&x, false)),
            0.0,
            "{name}: eval differs from p = 0"
        );
        assert_eq!(
            max_abs_diff(&eval1, &without.forward_t(&x, true)),
            0.0,
            "{name}: p = 0 training differs"
        );
        let train1 = with.forward_t(&x, true);
        let train2 = with.forward_t(&x, true);
        assert!(
            max_abs_diff(&train1, &eval1) > 1e-4,
            "{name}: dropout is off while training"
        );
        assert!(
            max_abs_diff(&train1, &train2) > 1e-4,
            "{name}: training masks repeat"
        );
    }
}

/// Fraction of zeros and the values kept by a dropout of `p` applied to ones.
fn check_statistics(name: &str, p: f64, apply: impl Fn(&Tensor) -> Tensor) {
    let x = Tensor::ones([1_000_000], (Kind::Float, Device::Cpu));
    let y = apply(&x);
    let zeros = y.eq(0.0).to_kind(Kind::Double).mean(None).double_value(&[]);
    assert!(
        (zeros - p).abs() < 0.003,
        "{name} p={p}: {zeros} of the values are zero"
    );
    let kept = y.masked_select(&y.ne(0.0));
    let scale = 1.0 / (1.0 - p);
    assert!(
        (kept.min().double_value(&[]) - scale).abs() < 1e-6,
        "{name} p={p}: kept values not scaled by 1/(1-p)"
    );
    assert!(
        (kept.max().double_value(&[]) - scale).abs() < 1e-6,
        "{name} p={p}: kept values not scaled by 1/(1-p)"
    );
    let mean = y.mean(None).double_value(&[]);
    assert!(
        (mean - 1.0).abs() < 0.01,
        "{name} p={p}: the mean {mean} is not preserved"
    );
}

#[test]
fn training_dropout_zeroes_about_p_and_preserves_the_mean() {
    let _rng = rng_lock();
    tch::manual_seed(0);
    for p in [0.2, 0.5, 0.9] {
        check_statistics("dropout_layer", p, |x| dropout_layer(x, p));
        check_statistics("libtorch's dropout", p, |x| x.dropout(p, true));
        let x = Tensor::rand([1000], (Kind::Float, Device::Cpu));
        assert_eq!(
            max_abs_diff(&x.dropout(p, false), &x),
            0.0,
            "libtorch's dropout is on in evaluation"
        );
    }
}

#[test]
fn dropout_layer_edges() {
    let x = Tensor::rand([100], (Kind::Float, Device::Cpu)) + 0.5;
    assert_eq!(max_abs_diff(&dropout_layer(&x, 0.0), &x), 0.0);
    let zeros = dropout_layer(&x, 1.0);
    assert_eq!(zeros.abs().max().double_value(&[]), 0.0);
    assert_eq!(zeros.size(), x.size());
}

// ------------------------------------------------------------------ IDX files

fn images_idx(n: u32) -> Vec<u8> {
    let pixels: Vec<u8> = (0..n as usize * 784).map(|i| (i % 256) as u8).collect();
    idx::encode(IMAGES_MAGIC, &[n, 28, 28], &pixels)
}

fn labels_idx(labels: &[u8]) -> Vec<u8> {
    idx::encode(LABELS_MAGIC, &[labels.len() as u32], labels)
}

fn gz(bytes: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

#[test]
fn reads_gz_and_raw_idx_files() {
    let dir = tempfile::tempdir().unwrap();
    let labels = [3u8, 0, 9];
    for (suffix, encode) in [
        ("", (|b: &[u8]| b.to_vec()) as fn(&[u8]) -> Vec<u8>),
        (".gz", |b: &[u8]| gz(b)),
    ] {
        let img = write(dir.path(), &format!("img{suffix}"), &encode(&images_idx(3)));
        let lab = write(
            dir.path(),
            &format!("lab{suffix}"),
            &encode(&labels_idx(&labels)),
        );
        let (pixels, l) = idx::read_split(&img, &lab).unwrap();
        assert_eq!(l, labels);
        assert_eq!(pixels.len(), 3 * 784);
        assert_eq!(pixels[300], (300 % 256) as u8);
        let split = fashion_mnist::to_split(&pixels, &l, Device::Cpu);
        assert_eq!(split.x.size(), [3, 784]);
        assert_eq!(split.x.kind(), Kind::Float);
        assert_eq!(split.y.kind(), Kind::Int64);
        assert!(
            (split.x.double_value(&[0, 255]) - 1.0).abs() < 1e-7,
            "255 → 1.0"
        );
        assert_eq!(split.x.double_value(&[0, 0]), 0.0);
    }
}

fn read_err(images: &[u8], labels: &[u8]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let img = write(dir.path(), "train-images-idx3-ubyte.gz", images);
    let lab = write(dir.path(), "train-labels-idx1-ubyte.gz", labels);
    format!("{:#}", idx::read_split(&img, &lab).unwrap_err())
}

#[test]
fn idx_errors_name_the_file_and_the_problem() {
    let good_labels = gz(&labels_idx(&[1, 2]));
    let truncated = gz(&images_idx(2));
    let e = read_err(&truncated[..truncated.len() / 2], &good_labels);
    assert!(
        e.contains("train-images-idx3-ubyte.gz") && e.contains("truncated or corrupt gzip"),
        "{e}"
    );

    let mut wrong_magic = images_idx(2);
    wrong_magic[3] = 0x01;
    let e = read_err(&gz(&wrong_magic), &good_labels);
    assert!(
        e.contains("train-images-idx3-ubyte.gz") && e.contains("magic number 0x00000801"),
        "{e}"
    );

    let e = read_err(&gz(&images_idx(3)), &good_labels);
    assert!(
        e.contains("3 images")
            && e.contains("2 labels")
            && e.contains("train-labels-idx1-ubyte.gz"),
        "{e}"
    );

    let e = read_err(&gz(&images_idx(2)), &gz(&labels_idx(&[1, 10])));
    assert!(
        e.contains("train-labels-idx1-ubyte.gz") && e.contains("label 10"),
        "{e}"
    );

    let mut short = images_idx(2);
    short.truncate(short.len() - 5);
    let e = read_err(&short, &good_labels);
    assert!(
        e.contains("train-images-idx3-ubyte.gz") && e.contains("truncated"),
        "{e}"
    );

    let e = read_err(
        &gz(&idx::encode(IMAGES_MAGIC, &[1, 32, 32], &[0; 1024])),
        &gz(&labels_idx(&[1])),
    );
    assert!(e.contains("32×32"), "{e}");
}

/// A data directory holding the four files, one of them replaced by `bad`.
fn data_dir_with(bad_name: &str, bad: &[u8]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "train-images-idx3-ubyte.gz",
        &gz(&images_idx(4)),
    );
    write(
        dir.path(),
        "train-labels-idx1-ubyte.gz",
        &gz(&labels_idx(&[0, 1, 2, 3])),
    );
    write(dir.path(), "t10k-images-idx3-ubyte.gz", &gz(&images_idx(2)));
    write(
        dir.path(),
        "t10k-labels-idx1-ubyte.gz",
        &gz(&labels_idx(&[4, 5])),
    );
    write(dir.path(), bad_name, bad);
    dir
}

fn run_dropout_on(dir: &Path) -> std::process::Output {
    let out = tempfile::tempdir().unwrap();
    run_on_cpu(
        out.path(),
        &[
            "dropout",
            "--offline",
            "--epochs",
            "1",
            "--data-dir",
            dir.to_str().unwrap(),
        ],
    )
}

#[test]
fn bad_data_files_stop_the_cli_with_the_file_named() {
    let truncated = gz(&images_idx(4));
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "train-images-idx3-ubyte.gz",
            truncated[..truncated.len() - 40].to_vec(),
            "truncated or corrupt gzip",
        ),
        (
            "t10k-labels-idx1-ubyte.gz",
            gz(&idx::encode(0x0000_0802, &[2], &[4, 5])),
            "magic number",
        ),
        (
            "train-labels-idx1-ubyte.gz",
            gz(&labels_idx(&[0, 1, 2])),
            "4 images",
        ),
        (
            "t10k-labels-idx1-ubyte.gz",
            gz(&labels_idx(&[4, 11])),
            "label 11",
        ),
        (
            "train-labels-idx1-ubyte.gz",
            gz(&labels_idx(&[0, 1, 2, 3])),
            "expected 60000",
        ),
    ];
    for (name, bytes, message) in cases {
        let dir = data_dir_with(name, &bytes);
        let o = run_dropout_on(dir.path());
        assert_fails_with(&o, &[message]);
        let err = stderr(&o);
        assert!(
            err.contains("-idx") && err.contains(dir.path().to_str().unwrap()),
            "{err}"
        );
    }
    let dir = data_dir_with("t10k-labels-idx1-ubyte.gz", &gz(&labels_idx(&[4, 5])));
    std::fs::remove_file(dir.path().join("t10k-images-idx3-ubyte.gz")).unwrap();
    let o = run_dropout_on(dir.path());
    assert_fails_with(
        &o,
        &[
            "--data-dir",
            "lacks t10k-images-idx3-ubyte.gz",
            "apt-get install dataset-fashion-mnist",
        ],
    );
}

#[test]
fn dropout_probabilities_outside_0_1_are_refused() {
    for (flag, value) in [
        ("--dropout1", "1.5"),
        ("--dropout2", "-0.1"),
        ("--dropout1", "nan"),
    ] {
        let o = run(&["dropout", flag, value]);
        assert_fails_with(&o, &[flag]);
        assert_eq!(o.status.code(), Some(2));
    }
    assert_fails_with(&run(&["dropout", "--lr", "0"]), &["--lr"]);
    assert_fails_with(&run(&["dropout", "--batch-size", "0"]), &["--batch-size"]);
}

// ------------------------------------------------------------------ download

/// A one-thread HTTP/1.1 server on 127.0.0.1 serving `files` by name; 404 otherwise.
fn serve(files: Vec<(String, Vec<u8>)>) -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut buf = [0u8; 4096];
            let n = stream.read(&mut buf).unwrap_or(0);
            let request = String::from_utf8_lossy(&buf[..n]);
            let path = request
                .split_whitespace()
                .nth(1)
                .unwrap_or("/")
                .trim_start_matches('/')
                .to_string();
            let response = match files.iter().find(|(name, _)| *name == path) {
                Some((_, body)) => {
                    let mut r = format!(
                        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                        body.len()
                    )
                    .into_bytes();
                    r.extend_from_slice(body);
                    r
                }
                None => b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                    .to_vec(),
            };
            let _ = stream.write_all(&response);
        }
    });
    format!("http://{addr}/")
}

/// The files the test server offers, with the MD5 of each computed independently (md5sum).
const LABELS_BODY: &[u8] = b"\x00\x00\x08\x01\x00\x00\x00\x03\x03\x00\x09";
const LABELS_MD5: &str = "387a0c29e9e523fd57c96252a4b887a2";

fn entries(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn download_verifies_checksums_and_saves_only_complete_sets() {
    let base = serve(vec![
        ("labels.gz".into(), LABELS_BODY.to_vec()),
        ("other.gz".into(), b"other".to_vec()),
    ]);
    let cache = tempfile::tempdir().unwrap();
    let good = Resource {
        name: "labels.gz",
        md5: LABELS_MD5,
    };
    download::fetch_all(&base, &[good], cache.path()).unwrap();
    assert_eq!(
        std::fs::read(cache.path().join("labels.gz")).unwrap(),
        LABELS_BODY
    );
    assert_eq!(entries(cache.path()), ["labels.gz"]);

    let empty = tempfile::tempdir().unwrap();
    let bad = Resource {
        name: "other.gz",
        md5: LABELS_MD5,
    };
    let e = format!(
        "{:#}",
        download::fetch_all(&base, &[good, bad], empty.path()).unwrap_err()
    );
    assert!(
        e.contains("checksum mismatch") && e.contains("other.gz") && e.contains(LABELS_MD5),
        "{e}"
    );
    assert!(
        entries(empty.path()).is_empty(),
        "left behind: {:?}",
        entries(empty.path())
    );

    let e = format!(
        "{:#}",
        download::fetch_all(
            &base,
            &[Resource {
                name: "absent.gz",
                md5: LABELS_MD5
            }],
            empty.path()
        )
        .unwrap_err()
    );
    assert!(e.contains("absent.gz") && e.contains("404"), "{e}");
    assert!(entries(empty.path()).is_empty());
}

#[test]
fn locate_downloads_the_canonical_files_and_refuses_wrong_ones() {
    // The server serves files named like Fashion-MNIST's whose checksums are not the published ones.
    let files: Vec<(String, Vec<u8>)> = fashion_mnist::RESOURCES
        .iter()
        .map(|r| (r.name.to_string(), LABELS_BODY.to_vec()))
        .collect();
    let cache = tempfile::tempdir().unwrap();
    let source = |offline| Source {
        data_dir: None,
        env_dir: None,
        system_dir: None,
        cache: cache.path().join("fashion-mnist"),
        mirror: serve(files.clone()),
        offline,
    };
    let e = format!("{:#}", fashion_mnist::locate(&source(false)).unwrap_err());
    assert!(
        e.contains("checksum mismatch") && e.contains("train-images-idx3-ubyte.gz"),
        "{e}"
    );
    assert!(
        e.contains("Searched") && e.contains("apt-get install dataset-fashion-mnist"),
        "{e}"
    );
    assert!(entries(&cache.path().join("fashion-mnist")).is_empty());
    let e = format!("{:#}", fashion_mnist::locate(&source(true)).unwrap_err());
    assert!(e.contains("--offline"), "{e}");
}

// ------------------------------------------------------------------ real data

#[test]
fn two_real_epochs_of_the_concise_model_learn() {
    let Some(data) = real_data_dir() else { return };
    let out = tempfile::tempdir().unwrap();
    let o = run_on_cpu(
        out.path(),
        &[
            "dropout",
            "--impl",
            "concise",
            "--epochs",
            "2",
            "--save-weights",
            "--data-dir",
            data.to_str().unwrap(),
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let dir = out.path().join("dropout");
    let (header, rows) = read_csv(&dir.join("concise.csv"));
    assert_eq!(
        header,
        [
            "epoch",
            "train_loss",
            "train_acc",
            "test_acc",
            "seconds",
            "elapsed_s"
        ]
    );
    assert_eq!(rows.len(), 2);
    let (series, texts) = svg_series(&dir.join("concise.svg"));
    assert_eq!(
        series,
        [2, 2, 2],
        "train loss, train acc, test acc over 2 epochs"
    );
    for legend in ["train loss", "train acc", "test acc"] {
        assert!(texts.iter().any(|t| t == legend), "{legend} in {texts:?}");
    }
    let test_acc = column(&dir.join("concise.csv"), "test_acc");
    assert!(
        test_acc[1] > 0.70,
        "test accuracy after two epochs: {test_acc:?}"
    );
    let (header, rows) = read_csv(&dir.join("summary.csv"));
    assert_eq!(
        header,
        [
            "impl",
            "noise",
            "dropout1",
            "dropout2",
            "wd",
            "status",
            "epochs",
            "final_train_loss",
            "final_train_acc",
            "final_test_acc",
            "seconds"
        ]
    );
    assert_eq!(rows.len(), 1);
    assert_eq!(
        &rows[0][..7],
        ["concise", "bernoulli", "0.2", "0.5", "0.0", "ok", "2"]
    );
    let err = stderr(&o);
    assert_eq!(
        err.matches("dropout (0.2, 0.5), concise epoch").count(),
        2,
        "a plain line per epoch on stderr, which is not a terminal: {err}"
    );
    assert!(
        !err.contains('\r') && !err.contains('\u{1b}'),
        "no progress bar (carriage returns or escape codes) when stderr is not a terminal"
    );
    let run = read_json(&dir.join("run.json"));
    assert_eq!(run["device"], "cpu");
    assert_eq!(run["config"]["dropout2"], serde_json::json!([0.5]));
    assert_eq!(run["status"], "ok");
    let weights = Tensor::read_safetensors(dir.join("concise.safetensors")).unwrap();
    let names: Vec<&str> = weights.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names.len(), 6, "{names:?}");
    for n in [
        "1.weight", "1.bias", "4.weight", "4.bias", "7.weight", "7.bias",
    ] {
        assert!(names.contains(&n), "{n} missing from {names:?}");
    }
}
