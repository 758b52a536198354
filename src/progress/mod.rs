//! What a run shows while it trains, on stderr. On a terminal, the book's figure drawn live
//! (the run's curves as its epochs end, [`chart`]) with a progress line below it, left in the
//! scrollback when the run ends, as the book's figure stays in the notebook; `--no-chart`
//! keeps an indicatif bar only. Plain per-epoch lines when stderr is a file or a pipe (CI
//! logs, Slurm) or the terminal is `TERM=dumb`; nothing with `--quiet`. stdout (the results)
//! is never written here.
pub mod chart;
mod inline;

pub use chart::{Curves, Figure};
use indicatif::{ProgressBar, ProgressStyle};
use inline::Inline;
use std::cell::RefCell;
use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// The live chart and a progress line (stderr is a terminal).
    Chart,
    /// An updating bar (a terminal, with `--no-chart`).
    Bar,
    /// One line per epoch, at most about ten per run (stderr is not a terminal).
    Lines,
    /// Nothing but warnings and errors.
    Quiet,
}

impl Mode {
    /// The chart on a terminal (a bar with `no_chart`), lines elsewhere and where the terminal
    /// cannot move its cursor (`TERM=dumb`), nothing when `quiet`.
    pub fn detect(quiet: bool, no_chart: bool) -> Mode {
        let dumb = std::env::var_os("TERM").is_some_and(|t| t == "dumb");
        if quiet {
            Mode::Quiet
        } else if !std::io::stderr().is_terminal() || dumb {
            Mode::Lines
        } else if no_chart {
            Mode::Bar
        } else {
            Mode::Chart
        }
    }
}

static MODE: AtomicU8 = AtomicU8::new(0);
/// Sweeps: a run's chart is cleared when it ends and a line says how it ended.
static TRANSIENT: AtomicBool = AtomicBool::new(false);

/// Sets the mode of the whole process (from `--quiet`, `--no-chart` and the terminal), once
/// at start-up.
pub fn set_mode(mode: Mode) {
    MODE.store(mode as u8 + 1, Ordering::Relaxed);
}

/// The mode set by [`set_mode`], or the detected one.
pub fn mode() -> Mode {
    match MODE.load(Ordering::Relaxed) {
        1 => Mode::Chart,
        2 => Mode::Bar,
        3 => Mode::Lines,
        4 => Mode::Quiet,
        _ => Mode::detect(false, false),
    }
}

/// A sweep's runs: each chart is cleared when its run ends, and [`finished`] lines stay
/// instead, so hundreds of runs do not scroll hundreds of charts past.
pub fn set_transient(transient: bool) {
    TRANSIENT.store(transient, Ordering::Relaxed);
}

/// A line about a finished run of a sweep (setting, seed, final figures), on the terminal
/// only: piped or redirected output stays as it was.
pub fn finished(line: &str) {
    if mode() == Mode::Chart {
        crate::errln!("{line}");
    }
}

/// A bar for `total` bytes (or a spinner), hidden unless on a terminal.
pub fn bytes_bar(total: Option<u64>, name: &str) -> ProgressBar {
    if !matches!(mode(), Mode::Bar | Mode::Chart) {
        return ProgressBar::hidden();
    }
    let bar = match total {
        Some(n) => ProgressBar::new(n),
        None => ProgressBar::new_spinner(),
    };
    bar.set_style(
        ProgressStyle::with_template("{msg} {bar:30} {bytes}/{total_bytes} {bytes_per_sec}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar.set_message(name.to_string());
    bar
}

/// The chart is redrawn at most this often, and after the last epoch: one draw takes about a
/// third of a millisecond (`bench` measures it), so at most 0.4 % of a run's time goes to its
/// chart, plus one draw when it ends.
pub const REDRAW: Duration = Duration::from_millis(100);

/// Progress of one run over its epochs.
pub struct Epochs {
    label: String,
    total: usize,
    mode: Mode,
    bar: Option<ProgressBar>,
    live: Option<RefCell<Live>>,
}

/// The live chart of a run: its curves, where it is drawn, and when it was drawn last.
struct Live {
    curves: Option<Curves>,
    inline: Inline,
    begin: Instant,
    /// The epochs already trained when this process started (a resumed run).
    first: usize,
    epoch: usize,
    figures: String,
    drawn: Option<Instant>,
}

impl Epochs {
    /// What the run is called.
    pub fn label(&self) -> &str {
        &self.label
    }

    pub fn new(label: impl Into<String>, total: usize) -> Epochs {
        let label = label.into();
        let mode = mode();
        let bar = (mode == Mode::Bar).then(|| {
            let bar = ProgressBar::new(total as u64);
            bar.set_style(
                ProgressStyle::with_template(
                    "{prefix} [{bar:25}] epoch {pos}/{len} {msg} ({elapsed})",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
            );
            bar.set_prefix(label.clone());
            bar
        });
        let live = (mode == Mode::Chart).then(|| {
            RefCell::new(Live {
                curves: None,
                inline: Inline::stderr(),
                begin: Instant::now(),
                first: 0,
                epoch: 0,
                figures: String::new(),
                drawn: None,
            })
        });
        Epochs {
            label,
            total,
            mode,
            bar,
            live,
        }
    }

    /// The same, drawing `figure` live (on a terminal).
    pub fn with_figure(self, figure: Figure) -> Epochs {
        if let Some(live) = &self.live {
            live.borrow_mut().curves = Some(Curves::new(figure));
        }
        self
    }

    /// Epochs trained before this process (a resumed run): on the chart, not in the ETA.
    pub fn resumed(&self, epoch: usize, values: &[f64]) {
        if let Some(live) = &self.live {
            let mut live = live.borrow_mut();
            if let Some(c) = live.curves.as_mut() {
                c.add(epoch, values);
            }
            live.first = epoch;
            live.epoch = epoch;
        }
    }

    /// Reports a finished epoch with its figures (`train loss 0.34, …`) and its values, one
    /// per series of the figure.
    pub fn epoch(&self, epoch: usize, figures: &str, values: &[f64]) {
        match (&self.bar, &self.live, self.mode) {
            (Some(bar), _, _) => {
                bar.set_position(epoch as u64);
                bar.set_message(figures.to_string());
            }
            (None, Some(live), _) => {
                let mut live = live.borrow_mut();
                if let Some(c) = live.curves.as_mut() {
                    c.add(epoch, values);
                }
                live.epoch = epoch;
                live.figures = figures.to_string();
                // A run shorter than REDRAW is drawn once, when it ends.
                let due = live.drawn.unwrap_or(live.begin).elapsed() >= REDRAW;
                if due || epoch == self.total {
                    self.draw(&mut live);
                }
            }
            (None, None, Mode::Lines) => {
                let stride = if self.total <= 20 { 1 } else { self.total / 10 };
                if epoch == 1 || epoch.is_multiple_of(stride) || epoch == self.total {
                    crate::errln!("{} epoch {epoch}/{}: {figures}", self.label, self.total);
                }
            }
            _ => {}
        }
    }

    fn draw(&self, live: &mut Live) {
        let (width, height) = inline::size();
        let line = progress_line(live, self.total, width);
        let mut lines = Vec::new();
        // The chart where there is room for one that can be read; the progress line always.
        let (w, h) = (width.min(140), height.saturating_sub(3).min(22));
        match live.curves.as_ref() {
            Some(c) if w >= 40 && h >= 10 => lines.extend(c.render(w, h, inline::color())),
            Some(_) => lines.push(truncate(&self.label, width)),
            None => {}
        }
        lines.push(line);
        live.inline.draw(&lines, width);
        live.drawn = Some(Instant::now());
    }
}

/// `[=====>    ] epoch 37/100 · 1.2 s · ETA 2.1 s · train loss …`, at most `width` columns.
fn progress_line(live: &Live, total: usize, width: u16) -> String {
    let done = live.epoch.min(total);
    let slots = 20;
    let filled = (done * slots).checked_div(total).unwrap_or(slots);
    let mut bar = "=".repeat(filled);
    if filled < slots {
        bar.push('>');
        bar += &" ".repeat(slots - filled - 1);
    }
    let elapsed = live.begin.elapsed().as_secs_f64();
    let trained = done.saturating_sub(live.first);
    let eta = match (trained, total - done) {
        (_, 0) => String::new(),
        (0, _) => " · ETA ?".into(),
        (n, left) => format!(" · ETA {}", seconds(elapsed / n as f64 * left as f64)),
    };
    let text = format!(
        "[{bar}] epoch {done}/{total} · {}{eta} · {}",
        seconds(elapsed),
        live.figures
    );
    truncate(&text, width)
}

fn seconds(s: f64) -> String {
    if s < 60.0 {
        format!("{s:.1} s")
    } else {
        format!("{}m{:02}s", (s / 60.0) as u64, (s % 60.0) as u64)
    }
}

/// At most `width − 1` characters (the last column is left free: a line that fills it would
/// wrap on some terminals).
fn truncate(text: &str, width: u16) -> String {
    text.chars()
        .take(usize::from(width.saturating_sub(1)))
        .collect()
}

/// The bar disappears with its run; the chart stays (or, in a sweep, is cleared) with its
/// last epochs drawn, and the next output starts below it.
impl Drop for Epochs {
    fn drop(&mut self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
        if let Some(live) = &self.live {
            let mut live = live.borrow_mut();
            if live.epoch > 0 || live.drawn.is_some() {
                self.draw(&mut live);
            }
            if TRANSIENT.load(Ordering::Relaxed) {
                live.inline.clear();
            } else {
                live.inline.finish();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_progress_line_fits_its_width_and_says_how_far() {
        let live = Live {
            curves: None,
            inline: Inline::stderr(),
            begin: Instant::now(),
            first: 0,
            epoch: 37,
            figures: "train loss 1.2e-3, test loss 9.6e1".into(),
            drawn: None,
        };
        let line = progress_line(&live, 100, 200);
        assert!(
            line.starts_with("[=======>            ] epoch 37/100 · "),
            "{line}"
        );
        assert!(
            line.contains("ETA") && line.ends_with("test loss 9.6e1"),
            "{line}"
        );
        for width in [0, 1, 10, 30] {
            assert!(progress_line(&live, 100, width).chars().count() < usize::from(width.max(1)));
        }
        assert!(progress_line(&live, 0, 80).contains("epoch 0/0"));
    }
}
