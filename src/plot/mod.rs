//! Line charts as standalone SVG (plotters' SVG backend, no font libraries): the book's
//! figures, drawn beside every CSV curve and for every sweep.
//!
//! Every series is one `<polyline>` of stroke width 2 (axes, ticks and error bars have width 1),
//! solid, or dashed through `stroke-dasharray`, with `<circle>` markers when it has them. The
//! legend sits to the right of the plot, never over the data; its keys are drawn as the series
//! are (a bar, two bars for a dashed series, a dot for marked ones). Axes:
//! - a logarithmic y axis labels its decades in one style (`1e-3`), starts at the decade below
//!   the smallest value and ends a fifth of a decade above the largest;
//! - a logarithmic x axis (`x_log`, for λ) draws 0 one decade left of the smallest positive
//!   value, labelled `0`;
//! - several panels stack vertically under one title (loss and accuracy of a dropout run; one
//!   panel per p2 in a dropout sweep).
use anyhow::{anyhow, Result};
use plotters::coord::Shift;
use plotters::prelude::*;
use std::ops::Range;

mod axes;
use axes::*;

/// One curve of a chart.
#[derive(Debug, Clone)]
pub struct Series {
    pub name: String,
    pub points: Vec<(f64, f64)>,
    /// Index into the palette: series that belong together share a colour.
    pub color: usize,
    /// Circles on the points.
    pub markers: bool,
    /// Drawn dashed (test curves beside solid train curves).
    pub dashed: bool,
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
            dashed: false,
            errors: None,
        }
    }

    pub fn with_markers(mut self) -> Series {
        self.markers = true;
        self
    }

    pub fn dashed(mut self) -> Series {
        self.dashed = true;
        self
    }

    /// ± `errors[i]` at point i.
    pub fn with_errors(mut self, errors: Vec<f64>) -> Series {
        self.errors = Some(errors);
        self
    }
}

/// Titles and axes of a chart (or of one panel).
#[derive(Debug, Clone, Default)]
pub struct Figure {
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    pub log_y: bool,
    /// A logarithmic x axis on which 0 is drawn one decade left of the smallest positive x.
    pub x_log: bool,
    /// Names of the x positions 0, 1, 2, …, instead of numbers.
    pub x_categories: Option<Vec<String>>,
}

impl Figure {
    /// The x value a point at `x` stands for (a category's own value when it is a number).
    pub fn x_value(&self, x: f64) -> f64 {
        match &self.x_categories {
            Some(names) if x >= 0.0 => names
                .get(x.round() as usize)
                .and_then(|n| n.parse().ok())
                .unwrap_or(x),
            _ => x,
        }
    }
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
/// Width of the plot and of the legend beside it, height of a panel, of the title band.
const PLOT_WIDTH: u32 = 640;
const LEGEND_WIDTH: u32 = 250;
const PANEL_HEIGHT: u32 = 400;
const TITLE_HEIGHT: u32 = 34;
/// The opacity that marks a dashed series' polyline until it gets its dash array.
const DASH_MARK: f64 = 0.999;
const DASH_MARK_ATTR: &str = "opacity=\"0.999\"";

fn usable(log_y: bool) -> impl Fn(&(f64, f64)) -> bool {
    move |&(x, y)| x.is_finite() && y.is_finite() && (!log_y || y > 0.0)
}

/// One panel under a title: see [`panels`].
pub fn line_chart(figure: &Figure, series: &[Series]) -> Result<String> {
    panels(&figure.title, &[(figure.clone(), series.to_vec())])
}

/// Panels stacked under `title`, each with its own axes and legend (a panel's own title is
/// drawn only when there are several). NaN and infinite values are left out, and values ≤ 0
/// on a logarithmic y axis.
pub fn panels(title: &str, panels: &[(Figure, Vec<Series>)]) -> Result<String> {
    let height = TITLE_HEIGHT + PANEL_HEIGHT * panels.len().max(1) as u32;
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (PLOT_WIDTH + LEGEND_WIDTH, height))
            .into_drawing_area();
        root.fill(&WHITE).map_err(plot_error)?;
        let (head, body) = root.split_vertically(TITLE_HEIGHT);
        head.draw(&Text::new(
            title.to_string(),
            (12, 8),
            ("sans-serif", 19).into_font(),
        ))
        .map_err(plot_error)?;
        let areas = body.split_evenly((panels.len().max(1), 1));
        for ((figure, series), area) in panels.iter().zip(areas) {
            let caption = (panels.len() > 1).then_some(figure.title.as_str());
            draw_panel(&area, figure, series, caption)?;
        }
        root.present().map_err(plot_error)?;
    }
    Ok(svg.replace(DASH_MARK_ATTR, "opacity=\"1\" stroke-dasharray=\"7 4\""))
}

/// Where `x` is drawn: itself, or on a log axis its log10 with 0 at `zero`.
fn x_position(figure: &Figure, zero: f64) -> impl Fn(f64) -> f64 + '_ {
    move |x| {
        if !figure.x_log {
            x
        } else if x > 0.0 {
            x.log10()
        } else {
            zero
        }
    }
}

fn draw_panel(
    area: &DrawingArea<SVGBackend<'_>, Shift>,
    figure: &Figure,
    series: &[Series],
    caption: Option<&str>,
) -> Result<()> {
    let ok = usable(figure.log_y);
    let smallest_positive = series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.0))
        .filter(|&x| x > 0.0 && x.is_finite())
        .fold(f64::INFINITY, f64::min);
    let zero = if smallest_positive.is_finite() {
        smallest_positive.log10().floor() - 1.0
    } else {
        -1.0
    };
    let tx = x_position(figure, zero);
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
    let (mut xs, mut ys) = (Vec::new(), Vec::new());
    for s in series {
        for (i, p) in s.points.iter().enumerate() {
            if ok(p) {
                xs.push(tx(p.0));
                ys.extend([p.1, spread(s, i, 1.0), spread(s, i, -1.0)]);
            }
        }
    }
    ys.retain(|&y| y.is_finite() && (!figure.log_y || y > 0.0));
    let (x0, x1) = bounds(&xs, 0.0, 1.0);
    let x_pad = if figure.x_categories.is_some() || figure.x_log {
        0.3
    } else {
        (x1 - x0) * 0.03
    };
    let x_range = x0 - x_pad..x1 + x_pad;
    let (plot, legend) = area.split_horizontally(PLOT_WIDTH);
    if figure.log_y {
        let (y0, y1) = bounds(&ys, 0.1, 1.0);
        // The decade below the smallest value, a hair lower so its tick is drawn and labelled.
        let lo = 10f64.powf(y0.log10().floor()) / 1.02;
        let hi = (y1 * 10f64.powf(0.2)).max(lo * 10.0);
        draw_axes(
            &plot,
            figure,
            series,
            caption,
            x_range,
            (lo..hi).log_scale(),
            &tx,
            zero,
        )?;
    } else {
        let (y0, y1) = bounds(&ys, 0.0, 1.0);
        let pad = (y1 - y0) * 0.05;
        draw_axes(
            &plot,
            figure,
            series,
            caption,
            x_range,
            y0 - pad..y1 + pad,
            &tx,
            zero,
        )?;
    }
    draw_legend(&legend, series)
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

#[allow(clippy::too_many_arguments)]
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

    fn texts(svg: &str) -> Vec<String> {
        let doc = roxmltree::Document::parse(svg).unwrap();
        doc.descendants()
            .filter(|n| n.has_tag_name("text"))
            .filter_map(|n| n.text())
            .map(|t| t.trim().to_string())
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
                ..Default::default()
            },
            &[
                Series::line("train", vec![(1.0, 10.0), (2.0, 0.0), (3.0, 0.1)], 0),
                Series::line("test", vec![(1.0, 5.0), (2.0, f64::NAN), (3.0, 1.0)], 1)
                    .with_markers()
                    .dashed(),
            ],
        )
        .unwrap();
        assert_eq!(polylines(&svg), vec![2, 2]);
        assert!(
            svg.contains("t &lt;1&gt; &amp; more"),
            "the title is escaped"
        );
        let doc = roxmltree::Document::parse(&svg).unwrap();
        let dashed = doc
            .descendants()
            .filter(|n| n.has_tag_name("polyline") && n.attribute("stroke-dasharray").is_some())
            .count();
        assert_eq!(
            dashed, 1,
            "the test curve is dashed, the train curve is not"
        );
    }

    /// One tick style on a log axis, the lowest value inside a labelled decade, headroom of a
    /// fifth of a decade.
    #[test]
    fn a_log_axis_labels_its_decades_in_one_style_around_the_data() {
        let svg = line_chart(
            &Figure {
                log_y: true,
                ..Default::default()
            },
            &[Series::line("loss", vec![(1.0, 0.0025), (2.0, 200.0)], 0)],
        )
        .unwrap();
        let labels = texts(&svg);
        for decade in ["1e-3", "1e-2", "1e0", "1e2"] {
            assert!(labels.iter().any(|t| t == decade), "{decade} in {labels:?}");
        }
        assert!(
            !labels
                .iter()
                .any(|t| t == "1e3" || t == "1000" || t == "10000"),
            "{labels:?}"
        );
        assert!(
            !labels.iter().any(|t| t == "100" || t == "0.01"),
            "one style: {labels:?}"
        );
    }

    #[test]
    fn a_log_x_axis_puts_zero_one_decade_left() {
        let svg = line_chart(
            &Figure {
                x_log: true,
                ..Default::default()
            },
            &[Series::line(
                "λ",
                vec![(0.0, 1.0), (0.1, 2.0), (1.0, 3.0), (10.0, 4.0)],
                0,
            )],
        )
        .unwrap();
        let labels = texts(&svg);
        for l in ["0", "1e-1", "1e0", "1e1"] {
            assert!(labels.iter().any(|t| t == l), "{l} in {labels:?}");
        }
        assert_eq!(polylines(&svg), vec![4]);
    }

    #[test]
    fn panels_stack_under_one_title_with_their_own_labels() {
        let svg = panels(
            "run",
            &[
                (
                    Figure {
                        title: "loss".into(),
                        y_label: "loss".into(),
                        ..Default::default()
                    },
                    vec![Series::line("train loss", vec![(1.0, 0.5), (2.0, 0.4)], 0)],
                ),
                (
                    Figure {
                        title: "accuracy".into(),
                        y_label: "accuracy".into(),
                        ..Default::default()
                    },
                    vec![Series::line("test acc", vec![(1.0, 0.8), (2.0, 0.85)], 1)],
                ),
            ],
        )
        .unwrap();
        assert_eq!(polylines(&svg), vec![2, 2]);
        let labels = texts(&svg);
        for l in ["run", "loss", "accuracy", "train loss", "test acc"] {
            assert!(labels.iter().any(|t| t == l), "{l} in {labels:?}");
        }
    }

    #[test]
    fn categories_name_the_x_positions_and_error_bars_are_drawn() {
        let s = Series::line("test", vec![(0.0, 1.0), (1.0, 2.0), (2.0, 1.5)], 0)
            .with_errors(vec![0.1, 0.2, 0.0]);
        let figure = Figure {
            title: "sweep".into(),
            x_label: "λ".into(),
            y_label: "loss".into(),
            x_categories: Some(vec!["0".into(), "0.3".into(), "30".into()]),
            ..Default::default()
        };
        let svg = line_chart(&figure, &[s]).unwrap();
        assert_eq!(polylines(&svg), vec![3]);
        let labels = texts(&svg);
        for name in ["0", "0.3", "30", "λ", "test"] {
            assert!(labels.iter().any(|t| t == name), "{name} in {labels:?}");
        }
        assert_eq!(figure.x_value(2.0), 30.0);
    }

    #[test]
    fn an_empty_or_flat_chart_still_draws() {
        let figure = Figure::default();
        assert!(line_chart(&figure, &[]).is_ok());
        let flat = Series::line("flat", vec![(1.0, 2.0), (2.0, 2.0)], 0);
        assert_eq!(polylines(&line_chart(&figure, &[flat]).unwrap()), vec![2]);
    }
}
