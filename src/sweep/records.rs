//! A sweep's records: one JSON file beside every run's curve (how it ended, its final figures,
//! the configuration's fingerprint), read back for `--resume`, shards and `sweep merge`.
use super::*;

/// What every run of one sweep shares, and its record repeats: what was run and what ran it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Identity {
    pub experiment: String,
    /// Of the configuration apart from what the sweep varies (see [`fingerprint`]).
    pub fingerprint: String,
    /// The sweep's whole configuration (for `sweep merge`).
    pub config: serde_json::Value,
    pub seeds: Vec<i64>,
    /// The program, device, threads and CPU kernels that trained it (none in a record of a
    /// build before records carried it).
    #[serde(default)]
    pub writer: Option<crate::checkpoint::Writer>,
}

impl Identity {
    /// Why a run of `self` cannot join a sweep of `other`: what differs, and how to run as
    /// `self` did; none when they fit.
    pub fn differs(&self, other: &Identity) -> Option<(String, String)> {
        if self.fingerprint != other.fingerprint
            || self.config != other.config
            || self.seeds != other.seeds
            || self.experiment != other.experiment
        {
            return Some((
                "with another configuration".into(),
                "with the same flags and --seeds".into(),
            ));
        }
        self.writer_differs(other)
    }

    /// How the writer of `self` differs from that of `other` (see
    /// [`crate::checkpoint::Writer::differs`]; a record without one is of an older build).
    pub fn writer_differs(&self, other: &Identity) -> Option<(String, String)> {
        match (&self.writer, &other.writer) {
            (Some(a), Some(b)) => a.differs(b),
            (None, None) => None,
            _ => Some((
                "by another build of this program".into(),
                "with the build that wrote it".into(),
            )),
        }
    }
}

/// What `runs/<run>-seed<k>.json` says of a run (NaN figures as null).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunRecord {
    #[serde(flatten)]
    pub of: Identity,
    pub seed: i64,
    pub version: Impl,
    /// The run's file name without `-seed<k>` and extension.
    pub stem: String,
    pub status: Status,
    pub epochs: usize,
    pub finals: Vec<Option<f64>>,
    pub gap: Option<f64>,
    pub seconds: Option<f64>,
}

pub(super) fn some(v: f64) -> Option<f64> {
    v.is_finite().then_some(v)
}

pub(super) fn nan(v: Option<f64>) -> f64 {
    v.unwrap_or(f64::NAN)
}

/// The run records under `runs/`, by stem: every finished run whose curve is whole (as many
/// rows as its record says), and every interrupted run (for the summary of an interrupted
/// sweep; never kept by `--resume`). Damaged records and anything else are left out.
pub(super) fn read_records(runs_dir: &Path) -> Result<(HashMap<String, RunRecord>, Vec<String>)> {
    let mut found = HashMap::new();
    let mut damaged = Vec::new();
    let Ok(entries) = std::fs::read_dir(runs_dir) else {
        return Ok((found, damaged));
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        let Some(stem) = name.strip_suffix(".json") else {
            continue;
        };
        if stem.starts_with('.') {
            continue;
        }
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("cannot read '{}'", path.display()))?;
        let record = match serde_json::from_str::<RunRecord>(&text) {
            Ok(record) => record,
            Err(e) => {
                // Trained again by --resume; refused by merge.
                damaged.push(format!("runs/{name} is corrupt ({e})"));
                continue;
            }
        };
        if record.status == Status::Interrupted {
            found.insert(stem.to_string(), record);
            continue;
        }
        let curve = runs_dir.join(format!("{stem}.csv"));
        let rows = csv::Reader::from_path(&curve)
            .ok()
            .map(|mut r| r.records().filter(|r| r.is_ok()).count());
        match rows {
            Some(n) if n == record.epochs => {
                found.insert(stem.to_string(), record);
            }
            Some(n) => damaged.push(format!(
                "runs/{stem}.csv has {n} whole rows where runs/{name} says {}",
                record.epochs
            )),
            None => damaged.push(format!(
                "runs/{stem}.csv, the curve of runs/{name}, is missing"
            )),
        }
    }
    damaged.sort();
    Ok((found, damaged))
}

/// What contradicts itself in the finished runs `records` (final figures named `names`): a
/// final figure missing (null), a curve value that is not a finite number, or a final figure
/// that differs from its curve's last row (`final_train_loss` against `train_loss`).
pub(super) fn contradictions(
    runs_dir: &Path,
    records: &HashMap<String, RunRecord>,
    names: &[String],
) -> Vec<String> {
    let mut found = Vec::new();
    for (stem, r) in records.iter().filter(|(_, r)| r.status == Status::Ok) {
        if r.finals.len() != names.len() {
            found.push(format!(
                "runs/{stem}.json holds {} final figures where its configuration has {}",
                r.finals.len(),
                names.len()
            ));
            continue;
        }
        if let Some(i) = r.finals.iter().position(|v| v.is_none()) {
            found.push(format!(
                "runs/{stem}.json is a finished run without its {} (null)",
                names[i]
            ));
            continue;
        }
        let Ok(mut reader) = csv::Reader::from_path(runs_dir.join(format!("{stem}.csv"))) else {
            continue;
        };
        let header: Vec<String> = reader
            .headers()
            .map(|h| h.iter().map(str::to_string).collect())
            .unwrap_or_default();
        let mut last = None;
        for row in reader.records().flatten() {
            let bad = row
                .iter()
                .position(|v| !v.parse::<f64>().is_ok_and(f64::is_finite));
            if let Some(c) = bad {
                found.push(format!(
                    "runs/{stem}.csv has '{}' in column {} of epoch {}",
                    &row[c],
                    header.get(c).map_or("?", |h| h.as_str()),
                    &row[0]
                ));
                last = None;
                break;
            }
            last = Some(row);
        }
        let Some(last) = last else {
            continue;
        };
        for (name, value) in names.iter().zip(&r.finals) {
            let column = name.strip_prefix("final_").unwrap_or(name);
            let Some(c) = header.iter().position(|h| h == column) else {
                continue;
            };
            // Curves hold the models' 32-bit figures at their shortest, records the same
            // figure widened to 64 bits: they agree as 32-bit floats.
            let in_curve: f32 = last[c].parse().unwrap_or(f32::NAN);
            if value.map(|v| v as f32) != Some(in_curve) {
                found.push(format!(
                    "runs/{stem}.json says {name} {} where the last row of runs/{stem}.csv says {}",
                    value.map_or("null".into(), |v| v.to_string()),
                    &last[c]
                ));
            }
        }
    }
    found.sort();
    found
}

/// Whether `records` holds `stem` as a finished run (one `--resume` keeps).
pub(super) fn finished(records: &HashMap<String, RunRecord>, stem: &str) -> bool {
    records
        .get(stem)
        .is_some_and(|r| r.status != Status::Interrupted)
}

/// Files of a sweep directory that an earlier sweep left.
pub(super) fn has_sweep(dir: &Path) -> bool {
    let non_empty = |d: &str| {
        std::fs::read_dir(dir.join(d))
            .map(|mut d| d.next().is_some())
            .unwrap_or(false)
    };
    dir.join("runs.csv").exists() || non_empty("runs") || non_empty(CHECKPOINTS_DIR)
}

/// The first entry of a sweep's directory `dir` that this program did not write there, which
/// `--overwrite` would remove: anything but its tables and charts (`runs.csv`, `summary.csv`,
/// `results.xlsx`, `*.svg`), its lock files, `runs/` of runs' curves and records, `checkpoints/`
/// of checkpoints, `tensorboard/<run>/` of event files, and temporaries a killed writer left.
pub(super) fn foreign(dir: &Path) -> Option<PathBuf> {
    use record::Entry::{Dir, File};
    let left = |name: &str| crate::atomic::is_temporary(name) || record::is_probe(name);
    let files = |extensions: &'static [&'static str]| {
        move |name: &str, kind| {
            kind == File && (left(name) || record::visible_with(name, extensions))
        }
    };
    let board = dir.join("tensorboard");
    record::foreign(dir, |name, kind| match kind {
        Dir => ["runs", CHECKPOINTS_DIR, "tensorboard"].contains(&name),
        File => {
            let lock = name == ".lock" || name.starts_with(".lock-");
            lock || left(name) || record::visible_with(name, &["csv", "svg", "xlsx"])
        }
        record::Entry::Other => false,
    })
    .or_else(|| {
        record::foreign(
            &dir.join("runs"),
            files(&["csv", "json", "svg", "safetensors"]),
        )
    })
    .or_else(|| record::foreign(&dir.join(CHECKPOINTS_DIR), files(&["safetensors"])))
    .or_else(|| record::foreign(&board, |name, kind| kind == Dir && !name.starts_with('.')))
    .or_else(|| {
        let runs = std::fs::read_dir(&board).into_iter().flatten().flatten();
        runs.filter_map(|run| {
            record::foreign(&run.path(), |name, kind| {
                kind == File && name.contains("tfevents")
            })
        })
        .min()
    })
}

/// Removes what an earlier sweep wrote in `dir` (`--overwrite`), its event files included;
/// the caller has found nothing else there ([`foreign`]).
pub(super) fn clear(dir: &Path) -> Result<()> {
    for sub in ["runs", CHECKPOINTS_DIR, "tensorboard"] {
        let sub = dir.join(sub);
        if sub.exists() {
            std::fs::remove_dir_all(&sub)
                .with_context(|| format!("cannot remove '{}'", sub.display()))?;
        }
    }
    record::remove_stale(&dir.join("runs.csv"));
    remove_summary(dir);
    Ok(())
}

/// Removes a sweep's summary set: `summary.csv`, `results.xlsx` and the figures.
pub(super) fn remove_summary(dir: &Path) {
    for name in ["summary.csv", "results.xlsx"] {
        record::remove_stale(&dir.join(name));
    }
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = entry.path();
        if p.extension().is_some_and(|e| e == "svg") {
            record::remove_stale(&p);
        }
    }
}

/// A trained run's curve (and what it saves), then its record — last, so a record exists only
/// beside a whole curve.
pub(super) fn write_run<E: Experiment>(
    cfg: &E::Config,
    runs_dir: &Path,
    p: &Planned<E::Setting>,
    run: &Run<E>,
    of: &Identity,
) -> Result<RunRecord> {
    let stem = runs_dir.join(&p.stem);
    record::write_csv(&record::with_suffix(&stem, "csv"), &run.curve)?;
    if run.status == Status::Ok {
        E::save(cfg, run, &stem, false)?;
    }
    let record = RunRecord {
        of: of.clone(),
        seed: p.seed,
        version: p.version,
        stem: p.stem.clone(),
        status: run.status,
        epochs: run.curve.len(),
        finals: experiment::figures(&run.finals)
            .into_iter()
            .map(|(_, v)| some(v))
            .collect(),
        gap: some(run.finals.gap()),
        seconds: some(run.seconds),
    };
    let mut bytes = serde_json::to_vec_pretty(&record)?;
    bytes.push(b'\n');
    record::write_atomic(&record::with_suffix(&stem, "json"), &bytes)?;
    Ok(record)
}

/// The experiment whose runs a sweep directory holds (for `sweep merge`).
pub fn experiment_of(dir: &Path) -> Result<String> {
    if !dir.is_dir() {
        bail!(
            "'{}' is not a directory; `sweep merge` takes a sweep's directory, e.g. \
             runs/sweep/dropout",
            dir.display()
        );
    }
    let (records, _) = read_records(&dir.join("runs"))?;
    match records.iter().min_by_key(|(stem, _)| *stem) {
        Some((_, r)) => Ok(r.of.experiment.clone()),
        None => bail!(
            "'{}' holds no finished run of a sweep (runs/*.json); give the directory the shards \
             wrote into (<out>/sweep/<experiment>), after they finished",
            dir.display()
        ),
    }
}
