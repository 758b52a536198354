//! A weight-decay run's checkpoint (see [`crate::checkpoint`]). The autograd engine's runs are
//! the book's functions, which hand their parameters and optimizer to the animator before the
//! first epoch ([`Animate::start`]): [`Recording`] is that animator, recording each epoch's row,
//! writing a checkpoint when one is due, and with `--resume` setting the freshly built model
//! (its initial draws made as always), its optimizer and the generators to the checkpoint's.
//! The fused engine's group of λ keeps one checkpoint ([`save_fused`], [`restore_fused`]).
use super::fused::{Snapshot, Start};
use super::Epoch;
use crate::checkpoint::{self, Loaded, RunCheckpoint};
use crate::d2l::{Animate, Model};
use crate::experiment::Recorder;
use crate::nn::optimizer_state;
use crate::stop::{self, Status};
use crate::train;
use anyhow::{bail, Context as _, Result};
use serde::{Deserialize, Serialize};
use std::ops::ControlFlow;
use std::time::Instant;
use tch::{Device, Tensor};

/// The animator of an autograd run: rows into its [`Recorder`], checkpoints into its file.
pub(super) struct Recording<'a> {
    pub recorder: Recorder<'a, Epoch>,
    checkpoint: Option<&'a RunCheckpoint>,
    epochs: usize,
    device: Device,
    /// Said when a run goes on from its checkpoint.
    label: String,
    begin: Instant,
    /// The seconds a resumed run had trained before.
    before: f64,
    params: Vec<(String, Tensor)>,
    optimizer: Option<optimizer_state::State>,
    /// Why the run stopped, when a checkpoint could not be read or written.
    pub failure: Option<anyhow::Error>,
}

impl<'a> Recording<'a> {
    pub fn new(
        recorder: Recorder<'a, Epoch>,
        checkpoint: Option<&'a RunCheckpoint>,
        epochs: usize,
        device: Device,
        label: String,
    ) -> Self {
        Recording {
            recorder,
            checkpoint,
            epochs,
            device,
            label,
            begin: Instant::now(),
            before: 0.0,
            params: Vec::new(),
            optimizer: None,
            failure: None,
        }
    }

    /// Sets the model, its optimizer and the generators to the run's checkpoint, if it is
    /// resumed and has one: the epochs it had finished.
    fn restore(&mut self, c: &RunCheckpoint) -> Result<usize> {
        let Some(saved) = load(c, self.epochs)? else {
            return Ok(0);
        };
        let rows: Vec<Epoch> = rows(c, &saved)?;
        if let Some(state) = &self.optimizer {
            saved.restore_optimizer(&c.path, state)?;
        }
        saved.restore_tensors(&c.path, &self.params, self.device)?;
        self.before = rows.last().map_or(0.0, |r| r.elapsed_s);
        self.recorder.resume(rows);
        eprintln!(
            "{}: continuing from its checkpoint after epoch {} of {}",
            self.label, saved.meta.epoch, self.epochs
        );
        Ok(saved.meta.epoch)
    }

    fn save(&self, c: &RunCheckpoint, epoch: usize) -> Result<()> {
        let mut tensors: Vec<(String, Tensor)> = (self.params.iter())
            .map(|(name, t)| (name.clone(), t.shallow_clone()))
            .collect();
        if let Some(state) = &self.optimizer {
            tensors.push((
                checkpoint::OPTIMIZER.into(),
                Tensor::from_slice(&state.save()?),
            ));
        }
        let meta = checkpoint::Meta::new(
            &c.fingerprint,
            (epoch, self.epochs),
            &self.recorder.rows(),
            &(),
        )?;
        checkpoint::save(&c.path, &meta, &tensors, self.device)?;
        Ok(())
    }
}

impl Animate<[Tensor; 2]> for Recording<'_> {
    fn start(&mut self, model: Model<'_>) -> usize {
        self.params = model
            .params
            .iter()
            .map(|(name, t)| (name.to_string(), t.shallow_clone()))
            .collect();
        self.optimizer = model.optimizer.cloned();
        match self.checkpoint.filter(|c| c.resume) {
            None => 0,
            Some(c) => self.restore(c).unwrap_or_else(|e| {
                // No epoch is trained: the command reports the failure.
                self.failure = Some(e);
                self.epochs
            }),
        }
    }

    fn add(&mut self, epoch: usize, [train, test]: [Tensor; 2]) -> ControlFlow<()> {
        if stop::requested().is_some() {
            return self.recorder.interrupted();
        }
        let [train_loss, test_loss] = train::read(&[&train, &test]);
        let elapsed = self.before + self.begin.elapsed().as_secs_f64();
        let flow = self
            .recorder
            .add(epoch, Epoch::new(epoch, train_loss, test_loss, elapsed));
        if flow.is_continue() {
            if let Some(c) = self.checkpoint.filter(|c| c.due(epoch, self.epochs)) {
                if let Err(e) = self.save(c, epoch) {
                    self.failure = Some(e);
                    return ControlFlow::Break(());
                }
            }
        }
        flow
    }
}

/// The checkpoint of a run that resumes, checked to be of `epochs` epochs.
fn load(c: &RunCheckpoint, epochs: usize) -> Result<Option<Loaded>> {
    if !c.resume {
        return Ok(None);
    }
    let Some(saved) = checkpoint::load(&c.path, &c.fingerprint)? else {
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

/// A checkpoint's rows, one per finished epoch.
fn rows(c: &RunCheckpoint, saved: &Loaded) -> Result<Vec<Epoch>> {
    let rows: Vec<Epoch> =
        serde_json::from_value(saved.meta.rows.clone()).with_context(|| corrupt(c))?;
    if rows.len() != saved.meta.epoch {
        bail!(
            "{} ({} rows for epoch {})",
            corrupt(c),
            rows.len(),
            saved.meta.epoch
        );
    }
    Ok(rows)
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
    let meta = checkpoint::Meta::new(&c.fingerprint, (s.epoch, epochs), &(), &columns)?;
    let tensors = [("w".to_string(), s.w), ("b".to_string(), s.b)];
    checkpoint::save(&c.path, &meta, &tensors, device)?;
    Ok(())
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
    let Some(saved) = load(c, epochs)? else {
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
    eprintln!(
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
