//! weir's proxy: the async shell around `weir-control`.
//!
//! ```text
//!  client ──TCP──▶ server::listener ──▶ server::conn (h1 loop or hyper, TLS, timers)
//!                                           │ one request
//!                                           ▼
//!                          server::proxy::respond, its phases:
//!                            1. load the current Snapshot (one ArcSwap load)
//!                            2. route::table: host + longest path prefix
//!                            3. route::select: force > cohort > weight → Side
//!                            4. upstream: pick an address (P2C least in-flight)
//!                            5. strip hop-by-hop, add X-Forwarded-*, send
//!                            6. rescue: any failure → one status (502/503/504)
//!                                           │
//!  daemon (its own thread): config file / SIGHUP ──▶ daemon::reload
//!        ──▶ snapshot::build (diff by route name) ──▶ DataPlane::swap_in
//!        rollout driver ──▶ control's engine ──▶ route weights (atomics)
//! ```
//!
//! Two sides that the types keep apart: the **data plane** (`server/`,
//! `route/`, `upstream/`) receives one [`dataplane::DataPlane`] and nothing
//! else; the **daemon** (`daemon/`) holds an `Arc<DataPlane>` and runs on a
//! thread of its own. `docs/architecture.md` has the module map.
//!
//! Public: [`cli`] (command line), [`ctl`] (`weir ctl`), [`demo`] (the
//! self-contained demo), [`reload`] (reading a config file), [`Weir`] (a
//! running server), [`telemetry`].

pub mod cli;
pub mod ctl;
pub mod demo;
pub mod import;
pub mod replay;
pub mod telemetry;

mod clock;
mod daemon;
mod dataplane;
mod dns;
mod files;
mod log;
mod otel;
mod preflight;
mod random;
mod route;
mod server;
mod snapshot;
mod tls;
mod upstream;
mod weir;
mod wire;

pub use daemon::actions::{ActionFailed, ManualAction};
pub use daemon::reload;
pub use weir::{StartError, Weir};

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
    reload::log_warnings(&cfg);
    let weir = match Weir::start(cfg, Some(path)).await {
        Ok(w) => w,
        Err(e) => {
            tracing::error!("cannot start: {e}");
            // What the config names (a certificate, a token file, a host
            // name) is the config's problem; a port taken is not.
            let config = matches!(e, StartError::Build(_) | StartError::Token(_) | StartError::NoFleet);
            return ExitCode::from(if config { cli::EXIT_CONFIG } else { cli::EXIT_RUNTIME });
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
