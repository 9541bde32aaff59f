//! The latest reading of each `promql` gate (what `promql.rs` writes and
//! the driver reads), apart from the querier so that the daemon's state
//! does not import the task that fills it.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use weir_control::signal::Signal;

/// The latest reading of each (route, gate), and the queries in flight.
#[derive(Default)]
pub(crate) struct Signals {
    latest: Mutex<HashMap<(Arc<str>, String), Signal>>,
    in_flight: Mutex<HashSet<(Arc<str>, String)>>,
}

impl Signals {
    /// The latest readings of `route`'s gates.
    pub(crate) fn of_route(&self, route: &str) -> Vec<Signal> {
        let latest = self.latest.lock().unwrap_or_else(|p| p.into_inner());
        latest.iter().filter(|((r, _), _)| &**r == route).map(|(_, s)| s.clone()).collect()
    }

    pub(super) fn store(&self, route: Arc<str>, signal: Signal) {
        let mut latest = self.latest.lock().unwrap_or_else(|p| p.into_inner());
        latest.insert((route, signal.gate.clone()), signal);
    }

    /// Marks (route, gate) in flight; `false` if it already was.
    pub(super) fn start(&self, key: &(Arc<str>, String)) -> bool {
        self.in_flight.lock().unwrap_or_else(|p| p.into_inner()).insert(key.clone())
    }

    pub(super) fn done(&self, key: &(Arc<str>, String)) {
        self.in_flight.lock().unwrap_or_else(|p| p.into_inner()).remove(key);
    }

    /// Forgets the readings of routes and gates no longer configured.
    pub(super) fn retain(&self, keep: &HashSet<(Arc<str>, String)>) {
        self.latest.lock().unwrap_or_else(|p| p.into_inner()).retain(|k, _| keep.contains(k));
    }
}
