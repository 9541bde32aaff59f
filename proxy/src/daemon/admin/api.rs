//! The JSON API: route status with live numbers, and manual actions.

use std::sync::Arc;

use bytes::Bytes;
use http::{Response, StatusCode};
use http_body_util::Full;
use weir_control::rollout::Phase;
use weir_control::sample::Window;
use weir_control::split::Side;

use super::reply::{json, json_error};
use crate::daemon::actions::{self, ActionFailed, ManualAction};
use crate::daemon::context::Daemon;
use crate::dataplane::DataPlane;
use crate::upstream::fault::{Active, Source};

fn live(w: &Window, secs: u64) -> serde_json::Value {
    let ms = |q: f64| w.latency.quantile(q).map(|d| d.as_secs_f64() * 1000.0);
    serde_json::json!({
        "requests": w.counts.total(),
        "rps": w.counts.total() as f64 / secs as f64,
        "error_rate": w.counts.error_rate(),
        "p50_ms": ms(0.5),
        "p99_ms": ms(0.99),
    })
}

/// Every route with its backends, versions, weight, rollout and the live
/// numbers of each backend over the last `window` seconds (default 10).
pub(super) fn routes(daemon: &Daemon, window: Option<String>) -> serde_json::Value {
    let snap = daemon.dp.load();
    let cfg = &snap.config;
    let keep = cfg.telemetry.keep_secs();
    let secs = cfg.telemetry.span_secs(window.and_then(|w| w.trim_end_matches('s').parse::<u64>().ok()).unwrap_or(10));
    let now = daemon.dp.telemetry.now_sec();
    let list: Vec<serde_json::Value> = snap
        .routes
        .routes()
        .iter()
        .zip(&cfg.routes)
        .map(|(r, c)| {
            let backend = |name: &str, side: Side| {
                let stats = r.stats(side).map(|s| live(&s.window(now, secs, keep), secs));
                serde_json::json!({
                    "backend": name,
                    "version": cfg.backends.get(name).and_then(|b| b.version.clone()),
                    "release": cfg.release_of(name),
                    "live": stats,
                })
            };
            let rollout = r.state.engine().as_ref().map(|e| {
                let st = e.state();
                let now = crate::clock::engine_ms();
                // Only a pause or an end has a cause worth repeating.
                let cause = match st.phase {
                    Phase::Paused | Phase::RolledBack => daemon.audit.last_cause(&r.name),
                    _ => None,
                };
                serde_json::json!({
                    "summary": e.summary(now, cause.as_deref()),
                    "state": st.phase.as_str(),
                    "stage": st.stage,
                    "stages": e.plan().stages.iter().map(|s| s.weight.percent()).collect::<Vec<_>>(),
                    "since_ms": st.since_ms,
                    "started_ms": e.started_ms(),
                    "age_ms": now.saturating_sub(e.started_ms()),
                    // Whether the gates still judge the canary (false once a
                    // promotion's bake is over, or after a rollback).
                    "judging": e.judging(now),
                    "warming_until_ms": e.warming_until(),
                    "consecutive_failures": st.consecutive_failures,
                    "failure_threshold": e.plan().failure_threshold,
                    "verdicts": st.verdicts,
                })
            });
            serde_json::json!({
                "name": &*r.name,
                "stable": backend(&c.stable, Side::Stable),
                "canary": c.canary.as_deref().map(|b| backend(b, Side::Canary)),
                "weight": r.state.weight().percent(),
                "rollout": rollout,
            })
        })
        .collect();
    serde_json::json!({ "window_secs": secs, "routes": list })
}

/// `GET /api/v1/dashboard?since=S&events=N`: everything the dashboard
/// shows, in its one poll a second: the routes (as `GET /api/v1/routes`),
/// the fleet (`null` without fleet mode), the audit events numbered `N` on
/// and the charts' points changed after `S` (see `history.rs`); the
/// answer's `events.next` and `history.seq` are the next poll's `N` and `S`.
pub(super) fn dashboard(daemon: &Daemon, since: Option<String>, events: Option<String>) -> serde_json::Value {
    let number = |v: Option<String>| v.and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    let (list, next) = daemon.audit.events_from(number(events));
    #[cfg(feature = "fleet")]
    let fleet = daemon.fleet.get().map(|node| crate::daemon::fleet::view(node));
    #[cfg(not(feature = "fleet"))]
    let fleet: Option<serde_json::Value> = None;
    let mut out = routes(daemon, None);
    out["fleet"] = serde_json::json!(fleet);
    out["events"] = serde_json::json!({ "list": list, "next": next });
    out["history"] = daemon.history.since(number(since));
    out
}

/// Runs a manual action and answers with its audit event.
pub(super) async fn act(daemon: &Arc<Daemon>, route: &str, action: &str, full: bool) -> Response<Full<Bytes>> {
    let action = match (action, full) {
        ("pause", _) => ManualAction::Pause,
        ("resume", _) => ManualAction::Resume,
        ("promote", false) => ManualAction::Promote,
        ("promote", true) => ManualAction::PromoteFull,
        ("abort", _) => ManualAction::Abort,
        _ => return json_error(StatusCode::NOT_FOUND, "unknown action (pause, resume, promote, abort)"),
    };
    #[cfg(feature = "fleet")]
    let done = match daemon.fleet.get() {
        // Fleet mode: the action is a fenced commit for the whole fleet.
        Some(node) => crate::daemon::fleet::act(daemon, node, route, action).await,
        None => actions::act(daemon, route, action),
    };
    #[cfg(not(feature = "fleet"))]
    let done = actions::act(daemon, route, action);
    match done {
        Ok(ev) => json(StatusCode::OK, &serde_json::json!({ "event": ev })),
        Err(e @ ActionFailed::NoRoute(_)) => json_error(StatusCode::NOT_FOUND, &e.to_string()),
        Err(e @ (ActionFailed::NoRollout(_) | ActionFailed::State(_))) => {
            json_error(StatusCode::CONFLICT, &e.to_string())
        }
        Err(e @ ActionFailed::Fleet(_)) => json_error(StatusCode::SERVICE_UNAVAILABLE, &e.to_string()),
    }
}

/// `GET /api/v1/fleet`: this replica's view of the fleet (404 without
/// fleet mode).
pub(super) fn fleet(daemon: &Daemon) -> Response<Full<Bytes>> {
    #[cfg(feature = "fleet")]
    if let Some(node) = daemon.fleet.get() {
        return json(StatusCode::OK, &crate::daemon::fleet::view(node));
    }
    let _ = daemon;
    json_error(StatusCode::NOT_FOUND, "fleet mode is off (no [fleet] section)")
}

/// Every backend with its addresses, version and active fault.
pub(super) fn backends(dp: &DataPlane) -> serde_json::Value {
    let snap = dp.load();
    let list: Vec<serde_json::Value> = snap
        .config
        .backends
        .iter()
        .map(|(name, b)| {
            let slot = dp.faults.slot(name);
            let active = slot.load();
            let fault = active.as_ref().filter(|a| !a.expired()).map(|a| {
                serde_json::json!({
                    "delay_ms": a.fault.delay.map(|d| d.as_secs_f64() * 1000.0),
                    "delay_percent": f64::from(a.fault.delay_bp) / 100.0,
                    "abort_status": a.fault.abort_status,
                    "abort_percent": f64::from(a.fault.abort_bp) / 100.0,
                    "source": match a.source { Source::Config => "config", Source::Api => "api" },
                    "remaining_secs": a.remaining(),
                })
            });
            let endpoints: Vec<serde_json::Value> = snap
                .backends
                .iter()
                .find(|rb| &*rb.name == name.as_str())
                .map(|rb| {
                    rb.endpoints()
                        .iter()
                        .map(|e| {
                            serde_json::json!({
                                "addr": e.addr.to_string(),
                                "ejected": e.is_ejected(),
                                "down": e.is_down(),
                                "in_flight": e.in_flight(),
                                "idle_connections": e.pool.len(),
                            })
                        })
                        .collect()
                })
                .unwrap_or_default();
            // Host names: what they resolve to, and why not when they
            // stopped (their last addresses serve meanwhile).
            let dns: Vec<serde_json::Value> = b
                .addrs
                .iter()
                .filter_map(|a| snap.resolved.get(a).map(|ans| (a, ans)))
                .map(|(a, ans)| {
                    serde_json::json!({
                        "name": a.to_string(),
                        "addrs": ans.addrs.iter().map(ToString::to_string).collect::<Vec<_>>(),
                        "error": ans.error,
                    })
                })
                .collect();
            serde_json::json!({
                "name": name,
                "version": b.version,
                "release": b.release,
                "addrs": b.addrs.iter().map(ToString::to_string).collect::<Vec<_>>(),
                "dns": dns,
                "endpoints": endpoints,
                "tls": b.tls.is_some(),
                "http2": b.http2,
                "fault": fault,
            })
        })
        .collect();
    serde_json::json!({ "backends": list })
}

/// Faults set through the API always end: after this, unless the body
/// gives a `duration`.
const API_FAULT_DURATION: std::time::Duration = std::time::Duration::from_secs(300);

/// `POST` (with a JSON body: `delay`, `delay_percent`, `abort_status`,
/// `abort_percent`, `duration`, validated as the config's `fault` is) or
/// `DELETE` a backend's fault.
pub(super) fn set_fault(dp: &DataPlane, backend: &str, body: Option<&[u8]>) -> Response<Full<Bytes>> {
    if !dp.load().config.backends.contains_key(backend) {
        return json_error(StatusCode::NOT_FOUND, &format!("no backend named \"{backend}\""));
    }
    let slot = dp.faults.slot(backend);
    let Some(body) = body else {
        slot.store(None);
        tracing::warn!(backend, "fault injection off (admin API)");
        return json(StatusCode::OK, &serde_json::json!({ "backend": backend, "fault": null }));
    };
    let parsed = serde_json::from_slice::<serde_json::Value>(body)
        .map_err(|e| format!("body is not JSON: {e}"))
        .and_then(|v| weir_control::config::fault::from_json(&v))
        .map(|mut fault| {
            fault.duration.get_or_insert(API_FAULT_DURATION);
            fault
        });
    match parsed {
        Ok(fault) => {
            tracing::warn!(backend, fault = ?fault, "fault injection on (admin API)");
            slot.store(Some(Arc::new(Active::new(fault, Source::Api))));
            json(StatusCode::OK, &backends(dp))
        }
        Err(e) => json_error(StatusCode::BAD_REQUEST, &e),
    }
}
