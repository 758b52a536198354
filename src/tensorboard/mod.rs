//! TensorBoard event files: every run's curve as scalars while it trains, and at its end its
//! hyper-parameters and final figures for the HParams dashboard — what PyTorch's
//! `SummaryWriter.add_scalar` and `add_hparams` write (the same messages, tags and plugin data),
//! so `tensorboard --logdir <out>` shows Rust and PyTorch runs alike.
//!
//! Layout: a command's runs under `<out>/tensorboard/<experiment>/<run>-seed<k>/` (written into
//! `<out>/tensorboard/.<experiment>.<pid>.staging/` while it trains and swapped in with the
//! rest of its set: `experiment::run`), a sweep's under `<sweep>/tensorboard/<run>-seed<k>/`. A run's directory holds one event file
//! (`events.out.tfevents.<time>.<host>.<pid>.d2l`); a run trained again, or resumed from its
//! checkpoint, replaces it (a resumed run's file is written again from the checkpoint's rows),
//! so no step appears twice. Each epoch's event is written to the file as it ends (TensorBoard
//! reloads it live); a run killed midway leaves every finished epoch readable.
//!
//! The format's few messages are encoded by hand (`proto.rs`, with CRC-32C): no protobuf
//! compiler at build time and no generated code to keep in step.
mod proto;

use anyhow::{anyhow, Result};
use proto::Message;
use std::cell::RefCell;
use std::collections::HashMap;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::rc::Rc;

/// The HParams plugin's name and its summaries' tags (`tensorboard/plugins/hparams/metadata.py`).
const HPARAMS: &str = "hparams";
const EXPERIMENT_TAG: &str = "_hparams_/experiment";
const SESSION_START_TAG: &str = "_hparams_/session_start_info";
const SESSION_END_TAG: &str = "_hparams_/session_end_info";

/// A hyper-parameter's value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Number(f64),
    Text(String),
    Bool(bool),
}

/// Where a command's runs write their event files, and the runs it has open.
#[derive(Debug, Clone)]
pub struct Board {
    pub dir: PathBuf,
    open: Rc<RefCell<HashMap<String, Run>>>,
}

/// One run's event file, shared by what writes its curve and what ends it.
#[derive(Debug, Clone)]
pub struct Run(Rc<RefCell<Writer>>);

#[derive(Debug)]
struct Writer {
    path: PathBuf,
    file: Option<File>,
    /// The first failure: later writes are skipped, and the command reports it.
    error: Option<String>,
}

fn wall_time() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty() && !h.contains('/'))
        .unwrap_or_else(|| "localhost".into())
}

fn event(step: i64) -> Message {
    Message::new().double(1, wall_time()).int(2, step)
}

impl Writer {
    /// A fresh event file in `dir`: the event files already there are removed.
    fn create(dir: &Path) -> Writer {
        let name = format!(
            "events.out.tfevents.{}.{}.{}.d2l",
            wall_time() as u64,
            hostname(),
            std::process::id()
        );
        let path = dir.join(name);
        let mut w = Writer {
            path,
            file: None,
            error: None,
        };
        let opened = std::fs::create_dir_all(dir).and_then(|()| {
            for entry in std::fs::read_dir(dir)?.flatten() {
                if entry.file_name().to_string_lossy().contains("tfevents") {
                    std::fs::remove_file(entry.path())?;
                }
            }
            File::create(&w.path)
        });
        match opened {
            Ok(file) => {
                w.file = Some(file);
                w.write(event(0).string(3, "brain.Event:2"));
            }
            Err(e) => w.fail(e),
        }
        w
    }

    fn fail(&mut self, e: std::io::Error) {
        self.file = None;
        self.error.get_or_insert_with(|| {
            format!(
                "cannot write '{}': {e} (check the free space and permissions there, choose \
                 another --out, or add --no-tensorboard)",
                self.path.display()
            )
        });
    }

    /// Appends one event; false once writing has failed.
    fn write(&mut self, event: Message) -> bool {
        let Some(file) = self.file.as_mut() else {
            return false;
        };
        match file.write_all(&proto::record(&event.into_bytes())) {
            Ok(()) => true,
            Err(e) => {
                self.fail(e);
                false
            }
        }
    }
}

/// A summary of one plugin value (`Summary.Value` with `metadata.plugin_data`, no value).
fn plugin_summary(tag: &str, content: Message) -> Message {
    let plugin = Message::new()
        .string(1, HPARAMS)
        .bytes(2, &content.into_bytes());
    let metadata = Message::new().message(1, plugin);
    let value = Message::new().string(1, tag).message(9, metadata);
    Message::new().message(1, value)
}

/// `google.protobuf.Value`.
fn value_message(v: &Value) -> Message {
    match v {
        Value::Number(x) => Message::new().double(2, *x),
        Value::Text(s) => Message::new().string(3, s),
        Value::Bool(b) => Message::new().int(4, i64::from(*b)),
    }
}

impl Run {
    /// Writes `values` as scalars (`simple_value`) at `step`, one event; false once writing
    /// has failed (the command then reports it).
    pub fn scalars(&self, step: i64, values: &[(String, f64)]) -> bool {
        let mut summary = Message::new();
        for (tag, v) in values {
            let value = Message::new().string(1, tag).float(2, *v as f32);
            summary = summary.message(1, value);
        }
        self.0.borrow_mut().write(event(step).message(5, summary))
    }

    /// The HParams plugin's three summaries, as PyTorch's `add_hparams` writes them: the
    /// experiment (every hyper-parameter and metric by name), the session's start (the
    /// values) and end (success or failure).
    fn hparams(&self, hparams: &[(String, Value)], metrics: &[String], ok: bool) -> bool {
        let mut experiment = Message::new();
        for (name, v) in hparams {
            let data_type = match v {
                Value::Text(_) => 1,
                Value::Bool(_) => 2,
                Value::Number(_) => 3,
            };
            experiment = experiment.message(4, Message::new().string(1, name).int(4, data_type));
        }
        for tag in metrics {
            let name = Message::new().string(2, tag);
            experiment = experiment.message(5, Message::new().message(1, name));
        }
        let mut start = Message::new();
        for (name, v) in hparams {
            let entry = Message::new().string(1, name).message(2, value_message(v));
            start = start.message(1, entry);
        }
        let end = Message::new().int(1, if ok { 1 } else { 2 });
        let plugin = |field: u32, m: Message| Message::new().int(1, 0).message(field, m);
        let mut w = self.0.borrow_mut();
        w.write(event(0).message(5, plugin_summary(EXPERIMENT_TAG, plugin(2, experiment))))
            && w.write(event(0).message(5, plugin_summary(SESSION_START_TAG, plugin(3, start))))
            && w.write(event(0).message(5, plugin_summary(SESSION_END_TAG, plugin(4, end))))
    }

    /// The event file's path.
    pub fn path(&self) -> PathBuf {
        self.0.borrow().path.clone()
    }

    fn close(&self) -> Result<()> {
        let mut w = self.0.borrow_mut();
        if let Some(file) = w.file.take() {
            if let Err(e) = file.sync_all() {
                w.fail(e);
            }
        }
        match &w.error {
            Some(message) => Err(anyhow!("{message}")),
            None => Ok(()),
        }
    }
}

impl Board {
    pub fn new(dir: PathBuf) -> Board {
        Board {
            dir,
            open: Rc::default(),
        }
    }

    /// Starts the run `name` afresh (`<dir>/<name>/`, its earlier event files removed).
    pub fn run(&self, name: &str) -> Run {
        let run = Run(Rc::new(RefCell::new(Writer::create(&self.dir.join(name)))));
        self.open.borrow_mut().insert(name.to_string(), run.clone());
        run
    }

    /// Ends the run `name` (started now if it was not): its final figures as scalars at
    /// `step` (the `metrics` the HParams dashboard shows), its hyper-parameters, and whether
    /// it finished; the file is synced and closed. The run's first write failure, if any.
    pub fn finish(
        &self,
        name: &str,
        hparams: &[(String, Value)],
        metrics: &[(String, f64)],
        step: i64,
        ok: bool,
    ) -> Result<()> {
        let run = self.open.borrow_mut().remove(name);
        let run = run.unwrap_or_else(|| {
            let run = self.run(name);
            self.open.borrow_mut().remove(name);
            run
        });
        let finite: Vec<(String, f64)> = metrics
            .iter()
            .filter(|(_, v)| v.is_finite())
            .cloned()
            .collect();
        let tags: Vec<String> = metrics.iter().map(|(tag, _)| tag.clone()).collect();
        let _ = run.scalars(step, &finite) && run.hparams(hparams, &tags, ok);
        run.close()
    }
}
