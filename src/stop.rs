//! Why a run ends before its last epoch, and what the process then exits with.
//!
//! - Divergence: an epoch whose loss is NaN or infinite ends the run (status `diverged`).
//! - Ctrl-C (SIGINT), SIGTERM, SIGHUP (the terminal closed, an ssh session dropped) or SIGPIPE
//!   (stdout or stderr read by a program that quit, `… | head -1`): the first asks the
//!   training loops to stop at the next batch boundary; the finished epochs are written and
//!   the process exits with 128 + the signal (130 / 143 / 129 / 141), status `interrupted`. A
//!   second signal ends the process at once; as every output is written to a temporary file
//!   and renamed, no truncated file is left (the temporary file being written, if any, is
//!   removed). A repeated SIGPIPE is not a second signal: every line printed after stdout
//!   closed would send one.
//! - Where output has gone: on SIGHUP, stdin, stdout and stderr that are terminals, and on
//!   SIGPIPE, stdout and stderr that are closed pipes, are pointed at `/dev/null`, so the
//!   command finishes quietly there and still says what happened wherever it can (a log
//!   file, a stderr still open). Every line goes through [`outln!`](crate::outln) and
//!   [`errln!`](crate::errln), which never panic on a write that fails.
//! - SIGQUIT keeps its default (quit at once, with a core dump where enabled): nothing is
//!   half-written (every file goes through a temporary), and the next command clears what
//!   it left.
use serde::Serialize;
use std::ffi::CString;
use std::path::Path;
use std::sync::atomic::{AtomicI32, AtomicPtr, Ordering};

/// How a run ended.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    #[default]
    Ok,
    Diverged,
    Interrupted,
}

impl Status {
    pub fn name(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Diverged => "diverged",
            Status::Interrupted => "interrupted",
        }
    }
}

/// The error a command returns when a run did not finish: its message is printed and the
/// process exits with [`Stopped::exit_code`].
#[derive(Debug)]
pub struct Stopped {
    pub status: Status,
    pub message: String,
}

impl Stopped {
    /// 128 + the signal for an interruption, 1 otherwise.
    pub fn exit_code(&self) -> u8 {
        match (self.status, requested()) {
            (Status::Interrupted, Some(sig)) => (128 + sig) as u8,
            (Status::Interrupted, None) => 130,
            _ => 1,
        }
    }

    /// The error of an interrupted command.
    pub fn interrupted(what: &str) -> Stopped {
        let signal = match requested() {
            Some(libc::SIGTERM) => "SIGTERM",
            Some(libc::SIGHUP) => "SIGHUP (the terminal was closed)",
            Some(libc::SIGPIPE) => "SIGPIPE (a program reading its output quit)",
            _ => "Ctrl-C",
        };
        Stopped {
            status: Status::Interrupted,
            message: format!("interrupted by {signal}; {what}"),
        }
    }
}

impl std::fmt::Display for Stopped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Stopped {}

/// Ends a command asked to stop before its first run started (while it loaded its data, or
/// before `main`): nothing was written, and `dir` is as it was.
pub fn before_first_run(dir: &Path) -> Result<(), Stopped> {
    match requested() {
        None => Ok(()),
        Some(_) => Err(Stopped::interrupted(&format!(
            "it came before the first run started: nothing was trained or written, and {} is \
             as it was",
            dir.display()
        ))),
    }
}

/// The message of a diverged run; `advice` says which flags to change.
pub fn diverged(run: &str, epoch: usize, advice: &str) -> String {
    format!(
        "{run}: the loss became NaN or infinite in epoch {epoch}, so training stopped there; \
         {advice}"
    )
}

/// How the runs of one command ended: each diverged run is reported as it ends and the others
/// go on; an interrupted run ends the command.
#[derive(Debug, Default)]
pub struct Outcome {
    runs: usize,
    diverged: usize,
    interrupted: bool,
}

impl Outcome {
    /// Records a run's end, printing the divergence message (naming the first unfinished
    /// epoch, with `advice`); true when the command must stop (it was interrupted).
    pub fn record(
        &mut self,
        run: &str,
        status: Status,
        finished_epochs: usize,
        advice: &str,
    ) -> bool {
        self.runs += 1;
        match status {
            Status::Ok => {}
            Status::Diverged => {
                self.diverged += 1;
                crate::errln!("{}", diverged(run, finished_epochs + 1, advice));
            }
            Status::Interrupted => self.interrupted = true,
        }
        self.interrupted
    }

    pub fn interrupted(&self) -> bool {
        self.interrupted
    }

    /// The command's status for `run.json`.
    pub fn status(&self) -> Status {
        if self.interrupted {
            Status::Interrupted
        } else if self.diverged > 0 {
            Status::Diverged
        } else {
            Status::Ok
        }
    }

    /// Ok when every run finished; otherwise the error that ends the command (exit 128 + the
    /// signal, or 1), saying where the finished epochs are.
    pub fn result(&self, dir: &Path) -> Result<(), Stopped> {
        match self.status() {
            Status::Ok => Ok(()),
            Status::Interrupted => Err(Stopped::interrupted(&format!(
                "the finished epochs are in {}",
                dir.display()
            ))),
            Status::Diverged => Err(Stopped {
                status: Status::Diverged,
                message: format!(
                    "{} of {} runs diverged (their finished epochs are in {})",
                    self.diverged,
                    self.runs,
                    dir.display()
                ),
            }),
        }
    }
}

/// Whether every value is a finite number.
pub fn finite(values: &[f64]) -> bool {
    values.iter().all(|v| v.is_finite())
}

static SIGNAL: AtomicI32 = AtomicI32::new(0);
/// The temporary file being written (a leaked C string), removed by a second signal.
static WRITING: AtomicPtr<libc::c_char> = AtomicPtr::new(std::ptr::null_mut());

const FIRST: &[u8] =
    b"\nstopping after the current batch and saving the finished epochs (press Ctrl-C again to quit now)\n";
const SECOND: &[u8] = b"\nquitting now\n";

extern "C" fn on_signal(sig: libc::c_int) {
    // SAFETY: open(2), dup2(2), close(2), isatty(3) (an ioctl) and poll(2) are
    // async-signal-safe; the path is a static C string.
    unsafe {
        let gone = |fd: libc::c_int| match sig {
            libc::SIGHUP => libc::isatty(fd) == 1,
            libc::SIGPIPE => {
                let mut p = libc::pollfd {
                    fd,
                    events: libc::POLLOUT,
                    revents: 0,
                };
                fd != 0 && libc::poll(&mut p, 1, 0) == 1 && p.revents & libc::POLLERR != 0
            }
            _ => false,
        };
        for fd in 0..=2 {
            if gone(fd) {
                let null = libc::open(c"/dev/null".as_ptr(), libc::O_RDWR);
                if null >= 0 {
                    libc::dup2(null, fd);
                    libc::close(null);
                }
            }
        }
    }
    if sig == libc::SIGPIPE && SIGNAL.load(Ordering::SeqCst) != 0 {
        return;
    }
    if SIGNAL.swap(sig, Ordering::SeqCst) == 0 {
        // SAFETY: write(2) is async-signal-safe; the buffer is static.
        unsafe { libc::write(2, FIRST.as_ptr().cast(), FIRST.len()) };
        return;
    }
    let tmp = WRITING.load(Ordering::SeqCst);
    // SAFETY: write(2), unlink(2) and _exit(2) are async-signal-safe; `tmp` is null or a C
    // string that is never freed.
    unsafe {
        libc::write(2, SECOND.as_ptr().cast(), SECOND.len());
        if !tmp.is_null() {
            libc::unlink(tmp);
        }
        libc::_exit(128 + sig);
    }
}

/// The signals that ask a command to stop (see the module's documentation).
const STOPPING: [libc::c_int; 4] = [libc::SIGINT, libc::SIGTERM, libc::SIGHUP, libc::SIGPIPE];

/// Installs the handlers of the stopping signals (at start-up, and again in `main`: Rust's runtime
/// sets SIGPIPE to be ignored before `main` runs).
pub fn install() {
    for sig in STOPPING {
        // SAFETY: a zeroed sigaction with a plain handler and an empty mask is valid.
        unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = on_signal as extern "C" fn(libc::c_int) as usize;
            action.sa_flags = libc::SA_RESTART;
            libc::sigemptyset(&mut action.sa_mask);
            libc::sigaction(sig, &action, std::ptr::null_mut());
        }
    }
}

/// Writes one line to stdout (`fd` 1) or stderr (2), ignoring a write that fails: a closed
/// pipe or terminal loses the line, never the run. See [`outln!`](crate::outln).
pub fn line(fd: i32, text: std::fmt::Arguments<'_>) {
    use std::io::Write;
    let _ = match fd {
        1 => writeln!(std::io::stdout().lock(), "{text}"),
        _ => writeln!(std::io::stderr().lock(), "{text}"),
    };
}

/// The signal that asked to stop, if any.
pub fn requested() -> Option<i32> {
    match SIGNAL.load(Ordering::Relaxed) {
        0 => None,
        sig => Some(sig),
    }
}

/// Registers `tmp` as the temporary file being written until the guard is dropped, so that a
/// second signal removes it instead of leaving it behind.
pub fn writing(tmp: &Path) -> WritingGuard {
    use std::os::unix::ffi::OsStrExt;
    let c = CString::new(tmp.as_os_str().as_bytes()).unwrap_or_default();
    let old = WRITING.swap(c.into_raw(), Ordering::SeqCst);
    WritingGuard { previous: old }
}

/// See [`writing`].
pub struct WritingGuard {
    previous: *mut libc::c_char,
}

impl Drop for WritingGuard {
    fn drop(&mut self) {
        // The string of the finished write is leaked on purpose: the handler may be reading it.
        WRITING.store(self.previous, Ordering::SeqCst);
    }
}
