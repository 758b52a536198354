//! The files as real clients read them: LibreOffice Calc opens every `results.xlsx` under a
//! German locale with exactly the CSV files' numbers and finds a chart on every curve sheet (and
//! prints it to PDF); librsvg renders every SVG. `.ci/run` installs both (Debian's
//! `libreoffice-calc-nogui`, `librsvg2-bin`, `poppler-utils`); elsewhere the tests skip, with a
//! message, when a tool is missing.
mod common;

use common::*;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A tool on PATH, or `None` (test skipped) outside CI; under CI a missing tool fails.
fn tool(name: &str) -> Option<PathBuf> {
    let found = which(name);
    if found.is_none() {
        skip_outside_ci(&format!("{name} is not installed (.ci/run installs it)"));
    }
    found
}

/// Runs LibreOffice headless under a German locale: `soffice --convert-to <to> <file>` into
/// `out`, with a profile of its own (so tests running at once do not share one).
fn soffice(soffice: &Path, file: &Path, to: &str, out: &Path) {
    let profile = tempfile::tempdir().unwrap();
    let o = Command::new(soffice)
        .env("LANG", "de_DE.UTF-8")
        .env("LC_ALL", "de_DE.UTF-8")
        .arg(format!(
            "-env:UserInstallation=file://{}",
            profile.path().display()
        ))
        .args(["--headless", "--norestore", "--convert-to", to, "--outdir"])
        .arg(out)
        .arg(file)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "soffice --convert-to {to} {}: {}",
        file.display(),
        stderr(&o)
    );
}

/// One sheet as LibreOffice read it: its rows of cells (a number, or text).
#[derive(Debug)]
enum Value {
    Number(f64),
    Text(String),
}

/// The sheets of a flat ODS document: for each, its rows, and how many charts it holds.
fn read_fods(path: &Path) -> HashMap<String, (Vec<Vec<Value>>, usize)> {
    let text = std::fs::read_to_string(path).unwrap();
    let doc = roxmltree::Document::parse(&text).unwrap();
    let mut sheets = HashMap::new();
    for table in doc.descendants().filter(|n| {
        n.has_tag_name("table")
            && n.tag_name().namespace() == Some("urn:oasis:names:tc:opendocument:xmlns:table:1.0")
    }) {
        let name = table
            .attributes()
            .find(|a| a.name() == "name")
            .map(|a| a.value().to_string())
            .unwrap_or_default();
        if name == "local-table" {
            continue; // a chart's own copy of its data
        }
        let attr = |n: roxmltree::Node, key: &str| {
            n.attributes()
                .find(|a| a.name() == key)
                .map(|a| a.value().to_string())
        };
        let mut rows = Vec::new();
        for row in table.children().filter(|n| n.has_tag_name("table-row")) {
            let mut cells = Vec::new();
            for cell in row.children().filter(|n| n.has_tag_name("table-cell")) {
                let repeat: usize = attr(cell, "number-columns-repeated")
                    .and_then(|r| r.parse().ok())
                    .unwrap_or(1);
                let value = match attr(cell, "value-type").as_deref() {
                    Some("float") | Some("percentage") => {
                        Value::Number(attr(cell, "value").unwrap().parse().unwrap())
                    }
                    Some(_) => Value::Text(
                        cell.descendants()
                            .filter(|n| n.has_tag_name("p"))
                            .map(|p| {
                                p.descendants()
                                    .filter(|n| n.is_text())
                                    .map(|n| n.text().unwrap_or(""))
                                    .collect::<String>()
                            })
                            .collect::<Vec<_>>()
                            .join("\n"),
                    ),
                    None => Value::Text(String::new()),
                };
                if repeat > 100 {
                    break; // the empty rest of the row
                }
                for _ in 0..repeat {
                    cells.push(match &value {
                        Value::Number(v) => Value::Number(*v),
                        Value::Text(t) => Value::Text(t.clone()),
                    });
                }
            }
            while matches!(cells.last(), Some(Value::Text(t)) if t.is_empty()) {
                cells.pop();
            }
            if !cells.is_empty() {
                rows.push(cells);
            }
        }
        let charts = table
            .descendants()
            .filter(|n| {
                n.has_tag_name("chart")
                    && n.tag_name()
                        .namespace()
                        .is_some_and(|ns| ns.contains(":chart:"))
            })
            .count();
        sheets.insert(name, (rows, charts));
    }
    sheets
}

/// `rows` (as LibreOffice read them) hold the CSV file's header and values: every number to
/// the 15 significant digits LibreOffice keeps when it saves (the workbook itself holds the
/// exact floats: [`assert_xlsx_holds_the_csv`]).
fn assert_sheet_is_the_csv(sheet: &str, rows: &[Vec<Value>], csv_path: &Path) {
    let (header, records) = read_csv(csv_path);
    assert_eq!(rows.len(), records.len() + 1, "{sheet}: rows");
    for (c, h) in header.iter().enumerate() {
        assert!(
            matches!(&rows[0][c], Value::Text(t) if t == h),
            "{sheet}: header {h} vs {:?}",
            rows[0][c]
        );
    }
    for (r, record) in records.iter().enumerate() {
        for (c, field) in record.iter().enumerate() {
            let cell = &rows[r + 1][c];
            match (field.parse::<f64>(), cell) {
                (Ok(v), Value::Number(w)) => assert!(
                    (v - w).abs() <= 1e-14 * v.abs(),
                    "{sheet} row {} {}: CSV {field} vs LibreOffice {w}",
                    r + 1,
                    header[c]
                ),
                (Err(_), Value::Text(t)) => assert_eq!(t, field, "{sheet} row {}", r + 1),
                _ => panic!(
                    "{sheet} row {} {}: CSV {field} vs {cell:?}",
                    r + 1,
                    header[c]
                ),
            }
        }
    }
}

/// A file inside an .xlsx (a zip), as text.
fn xlsx_part(xlsx: &Path, part: &str) -> String {
    let o = Command::new("unzip")
        .arg("-p")
        .arg(xlsx)
        .arg(part)
        .output()
        .unwrap();
    assert!(o.status.success(), "unzip {part}: {}", stderr(&o));
    String::from_utf8(o.stdout).unwrap()
}

/// The cell values of the sheet named `sheet` of an .xlsx file, by reference (`B2`), as the
/// file stores them.
fn xlsx_values(xlsx: &Path, sheet: &str) -> HashMap<String, String> {
    let book = xlsx_part(xlsx, "xl/workbook.xml");
    let doc = roxmltree::Document::parse(&book).unwrap();
    let n = 1 + doc
        .descendants()
        .filter(|s| s.has_tag_name("sheet"))
        .position(|s| s.attribute("name") == Some(sheet))
        .unwrap_or_else(|| panic!("no sheet {sheet} in {}", xlsx.display()));
    let text = xlsx_part(xlsx, &format!("xl/worksheets/sheet{n}.xml"));
    let doc = roxmltree::Document::parse(&text).unwrap();
    doc.descendants()
        .filter(|c| c.has_tag_name("c") && c.attribute("t").is_none())
        .filter_map(|c| {
            let v = c.children().find(|v| v.has_tag_name("v"))?.text()?;
            Some((c.attribute("r")?.to_string(), v.to_string()))
        })
        .collect()
}

/// Every number of the CSV file is, as a float, exactly the number in the workbook's cell.
fn assert_xlsx_holds_the_csv(xlsx: &Path, sheet: &str, csv_path: &Path) {
    let cells = xlsx_values(xlsx, sheet);
    let (header, records) = read_csv(csv_path);
    for (r, record) in records.iter().enumerate() {
        for (c, field) in record.iter().enumerate() {
            if let Ok(v) = field.parse::<f64>() {
                let reference = format!("{}{}", (b'A' + c as u8) as char, r + 2);
                let stored: f64 = cells[&reference].parse().unwrap();
                assert!(
                    stored == v,
                    "{} {reference} ({}): CSV {field}, workbook {stored}",
                    csv_path.display(),
                    header[c]
                );
            }
        }
    }
}

/// Both experiments (two dropout epochs), then every workbook through LibreOffice.
#[test]
fn workbooks_open_in_libreoffice_with_the_csvs_numbers_under_a_german_locale() {
    let (Some(office), Some(pdftotext), Some(_)) =
        (tool("soffice"), tool("pdftotext"), tool("unzip"))
    else {
        return;
    };
    let Some(data) = real_data_dir() else { return };
    let out = tempfile::tempdir().unwrap();
    let o = run_on_cpu(out.path(), &["--quiet", "weight-decay"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let args = [
        "--quiet",
        "dropout",
        "--epochs",
        "2",
        "--impl",
        "concise",
        "--data-dir",
    ];
    let o = run_on_cpu(out.path(), &[&args[..], &[data.to_str().unwrap()]].concat());
    assert!(o.status.success(), "{}", stderr(&o));
    for (experiment, curves, charts_per_curve) in [
        (
            "weight-decay",
            &["scratch-wd0", "scratch-wd3", "concise-wd0", "concise-wd3"][..],
            1,
        ),
        ("dropout", &["concise"][..], 2),
    ] {
        let dir = out.path().join(experiment);
        let converted = tempfile::tempdir().unwrap();
        let xlsx = dir.join("results.xlsx");
        soffice(&office, &xlsx, "fods", converted.path());
        let sheets = read_fods(&converted.path().join("results.fods"));
        let (summary, _) = &sheets["summary"];
        assert_sheet_is_the_csv("summary", summary, &dir.join("summary.csv"));
        assert_xlsx_holds_the_csv(&xlsx, "summary", &dir.join("summary.csv"));
        for curve in curves {
            let (rows, charts) = &sheets[*curve];
            assert_sheet_is_the_csv(curve, rows, &dir.join(format!("{curve}.csv")));
            assert_xlsx_holds_the_csv(&xlsx, curve, &dir.join(format!("{curve}.csv")));
            assert_eq!(
                *charts, charts_per_curve,
                "{experiment}/{curve}: its native charts"
            );
        }
        assert!(sheets.contains_key("run"), "the configuration sheet");

        // The same workbook exported as CSV by a German LibreOffice: decimal commas, and no
        // value misread (0,838 is 0.838, never 838).
        soffice(
            &office,
            &xlsx,
            "csv:Text - txt - csv (StarCalc):59,34,76,1,,0,false,true,false,false,false,-1",
            converted.path(),
        );
        let german = std::fs::read_to_string(converted.path().join("results-summary.csv")).unwrap();
        let (header, records) = read_csv(&dir.join("summary.csv"));
        for (line, record) in german.lines().skip(1).zip(&records) {
            for ((field, theirs), h) in record.iter().zip(line.split(';')).zip(&header) {
                if let Ok(v) = field.parse::<f64>() {
                    let theirs: f64 = theirs.trim_matches('"').replace(',', ".").parse().unwrap();
                    assert!(
                        (theirs - v).abs() <= 1e-14 * v.abs(),
                        "{experiment} {h}: {field} became {theirs} in German"
                    );
                }
            }
        }

        // And printed: every curve's chart is drawn in the PDF (its title is on the page).
        soffice(&office, &xlsx, "pdf", converted.path());
        let pdf = converted.path().join("results.pdf");
        let o = Command::new(&pdftotext)
            .arg(&pdf)
            .arg("-")
            .output()
            .unwrap();
        assert!(o.status.success());
        let text = stdout(&o);
        let titles = text.matches(match experiment {
            "weight-decay" => "weight decay, ",
            _ => "dropout (0.2, 0.5), concise",
        });
        assert!(
            titles.count() >= curves.len() * charts_per_curve,
            "{experiment}: chart titles in the PDF:\n{text}"
        );
    }
}

/// Every SVG the commands draw — curves, overviews, sweep figures, activations — renders with
/// librsvg.
#[test]
fn every_svg_renders_with_librsvg() {
    let Some(rsvg) = tool("rsvg-convert") else {
        return;
    };
    let Some(data) = real_data_dir() else { return };
    let data = data.to_str().unwrap();
    let out = tempfile::tempdir().unwrap();
    for args in [
        &["weight-decay"][..],
        &[
            "sweep",
            "weight-decay",
            "--wd",
            "0,0.3,3",
            "--optimizer",
            "sgd,adamw",
            "--seeds",
            "0,1",
        ][..],
        &[
            "dropout",
            "--epochs",
            "1",
            "--impl",
            "concise",
            "--track-activations",
            "--data-dir",
            data,
        ][..],
        &[
            "sweep",
            "dropout",
            "--engine",
            "fused",
            "--impl",
            "concise",
            "--epochs",
            "1",
            "--dropout1",
            "0,0.5",
            "--dropout2",
            "0,0.5",
            "--wd",
            "0,0.001",
            "--data-dir",
            data,
        ][..],
    ] {
        let o = run_on_cpu(out.path(), &[&["--quiet"][..], args].concat());
        assert!(o.status.success(), "{args:?}: {}", stderr(&o));
    }
    let svgs: Vec<PathBuf> = files_under(out.path())
        .into_iter()
        .filter(|f| f.extension().is_some_and(|e| e == "svg"))
        .collect();
    assert!(svgs.len() >= 13, "{svgs:?}");
    let png = out.path().join("rendered.png");
    for svg in svgs {
        let o = Command::new(&rsvg)
            .arg(out.path().join(&svg))
            .arg("-o")
            .arg(&png)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}: {}", svg.display(), stderr(&o));
        assert!(
            std::fs::metadata(&png).unwrap().len() > 1000,
            "{}",
            svg.display()
        );
    }
}
