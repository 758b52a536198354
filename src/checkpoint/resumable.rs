//! The one resume driver every section's runs go through, outside the book's code: the harness
//! builds the model and its optimizer with the book's own functions (drawing from the generator
//! as always), hands them here, and with `--resume` gets them back set to the run's checkpoint
//! (variables, optimizer state, libtorch's generators) and the epochs already trained; the
//! book's loop then trains the epochs left. After each epoch the harness's animator calls
//! [`Resumable::after_epoch`], which writes a checkpoint when one is due.
use super::{Meta, RunCheckpoint, OPTIMIZER, WAY_ON};
use crate::nn::optimizer_state::State;
use anyhow::{bail, Context as _, Result};
use serde::{de::DeserializeOwned, Serialize};
use tch::{Device, Tensor};

/// A run's model as its checkpoint keeps it, and where that checkpoint is (none: the run
/// keeps no checkpoint).
pub struct Resumable<'a> {
    checkpoint: Option<&'a RunCheckpoint>,
    epochs: usize,
    device: Device,
    variables: Vec<(String, Tensor)>,
    optimizer: Option<State>,
}

/// Where a resumed run goes on from: the epochs its checkpoint had finished, their rows, and
/// what else the section keeps (`X`).
pub struct Resumed<R, X> {
    pub epoch: usize,
    pub rows: Vec<R>,
    pub extra: X,
}

impl<'a> Resumable<'a> {
    /// A run of `epochs` epochs whose model is `variables` (by name) and, where it has state,
    /// the optimizer `optimizer` handles.
    pub fn new(
        checkpoint: Option<&'a RunCheckpoint>,
        epochs: usize,
        device: Device,
        variables: Vec<(String, Tensor)>,
        optimizer: Option<State>,
    ) -> Resumable<'a> {
        Resumable {
            checkpoint,
            epochs,
            device,
            variables,
            optimizer,
        }
    }

    /// With `--resume` and a checkpoint of this run: the optimizer, the variables and the
    /// generators set to it (in that order), and where the run goes on from. A checkpoint
    /// whose rows, epochs or extras do not fit is refused by name.
    pub fn restore<R: DeserializeOwned, X: DeserializeOwned>(
        &self,
    ) -> Result<Option<Resumed<R, X>>> {
        let Some(c) = self.checkpoint.filter(|c| c.resume) else {
            return Ok(None);
        };
        let Some(saved) = super::load(&c.path, &c.fingerprint, self.device)? else {
            return Ok(None);
        };
        let corrupt = || format!("the checkpoint '{}' is corrupt; {WAY_ON}", c.path.display());
        let rows: Vec<R> = serde_json::from_value(saved.meta.rows.clone()).with_context(corrupt)?;
        let extra: X = serde_json::from_value(saved.meta.extra.clone()).with_context(corrupt)?;
        if rows.len() != saved.meta.epoch || saved.meta.epochs != self.epochs {
            bail!(
                "{} ({} rows for epoch {} of {})",
                corrupt(),
                rows.len(),
                saved.meta.epoch,
                saved.meta.epochs
            );
        }
        if let Some(state) = &self.optimizer {
            saved.restore_optimizer(&c.path, state)?;
        }
        saved.restore_tensors(&c.path, &self.variables, self.device)?;
        Ok(Some(Resumed {
            epoch: saved.meta.epoch,
            rows,
            extra,
        }))
    }

    /// After `epoch` (counted from the run's first), with the rows so far: writes the run's
    /// checkpoint when one is due.
    pub fn after_epoch<R: Serialize, X: Serialize>(
        &self,
        epoch: usize,
        rows: &[R],
        extra: &X,
    ) -> Result<()> {
        let Some(c) = self.checkpoint.filter(|c| c.due(epoch, self.epochs)) else {
            return Ok(());
        };
        let mut tensors: Vec<(String, Tensor)> = (self.variables.iter())
            .map(|(name, t)| (name.clone(), t.shallow_clone()))
            .collect();
        if let Some(state) = &self.optimizer {
            tensors.push((OPTIMIZER.into(), Tensor::from_slice(&state.save()?)));
        }
        let meta = Meta::new(
            &c.fingerprint,
            (epoch, self.epochs),
            &rows,
            extra,
            self.device,
        )?;
        c.write(&meta, &tensors, self.device)
    }
}
