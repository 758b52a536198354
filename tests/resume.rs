//! A dropout command killed (SIGKILL: what an out-of-memory killer or a preempting scheduler
//! sends, which no handler sees) inside an epoch, between epochs or in the middle of writing a
//! checkpoint, then run again with `--resume`, ends with the files of an uninterrupted command:
//! the same curves, summary, activations, weights and charts (timing columns aside). A
//! checkpoint that cannot be used is refused with its name and the way on.
mod common;

use common::*;
use d2l_regularization::checkpoint;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Three epochs of both versions, with every extra a checkpoint must carry: the activation
/// rows (`--track-activations`), the weights (`--save-weights`) and the Monte-Carlo passes
/// drawn after training (`--mc-samples`); a checkpoint after every epoch, where the tests kill.
fn args<'a>(engine: &'a str, data: &'a str) -> Vec<&'a str> {
    let extras = [
        "--track-activations",
        "--save-weights",
        "--mc-samples",
        "2",
        "--checkpoint-every",
        "1",
    ];
    local_dropout(engine, "3", data, &extras)
}

fn run_ok(out: &Path, args: &[&str]) -> Output {
    let o = run_on_cpu(out, &[&["-q"], args].concat());
    assert!(o.status.success(), "{args:?}: {}", stderr(&o));
    o
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

fn checkpoints(out: &Path) -> PathBuf {
    out.join(".dropout.checkpoints")
}

/// The epoch of the checkpoint `file` (a run's, under `out`), once it is there.
fn epoch_of(out: &Path, file: &str) -> Option<usize> {
    checkpoint::describe(&checkpoints(out).join(file))
        .ok()
        .map(|m| m.epoch)
}

/// Kills `child` with SIGKILL as soon as the checkpoint `file` holds `epoch` finished epochs.
fn kill_at(mut child: Child, out: &Path, file: &str, epoch: usize) {
    let deadline = Instant::now() + Duration::from_secs(300);
    while epoch_of(out, file) != Some(epoch) {
        if let Some(status) = child.try_wait().unwrap() {
            panic!("the command ended ({status}) before {file} reached epoch {epoch}");
        }
        assert!(
            Instant::now() < deadline,
            "{file} never reached epoch {epoch}"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    child.kill().unwrap();
    child.wait().unwrap();
}

/// The results a command leaves in `<out>/dropout`, as what must be identical: every CSV
/// without its timing columns, every chart and weight file byte for byte (the workbook and
/// `run.json` hold the timings and the command line, and are left out).
fn results(out: &Path) -> Vec<(String, Vec<u8>)> {
    let dir = out.join("dropout");
    let mut files: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter_map(|p| {
            let name = p.file_name()?.to_string_lossy().into_owned();
            let bytes = match p.extension()?.to_str()? {
                "csv" => format!("{:?}", without_timings(&p)).into_bytes(),
                "svg" | "safetensors" => std::fs::read(&p).unwrap(),
                _ => return None,
            };
            Some((name, bytes))
        })
        .collect();
    files.sort();
    files
}

fn assert_same_results(uninterrupted: &Path, resumed: &Path) {
    let (a, b) = (results(uninterrupted), results(resumed));
    let names = |r: &[(String, Vec<u8>)]| r.iter().map(|(n, _)| n.clone()).collect::<Vec<_>>();
    assert_eq!(names(&a), names(&b));
    assert!(names(&a).iter().any(|n| n.ends_with(".safetensors")));
    for ((name, x), (_, y)) in a.iter().zip(&b) {
        assert!(x == y, "{name} differs from the uninterrupted command's");
    }
    assert!(
        !checkpoints(resumed).exists(),
        "a finished command removes its checkpoints"
    );
}

/// Both engines, and the fused one in bf16-mixed (whose steps update transposed copies of the
/// weights during an epoch), each killed twice at other points of both versions' runs,
/// resumed twice.
#[test]
fn a_command_killed_anywhere_resumes_to_the_uninterrupted_files() {
    let Some(data) = real_data_dir() else { return };
    let data = data.to_str().unwrap();
    for (engine, precision) in [
        ("autograd", "f32"),
        ("fused", "f32"),
        ("fused", "bf16-mixed"),
    ] {
        let tmp = tempfile::tempdir().unwrap();
        let (whole, killed) = (tmp.path().join("whole"), tmp.path().join("killed"));
        let args = [&args(engine, data)[..], &["--precision", precision]].concat();
        run_ok(&whole, &args);
        assert!(!checkpoints(&whole).exists());

        // Inside an epoch: the scratch run's second epoch has started (its first is saved).
        kill_at(
            spawn(&killed, &args),
            &killed,
            "scratch-p0.2-0.5-seed0.safetensors",
            1,
        );
        // Without --resume the command refuses, naming both ways on.
        let o = run_on_cpu(&killed, &args);
        assert_fails_with(&o, &["--resume", "--overwrite", "epoch 1 of 3"]);
        // Between epochs, in the second run: the scratch run finished (kept as it was), the
        // concise run's second checkpoint has just been written.
        let resume: Vec<&str> = [&args[..], &["--resume"]].concat();
        kill_at(
            spawn(&killed, &resume),
            &killed,
            "concise-p0.2-0.5-seed0.safetensors",
            2,
        );
        let o = run_ok(&killed, &resume);
        // The concise run went on from its checkpoint (the scratch run was finished: its last
        // checkpoint holds all three epochs).
        let err = stderr(&o);
        assert!(
            err.contains("concise: continuing from its checkpoint after epoch 2 of 3")
                && err.contains("scratch: continuing from its checkpoint after epoch 3 of 3"),
            "{err}"
        );
        assert_same_results(&whole, &killed);
    }
}

/// SIGKILL at the rename that would put a checkpoint in place (the temporary written and
/// synced, the old checkpoint still there): resuming removes the temporary and continues from
/// the previous checkpoint.
#[test]
fn a_kill_while_a_checkpoint_is_written_resumes_from_the_one_before() {
    let Some(data) = real_data_dir() else { return };
    let Some(strace) = which("strace") else {
        return skip_outside_ci("strace is missing (apt-get install strace)");
    };
    let data = data.to_str().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let (whole, killed) = (tmp.path().join("whole"), tmp.path().join("killed"));
    let args = args("fused", data);
    run_ok(&whole, &args);
    // The second rename of the process is the second checkpoint's (nothing else is renamed
    // before the results are staged).
    let status = Command::new(strace)
        .args([
            "-f",
            "-qq",
            "-o",
            "/dev/null",
            "-e",
            "trace=rename,renameat,renameat2",
        ])
        .args([
            "-e",
            "inject=rename,renameat,renameat2:signal=SIGKILL:when=2",
        ])
        .arg(BIN)
        .args(["--device", "cpu", "-q", "--out"])
        .arg(&killed)
        .args(&args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(!status.success());
    let left: Vec<String> = std::fs::read_dir(checkpoints(&killed))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        left.iter()
            .any(|n| n.starts_with('.') && n.ends_with(".tmp")),
        "the kill came while a temporary existed: {left:?}"
    );
    assert_eq!(
        epoch_of(&killed, "scratch-p0.2-0.5-seed0.safetensors"),
        Some(1)
    );
    run_ok(&killed, &[&args[..], &["--resume"]].concat());
    assert_same_results(&whole, &killed);
}

/// A command killed in its first run, with its checkpoints kept for the refusals below.
fn stopped_command(out: &Path, args: &[&str]) -> PathBuf {
    kill_at(
        spawn(out, args),
        out,
        "scratch-p0.2-0.5-seed0.safetensors",
        1,
    );
    checkpoints(out).join("scratch-p0.2-0.5-seed0.safetensors")
}

#[test]
fn a_checkpoint_that_cannot_be_used_is_refused_with_its_name() {
    let Some(data) = real_data_dir() else { return };
    let data = data.to_str().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path();
    let args = local_dropout("fused", "2", data, &[]);
    let resume: Vec<&str> = [&args[..], &["--resume"]].concat();
    let file = stopped_command(out, &args);
    let good = std::fs::read(&file).unwrap();
    let refused = |what: &str, needles: &[&str]| {
        let o = run_on_cpu(out, &resume);
        assert_fails_with(&o, needles);
        assert!(!stderr(&o).contains("panicked"), "{what}");
        assert!(
            file.exists(),
            "{what}: a refused checkpoint is left as it was"
        );
    };
    let name = "scratch-p0.2-0.5-seed0.safetensors";

    // Truncated (a disk that filled up under another program, a partial copy).
    std::fs::write(&file, &good[..good.len() / 2]).unwrap();
    refused("truncated", &[name, "truncated or corrupt", "--overwrite"]);
    // Not a checkpoint at all.
    std::fs::write(&file, b"not a safetensors file").unwrap();
    refused("garbage", &[name, "truncated or corrupt", "--overwrite"]);
    // Written by another build of the program (its identity edited in place).
    let program = checkpoint::describe_bytes(&good).unwrap().writer.program;
    let at = good
        .windows(program.len())
        .position(|w| w == program.as_bytes())
        .expect("the program's identity is in the header");
    let mut edited = good.clone();
    let last = at + program.len() - 1;
    edited[last] = if edited[last] == b'0' { b'1' } else { b'0' };
    checkpoint::seal(&mut edited).unwrap();
    std::fs::write(&file, &edited).unwrap();
    refused("another build", &[name, "another build", "--overwrite"]);
    // Of another configuration: the same run's name, another learning rate, or the same
    // settings in another precision (a resume must not switch it).
    std::fs::write(&file, &good).unwrap();
    let o = run_on_cpu(out, &[&resume[..], &["--lr", "0.4"]].concat());
    assert_fails_with(&o, &[name, "another configuration", "--overwrite"]);
    let o = run_on_cpu(out, &[&resume[..], &["--precision", "bf16-mixed"]].concat());
    assert_fails_with(&o, &[name, "another configuration", "--overwrite"]);
    // Of a run these flags do not train at all.
    let stray = checkpoints(out).join("scratch-p0.9-0.5-seed0.safetensors");
    std::fs::copy(&file, &stray).unwrap();
    refused(
        "stray",
        &[
            "scratch-p0.9-0.5-seed0.safetensors",
            "of no run these flags train",
        ],
    );
    std::fs::remove_file(&stray).unwrap();

    // --overwrite starts over; the good checkpoint is deleted with the others.
    let o = run_on_cpu(out, &[&args[..], &["-q", "--overwrite"]].concat());
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(!checkpoints(out).exists());
}

/// Resuming a command that finished changes nothing: its results are kept as they are (not
/// trained again, not rewritten).
#[test]
fn resuming_a_finished_command_changes_nothing() {
    let Some(data) = real_data_dir() else { return };
    let data = data.to_str().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path();
    let args = local_dropout("fused", "1", data, &[]);
    run_ok(out, &args);
    let before: Vec<(PathBuf, Vec<u8>, std::time::SystemTime)> = files_under(&out.join("dropout"))
        .into_iter()
        .map(|f| {
            let p = out.join("dropout").join(f);
            let modified = p.metadata().unwrap().modified().unwrap();
            (p.clone(), std::fs::read(&p).unwrap(), modified)
        })
        .collect();
    let o = run_on_cpu(out, &[&args[..], &["--resume"]].concat());
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("nothing to resume"), "{}", stderr(&o));
    for (p, bytes, modified) in before {
        assert_eq!(std::fs::read(&p).unwrap(), bytes, "{}", p.display());
        assert_eq!(
            p.metadata().unwrap().modified().unwrap(),
            modified,
            "{}",
            p.display()
        );
    }
    // Another configuration is not "finished here": it trains.
    let o = run_on_cpu(
        out,
        &[&args[..], &["-q", "--resume", "--lr", "0.4"]].concat(),
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(!stderr(&o).contains("nothing to resume"));
}

/// A checkpoint is a safetensors file PyTorch reads: the model's parameters under their names
/// and the generator's state in the very format `torch.set_rng_state` takes.
#[test]
fn pytorch_reads_a_checkpoint() {
    let Some(data) = real_data_dir() else { return };
    let Some(python) = python() else { return };
    let data = data.to_str().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path();
    let args = local_dropout(
        "fused",
        "1",
        data,
        &["--impl", "concise", "--keep-checkpoints"],
    );
    run_ok(out, &args);
    let file = checkpoints(out).join("concise-p0.2-0.5-seed0.safetensors");
    let script = r#"
import json, struct, sys, torch
path = sys.argv[1]
with open(path, "rb") as f:
    n = struct.unpack("<Q", f.read(8))[0]
    header = json.loads(f.read(n))
    body = f.read()
meta = json.loads(header.pop("__metadata__")["d2l"])
kinds = {"F32": torch.float32, "U8": torch.uint8}
t = {}
for name, info in header.items():
    a, b = info["data_offsets"]
    t[name] = torch.frombuffer(bytearray(body[a:b]), dtype=kinds[info["dtype"]]).reshape(info["shape"])
assert sorted(t) == ["1.bias", "1.weight", "4.bias", "4.weight", "7.bias", "7.weight", "generator.cpu"], sorted(t)
assert t["1.weight"].shape == (256, 784)
torch.set_rng_state(t["generator.cpu"])
print(meta["epoch"], meta["epochs"], len(meta["rows"]))
"#;
    let o = Command::new(python)
        .args(["-c", script])
        .arg(&file)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stdout(&o).trim(), "1 1 1");
}

/// A dropout sweep killed in the middle of a run: `--resume` keeps the finished run and
/// continues the other from its checkpoint, to the summary of an undisturbed sweep; a shard
/// (always resuming: it is run again to finish) does the same.
#[test]
fn a_killed_sweep_or_shard_continues_its_run_from_the_checkpoint() {
    let Some(data) = real_data_dir() else { return };
    let data = data.to_str().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let sweep = fused_dropout_sweep("0.2,0.5", data);
    let whole = tmp.path().join("whole");
    run_ok(&whole, &sweep);
    let ckpt = |out: &Path| out.join("sweep/dropout/checkpoints");
    assert_eq!(
        std::fs::read_dir(ckpt(&whole))
            .map(|d| d.count())
            .unwrap_or(0),
        0
    );
    for (name, extra) in [
        ("resumed", &["--resume"][..]),
        ("shard", &["--shard", "0/1"][..]),
    ] {
        let out = tmp.path().join(name);
        let mut child = spawn(&out, &sweep);
        // The first run finished (its checkpoint removed once its record was written), the
        // second in its second epoch.
        let second = ckpt(&out).join("concise-p0.5-0.5-seed0.safetensors");
        let deadline = Instant::now() + Duration::from_secs(300);
        while checkpoint::describe(&second).map(|m| m.epoch).ok() != Some(1) {
            assert!(
                child.try_wait().unwrap().is_none(),
                "{name}: the sweep ended early"
            );
            assert!(Instant::now() < deadline, "{name}: no checkpoint");
            std::thread::sleep(Duration::from_millis(5));
        }
        child.kill().unwrap();
        child.wait().unwrap();
        assert!(!ckpt(&out)
            .join("concise-p0.2-0.5-seed0.safetensors")
            .exists());
        let o = run_ok(&out, &[&sweep[..], extra].concat());
        let err = stderr(&o);
        assert!(
            err.contains("continuing from its checkpoint after epoch 1 of 3"),
            "{name}: {err}"
        );
        if name == "shard" {
            run_ok(
                &out,
                &[
                    "sweep",
                    "merge",
                    out.join("sweep/dropout").to_str().unwrap(),
                ],
            );
        }
        assert_same_sweep(&whole.join("sweep/dropout"), &out.join("sweep/dropout"));
        assert_eq!(
            std::fs::read_dir(ckpt(&out))
                .map(|d| d.count())
                .unwrap_or(0),
            0
        );
    }
}
