//! [`DataPlane`]: everything the data plane (listeners, connections, the
//! request path, upstreams, health checks) receives, and nothing else.
//!
//! The daemon beside it (`daemon/`: admin API, rollout driver, persistence,
//! webhooks, reload, synthetic traffic) holds an `Arc<DataPlane>`; the data
//! plane holds no handle back. So the compiler keeps control-side objects
//! (the daemon's runtime, its locks, the webhook client) off the request
//! path.

use std::sync::atomic::{AtomicBool, AtomicUsize};
use std::sync::Arc;

use arc_swap::{ArcSwap, Guard};
use tokio::sync::watch;

use crate::server::access_log::AccessLog;
use crate::server::shadow::Shadows;
use crate::server::synthetic::SyntheticTag;
use crate::snapshot::Snapshot;
use crate::telemetry::Telemetry;
use crate::upstream::fault::Faults;

/// The data plane's shared state.
pub(crate) struct DataPlane {
    /// The config generation serving now (one `ArcSwap` load per request).
    snapshot: ArcSwap<Snapshot>,
    /// The generation of each snapshot swapped in: background loops with
    /// nothing to do in the current config sleep until it changes.
    reloads: watch::Sender<u64>,
    pub(crate) access_log: Option<AccessLog>,
    /// Shutdown has begun: connections close after their current request.
    pub(crate) draining: AtomicBool,
    /// Notified once `draining` is set: wakes every connection waiting
    /// between requests. A `Notified` is smaller than a `watch` receiver
    /// and its `changed()` future (64 against 136 bytes), and every idle
    /// connection holds one.
    pub(crate) drain: tokio::sync::Notify,
    /// SIGTERM came and `timeouts.drain_delay` runs: still accepting and
    /// serving, but HTTP/1.1 responses say `Connection: close`, so that
    /// clients open their next connection elsewhere.
    pub(crate) leaving: AtomicBool,
    /// The same moment, for HTTP/2 connections (served by hyper): each
    /// one open then gets a GOAWAY.
    pub(crate) leave: watch::Sender<bool>,
    /// Requests in flight on the data listener.
    pub(crate) in_flight: Arc<AtomicUsize>,
    pub(crate) telemetry: Telemetry,
    /// Tells weir's own synthetic requests apart.
    pub(crate) synthetic_tag: SyntheticTag,
    /// Shadow comparison counters per route.
    pub(crate) shadows: Shadows,
    /// Fault slots per backend (the admin API switches them).
    pub(crate) faults: Faults,
    /// Endpoints just retired by a swap: the ticker retires them once more
    /// (a connection returned in the instant of the first), then lets go.
    pub(crate) retired: std::sync::Mutex<Vec<Arc<crate::upstream::Endpoint>>>,
    /// `[tracing]`'s exporter (set at start; `None` when off).
    pub(crate) otel: Option<crate::otel::Otel>,
}

impl DataPlane {
    pub(crate) fn new(
        first: Snapshot,
        access_log: Option<AccessLog>,
        telemetry: Telemetry,
        faults: Faults,
        otel: Option<crate::otel::Otel>,
    ) -> Self {
        let generation = first.generation;
        telemetry.set_keep(first.config.telemetry.keep_secs());
        DataPlane {
            snapshot: ArcSwap::from_pointee(first),
            reloads: watch::Sender::new(generation),
            access_log,
            draining: AtomicBool::new(false),
            drain: tokio::sync::Notify::new(),
            leaving: AtomicBool::new(false),
            leave: watch::Sender::new(false),
            in_flight: Default::default(),
            telemetry,
            synthetic_tag: SyntheticTag::new(),
            shadows: Shadows::default(),
            faults,
            retired: Default::default(),
            otel,
        }
    }

    /// The current snapshot, for use before the next `.await`.
    pub(crate) fn load(&self) -> Guard<Arc<Snapshot>> {
        self.snapshot.load()
    }

    /// The current snapshot, to keep across `.await`s.
    pub(crate) fn load_full(&self) -> Arc<Snapshot> {
        self.snapshot.load_full()
    }

    /// Swaps in the next generation (new requests and connections take it;
    /// those in flight finish on theirs) and wakes the loops that wait for
    /// a config change.
    pub(crate) fn swap_in(&self, next: Snapshot) {
        let generation = next.generation;
        // Slots are kept as long as the longest window may need them.
        self.telemetry.set_keep(next.config.telemetry.keep_secs());
        let next = Arc::new(next);
        let prev = self.snapshot.swap(next.clone());
        // Addresses gone (a backend removed or changed, a DNS answer that
        // no longer has them): their idle connections close now, and those
        // still in flight close when done, not kept by connections that
        // hold an older snapshot.
        let kept: std::collections::HashSet<*const crate::upstream::Endpoint> =
            next.backends.iter().flat_map(|b| b.endpoints().iter().map(Arc::as_ptr)).collect();
        let mut retired = self.retired.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        for e in prev.backends.iter().flat_map(|b| b.endpoints()) {
            if !kept.contains(&Arc::as_ptr(e)) {
                e.pool.retire();
                retired.push(e.clone());
            }
        }
        drop(retired);
        self.reloads.send_replace(generation);
    }

    /// Starts `timeouts.drain_delay` (see `leaving`).
    pub(crate) fn start_leaving(&self) {
        self.leaving.store(true, std::sync::atomic::Ordering::Relaxed);
        self.leave.send_replace(true);
    }

    /// Changes with every snapshot swapped in (see [`crate::clock::Periodic`]).
    pub(crate) fn reloads(&self) -> watch::Receiver<u64> {
        self.reloads.subscribe()
    }
}
