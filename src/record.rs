//! What a run leaves behind: CSV curves, the summary, run.json; every file written atomically.
pub use crate::atomic::{replace_atomically, write_atomic};
use crate::plot;
use anyhow::{Context as _, Result};
use serde::Serialize;
use std::fs;
use std::path::{Path, PathBuf};

/// The name [`experiment_dir`]'s write probe starts with (followed by the process ID).
const PROBE: &str = ".write-test-";

/// Whether `name` is [`experiment_dir`]'s write probe, which a killed command may leave.
pub fn is_probe(name: &str) -> bool {
    name.starts_with(PROBE)
}

/// Creates `<out>/<experiment>` and checks that it is writable before any training starts.
pub fn experiment_dir(out: &Path, experiment: &str) -> Result<PathBuf> {
    if out.exists() && !out.is_dir() {
        anyhow::bail!(
            "--out '{}' is a file, not a directory; choose a directory (it is created if missing)",
            out.display()
        );
    }
    let dir = out.join(experiment);
    fs::create_dir_all(&dir).with_context(|| {
        format!(
            "cannot create the output directory '{}' (choose a writable --out)",
            dir.display()
        )
    })?;
    let probe = dir.join(format!("{PROBE}{}", std::process::id()));
    fs::write(&probe, b"").with_context(|| {
        format!(
            "the output directory '{}' is not writable (choose a writable --out)",
            dir.display()
        )
    })?;
    let _ = fs::remove_file(&probe);
    Ok(dir)
}

/// CSV with a header from the rows' field names; with no rows, the header alone (taken from
/// a default row), so that an empty curve is still a valid, self-describing file.
pub fn csv_bytes<R: Serialize + Default>(rows: &[R]) -> Result<Vec<u8>> {
    let mut w = csv::Writer::from_writer(Vec::new());
    if rows.is_empty() {
        w.serialize(R::default())?;
        let bytes = w.into_inner().map_err(|e| anyhow::anyhow!("csv: {e}"))?;
        let header_end = bytes
            .iter()
            .position(|&b| b == b'\n')
            .map_or(bytes.len(), |i| i + 1);
        return Ok(bytes[..header_end].to_vec());
    }
    for row in rows {
        w.serialize(row)?;
    }
    tidy(&w.into_inner().map_err(|e| anyhow::anyhow!("csv: {e}"))?)
}

/// A number as the CSV files write it: a value that is exactly a 32-bit float (what the
/// models compute) in the shortest text that reads back as that f32 (`108.51725`, not its f64
/// expansion `108.51725006103516`); every other value as the shortest text that reads back as
/// itself. Short values (nine significant digits or fewer) are left as they are.
pub fn tidy_number(field: &str) -> Option<String> {
    let v: f64 = field.parse().ok()?;
    let digits = field
        .split(['e', 'E'])
        .next()
        .unwrap_or("")
        .chars()
        .filter(char::is_ascii_digit)
        .skip_while(|&c| c == '0')
        .count();
    if !v.is_finite() || digits <= 9 || (v as f32) as f64 != v {
        return None;
    }
    let f = v as f32;
    Some(if f != 0.0 && (f.abs() < 1e-4 || f.abs() >= 1e9) {
        format!("{f:e}")
    } else {
        format!("{f}")
    })
}

/// CSV bytes with every field rewritten by [`tidy_number`] where it applies.
fn tidy(bytes: &[u8]) -> Result<Vec<u8>> {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .from_reader(bytes);
    let mut w = csv::Writer::from_writer(Vec::new());
    for record in reader.records() {
        let record = record?;
        let fields: Vec<String> = record
            .iter()
            .map(|f| tidy_number(f).unwrap_or_else(|| f.to_string()))
            .collect();
        w.write_record(&fields)?;
    }
    w.into_inner().map_err(|e| anyhow::anyhow!("csv: {e}"))
}

pub fn write_csv<R: Serialize + Default>(path: &Path, rows: &[R]) -> Result<()> {
    write_atomic(path, &csv_bytes(rows)?)
}

/// `stem` + `.` + `ext`, whatever dots `stem` holds already (`scratch-wd0.1-seed0` + `csv`;
/// `Path::with_extension` would replace `.1-seed0`).
pub fn with_suffix(stem: &Path, ext: &str) -> PathBuf {
    let mut name = stem.as_os_str().to_owned();
    name.push(".");
    name.push(ext);
    name.into()
}

/// One field of a [`write_table`] row, written as a struct's field of that type would be.
#[derive(Debug, Clone, PartialEq)]
pub enum Cell {
    Text(String),
    Int(i64),
    Float(f64),
}

impl Cell {
    pub fn text(s: &str) -> Cell {
        Cell::Text(s.to_string())
    }
}

impl Serialize for Cell {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        match self {
            Cell::Text(t) => s.serialize_str(t),
            Cell::Int(i) => s.serialize_i64(*i),
            Cell::Float(f) => s.serialize_f64(*f),
        }
    }
}

/// CSV with the columns known only at run time (an experiment's settings and figures): the
/// header, then one line per row, written atomically.
pub fn write_table(path: &Path, header: &[String], rows: &[Vec<Cell>]) -> Result<()> {
    write_atomic(path, &table_bytes(header, rows)?)
}

/// The CSV bytes [`write_table`] writes.
pub fn table_bytes(header: &[String], rows: &[Vec<Cell>]) -> Result<Vec<u8>> {
    let mut w = csv::WriterBuilder::new()
        .has_headers(false)
        .from_writer(Vec::new());
    w.write_record(header)?;
    for row in rows {
        anyhow::ensure!(
            row.len() == header.len(),
            "a row of {} fields under {} columns",
            row.len(),
            header.len()
        );
        w.serialize(row)?;
    }
    tidy(&w.into_inner().map_err(|e| anyhow::anyhow!("csv: {e}"))?)
}

/// A curve as `<stem>.csv` (every field of every row) and, with a chart, `<stem>.svg` (its
/// panels), both written atomically; returns the CSV bytes (for the workbook). Without a chart
/// (`--no-plot`) an older `<stem>.svg` is removed, so no stale figure sits beside the new CSV.
pub fn write_curve<R: Serialize + Default>(
    dir: &Path,
    stem: &str,
    rows: &[R],
    chart: Option<Chart<'_, R>>,
) -> Result<Vec<u8>> {
    let bytes = csv_bytes(rows)?;
    write_atomic(&dir.join(format!("{stem}.csv")), &bytes)?;
    let svg_path = dir.join(format!("{stem}.svg"));
    let Some(chart) = chart else {
        remove_stale(&svg_path);
        return Ok(bytes);
    };
    let panels: Vec<(plot::Figure, Vec<plot::Series>)> = chart
        .panels
        .iter()
        .map(|panel| {
            let series = panel
                .series
                .iter()
                .enumerate()
                .map(|(i, line)| {
                    let points = rows.iter().map(|r| ((chart.x.2)(r), (line.2)(r))).collect();
                    let s = plot::Series::line(line.0, points, panel.color_offset + i);
                    if line.0.starts_with("test") {
                        s.with_markers().dashed()
                    } else {
                        s
                    }
                })
                .collect();
            let figure = plot::Figure {
                title: panel.y_label.to_string(),
                x_label: chart.x.0.to_string(),
                y_label: panel.y_label.to_string(),
                log_y: panel.log_y,
                ..Default::default()
            };
            (figure, series)
        })
        .collect();
    let svg = plot::panels(chart.title, &panels)
        .with_context(|| format!("cannot draw '{}'", svg_path.display()))?;
    write_atomic(&svg_path, svg.as_bytes())?;
    Ok(bytes)
}

/// What an entry of a directory is, as [`foreign`] asks (links are not followed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Entry {
    File,
    Dir,
    /// A link, a socket, a device.
    Other,
}

/// The first entry of `dir` (by name) that `ours` (its name and kind) does not claim: what a
/// command about to replace or clear `dir` refuses to remove, naming it. None when `dir` does
/// not exist.
pub fn foreign(dir: &Path, ours: impl Fn(&str, Entry) -> bool) -> Option<PathBuf> {
    let mut entries: Vec<fs::DirEntry> =
        fs::read_dir(dir).into_iter().flatten().flatten().collect();
    entries.sort_by_key(|e| e.file_name());
    entries
        .into_iter()
        .find(|e| {
            let kind = match e.file_type() {
                Ok(t) if t.is_file() => Entry::File,
                Ok(t) if t.is_dir() => Entry::Dir,
                _ => Entry::Other,
            };
            !e.file_name().to_str().is_some_and(|name| ours(name, kind))
        })
        .map(|e| e.path())
}

/// Whether `name` ends with one of `extensions` (without the dot) and is not hidden.
pub fn visible_with(name: &str, extensions: &[&str]) -> bool {
    let ext = Path::new(name).extension().and_then(|x| x.to_str());
    !name.starts_with('.') && ext.is_some_and(|x| extensions.contains(&x))
}

/// Removes a figure an earlier run left that this run does not draw (`--no-plot`), so no stale
/// chart sits beside new CSV files.
pub fn remove_stale(path: &Path) {
    let _ = fs::remove_file(path);
}

/// An SVG chart, written atomically.
pub fn write_chart(path: &Path, figure: &plot::Figure, series: &[plot::Series]) -> Result<()> {
    let svg = plot::line_chart(figure, series)
        .with_context(|| format!("cannot draw '{}'", path.display()))?;
    write_atomic(path, svg.as_bytes())
}

/// An SVG of panels under one title, written atomically.
pub fn write_panels(
    path: &Path,
    title: &str,
    panels: &[(plot::Figure, Vec<plot::Series>)],
) -> Result<()> {
    let svg =
        plot::panels(title, panels).with_context(|| format!("cannot draw '{}'", path.display()))?;
    write_atomic(path, svg.as_bytes())
}

/// One number of a row.
pub type Field<R> = fn(&R) -> f64;

/// How [`write_curve`] draws its rows, and the workbook charts them: panels of lines against
/// one x. Lines whose legend starts with "test" are dashed, with markers.
pub struct Chart<'a, R> {
    pub title: &'a str,
    /// The x axis: its label, its CSV column, its value.
    pub x: (&'a str, &'a str, Field<R>),
    pub panels: &'a [Panel<'a, R>],
}

/// One panel of a [`Chart`].
pub struct Panel<'a, R> {
    pub y_label: &'a str,
    pub log_y: bool,
    /// Each line's legend, CSV column and value.
    pub series: &'a [(&'a str, &'a str, Field<R>)],
    /// Where its colours start in the palette (so panels do not repeat each other's).
    pub color_offset: usize,
}

impl<R> Chart<'_, R> {
    /// The workbook's native charts of this chart: one per panel.
    pub fn workbook_specs(&self) -> Vec<crate::workbook::ChartSpec<'_>> {
        self.panels
            .iter()
            .map(|p| crate::workbook::ChartSpec {
                title: self.title,
                x: self.x.1,
                x_label: self.x.0,
                y_label: p.y_label,
                log_y: p.log_y,
                lines: p
                    .series
                    .iter()
                    .map(|&(name, column, _)| crate::workbook::Line {
                        name,
                        column,
                        dashed: name.starts_with("test"),
                        markers: name.starts_with("test"),
                    })
                    .collect(),
                color_offset: p.color_offset,
            })
            .collect()
    }
}

pub fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<()> {
    let mut bytes = serde_json::to_vec_pretty(value)?;
    bytes.push(b'\n');
    write_atomic(path, &bytes)
}

/// `run.json`: everything needed to reproduce a run and to know what ran it.
#[derive(Serialize)]
pub struct RunInfo<'a, C: Serialize> {
    pub experiment: &'a str,
    pub config: &'a C,
    pub seed: i64,
    pub device_requested: String,
    /// The device the run really used (`cpu` or `cuda:N`).
    pub device: String,
    pub threads: i32,
    /// The CPU kernels libtorch ran (MKL's branch, ATen's capability) and whether
    /// `--reproducible` chose them.
    pub cpu_kernels: crate::cpu::KernelPaths,
    pub tch_version: &'a str,
    pub libtorch_version: &'a str,
    pub command: Vec<String>,
    /// ok, diverged (some run's loss became NaN or infinite) or interrupted.
    pub status: crate::stop::Status,
    /// Seconds since the Unix epoch when the run finished.
    pub finished_unix: u64,
}

impl<'a, C: Serialize> RunInfo<'a, C> {
    /// The record of `experiment` run with `config`, seeded by `seed`, on `device` (asked for
    /// as `requested`).
    pub fn new(
        experiment: &'a str,
        config: &'a C,
        seed: i64,
        requested: crate::device::DeviceChoice,
        device: tch::Device,
    ) -> Self {
        RunInfo {
            experiment,
            config,
            seed,
            device_requested: requested.to_string(),
            device: crate::device::name(device),
            threads: tch::get_num_threads(),
            cpu_kernels: crate::cpu::KernelPaths::current(),
            tch_version: crate::TCH_VERSION,
            libtorch_version: crate::LIBTORCH_VERSION,
            command: crate::options::command_line(),
            status: crate::stop::Status::Ok,
            finished_unix: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
        }
    }

    pub fn with_status(mut self, status: crate::stop::Status) -> Self {
        self.status = status;
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names_in(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn a_writer_failing_midway_leaves_the_old_file_and_no_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("curve.csv");
        fs::write(&path, b"epoch,loss\n1,0.5\n").unwrap();
        let mut temporary = None;
        let e = replace_atomically(&path, "tmp", |tmp| {
            temporary = Some(tmp.to_path_buf());
            let mut f = fs::File::create(tmp)?;
            std::io::Write::write_all(&mut f, b"epoch,loss\n1,0.")?;
            anyhow::bail!("disk full (simulated)")
        })
        .unwrap_err();
        let tmp = temporary.expect("the writer ran");
        assert_eq!(
            tmp.parent(),
            Some(dir.path()),
            "the temporary sits beside the file"
        );
        assert_ne!(tmp, path, "the writer is never given the final path");
        let message = format!("{e:#}");
        assert!(message.contains("curve.csv"), "{message}");
        assert!(message.contains("disk full (simulated)"), "{message}");
        assert_eq!(fs::read(&path).unwrap(), b"epoch,loss\n1,0.5\n");
        assert_eq!(names_in(dir.path()), ["curve.csv"]);
    }

    #[test]
    fn a_finished_write_replaces_the_file_and_leaves_no_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("summary.csv");
        fs::write(&path, b"old").unwrap();
        write_atomic(&path, b"new contents").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"new contents");
        assert_eq!(names_in(dir.path()), ["summary.csv"]);
    }
}
