//! Once a second, on the daemon thread: fold recorded samples into the
//! current slot, expire faults, publish the routes' current weights, close
//! idle upstream connections past `timeouts.upstream_idle` (or closed by
//! the upstream), count the connections discarded for the upstream's fault
//! (`weir_upstream_connections_discarded_total`), and say when the access
//! log dropped lines; record each rollout's second for the dashboard
//! (`history.rs`).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use super::context::Daemon;
use super::history::numbers;
use weir_control::rollout::Phase;

use crate::clock::{engine_ms, Periodic};
use crate::upstream::Discard;

/// Runs until shutdown.
pub(crate) async fn run(daemon: Arc<Daemon>, shutdown: watch::Receiver<bool>) {
    let dp = &daemon.dp;
    let mut clock = Periodic::new(Duration::from_secs(1), shutdown);
    while clock.tick().await {
        let snap = dp.load_full();
        dp.telemetry.rotate_all();
        dp.faults.expire();
        let (sec, keep, now) = (dp.telemetry.now_sec(), snap.config.telemetry.keep_secs(), engine_ms());
        let mut rollouts = std::collections::HashSet::new();
        for r in snap.routes.routes() {
            r.publish_weight();
            if let Some(engine) = r.state.engine().as_ref() {
                rollouts.insert(&*r.name);
                // Over (rolled back, aborted, promoted and baked): the
                // chart ends there instead of merging the rollout away.
                let over = matches!(engine.state().phase, Phase::RolledBack | Phase::Aborted)
                    || (engine.state().phase == Phase::Promoted && !engine.judging(now));
                if over {
                    continue;
                }
                let side = |s: Option<&crate::telemetry::BackendStats>| {
                    s.map_or([None; 4], |s| numbers(&s.last_second(sec, keep)))
                };
                let (canary, stable) = r.both_stats();
                daemon.history.record(&r.name, engine, [side(stable), side(canary)], sec, now);
            }
        }
        daemon.history.retain(|name| rollouts.contains(name));
        // Idle upstream connections of weir's own client past upstream_idle
        // (or closed by the upstream).
        for b in &snap.backends {
            for ep in b.endpoints() {
                ep.pool.sweep(snap.timeouts.upstream_idle);
            }
            // Connections closed for the upstream's fault since the last tick.
            for why in Discard::ALL {
                let n: u64 = b.endpoints().iter().map(|ep| ep.pool.discards.take(why)).sum();
                dp.telemetry.connections_discarded(&b.name, why.as_str()).increment(n);
            }
        }
        // Addresses a swap retired: once more, then forgotten.
        let retired = std::mem::take(&mut *dp.retired.lock().unwrap_or_else(std::sync::PoisonError::into_inner));
        for ep in retired {
            ep.pool.retire();
        }
        if let Some(log) = &dp.access_log {
            log.warn_if_dropped();
        }
    }
}
