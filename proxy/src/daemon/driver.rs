//! The rollout driver: the async shell around `weir_control::rollout`.
//!
//! Every 100 ms it looks for routes whose `interval` is due, reads the
//! canary and stable windows since the rollout's last transition, ticks the
//! engine, and applies the decided weight, stage and cohort to the route in
//! the same tick. Each transition cuts the backends' slots, so the next
//! stage's window starts exactly there (`telemetry::stage`). Events go out
//! through `events.rs`; a stage that is ready asks the `pre_stage` webhook
//! in a task of its own (the gates of every route keep running meanwhile)
//! and advances on its 2xx only if its verdicts of then still pass (a
//! failing or slow webhook means "do not advance", never "pass"). State is
//! persisted after every change. The engine runs on `clock::engine_ms`
//! (monotonic): a wall-clock step moves no schedule.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use weir_control::config::Telemetry as TelemetryConfig;
use weir_control::rollout::{Engine, Observed};
use weir_control::sample::Probes;

use super::context::Daemon;
use super::events::emit;
use super::persist::persist;
use crate::clock::{engine_ms, Periodic};
use crate::route::{Route, RouteState};
use crate::telemetry::{follow, tick_windows, TickWindows};

/// Runs until shutdown.
pub(crate) async fn drive(daemon: Arc<Daemon>, shutdown: watch::Receiver<bool>) {
    let mut due: HashMap<Arc<str>, u64> = HashMap::new();
    let mut clock = Periodic::on_demand(Duration::from_millis(100), shutdown, daemon.dp.reloads());
    let mut busy = true;
    while clock.tick_if(busy).await {
        let snap = daemon.dp.load_full();
        let now = engine_ms();
        let mut changed = false;
        busy = false;
        for route in snap.routes.routes() {
            let Some(interval) = route.state.engine().as_ref().map(|e| e.plan().interval) else { continue };
            busy = true;
            let next = due.entry(route.name.clone()).or_insert(now);
            if now < *next {
                continue;
            }
            *next = now + interval.as_millis() as u64;
            changed |= tick_route(&daemon, route, now, &snap.config.telemetry);
        }
        due.retain(|name, _| snap.routes.routes().iter().any(|r| r.name == *name));
        if changed {
            persist(&daemon);
        }
    }
}

/// Publishes what `engine` decided: the weight, stage and cohort to the
/// request path, then (on a transition) the cut of the route's slots, so
/// that the next stage's data are all at its weight, then the rollout
/// metrics (`evaluated`: with this tick's verdicts). Called with the
/// engine's lock held, by the driver, the approval task and manual actions.
pub(super) fn publish(daemon: &Daemon, route: &Route, engine: &Engine, keep_secs: u64, evaluated: bool) {
    publish_as(daemon, route, engine, keep_secs, evaluated, false);
}

/// [`publish`], serving stable only with `stable_only` (fleet mode: this
/// replica may not serve the engine's weight).
pub(super) fn publish_as(
    daemon: &Daemon,
    route: &Route,
    engine: &Engine,
    keep_secs: u64,
    evaluated: bool,
    stable_only: bool,
) {
    if stable_only {
        route.serve_stable();
    } else {
        route.apply(engine);
    }
    let (canary, stable) = route.both_stats();
    follow(&mut route.state.marks(), engine, canary, stable, daemon.dp.telemetry.now_sec(), keep_secs);
    daemon.dp.telemetry.rollout_tick(&route.name, engine, evaluated);
}

/// Clears a route's `approving` flag when dropped: however the webhook's
/// task ends, the next ready tick may ask again.
struct Approving(Arc<RouteState>);

impl Drop for Approving {
    fn drop(&mut self) {
        self.0.approving.store(false, Ordering::Release);
    }
}

/// The pre_stage webhook's answer for route `name`, asked when its window
/// started at `asked`: applied on the verdicts of now (see
/// `Engine::approve`).
fn approved(daemon: &Arc<Daemon>, name: &str, asked: u64, ok: bool, detail: String) {
    let snap = daemon.dp.load_full();
    let Some(route) = snap.routes.routes().iter().find(|r| *r.name == *name) else { return };
    let ev = {
        let mut slot = route.state.engine();
        let ev = slot.as_mut().and_then(|engine| {
            let ev = engine.approve(engine_ms(), asked, ok, detail)?;
            publish(daemon, route, engine, snap.config.telemetry.keep_secs(), false);
            Some(ev)
        });
        ev
    };
    if let Some(ev) = ev {
        emit(daemon, route, vec![ev]);
        persist(daemon);
    }
}

/// What this process saw of `route` for `engine`'s next tick: the windows
/// since its last transition (cut first if it moved) and the stage's probes.
/// Called with the engine's lock held.
pub(super) fn local_windows(
    daemon: &Daemon,
    route: &Route,
    engine: &Engine,
    sec: u64,
    keep: u64,
) -> (TickWindows, Probes) {
    let (canary, stable) = route.both_stats();
    let w = tick_windows(&mut route.state.marks(), engine, canary, stable, sec, keep);
    let epoch = engine.state().since_ms;
    let probes = Probes {
        synthetic: daemon.synthetic_checks.checks(&route.name, epoch),
        shadow: daemon.dp.shadows.checks(&route.name, epoch),
    };
    (w, probes)
}

/// One evaluation of one route; returns whether the state changed.
fn tick_route(daemon: &Arc<Daemon>, route: &Route, now: u64, telemetry: &TelemetryConfig) -> bool {
    let keep = telemetry.keep_secs();
    let sec = daemon.dp.telemetry.now_sec();
    let (tick, before, before_start, plan_hook) = {
        let mut slot = route.state.engine();
        let Some(engine) = slot.as_mut() else { return false };
        let (w, probes) = local_windows(daemon, route, engine, sec, keep);
        let before = engine.state().clone();
        let before_start = engine.window_start_ms();
        let signals = daemon.signals.of_route(&route.name);
        let seen = Observed {
            canary: &w.canary,
            stable: &w.stable,
            stable_history: &w.stable_history,
            probes,
            signals: &signals,
        };
        let tick = engine.tick_with(now, &seen);
        publish(daemon, route, engine, keep, true);
        (tick, before, before_start, engine.plan().pre_stage.clone().map(|u| (u, engine.plan().webhook_timeout)))
    };
    emit(daemon, route, tick.events);
    if let (true, Some((url, timeout))) = (tick.needs_approval, plan_hook) {
        // Off the tick loop: a slow hook must not delay any route's gates
        // (its own keep running: the severe rule still watches).
        if !route.state.approving.swap(true, Ordering::AcqRel) {
            let body = serde_json::json!({
                "route": &*route.name,
                "stage": before.stage,
                "next_stage": before.stage + 1,
                "weight": route.state.weight().percent(),
            });
            let (daemon, name, asked) = (daemon.clone(), route.name.clone(), before_start);
            let flag = Approving(route.state.clone());
            tokio::spawn(async move {
                let _flag = flag;
                let sender = daemon.webhooks.load_full();
                let call = super::webhook::Call {
                    url: &url,
                    body: body.to_string().into(),
                    sign: true,
                    event: None,
                    timeout,
                    retry: None,
                };
                let shown = weir_control::config::shown_url(&url);
                let (ok, detail) = match sender.send(call).await.answer {
                    Ok((code, _)) if (200..300).contains(&code) => (true, format!("{shown} answered {code}")),
                    Ok((code, _)) => (false, format!("{shown} answered {code}: not advancing")),
                    Err(e) => (false, format!("{shown}: {e}: not advancing")),
                };
                approved(&daemon, &name, asked, ok, detail);
            });
        }
    }
    let after = route.state.engine().as_ref().map(|e| e.state().clone());
    after.is_some_and(|a| a.phase != before.phase || a.stage != before.stage || a.since_ms != before.since_ms)
}
