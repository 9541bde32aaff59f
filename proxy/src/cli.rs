//! Command line: `weir run | check | ctl | replay | import | demo | completions | man`.

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
#[command(
    name = "weir",
    version,
    about = "A progressive-delivery reverse proxy",
    after_long_help = "Exit codes: 0 ok; 2 bad usage; 78 invalid config (or a file or host name it names); \
70 run-time failure; 65 unreadable recording (weir replay) or input (weir import); weir import: 1 something \
not imported exactly (--strict), 73 output not written; weir ctl: 1 refused, 3 no such route, \
4 missing, wrong or refused token, 5 admin API unreachable, 6 other outcome, 7 timed out.\n\n\
Environment: WEIR_CONFIG (the config file), WEIR_WORKERS (data-plane threads), WEIR_ADMIN and \
WEIR_ADMIN_TOKEN (weir ctl), RUST_LOG (process log filter, default info)."
)]
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
        /// Config file (else `$WEIR_CONFIG`, else weir.toml).
        #[arg(short, long, default_value = "weir.toml", env = "WEIR_CONFIG")]
        config: PathBuf,
        /// Data-plane worker threads (else `$WEIR_WORKERS`, else one per
        /// core the process may use, its cgroup CPU quota included). The admin API, rollouts and
        /// reloads run on one more thread of their own.
        #[arg(long, env = "WEIR_WORKERS", value_parser = clap::value_parser!(u16).range(1..=1024))]
        workers: Option<u16>,
    },
    /// Validate a config file as `weir run` would load it: the text, then
    /// every file it names (token files, certificates, keys, CA bundles)
    /// and every backend host name; print every error.
    Check {
        /// Config file (else `$WEIR_CONFIG`, else weir.toml).
        #[arg(short, long, default_value = "weir.toml", env = "WEIR_CONFIG")]
        config: PathBuf,
        /// Do not resolve backend host names (offline CI).
        #[arg(long)]
        no_resolve: bool,
        /// Check the config text only: no files read, no names resolved
        /// (a config for another machine, whose files are not here).
        #[arg(long)]
        syntax_only: bool,
    },
    /// Talk to a running weir's admin API: status, pause, resume, promote, abort.
    Ctl(crate::ctl::CtlArgs),
    /// Re-judge a recorded rollout (`[recording]`) under the rollout plans
    /// and gates of another config: what it would have decided, and when.
    Replay(crate::replay::ReplayArgs),
    /// Write a weir config from another proxy's configuration (today:
    /// ingress-nginx canary Ingresses), saying what it could not carry over.
    Import(crate::import::ImportArgs),
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
    /// Print a shell completion script (e.g. `weir completions bash >
    /// /etc/bash_completion.d/weir`).
    Completions {
        /// The shell.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print weir's man page (roff), or write one page per command into a
    /// directory.
    Man {
        /// Write weir.1, weir-run.1, weir-check.1, ... into this directory.
        #[arg(long)]
        dir: Option<PathBuf>,
    },
}

/// Runs the parsed command line and returns the process exit code.
pub fn main(cli: Cli) -> ExitCode {
    match cli.command {
        Command::Check { config, no_resolve, syntax_only } => {
            let scope = (!syntax_only).then_some(crate::preflight::Scope { resolve: !no_resolve });
            check(&config, scope)
        }
        Command::Ctl(args) => crate::ctl::main(args),
        Command::Import(args) => crate::import::main(args),
        Command::Replay(args) => match crate::reload::read_config(&args.config) {
            Ok(cfg) => crate::replay::main(&args, &cfg),
            Err(e) => invalid(&args.config, &e),
        },
        Command::Run { config, workers } => {
            // The process log's format is the config's (text if it does
            // not parse: `run` says why in it).
            let format = crate::reload::read_config(&config).map(|c| c.log.format).unwrap_or_default();
            crate::log::init(format);
            let rt = match runtime(workers.map(usize::from)) {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("weir: cannot start the runtime: {e}");
                    return ExitCode::from(EXIT_RUNTIME);
                }
            };
            rt.block_on(crate::run(config))
        }
        Command::Completions { shell } => {
            let mut cmd = <Cli as clap::CommandFactory>::command();
            clap_complete::generate(shell, &mut cmd, "weir", &mut std::io::stdout());
            ExitCode::SUCCESS
        }
        Command::Man { dir } => {
            let cmd = <Cli as clap::CommandFactory>::command();
            let written = match &dir {
                Some(d) => clap_mangen::generate_to(cmd, d),
                None => clap_mangen::Man::new(cmd).render(&mut std::io::stdout()),
            };
            match written {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("weir man: {e}");
                    ExitCode::from(EXIT_RUNTIME)
                }
            }
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

fn check(path: &std::path::Path, scope: Option<crate::preflight::Scope>) -> ExitCode {
    match crate::reload::read_config(path) {
        Ok(cfg) => {
            if let Some(scope) = scope {
                let problems = match runtime(Some(1)) {
                    Ok(rt) => rt.block_on(crate::preflight::problems(&cfg, path, scope)),
                    Err(e) => vec![format!("cannot start the runtime: {e}")],
                };
                if !problems.is_empty() {
                    eprintln!("{}: the config is valid, but weir could not run it:", path.display());
                    for p in &problems {
                        eprintln!("{p}");
                    }
                    return ExitCode::from(EXIT_CONFIG);
                }
            }
            println!("{}: ok ({} backends, {} routes)", path.display(), cfg.backends.len(), cfg.routes.len());
            for (key, why) in weir_control::config::warnings(&cfg) {
                eprintln!("warning: {key}: {why}");
            }
            if scope.is_some() {
                let tokens = [
                    ("admin.token_file", crate::files::admin_token(&cfg, Some(path))),
                    ("ofrep.token_file", crate::files::ofrep_token(&cfg, Some(path))),
                ];
                for (key, token) in tokens {
                    if let Some(why) = token.ok().flatten().as_deref().and_then(|t| crate::files::weak_token(t)) {
                        eprintln!("warning: {key}: the token {why}");
                    }
                }
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
