//! Whatever goes wrong — a diverging loss, Ctrl-C, SIGTERM, a full disk, an `--out` that is a
//! file, not enough memory, a corrupt data file — the tool says what happened, exits non-zero
//! and keeps every result it had finished, with no truncated file.
mod common;

use common::*;
use d2l_regularization::data::idx;
use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Every file under `dir` is complete: no temporary file is left and every CSV parses with
/// the same number of fields on every row.
fn assert_no_partial_files(dir: &Path) {
    for f in files_under(dir) {
        let name = f.file_name().unwrap().to_string_lossy().to_string();
        // Lock files stay (`src/lock.rs`); nothing else hidden may.
        assert!(
            !name.starts_with('.') || name.contains(".lock"),
            "a temporary file was left behind: {}",
            f.display()
        );
        if name.ends_with(".csv") {
            let mut r = csv::Reader::from_path(dir.join(&f)).unwrap();
            let n = r.headers().unwrap().len();
            for rec in r.records() {
                let rec = rec.unwrap_or_else(|e| panic!("{}: {e}", f.display()));
                assert_eq!(rec.len(), n, "{}", f.display());
            }
        }
    }
}

// ---------------------------------------------------------------- divergence

#[test]
fn a_diverging_weight_decay_run_stops_names_the_epoch_and_keeps_its_rows() {
    let out = tempfile::tempdir().unwrap();
    let o = run_on_cpu(out.path(), &["weight-decay", "--lr", "10"]);
    assert_fails_with(
        &o,
        &["NaN or infinite in epoch", "smaller --lr", "diverged"],
    );
    assert_eq!(o.status.code(), Some(1));
    let dir = out.path().join("weight-decay");
    let rows = csv_rows(&dir.join("summary.csv"));
    assert_eq!(rows.len(), 4, "every version and λ is recorded");
    for r in &rows {
        assert_eq!(r["status"], "diverged");
        let epochs: usize = r["epochs"].parse().unwrap();
        assert!(epochs < 100);
        let curve = dir.join(format!(
            "{}-wd{}.csv",
            r["impl"],
            r["wd"].trim_end_matches(".0")
        ));
        let losses = column(&curve, "train_loss");
        assert_eq!(
            losses.len(),
            epochs,
            "{}: the finished epochs",
            curve.display()
        );
        assert!(losses.iter().all(|l| l.is_finite()));
        let err = stderr(&o);
        assert!(
            err.contains(&format!("in epoch {}", epochs + 1)),
            "the message names the epoch after the last finished one: {err}"
        );
    }
    let run = read_json(&dir.join("run.json"));
    assert_eq!(run["status"], "diverged");
    assert_no_partial_files(out.path());
}

#[test]
fn a_diverging_dropout_run_stops_with_its_status_recorded() {
    let Some(data) = real_data_dir() else { return };
    let out = tempfile::tempdir().unwrap();
    let o = run_on_cpu(
        out.path(),
        &[
            "dropout",
            "--impl",
            "concise",
            "--lr",
            "50",
            "--epochs",
            "2",
            "--data-dir",
            data.to_str().unwrap(),
        ],
    );
    assert_fails_with(
        &o,
        &[
            "NaN or infinite in epoch 1",
            "smaller --lr (this run used 50)",
        ],
    );
    assert_eq!(o.status.code(), Some(1), "the README promises exit 1");
    let dir = out.path().join("dropout");
    let rows = csv_rows(&dir.join("summary.csv"));
    assert_eq!(rows[0]["status"], "diverged");
    assert_eq!(rows[0]["epochs"], "0");
    let (header, curve) = read_csv(&dir.join("concise.csv"));
    assert_eq!(header[0], "epoch", "an empty curve still has its header");
    assert!(curve.is_empty());
    assert_no_partial_files(out.path());
}

#[test]
fn a_sweep_records_a_diverged_setting_and_goes_on() {
    let out = tempfile::tempdir().unwrap();
    // λ = 1000 makes the decay factor 1 − lr·λ = −2: the weight's magnitude doubles every step.
    let o = run_on_cpu(
        out.path(),
        &[
            "sweep",
            "weight-decay",
            "--wd",
            "0,1000,3",
            "--seeds",
            "0,1",
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("4 of 12 runs diverged"),
        "{}",
        stderr(&o)
    );
    let dir = out.path().join("sweep/weight-decay");
    for r in csv_rows(&dir.join("summary.csv")) {
        let expected = if r["wd"] == "1000.0" {
            "diverged"
        } else {
            "ok"
        };
        assert_eq!(r["status"], expected, "{r:?}");
        if expected == "ok" {
            assert_eq!(r["seeds_ok"], "2");
            assert!(r["test_loss_mean"].parse::<f64>().unwrap().is_finite());
        }
    }
    let runs = csv_rows(&dir.join("runs.csv"));
    assert_eq!(runs.len(), 12, "2 seeds × 2 versions × 3 λ");
    assert_eq!(runs.iter().filter(|r| r["status"] == "diverged").count(), 4);
    assert_no_partial_files(out.path());
}

// ---------------------------------------------------------------- interruption

/// Starts the binary on the CPU with results under `out`, then `args`, with stderr piped, and
/// waits until it has reported its first epoch.
fn start_and_wait_for_first_epoch(out: &Path, args: &[&str]) -> Child {
    let mut child = Command::new(BIN)
        .args(["--device", "cpu", "--out", out.to_str().unwrap()])
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut reader = BufReader::new(child.stderr.take().unwrap());
    let mut seen = String::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap() == 0 || Instant::now() > deadline {
            panic!("the run ended or stalled before its first epoch:\n{seen}");
        }
        seen.push_str(&line);
        if line.contains(" epoch 1/") {
            break;
        }
    }
    // Keep draining stderr so the child never blocks on a full pipe.
    std::thread::spawn(move || {
        let mut rest = String::new();
        let _ = std::io::Read::read_to_string(&mut reader, &mut rest);
    });
    child
}

fn signal(child: &Child, sig: i32) {
    // SAFETY: sending a signal to our own child process.
    assert_eq!(unsafe { libc::kill(child.id() as i32, sig) }, 0);
}

fn wait_with_timeout(mut child: Child, limit: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the run did not stop within {limit:?} of the signal");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A weight-decay run that would take days: it ends only by a signal.
const LONG_WEIGHT_DECAY: &[&str] = &[
    "weight-decay",
    "--impl",
    "scratch",
    "--wd",
    "3",
    "--epochs",
    "1000000",
];

/// A signal while libtorch starts up (its static initialisers take about a second, before
/// `main`) is caught like any other (`src/main.rs` installs the handlers from the executable's
/// pre-initialisers): the command says it stopped and what it left, instead of ending
/// silently. 300 ms is inside that second on the machines here (the handler is in place about
/// 0.1 s after exec, `strace -tt`); if the machine is faster and the command has started, it
/// must still say so.
#[test]
fn a_signal_during_start_up_is_reported() {
    let out = tempfile::tempdir().unwrap();
    let child = Command::new(BIN)
        .args(["--device", "cpu", "--out", out.path().to_str().unwrap()])
        .args(LONG_WEIGHT_DECAY)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    signal(&child, libc::SIGTERM);
    let o = child.wait_with_output().unwrap();
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(143), "128 + SIGTERM; stderr:\n{err}");
    assert!(err.contains("interrupted by SIGTERM"), "{err}");
    if err.contains("nothing was started and nothing written") {
        assert!(!out.path().join("weight-decay").exists());
    }
    assert_no_partial_files(out.path());
}

#[test]
fn sigterm_ends_the_run_at_a_batch_boundary_and_keeps_the_finished_epochs() {
    let out = tempfile::tempdir().unwrap();
    let child = start_and_wait_for_first_epoch(out.path(), LONG_WEIGHT_DECAY);
    std::thread::sleep(Duration::from_millis(300));
    signal(&child, libc::SIGTERM);
    let status = wait_with_timeout(child, Duration::from_secs(30));
    assert_eq!(status.code(), Some(143), "128 + SIGTERM");
    let dir = out.path().join("weight-decay");
    let rows = csv_rows(&dir.join("summary.csv"));
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["status"], "interrupted");
    let epochs: usize = rows[0]["epochs"].parse().unwrap();
    let curve = column(&dir.join("scratch-wd3.csv"), "epoch");
    assert!(
        epochs >= 1 && curve.len() == epochs,
        "{epochs} epochs, {} rows",
        curve.len()
    );
    assert_eq!(
        curve.last().copied(),
        Some(epochs as f64),
        "epochs 1..=n in order"
    );
    let run = read_json(&dir.join("run.json"));
    assert_eq!(run["status"], "interrupted");
    assert_no_partial_files(out.path());
}

/// A command of the scratch λ = 3 run stopped midway: the summary and `run.json` say
/// interrupted, the curve holds the finished epochs the summary counts, nothing is
/// half-written.
fn assert_stopped_in_scratch_wd3(out: &Path) {
    let dir = out.join("weight-decay");
    let rows = csv_rows(&dir.join("summary.csv"));
    assert_eq!(rows[0]["status"], "interrupted");
    let epochs: usize = rows[0]["epochs"].parse().unwrap();
    assert_eq!(column(&dir.join("scratch-wd3.csv"), "epoch").len(), epochs);
    assert_eq!(read_json(&dir.join("run.json"))["status"], "interrupted");
    assert_no_partial_files(out);
}

/// SIGHUP (the terminal closed, an ssh session dropped) stops the run like SIGTERM: the
/// finished epochs written, exit 129. (`tests/live_chart.rs` closes a real terminal.)
#[test]
fn sighup_ends_the_run_like_sigterm_and_keeps_the_finished_epochs() {
    let out = tempfile::tempdir().unwrap();
    let child = start_and_wait_for_first_epoch(out.path(), LONG_WEIGHT_DECAY);
    signal(&child, libc::SIGHUP);
    let status = wait_with_timeout(child, Duration::from_secs(30));
    assert_eq!(status.code(), Some(129), "128 + SIGHUP");
    assert_stopped_in_scratch_wd3(out.path());
}

/// `… | head -1`: the reader quits after the first result line; the next line the command
/// prints meets a closed pipe (SIGPIPE), which stops it like SIGTERM — no panic, the runs
/// that finished kept, said on stderr, exit 141.
#[test]
fn a_closed_stdout_stops_the_command_and_keeps_the_finished_runs() {
    let out = tempfile::tempdir().unwrap();
    let mut child = Command::new(BIN)
        .args(["--device", "cpu", "--no-chart", "--out"])
        .arg(out.path())
        .args(["weight-decay", "--epochs", "3000", "--no-tensorboard"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut err = child.stderr.take().unwrap();
    let errors = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = std::io::Read::read_to_string(&mut err, &mut text);
        text
    });
    let mut first = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    assert!(first.starts_with("weight decay, scratch"), "{first}");
    // The reader is gone (as `head -1` exits).
    let status = wait_with_timeout(child, Duration::from_secs(120));
    let err = errors.join().unwrap();
    assert_eq!(status.code(), Some(141), "128 + SIGPIPE; stderr:\n{err}");
    assert!(err.contains("interrupted by SIGPIPE"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    let dir = out.path().join("weight-decay");
    let rows = csv_rows(&dir.join("summary.csv"));
    assert_eq!(rows[0]["status"], "ok", "the run whose line was read");
    assert_eq!(rows.last().unwrap()["status"], "interrupted");
    assert_eq!(read_json(&dir.join("run.json"))["status"], "interrupted");
    assert_no_partial_files(out.path());
}

/// `… 2>&1 | head -1` closes stderr too: the progress line after the first meets the closed
/// pipe; the command stops as above, with nowhere to say it, and keeps what finished.
#[test]
fn a_closed_stderr_stops_the_command_and_keeps_the_finished_epochs() {
    let out = tempfile::tempdir().unwrap();
    let mut child = Command::new(BIN)
        .args(["--device", "cpu", "--no-chart", "--out"])
        .arg(out.path())
        // A progress line every 300 epochs.
        .args([
            "weight-decay",
            "--impl",
            "scratch",
            "--wd",
            "3",
            "--epochs",
            "3000",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    BufReader::new(child.stderr.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    assert!(first.contains(" epoch 1/"), "{first}");
    let status = wait_with_timeout(child, Duration::from_secs(120));
    assert_eq!(status.code(), Some(141), "128 + SIGPIPE");
    assert_stopped_in_scratch_wd3(out.path());
}

#[test]
fn ctrl_c_during_dropout_keeps_the_finished_epochs_and_exits_130() {
    let Some(data) = real_data_dir() else { return };
    let out = tempfile::tempdir().unwrap();
    let child = start_and_wait_for_first_epoch(
        out.path(),
        &[
            "dropout",
            "--impl",
            "concise",
            "--epochs",
            "50",
            "--data-dir",
            data.to_str().unwrap(),
        ],
    );
    signal(&child, libc::SIGINT);
    let status = wait_with_timeout(child, Duration::from_secs(30));
    assert_eq!(status.code(), Some(130), "128 + SIGINT");
    let dir = out.path().join("dropout");
    let rows = csv_rows(&dir.join("summary.csv"));
    assert_eq!(rows[0]["status"], "interrupted");
    let epochs: usize = rows[0]["epochs"].parse().unwrap();
    assert!((1..50).contains(&epochs), "{epochs}");
    assert_eq!(column(&dir.join("concise.csv"), "test_acc").len(), epochs);
    assert_no_partial_files(out.path());
}

#[test]
fn a_second_ctrl_c_quits_at_once_without_leaving_a_truncated_file() {
    for pause_ms in [0, 5, 50] {
        let out = tempfile::tempdir().unwrap();
        let child = start_and_wait_for_first_epoch(out.path(), LONG_WEIGHT_DECAY);
        std::thread::sleep(Duration::from_millis(500));
        signal(&child, libc::SIGINT);
        std::thread::sleep(Duration::from_millis(pause_ms));
        signal(&child, libc::SIGINT);
        let status = wait_with_timeout(child, Duration::from_secs(10));
        assert_eq!(status.code(), Some(130), "pause {pause_ms} ms");
        assert_no_partial_files(out.path());
    }
}

#[test]
fn an_interrupted_sweep_keeps_every_finished_run() {
    let out = tempfile::tempdir().unwrap();
    let child = start_and_wait_for_first_epoch(
        out.path(),
        &[
            "sweep",
            "weight-decay",
            "--impl",
            "concise",
            "--wd",
            "0,3",
            "--seeds",
            "0,1,2",
            "--epochs",
            "1000000",
        ],
    );
    std::thread::sleep(Duration::from_millis(200));
    signal(&child, libc::SIGINT);
    let status = wait_with_timeout(child, Duration::from_secs(30));
    assert_eq!(status.code(), Some(130));
    let dir = out.path().join("sweep/weight-decay");
    let runs = csv_rows(&dir.join("runs.csv"));
    assert_eq!(runs.len(), 1, "the interrupted run, and no run after it");
    assert_eq!(runs[0]["status"], "interrupted");
    let summary = csv_rows(&dir.join("summary.csv"));
    assert_eq!(summary.len(), 2);
    assert!(summary.iter().all(|r| r["status"] == "interrupted"));
    assert_no_partial_files(out.path());
}

// ---------------------------------------------------------------- output faults

/// A file-size limit below one CSV (`ulimit -f`, as batch schedulers set it for jobs): every
/// write of a CSV fails as on a full disk (EFBIG instead of ENOSPC). The program itself ignores
/// SIGXFSZ (the harness restores the default disposition), so it is not killed mid-write.
#[test]
fn a_full_disk_is_a_clear_error_and_leaves_no_partial_file() {
    let out = tempfile::tempdir().unwrap();
    let dir = out.path().join("weight-decay");
    std::fs::create_dir_all(&dir).unwrap();
    // An older result the failed run must leave as it was (a writer that wrote straight to
    // the final path would truncate it at the cap).
    let older: String = std::iter::once("epoch,train_loss,test_loss\n".to_string())
        .chain((1..=100).map(|e| format!("{e},0.{e:04},1.{e:04}\n")))
        .collect();
    std::fs::write(dir.join("scratch-wd0.csv"), &older).unwrap();
    let mut cmd = Command::new(BIN);
    // Without TensorBoard, whose event file would reach the cap first (that case is
    // tests/tensorboard.rs' a_file_size_cap_on_the_event_file_is_one_clear_error), and
    // without checkpoints (a run's, 17 kB, is written as it ends, before its CSV; a failed
    // checkpoint write is tests/resume_weight_decay.rs' and tests/resume.rs' business).
    cmd.args([
        "--device",
        "cpu",
        "--no-tensorboard",
        "--out",
        out.path().to_str().unwrap(),
        "weight-decay",
        "--no-checkpoints",
    ]);
    const CAP: u64 = 1500;
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            let limit = libc::rlimit {
                rlim_cur: CAP,
                rlim_max: CAP,
            };
            libc::setrlimit(libc::RLIMIT_FSIZE, &limit);
            libc::signal(libc::SIGXFSZ, libc::SIG_DFL);
            Ok(())
        });
    }
    let o = cmd.output().unwrap();
    assert_eq!(
        o.status.code(),
        Some(1),
        "a clean failure, not a death by SIGXFSZ ({:?}); stderr:\n{}",
        o.status,
        stderr(&o)
    );
    assert_fails_with(
        &o,
        &[
            "cannot write '",
            "weight-decay/scratch-wd0.csv'",
            "File too large",
        ],
    );
    assert_eq!(stderr(&o).matches("error:").count(), 1, "one error line");
    assert_no_partial_files(out.path());
    assert_eq!(
        std::fs::read_to_string(dir.join("scratch-wd0.csv")).unwrap(),
        older,
        "the older CSV is unchanged"
    );
    // Whatever else exists is whole: charts are well-formed SVG, JSON parses.
    for f in files_under(out.path()) {
        let path = out.path().join(&f);
        match f.extension().and_then(|e| e.to_str()) {
            Some("svg") => drop(svg_series(&path)),
            Some("json") => drop(read_json(&path)),
            _ => {}
        }
    }
}

#[test]
fn an_out_path_that_is_a_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("results");
    std::fs::write(&file, b"keep me").unwrap();
    for sub in [&["weight-decay"][..], &["sweep", "weight-decay"][..]] {
        let mut args = vec!["--device", "cpu", "--out", file.to_str().unwrap()];
        args.extend_from_slice(sub);
        let o = run(&args);
        assert_fails_with(&o, &["--out", "is a file, not a directory"]);
        assert_eq!(std::fs::read(&file).unwrap(), b"keep me");
    }
}

// ---------------------------------------------------------------- memory

#[test]
fn running_out_of_memory_is_one_line_naming_the_flags() {
    let out = tempfile::tempdir().unwrap();
    // 10⁸ examples × 10⁵ inputs × 4 bytes = 40 TB: the allocation fails at once.
    let o = run_on_cpu(
        out.path(),
        &[
            "weight-decay",
            "--n-train",
            "100000000",
            "--num-inputs",
            "100000",
        ],
    );
    assert_fails_with(
        &o,
        &[
            "error: out of memory",
            "--n-train",
            "--num-inputs",
            "100000000",
        ],
    );
    assert_eq!(stderr(&o).trim().lines().count(), 1, "{}", stderr(&o));
    assert_eq!(o.status.code(), Some(1));
}

// ---------------------------------------------------------------- fuzzing regressions

/// Every input the fuzzer found that crashed the reader (tests/fuzz-crashes/idx), replayed
/// through the fuzz target's own oracle: each is an error, or a value that keeps the reader's
/// promises (n·784 pixels, the header's counts, labels 0–9), never a panic. The crate is built
/// with overflow checks in every profile (Cargo.toml), so an overflow is a panic here too.
#[test]
fn fuzz_crashes_are_errors_now() {
    let dir = repo_root().join("tests/fuzz-crashes/idx");
    let mut n = 0;
    for f in files_under(&dir) {
        let data = std::fs::read(dir.join(&f)).unwrap();
        // As the fuzzer read it, and the whole file as a raw IDX file.
        idx::check_any_input(&data);
        idx::check_any_input(&[&[0][..], &data].concat());
        n += 1;
    }
    assert!(n >= 1, "the regression inputs are in {}", dir.display());
}

/// The oracle itself: accepted inputs of both kinds (raw and gzip-wrapped) reach its checks,
/// and it tolerates every kind of rejection.
#[test]
fn the_fuzz_oracle_accepts_valid_files_both_ways() {
    let images = idx::encode(idx::IMAGES_MAGIC, &[2, 28, 28], &[7; 2 * 784]);
    let labels = idx::encode(idx::LABELS_MAGIC, &[3], &[0, 9, 4]);
    for body in [images, labels, vec![], vec![0x1f, 0x8b, 0]] {
        for how in [0u8, 1] {
            let mut data = vec![how];
            data.extend_from_slice(&body);
            idx::check_any_input(&data);
        }
    }
}

#[test]
fn a_header_whose_sizes_overflow_is_refused() {
    // What every crash the fuzzer found comes down to: the product of the header's three
    // dimensions overflowed usize.
    let bytes = idx::encode(idx::IMAGES_MAGIC, &[u32::MAX, u32::MAX, u32::MAX], &[0; 16]);
    let e = idx::parse_images(&bytes).unwrap_err();
    // The exact size, (2³² − 1)³ + 16: a wrapped product (the release build of the old code)
    // or a panic (its debug build, which the fuzzer ran) fails here.
    assert!(
        e.contains("announces 79228162458924105385300197391;"),
        "{e}"
    );
}

#[test]
fn a_gzip_bomb_is_refused_before_it_exhausts_memory() {
    use std::io::Write;
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    let zeros = vec![0u8; 1 << 20];
    for _ in 0..(idx::MAX_BYTES >> 20) + 1 {
        gz.write_all(&zeros).unwrap();
    }
    let bomb = gz.finish().unwrap();
    assert!(bomb.len() < 1 << 20, "{} bytes compressed", bomb.len());
    let e = idx::decode(bomb.clone()).unwrap_err();
    assert!(e.contains("more than 128 MiB"), "{e}");
    // And through the command line, naming the file.
    let data = tempfile::tempdir().unwrap();
    for name in [
        "train-images-idx3-ubyte.gz",
        "train-labels-idx1-ubyte.gz",
        "t10k-images-idx3-ubyte.gz",
        "t10k-labels-idx1-ubyte.gz",
    ] {
        std::fs::write(data.path().join(name), &bomb).unwrap();
    }
    let out = tempfile::tempdir().unwrap();
    let o = run(&[
        "--out",
        out.path().to_str().unwrap(),
        "dropout",
        "--data-dir",
        data.path().to_str().unwrap(),
    ]);
    assert_fails_with(&o, &["train-images-idx3-ubyte.gz", "more than 128 MiB"]);
}
