//! Fault injection: delay and/or abort a share of a backend's requests, from
//! the config or switched on through the admin API, always with an optional
//! time limit after which the fault switches itself off.
//!
//! A backend's fault lives in a slot that survives reloads (keyed by backend
//! name); the request path reads it with one `ArcSwap` load and draws from a
//! per-thread generator. Aborts are answered by weir and never reach the
//! upstream; both kinds are recorded like any other request, so the gates
//! see them: that is how a game day proves the rollback works.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwapOption;
use tokio::time::Instant;
use weir_control::config::Fault;

/// Where an active fault came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Source {
    Config,
    Api,
}

/// A fault in force.
#[derive(Debug)]
pub(crate) struct Active {
    pub(crate) fault: Fault,
    pub(crate) until: Option<Instant>,
    pub(crate) source: Source,
}

impl Active {
    pub(crate) fn new(fault: Fault, source: Source) -> Self {
        let until = fault.duration.map(|d| Instant::now() + d);
        Active { fault, until, source }
    }

    pub(crate) fn expired(&self) -> bool {
        self.until.is_some_and(|u| Instant::now() >= u)
    }

    /// Seconds until it switches off.
    pub(crate) fn remaining(&self) -> Option<f64> {
        self.until.map(|u| u.saturating_duration_since(Instant::now()).as_secs_f64())
    }
}

/// One backend's fault slot.
pub(crate) type Slot = ArcSwapOption<Active>;

/// What to do to one request.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Decision {
    pub(crate) delay: Option<Duration>,
    pub(crate) abort: Option<u16>,
}

/// Draws the fault for one request (lock-free).
pub(crate) fn decide(slot: &Slot) -> Decision {
    let guard = slot.load();
    let Some(active) = guard.as_ref() else { return Decision::default() };
    if active.expired() {
        return Decision::default();
    }
    let f = &active.fault;
    let draw = |bp: u32| bp > 0 && (crate::random::next_random() % 10_000) < u64::from(bp);
    Decision { delay: f.delay.filter(|_| draw(f.delay_bp)), abort: f.abort_status.filter(|_| draw(f.abort_bp)) }
}

/// Fault slots by backend name, kept across reloads.
#[derive(Debug, Default)]
pub(crate) struct Faults {
    #[allow(clippy::disallowed_types)]
    slots: Mutex<HashMap<String, Arc<Slot>>>,
}

impl Faults {
    pub(crate) fn slot(&self, backend: &str) -> Arc<Slot> {
        let mut map = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        map.entry(backend.to_string()).or_insert_with(|| Arc::new(ArcSwapOption::empty())).clone()
    }

    /// Applies a backend's configured fault on (re)load: a changed or new
    /// config fault replaces what is active; a removed one switches off a
    /// config fault (faults set through the API stay until they expire).
    pub(crate) fn configure(&self, backend: &str, old: Option<&Fault>, new: Option<&Fault>) {
        let slot = self.slot(backend);
        if old == new {
            return;
        }
        match new {
            Some(f) => {
                tracing::warn!(backend, fault = ?f, "fault injection on (config)");
                slot.store(Some(Arc::new(Active::new(f.clone(), Source::Config))));
            }
            None => {
                if slot.load().as_ref().is_some_and(|a| a.source == Source::Config) {
                    tracing::warn!(backend, "fault injection off (removed from config)");
                    slot.store(None);
                }
            }
        }
    }

    /// Switches off faults whose time is up.
    pub(crate) fn expire(&self) {
        let map = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        for (name, slot) in map.iter() {
            if slot.load().as_ref().is_some_and(|a| a.expired()) {
                slot.store(None);
                tracing::warn!(backend = %name, "fault injection off (time limit reached)");
            }
        }
    }
}
