//! The daemon: weir's work beside the data plane, on a thread of its own
//! (`thread.rs`), holding an `Arc<DataPlane>` (see `crate::dataplane`).
//!
//! | file | what it owns |
//! | --- | --- |
//! | `context.rs` | [`Daemon`]: the state every daemon task receives |
//! | `thread.rs` | the daemon thread and its runtime |
//! | `ticker.rs` | once a second: slots, fault expiry, weights, idle pools |
//! | `driver.rs` | the rollout driver: engine ticks, `pre_stage` approval |
//! | `actions.rs` | manual actions (pause, resume, promote, abort) |
//! | `events.rs` | event fan-out: metrics, `notify` webhook, audit |
//! | `webhook.rs` | the webhook client |
//! | `recording.rs`, `recorder.rs` | `[recording]`: per-second slots and events for `weir replay`, and their writer thread |
//! | `promql.rs`, `signals.rs` | the `promql` gates' queries to Prometheus, their latest readings |
//! | `audit.rs` | the audit trail (memory, file, live subscribers) |
//! | `persist.rs` | the state file |
//! | `reload.rs`, `watch.rs` | config reload, and the file watcher |
//! | `resolve.rs` | backend host names followed as their DNS answers run out |
//! | `synthetic.rs`, `checks.rs` | the synthetic request generator, its checks' counters |
//! | `admin/` | the admin listener: health, metrics, JSON API, dashboard |
//! | `fleet/` | fleet mode (feature `fleet`): many replicas, one rollout, on etcd |
//!
//! May import: `dataplane`, `snapshot`, `route`, `upstream` (fault slots,
//! endpoints), `server::{listener, synthetic}`, `telemetry`, `tls`,
//! `files`, `clock`. Nothing in the data plane imports from here.

pub(crate) mod actions;
pub(crate) mod admin;
pub(crate) mod audit;
pub(crate) mod behind;
mod checks;
mod context;
mod driver;
pub(crate) mod events;
#[cfg(feature = "fleet")]
pub(crate) mod fleet;
mod history;
mod ofrep;
pub(crate) mod persist;
mod promql;
pub(crate) mod recorder;
pub(crate) mod recording;
pub mod reload;
mod resolve;
mod signals;
mod synthetic;
pub(crate) mod thread;
mod ticker;
mod watch;
pub(crate) mod webhook;

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::watch::Receiver;
use tokio_util::task::TaskTracker;

pub(crate) use self::context::Daemon;
use self::thread::DaemonThread;

/// Starts the daemon's tasks on its thread: the admin listener, the
/// ticker, the rollout driver, the synthetic generator and (with a config
/// file) the watcher. `admin` must be registered with the daemon runtime.
pub(crate) fn start(
    daemon: &Arc<Daemon>,
    thread: &DaemonThread,
    admin: TcpListener,
    ofrep: Option<TcpListener>,
    data_addr: SocketAddr,
    shutdown: Receiver<bool>,
    tracker: TaskTracker,
) {
    if let Some(ofrep) = ofrep {
        thread.spawn(ofrep::serve(daemon.clone(), ofrep, shutdown.clone(), tracker.clone()));
    }
    thread.spawn(admin::serve(daemon.clone(), admin, shutdown.clone(), tracker));
    thread.spawn(ticker::run(daemon.clone(), shutdown.clone()));
    #[cfg(feature = "fleet")]
    if let Some(node) = daemon.fleet.get() {
        // The fleet's leader decides; this replica serves what it commits.
        fleet::start(daemon, node, thread, shutdown.clone());
    } else {
        thread.spawn(driver::drive(daemon.clone(), shutdown.clone()));
    }
    #[cfg(not(feature = "fleet"))]
    thread.spawn(driver::drive(daemon.clone(), shutdown.clone()));
    thread.spawn(synthetic::run(daemon.clone(), data_addr, shutdown.clone()));
    thread.spawn(promql::run(daemon.clone(), shutdown.clone()));
    thread.spawn(recording::run(daemon.clone(), shutdown.clone()));
    thread.spawn(resolve::run(daemon.clone(), shutdown.clone()));
    if let Some(path) = daemon.config_path.clone() {
        let _daemon_runtime = thread.enter();
        watch::watch_file(daemon.clone(), path, shutdown);
    }
}
