//! Rollout events fan out from here: metrics, the `notify` webhook (sent
//! from the daemon thread, whoever emits), and the audit trail.

use weir_control::rollout::{Event, EventKind};

use super::context::Daemon;
use crate::route::Route;

/// Records events: metrics, the notify webhook, and the audit trail.
pub(crate) fn emit(daemon: &Daemon, route: &Route, events: Vec<Event>) {
    let events: Vec<Event> = events
        .into_iter()
        .map(|mut ev| {
            stamp(&mut ev);
            ev
        })
        .collect();
    notify(daemon, route, &events);
    record(daemon, events);
}

/// Records events decided and stamped already: metrics and the audit
/// trail (fleet mode: every replica records each commit's events).
pub(crate) fn record(daemon: &Daemon, events: Vec<Event>) {
    for ev in events {
        daemon.dp.telemetry.rollout_event(&ev);
        super::recording::event(daemon, &ev);
        daemon.audit.record(ev);
    }
}

/// Sends events to the route's `notify` webhook, from the daemon thread
/// (fleet mode: only the replica that committed them).
pub(crate) fn notify(daemon: &Daemon, route: &Route, events: &[Event]) {
    if events.is_empty() {
        return;
    }
    let notify =
        route.state.engine().as_ref().and_then(|e| e.plan().notify.clone().map(|u| (u, e.plan().webhook_timeout)));
    for ev in events {
        if let Some((url, timeout)) = &notify {
            if ev.kind != EventKind::Evaluated {
                if let Ok(body) = serde_json::to_vec(ev) {
                    let (client, url, timeout) = (daemon.webhooks.clone(), url.clone(), *timeout);
                    daemon.runtime.spawn(async move {
                        if let Err(e) = super::webhook::post(&client, &url, body, timeout).await {
                            tracing::warn!("notify webhook {url}: {e}");
                        }
                    });
                }
            }
        }
    }
}

/// Gives an event the wall-clock time it happened at: the engine decides on
/// its own monotonic clock (`clock::engine_ms`), the audit trail tells time
/// as people read it.
pub(crate) fn stamp(ev: &mut Event) {
    ev.at_ms = crate::clock::now_ms();
}

/// Records the events of a snapshot build (rollouts started or restored).
pub(crate) fn emit_built(daemon: &Daemon, events: Vec<Event>) {
    let snap = daemon.dp.load_full();
    for ev in events {
        if let Some(route) = snap.routes.routes().iter().find(|r| *r.name == *ev.route) {
            if let Some(e) = route.state.engine().as_ref() {
                daemon.dp.telemetry.rollout_tick(&route.name, e, false);
            }
            emit(daemon, route, vec![ev]);
        }
    }
}
