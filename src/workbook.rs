//! `results.xlsx` beside the CSV files: the same numbers, stored as numbers (so no spreadsheet
//! locale can misread a decimal point), one sheet per table with its header row frozen, the
//! run's configuration, and native charts that the spreadsheet draws from the sheets' cells.
//!
//! Every sheet is made from the CSV bytes the command writes, so each cell holds exactly the
//! float the CSV holds.
use crate::plot::{Figure, Series};
use anyhow::{Context as _, Result};
use rust_xlsxwriter::{
    Chart, ChartAxisCrossing, ChartErrorBars, ChartErrorBarsType, ChartLegendPosition, ChartLine,
    ChartLineDashType, ChartMarker, ChartMarkerType, ChartRange, ChartType, Format, Workbook,
    Worksheet,
};
use std::collections::HashSet;
use std::path::Path;

/// A workbook being built.
pub struct Book {
    workbook: Workbook,
    names: HashSet<String>,
}

/// Where a table landed: its sheet, its rows of data (after the header) and its columns.
#[derive(Debug, Clone)]
pub struct Table {
    pub sheet: String,
    pub rows: u32,
    pub columns: Vec<String>,
}

impl Table {
    /// The column index of `name`.
    pub fn column(&self, name: &str) -> Option<u16> {
        self.columns
            .iter()
            .position(|c| c == name)
            .map(|i| i as u16)
    }
}

/// A line of a native chart: its legend name, the y column, dashed or solid, with markers.
pub struct Line<'a> {
    pub name: &'a str,
    pub column: &'a str,
    pub dashed: bool,
    pub markers: bool,
}

/// A native chart of some columns of a table against one of its columns.
pub struct ChartSpec<'a> {
    pub title: &'a str,
    pub x: &'a str,
    pub x_label: &'a str,
    pub y_label: &'a str,
    pub log_y: bool,
    pub lines: Vec<Line<'a>>,
    /// Where the lines' colours start in the palette.
    pub color_offset: usize,
}

/// Excel's limits on a sheet name: at most 31 characters, none of `[]:*?/\`.
fn sheet_name(wanted: &str, taken: &HashSet<String>) -> String {
    let clean: String = wanted
        .chars()
        .map(|c| if "[]:*?/\\".contains(c) { '_' } else { c })
        .collect();
    let base: String = clean.chars().take(31).collect();
    if !taken.contains(&base.to_lowercase()) {
        return base;
    }
    (2..)
        .map(|i| {
            let suffix = format!("~{i}");
            let head: String = clean.chars().take(31 - suffix.len()).collect();
            head + &suffix
        })
        .find(|n| !taken.contains(&n.to_lowercase()))
        .expect("a free name")
}

impl Default for Book {
    fn default() -> Self {
        Book::new()
    }
}

impl Book {
    pub fn new() -> Book {
        Book {
            workbook: Workbook::new(),
            names: HashSet::new(),
        }
    }

    fn sheet(&mut self, wanted: &str) -> Result<(String, &mut Worksheet)> {
        let name = sheet_name(wanted, &self.names);
        self.names.insert(name.to_lowercase());
        let sheet = self.workbook.add_worksheet();
        sheet.set_name(&name)?;
        Ok((name, sheet))
    }

    /// A sheet holding a CSV table: the header in bold and frozen, every field that parses as
    /// a number stored as that number, the others as text.
    pub fn add_table(&mut self, wanted: &str, csv: &[u8]) -> Result<Table> {
        let mut reader = csv::Reader::from_reader(csv);
        let columns: Vec<String> = reader.headers()?.iter().map(String::from).collect();
        let records: Vec<csv::StringRecord> = reader.records().collect::<Result<_, _>>()?;
        let bold = Format::new().set_bold();
        let (name, sheet) = self.sheet(wanted)?;
        for (c, h) in columns.iter().enumerate() {
            sheet.write_string_with_format(0, c as u16, h, &bold)?;
            sheet.set_column_width(c as u16, (h.chars().count() + 4).max(12) as f64)?;
        }
        for (r, record) in records.iter().enumerate() {
            for (c, field) in record.iter().enumerate() {
                let (row, col) = (r as u32 + 1, c as u16);
                match field.parse::<f64>() {
                    Ok(v) if v.is_finite() => sheet.write_number(row, col, v)?,
                    _ => sheet.write_string(row, col, field)?,
                };
            }
        }
        sheet.set_freeze_panes(1, 0)?;
        Ok(Table {
            sheet: name,
            rows: records.len() as u32,
            columns,
        })
    }

    /// A sheet of `key, value` lines from a JSON object (the run's configuration).
    pub fn add_json(&mut self, wanted: &str, value: &serde_json::Value) -> Result<()> {
        let mut lines = Vec::new();
        flatten("", value, &mut lines);
        let bold = Format::new().set_bold();
        let (_, sheet) = self.sheet(wanted)?;
        sheet.write_string_with_format(0, 0, "key", &bold)?;
        sheet.write_string_with_format(0, 1, "value", &bold)?;
        sheet.set_column_width(0, 28)?;
        sheet.set_column_width(1, 60)?;
        for (r, (k, v)) in lines.iter().enumerate() {
            sheet.write_string(r as u32 + 1, 0, k)?;
            match v {
                serde_json::Value::Number(n) => {
                    sheet.write_number(r as u32 + 1, 1, n.as_f64().unwrap_or(f64::NAN))?
                }
                serde_json::Value::String(s) => sheet.write_string(r as u32 + 1, 1, s)?,
                other => sheet.write_string(r as u32 + 1, 1, other.to_string())?,
            };
        }
        sheet.set_freeze_panes(1, 0)?;
        Ok(())
    }

    /// A native chart of `spec` beside the data of `table` (to the right of its columns,
    /// `below` charts down from the top).
    pub fn add_chart(&mut self, table: &Table, spec: &ChartSpec<'_>, below: u32) -> Result<()> {
        let Some(x) = table.column(spec.x) else {
            anyhow::bail!("no column {} in sheet {}", spec.x, table.sheet);
        };
        if table.rows == 0 {
            return Ok(());
        }
        let mut chart = Chart::new(ChartType::ScatterStraight);
        chart.title().set_name(spec.title);
        chart.x_axis().set_name(spec.x_label);
        chart.y_axis().set_name(spec.y_label);
        if spec.log_y {
            chart
                .y_axis()
                .set_log_base(10)
                .set_crossing(ChartAxisCrossing::Min);
        }
        chart.legend().set_position(ChartLegendPosition::Bottom);
        for (i, line) in spec.lines.iter().enumerate() {
            let Some(y) = table.column(line.column) else {
                anyhow::bail!("no column {} in sheet {}", line.column, table.sheet);
            };
            let series = chart.add_series();
            series
                .set_name(line.name)
                .set_categories((table.sheet.as_str(), 1, x, table.rows, x))
                .set_values((table.sheet.as_str(), 1, y, table.rows, y));
            let color = COLORS[(spec.color_offset + i) % COLORS.len()];
            series.set_format(&mut stroke(color, line.dashed));
            series.set_marker(&marker(line.markers));
        }
        let (_, sheet) = self.worksheet(&table.sheet)?;
        sheet.insert_chart(1 + below * 22, table.columns.len() as u16 + 1, &chart)?;
        Ok(())
    }

    /// A figure drawn as SVG elsewhere, as a sheet of its data (x, y and ± sd of every series,
    /// side by side) with a native chart of it: sweeps' summaries.
    pub fn add_figure(&mut self, wanted: &str, figure: &Figure, series: &[Series]) -> Result<()> {
        let bold = Format::new().set_bold();
        let (name, sheet) = self.sheet(wanted)?;
        let mut chart = Chart::new(ChartType::ScatterStraight);
        chart.title().set_name(&figure.title);
        chart.x_axis().set_name(&figure.x_label);
        chart.y_axis().set_name(&figure.y_label);
        if figure.log_y {
            chart
                .y_axis()
                .set_log_base(10)
                .set_crossing(ChartAxisCrossing::Min);
        }
        chart.legend().set_position(ChartLegendPosition::Bottom);
        let mut rows = 0u32;
        for (i, s) in series.iter().enumerate() {
            let col = (i * 3) as u16;
            sheet.write_string_with_format(0, col, format!("{} x", s.name), &bold)?;
            sheet.write_string_with_format(0, col + 1, &s.name, &bold)?;
            sheet.write_string_with_format(0, col + 2, format!("{} sd", s.name), &bold)?;
            for (r, &(x, y)) in s.points.iter().enumerate() {
                let x = figure.x_value(x);
                let row = r as u32 + 1;
                sheet.write_number(row, col, x)?;
                if y.is_finite() {
                    sheet.write_number(row, col + 1, y)?;
                }
                let e = s
                    .errors
                    .as_ref()
                    .and_then(|e| e.get(r))
                    .copied()
                    .unwrap_or(0.0);
                if e.is_finite() {
                    sheet.write_number(row, col + 2, e)?;
                }
            }
            let n = s.points.len() as u32;
            rows = rows.max(n);
            if n == 0 {
                continue;
            }
            let line = chart.add_series();
            line.set_name(&s.name)
                .set_categories((name.as_str(), 1, col, n, col))
                .set_values((name.as_str(), 1, col + 1, n, col + 1));
            line.set_format(&mut stroke(COLORS[s.color % COLORS.len()], s.dashed));
            line.set_marker(&marker(s.markers));
            if s.errors.is_some() {
                let range = || ChartRange::new_from_range(&name, 1, col + 2, n, col + 2);
                let mut bars = ChartErrorBars::new();
                bars.set_type(ChartErrorBarsType::Custom(range(), range()));
                line.set_y_error_bars(&bars);
            }
        }
        sheet.set_freeze_panes(1, 0)?;
        sheet.insert_chart(rows + 3, 0, &chart)?;
        Ok(())
    }

    fn worksheet(&mut self, name: &str) -> Result<(String, &mut Worksheet)> {
        let sheet = self
            .workbook
            .worksheet_from_name(name)
            .with_context(|| format!("no sheet {name}"))?;
        Ok((name.to_string(), sheet))
    }

    /// Writes the workbook atomically (a temporary file, then a rename).
    pub fn save(mut self, path: &Path) -> Result<()> {
        let bytes = self
            .workbook
            .save_to_buffer()
            .with_context(|| format!("cannot build '{}'", path.display()))?;
        crate::atomic::write_atomic(path, &bytes)
    }
}

/// A series' line: its colour, solid or dashed.
fn stroke(color: u32, dashed: bool) -> ChartLine {
    let mut line = ChartLine::new();
    line.set_width(1.75).set_color(color);
    if dashed {
        line.set_dash_type(ChartLineDashType::Dash);
    }
    line
}

/// Circles on a series' points, or none.
fn marker(on: bool) -> ChartMarker {
    let mut m = ChartMarker::new();
    if on {
        m.set_type(ChartMarkerType::Circle).set_size(5);
    } else {
        m.set_none();
    }
    m
}

/// `a.b.c` keys of a JSON value's leaves.
fn flatten(prefix: &str, value: &serde_json::Value, out: &mut Vec<(String, serde_json::Value)>) {
    match value {
        serde_json::Value::Object(map) => {
            for (k, v) in map {
                let key = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                flatten(&key, v, out);
            }
        }
        serde_json::Value::Array(items) if items.iter().all(|v| !v.is_object()) => {
            let text: Vec<String> = items
                .iter()
                .map(|v| v.as_str().map_or(v.to_string(), String::from))
                .collect();
            out.push((
                prefix.to_string(),
                serde_json::Value::String(text.join(" ")),
            ));
        }
        other => out.push((prefix.to_string(), other.clone())),
    }
}

/// The charts' colours, as the SVG charts use them.
const COLORS: [u32; 8] = [
    0x1f77b4, 0xd62728, 0x2ca02c, 0x9467bd, 0xff7f0e, 0x17becf, 0x8c564b, 0x7f7f7f,
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sheet_names_fit_excels_rules() {
        let mut taken = HashSet::new();
        let long = "concise-adamw-l1-prox-wd0.0001-and-more";
        let a = sheet_name(long, &taken);
        assert_eq!(a.chars().count(), 31);
        taken.insert(a.to_lowercase());
        let b = sheet_name(long, &taken);
        assert!(b.ends_with("~2") && b.chars().count() == 31, "{b}");
        assert_eq!(sheet_name("a/b:c", &HashSet::new()), "a_b_c");
    }
}
