//! [`Daemon`]: the state of weir's work beside the data plane, which every
//! daemon task receives.

use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use arc_swap::{ArcSwap, ArcSwapOption};

use super::audit::Audit;
use super::checks::SyntheticChecks;
use crate::dataplane::DataPlane;

/// The daemon's state: the data plane it steers, and what only the daemon
/// touches.
pub(crate) struct Daemon {
    pub(crate) dp: Arc<DataPlane>,
    /// `GET /readyz`: started and not shutting down.
    pub(crate) ready: AtomicBool,
    /// One reload at a time (file watcher, SIGHUP, [`crate::Weir::apply`]).
    pub(crate) reload_lock: tokio::sync::Mutex<()>,
    /// The config file, when weir was started from one.
    pub(crate) config_path: Option<PathBuf>,
    pub(crate) audit: Audit,
    /// The writer of `state.file` (not in fleet mode: the state is in etcd).
    pub(crate) state_writer: Option<super::behind::Behind>,
    /// The state file could not be read at start (why): rollouts started
    /// held, said by `/readyz`.
    pub(crate) unreadable_state: Option<String>,
    /// The rollouts' webhook sender (`[webhooks]`; rebuilt on a reload
    /// that changes it).
    pub(crate) webhooks: Arc<ArcSwap<super::webhook::Sender>>,
    /// The `notify` sinks' ordered queues (`events::notify`).
    pub(crate) notify_queues: super::webhook::NotifyQueues,
    /// This replica's name, the `source` of its PagerDuty events:
    /// `fleet.replica`, else the host name.
    pub(crate) replica: Arc<str>,
    /// The daemon thread's runtime: webhooks are sent from it whoever emits
    /// the event (the client's connections live there).
    pub(crate) runtime: tokio::runtime::Handle,
    /// The bearer token of mutating admin calls (`admin.token_file`).
    pub(crate) admin_token: ArcSwapOption<String>,
    /// The bearer token of OFREP calls (`ofrep.token_file`).
    pub(crate) ofrep_token: ArcSwapOption<String>,
    /// Wrong tokens per peer (`admin/guard.rs`).
    pub(crate) admin_failures: super::admin::guard::Failures,
    /// Synthetic check counters per route.
    pub(crate) synthetic_checks: SyntheticChecks,
    /// The latest reading of each `promql` gate.
    pub(crate) signals: super::signals::Signals,
    /// Each rollout's numbers for the dashboard's charts.
    pub(crate) history: super::history::History,
    /// `[recording]`'s writer.
    pub(crate) recorder: super::recorder::Recorder,
    /// Fleet mode: this replica in the fleet (set once at start).
    #[cfg(feature = "fleet")]
    pub(crate) fleet: std::sync::OnceLock<std::sync::Arc<super::fleet::node::Node>>,
}
