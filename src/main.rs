//! Parses the command line, picks the device and runs the experiments; nothing else.
use anyhow::Result;
use clap::Parser;
use d2l_regularization::cli::{Cli, Command};
use d2l_regularization::device;
use d2l_regularization::experiments::{dropout, weight_decay, Context};
use std::process::ExitCode;

fn main() -> ExitCode {
    // Die quietly when stdout is closed early (`… | head`), as command-line tools do, instead
    // of panicking in println!.
    #[cfg(unix)]
    // SAFETY: restoring the default disposition of a signal at start-up, before any thread.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    let g = &cli.global;
    if let Some(n) = g.threads {
        tch::set_num_threads(n as i32);
    }
    let ctx = Context {
        device: device::resolve(g.device)?,
        device_requested: g.device,
        seed: g.seed,
        out: g.out.clone(),
    };
    match cli.command {
        Some(Command::WeightDecay(cfg)) => {
            weight_decay::run(&cfg, &ctx)?;
        }
        Some(Command::Dropout(cfg)) => {
            dropout::run(&cfg, &ctx)?;
        }
        Some(Command::Bench(cfg)) => d2l_regularization::bench::run(&cfg, &ctx)?,
        None => {
            weight_decay::run(&weight_decay::Config::default(), &ctx)?;
            dropout::run(&dropout::Config::default(), &ctx)?;
        }
    }
    Ok(())
}
