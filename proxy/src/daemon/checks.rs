//! The synthetic checks' counters per route, kept for the stage they were
//! sent in: the generator (`synthetic.rs`) counts, the rollout driver reads
//! them into the `synthetic` gate's probes.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use weir_control::sample::Checks;

/// One route's synthetic checks in its current stage.
#[derive(Debug, Default)]
pub(crate) struct RouteChecks {
    /// The stage's start (`since_ms`): checks of an earlier stage do not count.
    pub(super) epoch: AtomicU64,
    pub(super) passed: AtomicU64,
    pub(super) failed: AtomicU64,
    /// Canary checks waiting for their answer.
    pub(super) in_flight: AtomicU64,
}

impl RouteChecks {
    /// Starts counting afresh when the stage changed.
    pub(super) fn restart(&self, epoch: u64) {
        if self.epoch.swap(epoch, Ordering::Relaxed) != epoch {
            self.passed.store(0, Ordering::Relaxed);
            self.failed.store(0, Ordering::Relaxed);
        }
    }
}

/// Every route's synthetic check counters.
#[derive(Debug, Default)]
pub(crate) struct SyntheticChecks {
    /// Route name → (epoch = stage start, passed, failed).
    #[allow(clippy::disallowed_types)]
    routes: Mutex<HashMap<String, Arc<RouteChecks>>>,
}

impl SyntheticChecks {
    pub(super) fn route(&self, name: &str) -> Arc<RouteChecks> {
        let mut map = self.routes.lock().unwrap_or_else(|p| p.into_inner());
        map.entry(name.to_string()).or_default().clone()
    }

    /// The route's canary checks since the stage that began at `epoch`.
    pub(crate) fn checks(&self, route: &str, epoch: u64) -> Checks {
        let c = self.route(route);
        if c.epoch.load(Ordering::Relaxed) != epoch {
            return Checks::default();
        }
        Checks { passed: c.passed.load(Ordering::Relaxed), failed: c.failed.load(Ordering::Relaxed) }
    }
}
