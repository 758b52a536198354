//! Parses the command line, picks the device and runs the experiments; turns every way a run
//! can end (divergence, Ctrl-C, out of memory, bad input) into one message and an exit status.
use anyhow::Result;
use clap::Parser;
use d2l_regularization::cli::{self, Cli, Command};
use d2l_regularization::experiment::Context;
use d2l_regularization::stop::Stopped;
use d2l_regularization::{device, progress, stop};
use std::process::ExitCode;
use std::sync::Mutex;

/// Ctrl-C and SIGTERM are caught from the first instant the program's own code can run: the
/// executable's pre-initialisers run before any shared library's (libtorch's static
/// initialisers take about a second), so a signal in that window is recorded like any
/// other and the command then says it stopped before it started. Only the dynamic loader's
/// own work before it (mapping and relocating the libraries) is not covered.
#[used]
#[link_section = ".preinit_array"]
static CATCH_SIGNALS_EARLY: extern "C" fn() = catch_signals_early;

extern "C" fn catch_signals_early() {
    stop::install();
}

fn main() -> ExitCode {
    // Rust's runtime ignores SIGPIPE before `main`: a closed stdout (`… | head -1`) stops the
    // command like SIGTERM instead (the finished epochs kept, said on stderr if it is open).
    stop::install();
    // A file-size limit (`ulimit -f`, which batch schedulers pass on to jobs) would otherwise
    // kill the process by SIGXFSZ in the middle of a write, leaving its temporary file behind.
    // Ignored, the write fails with EFBIG and takes the full-disk path: one error naming the
    // file, the temporary removed, every finished file whole.
    #[cfg(unix)]
    // SAFETY: as above.
    unsafe {
        libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
    }
    let cli = Cli::parse();
    if cli.global.reproducible {
        // Before libtorch runs anything and before any thread starts: MKL and ATen read their
        // settings from the environment once, at their first use.
        d2l_regularization::cpu::use_reproducible_kernels();
    }
    // The handlers are in place since `catch_signals_early`.
    if stop::requested().is_some() {
        let stopped = stop::Stopped::interrupted("nothing was started and nothing written");
        d2l_regularization::errln!("{stopped}");
        return ExitCode::from(stopped.exit_code());
    }
    progress::set_mode(match cli.command {
        Some(Command::Bench(_)) | Some(Command::Doctor) => progress::Mode::Quiet,
        _ => progress::Mode::detect(cli.global.quiet, cli.global.no_chart),
    });
    let memory_flags = cli
        .command
        .as_ref()
        .map_or("--batch-size".into(), Command::memory_flags);
    let on_cpu = cli.global.device == d2l_regularization::device::DeviceChoice::Cpu;
    match guarded(|| run(cli)) {
        // A command that finished although a stop was asked for (the signal came after its
        // last batch) still reports the signal, as shells expect.
        Ok(()) => match stop::requested() {
            Some(sig) => ExitCode::from(128 + sig as u8),
            None => ExitCode::SUCCESS,
        },
        Err(Failure::Error(e)) => match e.downcast_ref::<Stopped>() {
            Some(stopped) => {
                match stopped.status {
                    stop::Status::Interrupted => d2l_regularization::errln!("{stopped}"),
                    _ => d2l_regularization::errln!("error: {stopped}"),
                }
                ExitCode::from(stopped.exit_code())
            }
            None => {
                d2l_regularization::errln!("error: {}", without_backtraces(&e));
                ExitCode::FAILURE
            }
        },
        Err(Failure::Torch(message)) if out_of_memory(&message) => {
            d2l_regularization::errln!(
                "error: out of memory ({}); choose a smaller {memory_flags}{}",
                first_line(&message),
                if on_cpu { "" } else { ", or --device cpu" }
            );
            ExitCode::FAILURE
        }
        Err(Failure::Torch(message)) => {
            d2l_regularization::errln!("error: libtorch failed: {}", first_line(&message));
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    let g = &cli.global;
    let threads = g.threads.or(g
        .reproducible
        .then_some(d2l_regularization::cpu::REPRODUCIBLE_THREADS));
    if let Some(n) = threads {
        tch::set_num_threads(n as i32);
    }
    if let Some(Command::Doctor) = cli.command {
        // Before the device is resolved: it reports why a device is not usable.
        return d2l_regularization::doctor::run();
    }
    let device = device::resolve(g.device)?;
    if g.reproducible && device.is_cuda() {
        anyhow::bail!(
            "--reproducible fixes the CPU's kernels, and this run would use {} (--device {}): \
             add --device cpu, or leave --reproducible out",
            device::name(device),
            g.device
        );
    }
    let ctx = Context {
        device,
        device_requested: g.device,
        seed: g.seed,
        out: g.out.clone(),
        plots: !g.no_plot,
        tag: None,
        checkpoints: None,
        tensorboard: !g.no_tensorboard,
        board: None,
    };
    match &cli.command {
        Some(command) => command.run(&ctx),
        None => cli::run_every_experiment(&ctx),
    }
}

enum Failure {
    Error(anyhow::Error),
    /// A libtorch error, which tch raises as a panic (its message).
    Torch(String),
}

/// Runs `f`, turning a libtorch error raised as a panic into [`Failure::Torch`] without the
/// panic's report; any other panic is a bug and is reported as such.
fn guarded(f: impl FnOnce() -> Result<()>) -> Result<(), Failure> {
    static TORCH: Mutex<Option<String>> = Mutex::new(None);
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let message = info
            .payload()
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| info.payload().downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_default();
        if message.contains("Torch(") || message.contains("TchError") {
            *TORCH.lock().unwrap_or_else(|e| e.into_inner()) = Some(message);
        } else {
            default_hook(info);
        }
    }));
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        Ok(result) => result.map_err(Failure::Error),
        Err(payload) => match TORCH.lock().unwrap_or_else(|e| e.into_inner()).take() {
            Some(message) => Err(Failure::Torch(message)),
            None => std::panic::resume_unwind(payload),
        },
    }
}

fn out_of_memory(message: &str) -> bool {
    let m = message.to_lowercase();
    m.contains("out of memory")
        || m.contains("can't allocate memory")
        || m.contains("cannot allocate memory")
}

/// The error and its causes as `{e:#}` prints them, with a libtorch message (a tensor that
/// cannot be made from a checkpoint's bytes, …) cut to its first line: its C++ backtrace
/// means nothing to the user.
fn without_backtraces(e: &anyhow::Error) -> String {
    e.chain()
        .map(|cause| {
            let text = cause.to_string();
            if text.contains("Exception raised from") || text.contains("\nframe #") {
                first_line(&text)
            } else {
                text
            }
        })
        .collect::<Vec<_>>()
        .join(": ")
}

/// The useful line of a libtorch message (after tch's `Torch("` wrapper), at most 240 chars.
fn first_line(message: &str) -> String {
    let inner = message
        .split_once("Torch(\"")
        .map(|(_, rest)| rest)
        .unwrap_or(message);
    let line = inner
        .split("\\n")
        .flat_map(|l| l.lines())
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or("")
        .trim_end_matches("\")");
    line.chars().take(240).collect()
}
