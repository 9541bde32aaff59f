//! The rollout driver: the async shell around `weir_control::rollout`.
//!
//! Every 100 ms it looks for routes whose `interval` is due, reads the
//! canary and stable windows since the rollout's last transition, ticks the
//! engine, and applies the decided weight, stage and cohort to the route in
//! the same tick. Events go out through `events.rs`; a stage that is ready
//! waits for the `pre_stage` webhook's 2xx (a failing or slow webhook means
//! "do not advance", never "pass"). State is persisted after every change.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use weir_control::config::Telemetry as TelemetryConfig;
use weir_control::sample::{Probes, Window};
use weir_control::split::Side;

use super::context::Daemon;
use super::events::emit;
use super::persist::persist;
use crate::clock::{now_ms, Periodic};
use crate::route::Route;

/// Runs until shutdown.
pub(crate) async fn drive(daemon: Arc<Daemon>, shutdown: watch::Receiver<bool>) {
    let mut due: HashMap<Arc<str>, u64> = HashMap::new();
    let mut clock = Periodic::on_demand(Duration::from_millis(100), shutdown, daemon.dp.reloads());
    let mut busy = true;
    while clock.tick_if(busy).await {
        let snap = daemon.dp.load_full();
        let now = now_ms();
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
            changed |= tick_route(&daemon, route, now, &snap.config.telemetry).await;
        }
        due.retain(|name, _| snap.routes.routes().iter().any(|r| r.name == *name));
        if changed {
            persist(&daemon);
        }
    }
}

/// One evaluation of one route; returns whether the state changed.
async fn tick_route(daemon: &Daemon, route: &Route, now: u64, telemetry: &TelemetryConfig) -> bool {
    let keep = telemetry.keep_secs();
    let sec = daemon.dp.telemetry.now_sec();
    let (tick, before, plan_hook) = {
        let mut slot = route.state.engine();
        let Some(engine) = slot.as_mut() else { return false };
        // The window covers the time since the last transition, rounded up
        // to whole one-second slots.
        let span = telemetry.span_secs(engine.window_ms(now).div_ceil(1000));
        let empty = Window::default();
        let canary = route.stats(Side::Canary).map(|s| s.window(sec, span, keep));
        let stable = route.stats(Side::Stable).map(|s| s.window(sec, span, keep));
        let before = engine.state().clone();
        let epoch = engine.state().since_ms;
        let probes = Probes {
            synthetic: daemon.synthetic_checks.checks(&route.name, epoch),
            shadow: daemon.dp.shadows.checks(&route.name, epoch),
        };
        let tick = engine.tick_with(now, canary.as_ref().unwrap_or(&empty), stable.as_ref().unwrap_or(&empty), probes);
        route.apply(engine);
        daemon.dp.telemetry.rollout_tick(&route.name, engine, true);
        (tick, before, engine.plan().pre_stage.clone().map(|u| (u, engine.plan().webhook_timeout)))
    };
    emit(daemon, route, tick.events);
    if tick.needs_approval {
        if let Some((url, timeout)) = plan_hook {
            let body = serde_json::json!({
                "route": &*route.name,
                "stage": before.stage,
                "next_stage": before.stage + 1,
                "weight": route.state.weight().percent(),
            });
            let answer = super::webhook::post(&daemon.webhooks, &url, body.to_string().into_bytes(), timeout).await;
            let (ok, detail) = match answer {
                Ok(code) if (200..300).contains(&code) => (true, format!("{url} answered {code}")),
                Ok(code) => (false, format!("{url} answered {code}: not advancing")),
                Err(e) => (false, format!("{url}: {e}: not advancing")),
            };
            let ev = {
                let mut slot = route.state.engine();
                let Some(engine) = slot.as_mut() else { return false };
                let ev = engine.approve(now_ms(), ok, detail);
                route.apply(engine);
                daemon.dp.telemetry.rollout_tick(&route.name, engine, false);
                ev
            };
            emit(daemon, route, vec![ev]);
        }
    }
    let after = route.state.engine().as_ref().map(|e| e.state().clone());
    after.is_some_and(|a| a.phase != before.phase || a.stage != before.stage || a.since_ms != before.since_ms)
}
