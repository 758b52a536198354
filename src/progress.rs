//! What a run shows while it trains: an indicatif bar over its epochs on a terminal, plain
//! per-epoch lines when stderr is a file or a pipe (CI logs), nothing with `--quiet`.
use indicatif::{ProgressBar, ProgressStyle};
use std::io::IsTerminal;
use std::sync::atomic::{AtomicU8, Ordering};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// An updating bar (stderr is a terminal).
    Bar,
    /// One line per epoch, at most about ten per run (stderr is not a terminal).
    Lines,
    /// Nothing but warnings and errors.
    Quiet,
}

impl Mode {
    /// Bars on a terminal, lines elsewhere, nothing when `quiet`.
    pub fn detect(quiet: bool) -> Mode {
        if quiet {
            Mode::Quiet
        } else if std::io::stderr().is_terminal() {
            Mode::Bar
        } else {
            Mode::Lines
        }
    }
}

static MODE: AtomicU8 = AtomicU8::new(0);

/// Sets the mode of the whole process (from `--quiet` and the terminal), once at start-up.
pub fn set_mode(mode: Mode) {
    MODE.store(mode as u8 + 1, Ordering::Relaxed);
}

/// The mode set by [`set_mode`], or the detected one.
pub fn mode() -> Mode {
    match MODE.load(Ordering::Relaxed) {
        1 => Mode::Bar,
        2 => Mode::Lines,
        3 => Mode::Quiet,
        _ => Mode::detect(false),
    }
}

/// A bar for `total` bytes (or a spinner), hidden unless the mode is [`Mode::Bar`].
pub fn bytes_bar(total: Option<u64>, name: &str) -> ProgressBar {
    if mode() != Mode::Bar {
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

/// Progress of one run over its epochs.
pub struct Epochs {
    label: String,
    total: usize,
    mode: Mode,
    bar: Option<ProgressBar>,
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
        Epochs {
            label,
            total,
            mode,
            bar,
        }
    }

    /// Reports a finished epoch with its figures (`train loss 0.34, …`).
    pub fn epoch(&self, epoch: usize, figures: &str) {
        match (&self.bar, self.mode) {
            (Some(bar), _) => {
                bar.set_position(epoch as u64);
                bar.set_message(figures.to_string());
            }
            (None, Mode::Lines) => {
                let stride = if self.total <= 20 { 1 } else { self.total / 10 };
                if epoch == 1 || epoch.is_multiple_of(stride) || epoch == self.total {
                    eprintln!("{} epoch {epoch}/{}: {figures}", self.label, self.total);
                }
            }
            _ => {}
        }
    }
}

/// The bar disappears with its run (the caller then prints the run's result).
impl Drop for Epochs {
    fn drop(&mut self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}
