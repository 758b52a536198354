//! The axes, ticks and legend of a panel: logarithmic decades in one style, λ's 0 drawn a
//! decade apart, the legend's keys drawn as the series are.
use super::*;

/// Draws one panel: its axes, ticks, grid, series and legend on `area`.
#[allow(clippy::too_many_arguments)]
pub(super) fn draw_axes<Y>(
    area: &DrawingArea<SVGBackend<'_>, Shift>,
    figure: &Figure,
    series: &[Series],
    caption: Option<&str>,
    x_range: Range<f64>,
    y_range: Y,
    tx: &dyn Fn(f64) -> f64,
    zero: f64,
) -> Result<()>
where
    Y: plotters::coord::ranged1d::AsRangedCoord<Value = f64>,
    Y::CoordDescType: plotters::coord::ranged1d::ValueFormatter<f64>,
{
    let mut builder = ChartBuilder::on(area);
    if let Some(caption) = caption {
        builder.caption(caption, ("sans-serif", 15));
    }
    let mut chart = builder
        .margin(10)
        .x_label_area_size(42)
        .y_label_area_size(66)
        .build_cartesian_2d(x_range.clone(), y_range)
        .map_err(plot_error)?;
    let categories = figure.x_categories.clone();
    let x_log = figure.x_log;
    let x_format = move |x: &f64| match &categories {
        Some(names) => {
            let i = x.round();
            if (x - i).abs() < 1e-6 && i >= 0.0 {
                names.get(i as usize).cloned().unwrap_or_default()
            } else {
                String::new()
            }
        }
        None if x_log => {
            if (x - zero).abs() < 1e-6 {
                "0".into()
            } else if (x - x.round()).abs() < 1e-6 && *x > zero {
                decade(x.round() as i32)
            } else {
                String::new()
            }
        }
        None => tick(*x),
    };
    let log_y = figure.log_y;
    let y_format = move |y: &f64| if log_y { log_tick(*y) } else { tick(*y) };
    let mut mesh = chart.configure_mesh();
    mesh.x_desc(figure.x_label.as_str())
        .y_desc(figure.y_label.as_str())
        .x_label_formatter(&x_format)
        .y_label_formatter(&y_format)
        .axis_desc_style(("sans-serif", 14))
        .light_line_style(WHITE.mix(0.0))
        .bold_line_style(BLACK.mix(0.08));
    if let Some(names) = &figure.x_categories {
        mesh.x_labels(names.len() * 2 + 3);
    } else if figure.x_log {
        let span = (x_range.end - x_range.start).ceil() as usize;
        mesh.x_labels(span * 4 + 1);
    }
    mesh.draw().map_err(plot_error)?;

    let ok = usable(figure.log_y);
    for s in series {
        let color = PALETTE[s.color % PALETTE.len()];
        let points: Vec<(f64, f64)> = s
            .points
            .iter()
            .copied()
            .filter(&ok)
            .map(|(x, y)| (tx(x), y))
            .collect();
        let style = if s.dashed {
            color.mix(DASH_MARK).stroke_width(2)
        } else {
            color.stroke_width(2)
        };
        let line = LineSeries::new(points.clone(), style);
        let line = if s.markers { line.point_size(3) } else { line };
        chart.draw_series(line).map_err(plot_error)?;
        if let Some(errors) = &s.errors {
            let bars = s.points.iter().zip(errors).filter_map(|(&(x, y), &e)| {
                let lo = if figure.log_y && y - e <= 0.0 {
                    y
                } else {
                    y - e
                };
                (ok(&(x, y)) && e.is_finite() && e > 0.0)
                    .then(|| ErrorBar::new_vertical(tx(x), lo, y, y + e, color.stroke_width(1), 8))
            });
            chart.draw_series(bars).map_err(plot_error)?;
        }
    }
    Ok(())
}

/// The legend to the right of the plot: each series' key drawn as the series is, and its name.
pub(super) fn draw_legend(
    area: &DrawingArea<SVGBackend<'_>, Shift>,
    series: &[Series],
) -> Result<()> {
    for (i, s) in series.iter().enumerate() {
        let color = PALETTE[s.color % PALETTE.len()];
        let y = 24 + 19 * i as i32;
        if s.dashed {
            for x in [4, 16] {
                area.draw(&Rectangle::new(
                    [(x, y - 1), (x + 8, y + 1)],
                    color.filled(),
                ))
                .map_err(plot_error)?;
            }
        } else {
            area.draw(&Rectangle::new([(4, y - 1), (28, y + 1)], color.filled()))
                .map_err(plot_error)?;
        }
        if s.markers {
            area.draw(&Circle::new((16, y), 3, color.filled()))
                .map_err(plot_error)?;
        }
        area.draw(&Text::new(
            s.name.clone(),
            (36, y - 7),
            ("sans-serif", 12).into_font(),
        ))
        .map_err(plot_error)?;
    }
    Ok(())
}

/// A decade's label on a logarithmic axis: `1e-3`, `1e0`, `1e2`.
pub(super) fn decade(k: i32) -> String {
    format!("1e{k}")
}

/// A tick on a logarithmic axis, in one style: `1e-3`, `2e-3`, `1e2` (powers of ten and their
/// multiples).
pub(super) fn log_tick(v: f64) -> String {
    if v <= 0.0 || !v.is_finite() {
        return String::new();
    }
    let k = v.log10().floor() as i32;
    let m = (v / 10f64.powi(k) * 100.0).round() / 100.0;
    if (m - 1.0).abs() < 1e-9 {
        decade(k)
    } else {
        format!("{}e{k}", tick(m))
    }
}

/// A tick label on a linear axis: short, without trailing zeros.
pub(super) fn tick(v: f64) -> String {
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
