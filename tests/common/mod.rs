//! Helpers shared by the integration tests.
#![allow(dead_code)]
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

pub const BIN: &str = env!("CARGO_BIN_EXE_d2l-regularization");

/// Runs the binary with `args`.
pub fn run(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .output()
        .expect("the binary starts")
}

/// Runs the binary on the CPU with results under `out`, then `args`.
pub fn run_on_cpu(out: &Path, args: &[&str]) -> Output {
    let out = out.to_str().expect("a UTF-8 path");
    run(&[&["--device", "cpu", "--out", out], args].concat())
}

/// A JSON file (`run.json`), parsed.
pub fn read_json(path: &Path) -> serde_json::Value {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Asserts a failed run with a message containing every one of `needles` and no panic.
pub fn assert_fails_with(o: &Output, needles: &[&str]) {
    let err = stderr(o);
    assert!(
        !o.status.success(),
        "expected a failure, got success; stderr:\n{err}"
    );
    assert!(!err.contains("panicked"), "the binary panicked:\n{err}");
    for n in needles {
        assert!(err.contains(n), "stderr lacks {n:?}:\n{err}");
    }
}

/// Reads a CSV file into its header and rows of strings.
pub fn read_csv(path: &Path) -> (Vec<String>, Vec<Vec<String>>) {
    let mut r = csv::Reader::from_path(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let header = r.headers().unwrap().iter().map(String::from).collect();
    let rows = r
        .records()
        .map(|rec| rec.unwrap().iter().map(String::from).collect())
        .collect();
    (header, rows)
}

/// The rows of a CSV file, each as a map from column name to value.
pub fn csv_rows(path: &Path) -> Vec<std::collections::HashMap<String, String>> {
    let (header, rows) = read_csv(path);
    rows.into_iter()
        .map(|r| header.iter().cloned().zip(r).collect())
        .collect()
}

/// The column `name` of a CSV file as numbers.
pub fn column(path: &Path, name: &str) -> Vec<f64> {
    let (header, rows) = read_csv(path);
    let i = header
        .iter()
        .position(|h| h == name)
        .unwrap_or_else(|| panic!("{}: no column {name}", path.display()));
    rows.iter().map(|r| r[i].parse().unwrap()).collect()
}

/// The directory holding the real Fashion-MNIST, or `None` (test skipped) outside CI.
/// Under CI a missing data set fails the test: CI installs it.
pub fn real_data_dir() -> Option<PathBuf> {
    let candidates = [
        std::env::var_os("FASHION_MNIST_DIR").map(PathBuf::from),
        Some(PathBuf::from(
            d2l_regularization::data::fashion_mnist::DEBIAN_DIR,
        )),
        Some(d2l_regularization::data::fashion_mnist::cache_dir()),
    ];
    let found = candidates.into_iter().flatten().find(|d| {
        [
            "train-images-idx3-ubyte",
            "train-labels-idx1-ubyte",
            "t10k-images-idx3-ubyte",
            "t10k-labels-idx1-ubyte",
        ]
        .iter()
        .all(|f| d.join(f).is_file() || d.join(format!("{f}.gz")).is_file())
    });
    if found.is_none() {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI is set but Fashion-MNIST is not installed (scripts/setup.sh installs it)"
        );
        eprintln!("skipped: Fashion-MNIST is not installed (scripts/setup.sh installs it)");
    }
    found
}

/// The venv's Python with PyTorch 2.11.0 (recorded by scripts/setup.sh), or `None` outside CI.
pub fn python() -> Option<PathBuf> {
    let found = option_env!("D2L_PYTHON")
        .map(PathBuf::from)
        .filter(|p| p.is_file());
    if found.is_none() {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI is set but the PyTorch venv is missing (run scripts/setup.sh)"
        );
        eprintln!("skipped: no PyTorch venv (run scripts/setup.sh)");
    }
    found
}

pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The committed reference under `results/` (`rel`, e.g. `"results/weight-decay"`), as the
/// repository holds it: in a git checkout, the files of `HEAD` extracted into a fresh temporary
/// directory (`git archive`), so that whatever a command has since written into the working
/// tree's `results/` (`--out results`) cannot make a test pass or fail; outside a checkout (a
/// source tarball) the working tree's files. Returns the directory holding `rel` and the
/// guard that keeps it.
pub fn committed(rel: &str) -> (PathBuf, Option<tempfile::TempDir>) {
    let root = repo_root();
    let in_checkout = Command::new("git")
        .args(["rev-parse", "--is-inside-work-tree"])
        .current_dir(&root)
        .stderr(Stdio::null())
        .output()
        .is_ok_and(|o| o.status.success());
    if !in_checkout {
        return (root.join(rel), None);
    }
    let dir = tempfile::tempdir().unwrap();
    let archive = Command::new("git")
        .args(["archive", "--format=tar", "HEAD", "--", rel])
        .current_dir(&root)
        .output()
        .expect("git runs");
    assert!(
        archive.status.success(),
        "git archive HEAD -- {rel}: {}",
        stderr(&archive)
    );
    let mut tar = Command::new("tar")
        .args(["-x", "-C"])
        .arg(dir.path())
        .stdin(Stdio::piped())
        .spawn()
        .expect("tar runs");
    use std::io::Write;
    tar.stdin
        .take()
        .unwrap()
        .write_all(&archive.stdout)
        .unwrap();
    assert!(tar.wait().unwrap().success(), "tar -x of {rel}");
    (dir.path().join(rel), Some(dir))
}

/// libtorch's generator is global to the process and tests run on parallel threads: every test
/// that seeds it and relies on the draws that follow holds this lock.
pub fn rng_lock() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// A chart's series, parsed as XML (so the file must be well-formed): for each curve (a
/// polyline of stroke width 2, see `plot`) its number of points, and the chart's texts.
pub fn svg_series(path: &Path) -> (Vec<usize>, Vec<String>) {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let doc = roxmltree::Document::parse(&text)
        .unwrap_or_else(|e| panic!("{} is not well-formed XML: {e}", path.display()));
    assert_eq!(doc.root_element().tag_name().name(), "svg");
    let series = doc
        .descendants()
        .filter(|n| n.has_tag_name("polyline") && n.attribute("stroke-width") == Some("2"))
        .map(|n| {
            n.attribute("points")
                .unwrap_or("")
                .split_whitespace()
                .count()
        })
        .collect();
    let texts = doc
        .descendants()
        .filter(|n| n.has_tag_name("text"))
        .filter_map(|n| n.text())
        .map(|t| t.trim().to_string())
        .collect();
    (series, texts)
}

/// Every file under `dir`, recursively, relative to it.
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p.strip_prefix(dir).unwrap().to_path_buf());
            }
        }
    }
    out.sort();
    out
}

/// A CSV without its timing columns (`seconds`, `elapsed_s`): what must be identical.
pub fn without_timings(path: &Path) -> Vec<Vec<String>> {
    let (header, rows) = read_csv(path);
    let keep: Vec<usize> = (0..header.len())
        .filter(|&i| header[i] != "seconds" && header[i] != "elapsed_s")
        .collect();
    std::iter::once(header.clone())
        .chain(rows)
        .map(|r| keep.iter().map(|&i| r[i].clone()).collect())
        .collect()
}

/// The sweep in `a` and in `b` wrote the same summary, runs table and curves (timings apart),
/// and the same figures.
pub fn assert_same_sweep(a: &Path, b: &Path) {
    for name in ["summary.csv", "runs.csv"] {
        assert_eq!(
            without_timings(&a.join(name)),
            without_timings(&b.join(name)),
            "{name}"
        );
    }
    let curves = |d: &Path| -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(d.join("runs"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    };
    assert_eq!(curves(a), curves(b), "the files under runs/");
    for name in curves(a).iter().filter(|n| n.ends_with(".csv")) {
        assert_eq!(
            without_timings(&a.join("runs").join(name)),
            without_timings(&b.join("runs").join(name)),
            "runs/{name}"
        );
    }
    let svgs = |d: &Path| -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(d)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".svg"))
            .collect();
        v.sort();
        v
    };
    assert_eq!(svgs(a), svgs(b), "the figures");
    assert!(!svgs(a).is_empty(), "figures drawn");
    for svg in svgs(a) {
        assert_eq!(
            std::fs::read_to_string(a.join(&svg)).unwrap(),
            std::fs::read_to_string(b.join(&svg)).unwrap(),
            "{svg}"
        );
    }
    assert!(a.join("results.xlsx").exists() && b.join("results.xlsx").exists());
}

/// The small weight-decay sweep of tests/sweeps.rs and tests/slurm.rs: six runs in three groups
/// (one per seed, λ 0 and 3, concise), `epochs` each, then `extra`.
pub fn wd_sweep<'a>(epochs: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec![
        "sweep",
        "weight-decay",
        "--impl",
        "concise",
        "--wd",
        "0,3",
        "--seeds",
        "0,1,2",
        "--epochs",
        epochs,
    ];
    args.extend_from_slice(extra);
    args
}

/// `dropout` with `engine` for `epochs` on the local data (never downloading), then `extra`:
/// the dropout command the resume tests kill and resume.
pub fn local_dropout<'a>(
    engine: &'a str,
    epochs: &'a str,
    data: &'a str,
    extra: &[&'a str],
) -> Vec<&'a str> {
    let mut args = vec![
        "dropout",
        "--epochs",
        epochs,
        "--engine",
        engine,
        "--data-dir",
        data,
        "--offline",
    ];
    args.extend_from_slice(extra);
    args
}

/// A dropout sweep over `--dropout1 <rates>` (× 0.5), concise, fused, 3 epochs, seed 0, on the
/// local data, a checkpoint after every epoch (where the tests kill it): one run per setting, a
/// few seconds each (resume and Slurm tests).
pub fn fused_dropout_sweep<'a>(rates: &'a str, data: &'a str) -> Vec<&'a str> {
    vec![
        "sweep",
        "dropout",
        "--checkpoint-every",
        "1",
        "--impl",
        "concise",
        "--engine",
        "fused",
        "--epochs",
        "3",
        "--dropout1",
        rates,
        "--dropout2",
        "0.5",
        "--seeds",
        "0",
        "--data-dir",
        data,
        "--offline",
    ]
}

/// Starts the binary quietly on one CPU thread with results under `out`, then `args`.
pub fn spawn_on_one_core(out: &Path, args: &[&str]) -> Child {
    Command::new(BIN)
        .args(["--device", "cpu", "--threads", "1", "-q", "--out"])
        .arg(out)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// [`spawn_on_one_core`], waited for; panics with its stderr unless it succeeded.
pub fn succeed_on_one_core(out: &Path, args: &[&str]) -> Output {
    let o = spawn_on_one_core(out, args).wait_with_output().unwrap();
    assert!(o.status.success(), "{args:?}: {}", stderr(&o));
    o
}

/// A program on PATH (or in /usr/sbin, /sbin, where Debian puts daemons).
pub fn which(name: &str) -> Option<PathBuf> {
    let paths = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&paths)
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/sbin")])
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// A test that needs something missing (`what`, and how CI gets it): skipped with a message,
/// except under CI, where it fails.
pub fn skip_outside_ci(what: &str) {
    assert!(std::env::var_os("CI").is_none(), "CI is set but {what}");
    eprintln!("skipped: {what}");
}
