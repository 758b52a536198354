//! The book's Animator, live in a real terminal: tmux runs the commands, `capture-pane` reads
//! the screen and its scrollback afterwards. Each run's figure stays above the printed results
//! (title, axis labels, log ticks for weight decay, legend, a mark per recorded epoch), the
//! terminal is left sane (the cursor shown, a command typed afterwards echoes), and a resize,
//! a 30-column terminal, `TERM=dumb`, `NO_COLOR` and Ctrl-C mid-run do no harm. Piped, the
//! output is the plain lines it always was.
mod common;

use common::*;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// A tmux server of its own (its socket named after the test), one window of `width` ×
/// `height` running a plain bash; killed when dropped.
struct Tmux {
    socket: String,
    /// Commands run so far: each waits for its own `DONE<n>-` line.
    runs: std::cell::Cell<usize>,
}

impl Tmux {
    fn new(name: &str, width: u16, height: u16) -> Option<Tmux> {
        if which("tmux").is_none() {
            skip_outside_ci("tmux is not installed (.ci/run installs it)");
            return None;
        }
        let t = Tmux {
            socket: format!("d2l-{name}-{}", std::process::id()),
            runs: std::cell::Cell::new(0),
        };
        t.tmux(&[
            "-f",
            "/dev/null",
            "new-session",
            "-d",
            "-x",
            &width.to_string(),
            "-y",
            &height.to_string(),
            "env -u NO_COLOR PS1='$ ' bash --norc --noprofile",
        ]);
        t.tmux(&["set-option", "-g", "history-limit", "20000"]);
        Some(t)
    }

    fn tmux(&self, args: &[&str]) -> String {
        let o = Command::new("tmux")
            .args(["-L", &self.socket])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(o.status.success(), "tmux {args:?}: {}", stderr(&o));
        stdout(&o)
    }

    /// Types `line` and Enter.
    fn type_line(&self, line: &str) {
        self.tmux(&["send-keys", "-l", line]);
        self.tmux(&["send-keys", "Enter"]);
    }

    /// The whole pane with its scrollback (`-e`: with the escape sequences of its colours).
    fn screen(&self, escapes: bool) -> String {
        let mut args = vec!["capture-pane", "-p", "-J", "-S", "-"];
        if escapes {
            args.push("-e");
        }
        self.tmux(&args)
    }

    /// Runs `command` in the window and waits for it (at most `limit`): its exit status.
    fn run(&self, command: &str, limit: Duration) -> i32 {
        let done = self.start(command);
        self.wait_for(&done, limit);
        self.status(&done)
    }

    /// Types `command` followed by the echo of its status: the line that status starts with.
    fn start(&self, command: &str) -> String {
        self.runs.set(self.runs.get() + 1);
        let done = format!("DONE{}-", self.runs.get());
        self.type_line(&format!("{command}; echo \"{done}$?\""));
        done
    }

    /// The status a command started with [`Tmux::start`] ended with.
    fn status(&self, done: &str) -> i32 {
        let screen = self.screen(false);
        let at = screen.rfind(&format!("\n{done}")).expect("the status line") + done.len() + 1;
        screen[at..].lines().next().unwrap().trim().parse().unwrap()
    }

    /// Waits until `needle` appears on a line of its own start (not in the typed command).
    fn wait_for(&self, needle: &str, limit: Duration) {
        let start = Instant::now();
        loop {
            let screen = self.screen(false);
            if screen.lines().any(|l| l.starts_with(needle)) {
                return;
            }
            assert!(
                start.elapsed() < limit,
                "no {needle:?} after {limit:?}:\n{screen}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// The terminal is sane: the cursor is shown and a command typed now runs and echoes.
    fn assert_sane(&self) {
        assert_eq!(self.tmux(&["display", "-p", "#{cursor_flag}"]).trim(), "1");
        self.type_line("echo sane-$((6*7))");
        self.wait_for("sane-42", Duration::from_secs(10));
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .args(["-L", &self.socket, "kill-server"])
            .output();
    }
}

/// The command line, run from a temporary directory with `--out` there.
fn command(out: &Path, env: &str, args: &str) -> String {
    format!("{env} {BIN} --device cpu --out {} {args}", out.display())
}

/// The charts on a screen: for each frame's title line (`┌ <title> ─…`), the title and the
/// frame's lines.
fn charts(screen: &str) -> Vec<(String, Vec<String>)> {
    let lines: Vec<&str> = screen.lines().collect();
    let mut found = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        if let Some(rest) = line.strip_prefix("┌ ") {
            let title = rest.split(" ─").next().unwrap().to_string();
            let end = (i..lines.len())
                .find(|&j| lines[j].starts_with('└'))
                .expect("the frame closes");
            found.push((
                title,
                lines[i..=end].iter().map(|l| l.to_string()).collect(),
            ));
        }
    }
    found
}

/// The columns of a chart's plot that hold an epoch's mark (the legend's keys aside).
fn marked_columns(frame: &[String]) -> usize {
    let mut columns = std::collections::BTreeSet::new();
    for line in &frame[1..frame.len() - 3] {
        let chars: Vec<char> = line.chars().collect();
        let Some(axis) = chars.iter().skip(1).position(|&c| c == '│') else {
            continue;
        };
        for (x, &c) in chars.iter().enumerate().skip(axis + 2) {
            let key = chars.get(x + 2).is_some_and(|c| c.is_alphabetic());
            if ['•', '▄', '█'].contains(&c) && !key {
                columns.insert(x);
            }
        }
    }
    columns.len()
}

#[test]
fn each_run_draws_the_books_figure_live_and_leaves_it_above_the_results() {
    let Some(t) = Tmux::new("figures", 160, 50) else {
        return;
    };
    let out = tempfile::tempdir().unwrap();
    let status = t.run(
        &command(out.path(), "", "weight-decay"),
        Duration::from_secs(120),
    );
    assert_eq!(status, 0, "{}", t.screen(false));
    let screen = t.screen(false);
    let found = charts(&screen);
    let titles: Vec<&str> = found.iter().map(|(t, _)| t.as_str()).collect();
    assert_eq!(
        titles,
        [
            "weight decay, scratch λ=0, seed 0",
            "weight decay, scratch λ=3, seed 0",
            "weight decay, concise λ=0, seed 0",
            "weight decay, concise λ=3, seed 0",
        ],
        "{screen}"
    );
    for (title, frame) in &found {
        let text = frame.join("\n");
        for needle in ["loss", "epochs", "• train", "• test", "1e-", "│1", "100│"] {
            assert!(text.contains(needle), "{title}: no {needle:?}:\n{text}");
        }
        // 100 epochs over a plot wider than 100 columns: one column each.
        assert_eq!(marked_columns(frame), 100, "{title}:\n{text}");
    }
    // The printed results come after the last figure, and each figure ends with its progress
    // line at epoch 100.
    let last_frame = screen.rfind("┌ weight decay, concise λ=3").unwrap();
    let result = screen
        .find("weight decay, concise λ=3: L2 norm of w: ")
        .unwrap();
    assert!(result > last_frame, "{screen}");
    assert_eq!(screen.matches("] epoch 100/100 · ").count(), 4, "{screen}");
    assert!(!screen.contains("panicked"), "{screen}");
    t.assert_sane();

    // Dropout, 2 epochs: train loss, train acc and test acc, each epoch marked.
    let Some(data) = real_data_dir() else { return };
    let args = format!("dropout --epochs 2 --data-dir {}", data.display());
    let status = t.run(&command(out.path(), "", &args), Duration::from_secs(300));
    assert_eq!(status, 0, "{}", t.screen(false));
    let screen = t.screen(false);
    let found = charts(&screen);
    for title in [
        "dropout (0.2, 0.5), scratch, seed 0",
        "dropout (0.2, 0.5), concise, seed 0",
    ] {
        let (_, frame) = found.iter().find(|(t, _)| t == title).expect(title);
        let text = frame.join("\n");
        for needle in [
            "• train loss",
            "• train acc",
            "• test acc",
            "epochs",
            "0.0",
            "1.0",
        ] {
            assert!(text.contains(needle), "{title}: no {needle:?}:\n{text}");
        }
        assert_eq!(marked_columns(frame), 2, "{title}:\n{text}");
    }
    let printed = screen.find("dropout (0.2, 0.5), concise: loss ").unwrap();
    assert!(printed > screen.rfind("┌ dropout (0.2, 0.5), concise").unwrap());
    t.assert_sane();
}

#[test]
fn a_narrow_terminal_a_resize_and_a_dumb_terminal_do_no_harm() {
    let Some(t) = Tmux::new("narrow", 30, 20) else {
        return;
    };
    let out = tempfile::tempdir().unwrap();
    // 30 columns: no room for a chart; the progress line and the results, cut to fit.
    let status = t.run(
        &command(out.path(), "", "weight-decay --epochs 300"),
        Duration::from_secs(120),
    );
    let screen = t.screen(false);
    assert_eq!(status, 0, "{screen}");
    assert!(
        !screen.contains("panicked") && !screen.contains('┌'),
        "{screen}"
    );
    assert!(screen.contains("L2 norm of w"), "{screen}");
    assert!(out.path().join("weight-decay/summary.csv").is_file());
    t.assert_sane();

    // Resized while it runs: wider, then narrower, then back.
    t.tmux(&["resize-window", "-x", "120", "-y", "40"]);
    let done = t.start(&command(
        out.path(),
        "",
        "weight-decay --epochs 20000 --impl scratch --wd 3",
    ));
    for (w, h) in [(90, 30), (50, 15), (120, 40)] {
        std::thread::sleep(Duration::from_millis(700));
        t.tmux(&["resize-window", "-x", &w.to_string(), "-y", &h.to_string()]);
    }
    t.wait_for(&done, Duration::from_secs(180));
    let screen = t.screen(false);
    assert_eq!(t.status(&done), 0, "{screen}");
    assert!(!screen.contains("panicked"), "{screen}");
    assert!(
        screen.contains("weight decay, scratch λ=3: L2 norm of w: "),
        "{screen}"
    );
    t.assert_sane();

    // TERM=dumb: the plain lines, no cursor movement, no colour.
    t.tmux(&["send-keys", "clear", "Enter"]);
    t.tmux(&["clear-history"]);
    let status = t.run(
        &command(
            out.path(),
            "TERM=dumb",
            "weight-decay --impl scratch --wd 3",
        ),
        Duration::from_secs(120),
    );
    let screen = t.screen(true);
    assert_eq!(status, 0, "{screen}");
    assert!(
        screen.contains("weight decay, scratch λ=3 epoch 1/100: train loss"),
        "{screen}"
    );
    assert!(
        !screen.contains('┌') && !screen.contains("\x1b[2K"),
        "{screen}"
    );
    t.assert_sane();
}

#[test]
fn ctrl_c_mid_run_keeps_the_finished_epochs_and_a_sane_terminal() {
    let Some(t) = Tmux::new("ctrl-c", 120, 40) else {
        return;
    };
    let Some(data) = real_data_dir() else { return };
    let out = tempfile::tempdir().unwrap();
    let args = format!(
        "dropout --epochs 5 --impl concise --no-checkpoints --data-dir {}",
        data.display()
    );
    let done = t.start(&command(out.path(), "NO_COLOR=1", &args));
    // After the first epoch is drawn.
    t.wait_for("[====", Duration::from_secs(120));
    t.tmux(&["send-keys", "C-c"]);
    t.wait_for(&done, Duration::from_secs(120));
    assert_eq!(t.status(&done), 130, "{}", t.screen(false));
    let screen = t.screen(true);
    assert!(screen.contains("interrupted by Ctrl-C"), "{screen}");
    assert!(!screen.contains("panicked"), "{screen}");
    // NO_COLOR: the chart's marks without colours.
    assert!(
        screen.contains("┌ dropout (0.2, 0.5), concise, seed 0"),
        "{screen}"
    );
    assert!(!screen.contains("\x1b[0;36m"), "{screen}");
    let summary = csv_rows(&out.path().join("dropout/summary.csv"));
    assert_eq!(summary[0]["status"], "interrupted", "{summary:?}");
    let kept = csv_rows(&out.path().join("dropout/concise.csv")).len();
    assert!((1..5).contains(&kept), "{kept} epochs kept");
    t.assert_sane();
}

/// Piped or redirected, nothing changes: the README's printed numbers on stdout, the plain
/// per-epoch lines on stderr, no escape sequence anywhere.
#[test]
fn piped_output_is_the_plain_lines_as_before() {
    let out = tempfile::tempdir().unwrap();
    let o = Command::new(BIN)
        .args(["--reproducible", "--device", "cpu", "--out"])
        .arg(out.path())
        .arg("weight-decay")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let (out_text, err_text) = (stdout(&o), stderr(&o));
    assert!(!out_text.contains('\x1b') && !err_text.contains('\x1b'));
    assert_eq!(
        out_text.lines().next().unwrap(),
        "weight decay, scratch λ=0: L2 norm of w: 14.119075"
    );
    assert!(
        err_text.contains("weight decay, scratch λ=0 epoch 10/100: train loss "),
        "{err_text}"
    );
}

/// Closing the terminal mid-run (its tmux server killed: the shell passes the SIGHUP on to
/// the command) ends the run like SIGTERM, with nowhere left to print: the finished epochs
/// are written, `run.json` says interrupted, nothing is left half-written.
#[test]
fn closing_the_terminal_mid_run_keeps_the_finished_epochs() {
    let Some(t) = Tmux::new("hangup", 120, 40) else {
        return;
    };
    let out = tempfile::tempdir().unwrap();
    t.start(&command(
        out.path(),
        "",
        "weight-decay --impl scratch --wd 3 --epochs 1000000",
    ));
    // The command holds its lock once it runs; then a few seconds of training.
    let lock = out.path().join(".weight-decay.lock");
    let deadline = Instant::now() + Duration::from_secs(60);
    while std::fs::read_to_string(&lock).map_or(true, |t| t.is_empty()) {
        assert!(Instant::now() < deadline, "the command never started");
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_secs(3));
    drop(t);
    let run = out.path().join("weight-decay/run.json");
    let deadline = Instant::now() + Duration::from_secs(60);
    while !run.exists() {
        assert!(
            Instant::now() < deadline,
            "no run.json a minute after the terminal closed"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(read_json(&run)["status"], "interrupted");
    let dir = out.path().join("weight-decay");
    let rows = csv_rows(&dir.join("summary.csv"));
    assert_eq!(rows[0]["status"], "interrupted");
    let epochs: usize = rows[0]["epochs"].parse().unwrap();
    assert!(epochs >= 1, "{epochs}");
    assert_eq!(column(&dir.join("scratch-wd3.csv"), "epoch").len(), epochs);
    for f in files_under(out.path()) {
        let name = f.file_name().unwrap().to_string_lossy().to_string();
        assert!(
            !name.starts_with('.')
                || name.contains(".lock")
                || f.starts_with(".weight-decay.checkpoints"),
            "left behind: {}",
            f.display()
        );
    }
}
