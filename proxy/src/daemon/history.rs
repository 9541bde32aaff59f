//! What the dashboard charts: each rollout's numbers, second by second, from
//! its start (kept in memory, bounded).
//!
//! The ticker records one point a second per route with a rollout: each
//! side's request rate, error rate, p50 and p99 over the second that just
//! ended, the weight and stage, and every gate's latest verdict (its value,
//! limit, always-valid bound and p-value, samples). A new attempt of the
//! rollout (its start time changed) starts a new track.
//!
//! **Bounded.** A track holds [`MAX_POINTS`] at most: when full, neighbours
//! are merged in pairs and the step doubles (1 s, 2 s, 4 s, …), so a
//! rollout of any length is covered whole at the finest step that fits
//! (an hour at 8 s). Merged points average the rates and p50, and keep the
//! worst p99 and the latest verdicts.
//!
//! **Polled incrementally.** Every change takes a number from one sequence:
//! a poll `since` a number gets only the points changed after it, or the
//! whole track when it was restarted or merged since (`full`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use serde_json::{json, Value};
use weir_control::gate::{GateResult, Verdict};
use weir_control::rollout::Engine;
use weir_control::sample::Window;

/// Points per track at most.
pub(crate) const MAX_POINTS: usize = 600;

/// One side's numbers over a second: req/s, error rate (fraction), p50 and
/// p99 (ms). `None` where there was nothing to measure.
type SideNumbers = [Option<f64>; 4];

#[derive(Clone, Debug)]
struct GatePoint {
    verdict: Verdict,
    value: Option<f64>,
    threshold: Option<f64>,
    upper_bound: Option<f64>,
    p_value: Option<f64>,
    samples: u64,
}

#[derive(Clone, Debug)]
struct Point {
    /// The change that last touched it.
    seq: u64,
    /// Engine clock (as the audit events'), ms.
    at_ms: u64,
    /// Seconds merged into it.
    merged: u32,
    weight: f64,
    stage: usize,
    sides: [SideNumbers; 2],
    gates: Vec<GatePoint>,
}

#[derive(Debug)]
struct Track {
    started_ms: u64,
    step_ms: u64,
    /// Restarted or merged at this change: a poll from before it gets
    /// the whole track.
    reset_seq: u64,
    /// The telemetry second last recorded.
    last_sec: u64,
    /// Each gate's name and metric, in the plan's order.
    gates: Vec<(String, String)>,
    points: Vec<Point>,
}

#[derive(Debug, Default)]
struct Inner {
    seq: u64,
    tracks: HashMap<Arc<str>, Track>,
}

/// Every route's track.
#[derive(Debug, Default)]
pub(crate) struct History(Mutex<Inner>);

/// 4 significant digits: the charts need no more, and the poll is smaller.
fn round(x: f64) -> f64 {
    if x == 0.0 || !x.is_finite() {
        return x;
    }
    let scale = 10f64.powi(3 - x.abs().log10().floor() as i32);
    (x * scale).round() / scale
}

/// A side's numbers over one second.
pub(crate) fn numbers(w: &Window) -> SideNumbers {
    let ms = |q: f64| w.latency.quantile(q).map(|d| round(d.as_secs_f64() * 1000.0));
    let n = w.counts.total();
    [Some(n as f64), w.counts.error_rate().map(round), ms(0.5), ms(0.99)]
}

fn gate_point(v: &GateResult) -> GatePoint {
    GatePoint {
        verdict: v.verdict,
        value: v.value.map(round),
        threshold: v.threshold.map(round),
        upper_bound: v.upper_bound.map(round),
        p_value: v.p_value.map(round),
        samples: v.canary_samples,
    }
}

/// `a` and `b` merged (`a` first): weighted means, the worst p99, the
/// latest state.
fn merge(a: &Point, b: &Point, seq: u64) -> Point {
    let (wa, wb) = (f64::from(a.merged), f64::from(b.merged));
    let mean = |x: Option<f64>, y: Option<f64>| match (x, y) {
        (Some(x), Some(y)) => Some(round((x * wa + y * wb) / (wa + wb))),
        (x, y) => x.or(y),
    };
    let worst = |x: Option<f64>, y: Option<f64>| match (x, y) {
        (Some(x), Some(y)) => Some(x.max(y)),
        (x, y) => x.or(y),
    };
    // The error rate per request, not per second.
    let errors = |x: &SideNumbers, y: &SideNumbers| match (x[1], y[1]) {
        (Some(ex), Some(ey)) => {
            let (nx, ny) = (x[0].unwrap_or(0.0) * wa, y[0].unwrap_or(0.0) * wb);
            Some(if nx + ny > 0.0 { round((ex * nx + ey * ny) / (nx + ny)) } else { 0.0 })
        }
        (ex, ey) => ex.or(ey),
    };
    let side = |i: usize| -> SideNumbers {
        let (x, y) = (&a.sides[i], &b.sides[i]);
        [mean(x[0], y[0]), errors(x, y), mean(x[2], y[2]), worst(x[3], y[3])]
    };
    Point {
        seq,
        at_ms: a.at_ms,
        merged: a.merged + b.merged,
        weight: b.weight,
        stage: b.stage,
        sides: [side(0), side(1)],
        gates: b.gates.clone(),
    }
}

impl History {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Records route `name`'s second `sec` (the telemetry's), which ended
    /// at `now_ms` (engine clock): `sides` are stable's and the canary's
    /// numbers. A second already recorded is not recorded again.
    pub(crate) fn record(&self, name: &Arc<str>, engine: &Engine, sides: [SideNumbers; 2], sec: u64, now_ms: u64) {
        let mut inner = self.lock();
        inner.seq += 1;
        let seq = inner.seq;
        let track = inner.tracks.entry(name.clone()).or_insert_with(|| Track {
            started_ms: u64::MAX,
            step_ms: 1000,
            reset_seq: seq,
            last_sec: 0,
            gates: Vec::new(),
            points: Vec::new(),
        });
        if track.last_sec == sec {
            return;
        }
        track.last_sec = sec;
        // A state kept from before start times were saved has none: its
        // last transition stands in, and must not restart the track at
        // every transition.
        let started = match engine.state().started_ms {
            0 if track.started_ms != u64::MAX => track.started_ms,
            _ => engine.started_ms(),
        };
        if track.started_ms != started {
            *track = Track {
                started_ms: started,
                step_ms: 1000,
                reset_seq: seq,
                last_sec: sec,
                gates: engine.plan().gates.iter().map(|g| (g.name.clone(), g.metric.name())).collect(),
                points: Vec::new(),
            };
        }
        let st = engine.state();
        let point = Point {
            seq,
            at_ms: now_ms,
            merged: 1,
            weight: engine.weight().percent(),
            stage: st.stage,
            sides,
            gates: st.verdicts.iter().map(gate_point).collect(),
        };
        match track.points.last_mut() {
            // Within the step (once merged): into the last point.
            Some(last) if now_ms < last.at_ms + track.step_ms => *last = merge(last, &point, seq),
            _ => track.points.push(point),
        }
        if track.points.len() > MAX_POINTS {
            track.points = track
                .points
                .chunks(2)
                .map(|pair| match pair {
                    [a, b] => merge(a, b, seq),
                    [a] => Point { seq, ..a.clone() },
                    _ => unreachable!("chunks of 2"),
                })
                .collect();
            track.step_ms *= 2;
            track.reset_seq = seq;
        }
    }

    /// A transition of route `name` was decided on `verdicts`: they are its
    /// latest point's (a tick between two of the ticker's seconds may have
    /// decided on verdicts no point recorded; after the transition the
    /// engine has none until its next tick).
    pub(crate) fn decided(&self, name: &str, verdicts: &[GateResult]) {
        if verdicts.is_empty() {
            return;
        }
        let mut inner = self.lock();
        inner.seq += 1;
        let seq = inner.seq;
        if let Some(last) = inner.tracks.get_mut(name).and_then(|t| t.points.last_mut()) {
            last.gates = verdicts.iter().map(gate_point).collect();
            last.seq = seq;
        }
    }

    /// Forgets the tracks of routes `keep` does not name (gone, or without
    /// a rollout).
    pub(crate) fn retain(&self, keep: impl Fn(&str) -> bool) {
        self.lock().tracks.retain(|name, _| keep(name));
    }

    /// The changes after `since`, per route, for the dashboard's poll.
    pub(crate) fn since(&self, since: u64) -> Value {
        let inner = self.lock();
        let tracks: serde_json::Map<String, Value> = inner
            .tracks
            .iter()
            .map(|(name, t)| {
                // Past the last change: a poll from before a restart (or
                // another replica's numbers) gets the whole track.
                let full = t.reset_seq > since || since > inner.seq;
                let points: Vec<Value> = t
                    .points
                    .iter()
                    .filter(|p| full || p.seq > since)
                    .map(|p| {
                        let gates: Vec<Value> = p
                            .gates
                            .iter()
                            .map(|g| {
                                json!([g.verdict.as_str(), g.value, g.threshold, g.upper_bound, g.p_value, g.samples])
                            })
                            .collect();
                        json!([p.at_ms - t.started_ms.min(p.at_ms), p.weight, p.stage, p.sides[0], p.sides[1], gates])
                    })
                    .collect();
                let mut track = json!({ "full": full, "points": points });
                if full {
                    track["started_ms"] = json!(t.started_ms);
                    track["step_ms"] = json!(t.step_ms);
                    track["gates"] =
                        t.gates.iter().map(|(name, metric)| json!({ "name": name, "metric": metric })).collect();
                }
                (name.to_string(), track)
            })
            .collect();
        json!({ "seq": inner.seq, "tracks": tracks })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use weir_control::rollout::Context;
    use weir_control::sample::{Counts, Latency};

    /// A route "web" with three gates, its engine started at `start_ms`.
    fn engine(start_ms: u64) -> Engine {
        let cfg = weir_control::config::parse(
            r#"
[listen]
addr = "127.0.0.1:0"
[backends.stable]
addrs = ["127.0.0.1:1"]
[backends.canary]
addrs = ["127.0.0.1:2"]
version = "v2"
[[routes]]
name = "web"
stable = "stable"
canary = "canary"
[routes.rollout]
hold_timeout = "40m"
stages = [{ weight = 10, bake = "30m" }, { weight = 50, bake = "30m" }, { weight = 100 }]
gates = [{ metric = "error_rate", max = 0.05 }, { metric = "latency_p99", max = "500ms" }, { metric = "error_rate_vs_stable" }]
"#,
        )
        .unwrap();
        let r = &cfg.routes[0];
        let plan = r.rollout.clone().unwrap();
        Engine::new(plan, Context::of(&cfg, r, "h".into()), start_ms).0
    }

    fn window(total: u64, failures: u64) -> Window {
        let mut latency = Latency::new();
        latency.record_n(12_345, total);
        Window {
            span: std::time::Duration::from_secs(1),
            counts: Counts::of(total, failures),
            latency,
            seconds: vec![],
        }
    }

    /// An hour of a rollout, one tick a second with every gate judged: the
    /// first poll carries the whole track within its bound, each later one
    /// only what changed.
    #[test]
    fn an_hours_history_stays_bounded_and_polls_small() {
        let h = History::default();
        let name: Arc<str> = "web".into();
        let start = 1_700_000_000_000;
        let mut e = engine(start);
        let mut seq = 0;
        let mut last_poll = 0;
        for s in 1..=3600u64 {
            let now = start + s * 1000;
            let (c, st) = (window(100 * s, s / 2), window(900 * s, 9 * s / 2));
            e.tick(now, &c, &st);
            h.record(&name, &e, [numbers(&window(900, 4)), numbers(&window(100, 1))], s, now);
            if s == 3599 {
                seq = h.since(0)["seq"].as_u64().unwrap();
            }
            if s == 3600 {
                last_poll = h.since(seq).to_string().len();
            }
        }
        let full = h.since(0);
        let track = &full["tracks"]["web"];
        let points = track["points"].as_array().unwrap();
        assert!(points.len() <= MAX_POINTS && points.len() > MAX_POINTS / 2, "{}", points.len());
        assert_eq!(track["step_ms"], 8000, "an hour fits at 8 s a point");
        assert_eq!(points[0][0], 1000, "from the first second");
        assert_eq!(points[0][5].as_array().unwrap().len(), 3, "every gate in each point");
        let size = full.to_string().len();
        println!("an hour: {} points, first poll {size} bytes, next poll {last_poll} bytes", points.len());
        assert!(size < 96 * 1024, "first poll {size} bytes");
        assert!(last_poll < 1024, "next poll {last_poll} bytes");
        // A poll numbered past the last change (from before a restart of
        // weir, or another replica's) gets the whole track.
        assert_eq!(h.since(seq + 1_000_000)["tracks"]["web"]["full"], true);
        // A new attempt of the rollout starts a new track.
        let e2 = engine(start + 4_000_000);
        h.record(&name, &e2, [[None; 4]; 2], 4001, start + 4_001_000);
        let t = &h.since(seq)["tracks"]["web"];
        assert_eq!((t["full"].as_bool(), t["points"].as_array().unwrap().len()), (Some(true), 1));
        // A route without a rollout any more is forgotten.
        h.retain(|_| false);
        assert_eq!(h.since(0)["tracks"], serde_json::json!({}));
    }
}
