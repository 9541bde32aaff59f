//! weir's proxy: the async shell around `weir-control`.
//!
//! ```text
//!  client ──TCP──▶ server::listener ──▶ server::conn (h1/h2c, idle + head timers)
//!                                           │ one request
//!                                           ▼
//!                          server::proxy::handle
//!                            1. load the current Snapshot (one ArcSwap load)
//!                            2. route::table: host + longest path prefix
//!                            3. route::select: force > cohort > weight → Side
//!                            4. upstream: pick an address (P2C least in-flight)
//!                            5. strip hop-by-hop, add X-Forwarded-*, send
//!                            6. rescue: any failure → one status (502/503/504)
//!                                           │
//!  config file / SIGHUP ──▶ reload ──▶ snapshot::build (diff by route name)
//!                                           └──▶ ArcSwap::store (atomic)
//! ```
//!
//! Modules: [`cli`] (command line), [`reload`] (config loading and hot
//! reload), [`Weir`] (a running server), [`demo`] (the self-contained demo).

pub mod cli;
pub mod ctl;
pub mod demo;
pub mod reload;

mod access_log;
mod admin;
mod audit;
mod body;
mod log;
mod rescue;
mod rollout;
mod route;
mod server;
mod shadow;
mod snapshot;
mod synthetic;
pub mod telemetry;
mod tls;
mod upstream;
mod wire;

pub use rollout::{ActionFailed, ManualAction};
pub use server::{StartError, Weir};

use std::path::PathBuf;
use std::process::ExitCode;

/// `weir run`: load the config, serve until SIGTERM/SIGINT, drain, exit.
pub async fn run(path: PathBuf) -> ExitCode {
    let cfg = match reload::read_config(&path) {
        Ok(cfg) => cfg,
        Err(e) => {
            tracing::error!("{}: invalid config\n{e}", path.display());
            return ExitCode::from(cli::EXIT_CONFIG);
        }
    };
    let weir = match Weir::start(cfg, Some(path)).await {
        Ok(w) => w,
        Err(e) => {
            tracing::error!("cannot start: {e}");
            return ExitCode::from(cli::EXIT_RUNTIME);
        }
    };
    match weir.serve_until_signal().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            ExitCode::from(cli::EXIT_RUNTIME)
        }
    }
}
