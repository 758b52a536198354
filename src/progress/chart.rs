//! The book's `d2l.Animator`, drawn in a terminal: a run's curves as its epochs end, as the
//! book's figure forms in the notebook. ratatui's `Chart` renders into an in-memory buffer,
//! which becomes lines of text (with colours unless `NO_COLOR`); the `inline` module writes them.
use ratatui::buffer::Buffer;
use ratatui::layout::{Constraint, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::symbols::Marker;
use ratatui::text::Line;
use ratatui::widgets::{Axis, Block, Chart, Dataset, GraphType, LegendPosition, Widget};

/// What a run's figure shows: the book's `d2l.Animator(xlabel='epochs', ylabel=…, yscale=…,
/// legend=[…])`.
#[derive(Debug, Clone, PartialEq)]
pub struct Figure {
    /// The run: section, version, λ or the rates, seed.
    pub title: String,
    pub y_label: &'static str,
    /// The series, in the order of the values each epoch brings.
    pub legend: Vec<String>,
    /// `yscale='log'` (weight decay's losses); else linear from 0 (dropout's loss and
    /// accuracies, as `train_ch3`'s animator).
    pub log_y: bool,
    /// The x axis runs from epoch 1 to this.
    pub epochs: usize,
}

/// The colours of the series, in order (the book's: blue, then the next of matplotlib's cycle).
const COLORS: [Color; 6] = [
    Color::Cyan,
    Color::Magenta,
    Color::Yellow,
    Color::Green,
    Color::Red,
    Color::Blue,
];
/// Without colours the series differ by their marks.
const MARKS: [Marker; 3] = [Marker::Dot, Marker::Bar, Marker::Block];
/// The mark symbols as drawn (for readers of a captured screen: the tests).
pub const MARK_SYMBOLS: [&str; 3] = ["•", "▄", "█"];

/// A figure with the points so far.
#[derive(Debug, Clone)]
pub struct Curves {
    pub figure: Figure,
    points: Vec<Vec<(f64, f64)>>,
}

impl Curves {
    pub fn new(figure: Figure) -> Curves {
        let points = vec![Vec::new(); figure.legend.len()];
        Curves { figure, points }
    }

    /// `animator.add(epoch, values)`: one value per series; those a log axis cannot show
    /// (0, negative, NaN) are left out.
    pub fn add(&mut self, epoch: usize, values: &[f64]) {
        for (series, &v) in self.points.iter_mut().zip(values) {
            let y = if self.figure.log_y { v.log10() } else { v };
            if y.is_finite() {
                series.push((epoch as f64, y));
            }
        }
    }

    /// The y axis: bounds and evenly spaced labels that fall on them.
    fn y_axis(&self) -> ([f64; 2], Vec<String>) {
        let ys = self.points.iter().flatten().map(|p| p.1);
        let (lo, hi) = ys.fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), y| {
            (a.min(y), b.max(y))
        });
        if self.figure.log_y {
            // Whole decades, labelled in one style (1e-3), at most 6 labels.
            let top = if hi.is_finite() { hi } else { 0.0 };
            let (lo, hi) = if lo.is_finite() {
                (lo.floor(), hi.ceil().max(lo.floor() + 1.0))
            } else {
                (-1.0, 1.0)
            };
            let step = ((hi - lo) / 5.0).ceil().max(1.0);
            let mut hi = lo + step * ((hi - lo) / step).ceil();
            // Room above the curves for the axis's title.
            if hi - top < 0.08 * (hi - lo) {
                hi += step;
            }
            let n = ((hi - lo) / step) as usize;
            let labels = (0..=n)
                .map(|i| format!("1e{}", (lo + step * i as f64) as i64))
                .collect();
            ([lo, hi], labels)
        } else {
            // From 0 to 1, or to the next half above the largest value, with room above the
            // curves for the axis's title.
            let max = if hi.is_finite() { hi.max(0.0) } else { 1.0 };
            let halves = ((max * 2.0).ceil() as usize).max(2);
            let step = halves.div_ceil(4).max(1);
            let mut n = halves.div_ceil(step);
            if (n * step) as f64 / 2.0 - max < 0.08 * (n * step) as f64 / 2.0 {
                n += 1;
            }
            let labels = (0..=n)
                .map(|i| format!("{:.1}", (i * step) as f64 / 2.0))
                .collect();
            ([0.0, (n * step) as f64 / 2.0], labels)
        }
    }

    /// The x axis: epoch 1 to the run's last, labelled at both ends, its title between them
    /// (an axis title would be drawn over the curves' ends).
    fn x_axis(&self) -> ([f64; 2], Vec<String>) {
        let n = self.figure.epochs.max(2);
        let labels = vec!["1".to_string(), "epochs".to_string(), n.to_string()];
        ([1.0, n as f64], labels)
    }

    /// The figure drawn into `width` × `height` cells: the lines of text, each at most `width`
    /// characters, with colours when `color`.
    pub fn render(&self, width: u16, height: u16, color: bool) -> Vec<String> {
        let area = Rect::new(0, 0, width, height);
        let mut buffer = Buffer::empty(area);
        let (x_bounds, x_labels) = self.x_axis();
        let (y_bounds, y_labels) = self.y_axis();
        let style = |i: usize| match color {
            true => Style::default().fg(COLORS[i % COLORS.len()]),
            false => Style::default(),
        };
        let mark = |i: usize| match color {
            true => Marker::Dot,
            false => MARKS[i % MARKS.len()],
        };
        let symbol = |i: usize| match color {
            true => MARK_SYMBOLS[0],
            false => MARK_SYMBOLS[i % MARKS.len()],
        };
        let mut datasets = Vec::new();
        // The lines first (no legend entry), then each epoch's mark over them.
        for (i, points) in self.points.iter().enumerate() {
            datasets.push(
                Dataset::default()
                    .marker(Marker::Braille)
                    .graph_type(GraphType::Line)
                    .style(style(i))
                    .data(points),
            );
        }
        for (i, (points, name)) in self.points.iter().zip(&self.figure.legend).enumerate() {
            datasets.push(
                Dataset::default()
                    .name(format!("{} {name}", symbol(i)))
                    .marker(mark(i))
                    .graph_type(GraphType::Scatter)
                    .style(style(i))
                    .data(points),
            );
        }
        let bold = match color {
            true => Style::default().add_modifier(Modifier::BOLD),
            false => Style::default(),
        };
        let title = Line::styled(format!(" {} ", self.figure.title), bold);
        Chart::new(datasets)
            .block(Block::bordered().title(title))
            .x_axis(Axis::default().bounds(x_bounds).labels(x_labels))
            .y_axis(
                Axis::default()
                    .title(self.figure.y_label)
                    .bounds(y_bounds)
                    .labels(y_labels),
            )
            .legend_position(Some(LegendPosition::BottomLeft))
            .hidden_legend_constraints((Constraint::Percentage(60), Constraint::Percentage(60)))
            .render(area, &mut buffer);
        lines(&buffer, color)
    }
}

/// A buffer's rows as text: trailing blanks trimmed, colours as SGR sequences when `color`.
fn lines(buffer: &Buffer, color: bool) -> Vec<String> {
    let area = buffer.area;
    (0..area.height)
        .map(|y| {
            let cells: Vec<_> = (0..area.width).map(|x| &buffer[(x, y)]).collect();
            let used = cells
                .iter()
                .rposition(|c| c.symbol() != " ")
                .map_or(0, |i| i + 1);
            let mut line = String::new();
            let mut current = (Color::Reset, Modifier::empty());
            for cell in &cells[..used] {
                if color && (cell.fg, cell.modifier) != current {
                    current = (cell.fg, cell.modifier);
                    line += &sgr(current.0, current.1);
                }
                line += cell.symbol();
            }
            if color && current != (Color::Reset, Modifier::empty()) {
                line += "\x1b[0m";
            }
            line
        })
        .collect()
}

/// The SGR sequence that sets a foreground colour and boldness from the defaults.
fn sgr(fg: Color, modifier: Modifier) -> String {
    let mut codes = vec!["0".to_string()];
    if modifier.contains(Modifier::BOLD) {
        codes.push("1".into());
    }
    let code = match fg {
        Color::Black => Some(30),
        Color::Red => Some(31),
        Color::Green => Some(32),
        Color::Yellow => Some(33),
        Color::Blue => Some(34),
        Color::Magenta => Some(35),
        Color::Cyan => Some(36),
        Color::Gray | Color::White => Some(37),
        Color::DarkGray => Some(90),
        _ => None,
    };
    if let Some(c) = code {
        codes.push(c.to_string());
    }
    format!("\x1b[{}m", codes.join(";"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn weight_decay(epochs: usize) -> Curves {
        let mut c = Curves::new(Figure {
            title: "weight decay, scratch λ=0, seed 0".into(),
            y_label: "loss",
            legend: vec!["train".into(), "test".into()],
            log_y: true,
            epochs,
        });
        for e in 1..=epochs {
            c.add(e, &[100.0 * 0.9f64.powi(e as i32 * 10), 96.0]);
        }
        c
    }

    #[test]
    fn a_log_axis_is_labelled_by_decade_and_holds_every_point() {
        let c = weight_decay(100);
        let ([lo, hi], labels) = c.y_axis();
        // 100·0.9^1000 ≈ 1.7e-44: from 1e-45 to 1e3.
        assert!(lo <= (100.0 * 0.9f64.powi(1000)).log10() && hi >= 96f64.log10());
        assert!(labels.len() <= 6 && labels.len() >= 2, "{labels:?}");
        assert!(labels.iter().all(|l| l.starts_with("1e")), "{labels:?}");
        let text = c.render(100, 22, false).join("\n");
        assert!(text.contains("weight decay, scratch λ=0, seed 0"), "{text}");
        for needle in ["epochs", "loss", "train", "test", "100", &labels[0]] {
            assert!(text.contains(needle), "{needle:?} missing:\n{text}");
        }
    }

    #[test]
    fn every_epoch_gets_a_mark_when_the_chart_is_wide_enough() {
        let c = weight_decay(50);
        let lines = c.render(120, 24, false);
        // The columns holding a mark, inside the plot (between the frame's top and the x
        // axis, right of the y axis, outside the legend's box).
        let mut columns = std::collections::BTreeSet::new();
        for line in &lines[1..lines.len() - 3] {
            let chars: Vec<char> = line.chars().collect();
            let axis = chars.iter().skip(1).position(|&c| c == '│').unwrap() + 1;
            for (x, ch) in chars.iter().enumerate().skip(axis + 1) {
                let mark = MARK_SYMBOLS.contains(&ch.to_string().as_str());
                // The legend's keys: a mark, a space, a name.
                let key = chars.get(x + 2).is_some_and(|c| c.is_alphabetic());
                if mark && !key {
                    columns.insert(x);
                }
            }
        }
        assert_eq!(columns.len(), 50, "{}", lines.join("\n"));
    }

    #[test]
    fn tiny_and_empty_charts_do_not_panic() {
        let c = weight_decay(0);
        for (w, h) in [(0, 0), (1, 1), (5, 3), (30, 8), (200, 60)] {
            let lines = c.render(w, h, true);
            assert_eq!(lines.len(), h as usize);
        }
        let mut linear = Curves::new(Figure {
            title: "dropout".into(),
            y_label: "",
            legend: vec!["train loss".into(), "train acc".into(), "test acc".into()],
            log_y: false,
            epochs: 1,
        });
        linear.add(1, &[f64::NAN, 0.5, f64::INFINITY]);
        assert_eq!(linear.render(40, 12, false).len(), 12);
        linear.add(2, &[2.3, 0.6, 0.7]);
        let ([lo, hi], labels) = linear.y_axis();
        assert_eq!((lo, labels.first().map(String::as_str)), (0.0, Some("0.0")));
        assert!(hi >= 2.3, "{hi} {labels:?}");
    }

    #[test]
    fn without_colour_no_escape_sequence_is_written() {
        let text = weight_decay(10).render(80, 20, false).join("\n");
        assert!(!text.contains('\x1b'));
        let text = weight_decay(10).render(80, 20, true).join("\n");
        assert!(text.contains("\x1b[0;36m"));
    }
}
