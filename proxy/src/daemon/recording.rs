//! `[recording]`: what `weir replay` re-judges.
//!
//! Once a second this task takes, for every route with a canary, what each
//! backend served in the seconds just over (the one-second slots the gates
//! read, `BackendStats::second`), and the rollout events as they happen
//! (`events.rs`), as JSON lines (`weir_control::recording::Line`) for the
//! writer (`recorder.rs`). At shutdown the seconds not written yet follow.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use weir_control::config::Recording;
use weir_control::recording::{Line, SideSecond};
use weir_control::rollout::Event;

use super::context::Daemon;
use crate::clock::Periodic;

/// Records a rollout event, if recording is on.
pub(crate) fn event(daemon: &Daemon, ev: &Event) {
    let snap = daemon.dp.load_full();
    if let Some(cfg) = &snap.config.recording {
        daemon.recorder.send(cfg, daemon.config_path.as_deref(), &Line::Event { event: Box::new(ev.clone()) });
    }
}

/// Runs until shutdown: one `second` line per route with a canary, each
/// second.
pub(crate) async fn run(daemon: Arc<Daemon>, shutdown: watch::Receiver<bool>) {
    let mut clock = Periodic::on_demand(Duration::from_secs(1), shutdown, daemon.dp.reloads());
    let mut busy = true;
    while clock.tick_if(busy).await {
        let snap = daemon.dp.load_full();
        let Some(cfg) = &snap.config.recording else {
            busy = false;
            continue;
        };
        busy = true;
        // Up to the second before the one just over: a window read that
        // began in it may still be folding into it.
        record_seconds(&daemon, cfg, daemon.dp.telemetry.now_sec().saturating_sub(2));
    }
}

/// At shutdown, once the requests in flight have drained: the seconds not
/// written yet, the current one (cut short) included.
pub(crate) fn record_last(daemon: &Daemon) {
    let snap = daemon.dp.load_full();
    if let Some(cfg) = &snap.config.recording {
        daemon.dp.telemetry.rotate_all();
        record_seconds(daemon, cfg, daemon.dp.telemetry.now_sec());
    }
}

/// Writes every route's seconds after the last one written, up to `upto`
/// (at most the history the slots keep).
fn record_seconds(daemon: &Daemon, cfg: &Recording, upto: u64) {
    let _one_writer = daemon.recorder.writing.lock().unwrap_or_else(|p| p.into_inner());
    let snap = daemon.dp.load_full();
    let keep = snap.config.telemetry.keep_secs();
    let last = daemon.recorder.written.load(Ordering::Relaxed);
    let from = if last == 0 { upto } else { (last + 1).max(upto.saturating_sub(keep)) };
    for sec in from..=upto {
        for route in snap.routes.routes() {
            let (canary, stable) = route.both_stats();
            let Some(canary) = canary else { continue };
            let side = |s: &crate::telemetry::BackendStats| {
                s.second(sec).map(|(counts, buckets)| SideSecond { counts, buckets })
            };
            let (canary, stable) = (side(canary), stable.and_then(side));
            if canary.is_none() && stable.is_none() {
                continue;
            }
            let line = Line::Second { route: route.name.to_string(), sec, stable, canary };
            daemon.recorder.send(cfg, daemon.config_path.as_deref(), &line);
        }
    }
    daemon.recorder.written.fetch_max(upto, Ordering::Relaxed);
}
