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

use std::sync::Arc;

use weir_control::fleet::{stale, Committed};
use weir_control::rollout::{FleetStamp, Observed, Phase};

use super::super::context::Daemon;
use super::super::driver::{local_windows, publish_as};
use super::super::events::record;
use super::node::Node;

/// Why a replica serves stable after a local severe breach.
const LOCAL_SEVERE: &str = "severe breach seen here while out of touch with etcd";

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

/// Serves what this replica may for every route (after a new committed
/// state, a reload, or as time passes out of touch).
pub(super) fn reconcile(daemon: &Daemon, node: &Node) {
    let snap = daemon.dp.load_full();
    let keep = snap.config.telemetry.keep_secs();
    let out_of_touch = node.out_of_touch();
    let committed = node.lock().committed.clone();
    let mut overrides = std::collections::BTreeMap::new();
    let previous = node.lock().overrides.clone();
    for route in snap.routes.routes() {
        let mut slot = route.state.engine();
        let Some(engine) = slot.as_mut() else { continue };
        let name = route.name.to_string();
        let fitting = committed
            .as_ref()
            .and_then(|(doc, _)| doc.routes.get(&name))
            .filter(|p| p.fits(engine.plan(), engine.context()));
        if let Some(p) = fitting {
            if !engine.adopt(p.state.clone()) {
                tracing::error!(route = %name, "fleet: the committed stage does not exist in this config");
            }
        }
        let reason = if fitting.is_none() {
            Some(match &committed {
                Some((doc, _)) if doc.routes.contains_key(&name) => {
                    "its rollout definition or canary differs from the fleet's".to_string()
                }
                _ => "no committed state for the route yet".to_string(),
            })
        } else if stale(engine.state().phase, out_of_touch, node.cfg.staleness) {
            Some(format!("out of touch with etcd for {}s", out_of_touch.as_secs()))
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
    node.lock().overrides = overrides;
}

/// Whether this replica's own share of the canary breaches the severe rule
/// (what the engine would roll back at once), judged on its own windows.
fn breaches_here(
    daemon: &Daemon,
    route: &crate::route::Route,
    engine: &weir_control::rollout::Engine,
    keep: u64,
) -> bool {
    if !matches!(engine.state().phase, Phase::Progressing | Phase::Paused) {
        return false;
    }
    let (w, probes) = local_windows(daemon, route, engine, daemon.dp.telemetry.now_sec(), keep);
    let mut alone = engine.clone();
    let seen = Observed { canary: &w.canary, stable: &w.stable, stable_history: &w.stable_history, probes };
    alone.tick_with(crate::clock::engine_ms(), &seen);
    alone.state().phase == Phase::RolledBack
}
