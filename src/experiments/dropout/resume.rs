//! A dropout run's checkpoint (see [`crate::checkpoint`]): what it keeps besides the variables
//! and the generators, writing it after an epoch, and taking a freshly built model back to
//! where a stopped run was.
use super::exercises::ActivationRow;
use super::Epoch;
use crate::checkpoint::{self, RunCheckpoint};
use anyhow::{Context as _, Result};
use serde::{Deserialize, Serialize};
use tch::nn::VarStore;
use tch::Device;

/// What a dropout checkpoint keeps besides the variables and the generators.
#[derive(Serialize, Deserialize)]
pub(super) struct Extra {
    /// The fused engine's mask generator.
    pub masks: Option<[u64; 4]>,
    /// The activation rows so far (`--track-activations`).
    pub activations: Vec<ActivationRow>,
}

/// Where a resumed run goes on from.
pub(super) struct Resumed {
    /// The finished epochs, and their rows.
    pub epoch: usize,
    pub rows: Vec<Epoch>,
    pub extra: Extra,
}

/// Writes a run's checkpoint after `epoch` of `epochs`.
pub(super) fn save(
    c: &RunCheckpoint,
    (epoch, epochs): (usize, usize),
    rows: &[Epoch],
    extra: &Extra,
    vs: &VarStore,
    device: Device,
) -> Result<()> {
    let meta = checkpoint::Meta::new(&c.fingerprint, (epoch, epochs), &rows, extra)?;
    checkpoint::save(&c.path, &meta, &checkpoint::variables(vs), device)?;
    Ok(())
}

/// With `--resume` and a checkpoint of this run: `vs` and libtorch's generators set to it (the
/// model already built, so its initial draws were made as always), and what else it kept.
pub(super) fn restore(
    c: &RunCheckpoint,
    epochs: usize,
    vs: &VarStore,
    device: Device,
) -> Result<Option<Resumed>> {
    if !c.resume {
        return Ok(None);
    }
    let Some(saved) = checkpoint::load(&c.path, &c.fingerprint)? else {
        return Ok(None);
    };
    let corrupt = || format!("the checkpoint '{}' is corrupt", c.path.display());
    let extra: Extra = serde_json::from_value(saved.meta.extra.clone()).with_context(corrupt)?;
    let rows: Vec<Epoch> = serde_json::from_value(saved.meta.rows.clone()).with_context(corrupt)?;
    if rows.len() != saved.meta.epoch || saved.meta.epochs != epochs {
        anyhow::bail!(
            "{} ({} rows for epoch {} of {}); {}",
            corrupt(),
            rows.len(),
            saved.meta.epoch,
            saved.meta.epochs,
            checkpoint::WAY_ON
        );
    }
    saved.restore(&c.path, vs, device)?;
    Ok(Some(Resumed {
        epoch: saved.meta.epoch,
        rows,
        extra,
    }))
}
