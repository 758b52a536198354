//! A checkpoint is used only as it was written, by what wrote it: one changed byte anywhere in
//! it — a weight, a generator state, Adam's moments, a row of the curve, the header — is
//! refused by name before anything trains, and so is a resume with another thread count.
mod common;

use common::*;
use d2l_regularization::checkpoint;
use std::path::{Path, PathBuf};

/// The book's concise weight-decay run with Adam (an optimizer with state), 5 epochs, one
/// intra-op thread, its checkpoints kept; the checkpoint of its λ = 3 run.
const ARGS: &[&str] = &[
    "weight-decay",
    "--impl",
    "concise",
    "--optimizer",
    "adam",
    "--epochs",
    "5",
    "--threads",
    "1",
    "--no-tensorboard",
    "--keep-checkpoints",
];
const NAME: &str = "concise-adam-wd3-seed0.safetensors";

fn written(out: &Path) -> PathBuf {
    let o = run_on_cpu(out, &[ARGS, &["-q"]].concat());
    assert!(o.status.success(), "{}", stderr(&o));
    out.join(".weight-decay.checkpoints").join(NAME)
}

/// Where each tensor's bytes lie in the file, by name, and where the header's metadata
/// (the `d2l` description with its rows) lies.
fn regions(bytes: &[u8]) -> Vec<(String, std::ops::Range<usize>)> {
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    let mut found = vec![("header".to_string(), 8..8 + n)];
    for (name, t) in header.as_object().unwrap() {
        if let Some(offsets) = t.get("data_offsets") {
            let at = |i: usize| offsets[i].as_u64().unwrap() as usize + 8 + n;
            found.push((name.clone(), at(0)..at(1)));
        }
    }
    found
}

#[test]
fn every_changed_byte_of_a_checkpoint_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let good = std::fs::read(written(tmp.path())).unwrap();
    assert!(checkpoint::describe_bytes(&good).is_ok());
    let regions = regions(&good);
    let names: Vec<&str> = regions.iter().map(|(n, _)| n.as_str()).collect();
    for wanted in [
        "header",
        "weight",
        "bias",
        "generator.cpu",
        "optimizer.state",
    ] {
        assert!(names.contains(&wanted), "no {wanted} in {names:?}");
    }
    // Every byte of the file, each changed to a value of a small deterministic generator
    // (never its own): ~28 kB of single-byte changes, none accepted.
    let mut state = 0x2545_f491_4f6c_dd1du64;
    for at in 0..good.len() {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let mut changed = good.clone();
        changed[at] ^= (state % 255 + 1) as u8;
        let region = (regions.iter().skip(1))
            .find(|(_, r)| r.contains(&at))
            .map_or("header", |(n, _)| n.as_str());
        assert!(
            checkpoint::describe_bytes(&changed).is_err(),
            "byte {at} ({region}) changed from {} to {} was accepted",
            good[at],
            changed[at]
        );
    }
}

/// Through the command: a change in each part of the file is refused naming the file (and
/// the way on), and the file is left as it was.
#[test]
fn a_resume_from_a_changed_checkpoint_is_refused_by_name() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path();
    let file = written(out);
    let good = std::fs::read(&file).unwrap();
    let resume: Vec<&str> = [ARGS, &["--resume"]].concat();
    for (name, range) in regions(&good) {
        // The middle of the region: a weight, a row of the curve, a moment.
        let at = (range.start + range.end) / 2;
        let mut changed = good.clone();
        changed[at] ^= 0x10;
        std::fs::write(&file, &changed).unwrap();
        let o = run_on_cpu(out, &resume);
        assert_fails_with(&o, &[NAME, "SHA-256", "--overwrite"]);
        assert!(!stderr(&o).contains("panicked"), "{name}");
        assert_eq!(std::fs::read(&file).unwrap(), changed, "{name}");
    }
    std::fs::write(&file, &good).unwrap();
    let o = run_on_cpu(out, &resume);
    assert!(o.status.success(), "{}", stderr(&o));
}

/// The thread count changes the last digits (the README's "Reproducibility"): a checkpoint
/// written with one thread is not continued with two; the message says which to use.
#[test]
fn a_resume_with_another_thread_count_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path();
    written(out);
    let two: Vec<&str> = ARGS
        .iter()
        .map(|a| if *a == "1" { "2" } else { a })
        .chain(["--resume"])
        .collect();
    let o = run_on_cpu(out, &two);
    assert_fails_with(&o, &[".safetensors", "1 intra-op threads", "--threads 1"]);
    let o = run_on_cpu(out, &[ARGS, &["--resume"]].concat());
    assert!(o.status.success(), "{}", stderr(&o));
}

/// A checkpoint whose optimizer state libtorch cannot read (its bytes replaced, the checksum
/// set to match, as a bug in a writer would leave it) is refused by name in one line: none of
/// libtorch's C++ backtrace reaches the user.
#[test]
fn an_optimizer_state_libtorch_cannot_read_is_one_line_naming_the_file() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path();
    let file = written(out);
    let mut bytes = std::fs::read(&file).unwrap();
    let (_, state) = regions(&bytes)
        .into_iter()
        .find(|(name, _)| name == "optimizer.state")
        .unwrap();
    bytes[state].fill(b'A');
    checkpoint::seal(&mut bytes).unwrap();
    std::fs::write(&file, &bytes).unwrap();
    let o = run_on_cpu(out, &[ARGS, &["--resume"]].concat());
    assert_fails_with(&o, &[NAME, "optimizer state", "--overwrite"]);
    let err = stderr(&o);
    assert!(
        !err.contains("Exception raised from") && !err.contains("frame #"),
        "{err}"
    );
    let error: Vec<&str> = err.lines().filter(|l| l.starts_with("error")).collect();
    assert_eq!(error.len(), 1, "{err}");
    let after = err.split_once(error[0]).unwrap().1;
    assert!(
        after.trim().is_empty(),
        "nothing after the error line: {err}"
    );
}
