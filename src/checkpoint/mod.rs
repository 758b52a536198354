//! Checkpoints: what a run needs to go on exactly where it stopped, one file per run.
//!
//! A checkpoint is a safetensors file (`<run>-seed<k>.safetensors`, loadable by PyTorch's
//! `safetensors.torch.load_file`) holding the model's variables under their names, the state of
//! every libtorch generator the run draws from (`generator.cpu`, `generator.cuda:0`: uint8
//! tensors, as `torch.get_rng_state()` returns them), and in its metadata (`d2l`, JSON): the
//! format, the program's identity, the run's fingerprint, the finished epochs and their rows,
//! and what else the run keeps (the fused engine's mask generator, activation rows). A run whose
//! optimizer has state (Adam's moments and step counts) keeps it as libtorch serialises it
//! (`optimizer.state`, uint8; see [`crate::nn::optimizer_state`]).
//!
//! Written through a temporary file, synced and renamed, so a kill at any instant leaves the
//! previous checkpoint or the new one. The metadata also holds (`d2l.sha256`) a SHA-256 of the
//! whole file, taken with that field's 64 hex digits set to `0`: one changed byte anywhere —
//! a weight, a generator state, the optimizer's state, a row, the header — is caught before
//! the file is used. Read back, every field is checked: a file that is truncated, corrupt, of
//! another configuration, of another build of the program, or written with other threads,
//! kernels or device than this command runs ([`Writer`]) is refused with its name, what
//! differs and the way on, never continued from.
use crate::atomic;
use crate::data::download::hex;
use crate::options::Impl;
use anyhow::{bail, Context as _, Result};
use serde::{Deserialize, Serialize};
use sha2::Digest as _;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use tch::{Device, Kind, Tensor};

pub mod generator;
mod resumable;

pub use resumable::{Resumable, Resumed};

/// The layout of the metadata; another number is refused.
pub const FORMAT: u32 = 2;
/// The metadata key the run's description is stored under.
const META_KEY: &str = "d2l";
/// The metadata key of the file's SHA-256 (see the module's documentation).
const CHECKSUM_KEY: &str = "d2l.sha256";
/// What the checksum's digits are while it is taken.
const CHECKSUM_PLACEHOLDER: &str =
    "0000000000000000000000000000000000000000000000000000000000000000";
/// The prefix of the generator states' tensor names.
const GENERATOR: &str = "generator.";
/// The name of the optimizer's state (libtorch's serialisation, as uint8).
pub const OPTIMIZER: &str = "optimizer.state";

/// Where a command keeps its runs' checkpoints, how often it writes them, and whether it
/// continues from them.
#[derive(Debug, Clone)]
pub struct Plan {
    pub dir: PathBuf,
    /// When a run writes a checkpoint.
    pub every: Every,
    /// Continue from the checkpoints found in `dir`.
    pub resume: bool,
    /// The configuration's fingerprint (the command's flags, device kind), shared by its runs.
    pub config: String,
    /// `--keep-checkpoints`: every run's last epoch is checkpointed (see [`Every::Affordable`]).
    pub keep: bool,
}

impl Plan {
    /// The checkpoint of one run: its file and its fingerprint.
    pub fn run(
        &self,
        stem: &str,
        seed: i64,
        version: Impl,
        setting: &impl Serialize,
    ) -> RunCheckpoint {
        RunCheckpoint {
            path: self.dir.join(format!("{stem}-seed{seed}.safetensors")),
            fingerprint: run_fingerprint(&self.config, version, setting, seed),
            every: self.every,
            resume: self.resume,
            keep: self.keep,
            written: std::cell::Cell::new((std::time::Instant::now(), Default::default())),
        }
    }

    /// The files in `dir`, sorted (none when it does not exist).
    pub fn files(&self) -> Vec<PathBuf> {
        let mut found: Vec<PathBuf> = std::fs::read_dir(&self.dir)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path())
            .collect();
        found.sort();
        found
    }
}

/// When a run writes a checkpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Every {
    /// After every N-th epoch and after the last (`--checkpoint-every N`).
    Epochs(usize),
    /// The default: after the first epoch that ends at least [`AT_LEAST`] after the run
    /// started or wrote its last checkpoint, and at least [`COST_SHARE`] times as long as that
    /// checkpoint took to write ([`affordable`]). Checkpoints then cost at most 1/COST_SHARE
    /// of the training they protect, whatever the epochs' length, the model's size or the
    /// disk's speed, and a kill costs each run at most about that long. The last epoch too
    /// only when due so (or with `--keep-checkpoints`): a run that wrote none (a book-sized
    /// weight-decay run takes milliseconds) is trained again by `--resume` from its seed, one
    /// that did goes on from its last, to the same numbers.
    Affordable,
}

/// The shortest training between two default checkpoints ([`Every::Affordable`]), and before
/// the first: the first's cost is not known yet.
pub const AT_LEAST: std::time::Duration = std::time::Duration::from_secs(1);
/// The default checkpoints' share of the training is at most 1 / this ([`Every::Affordable`]).
pub const COST_SHARE: u32 = 100;

/// Whether a default checkpoint ([`Every::Affordable`]) is due `since` the run started or its
/// last checkpoint was written, which took `cost` (zero before the first).
pub fn affordable(since: std::time::Duration, cost: std::time::Duration) -> bool {
    since >= AT_LEAST.max(cost * COST_SHARE)
}

/// The fingerprint of one run: its configuration, version, setting and seed.
pub fn run_fingerprint(config: &str, version: Impl, setting: &impl Serialize, seed: i64) -> String {
    use md5::{Digest, Md5};
    let setting = serde_json::to_string(setting).unwrap_or_default();
    let text = format!("{config}\n{}\n{setting}\nseed {seed}", version.name());
    hex(&Md5::digest(text.as_bytes()))
}

/// One run's checkpoint file and what it must match.
#[derive(Debug, Clone)]
pub struct RunCheckpoint {
    pub path: PathBuf,
    pub fingerprint: String,
    pub every: Every,
    pub resume: bool,
    pub keep: bool,
    /// When the run started or its last checkpoint was written, and what that took.
    written: std::cell::Cell<(std::time::Instant, std::time::Duration)>,
}

impl RunCheckpoint {
    /// Whether a checkpoint is written after `epoch` of `epochs` (see [`Every`]); the caller
    /// then writes it with [`RunCheckpoint::write`].
    pub fn due(&self, epoch: usize, epochs: usize) -> bool {
        let last = epoch == epochs;
        match self.every {
            Every::Epochs(n) => last || epoch.is_multiple_of(n),
            Every::Affordable => {
                let (when, cost) = self.written.get();
                (last && self.keep) || affordable(when.elapsed(), cost)
            }
        }
    }

    /// Writes the run's checkpoint (see [`save`]), noting when it ended and how long it took.
    pub fn write(&self, meta: &Meta, tensors: &[(String, Tensor)], device: Device) -> Result<()> {
        let started = std::time::Instant::now();
        save(&self.path, meta, tensors, device)?;
        let now = std::time::Instant::now();
        self.written.set((now, now - started));
        Ok(())
    }
}

/// What a checkpoint says besides its tensors.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Meta {
    pub format: u32,
    /// The program, device, threads and kernels that wrote it.
    pub writer: Writer,
    /// The run's fingerprint ([`run_fingerprint`]).
    pub fingerprint: String,
    /// The finished epochs.
    pub epoch: usize,
    /// The epochs the run trains in all.
    pub epochs: usize,
    /// The finished epochs' rows (the curve so far).
    pub rows: serde_json::Value,
    /// What else the run keeps (its own layout).
    pub extra: serde_json::Value,
}

impl Meta {
    /// The description of a checkpoint this build writes after `epoch` of `epochs` of a run
    /// on `device`.
    pub fn new(
        fingerprint: &str,
        (epoch, epochs): (usize, usize),
        rows: &impl Serialize,
        extra: &impl Serialize,
        device: Device,
    ) -> Result<Meta> {
        Ok(Meta {
            format: FORMAT,
            writer: Writer::now(device),
            fingerprint: fingerprint.to_string(),
            epoch,
            epochs,
            rows: serde_json::to_value(rows)?,
            extra: serde_json::to_value(extra)?,
        })
    }
}

/// A checkpoint read back: its description and its model's tensors by name (the generator
/// states and the optimizer's set aside).
pub struct Loaded {
    pub meta: Meta,
    pub tensors: HashMap<String, Tensor>,
    /// The optimizer's state ([`crate::nn::optimizer_state::State::save`]), where the run's optimizer has one.
    pub optimizer: Option<Vec<u8>>,
    generators: Vec<(Device, Vec<u8>)>,
}

/// The identity of this build of the program: its version and a SHA-256 of its executable
/// (hashed once per command, in milliseconds), so a checkpoint written by another build (whose
/// numbers may differ in the last digits) is never continued from.
pub fn program() -> &'static str {
    static PROGRAM: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    PROGRAM.get_or_init(|| {
        let digest = std::fs::read("/proc/self/exe")
            .or_else(|_| std::env::current_exe().and_then(std::fs::read))
            .map(|bytes| hex(&sha2::Sha256::digest(&bytes)))
            .unwrap_or_else(|_| "unknown".into());
        format!(
            "{} {} {digest}",
            env!("CARGO_PKG_NAME"),
            env!("CARGO_PKG_VERSION")
        )
    })
}

/// What wrote a checkpoint: the build of the program and what decides its numbers' last
/// digits besides the run's configuration — the device, libtorch's intra-op thread count and
/// the CPU kernels (MKL's branch, ATen's capability, `--reproducible`). A resume must be run
/// by the same; anything else continues a curve that matches no uninterrupted run.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Writer {
    /// See [`program`].
    pub program: String,
    /// `cpu` or `cuda:N`.
    pub device: String,
    pub threads: i32,
    pub mkl_branch: String,
    pub aten_capability: String,
    pub reproducible: bool,
}

impl Writer {
    /// This process, running on `device`.
    pub fn now(device: Device) -> Writer {
        let k = crate::cpu::KernelPaths::current();
        Writer {
            program: program().to_string(),
            device: crate::device::name(device),
            threads: k.threads,
            mkl_branch: k.mkl_branch,
            aten_capability: k.aten_capability,
            reproducible: k.reproducible,
        }
    }

    /// How `self` differs from `other` — "by another build …", "on cuda:0 (not cpu)", "with 1
    /// intra-op threads (not 2) …", "with other CPU kernels …" — and how to run as `self`
    /// did; none when they are the same.
    pub fn differs(&self, other: &Writer) -> Option<(String, String)> {
        if self.program != other.program {
            return Some((
                format!(
                    "by another build of this program ({}, not {}), whose numbers may differ",
                    self.program, other.program
                ),
                "with the build that wrote it".into(),
            ));
        }
        if self.device != other.device {
            return Some((
                format!("on {} (not {})", self.device, other.device),
                format!("with --device {}", self.device),
            ));
        }
        if self.threads != other.threads {
            return Some((
                format!(
                    "with {} intra-op threads (not {}; the thread count changes the last digits)",
                    self.threads, other.threads
                ),
                format!("with --threads {}", self.threads),
            ));
        }
        let kernels = |w: &Writer| {
            format!(
                "MKL branch {}, ATen {}{}",
                w.mkl_branch,
                w.aten_capability,
                if w.reproducible {
                    ", --reproducible"
                } else {
                    ""
                }
            )
        };
        if kernels(self) != kernels(other) {
            return Some((
                format!(
                    "with other CPU kernels ({}, not {}), whose numbers differ",
                    kernels(self),
                    kernels(other)
                ),
                "on a machine of the same CPU kernels, with the same --reproducible and MKL_CBWR"
                    .into(),
            ));
        }
        None
    }
}

/// A tensor's bytes as safetensors stores them.
struct Raw {
    dtype: safetensors::Dtype,
    shape: Vec<usize>,
    data: Vec<u8>,
}

impl safetensors::View for &Raw {
    fn dtype(&self) -> safetensors::Dtype {
        self.dtype
    }
    fn shape(&self) -> &[usize] {
        &self.shape
    }
    fn data(&self) -> std::borrow::Cow<'_, [u8]> {
        std::borrow::Cow::Borrowed(&self.data)
    }
    fn data_len(&self) -> usize {
        self.data.len()
    }
}

fn dtype(kind: Kind) -> Result<safetensors::Dtype> {
    use safetensors::Dtype;
    Ok(match kind {
        Kind::Float => Dtype::F32,
        Kind::Double => Dtype::F64,
        Kind::Int64 => Dtype::I64,
        Kind::Uint8 => Dtype::U8,
        other => bail!("a checkpoint cannot hold a {other:?} tensor"),
    })
}

fn kind(dtype: safetensors::Dtype) -> Option<Kind> {
    use safetensors::Dtype;
    match dtype {
        Dtype::F32 => Some(Kind::Float),
        Dtype::F64 => Some(Kind::Double),
        Dtype::I64 => Some(Kind::Int64),
        Dtype::U8 => Some(Kind::Uint8),
        _ => None,
    }
}

fn raw(tensor: &Tensor) -> Result<Raw> {
    let t = tensor.detach().to_device(Device::Cpu).contiguous();
    let shape: Vec<usize> = t.size().iter().map(|&d| d as usize).collect();
    let numel = t.numel();
    let kind = t.kind();
    let mut data = vec![0u8; numel * kind.elt_size_in_bytes()];
    t.f_copy_data_u8(&mut data, numel)?;
    Ok(Raw {
        dtype: dtype(kind)?,
        shape,
        data,
    })
}

/// Writes a checkpoint of `tensors` and the generators of `device` with `meta` to `path`
/// (through a synced temporary file and a rename); its size in bytes.
pub fn save(path: &Path, meta: &Meta, tensors: &[(String, Tensor)], device: Device) -> Result<u64> {
    let mut raws: Vec<(String, Raw)> = Vec::with_capacity(tensors.len() + 2);
    for (name, t) in tensors {
        raws.push((name.clone(), raw(t)?));
    }
    for d in generator::of(device) {
        let state = generator::state(d)?;
        raws.push((
            format!("{GENERATOR}{}", generator::name(d)),
            Raw {
                dtype: safetensors::Dtype::U8,
                shape: vec![state.len()],
                data: state,
            },
        ));
    }
    let metadata = HashMap::from([
        (META_KEY.to_string(), serde_json::to_string(meta)?),
        (CHECKSUM_KEY.to_string(), CHECKSUM_PLACEHOLDER.to_string()),
    ]);
    let views: Vec<(&str, &Raw)> = raws.iter().map(|(n, r)| (n.as_str(), r)).collect();
    let mut bytes = safetensors::serialize(views, &Some(metadata))
        .map_err(|e| anyhow::anyhow!("cannot encode the checkpoint: {e:?}"))?;
    seal(&mut bytes)?;
    atomic::write_atomic(path, &bytes)?;
    Ok(bytes.len() as u64)
}

/// Where a checkpoint's checksum is and what it should be: the SHA-256 of the bytes with its
/// digits set to `0`. The digits are found in the header's bytes as they are (the one
/// `"d2l.sha256":"<64 hex digits>"` there), not through its JSON, so a change that leaves the
/// header unreadable is still caught as a change.
fn checksum(bytes: &[u8]) -> Result<(usize, String)> {
    let header = bytes
        .get(..8)
        .map(|n| u64::from_le_bytes(n.try_into().unwrap_or_default()))
        .and_then(|n| usize::try_from(n).ok())
        .and_then(|n| bytes.get(8..8usize.checked_add(n)?))
        .context("not a safetensors file: no header")?;
    let needle = format!("\"{CHECKSUM_KEY}\":\"");
    let found: Vec<usize> = header
        .windows(needle.len())
        .enumerate()
        .filter(|(_, w)| *w == needle.as_bytes())
        .map(|(i, _)| i)
        .collect();
    let digits = CHECKSUM_PLACEHOLDER.len();
    let at = match found[..] {
        [i] => 8 + i + needle.len(),
        _ => bail!("no checksum"),
    };
    let stored = bytes.get(at..at + digits + 1).unwrap_or_default();
    if stored.len() != digits + 1
        || stored[digits] != b'"'
        || !stored[..digits].iter().all(u8::is_ascii_hexdigit)
    {
        bail!("no checksum");
    }
    let mut hasher = sha2::Sha256::new();
    hasher.update(&bytes[..at]);
    hasher.update(CHECKSUM_PLACEHOLDER.as_bytes());
    hasher.update(&bytes[at + digits..]);
    Ok((at, hex(&hasher.finalize())))
}

/// Sets a checkpoint's checksum to its bytes' (as [`save`] does; for a tool that edits a
/// checkpoint on purpose, e.g. a test of what the other checks refuse).
pub fn seal(bytes: &mut [u8]) -> Result<()> {
    let (at, digest) = checksum(bytes)?;
    bytes[at..at + digest.len()].copy_from_slice(digest.as_bytes());
    Ok(())
}

/// Checks the checksum of a checkpoint's bytes (see the module's documentation).
fn verify(bytes: &[u8]) -> Result<()> {
    let (at, digest) = checksum(bytes)?;
    if bytes[at..at + digest.len()] != *digest.as_bytes() {
        bail!("its bytes do not match its SHA-256 (changed since it was written)");
    }
    Ok(())
}

/// What to do about a checkpoint that cannot be used, for messages.
pub const WAY_ON: &str = "add --overwrite to start the command over (its checkpoints are deleted)";

/// Reads the checkpoint at `path` if there is one, refusing one that is unreadable, changed
/// since it was written, of another format, of another writer than this process on `device`
/// ([`Writer`]), or of another run than `fingerprint`.
pub fn load(path: &Path, fingerprint: &str, device: Device) -> Result<Option<Loaded>> {
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(e)
                .with_context(|| format!("cannot read the checkpoint '{}'", path.display()))
        }
    };
    let loaded = decode(&bytes).with_context(|| {
        format!(
            "the checkpoint '{}' is truncated or corrupt; {WAY_ON}",
            path.display()
        )
    })?;
    let meta = &loaded.meta;
    if let Some((what, how)) = meta.writer.differs(&Writer::now(device)) {
        bail!(
            "the checkpoint '{}' was written {what}; resume {how}, or {WAY_ON}",
            path.display()
        );
    }
    if meta.fingerprint != fingerprint {
        bail!(
            "the checkpoint '{}' is of another configuration than these flags ask for (other \
             hyper-parameters, seed or device); {WAY_ON}, or resume with the flags that wrote it",
            path.display()
        );
    }
    Ok(Some(loaded))
}

/// The description of the checkpoint at `path` alone (for messages and validation).
pub fn describe(path: &Path) -> Result<Meta> {
    describe_bytes(&std::fs::read(path)?)
}

/// The description in a checkpoint's bytes.
pub fn describe_bytes(bytes: &[u8]) -> Result<Meta> {
    verify(bytes)?;
    let (_, metadata) = safetensors::SafeTensors::read_metadata(bytes)
        .map_err(|e| anyhow::anyhow!("not a safetensors file: {e:?}"))?;
    meta_of(metadata.metadata())
}

fn meta_of(metadata: &Option<HashMap<String, String>>) -> Result<Meta> {
    let text = metadata
        .as_ref()
        .and_then(|m| m.get(META_KEY))
        .context("no d2l metadata")?;
    let meta: Meta = serde_json::from_str(text).context("unreadable d2l metadata")?;
    if meta.format != FORMAT {
        bail!("format {} (this build reads {FORMAT})", meta.format);
    }
    if meta.epoch > meta.epochs {
        bail!("epoch {} of {}", meta.epoch, meta.epochs);
    }
    Ok(meta)
}

fn decode(bytes: &[u8]) -> Result<Loaded> {
    verify(bytes)?;
    let (_, metadata) = safetensors::SafeTensors::read_metadata(bytes)
        .map_err(|e| anyhow::anyhow!("not a safetensors file: {e:?}"))?;
    let meta = meta_of(metadata.metadata())?;
    let file = safetensors::SafeTensors::deserialize(bytes)
        .map_err(|e| anyhow::anyhow!("not a safetensors file: {e:?}"))?;
    let mut tensors = HashMap::new();
    let mut generators = Vec::new();
    let mut optimizer = None;
    for (name, view) in file.tensors() {
        if name == OPTIMIZER {
            optimizer = Some(view.data().to_vec());
            continue;
        }
        let kind =
            kind(view.dtype()).with_context(|| format!("{name}: a {:?} tensor", view.dtype()))?;
        let shape: Vec<i64> = view.shape().iter().map(|&d| d as i64).collect();
        if let Some(device) = name.strip_prefix(GENERATOR) {
            let device = match device {
                "cpu" => Device::Cpu,
                other => Device::Cuda(
                    other
                        .strip_prefix("cuda:")
                        .and_then(|i| i.parse().ok())
                        .with_context(|| format!("a generator of unknown device '{other}'"))?,
                ),
            };
            generators.push((device, view.data().to_vec()));
        } else {
            let t = Tensor::f_from_data_size(view.data(), &shape, kind)?;
            tensors.insert(name, t);
        }
    }
    if generators.is_empty() {
        bail!("no generator state");
    }
    Ok(Loaded {
        meta,
        tensors,
        optimizer,
        generators,
    })
}

impl Loaded {
    /// Copies the checkpoint's variables into `vs` (every one by name, each of the same shape)
    /// and sets the generators (after the model was built: building it drew from them).
    pub fn restore(&self, path: &Path, vs: &tch::nn::VarStore, device: Device) -> Result<()> {
        self.restore_tensors(path, &variables(vs), device)
    }

    /// Copies the checkpoint's tensors into `variables` (every one by name, each of the same
    /// shape) and sets the generators.
    pub fn restore_tensors(
        &self,
        path: &Path,
        variables: &[(String, Tensor)],
        device: Device,
    ) -> Result<()> {
        let mismatch = |what: String| {
            anyhow::anyhow!(
                "the checkpoint '{}' does not fit this model ({what}); {WAY_ON}",
                path.display()
            )
        };
        if variables.len() != self.tensors.len() {
            return Err(mismatch(format!(
                "{} tensors for {} variables",
                self.tensors.len(),
                variables.len()
            )));
        }
        tch::no_grad(|| -> Result<()> {
            for (name, var) in variables {
                let saved = self
                    .tensors
                    .get(name)
                    .ok_or_else(|| mismatch(format!("no '{name}'")))?;
                if saved.size() != var.size() || saved.kind() != var.kind() {
                    return Err(mismatch(format!("'{name}' of another shape")));
                }
                var.shallow_clone().f_copy_(saved)?;
            }
            Ok(())
        })?;
        self.restore_generators(device)
    }

    /// Sets the state of the optimizer `state` handles to the checkpoint's (which must have one).
    pub fn restore_optimizer(
        &self,
        path: &Path,
        state: &crate::nn::optimizer_state::State,
    ) -> Result<()> {
        let bytes = self.optimizer.as_ref().ok_or_else(|| {
            anyhow::anyhow!(
                "the checkpoint '{}' holds no optimizer state; {WAY_ON}",
                path.display()
            )
        })?;
        state.load(bytes).with_context(|| {
            format!(
                "the checkpoint '{}' holds an optimizer state this run cannot take; {WAY_ON}",
                path.display()
            )
        })
    }

    /// Sets libtorch's generators to the checkpoint's states.
    pub fn restore_generators(&self, device: Device) -> Result<()> {
        let wanted = generator::of(device);
        for d in &wanted {
            let (_, state) = self
                .generators
                .iter()
                .find(|(g, _)| g == d)
                .with_context(|| format!("no state of the {} generator", generator::name(*d)))?;
            generator::set_state(*d, state)?;
        }
        Ok(())
    }
}

/// The variables of `vs` by name, for [`save`].
pub fn variables(vs: &tch::nn::VarStore) -> Vec<(String, Tensor)> {
    let mut named: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
    named.sort_by(|a, b| a.0.cmp(&b.0));
    named
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_default_checkpoint_waits_a_second_and_a_hundred_times_its_cost() {
        let ms = Duration::from_millis;
        // Before the first (cost unknown): a second of training.
        assert!(!affordable(ms(999), ms(0)));
        assert!(affordable(ms(1000), ms(0)));
        // Cheap checkpoints: still a second apart.
        assert!(!affordable(ms(999), ms(3)));
        assert!(affordable(ms(1000), ms(3)));
        // A slow disk (a checkpoint of 20 ms): 2 s apart, 1 % of the training.
        assert!(!affordable(ms(1999), ms(20)));
        assert!(affordable(ms(2000), ms(20)));
    }
}
