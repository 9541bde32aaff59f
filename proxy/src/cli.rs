//! Command line: `weir run | check | ctl | replay | demo`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use weir_control::rollout::StateFile;

/// Exit code for a bad config or bad usage (sysexits' EX_CONFIG).
pub const EXIT_CONFIG: u8 = 78;
/// Exit code when serving failed at run time (sysexits' EX_SOFTWARE).
pub const EXIT_RUNTIME: u8 = 70;

/// weir: a progressive-delivery reverse proxy.
#[derive(Debug, Parser)]
#[command(name = "weir", version, about)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Sub-commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve traffic with the given config (reloaded on change and on SIGHUP).
    Run {
        /// Config file.
        #[arg(short, long, default_value = "weir.toml")]
        config: PathBuf,
        /// Data-plane worker threads (default: one per core). The admin API,
        /// rollouts and reloads run on one more thread of their own.
        #[arg(long)]
        workers: Option<usize>,
    },
    /// Validate a config file and print every error.
    Check {
        /// Config file.
        #[arg(short, long, default_value = "weir.toml")]
        config: PathBuf,
    },
    /// Talk to a running weir's admin API: status, pause, resume, promote, abort.
    Ctl(crate::ctl::CtlArgs),
    /// Re-judge a recorded rollout (`[recording]`) under the rollout plans
    /// and gates of another config: what it would have decided, and when.
    Replay(crate::replay::ReplayArgs),
    /// Run a whole staged rollout on built-in upstreams and traffic (about a minute).
    Demo {
        /// Use a degraded canary (8 % errors, +40 ms): watch it roll back.
        #[arg(long)]
        bad_canary: bool,
        /// Short schedule (1 s bakes), for CI.
        #[arg(long)]
        fast: bool,
        /// Record the rollout's traffic and events to this file
        /// (`[recording]`), for `weir replay`.
        #[arg(long)]
        record: Option<PathBuf>,
    },
}

/// Runs the parsed command line and returns the process exit code.
pub fn main(cli: Cli) -> ExitCode {
    match cli.command {
        Command::Check { config } => check(&config),
        Command::Ctl(args) => crate::ctl::main(args),
        Command::Replay(args) => match crate::reload::read_config(&args.config) {
            Ok(cfg) => crate::replay::main(&args, &cfg),
            Err(e) => invalid(&args.config, &e),
        },
        Command::Run { config, workers } => {
            crate::log::init();
            let rt = match runtime(workers) {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("weir: cannot start the runtime: {e}");
                    return ExitCode::from(EXIT_RUNTIME);
                }
            };
            rt.block_on(crate::run(config))
        }
        Command::Demo { bad_canary, fast, record } => {
            let rt = match runtime(None) {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("weir: cannot start the runtime: {e}");
                    return ExitCode::from(EXIT_RUNTIME);
                }
            };
            rt.block_on(crate::demo::run(bad_canary, fast, record))
        }
    }
}

/// `--workers 1` gets a current-thread runtime: no work-stealing machinery
/// for a single worker (the benchmarks pin weir to one core this way).
fn runtime(workers: Option<usize>) -> std::io::Result<tokio::runtime::Runtime> {
    let mut b = match workers {
        Some(1) => tokio::runtime::Builder::new_current_thread(),
        Some(n) => {
            let mut b = tokio::runtime::Builder::new_multi_thread();
            b.worker_threads(n.max(1));
            b
        }
        None => tokio::runtime::Builder::new_multi_thread(),
    };
    b.enable_all().thread_name("weir-worker").build()
}

fn check(path: &std::path::Path) -> ExitCode {
    match crate::reload::read_config(path) {
        Ok(cfg) => {
            println!("{}: ok ({} backends, {} routes)", path.display(), cfg.backends.len(), cfg.routes.len());
            for (key, why) in weir_control::config::warnings(&cfg) {
                eprintln!("warning: {key}: {why}");
            }
            // Finished rollouts still configured (the state file tells
            // how long ago they finished).
            let state = saved_state(&cfg, path);
            let now = crate::clock::now_ms();
            for (key, why) in weir_control::rollout::lifecycle::warnings(&cfg, state.as_ref(), now) {
                eprintln!("warning: {key}: {why}");
            }
            if cfg.fleet.is_some() && !cfg!(feature = "fleet") {
                // Valid, but this binary could not run it.
                eprintln!("note: [fleet] needs a weir built with fleet mode (`--features fleet`); this one was not");
            }
            ExitCode::SUCCESS
        }
        Err(e) => invalid(path, &e),
    }
}

/// The rollouts' saved state (`state.file`, not in fleet mode), if it can
/// be read: `weir check` only reads it, for its warnings.
fn saved_state(cfg: &weir_control::config::Config, path: &std::path::Path) -> Option<StateFile> {
    let file = cfg.state.file.as_deref().filter(|_| cfg.fleet.is_none())?;
    let bytes = std::fs::read(crate::files::config_relative(file, Some(path))).ok()?;
    match StateFile::from_json(&bytes) {
        Ok(state) => Some(state),
        Err(e) => {
            eprintln!("warning: state.file: not a weir state file ({e}): rollouts would start afresh");
            None
        }
    }
}

/// Says why the config at `path` was refused; the exit code for it.
fn invalid(path: &std::path::Path, e: &dyn std::fmt::Display) -> ExitCode {
    eprintln!("{}: invalid config", path.display());
    eprintln!("{e}");
    ExitCode::from(EXIT_CONFIG)
}
