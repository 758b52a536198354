//! A weight-decay command killed with SIGKILL in the middle of a run — the book's scratch
//! version, the concise one with Adam (whose moments and step counts the checkpoint must
//! carry), the fused engine's group of λ — then run again with `--resume`, ends with the files
//! of an uninterrupted command: the same curves, summary and charts (timing columns aside).
mod common;

use common::*;
use d2l_regularization::checkpoint;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn checkpoints(out: &Path) -> PathBuf {
    out.join(".weight-decay.checkpoints")
}

fn spawn(out: &Path, args: &[&str]) -> Child {
    Command::new(BIN)
        .args(["--device", "cpu", "-q", "--out"])
        .arg(out)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

/// Kills `child` with SIGKILL once the checkpoint `file` holds `epoch` or more finished epochs
/// (and fewer than all: the run is still training). Returns the epoch it saw.
fn kill_after(mut child: Child, out: &Path, file: &str, epoch: usize) -> usize {
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        if let Ok(meta) = checkpoint::describe(&checkpoints(out).join(file)) {
            if meta.epoch >= epoch {
                child.kill().unwrap();
                child.wait().unwrap();
                assert!(
                    meta.epoch < meta.epochs,
                    "{file} had finished: kill earlier"
                );
                return meta.epoch;
            }
        }
        if let Some(status) = child.try_wait().unwrap() {
            panic!("the command ended ({status}) before {file} reached epoch {epoch}");
        }
        assert!(
            Instant::now() < deadline,
            "{file} never reached epoch {epoch}"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Every CSV of `<out>/weight-decay` without its timing columns, every chart byte for byte.
fn results(out: &Path) -> Vec<(String, Vec<u8>)> {
    let dir = out.join("weight-decay");
    let mut files: Vec<(String, Vec<u8>)> = files_under(&dir)
        .into_iter()
        .filter_map(|p| {
            let name = p.to_string_lossy().into_owned();
            let p = dir.join(p);
            let bytes = match p.extension()?.to_str()? {
                "csv" => format!("{:?}", without_timings(&p)).into_bytes(),
                "svg" => std::fs::read(&p).unwrap(),
                _ => return None,
            };
            Some((name, bytes))
        })
        .collect();
    files.sort();
    files
}

/// Runs `args` whole in `whole`; in `killed`, kills it at each of `kills` (a run's checkpoint
/// and an epoch it must have passed), resuming after each, then resumes to the end: the same
/// files, and no checkpoint left.
fn killed_and_resumed_twice(args: &[&str], kills: [(&str, usize); 2]) {
    let tmp = tempfile::tempdir().unwrap();
    let (whole, killed) = (tmp.path().join("whole"), tmp.path().join("killed"));
    let o = run_on_cpu(&whole, &[&["-q"], args].concat());
    assert!(o.status.success(), "{}", stderr(&o));
    let resume: Vec<&str> = [args, &["--resume"]].concat();
    let mut said = Vec::new();
    for (i, (file, epoch)) in kills.into_iter().enumerate() {
        let command = if i == 0 { args } else { &resume[..] };
        let at = kill_after(spawn(&killed, command), &killed, file, epoch);
        said.push(format!(
            "continuing from its checkpoint after epoch {at} of"
        ));
    }
    let o = run_on_cpu(&killed, &resume);
    let err = stderr(&o);
    assert!(o.status.success(), "{err}");
    assert!(
        err.contains(&said[1]),
        "the last kill's run did not go on: {err}"
    );
    let (a, b) = (results(&whole), results(&killed));
    let names = |r: &[(String, Vec<u8>)]| r.iter().map(|(n, _)| n.clone()).collect::<Vec<_>>();
    assert_eq!(names(&a), names(&b));
    assert!(names(&a).iter().any(|n| n.ends_with(".svg")));
    for ((name, x), (_, y)) in a.iter().zip(&b) {
        assert!(x == y, "{name} differs from the uninterrupted command's");
    }
    assert!(
        !checkpoints(&killed).exists(),
        "a finished command removes its checkpoints"
    );
}

/// The autograd engine: killed inside the scratch run, then inside the concise Adam run (its
/// optimizer's moments must come back exactly, or every later step differs).
#[test]
fn a_weight_decay_command_killed_twice_resumes_to_the_uninterrupted_files() {
    let args = [
        "weight-decay",
        "--wd",
        "3",
        "--optimizer",
        "sgd,adam",
        "--epochs",
        "1500",
        "--n-val",
        "50",
        "--checkpoint-every",
        "5",
    ];
    killed_and_resumed_twice(
        &args,
        [
            ("scratch-wd3-seed0.safetensors", 300),
            ("concise-adam-wd3-seed0.safetensors", 300),
        ],
    );
}

/// The fused engine: each version's group of λ killed midway.
#[test]
fn a_fused_weight_decay_command_killed_twice_resumes_to_the_uninterrupted_files() {
    let args = [
        "weight-decay",
        "--engine",
        "fused",
        "--wd",
        "0,3",
        "--epochs",
        "30000",
        "--checkpoint-every",
        "500",
    ];
    killed_and_resumed_twice(
        &args,
        [
            ("scratch-wd0-seed0.safetensors", 5000),
            ("concise-wd0-seed0.safetensors", 5000),
        ],
    );
}

/// A checkpoint of another optimizer's run is refused by name before anything trains.
#[test]
fn a_weight_decay_checkpoint_of_other_flags_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path();
    let args = [
        "weight-decay",
        "--optimizer",
        "adam",
        "--impl",
        "concise",
        "--epochs",
        "3000",
    ];
    let child = spawn(out, &[&args[..], &["--checkpoint-every", "50"]].concat());
    kill_after(child, out, "concise-adam-wd0-seed0.safetensors", 100);
    let other = [
        "weight-decay",
        "--optimizer",
        "adamw",
        "--impl",
        "concise",
        "--epochs",
        "3000",
    ];
    let o = run_on_cpu(out, &[&other[..], &["--resume"]].concat());
    assert_fails_with(&o, &["concise-adam-wd0-seed0.safetensors", "--overwrite"]);
    let o = run_on_cpu(out, &[&other[..], &["--overwrite", "-q"]].concat());
    assert!(o.status.success(), "{}", stderr(&o));
}

/// A checkpoint that cannot be written (a file-size cap below its 17 kB, which the first
/// run's checkpoint meets as that run ends) stops the command with one line naming it and
/// leaves no temporary beside it; the run's CSV is not written (the cap would stop it too).
#[test]
fn a_checkpoint_that_cannot_be_written_is_one_clear_error() {
    let tmp = tempfile::tempdir().unwrap();
    let o = Command::new("prlimit")
        .arg("--fsize=1500")
        .arg(BIN)
        .args(["--device", "cpu", "--no-tensorboard", "--out"])
        .arg(tmp.path())
        // A checkpoint after the 100th (the last) epoch: a run of milliseconds writes none
        // by default.
        .args(["weight-decay", "--checkpoint-every", "100"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert_fails_with(
        &o,
        &[
            "cannot write '",
            ".weight-decay.checkpoints/scratch-wd0-seed0.safetensors'",
            "File too large",
        ],
    );
    assert_eq!(stderr(&o).matches("error:").count(), 1, "one error line");
    assert!(
        !stderr(&o).contains("--resume"),
        "no checkpoint was written to resume from"
    );
    let left: Vec<PathBuf> = files_under(&checkpoints(tmp.path()));
    assert!(
        left.iter().all(|f| !f.to_string_lossy().contains("tmp")),
        "temporaries left: {left:?}"
    );
    assert!(!tmp.path().join("weight-decay/scratch-wd0.csv").exists());
}

/// Checkpoints kept by a finished command (`--keep-checkpoints`) are named as such when the
/// next command meets them, not as a stopped command's; `--resume` over finished results
/// without checkpoints says only that there is nothing to resume.
#[test]
fn kept_checkpoints_and_finished_results_are_named_for_what_they_are() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path();
    let args = ["weight-decay", "--epochs", "5", "--no-tensorboard"];
    let o = run_on_cpu(out, &[&args[..], &["-q", "--keep-checkpoints"]].concat());
    assert!(o.status.success(), "{}", stderr(&o));
    let o = run_on_cpu(out, &args);
    assert_fails_with(
        &o,
        &[
            "a command that finished and kept them (--keep-checkpoints)",
            "epoch 5 of 5",
            "--resume",
            "--overwrite",
        ],
    );
    std::fs::remove_dir_all(checkpoints(out)).unwrap();
    let o = run_on_cpu(out, &[&args[..], &["--resume"]].concat());
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("nothing to resume"), "{}", stderr(&o));
    assert!(
        !stderr(&o).contains("trains from its first epoch"),
        "{}",
        stderr(&o)
    );
}

/// The default checkpoints (no `--checkpoint-every`) are at least a second of training apart
/// (`checkpoint::AT_LEAST`; their write takes milliseconds here, so the hundredfold of it is
/// less): a scratch run of 1 ms epochs writes its first after hundreds of epochs, and the next
/// ones a second later each (the files' modification times, read with their contents).
#[test]
fn default_checkpoints_are_a_second_of_training_apart() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path();
    let args = [
        "weight-decay",
        "--impl",
        "scratch",
        "--wd",
        "3",
        "--epochs",
        "1000000",
    ];
    let mut child = spawn(out, &args);
    let file = checkpoints(out).join("scratch-wd3-seed0.safetensors");
    let read = || -> Option<(usize, std::time::SystemTime)> {
        use std::io::Read as _;
        let mut f = std::fs::File::open(&file).ok()?;
        let modified = f.metadata().ok()?.modified().ok()?;
        let mut bytes = Vec::new();
        f.read_to_end(&mut bytes).ok()?;
        Some((checkpoint::describe_bytes(&bytes).ok()?.epoch, modified))
    };
    let mut seen: Vec<(usize, std::time::SystemTime)> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(300);
    while seen.len() < 3 {
        if let Some((epoch, modified)) = read() {
            if seen.last().is_none_or(|l| l.0 != epoch) {
                seen.push((epoch, modified));
            }
        }
        assert!(child.try_wait().unwrap().is_none(), "the command ended");
        assert!(
            Instant::now() < deadline,
            "three checkpoints never came: {seen:?}"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(
        seen[0].0 > 1,
        "the first after a second, not after epoch 1: {seen:?}"
    );
    for pair in seen.windows(2) {
        let apart = pair[1].1.duration_since(pair[0].1).unwrap_or_default();
        assert!(
            pair[1].0 > pair[0].0 && apart >= Duration::from_millis(900),
            "checkpoints {:?} and {:?}: {apart:?} apart",
            pair[0].0,
            pair[1].0
        );
    }
}
