//! What a hostile tester tries: flag values at and past every limit, two commands into one
//! results directory at once, a rerun that fails halfway, damaged sweep records, temporaries
//! a killed writer left, data paths that are not files. Each ends in exit 0 or one clear
//! error line — never a signal, a panic or a mixed directory.
mod common;
use common::*;
use std::path::Path;
use std::process::{Command, Output, Stdio};

/// Runs the binary under a 6 GB address-space cap (so a missed huge allocation fails here
/// instead of swapping), on the CPU, one thread, results in `out`.
fn capped(out: &Path, args: &[&str]) -> Output {
    let mut cmd = Command::new(BIN);
    cmd.args(["--device", "cpu", "--quiet", "--threads", "1", "--out"])
        .arg(out)
        .args(args);
    use std::os::unix::process::CommandExt;
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            let limit = libc::rlimit {
                rlim_cur: 6_000_000_000,
                rlim_max: 6_000_000_000,
            };
            libc::setrlimit(libc::RLIMIT_AS, &limit);
            Ok(())
        });
    }
    cmd.output().expect("the binary starts")
}

/// Exit 0, or exit 1 with one `error:` line and no panic, backtrace or signal.
fn assert_clean(o: &Output, what: &str) {
    let err = stderr(o);
    assert!(
        o.status.code().is_some(),
        "{what}: killed by a signal ({:?}):\n{err}",
        o.status
    );
    assert!(
        !err.contains("panicked")
            && !err.contains("backtrace")
            && !err.contains("memory allocation"),
        "{what}: {err}"
    );
    if !o.status.success() {
        // 2: clap refused the command line; 1: the program refused or failed.
        assert!(matches!(o.status.code(), Some(1 | 2)), "{what}:\n{err}");
        let errors = err.lines().filter(|l| l.starts_with("error")).count();
        assert_eq!(errors, 1, "{what}: one error line:\n{err}");
    }
}

/// No hidden file but the lock files and kept checkpoints: no temporary, no staging directory.
fn assert_no_temporaries(out: &Path) {
    let mut stack = vec![out.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            // A failed command keeps its runs' checkpoints (for --resume), not its temporaries.
            let kept = name.contains(".lock") || name.ends_with(".checkpoints");
            assert!(
                !name.starts_with('.') || kept,
                "left behind: {}",
                e.path().display()
            );
            if e.path().is_dir() {
                stack.push(e.path());
            }
        }
    }
}

// ------------------------------------------------------------------- flags

/// The first table of the issue: each is one line naming the flag, before anything starts.
#[test]
fn huge_counts_and_sizes_are_refused_naming_the_flag() {
    let out = tempfile::tempdir().unwrap();
    let cases: &[(&[&str], &str)] = &[
        (&["weight-decay", "--epochs", "4294967296000"], "--epochs"),
        (
            &["dropout", "--epochs", "1000000000", "--engine", "fused"],
            "--epochs",
        ),
        (
            &[
                "sweep",
                "dropout",
                "--seeds",
                "0",
                "--epochs",
                "4000000000",
                "--engine",
                "fused",
            ],
            "--epochs",
        ),
        (&["dropout", "--epochs", "18446744073709551615"], "--epochs"),
        (
            &["weight-decay", "--n-train", "18446744073709551615"],
            "--n-train",
        ),
        (
            &["weight-decay", "--n-train", "9223372036854775807"],
            "--n-train",
        ),
        (
            &["weight-decay", "--batch-size", "18446744073709551615"],
            "--batch-size",
        ),
        (
            &["dropout", "--batch-size", "18446744073709551615"],
            "--batch-size",
        ),
        (&["weight-decay", "--num-inputs", "1000001"], "--num-inputs"),
        (&["weight-decay", "--n-val", "100000001"], "--n-val"),
    ];
    for (args, flag) in cases {
        let o = capped(out.path(), args);
        assert_clean(&o, &args.join(" "));
        let err = stderr(&o);
        assert!(
            !o.status.success() && err.contains(flag) && err.contains("at most"),
            "{args:?}: {err}"
        );
    }
    assert!(
        std::fs::read_dir(out.path()).unwrap().next().is_none(),
        "nothing written"
    );
}

/// The ceilings themselves are accepted by the parser (seen without training them: the same
/// command line is then refused by the duplicate check, which runs before anything starts).
#[test]
fn the_ceilings_themselves_parse() {
    let out = tempfile::tempdir().unwrap();
    // Accepted by the parser, then refused by the duplicate check (which runs before training).
    let o = capped(
        out.path(),
        &[
            "weight-decay",
            "--epochs",
            "1000000",
            "--n-train",
            "100000000",
            "--num-inputs",
            "1000000",
            "--wd",
            "1,1",
        ],
    );
    assert_fails_with(&o, &["--wd lists 1 twice"]);
}

#[test]
fn duplicate_list_items_are_refused_naming_the_flag_and_value() {
    let out = tempfile::tempdir().unwrap();
    let cases: &[(&[&str], &str)] = &[
        (
            &["sweep", "weight-decay", "--epochs", "2", "--wd", "3,3"],
            "--wd lists 3 twice",
        ),
        (
            &["sweep", "weight-decay", "--epochs", "2", "--seeds", "1,1"],
            "--seeds lists 1 twice",
        ),
        (
            &["sweep", "dropout", "--epochs", "1", "--dropout1", "0.5,0.5"],
            "--dropout1 lists 0.5 twice",
        ),
        (&["weight-decay", "--wd", "3,3"], "--wd lists 3 twice"),
        (&["weight-decay", "--wd", "0,-0"], "--wd lists"),
        (
            &[
                "weight-decay",
                "--optimizer",
                "sgd,adam,sgd",
                "--impl",
                "concise",
            ],
            "--optimizer lists sgd twice",
        ),
    ];
    for (args, needle) in cases {
        let o = capped(out.path(), args);
        assert_clean(&o, &args.join(" "));
        assert_fails_with(&o, &[needle]);
    }
}

#[test]
fn a_learning_rate_that_is_zero_in_f32_is_refused() {
    let out = tempfile::tempdir().unwrap();
    let o = capped(out.path(), &["weight-decay", "--lr", "1e-46"]);
    assert_fails_with(&o, &["--lr", "1e-46 is 0 in the 32-bit floats"]);
}

/// Negative values after a space reach the flag's own parser: accepted where valid (a seed),
/// refused with the flag's own message where not.
#[test]
fn negative_values_after_a_space_reach_the_flags_parser() {
    let out = tempfile::tempdir().unwrap();
    for (args, needle) in [
        (
            &["weight-decay", "--lr", "-inf"][..],
            "'-inf' is not a finite number",
        ),
        (
            &["weight-decay", "--wd", "-1,3"][..],
            "must be 0 or more, got -1",
        ),
        (
            &["sweep", "weight-decay", "--shard", "-1/2"][..],
            "not a shard number",
        ),
        (
            &["dropout", "--dropout1", "-0.5"][..],
            "must be a probability",
        ),
    ] {
        let o = capped(out.path(), args);
        assert_fails_with(&o, &[needle]);
        assert!(!stderr(&o).contains("unexpected argument"), "{args:?}");
    }
}

/// Every numeric flag with generated values (0, 1, negative, huge, the i64/u64 extremes, NaN,
/// inf, 1e309, empty items, duplicates): exit 0 or one error line, never a signal, a panic or a
/// backtrace, and no temporary left. Values that would train are given `--epochs 1` and a
/// small model so the sweep stays quick; the cap turns a missed huge allocation into a failure.
#[test]
fn no_flag_value_aborts_the_program() {
    let values = [
        "0",
        "1",
        "-1",
        "2",
        "0.5",
        "1e-46",
        "-0",
        "1e309",
        "NaN",
        "inf",
        "-inf",
        "9223372036854775807",
        "9223372036854775808",
        "18446744073709551615",
        "-9223372036854775808",
        "4294967296000",
        "1,,2",
        ",",
        "",
        "3,3",
        "0x10",
        "1e3",
    ];
    // (subcommand, flag, what keeps a run that this value lets through quick)
    let wd_small: &[&str] = &[
        "--epochs", "1", "--n-test", "5", "--impl", "concise", "--wd", "0",
    ];
    // Dropout stops at its data after the flags are parsed: nothing trains.
    let no_data: &[&str] = &["--offline", "--data-dir", "/nonexistent"];
    let flags: &[(&[&str], &str, &[&str])] = &[
        (
            &["weight-decay"],
            "--epochs",
            &["--n-test", "5", "--impl", "concise"],
        ),
        (&["weight-decay"], "--lr", wd_small),
        (&["weight-decay"], "--batch-size", wd_small),
        (&["weight-decay"], "--n-train", wd_small),
        (
            &["weight-decay"],
            "--n-test",
            &["--epochs", "1", "--impl", "concise", "--wd", "0"],
        ),
        (&["weight-decay"], "--num-inputs", wd_small),
        (&["weight-decay"], "--n-val", wd_small),
        (
            &["weight-decay"],
            "--wd",
            &["--epochs", "1", "--n-test", "5", "--impl", "concise"],
        ),
        (&["dropout"], "--dropout1", no_data),
        (&["dropout"], "--mc-samples", no_data),
        (&["dropout"], "--input-noise", no_data),
        (&["dropout"], "--epochs", no_data),
        (&["dropout"], "--batch-size", no_data),
        (&["dropout"], "--checkpoint-every", no_data),
        (&["sweep", "dropout"], "--checkpoint-every", no_data),
        (&["weight-decay"], "--checkpoint-every", wd_small),
        (&["sweep", "weight-decay"], "--checkpoint-every", wd_small),
        (&["sweep", "weight-decay"], "--seeds", wd_small),
        (&["sweep", "weight-decay"], "--shard", wd_small),
        (
            &[],
            "--seed",
            &[
                "weight-decay",
                "--epochs",
                "1",
                "--n-test",
                "5",
                "--impl",
                "concise",
                "--wd",
                "0",
            ],
        ),
        (
            &[],
            "--threads",
            &[
                "weight-decay",
                "--epochs",
                "1",
                "--n-test",
                "5",
                "--impl",
                "concise",
                "--wd",
                "0",
            ],
        ),
    ];
    let mut tried = 0;
    for (sub, flag, rest) in flags {
        for v in values {
            let out = tempfile::tempdir().unwrap();
            let mut args: Vec<&str> = sub.to_vec();
            args.extend([*flag, v]);
            args.extend_from_slice(rest);
            // Values that train for long are cut by the count ceilings or the small extras;
            // a huge --n-train with a real allocation is refused or reported as out of memory.
            let o = capped(out.path(), &args);
            assert_clean(&o, &args.join(" "));
            assert_no_temporaries(out.path());
            tried += 1;
        }
    }
    assert_eq!(tried, flags.len() * values.len());
}

// ------------------------------------------------------------------- one writer at a time

/// Two sweeps into one `--out` started at the same moment: one wins, the other is told whose
/// directory it is and writes nothing; the directory holds the winner's sweep whole. Repeated,
/// since a check-then-write race shows only sometimes.
#[test]
fn two_sweeps_into_one_directory_at_once_never_both_succeed() {
    for round in 0..5 {
        let out = tempfile::tempdir().unwrap();
        let spawn = |epochs: &str| {
            Command::new(BIN)
                .args(["--device", "cpu", "--quiet", "--threads", "1", "--out"])
                .arg(out.path())
                .args([
                    "sweep",
                    "weight-decay",
                    "--wd",
                    "0,1,3,10",
                    "--seeds",
                    "0,1",
                    "--epochs",
                    epochs,
                ])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        };
        let (a, b) = (spawn("100"), spawn("50"));
        let (a, b) = (a.wait_with_output().unwrap(), b.wait_with_output().unwrap());
        let ok = [&a, &b].iter().filter(|o| o.status.success()).count();
        assert_eq!(
            ok,
            1,
            "round {round}: exactly one succeeds:\n{}\n{}",
            stderr(&a),
            stderr(&b)
        );
        let (winner, loser, epochs) = if a.status.success() {
            (&a, &b, "100")
        } else {
            (&b, &a, "50")
        };
        assert_fails_with(
            loser,
            &["is in use by another command: PID", "sweep weight-decay"],
        );
        assert!(stdout(winner).contains("16 runs summarised"));
        // The directory is the winner's, whole: every run's curve has its epochs.
        let dir = out.path().join("sweep/weight-decay");
        let rows = csv_rows(&dir.join("runs.csv"));
        assert_eq!(rows.len(), 16);
        assert!(
            rows.iter().all(|r| r["epochs"] == epochs),
            "round {round}: mixed epochs"
        );
    }
}

/// Two runs into one `--out`: the second is refused while the first trains, naming its PID.
#[test]
fn a_second_run_into_a_directory_in_use_is_refused_naming_the_first() {
    let out = tempfile::tempdir().unwrap();
    let first = Command::new(BIN)
        .args(["--device", "cpu", "--quiet", "--threads", "1", "--out"])
        .arg(out.path())
        // About the lock only: no checkpoint for the command after the kill to refuse.
        .args(["weight-decay", "--epochs", "3000", "--no-checkpoints"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Until the first holds the lock (it writes its PID into the lock file): seconds, or a
    // minute on a machine busy with other tests.
    let lock = out.path().join(".weight-decay.lock");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    while !std::fs::read_to_string(&lock).is_ok_and(|t| t.contains(&first.id().to_string())) {
        assert!(
            std::time::Instant::now() < deadline,
            "the first never took the lock"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let o = capped(out.path(), &["weight-decay", "--epochs", "2"]);
    assert_fails_with(
        &o,
        &[
            &format!("in use by another command: PID {}", first.id()),
            "--epochs 3000",
        ],
    );
    let mut first = first;
    unsafe { libc::kill(first.id() as i32, libc::SIGKILL) };
    first.wait().unwrap();
    // A killed holder's lock goes with it: the next command runs.
    let o = capped(out.path(), &["weight-decay", "--epochs", "2"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_no_temporaries(out.path());
}

/// A lock file planted in a shared `--out` as a symbolic link (a run's, a sweep's, a shard's)
/// or as a second name of another file is refused by name, and what it points to is left
/// byte for byte as it was (the lock used to be opened through the link and truncated).
#[test]
fn a_planted_lock_file_is_refused_and_its_target_untouched() {
    let out = tempfile::tempdir().unwrap();
    let target = out.path().join("someone-else.txt");
    std::fs::write(&target, "precious\n").unwrap();
    let sweep_dir = out.path().join("sweep").join("weight-decay");
    std::fs::create_dir_all(&sweep_dir).unwrap();
    let wd = ["--epochs", "2", "--impl", "scratch", "--wd", "3"];
    let cases: [(std::path::PathBuf, Vec<&str>); 3] = [
        (
            out.path().join(".weight-decay.lock"),
            [&["weight-decay"][..], &wd].concat(),
        ),
        (
            sweep_dir.join(".lock"),
            [&["sweep", "weight-decay"][..], &wd].concat(),
        ),
        (
            sweep_dir.join(".lock-shard-0-of-2"),
            [
                &["sweep", "weight-decay", "--seeds", "0,1", "--shard", "0/2"][..],
                &wd,
            ]
            .concat(),
        ),
    ];
    for (lock, args) in &cases {
        std::os::unix::fs::symlink(&target, lock).unwrap();
        let o = capped(out.path(), args);
        assert_clean(&o, &format!("{args:?}"));
        assert_fails_with(&o, &[&lock.display().to_string(), "is a symbolic link"]);
        assert_eq!(
            std::fs::read_to_string(&target).unwrap(),
            "precious\n",
            "{args:?}"
        );
        std::fs::remove_file(lock).unwrap();
    }
    // A hard link: the same file under a second name.
    let (lock, args) = &cases[0];
    std::fs::hard_link(&target, lock).unwrap();
    let o = capped(out.path(), args);
    assert_fails_with(&o, &[&lock.display().to_string(), "a hard link"]);
    assert_eq!(std::fs::read_to_string(&target).unwrap(), "precious\n");
    std::fs::remove_file(lock).unwrap();
    // Without them, the same commands run.
    let o = capped(out.path(), &cases[0].1);
    assert!(o.status.success(), "{}", stderr(&o));
}

/// A Linux path may hold any bytes but `/` and NUL: a `--out` that is not UTF-8 works (it
/// used to panic in `std::env::args`), and `run.json` records the command with U+FFFD for the
/// bytes; a `--data-dir` that is not UTF-8 is looked in (here it does not exist: refused
/// naming the flag).
#[test]
fn paths_that_are_not_utf8_work_or_are_refused_naming_the_flag() {
    use std::os::unix::ffi::OsStrExt;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join(std::ffi::OsStr::from_bytes(b"out-\xff"));
    let o = capped(
        &out,
        &[
            "weight-decay",
            "--epochs",
            "2",
            "--impl",
            "scratch",
            "--wd",
            "3",
        ],
    );
    assert_clean(&o, "--out out-\\xff");
    assert!(o.status.success(), "{}", stderr(&o));
    let run = std::fs::read_to_string(out.join("weight-decay").join("run.json")).unwrap();
    assert!(run.contains("out-\u{fffd}"), "{run}");
    let data = dir.path().join(std::ffi::OsStr::from_bytes(b"data-\xff"));
    let mut cmd = Command::new(BIN);
    cmd.args(["--device", "cpu", "--quiet", "--out"])
        .arg(dir.path().join("o2"))
        .args(["dropout", "--epochs", "1", "--offline", "--data-dir"])
        .arg(&data);
    let o = cmd.output().unwrap();
    assert_clean(&o, "--data-dir data-\\xff");
    assert_fails_with(&o, &["--data-dir", "data-\u{fffd}"]);
}

// ------------------------------------------------------------------- never mixed

/// (a) A rerun that fails halfway (a file-size cap stops it at a chart) leaves the previous
/// set exactly as it was: curves, summary, run.json and workbook of one run.
#[test]
fn a_rerun_that_fails_halfway_leaves_the_previous_set() {
    let out = tempfile::tempdir().unwrap();
    let o = capped(out.path(), &["weight-decay"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let dir = out.path().join("weight-decay");
    let before: Vec<(std::path::PathBuf, Vec<u8>)> = files_under(&dir)
        .into_iter()
        .map(|f| (f.clone(), std::fs::read(dir.join(&f)).unwrap()))
        .collect();
    let mut cmd = Command::new(BIN);
    cmd.args(["--device", "cpu", "--quiet", "--out"])
        .arg(out.path())
        .args(["weight-decay", "--lr", "0.004"]);
    use std::os::unix::process::CommandExt;
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            let limit = libc::rlimit {
                rlim_cur: 30_000,
                rlim_max: 30_000,
            };
            libc::setrlimit(libc::RLIMIT_FSIZE, &limit);
            Ok(())
        });
    }
    let o = cmd.output().unwrap();
    assert_fails_with(&o, &["cannot write '", "weight-decay/", "File too large"]);
    let after: Vec<(std::path::PathBuf, Vec<u8>)> = files_under(&dir)
        .into_iter()
        .map(|f| (f.clone(), std::fs::read(dir.join(&f)).unwrap()))
        .collect();
    assert!(before == after, "the previous set changed");
    assert_no_temporaries(out.path());
}

/// (e) `merge` checks records against their curves: a finished run without a final figure, a
/// curve with a NaN, a truncated record are each called what they are.
#[test]
fn merge_calls_damaged_records_and_curves_damaged() {
    let out = tempfile::tempdir().unwrap();
    for k in ["0/2", "1/2"] {
        let o = capped(out.path(), &wd_sweep("3", &["--shard", k]));
        assert!(o.status.success(), "{}", stderr(&o));
    }
    let dir = out.path().join("sweep/weight-decay");
    let merge = || run(&["--quiet", "sweep", "merge", dir.to_str().unwrap()]);
    assert!(merge().status.success());
    let runs = dir.join("runs");
    let record = runs.join("concise-wd3-seed1.json");
    let mut r = read_json(&record);
    r["finals"][3] = serde_json::Value::Null;
    std::fs::write(&record, serde_json::to_vec(&r).unwrap()).unwrap();
    assert_fails_with(
        &merge(),
        &["concise-wd3-seed1.json is a finished run without its final_train_loss"],
    );
    std::fs::write(&record, b"{\"experiment\": \"weight-de").unwrap();
    assert_fails_with(&merge(), &["runs/concise-wd3-seed1.json is corrupt"]);
    std::fs::remove_file(&record).unwrap();
    let curve = runs.join("concise-wd0-seed0.csv");
    let text = std::fs::read_to_string(&curve).unwrap();
    let mut lines: Vec<String> = text.lines().map(String::from).collect();
    let cells: Vec<String> = lines[3].split(',').map(String::from).collect();
    lines[3] = format!("{},NaN,{}", cells[0], cells[2..].join(","));
    std::fs::write(&curve, lines.join("\n") + "\n").unwrap();
    assert_fails_with(
        &merge(),
        &["concise-wd0-seed0.csv has 'NaN' in column train_loss of epoch 3"],
    );
    // An edited last row contradicts its record.
    lines[3] = format!("{},0.5,{}", cells[0], cells[2..].join(","));
    std::fs::write(&curve, lines.join("\n") + "\n").unwrap();
    assert_fails_with(
        &merge(),
        &[
            "says final_train_loss",
            "where the last row of runs/concise-wd0-seed0.csv says 0.5",
        ],
    );
}

/// (f) A writer killed between writing a temporary and renaming it leaves `.<name>.<pid>.tmp`;
/// a sweep that holds the directory alone (`--resume`) removes it.
#[test]
fn resume_removes_what_a_killed_writer_left() {
    let out = tempfile::tempdir().unwrap();
    let o = capped(out.path(), &wd_sweep("2", &[]));
    assert!(o.status.success(), "{}", stderr(&o));
    let runs = out.path().join("sweep/weight-decay/runs");
    let orphan = runs.join(".concise-wd3-seed0.csv.999999.tmp");
    std::fs::write(&orphan, b"epoch,train").unwrap();
    std::fs::write(runs.parent().unwrap().join(".runs.csv.999999.tmp"), b"x").unwrap();
    let o = capped(out.path(), &wd_sweep("2", &["--resume"]));
    assert!(o.status.success(), "{}", stderr(&o));
    assert_no_temporaries(out.path());
}

/// (h) Data paths that exist but are not regular files, and a --data-dir that is missing or a
/// file, are said as such.
#[test]
fn data_paths_that_are_not_files_are_named_as_such() {
    let Some(real) = real_data_dir() else {
        return skip_outside_ci("Fashion-MNIST");
    };
    let out = tempfile::tempdir().unwrap();
    let data = tempfile::tempdir().unwrap();
    for f in [
        "train-images-idx3-ubyte.gz",
        "t10k-images-idx3-ubyte.gz",
        "t10k-labels-idx1-ubyte.gz",
    ] {
        std::os::unix::fs::symlink(real.join(f), data.path().join(f)).unwrap();
    }
    let labels = data.path().join("train-labels-idx1-ubyte.gz");
    let dir_arg = data.path().to_str().unwrap();
    let try_it = |what: &str| {
        let o = capped(out.path(), &["dropout", "--offline", "--data-dir", dir_arg]);
        assert_fails_with(
            &o,
            &[&format!(
                "there is {what} named train-labels-idx1-ubyte.gz, not a regular file"
            )],
        );
    };
    std::fs::create_dir(&labels).unwrap();
    try_it("a directory");
    std::fs::remove_dir(&labels).unwrap();
    assert!(Command::new("mkfifo")
        .arg(&labels)
        .status()
        .unwrap()
        .success());
    try_it("a FIFO");
    std::fs::remove_file(&labels).unwrap();
    std::os::unix::fs::symlink("/dev/zero", &labels).unwrap();
    try_it("a device");
    std::fs::remove_file(&labels).unwrap();
    std::os::unix::fs::symlink(&labels, &labels).unwrap();
    try_it("a link that loops");
    let o = capped(
        out.path(),
        &["dropout", "--data-dir", "/nonexistent/fashion"],
    );
    assert_fails_with(&o, &["--data-dir /nonexistent/fashion: no such directory"]);
    let o = capped(
        out.path(),
        &[
            "dropout",
            "--data-dir",
            real.join("t10k-labels-idx1-ubyte.gz").to_str().unwrap(),
        ],
    );
    assert_fails_with(&o, &["is not a directory"]);
}

/// (g) A sweep stopped midway counts only the runs that finished: the one it stopped is
/// recorded as interrupted (for the summary) but not called finished.
#[test]
fn a_stopped_sweep_counts_only_finished_runs() {
    let out = tempfile::tempdir().unwrap();
    let child = Command::new(BIN)
        .args(["--device", "cpu", "--quiet", "--threads", "1", "--out"])
        .arg(out.path())
        .args(wd_sweep("20000", &[]))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let runs = out.path().join("sweep/weight-decay/runs");
    let records = || -> Vec<serde_json::Value> {
        std::fs::read_dir(&runs)
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| e.path().extension().is_some_and(|x| x == "json"))
            .map(|e| read_json(&e.path()))
            .collect()
    };
    // The first group (seed 0: λ 0 and 3) finished, the second one training.
    for _ in 0..3000 {
        if !records().is_empty() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    std::thread::sleep(std::time::Duration::from_millis(300));
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let o = child.wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(143), "{}", stderr(&o));
    let all = records();
    let ok = all.iter().filter(|r| r["status"] == "ok").count();
    assert!(all.len() > ok, "a run was stopped midway: {all:?}");
    assert_fails_with(&o, &[&format!("the {ok} finished runs are in")]);
}

/// Two runs into one `--out` started at the same moment, many times: either one is refused
/// (naming the other) or they ran one after the other; either way the directory holds one
/// run's files whole — identical to that run made alone — never a mixture.
#[test]
fn two_runs_into_one_directory_at_once_leave_one_whole_set() {
    let reference = |lr: &str| {
        let out = tempfile::tempdir().unwrap();
        let o = capped(out.path(), &["weight-decay", "--epochs", "30", "--lr", lr]);
        assert!(o.status.success(), "{}", stderr(&o));
        out
    };
    let refs = [("0.003", reference("0.003")), ("0.004", reference("0.004"))];
    for round in 0..5 {
        let out = tempfile::tempdir().unwrap();
        let spawn = |lr: &str| {
            Command::new(BIN)
                .args(["--device", "cpu", "--quiet", "--threads", "1", "--out"])
                .arg(out.path())
                .args(["weight-decay", "--epochs", "30", "--lr", lr])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        };
        let (a, b) = (spawn("0.003"), spawn("0.004"));
        let outputs = [a.wait_with_output().unwrap(), b.wait_with_output().unwrap()];
        for o in outputs.iter().filter(|o| !o.status.success()) {
            assert_fails_with(o, &["is in use by another command: PID"]);
        }
        assert!(outputs.iter().any(|o| o.status.success()), "round {round}");
        let dir = out.path().join("weight-decay");
        let lr = read_json(&dir.join("run.json"))["config"]["lr"]
            .as_f64()
            .unwrap();
        let (_, reference) = refs
            .iter()
            .find(|(l, _)| l.parse::<f64>().unwrap() == lr)
            .unwrap();
        let ref_dir = reference.path().join("weight-decay");
        for f in files_under(&ref_dir)
            .iter()
            .filter(|f| f.extension().is_some_and(|e| e == "csv"))
        {
            assert_eq!(
                without_timings(&dir.join(f)),
                without_timings(&ref_dir.join(f)),
                "round {round}: {} is not lr {lr}'s",
                f.display()
            );
        }
        assert_eq!(files_under(&dir), files_under(&ref_dir), "round {round}");
        assert_no_temporaries(out.path());
    }
}

/// A data file far larger than any Fashion-MNIST file (an 8 GB sparse file, under the 6 GB
/// address-space cap of [`capped`]) is refused by its size, naming it, before it is read:
/// reading it whole first would fail for memory, or take gigabytes where the cap is higher.
#[test]
fn a_huge_data_file_is_refused_by_its_size_before_it_is_read() {
    let out = tempfile::tempdir().unwrap();
    let data = tempfile::tempdir().unwrap();
    for f in [
        "train-labels-idx1-ubyte",
        "t10k-images-idx3-ubyte",
        "t10k-labels-idx1-ubyte",
    ] {
        std::fs::write(data.path().join(f), b"small").unwrap();
    }
    let huge = data.path().join("train-images-idx3-ubyte");
    std::fs::File::create(&huge)
        .unwrap()
        .set_len(8 << 30)
        .unwrap();
    let o = capped(
        out.path(),
        &[
            "dropout",
            "--offline",
            "--data-dir",
            data.path().to_str().unwrap(),
        ],
    );
    assert_clean(&o, "huge data file");
    assert_fails_with(&o, &["train-images-idx3-ubyte", "more than 128 MiB"]);
}

/// A rerun replaces `<out>/weight-decay` whole, so it owns only what it wrote there: a
/// user's file, or another command's output nested inside (`--out <out>/weight-decay`), is
/// refused by name before anything trains and left as it is, with the previous set.
#[test]
fn a_rerun_refuses_files_it_did_not_write_instead_of_removing_them() {
    let out = tempfile::tempdir().unwrap();
    let args = ["weight-decay", "--epochs", "5", "--no-tensorboard"];
    let o = capped(out.path(), &args);
    assert!(o.status.success(), "{}", stderr(&o));
    let dir = out.path().join("weight-decay");
    let before = files_under(&dir);
    let notes = dir.join("notes.txt");
    std::fs::write(&notes, "my notes").unwrap();
    let o = capped(out.path(), &args);
    assert_clean(&o, "a user's file");
    assert_fails_with(
        &o,
        &["notes.txt", "is not a file this program writes", "--out"],
    );
    assert_eq!(std::fs::read_to_string(&notes).unwrap(), "my notes");
    std::fs::remove_file(&notes).unwrap();
    assert_eq!(files_under(&dir), before, "the previous set as it was");
    // Another command's output nested inside it.
    let o = capped(&dir, &args);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = capped(out.path(), &args);
    assert_fails_with(&o, &["is not a file this program writes"]);
    assert!(dir.join("weight-decay/run.json").exists());
    assert!(dir.join("weight-decay/summary.csv").exists());
    // Its own files only: the rerun goes ahead.
    for nested in [
        ".weight-decay.lock",
        ".weight-decay.checkpoints",
        "weight-decay",
    ] {
        let p = dir.join(nested);
        if p.is_dir() {
            std::fs::remove_dir_all(&p).unwrap();
        } else if p.exists() {
            std::fs::remove_file(&p).unwrap();
        }
    }
    let o = capped(out.path(), &args);
    assert!(o.status.success(), "{}", stderr(&o));
}

/// `sweep --overwrite` clears the sweep's directory, so it owns only what sweeps write there:
/// a user's file at its top, in `runs/`, `checkpoints/` or `tensorboard/`, or a link among
/// its event files, is refused by name and left with the previous sweep. Once they are gone,
/// `--overwrite` removes the previous sweep's event files with its records: a setting the new
/// sweep does not train leaves no event file behind.
#[test]
fn sweep_overwrite_refuses_files_it_did_not_write_and_clears_its_event_files() {
    let out = tempfile::tempdir().unwrap();
    let sweep = |wd: &'static str| {
        let args = [
            "sweep",
            "weight-decay",
            "--impl",
            "scratch",
            "--epochs",
            "5",
            "--seeds",
            "0",
        ];
        [&args[..], &["--wd", wd, "--overwrite"]].concat()
    };
    let dir = out.path().join("sweep/weight-decay");
    let o = capped(out.path(), &sweep("0,3,10"));
    assert!(o.status.success(), "{}", stderr(&o));
    let board = dir.join("tensorboard/scratch-wd10-seed0");
    assert!(board.is_dir());
    let before = files_under(&dir);
    let target = out.path().join("mine.txt");
    std::fs::write(&target, "mine").unwrap();
    for planted in [
        "notes.txt",
        "runs/notes.txt",
        "checkpoints/notes.txt",
        "tensorboard/x.txt",
    ] {
        let p = dir.join(planted);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, "my notes").unwrap();
        let o = capped(out.path(), &sweep("0,3"));
        assert_clean(&o, planted);
        assert_fails_with(&o, &[planted, "is not a file this program writes", "--out"]);
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "my notes");
        std::fs::remove_file(&p).unwrap();
    }
    let link = board.join("events.out.tfevents.mine");
    std::os::unix::fs::symlink(&target, &link).unwrap();
    let o = capped(out.path(), &sweep("0,3"));
    assert_fails_with(
        &o,
        &[
            "events.out.tfevents.mine",
            "is not a file this program writes",
        ],
    );
    std::fs::remove_file(&link).unwrap();
    let _ = std::fs::remove_dir(dir.join("checkpoints"));
    assert_eq!(files_under(&dir), before, "the previous sweep as it was");
    let o = capped(out.path(), &sweep("0,3"));
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        !board.exists(),
        "the previous sweep's event files of λ=10 are gone"
    );
    assert!(dir.join("tensorboard/scratch-wd3-seed0").is_dir());
    assert_eq!(std::fs::read_to_string(&target).unwrap(), "mine");
}

/// The lock file removed while its command runs (a clean-up of hidden files): a second
/// command is still refused, naming the running one, instead of taking its staging
/// directory for a killed writer's and removing it.
#[test]
fn a_lock_file_removed_mid_run_still_keeps_a_second_writer_out() {
    let out = tempfile::tempdir().unwrap();
    let long = [
        "weight-decay",
        "--impl",
        "scratch",
        "--wd",
        "3",
        "--epochs",
        "1000000",
    ];
    let mut first = Command::new(BIN)
        .args(["--device", "cpu", "-q", "--out"])
        .arg(out.path())
        .args(long)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let lock = out.path().join(".weight-decay.lock");
    let stage = out
        .path()
        .join(format!(".weight-decay.{}.staging", first.id()));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !stage.exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "the first never started"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    std::fs::remove_file(&lock).unwrap();
    let o = capped(out.path(), &["weight-decay", "--epochs", "5"]);
    assert_clean(&o, "second writer");
    assert_fails_with(
        &o,
        &[&format!("PID {}", first.id()), "lock file", "was removed"],
    );
    assert!(
        stage.exists(),
        "the running command's staging directory is left alone"
    );
    assert!(first.try_wait().unwrap().is_none(), "the first still runs");
    first.kill().unwrap();
    first.wait().unwrap();
}
