//! Sweeps that survive interruption and divide over machines: `--resume`, `--shard K/N`,
//! `sweep merge`, and the ceilings on flags that size a resource.
mod common;
use common::*;
use std::process::Child;
use std::time::{Duration, Instant};

/// The sweep of these tests, each run about a second, then `extra`.
fn sweep<'a>(extra: &[&'a str]) -> Vec<&'a str> {
    wd_sweep("3000", extra)
}

fn wait(child: Child) -> std::process::Output {
    child.wait_with_output().unwrap()
}

#[test]
fn an_interrupted_sweep_resumed_writes_what_an_uninterrupted_one_writes() {
    let plain = tempfile::tempdir().unwrap();
    succeed_on_one_core(plain.path(), &sweep(&[]));

    let out = tempfile::tempdir().unwrap();
    let dir = out.path().join("sweep/weight-decay");
    let child = spawn_on_one_core(out.path(), &sweep(&[]));
    // Interrupt once seed 0's group has finished, in the middle of seed 1's.
    let first_group_done = dir.join("runs/concise-wd3-seed0.json");
    let deadline = Instant::now() + Duration::from_secs(120);
    while !first_group_done.exists() {
        assert!(Instant::now() < deadline, "seed 0's runs never finished");
        std::thread::sleep(Duration::from_millis(10));
    }
    std::thread::sleep(Duration::from_millis(300));
    // SAFETY: a signal to our own child.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGINT) }, 0);
    let o = wait(child);
    assert_eq!(o.status.code(), Some(130), "{}", stderr(&o));
    let runs = csv_rows(&dir.join("runs.csv"));
    assert!(
        runs.iter().any(|r| r["status"] == "interrupted") && runs.len() < 6,
        "{runs:?}"
    );

    // Without --resume the directory is refused, nothing touched.
    let before = std::fs::read(dir.join("runs.csv")).unwrap();
    let o = run_on_cpu(out.path(), &sweep(&[]));
    assert_fails_with(&o, &["already holds a sweep", "--resume", "--overwrite"]);
    assert_eq!(std::fs::read(dir.join("runs.csv")).unwrap(), before);

    // A resumed sweep of another configuration is refused.
    let o = run_on_cpu(out.path(), &wd_sweep("2999", &["--resume"]));
    assert_fails_with(&o, &["holds runs of another configuration", "--overwrite"]);

    let o = succeed_on_one_core(out.path(), &sweep(&["--resume"]));
    assert!(
        stderr(&o).contains("kept 2 finished runs, trained 4"),
        "seed 0's group kept, seed 1's (interrupted) and seed 2's trained: {}",
        stderr(&o)
    );
    assert_same_sweep(&plain.path().join("sweep/weight-decay"), &dir);

    // --overwrite starts over.
    let o = succeed_on_one_core(out.path(), &sweep(&["--overwrite"]));
    assert!(!stderr(&o).contains("kept"), "{}", stderr(&o));
    assert_same_sweep(&plain.path().join("sweep/weight-decay"), &dir);
}

#[test]
fn a_resumed_sweep_trains_a_run_whose_files_are_incomplete_again() {
    let out = tempfile::tempdir().unwrap();
    succeed_on_one_core(out.path(), &wd_sweep("20", &[]));
    let dir = out.path().join("sweep/weight-decay");
    let plain = tempfile::tempdir().unwrap();
    succeed_on_one_core(plain.path(), &wd_sweep("20", &[]));
    // A curve cut short (a copy interrupted, a disk filled up) and a record lost.
    let curve = dir.join("runs/concise-wd3-seed1.csv");
    let text = std::fs::read_to_string(&curve).unwrap();
    let cut: Vec<&str> = text.lines().take(5).collect();
    std::fs::write(&curve, cut.join("\n") + "\n").unwrap();
    std::fs::remove_file(dir.join("runs/concise-wd0-seed2.json")).unwrap();
    let o = succeed_on_one_core(out.path(), &wd_sweep("20", &["--resume"]));
    assert!(
        stderr(&o).contains("kept 2 finished runs, trained 4"),
        "{}",
        stderr(&o)
    );
    assert_same_sweep(&plain.path().join("sweep/weight-decay"), &dir);
}

#[test]
fn three_shards_at_once_then_merge_equal_the_unsharded_sweep() {
    let plain = tempfile::tempdir().unwrap();
    succeed_on_one_core(plain.path(), &sweep(&[]));
    let out = tempfile::tempdir().unwrap();
    let dir = out.path().join("sweep/weight-decay");
    // All three in one directory at the same time.
    let shards: Vec<Child> = (0..3)
        .map(|k| {
            let shard = format!("{k}/3");
            spawn_on_one_core(out.path(), &sweep(&["--shard", &shard]))
        })
        .collect();
    for (k, child) in shards.into_iter().enumerate() {
        let o = wait(child);
        assert!(o.status.success(), "shard {k}: {}", stderr(&o));
        assert!(
            stdout(&o).contains(&format!("shard {k}/3 trained 2 runs")),
            "one group (seed) each: {}",
            stdout(&o)
        );
    }
    assert!(
        !dir.join("summary.csv").exists(),
        "shards leave the summary to merge"
    );
    // Merge refuses while a run is missing, naming it.
    let record = dir.join("runs/concise-wd3-seed1.json");
    let saved = std::fs::read(&record).unwrap();
    std::fs::remove_file(&record).unwrap();
    let o = run(&["sweep", "merge", dir.to_str().unwrap()]);
    assert_fails_with(&o, &["1 of 6 runs are missing", "concise-wd3-seed1"]);
    assert!(!dir.join("summary.csv").exists());
    std::fs::write(&record, &saved).unwrap();

    let o = run(&["-q", "sweep", "merge", dir.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_same_sweep(&plain.path().join("sweep/weight-decay"), &dir);
}

#[test]
fn merge_refuses_runs_of_different_sweeps_and_directories_without_runs() {
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    succeed_on_one_core(a.path(), &wd_sweep("20", &[]));
    succeed_on_one_core(b.path(), &wd_sweep("21", &[]));
    let dir = a.path().join("sweep/weight-decay");
    // A run of the 21-epoch sweep copied in place of one of the 20-epoch sweep's.
    for ext in ["csv", "json"] {
        let name = format!("runs/concise-wd0-seed2.{ext}");
        std::fs::copy(
            b.path().join("sweep/weight-decay").join(&name),
            dir.join(&name),
        )
        .unwrap();
    }
    let o = run(&["sweep", "merge", dir.to_str().unwrap()]);
    assert_fails_with(&o, &["mixes runs of different sweeps", "concise-wd0-seed2"]);
    // A shard of another configuration into that directory is refused too.
    let o = run_on_cpu(a.path(), &wd_sweep("22", &["--shard", "0/2"]));
    assert_fails_with(&o, &["holds runs of another configuration"]);

    let empty = tempfile::tempdir().unwrap();
    let o = run(&["sweep", "merge", empty.path().to_str().unwrap()]);
    assert_fails_with(
        &o,
        &[
            "holds no finished run of a sweep",
            "<out>/sweep/<experiment>",
        ],
    );
    let o = run(&["sweep", "merge", "/nonexistent/sweep"]);
    assert_fails_with(&o, &["'/nonexistent/sweep' is not a directory"]);
}

/// Flags that size a resource (threads, shards, seeds, settings, Monte-Carlo passes) have a
/// ceiling, named in the message; nothing is started or written.
#[test]
fn flags_that_size_a_resource_are_capped() {
    let cpus = std::thread::available_parallelism().unwrap().get();
    let out = tempfile::tempdir().unwrap();
    // Just above the ceiling: were it not refused, a handful of threads, not the 100000 that
    // exhausted a machine's process table (that value is checked in the parser's unit test).
    let over = format!("{}", 4 * cpus + 1);
    let o = run_on_cpu(out.path(), &["--threads", &over, "weight-decay"]);
    assert_fails_with(
        &o,
        &["--threads", &format!("at most {}", 4 * cpus), "logical CPU"],
    );
    let o = run_on_cpu(
        out.path(),
        &[
            "--threads",
            &format!("{}", 4 * cpus),
            "weight-decay",
            "--epochs",
            "1",
        ],
    );
    assert!(
        o.status.success(),
        "the ceiling itself is allowed: {}",
        stderr(&o)
    );

    let o = run_on_cpu(out.path(), &["dropout", "--mc-samples", "10001"]);
    assert_fails_with(&o, &["--mc-samples", "at most 10000"]);
    for (shard, needle) in [
        ("3/3", "shard 3 of 3 does not exist"),
        ("0/0", "number of shards must be 1 to 10000"),
        ("0/10001", "number of shards must be 1 to 10000"),
        ("1", "is not K/N"),
    ] {
        let o = run_on_cpu(out.path(), &["sweep", "weight-decay", "--shard", shard]);
        assert_fails_with(&o, &["--shard", needle]);
    }
    let seeds: Vec<String> = (0..10_001).map(|s| s.to_string()).collect();
    let o = run_on_cpu(
        out.path(),
        &["sweep", "weight-decay", "--seeds", &seeds.join(",")],
    );
    assert_fails_with(&o, &["--seeds lists 10001 seeds", "10000"]);
    let lambdas: Vec<String> = (0..10_001).map(|s| format!("{s}")).collect();
    let o = run_on_cpu(
        out.path(),
        &[
            "weight-decay",
            "--impl",
            "concise",
            "--wd",
            &lambdas.join(","),
        ],
    );
    assert_fails_with(&o, &["10001 settings", "--wd", "10000"]);
    assert!(
        files_under(out.path())
            .iter()
            .all(|f| !f.to_string_lossy().contains("sweep")),
        "nothing written by the refused sweeps"
    );
}

/// A sweep's runs are all trained alike: a shard with another thread count (the last digits
/// move) is refused naming the count to use, and `merge` refuses records of two writers.
#[test]
fn shards_of_another_thread_count_are_refused_and_not_merged() {
    let out = tempfile::tempdir().unwrap();
    let shard = |k: &'static str, threads: &'static str| {
        let mut args = vec!["--threads", threads, "-q"];
        args.extend(wd_sweep("20", &["--shard", k]));
        run_on_cpu(out.path(), &args)
    };
    let o = shard("0/2", "1");
    assert!(o.status.success(), "{}", stderr(&o));
    let o = shard("1/2", "2");
    assert_fails_with(
        &o,
        &["holds runs written with 1 intra-op threads", "--threads 1"],
    );
    let o = shard("1/2", "1");
    assert!(o.status.success(), "{}", stderr(&o));
    // One record as another thread count would have written it.
    let dir = out.path().join("sweep/weight-decay");
    let record = dir.join("runs/concise-wd3-seed1.json");
    let text = std::fs::read_to_string(&record).unwrap();
    let edited = text.replace("\"threads\": 1,", "\"threads\": 2,");
    assert_ne!(text, edited, "the record names its threads");
    std::fs::write(&record, edited).unwrap();
    let o = run(&["sweep", "merge", dir.to_str().unwrap()]);
    assert_fails_with(
        &o,
        &[
            "mixes runs of different sweeps",
            "concise-wd3-seed1",
            "2 intra-op threads",
        ],
    );
    assert!(!dir.join("summary.csv").exists());
    std::fs::write(&record, text).unwrap();
    let o = run(&["-q", "sweep", "merge", dir.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
}

/// Shards split the groups by their count: while shard 0/2 runs, a shard of four (which
/// would train some of its groups at the same time) is refused, naming the running shard.
#[test]
fn a_shard_of_another_count_is_refused_while_one_runs() {
    let out = tempfile::tempdir().unwrap();
    // The most epochs --epochs takes: minutes of training.
    let long = wd_sweep("1000000", &["--shard", "0/2"]);
    let mut first = spawn_on_one_core(out.path(), &long);
    let held = out.path().join("sweep/weight-decay/.lock-shard-0-of-2");
    let deadline = Instant::now() + Duration::from_secs(60);
    while std::fs::read_to_string(&held).map_or(true, |t| t.is_empty()) {
        assert!(Instant::now() < deadline, "shard 0/2 never took its lock");
        if let Some(status) = first.try_wait().unwrap() {
            panic!("shard 0/2 ended ({status}): {}", stderr(&wait(first)));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    for other in ["0/4", "3/4", "0/1"] {
        // Refused at once; one that is not would train for minutes: stopped after 30 s.
        let mut child = spawn_on_one_core(out.path(), &wd_sweep("1000000", &["--shard", other]));
        let deadline = Instant::now() + Duration::from_secs(30);
        while child.try_wait().unwrap().is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let o = wait(child);
        assert_fails_with(&o, &["in use by shards of 2", "--shard 0/2", "--shard K/2"]);
    }
    first.kill().unwrap();
    first.wait().unwrap();
}
