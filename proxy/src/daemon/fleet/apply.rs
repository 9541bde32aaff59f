//! Serving the committed state: every replica, the leader included, takes
//! each committed revision once (from the watch, a read, or its own
//! commit), records its events, and serves each route's committed weight,
//! or stable where it may not:
//!
//! | this replica | serves |
//! | --- | --- |
//! | in touch, config fits the committed rollout | the committed weight |
//! | no committed state for the route yet | stable |
//! | its rollout definition or canary differs from the committed one | stable (its reports are ignored) |
//! | out of touch with etcd, under `staleness` | the last committed weight |
//! | out of touch, past `lease_ttl`, and its own canary share breaches the severe rule | stable |
//! | out of touch past `staleness`, not promoted | stable |

use std::collections::BTreeMap;
use std::sync::Arc;

use weir_control::fleet::{stale, Committed, PastOverride};
use weir_control::rollout::{Event, FleetStamp, Observed, Phase};

use super::node::Node;
use crate::daemon::context::Daemon;
use crate::daemon::driver::{local_windows, publish_as};
use crate::daemon::events::{notify, record};
use crate::route::Route;

/// Why a replica serves stable after a local severe breach.
const LOCAL_SEVERE: &str = "severe breach seen here while out of touch with etcd";

/// Why a replica serves stable before the fleet's first commit.
const NOT_YET: &str = "no committed state for the route yet";

/// Why a replica on another config serves stable.
const DIFFERS: &str = "its rollout definition or canary differs from the fleet's";

/// Takes the committed state of revision `rev` if it is newer than what
/// this replica serves; `true` if it was.
pub(super) fn take(daemon: &Arc<Daemon>, node: &Node, doc: Committed, rev: i64) -> bool {
    let events = {
        let mut k = node.lock();
        if k.committed.as_ref().is_some_and(|(_, applied)| *applied >= rev) {
            return false;
        }
        let mut events = doc.events.clone();
        for ev in &mut events {
            ev.fleet = Some(FleetStamp { term: doc.term, revision: rev });
        }
        k.committed = Some((doc.clone(), rev));
        events
    };
    let lag = crate::clock::now_ms().saturating_sub(doc.at_ms) as f64 / 1000.0;
    node.metrics.apply_lag.record(lag);
    node.metrics.applied_revision.set(rev as f64);
    if doc.term > 0 {
        node.metrics.term.set(doc.term as f64);
    }
    reconcile(daemon, node);
    record(daemon, events);
    true
}

/// After this replica committed `new` at `revision` on `prev`: takes it at
/// once if `prev` is the revision it serves (otherwise the watch brings the
/// revisions in between first, so that none is skipped), and sends the
/// notify webhooks, each event stamped with the term and the revision.
/// Returns the stamped events.
pub(super) fn committed(
    daemon: &Arc<Daemon>,
    node: &Node,
    route: &Route,
    new: Committed,
    prev: i64,
    revision: i64,
) -> Vec<Event> {
    let mut events = new.events.clone();
    for ev in &mut events {
        ev.fleet = Some(FleetStamp { term: new.term, revision });
    }
    if node.applied_revision() == prev {
        take(daemon, node, new, revision);
    }
    notify(daemon, route, &events);
    events
}

/// Serves what this replica may for every route (after a new committed
/// state, a reload, or as time passes out of touch).
pub(super) fn reconcile(daemon: &Daemon, node: &Node) {
    let snap = daemon.dp.load_full();
    let keep = snap.config.telemetry.keep_secs();
    let out_of_touch = node.out_of_touch();
    let committed = node.lock().committed.clone();
    let mut overrides = BTreeMap::new();
    let mut fitting = Vec::new();
    let previous = node.lock().overrides.clone();
    for route in snap.routes.routes() {
        let mut slot = route.state.engine();
        let Some(engine) = slot.as_mut() else { continue };
        let name = route.name.to_string();
        let fitting_state = committed
            .as_ref()
            .and_then(|(doc, _)| doc.routes.get(&name))
            .filter(|p| p.fits(engine.plan(), engine.context()));
        if let Some(p) = fitting_state {
            fitting.push(name.clone());
            if !engine.adopt(p.state.clone()) {
                tracing::error!(route = %name, "fleet: the committed stage does not exist in this config");
            }
        }
        let reason = if fitting_state.is_none() {
            Some(match &committed {
                Some((doc, _)) if doc.routes.contains_key(&name) => DIFFERS.to_string(),
                _ => NOT_YET.to_string(),
            })
        } else if stale(engine.state().phase, out_of_touch, node.cfg.staleness) {
            // One text for the whole spell (it is compared from one
            // reconcile to the next).
            Some(format!("out of touch with etcd for longer than staleness ({:?})", node.cfg.staleness))
        } else if out_of_touch >= node.cfg.lease_ttl
            && (previous.get(&name).is_some_and(|r| r == LOCAL_SEVERE) || breaches_here(daemon, route, engine, keep))
        {
            Some(LOCAL_SEVERE.to_string())
        } else {
            None
        };
        publish_as(daemon, route, engine, keep, false, reason.is_some());
        drop(slot);
        match (&reason, previous.get(&name)) {
            (Some(r), old) if old != Some(r) => tracing::warn!(route = %name, "fleet: serving stable: {r}"),
            (None, Some(_)) => tracing::info!(route = %name, "fleet: serving the committed state again"),
            _ => {}
        }
        if let Some(r) = reason {
            overrides.insert(name, r);
        }
    }
    node.metrics.overrides.set(overrides.len() as f64);
    // Fits every committed rollout still running (a finished one, or one
    // no config has any more, needs nobody to tick it).
    let fits = committed.as_ref().is_none_or(|(doc, _)| {
        doc.routes
            .iter()
            .filter(|(_, p)| matches!(p.state.phase, Phase::Progressing | Phase::Paused))
            .all(|(n, _)| fitting.contains(n))
    });
    let mut k = node.lock();
    let now = crate::clock::now_ms();
    // Spells of serving stable: each one that ended is kept for the
    // reports (a replica back in touch says what it did meanwhile).
    for (route, reason) in &previous {
        if overrides.get(route) != Some(reason) {
            let from_ms = k.override_since.remove(route).unwrap_or(now);
            if reason == NOT_YET {
                continue; // waiting for the first commit is no news
            }
            let past = PastOverride { reason: reason.clone(), from_ms, until_ms: now };
            k.past_overrides.insert(route.clone(), past);
        }
    }
    for route in overrides.keys() {
        k.override_since.entry(route.clone()).or_insert(now);
    }
    k.overrides = overrides;
    k.fits = fits;
}

/// Whether this replica's own share of the canary breaches the severe rule
/// (what the engine would roll back at once, whatever the other gates say),
/// judged on its own windows.
fn breaches_here(daemon: &Daemon, route: &Route, engine: &weir_control::rollout::Engine, keep: u64) -> bool {
    let (w, probes) = local_windows(daemon, route, engine, daemon.dp.telemetry.now_sec(), keep);
    let seen =
        Observed { canary: &w.canary, stable: &w.stable, stable_history: &w.stable_history, probes, signals: &[] };
    engine.severe_breach(&seen).is_some()
}
