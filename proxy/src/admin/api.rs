//! The JSON API: route status with live numbers, and manual actions.

use std::sync::Arc;

use bytes::Bytes;
use http::{Response, StatusCode};
use http_body_util::Full;
use weir_control::sample::Window;
use weir_control::split::Side;

use super::{json, json_error};
use crate::rollout::{ActionFailed, ManualAction};
use crate::server::Shared;

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
pub(super) fn routes(shared: &Shared, window: Option<String>) -> serde_json::Value {
    let snap = shared.snapshot.load();
    let cfg = &snap.config;
    let keep = cfg.telemetry.window_max.as_secs().max(1);
    let secs = window.and_then(|w| w.trim_end_matches('s').parse::<u64>().ok()).unwrap_or(10).clamp(1, keep);
    let now = shared.telemetry.now_sec();
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
                    "live": stats,
                })
            };
            let rollout = r.state.engine().as_ref().map(|e| {
                let st = e.state();
                serde_json::json!({
                    "state": st.phase.as_str(),
                    "stage": st.stage,
                    "stages": e.plan().stages.iter().map(|s| s.weight.percent()).collect::<Vec<_>>(),
                    "since_ms": st.since_ms,
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

/// Runs a manual action and answers with its audit event.
pub(super) fn act(shared: &Arc<Shared>, route: &str, action: &str, full: bool) -> Response<Full<Bytes>> {
    let action = match (action, full) {
        ("pause", _) => ManualAction::Pause,
        ("resume", _) => ManualAction::Resume,
        ("promote", false) => ManualAction::Promote,
        ("promote", true) => ManualAction::PromoteFull,
        ("abort", _) => ManualAction::Abort,
        _ => return json_error(StatusCode::NOT_FOUND, "unknown action (pause, resume, promote, abort)"),
    };
    match crate::rollout::manual(shared, route, action) {
        Ok(ev) => json(StatusCode::OK, &serde_json::json!({ "event": ev })),
        Err(e @ ActionFailed::NoRoute(_)) => json_error(StatusCode::NOT_FOUND, &e.to_string()),
        Err(e @ (ActionFailed::NoRollout(_) | ActionFailed::State(_))) => {
            json_error(StatusCode::CONFLICT, &e.to_string())
        }
    }
}
