//! The windows one rollout tick reads, cut from the recorded slots: the
//! canary's and stable's since the last transition, and stable's whole kept
//! history. Every transition cuts both backends' slots
//! ([`BackendStats::cut`]), so a stage's window holds every request after
//! its transition and none from before, even within the same second (issue
//! 21, bug 3). Requests sent long ago and still unanswered (a hung backend)
//! count as failed in the newest second: completed requests alone never
//! show a backend that answers nothing. The rollout driver and the gate simulation
//! (`benches/src/sim.rs`) both read them here, so the simulation exercises
//! the production cut.

use weir_control::rollout::{Engine, Observed, Tick};
use weir_control::sample::{Probes, Window};

use super::BackendStats;

/// Where the current stage's data start in both backends' slots.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StageMarks {
    /// The engine's window start the marks were cut for.
    since_ms: u64,
    canary: u64,
    stable: u64,
}

/// What [`tick_windows`] cuts.
#[derive(Debug, Default)]
pub struct TickWindows {
    /// The canary since the last transition.
    pub canary: Window,
    /// Stable since the last transition.
    pub stable: Window,
    /// Stable over the whole kept history.
    pub stable_history: Window,
}

/// Cuts both backends' slots when `engine`'s window moved on since `marks`
/// were cut (a transition, a restored or new rollout, a manual action):
/// call it before reading the windows and again after the tick.
pub fn follow(
    marks: &mut Option<StageMarks>,
    engine: &Engine,
    canary: Option<&BackendStats>,
    stable: Option<&BackendStats>,
    now_sec: u64,
    keep_secs: u64,
) {
    let since_ms = engine.window_start_ms();
    if marks.is_some_and(|m| m.since_ms == since_ms) {
        return;
    }
    let cut = |s: Option<&BackendStats>| s.map_or(0, |s| s.cut(now_sec, keep_secs));
    *marks = Some(StageMarks { since_ms, canary: cut(canary), stable: cut(stable) });
}

/// The windows of the next tick at slot second `now_sec`, with `keep_secs`
/// of history kept (a missing side reads as empty). Cuts first where
/// [`follow`] says so.
pub fn tick_windows(
    marks: &mut Option<StageMarks>,
    engine: &Engine,
    canary: Option<&BackendStats>,
    stable: Option<&BackendStats>,
    now_sec: u64,
    keep_secs: u64,
) -> TickWindows {
    follow(marks, engine, canary, stable, now_sec, keep_secs);
    let (mc, ms) = marks.map_or((0, 0), |m| (m.canary, m.stable));
    let stable_history = stable.map(|s| s.window(now_sec, keep_secs, keep_secs)).unwrap_or_default();
    let hung_after = hung_after_secs(&stable_history);
    let sent_sec = crate::clock::coarse_ms() / 1000;
    let read = |s: Option<&BackendStats>, mark| {
        let Some(s) = s else { return Window::default() };
        let mut w = s.window_from(now_sec, keep_secs, mark, keep_secs);
        w.add_unanswered(now_sec, s.unanswered(sent_sec, hung_after));
        w
    };
    TickWindows { canary: read(canary, mc), stable: read(stable, ms), stable_history }
}

/// How long a request may go unanswered before it counts as failed: ten
/// times stable's p99, at least 1 s, at most 60 s.
fn hung_after_secs(stable: &Window) -> u64 {
    let p99 = stable.latency.quantile(0.99).map_or(0.0, |d| d.as_secs_f64());
    ((10.0 * p99).ceil() as u64).clamp(1, 60)
}

/// One tick of `engine` on what `canary` and `stable` recorded, and
/// nothing else (no probes, no outside signals), cutting the slots after a
/// transition: a tick of the gate simulation and of `weir replay`, on the
/// production windows.
pub fn tick_recorded(
    engine: &mut Engine,
    marks: &mut Option<StageMarks>,
    canary: &BackendStats,
    stable: &BackendStats,
    now_ms: u64,
    keep_secs: u64,
) -> Tick {
    let (c, s, sec) = (Some(canary), Some(stable), now_ms / 1000);
    let w = tick_windows(marks, engine, c, s, sec, keep_secs);
    let seen = Observed {
        canary: &w.canary,
        stable: &w.stable,
        stable_history: &w.stable_history,
        probes: Probes::default(),
        signals: &[],
    };
    let tick = engine.tick_with(now_ms, &seen);
    follow(marks, engine, c, s, sec, keep_secs);
    tick
}
