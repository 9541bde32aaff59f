//! Seeded simulation of rollouts on synthetic traffic, to measure how the
//! gate engine decides: false rollbacks on healthy canaries, and detection
//! rate and time on degraded ones. Every run reproduces from its seed.
//!
//! Each simulated second the canary serves `canary_rps` requests and stable
//! `stable_rps`; a request fails with its side's error probability and its
//! latency is log-normal (median `median_ms`, σ = `sigma`). The engine is
//! ticked once a second on the windows since its last transition, exactly as
//! the proxy does.

use weir_control::config::Rollout;
use weir_control::rollout::{Context, Engine, Phase};
use weir_control::sample::{CodeClass, Counts, Window};

/// Traffic of one side.
#[derive(Clone, Copy, Debug)]
pub struct Side {
    /// Requests per second.
    pub rps: u64,
    /// Probability that a request fails.
    pub error_rate: f64,
    /// Median latency, milliseconds.
    pub median_ms: f64,
    /// Log-normal shape.
    pub sigma: f64,
}

/// What happened to one simulated rollout.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Outcome {
    /// Final phase.
    pub phase: Phase,
    /// Seconds from the first exposure to the rollback, if rolled back.
    pub detect_secs: Option<u64>,
}

/// xorshift64*: the simulation's own generator (never inside the engine).
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    /// A generator from a seed.
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1)
    }

    /// Uniform in [0, 1).
    pub fn uniform(&mut self) -> f64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Standard normal (Box-Muller).
    pub fn normal(&mut self) -> f64 {
        let u1 = self.uniform().max(f64::MIN_POSITIVE);
        let u2 = self.uniform();
        (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
    }
}

fn second(rng: &mut Rng, side: &Side, w: &mut Window) {
    let mut counts = Counts::default();
    for _ in 0..side.rps {
        let failed = rng.uniform() < side.error_rate;
        let class = if failed { CodeClass::ServerError } else { CodeClass::Success };
        counts.by_class[class.index()] += 1;
        let ms = (side.median_ms.ln() + side.sigma * rng.normal()).exp();
        w.latency.record_n((ms * 1000.0) as u64, 1);
    }
    w.counts.add(&counts);
}

/// Runs one rollout for at most `max_secs` simulated seconds.
pub fn run(plan: &Rollout, canary: Side, stable: Side, seed: u64, max_secs: u64) -> Outcome {
    let mut rng = Rng::new(seed);
    let ctx = Context { route: "sim".into(), stable_version: None, canary_version: None, config_hash: String::new() };
    let (mut engine, _) = Engine::new(plan.clone(), ctx, 0);
    let (mut cw, mut sw) = (Window::default(), Window::default());
    let mut since = 0;
    for t in 1..=max_secs {
        second(&mut rng, &canary, &mut cw);
        second(&mut rng, &stable, &mut sw);
        let _ = engine.tick(t * 1000, &cw, &sw);
        let st = engine.state();
        if st.since_ms != since {
            // A transition: the gate window restarts, as in the proxy.
            since = st.since_ms;
            cw = Window::default();
            sw = Window::default();
        }
        match st.phase {
            Phase::RolledBack => return Outcome { phase: st.phase, detect_secs: Some(t) },
            Phase::Promoted | Phase::Paused | Phase::Aborted => return Outcome { phase: st.phase, detect_secs: None },
            Phase::Progressing => {}
        }
    }
    Outcome { phase: engine.state().phase, detect_secs: None }
}

/// Summary of many seeded runs.
#[derive(Clone, Debug)]
pub struct Summary {
    /// Runs.
    pub runs: usize,
    /// Share rolled back.
    pub rolled_back: f64,
    /// Share promoted.
    pub promoted: f64,
    /// Median seconds to rollback among rolled-back runs.
    pub median_detect_secs: Option<u64>,
    /// 90th percentile of the same.
    pub p90_detect_secs: Option<u64>,
}

/// Runs `runs` rollouts with seeds `seed..seed+runs`.
pub fn many(plan: &Rollout, canary: Side, stable: Side, runs: usize, seed: u64, max_secs: u64) -> Summary {
    let outcomes: Vec<Outcome> = (0..runs as u64).map(|i| run(plan, canary, stable, seed + i, max_secs)).collect();
    let mut detect: Vec<u64> = outcomes.iter().filter_map(|o| o.detect_secs).collect();
    detect.sort_unstable();
    let share = |p: Phase| outcomes.iter().filter(|o| o.phase == p).count() as f64 / runs as f64;
    let q = |f: f64| (!detect.is_empty()).then(|| detect[((detect.len() - 1) as f64 * f).round() as usize]);
    Summary {
        runs,
        rolled_back: share(Phase::RolledBack),
        promoted: share(Phase::Promoted),
        median_detect_secs: q(0.5),
        p90_detect_secs: q(0.9),
    }
}

/// The rollout the figures are measured with: four stages of 60 s, an mSPRT
/// error-rate gate and a latency-shift gate (α = 1 %), `failure_threshold`,
/// and an absolute 10 % error-rate ceiling: at 100 % the comparisons have no
/// stable to compare with and skip, and a stage whose gates all skip never
/// promotes (no evidence), so the ceiling is what judges the last stage.
pub fn reference_plan(failure_threshold: u32) -> Rollout {
    let text = format!(
        r#"
[backends.s]
addrs = ["127.0.0.1:1"]
[backends.c]
addrs = ["127.0.0.1:2"]
[[routes]]
name = "sim"
stable = "s"
canary = "c"
[routes.rollout]
failure_threshold = {failure_threshold}
stages = [
  {{ weight = 5, bake = "60s", min_requests = 500 }},
  {{ weight = 25, bake = "60s" }},
  {{ weight = 50, bake = "60s" }},
  {{ weight = 100, bake = "60s" }},
]
gates = [
  {{ metric = "error_rate_vs_stable", alpha = 0.01, min_samples = 100 }},
  {{ metric = "latency_shift", alpha = 0.01, min_effect = 0.1, min_samples = 100 }},
  {{ metric = "error_rate", max = 0.1, min_samples = 100 }},
]
"#
    );
    // A constant config: failing to parse it is a bug in this file.
    #[allow(clippy::expect_used)]
    let cfg = weir_control::config::parse(&text).expect("reference plan parses");
    #[allow(clippy::expect_used)]
    cfg.routes[0].rollout.clone().expect("reference plan has a rollout")
}

/// Baseline traffic: 1 % errors, 20 ms median latency.
pub fn baseline(rps: u64) -> Side {
    Side { rps, error_rate: 0.01, median_ms: 20.0, sigma: 0.5 }
}

/// Simulated seconds a rollout may take.
pub const MAX_SECS: u64 = 300;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeded_simulation_within_goals() {
        let plan = reference_plan(1);
        let stable = baseline(200);
        let healthy = many(&plan, baseline(100), stable, 100, 1, MAX_SECS);
        assert!(healthy.rolled_back <= 0.05, "false rollbacks {healthy:?}");
        assert!(healthy.promoted >= 0.95, "{healthy:?}");
        let five = many(&plan, Side { error_rate: 0.05, ..baseline(100) }, stable, 50, 1000, MAX_SECS);
        assert!(five.rolled_back >= 0.95, "5x errors {five:?}");
        assert!(five.median_detect_secs.is_some_and(|s| s <= 10), "{five:?}");
        let slow = many(&plan, Side { median_ms: 30.0, ..baseline(100) }, stable, 50, 2000, MAX_SECS);
        assert!(slow.rolled_back >= 0.95, "+50% latency {slow:?}");
        // Same seed, same outcome.
        assert_eq!(run(&plan, baseline(100), stable, 7, 60), run(&plan, baseline(100), stable, 7, 60));
    }
}
