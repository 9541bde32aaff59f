//! Fleet mode (`[fleet]`, cargo feature `fleet`): many replicas run one
//! rollout, on etcd. One leader (an etcd lease on the leader key) ticks
//! the engine on every replica's pooled evidence and commits each decision
//! in a transaction fenced on its term and on the state's revision; every
//! replica, the leader too, serves the committed state from a watch.
//! Without `[fleet]` none of this runs: the driver (`driver.rs`) decides
//! on this process's traffic, and the state file persists it.
//!
//! | file | what it owns |
//! | --- | --- |
//! | `node.rs` | [`Node`]: what this replica knows of the fleet |
//! | `store.rs` | the keys in etcd and the operations on them |
//! | `tasks.rs` | session (lease, campaign), the watch, the reports |
//! | `apply.rs` | serving the committed state, or stable where it may not |
//! | `lead.rs` | the leader: pooled evidence, engine ticks, fenced commits |
//! | `act.rs` | manual actions from any replica, as fenced commits |
//! | `view.rs` | `GET /api/v1/fleet` |
//!
//! The design and its failure table: `docs/architecture.md`, "Fleet mode".

mod act;
mod apply;
mod lead;
pub(crate) mod node;
mod report;
mod store;
mod tasks;
mod view;

use std::sync::Arc;

use tokio::sync::watch::Receiver;

pub(crate) use self::act::act;
pub(crate) use self::node::Node;
pub(crate) use self::view::view;
use super::context::Daemon;
use super::thread::DaemonThread;

/// Connects to etcd (lazily: an etcd out of reach at start is retried by
/// the tasks; the replica serves stable meanwhile).
pub(crate) async fn connect(daemon: &Daemon) -> Result<Arc<Node>, String> {
    let mut cfg = daemon.dp.load().config.fleet.clone().ok_or("no [fleet] section")?;
    // TLS files are relative to the config file, as every path in it.
    if let Some(tls) = &mut cfg.tls {
        for f in [&mut tls.ca_file, &mut tls.cert_file, &mut tls.key_file].into_iter().flatten() {
            *f = crate::files::config_relative(f, daemon.config_path.as_deref());
        }
    }
    let store = store::Store::connect(&cfg).await.map_err(|e| e.to_string())?;
    let id = node::replica_id(&cfg);
    tracing::info!(id = %id, fleet = %cfg.name, endpoints = ?cfg.endpoints, "fleet mode");
    Ok(Arc::new(Node::new(cfg, id, store, daemon.dp.telemetry.fleet())))
}

/// Starts the fleet's tasks on the daemon thread.
pub(crate) fn start(daemon: &Arc<Daemon>, node: &Arc<Node>, thread: &DaemonThread, shutdown: Receiver<bool>) {
    apply::reconcile(daemon, node);
    thread.spawn(tasks::session(node.clone(), shutdown.clone()));
    thread.spawn(tasks::follow(daemon.clone(), node.clone(), shutdown.clone()));
    thread.spawn(tasks::report(daemon.clone(), node.clone(), shutdown.clone()));
    thread.spawn(lead::lead(daemon.clone(), node.clone(), shutdown));
}
