//! Line charts as standalone SVG (plotters' SVG backend, no font libraries): the book's
//! figures, drawn beside every CSV curve and for every sweep.
//!
//! Every series is one `<polyline>` of stroke width 2 (axes, ticks and error bars have width 1),
//! with `<circle>` markers when it has them; legend keys are a short bar (and a dot for marked
//! series), so the charts are easy to check.
use anyhow::{anyhow, Result};
use plotters::coord::ranged1d::{AsRangedCoord, ValueFormatter};
use plotters::prelude::*;
use std::ops::Range;

/// One curve of a chart.
#[derive(Debug, Clone)]
pub struct Series {
    pub name: String,
    pub points: Vec<(f64, f64)>,
    /// Index into the palette: series that belong together share a colour.
    pub color: usize,
    /// Circles on the points (the book draws test curves differently from train curves).
    pub markers: bool,
    /// A ± error bar at every point (standard deviations over seeds).
    pub errors: Option<Vec<f64>>,
}

impl Series {
    pub fn line(name: impl Into<String>, points: Vec<(f64, f64)>, color: usize) -> Series {
        Series {
            name: name.into(),
            points,
            color,
            markers: false,
            errors: None,
        }
    }

    pub fn with_markers(mut self) -> Series {
        self.markers = true;
        self
    }

    /// ± `errors[i]` at point i.
    pub fn with_errors(mut self, errors: Vec<f64>) -> Series {
        self.errors = Some(errors);
        self
    }
}

/// Titles and axes of a chart.
#[derive(Debug, Clone, Default)]
pub struct Figure {
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    pub log_y: bool,
    /// Names of the x positions 0, 1, 2, … (a sweep's settings), instead of numbers.
    pub x_categories: Option<Vec<String>>,
}

const PALETTE: [RGBColor; 8] = [
    RGBColor(0x1f, 0x77, 0xb4),
    RGBColor(0xd6, 0x27, 0x28),
    RGBColor(0x2c, 0xa0, 0x2c),
    RGBColor(0x94, 0x67, 0xbd),
    RGBColor(0xff, 0x7f, 0x0e),
    RGBColor(0x17, 0xbe, 0xcf),
    RGBColor(0x8c, 0x56, 0x4b),
    RGBColor(0x7f, 0x7f, 0x7f),
];
const SIZE: (u32, u32) = (720, 450);

fn usable(log_y: bool) -> impl Fn(&(f64, f64)) -> bool {
    move |&(x, y)| x.is_finite() && y.is_finite() && (!log_y || y > 0.0)
}

/// The chart as an SVG document. With `log_y` the y axis is logarithmic and values ≤ 0 are
/// left out; NaN and infinite values are always left out.
pub fn line_chart(figure: &Figure, series: &[Series]) -> Result<String> {
    let ok = usable(figure.log_y);
    let spread = |s: &Series, i: usize, sign: f64| {
        let y = s.points[i].1;
        let e = s
            .errors
            .as_ref()
            .and_then(|e| e.get(i))
            .copied()
            .unwrap_or(0.0);
        y + sign * if e.is_finite() { e } else { 0.0 }
    };
    let mut ys = Vec::new();
    let mut xs = Vec::new();
    for s in series {
        for (i, p) in s.points.iter().enumerate() {
            if ok(p) {
                xs.push(p.0);
                ys.extend([p.1, spread(s, i, 1.0), spread(s, i, -1.0)]);
            }
        }
    }
    ys.retain(|&y| y.is_finite() && (!figure.log_y || y > 0.0));
    let (x0, x1) = bounds(&xs, 0.0, 1.0);
    let (x0, x1) = if figure.x_categories.is_some() {
        (x0 - 0.3, x1 + 0.3)
    } else {
        (x0, x1)
    };
    // Room above the data for the legend (upper right): its share of the plot's height.
    let legend = ((18 * series.len() + 20) as f64 / 340.0).min(0.6);
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, SIZE).into_drawing_area();
        root.fill(&WHITE).map_err(plot_error)?;
        if figure.log_y {
            let (y0, y1) = bounds(&ys, 0.1, 1.0);
            let (l0, l1) = ((y0 / 1.5).log10(), (y1 * 1.5).log10());
            let top = 10f64.powf(l0 + (l1 - l0) / (1.0 - legend));
            draw(&root, figure, series, x0..x1, (y0 / 1.5..top).log_scale())?;
        } else {
            let (y0, y1) = bounds(&ys, 0.0, 1.0);
            let pad = (y1 - y0) * 0.05;
            let (y0, y1) = (y0 - pad, y1 + pad);
            draw(
                &root,
                figure,
                series,
                x0..x1,
                y0..y0 + (y1 - y0) / (1.0 - legend),
            )?;
        }
        root.present().map_err(plot_error)?;
    }
    Ok(svg)
}

/// The smallest and largest value, widened when they coincide; `lo..hi` when there is none.
fn bounds(values: &[f64], lo: f64, hi: f64) -> (f64, f64) {
    let min = values.iter().copied().fold(f64::INFINITY, f64::min);
    let max = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if !min.is_finite() || !max.is_finite() {
        (lo, hi)
    } else if max > min {
        (min, max)
    } else if min > 0.0 {
        (min / 2.0, max * 2.0)
    } else {
        (min - 1.0, max + 1.0)
    }
}

fn plot_error<E: std::fmt::Debug>(e: E) -> anyhow::Error {
    anyhow!("cannot draw the chart: {e:?}")
}

fn draw<Y>(
    root: &DrawingArea<SVGBackend<'_>, plotters::coord::Shift>,
    figure: &Figure,
    series: &[Series],
    x_range: Range<f64>,
    y_range: Y,
) -> Result<()>
where
    Y: AsRangedCoord<Value = f64>,
    Y::CoordDescType: ValueFormatter<f64>,
{
    let mut chart = ChartBuilder::on(root)
        .caption(&figure.title, ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(64)
        .build_cartesian_2d(x_range, y_range)
        .map_err(plot_error)?;
    let categories = figure.x_categories.clone();
    let x_format = move |x: &f64| match &categories {
        Some(names) => {
            let i = x.round();
            if (x - i).abs() < 1e-6 && i >= 0.0 {
                names.get(i as usize).cloned().unwrap_or_default()
            } else {
                String::new()
            }
        }
        None => tick(*x),
    };
    let mut mesh = chart.configure_mesh();
    mesh.x_desc(figure.x_label.as_str())
        .y_desc(figure.y_label.as_str())
        .x_label_formatter(&x_format)
        .light_line_style(WHITE.mix(0.0))
        .bold_line_style(BLACK.mix(0.08));
    if let Some(names) = &figure.x_categories {
        mesh.x_labels(names.len() * 2 + 3);
    }
    mesh.y_label_formatter(&|y: &f64| tick(*y));
    mesh.draw().map_err(plot_error)?;

    let ok = usable(figure.log_y);
    for s in series {
        let color = PALETTE[s.color % PALETTE.len()];
        let points: Vec<(f64, f64)> = s.points.iter().copied().filter(&ok).collect();
        let line = LineSeries::new(points.clone(), color.stroke_width(2));
        let line = if s.markers { line.point_size(2) } else { line };
        let markers = s.markers;
        chart
            .draw_series(line)
            .map_err(plot_error)?
            .label(s.name.as_str())
            .legend(move |(x, y)| {
                let key = Rectangle::new([(x, y - 1), (x + 18, y + 1)], color.filled());
                let dot = Circle::new((x + 9, y), if markers { 3 } else { 0 }, color.filled());
                EmptyElement::at((0, 0)) + key + dot
            });
        if let Some(errors) = &s.errors {
            let bars = s.points.iter().zip(errors).filter_map(|(&(x, y), &e)| {
                let lo = if figure.log_y && y - e <= 0.0 {
                    y
                } else {
                    y - e
                };
                (ok(&(x, y)) && e.is_finite() && e > 0.0)
                    .then(|| ErrorBar::new_vertical(x, lo, y, y + e, color.stroke_width(1), 8))
            });
            chart.draw_series(bars).map_err(plot_error)?;
        }
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK.mix(0.3))
        .label_font(("sans-serif", 13))
        .draw()
        .map_err(plot_error)?;
    Ok(())
}

/// A tick label: short, without trailing zeros.
fn tick(v: f64) -> String {
    if v != 0.0 && (v.abs() < 1e-3 || v.abs() >= 1e5) {
        format!("{v:.0e}")
    } else {
        let s = format!("{v:.4}");
        let s = s.trim_end_matches('0').trim_end_matches('.');
        if s == "-0" {
            "0".into()
        } else {
            s.into()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn polylines(svg: &str) -> Vec<usize> {
        let doc = roxmltree::Document::parse(svg).expect("well-formed XML");
        doc.descendants()
            .filter(|n| n.has_tag_name("polyline") && n.attribute("stroke-width") == Some("2"))
            .map(|n| {
                n.attribute("points")
                    .unwrap_or("")
                    .split_whitespace()
                    .count()
            })
            .collect()
    }

    #[test]
    fn draws_every_series_and_skips_values_a_log_axis_cannot_show() {
        let svg = line_chart(
            &Figure {
                title: "t <1> & more".into(),
                x_label: "epoch".into(),
                y_label: "loss".into(),
                log_y: true,
                x_categories: None,
            },
            &[
                Series::line("train", vec![(1.0, 10.0), (2.0, 0.0), (3.0, 0.1)], 0),
                Series::line("test", vec![(1.0, 5.0), (2.0, f64::NAN), (3.0, 1.0)], 1)
                    .with_markers(),
            ],
        )
        .unwrap();
        assert_eq!(polylines(&svg), vec![2, 2]);
        assert!(
            svg.contains("t &lt;1&gt; &amp; more"),
            "the title is escaped"
        );
    }

    #[test]
    fn categories_name_the_x_positions_and_error_bars_are_drawn() {
        let s = Series::line("test", vec![(0.0, 1.0), (1.0, 2.0), (2.0, 1.5)], 0)
            .with_errors(vec![0.1, 0.2, 0.0]);
        let svg = line_chart(
            &Figure {
                title: "sweep".into(),
                x_label: "λ".into(),
                y_label: "loss".into(),
                log_y: false,
                x_categories: Some(vec!["0".into(), "0.3".into(), "30".into()]),
            },
            &[s],
        )
        .unwrap();
        assert_eq!(polylines(&svg), vec![3]);
        let doc = roxmltree::Document::parse(&svg).unwrap();
        let texts: Vec<&str> = doc
            .descendants()
            .filter(|n| n.has_tag_name("text"))
            .filter_map(|n| n.text())
            .map(str::trim)
            .collect();
        for name in ["0", "0.3", "30", "λ", "test"] {
            assert!(texts.contains(&name), "{name} in {texts:?}");
        }
    }

    #[test]
    fn an_empty_or_flat_chart_still_draws() {
        let figure = Figure::default();
        assert!(line_chart(&figure, &[]).is_ok());
        let flat = Series::line("flat", vec![(1.0, 2.0), (2.0, 2.0)], 0);
        assert_eq!(polylines(&line_chart(&figure, &[flat]).unwrap()), vec![2]);
    }
}
