//! What this replica tells the fleet: per route, its windows since the
//! committed window start, as exact buckets ([`MemberReport`]).

use std::collections::BTreeMap;

use weir_control::fleet::{MemberReport, RouteReport, WindowReport};
use weir_control::rollout::Engine;

use super::node::Node;
use crate::daemon::context::Daemon;
use crate::daemon::driver::local_windows;
use crate::route::Route;

/// `route`'s evidence at this replica (the engine's lock held).
pub(super) fn route_report(daemon: &Daemon, route: &Route, engine: &Engine) -> RouteReport {
    let keep = daemon.dp.load().config.telemetry.keep_secs();
    let (w, probes) = local_windows(daemon, route, engine, daemon.dp.telemetry.now_sec(), keep);
    RouteReport {
        rollout: weir_control::fingerprint(engine.plan()),
        canary: engine.context().canary_build.clone(),
        window_start_ms: engine.window_start_ms(),
        canary_window: WindowReport::of(&w.canary),
        stable_window: WindowReport::of(&w.stable),
        stable_history: WindowReport::of(&w.stable_history),
        probes,
    }
}

/// This replica's report: every route with a rollout.
pub(super) fn member_report(daemon: &Daemon, node: &Node) -> MemberReport {
    let snap = daemon.dp.load_full();
    let mut routes = BTreeMap::new();
    for r in snap.routes.routes() {
        let slot = r.state.engine();
        if let Some(engine) = slot.as_ref() {
            routes.insert(r.name.to_string(), route_report(daemon, r, engine));
        }
    }
    let known = node.lock();
    MemberReport {
        id: node.id.clone(),
        config_hash: weir_control::fingerprint(&*snap.config),
        applied_revision: known.committed.as_ref().map_or(0, |(_, rev)| *rev),
        at_ms: crate::clock::now_ms(),
        routes,
        overrides: known.overrides.clone(),
        past_overrides: known.past_overrides.clone(),
        // Unread, the committed state may not fit: claim nothing.
        fits: known.fits && known.state_read,
    }
}
