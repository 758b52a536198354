//! TensorBoard event files, read back by TensorBoard itself (`tests/tensorboard_read.py`, its
//! `EventAccumulator` and the HParams plugin's protos; `tensorboard --logdir` over HTTP): every
//! scalar equals its CSV number (as f32) at its epoch, a sweep's runs carry their settings and
//! final figures, a run killed midway reads back to where it was and, resumed, shows each step
//! once.
mod common;

use common::*;
use serde_json::Value;
use std::io::{Read, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Every run under `root` as TensorBoard reads it (see `tests/tensorboard_read.py`).
fn read_board(python: &Path, root: &Path) -> Value {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/tensorboard_read.py");
    let o = Command::new(python).arg(script).arg(root).output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    serde_json::from_slice(&o.stdout).unwrap()
}

fn f32_of(text: &str) -> f64 {
    text.parse::<f64>().unwrap() as f32 as f64
}

/// The run's scalars equal the CSV's columns (as f32) at their epochs, every row once; the
/// timing columns only exist. Returns the number of rows.
fn assert_run_is_its_csv(run: &Value, csv: &Path) -> usize {
    let (header, rows) = read_csv(csv);
    let epoch = header.iter().position(|h| h == "epoch").unwrap();
    for (i, tag) in header.iter().enumerate().filter(|(i, _)| *i != epoch) {
        let points = run["scalars"][tag]
            .as_array()
            .unwrap_or_else(|| panic!("{}: no scalar {tag}", csv.display()));
        assert_eq!(points.len(), rows.len(), "{}: {tag}", csv.display());
        for (p, row) in points.iter().zip(&rows) {
            assert_eq!(p[0].as_i64().unwrap().to_string(), row[epoch], "{tag} step");
            if tag != "seconds" && tag != "elapsed_s" {
                let what = format!("{} {tag} at epoch {}", csv.display(), row[epoch]);
                assert_eq!(p[1].as_f64().unwrap(), f32_of(&row[i]), "{what}");
            }
        }
    }
    rows.len()
}

/// A finished run's HParams data: its status, and every metric a scalar at the last epoch
/// equal to the summary's figure.
fn assert_finished(run: &Value, figures: &[(String, String)], epochs: usize) {
    assert_eq!(run["status"], "STATUS_SUCCESS");
    let metrics: Vec<&str> = run["metrics"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m.as_str().unwrap())
        .collect();
    for (name, value) in figures {
        let tag = format!("final/{}", name.trim_start_matches("final_"));
        assert!(
            metrics.contains(&tag.as_str()),
            "{tag} not among {metrics:?}"
        );
        let point = &run["scalars"][&tag][0];
        assert_eq!(point[0].as_u64().unwrap() as usize, epochs, "{tag}");
        assert_eq!(point[1].as_f64().unwrap(), f32_of(value), "{tag}");
    }
}

/// The summary's final figures of the run on `line` (by the summary's header).
fn summary_figures(summary: &Path, line: usize, names: &[&str]) -> Vec<(String, String)> {
    let (header, rows) = read_csv(summary);
    names
        .iter()
        .map(|n| {
            let i = header.iter().position(|h| h == n).unwrap();
            (n.to_string(), rows[line][i].clone())
        })
        .collect()
}

#[test]
fn every_scalar_reads_back_equal_to_the_csv_at_its_epoch() {
    let Some(python) = python() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path();
    let wd = ["weight-decay", "--epochs", "30", "--optimizer", "sgd,adam"];
    let o = run_on_cpu(out, &[&["-q", "--no-plot"], &wd[..]].concat());
    assert!(o.status.success(), "{}", stderr(&o));
    let board = read_board(&python, &out.join("tensorboard"));
    let runs = [
        "scratch-wd0",
        "scratch-wd3",
        "concise-wd3",
        "concise-adam-wd3",
    ];
    for (line, stem) in ["scratch-wd0", "scratch-wd3", "concise-wd0", "concise-wd3"]
        .iter()
        .enumerate()
    {
        let run = &board[format!("weight-decay/{stem}-seed0")];
        let csv = out.join(format!("weight-decay/{stem}.csv"));
        assert_eq!(assert_run_is_its_csv(run, &csv), 30);
        let names = ["w_norm", "final_train_loss", "final_test_loss"];
        let summary = out.join("weight-decay/summary.csv");
        assert_finished(run, &summary_figures(&summary, line, &names), 30);
    }
    for stem in runs {
        let run = &board[format!("weight-decay/{stem}-seed0")];
        assert_eq!(run["hparams"]["engine"], "autograd", "{stem}");
        assert_eq!(run["hparams"]["epochs"], 30.0, "{stem}");
    }
    assert_eq!(
        board["weight-decay/concise-adam-wd3-seed0"]["hparams"]["optimizer"],
        "adam"
    );

    // The fused engine writes each λ of its group as its own run.
    let fused = tmp.path().join("fused");
    let args = [
        "-q",
        "--no-plot",
        "weight-decay",
        "--engine",
        "fused",
        "--epochs",
        "25",
    ];
    let o = run_on_cpu(&fused, &args);
    assert!(o.status.success(), "{}", stderr(&o));
    let board = read_board(&python, &fused.join("tensorboard"));
    for stem in ["scratch-wd0", "scratch-wd3", "concise-wd0", "concise-wd3"] {
        let run = &board[format!("weight-decay/{stem}-seed0")];
        let csv = fused.join(format!("weight-decay/{stem}.csv"));
        assert_eq!(assert_run_is_its_csv(run, &csv), 25);
        assert_eq!(run["hparams"]["engine"], "fused");
    }

    // Dropout: loss, accuracies and timings per epoch, both versions.
    let Some(data) = real_data_dir() else { return };
    let dropout = tmp.path().join("dropout");
    let args = local_dropout(
        "autograd",
        "2",
        data.to_str().unwrap(),
        &["-q", "--no-plot"],
    );
    let o = run_on_cpu(&dropout, &args);
    assert!(o.status.success(), "{}", stderr(&o));
    let board = read_board(&python, &dropout.join("tensorboard"));
    let names: Vec<&String> = board.as_object().unwrap().keys().collect();
    assert_eq!(names.len(), 2, "{names:?}");
    for (line, version) in ["scratch", "concise"].iter().enumerate() {
        let run = &board[format!("dropout/{version}-p0.2-0.5-seed0")];
        let csv = dropout.join(format!("dropout/{version}.csv"));
        assert_eq!(assert_run_is_its_csv(run, &csv), 2);
        let names = ["final_train_loss", "final_test_acc"];
        let summary = dropout.join("dropout/summary.csv");
        assert_finished(run, &summary_figures(&summary, line, &names), 2);
        assert_eq!(run["hparams"]["dropout1"], 0.2);
        assert_eq!(run["hparams"]["dropout2"], 0.5);
        assert_eq!(run["hparams"]["impl"], *version);
    }
}

#[test]
fn a_sweeps_runs_carry_their_settings_and_final_figures() {
    let Some(python) = python() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path();
    let o = run_on_cpu(
        out,
        &[&["-q", "--no-plot"], &wd_sweep("20", &[])[..]].concat(),
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let sweep = out.join("sweep/weight-decay");
    let board = read_board(&python, &sweep.join("tensorboard"));
    assert_eq!(board.as_object().unwrap().len(), 6, "2 λ × 3 seeds");
    for seed in 0..3 {
        for wd in [0.0, 3.0] {
            let stem = format!("concise-wd{wd}-seed{seed}");
            let run = &board[&stem];
            let h = &run["hparams"];
            assert_eq!(h["wd"], wd, "{stem}");
            assert_eq!(h["seed"], seed as f64, "{stem}");
            assert_eq!(h["impl"], "concise");
            assert_eq!(h["lr"], 0.003);
            assert_eq!(h["batch_size"], 5.0);
            assert_eq!(h["penalty"], "l2");
            assert_eq!(
                assert_run_is_its_csv(run, &sweep.join(format!("runs/{stem}.csv"))),
                20
            );
            // The sweep's line of this run (runs.csv: seed, …, wd, …).
            let summary = sweep.join("runs.csv");
            let line = csv_rows(&summary)
                .iter()
                .position(|r| r["seed"] == seed.to_string() && r["wd"].parse::<f64>() == Ok(wd))
                .unwrap();
            let names = ["w_norm", "final_test_loss"];
            assert_finished(run, &summary_figures(&summary, line, &names), 20);
        }
    }
}

/// The PyTorch counterpart (`scripts/torch_counterpart.py`, `SummaryWriter`) writes the same
/// runs: the same directories, tags and steps, the same numbers (both sides compute the same
/// on the CPU, tests/parity.rs; timing scalars aside), the same hyper-parameters, metrics and
/// status. Seed 5, weight decay's four runs and one dropout epoch of each version.
#[test]
fn the_pytorch_counterpart_writes_the_same_runs() {
    let Some(python) = python() else { return };
    let Some(data) = real_data_dir() else { return };
    let data = data.to_str().unwrap();
    let (rust, torch) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let experiments: [&[&str]; 2] = [
        &["weight-decay"],
        &["dropout", "--epochs", "1", "--data-dir", data],
    ];
    for args in experiments {
        let o = run_on_cpu(
            rust.path(),
            &[&["-q", "--no-plot", "--seed", "5"][..], args].concat(),
        );
        assert!(o.status.success(), "{}", stderr(&o));
        let o = Command::new(&python)
            .arg(repo_root().join("scripts/torch_counterpart.py"))
            .args(["--device", "cpu", "--seed", "5", "--out"])
            .arg(torch.path())
            .args(args)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", stderr(&o));
    }
    let r = read_board(&python, &rust.path().join("tensorboard"));
    let t = read_board(&python, &torch.path().join("tensorboard"));
    let names = |b: &Value| b.as_object().unwrap().keys().cloned().collect::<Vec<_>>();
    assert_eq!(names(&r), names(&t), "the same runs");
    assert_eq!(names(&r).len(), 6, "{:?}", names(&r));
    for (name, run) in r.as_object().unwrap() {
        let other = &t[name];
        for key in ["hparams", "metrics", "status"] {
            assert_eq!(run[key], other[key], "{name}: {key}");
        }
        let (a, b) = (run["scalars"].as_object().unwrap(), &other["scalars"]);
        let tags = |m: &serde_json::Map<String, Value>| m.keys().cloned().collect::<Vec<_>>();
        assert_eq!(tags(a), tags(b.as_object().unwrap()), "{name}: tags");
        for (tag, points) in a {
            if tag == "seconds" || tag == "elapsed_s" {
                let steps = |p: &Value| {
                    p.as_array()
                        .unwrap()
                        .iter()
                        .map(|x| x[0].clone())
                        .collect::<Vec<_>>()
                };
                assert_eq!(steps(points), steps(&b[tag]), "{name}: {tag} steps");
            } else {
                assert_eq!(*points, b[tag], "{name}: {tag}");
            }
        }
    }
}

/// An HTTP/1.0 exchange with the local TensorBoard: the body, or None when it does not answer
/// (yet).
fn http(port: u16, method: &str, path: &str, body: &str) -> Option<String> {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    let request = format!(
        "{method} {path} HTTP/1.0\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(request.as_bytes()).ok()?;
    let mut response = String::new();
    s.read_to_string(&mut response).ok()?;
    let (head, body) = response.split_once("\r\n\r\n")?;
    let status = head.lines().next()?;
    status.contains(" 200 ").then(|| body.to_string())
}

#[test]
fn tensorboard_serves_the_runs_over_http() {
    let Some(python) = python() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path();
    let o = run_on_cpu(out, &["-q", "--no-plot", "weight-decay", "--epochs", "5"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut server = Command::new(&python)
        .args(["-m", "tensorboard.main", "--logdir"])
        .arg(out)
        .args(["--host", "127.0.0.1", "--port", &port.to_string()])
        .args(["--load_fast", "false", "--reload_interval", "1"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let runs = [
        "tensorboard/weight-decay/concise-wd0-seed0",
        "tensorboard/weight-decay/concise-wd3-seed0",
        "tensorboard/weight-decay/scratch-wd0-seed0",
        "tensorboard/weight-decay/scratch-wd3-seed0",
    ];
    let deadline = Instant::now() + Duration::from_secs(120);
    let listed = loop {
        let listed: Option<Vec<String>> = http(port, "GET", "/data/runs", "")
            .and_then(|b| serde_json::from_str(&b).ok())
            .filter(|l: &Vec<String>| l.len() == runs.len());
        if let Some(l) = listed {
            break l;
        }
        if Instant::now() > deadline || server.try_wait().unwrap().is_some() {
            let _ = server.kill();
            panic!("tensorboard did not list the runs on port {port}");
        }
        std::thread::sleep(Duration::from_millis(300));
    };
    let tags = http(port, "GET", "/data/plugin/scalars/tags", "");
    let experiment = http(port, "POST", "/data/plugin/hparams/experiment", "{}");
    server.kill().unwrap();
    server.wait().unwrap();
    let mut listed = listed;
    listed.sort();
    assert_eq!(listed, runs);
    let tags: Value = serde_json::from_str(&tags.expect("the scalars plugin's tags")).unwrap();
    for run in runs {
        for tag in ["train_loss", "test_loss", "elapsed_s", "final/w_norm"] {
            assert!(tags[run].get(tag).is_some(), "{run}: no {tag} in {tags}");
        }
    }
    let experiment: Value = serde_json::from_str(&experiment.expect("the hparams experiment"))
        .expect("the experiment as JSON");
    let names: Vec<&str> = experiment["hparamInfos"]
        .as_array()
        .expect("hparamInfos")
        .iter()
        .map(|h| h["name"].as_str().unwrap())
        .collect();
    for name in ["impl", "wd", "optimizer", "penalty", "lr", "epochs", "seed"] {
        assert!(names.contains(&name), "{name} not among {names:?}");
    }
}

/// A fused group killed with SIGKILL midway: each λ's run reads back every epoch it had
/// finished, once and in order, equal to the uninterrupted command's; resumed, and run again,
/// each epoch is there once.
#[test]
fn a_killed_run_reads_back_to_where_it_was_and_shows_each_step_once_resumed() {
    let Some(python) = python() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let (whole, killed) = (tmp.path().join("whole"), tmp.path().join("killed"));
    let args = [
        "--no-plot",
        "weight-decay",
        "--engine",
        "fused",
        "--impl",
        "scratch",
        "--epochs",
        "20000",
        "--checkpoint-every",
        "1000",
    ];
    let o = run_on_cpu(&whole, &[&["-q"], &args[..]].concat());
    assert!(o.status.success(), "{}", stderr(&o));
    let csv = whole.join("weight-decay/scratch-wd3.csv");
    let (header, rows) = read_csv(&csv);
    let test_loss = header.iter().position(|h| h == "test_loss").unwrap();
    let run_name = "weight-decay/scratch-wd3-seed0";
    // Steps 1…n once each of the run `name`, equal to the uninterrupted curve; n.
    let check_run = |board: &Value, name: &str| -> usize {
        let points = board[name]["scalars"]["test_loss"]
            .as_array()
            .unwrap_or_else(|| panic!("no {name} in {board}"));
        for (i, p) in points.iter().enumerate() {
            assert_eq!(
                p[0].as_u64().unwrap() as usize,
                i + 1,
                "steps in order, once"
            );
            assert_eq!(
                p[1].as_f64().unwrap(),
                f32_of(&rows[i][test_loss]),
                "epoch {}",
                i + 1
            );
        }
        points.len()
    };
    let check = |board: &Value| check_run(board, run_name);

    let mut child = Command::new(BIN)
        .args(["--device", "cpu", "-q", "--out"])
        .arg(&killed)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let checkpoint = killed.join(".weight-decay.checkpoints/scratch-wd0-seed0.safetensors");
    let deadline = Instant::now() + Duration::from_secs(300);
    while d2l_regularization::checkpoint::describe(&checkpoint).map_or(true, |m| m.epoch < 5000) {
        assert!(
            child.try_wait().unwrap().is_none(),
            "the command ended before epoch 5000"
        );
        assert!(Instant::now() < deadline, "no checkpoint at epoch 5000");
        std::thread::sleep(Duration::from_millis(2));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    // Live in the command's staging directory of event files, until the next command.
    let board = read_board(&python, &killed.join("tensorboard"));
    let staged = format!(".weight-decay.{}.staging/scratch-wd3-seed0", child.id());
    let n = check_run(&board, &staged);
    assert!((5000..20000).contains(&n), "read back {n} epochs");
    assert!(
        board.get(run_name).is_none(),
        "the event files of the set are not touched by a killed command"
    );

    let o = run_on_cpu(&killed, &[&["-q"], &args[..], &["--resume"]].concat());
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(
        check(&read_board(&python, &killed.join("tensorboard"))),
        20000
    );
    let o = run_on_cpu(&killed, &[&["-q"], &args[..]].concat());
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(
        check(&read_board(&python, &killed.join("tensorboard"))),
        20000
    );
}

/// A file-size cap that the event file reaches first stops the command with one line naming
/// it, and the way to go on without TensorBoard.
#[test]
fn a_file_size_cap_on_the_event_file_is_one_clear_error() {
    let tmp = tempfile::tempdir().unwrap();
    let args = [
        "--device",
        "cpu",
        "-q",
        "--no-plot",
        "--out",
        tmp.path().to_str().unwrap(),
        "weight-decay",
        "--engine",
        "fused",
        "--epochs",
        "3000",
    ];
    let o = Command::new("prlimit")
        .arg("--fsize=60000")
        .arg(BIN)
        .args(args)
        .output()
        .unwrap();
    assert_fails_with(
        &o,
        &[
            "cannot write '",
            "tfevents",
            "File too large",
            "--no-tensorboard",
        ],
    );
    assert_eq!(
        stderr(&o)
            .lines()
            .filter(|l| l.starts_with("error"))
            .count(),
        1
    );
    // The book's command, charts and all, under a cap its event file reaches first (at
    // about epoch 10; every chart is larger than 1500 bytes too): the error names the event
    // file, the write that failed, not the chart the command could not write after it.
    let tmp = tempfile::tempdir().unwrap();
    let o = Command::new("prlimit")
        .arg("--fsize=1500")
        .arg(BIN)
        .args(["--device", "cpu", "--out"])
        .arg(tmp.path())
        .arg("weight-decay")
        .output()
        .unwrap();
    assert_fails_with(&o, &["cannot write '", "tfevents", "File too large"]);
    assert_eq!(stderr(&o).matches("error:").count(), 1, "one error line");
}

/// The event files are part of the set: a rerun with other flags killed midway leaves the
/// previous set's event files with its CSVs (the killed one's in its staging directory, cleared
/// by the next command), and a set written without TensorBoard leaves none of another set's.
#[test]
fn a_killed_rerun_leaves_the_event_files_with_the_set_they_describe() {
    let Some(python) = python() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path();
    let short = [
        "weight-decay",
        "--impl",
        "scratch",
        "--wd",
        "3",
        "--epochs",
        "20",
    ];
    let o = run_on_cpu(out, &[&["-q"], &short[..]].concat());
    assert!(o.status.success(), "{}", stderr(&o));
    let csv = out.join("weight-decay/scratch-wd3.csv");
    let run = "weight-decay/scratch-wd3-seed0";
    assert_eq!(
        assert_run_is_its_csv(&read_board(&python, &out.join("tensorboard"))[run], &csv),
        20
    );
    let mut child = Command::new(BIN)
        .args(["--device", "cpu", "-q", "--out"])
        .arg(out)
        .args([
            "weight-decay",
            "--impl",
            "scratch",
            "--wd",
            "3",
            "--epochs",
            "1000000",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let staged = out.join(format!(
        "tensorboard/.weight-decay.{}.staging/scratch-wd3-seed0",
        child.id()
    ));
    // Its lock taken, then a second of training.
    let lock = out.join(".weight-decay.lock");
    let deadline = Instant::now() + Duration::from_secs(60);
    while !std::fs::read_to_string(&lock).is_ok_and(|t| t.contains(&child.id().to_string())) {
        assert!(Instant::now() < deadline, "the rerun never started");
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_secs(1));
    assert!(staged.exists(), "the rerun writes its event files aside");
    child.kill().unwrap();
    child.wait().unwrap();
    let board = read_board(&python, &out.join("tensorboard"));
    assert_eq!(assert_run_is_its_csv(&board[run], &csv), 20);
    // Without TensorBoard: no event file of another set is left beside the new one.
    let o = run_on_cpu(out, &[&["-q", "--no-tensorboard"], &short[..]].concat());
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(!out.join("tensorboard/weight-decay").exists());
    assert!(
        !staged.exists(),
        "the killed rerun's staging directory is cleared"
    );
}
