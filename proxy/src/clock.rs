//! weir's clocks: the coarse monotonic clock of the data plane's stamps and
//! timeouts, the monotonic clock of the rollout engine and the telemetry
//! slots, the wall clock of audit timestamps, and the [`Periodic`]
//! schedule of background loops.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rustix::time::{clock_gettime, ClockId};
use tokio::sync::watch;

/// Milliseconds on the coarse monotonic clock (never 0). Reading it is a
/// load from the vDSO page (~4 ns here, against ~18 ns for a precise
/// reading); it moves by kernel ticks (1–10 ms). For stamps and timeouts,
/// where a few milliseconds do not matter; latency uses `Instant`.
pub(crate) fn coarse_ms() -> u64 {
    let t = clock_gettime(ClockId::MonotonicCoarse);
    t.tv_sec as u64 * 1000 + t.tv_nsec as u64 / 1_000_000 + 1
}

/// Unix time in milliseconds: the time of audit events, and nothing else.
pub(crate) fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// The rollout engine's clock, in milliseconds: monotonic, anchored to the
/// wall clock when weir started (so the state file's times read as unix
/// times). A wall-clock step while weir runs moves neither bakes nor
/// schedules (issue 21, bug 2); the telemetry's one-second slots are
/// numbered on it too, so a transition's second is a slot's second.
pub(crate) fn engine_ms() -> u64 {
    static ANCHOR: std::sync::OnceLock<(std::time::Instant, u64)> = std::sync::OnceLock::new();
    let (start, unix) = ANCHOR.get_or_init(|| (std::time::Instant::now(), now_ms()));
    unix + start.elapsed().as_millis() as u64
}

/// The clock of a periodic background task: ticks every `period` (late
/// ticks are delayed, not bunched) until weir shuts down.
pub(crate) struct Periodic {
    every: tokio::time::Interval,
    shutdown: watch::Receiver<bool>,
    /// For [`Periodic::tick_if`]: config changes, and whether the clock was
    /// stopped for want of work.
    reloads: Option<watch::Receiver<u64>>,
    stopped: bool,
}

impl Periodic {
    pub(crate) fn new(period: Duration, shutdown: watch::Receiver<bool>) -> Self {
        let mut every = tokio::time::interval(period);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        Periodic { every, shutdown, reloads: None, stopped: false }
    }

    /// A clock for work that only some configs have (health checks, rollout
    /// engines): see [`Periodic::tick_if`]. `reloads` changes with every
    /// snapshot swapped in.
    pub(crate) fn on_demand(period: Duration, shutdown: watch::Receiver<bool>, reloads: watch::Receiver<u64>) -> Self {
        Periodic { reloads: Some(reloads), ..Periodic::new(period, shutdown) }
    }

    /// Waits for the next tick; `false` once weir is shutting down.
    pub(crate) async fn tick(&mut self) -> bool {
        tokio::select! {
            _ = self.shutdown.changed() => false,
            _ = self.every.tick() => true,
        }
    }

    /// Like [`Periodic::tick`] while `busy`; otherwise the clock stops (an
    /// idle weir does not wake for it) until the config is swapped, and
    /// ticks then at once. The first tick after a stop is a period later.
    pub(crate) async fn tick_if(&mut self, busy: bool) -> bool {
        match &mut self.reloads {
            Some(reloads) if !busy => {
                self.stopped = true;
                tokio::select! {
                    _ = self.shutdown.changed() => false,
                    changed = reloads.changed() => changed.is_ok(),
                }
            }
            _ => {
                if std::mem::take(&mut self.stopped) {
                    self.every.reset();
                }
                self.tick().await
            }
        }
    }
}
