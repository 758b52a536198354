//! The fused engine's checkpoint of a weight-decay group of λ ([`save_fused`],
//! [`restore_fused`]): its batched weights and each λ's curve (see [`crate::checkpoint`]). The
//! autograd engine's runs go through the one resume driver, [`crate::checkpoint::Resumable`].
use super::fused::{Snapshot, Start};
use super::Epoch;
use crate::checkpoint::{self, Loaded, RunCheckpoint};
use crate::stop::Status;
use anyhow::{bail, Context as _, Result};
use serde::{Deserialize, Serialize};
use tch::{Device, Tensor};

/// The checkpoint of a run that resumes, checked to be of `epochs` epochs.
fn load(c: &RunCheckpoint, epochs: usize, device: Device) -> Result<Option<Loaded>> {
    if !c.resume {
        return Ok(None);
    }
    let Some(saved) = checkpoint::load(&c.path, &c.fingerprint, device)? else {
        return Ok(None);
    };
    if saved.meta.epochs != epochs {
        bail!(
            "the checkpoint '{}' is corrupt (epoch {} of {}); {}",
            c.path.display(),
            saved.meta.epoch,
            saved.meta.epochs,
            checkpoint::WAY_ON
        );
    }
    Ok(Some(saved))
}

fn corrupt(c: &RunCheckpoint) -> String {
    format!(
        "the checkpoint '{}' is corrupt; {}",
        c.path.display(),
        checkpoint::WAY_ON
    )
}

/// What a fused group's checkpoint keeps besides the weights: each λ's curve and status (a
/// column that diverged stops while the others train on).
#[derive(Serialize, Deserialize)]
struct Columns {
    curves: Vec<Vec<Epoch>>,
    status: Vec<Status>,
}

/// Writes a fused group's checkpoint: its weights `[inputs, k]`, biases `[1, k]`, and curves.
pub(super) fn save_fused(
    c: &RunCheckpoint,
    epochs: usize,
    s: Snapshot<'_, Epoch>,
    device: Device,
) -> Result<()> {
    let columns = Columns {
        curves: s.curves.to_vec(),
        status: s.status.to_vec(),
    };
    let meta = checkpoint::Meta::new(&c.fingerprint, (s.epoch, epochs), &(), &columns, device)?;
    let tensors = [("w".to_string(), s.w), ("b".to_string(), s.b)];
    c.write(&meta, &tensors, device)
}

/// With `--resume` and a checkpoint of this fused group of `k` λ: where it goes on from, and
/// the generators set to it (the initial parameters already drawn).
pub(super) fn restore_fused(
    c: &RunCheckpoint,
    epochs: usize,
    (inputs, k): (i64, i64),
    device: Device,
    label: &str,
) -> Result<Option<Start<Epoch>>> {
    let Some(saved) = load(c, epochs, device)? else {
        return Ok(None);
    };
    let columns: Columns =
        serde_json::from_value(saved.meta.extra.clone()).with_context(|| corrupt(c))?;
    let fits = columns.curves.len() == k as usize
        && columns.status.len() == k as usize
        && columns
            .curves
            .iter()
            .all(|rows| rows.len() <= saved.meta.epoch);
    if !fits {
        bail!("{} (its curves are not of {k} λ)", corrupt(c));
    }
    let w = Tensor::zeros([inputs, k], (tch::Kind::Float, device));
    let b = Tensor::zeros([1, k], (tch::Kind::Float, device));
    let variables = [("w".to_string(), w), ("b".to_string(), b)];
    saved.restore_tensors(&c.path, &variables, device)?;
    let [(_, w), (_, b)] = variables;
    let before = columns
        .curves
        .iter()
        .filter_map(|rows| rows.last())
        .map(|r| r.elapsed_s)
        .fold(0.0, f64::max);
    crate::errln!(
        "{label}: continuing from its checkpoint after epoch {} of {epochs}",
        saved.meta.epoch
    );
    Ok(Some(Start {
        epoch: saved.meta.epoch,
        w,
        b,
        curves: columns.curves,
        status: columns.status,
        before,
    }))
}
