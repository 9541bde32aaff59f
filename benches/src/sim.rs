//! Seeded simulation of rollouts, to measure how the gate engine decides:
//! false rollbacks of healthy canaries (per rollout, across every gate and
//! stage), and detection rate and time of degraded ones; and, on the same
//! scenarios and seeds, how three anchors decide: Flagger's and Argo
//! Rollouts' threshold checks and a Kayenta-style fixed-horizon judgement.
//! Every run reproduces from its seed.
//!
//! Traffic goes through the production measurement path: requests arrive
//! as a Poisson stream (total rate, optionally diurnal), each goes to the
//! canary with the weight the controller applies at that moment, and is
//! recorded into the proxy's own [`BackendStats`] (the lock-free shards,
//! the one-second slots); the engine ticks every `interval` on the windows
//! [`tick_windows`] cuts, exactly as the rollout driver does, on a
//! simulated clock. Failures are independent or come in bursts (a burst of
//! `k` consecutive failed requests on one side, at the same mean rate);
//! latency is log-normal, optionally with a share of requests a fixed
//! amount slower; any change of a side can start late or drift in.

use std::time::Duration;

use weir_control::config::Rollout;
use weir_control::gate::mann_whitney;
use weir_control::rollout::{Context, Engine, Phase};
use weir_control::sample::{CodeClass, Window};
use weir_control::split::Weight;
use weir_proxy::telemetry::{tick_recorded, BackendStats, StageMarks};

/// How one side behaves.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Side {
    /// Probability that a request fails.
    pub error_rate: f64,
    /// Median latency, milliseconds.
    pub median_ms: f64,
    /// Log-normal shape.
    pub sigma: f64,
    /// Share of requests `slow_ms` slower.
    pub slow_share: f64,
    /// How much slower they are, milliseconds.
    pub slow_ms: f64,
}

/// The reference behaviour: 1 % errors, 20 ms median, σ = 0.5 (p99 64 ms).
pub const BASELINE: Side = Side { error_rate: 0.01, median_ms: 20.0, sigma: 0.5, slow_share: 0.0, slow_ms: 0.0 };

/// When a side's change applies.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Onset {
    /// From the start.
    Always,
    /// From this second on.
    At(u64),
    /// Between these seconds only.
    Between(u64, u64),
    /// Drifting in linearly from the first second to the second.
    Drift(u64, u64),
}

impl Onset {
    /// How far the change applies at `secs`: 0 (not at all) to 1.
    fn share(self, secs: f64) -> f64 {
        match self {
            Onset::Always => 1.0,
            Onset::At(t) => f64::from(u8::from(secs >= t as f64)),
            Onset::Between(a, b) => f64::from(u8::from(secs >= a as f64 && secs < b as f64)),
            Onset::Drift(a, b) => ((secs - a as f64) / (b - a).max(1) as f64).clamp(0.0, 1.0),
        }
    }

    /// The second the change starts (detection times count from it).
    fn start(self) -> u64 {
        match self {
            Onset::Always => 0,
            Onset::At(t) | Onset::Between(t, _) | Onset::Drift(t, _) => t,
        }
    }
}

/// A side's behaviour over time: `base`, changing to `changed` at `onset`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Course {
    /// Before the change.
    pub base: Side,
    /// After it.
    pub changed: Side,
    /// When.
    pub onset: Onset,
}

impl Course {
    /// The same all along.
    pub const fn steady(side: Side) -> Course {
        Course { base: side, changed: side, onset: Onset::Always }
    }

    fn at(&self, secs: f64) -> Side {
        let f = self.onset.share(secs);
        let mix = |a: f64, b: f64| a + f * (b - a);
        let (b, c) = (self.base, self.changed);
        Side {
            error_rate: mix(b.error_rate, c.error_rate),
            median_ms: mix(b.median_ms, c.median_ms),
            sigma: mix(b.sigma, c.sigma),
            slow_share: mix(b.slow_share, c.slow_share),
            slow_ms: mix(b.slow_ms, c.slow_ms),
        }
    }
}

/// One scenario: traffic and both sides' behaviour.
#[derive(Clone, Debug)]
pub struct Scenario {
    /// Row name.
    pub name: &'static str,
    /// Total requests per second (both sides).
    pub total_rps: f64,
    /// Diurnal swing: the rate follows `1 + diurnal × sin(2πt / 600 s)`.
    pub diurnal: f64,
    /// Failures come in bursts of this many requests (1: independent).
    pub burst: u32,
    /// Stable's course.
    pub stable: Course,
    /// The canary's course.
    pub canary: Course,
    /// Whether a sound controller must roll this canary back.
    pub bad: bool,
}

/// How a simulated rollout ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum End {
    /// The canary took everything.
    Promoted,
    /// Back on stable.
    RolledBack,
    /// Still undecided (progressing or paused) when the simulation ended.
    Held,
}

/// What happened to one simulated rollout.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Outcome {
    /// How it ended.
    pub end: End,
    /// Seconds from the change's onset to the rollback (0 when before it).
    pub detect_secs: Option<f64>,
}

/// A rollout controller driven by the simulation: weir's engine or an
/// anchor's rules.
pub trait Controller {
    /// The canary weight now.
    fn weight(&self) -> Weight;
    /// Called every 100 ms of simulated time with the recorded stats; returns
    /// the end once decided.
    fn step(&mut self, now_ms: u64, canary: &BackendStats, stable: &BackendStats) -> Option<End>;
}

/// weir's engine, ticked every `interval` on the production windows.
pub struct Weir {
    engine: Engine,
    marks: Option<StageMarks>,
    next_ms: u64,
    start_ms: u64,
    /// `WEIR_SIM_TRACE=1` prints every transition with its verdicts
    /// (`=all`: every evaluation too), to see why a run ended as it did.
    trace: bool,
    trace_all: bool,
}

/// History the simulated telemetry keeps (the proxy's default window_max).
const KEEP_SECS: u64 = 600;

impl Weir {
    /// A rollout of `plan` starting at `now_ms`.
    pub fn new(plan: &Rollout, now_ms: u64) -> Weir {
        let ctx = Context {
            route: "sim".into(),
            stable_version: None,
            canary_version: None,
            canary_build: None,
            config_hash: String::new(),
            ..Default::default()
        };
        let trace = std::env::var("WEIR_SIM_TRACE").ok();
        Weir {
            engine: Engine::new(plan.clone(), ctx, now_ms).0,
            marks: None,
            next_ms: now_ms,
            start_ms: now_ms,
            trace: trace.is_some(),
            trace_all: trace.as_deref() == Some("all"),
        }
    }
}

impl Controller for Weir {
    fn weight(&self) -> Weight {
        self.engine.weight()
    }

    fn step(&mut self, now_ms: u64, canary: &BackendStats, stable: &BackendStats) -> Option<End> {
        if now_ms < self.next_ms {
            return None;
        }
        self.next_ms = now_ms + self.engine.plan().interval.as_millis() as u64;
        let tick = tick_recorded(&mut self.engine, &mut self.marks, canary, stable, now_ms, KEEP_SECS);
        if self.trace {
            for ev in
                tick.events.iter().filter(|ev| ev.kind != weir_control::rollout::EventKind::Evaluated || self.trace_all)
            {
                eprintln!(
                    "{:>8.1}s {:?} {}: {:?}",
                    (now_ms - self.start_ms) as f64 / 1000.0,
                    ev.kind,
                    ev.cause,
                    ev.verdicts
                        .iter()
                        .map(|v| (v.gate.as_str(), v.verdict, v.value, v.threshold, v.upper_bound, v.p_value))
                        .collect::<Vec<_>>()
                );
            }
        }
        match self.engine.state().phase {
            Phase::RolledBack | Phase::Aborted => Some(End::RolledBack),
            // The post-promotion bake still watches: done once it is over.
            Phase::Promoted if self.engine.window_ms(now_ms) >= post_bake(self.engine.plan()) => Some(End::Promoted),
            _ => None,
        }
    }
}

fn post_bake(plan: &Rollout) -> u64 {
    plan.stages.last().map_or(0, |s| s.bake.as_millis() as u64)
}

/// Threshold checks the way Flagger and Argo Rollouts run them: every
/// `interval`, the canary's error rate and p99 over the last `window`
/// against fixed limits; a passing check advances one step, a failing one
/// counts, and `failure_limit` failures roll back. A check without data:
/// Flagger halts (no step, no count); for Argo it is a measurement error
/// (an empty query result), and more than `consecutiveErrorLimit` (4) in a
/// row abort the rollout.
pub struct Checks {
    /// Row name.
    pub name: &'static str,
    weights: Vec<Weight>,
    step: usize,
    interval_ms: u64,
    window_secs: u64,
    max_error_rate: f64,
    max_p99_ms: f64,
    failure_limit: u32,
    /// Argo's `consecutiveErrorLimit`; `None`: a check without data waits.
    error_limit: Option<u32>,
    failures: u32,
    errors: u32,
    next_ms: u64,
}

impl Checks {
    /// Flagger's defaults (`interval: 1m`, `threshold: 5` failed checks, a
    /// 1 m metric window), steps as weir's plan, limits set at twice the
    /// baseline (success rate ≥ 98 %, p99 ≤ 128 ms).
    pub fn flagger(weights: &[Weight], now_ms: u64) -> Checks {
        Checks {
            name: "Flagger",
            weights: weights.to_vec(),
            step: 0,
            interval_ms: 60_000,
            window_secs: 60,
            max_error_rate: 0.02,
            max_p99_ms: 128.0,
            failure_limit: 5,
            error_limit: None,
            failures: 0,
            errors: 0,
            next_ms: now_ms + 60_000,
        }
    }

    /// Argo Rollouts' defaults: a background analysis measuring every
    /// `interval: 1m`, `failureLimit: 0` (the first failed measurement
    /// aborts), `consecutiveErrorLimit: 4`; same limits.
    pub fn argo(weights: &[Weight], now_ms: u64) -> Checks {
        Checks { name: "Argo Rollouts", failure_limit: 1, error_limit: Some(4), ..Checks::flagger(weights, now_ms) }
    }
}

impl Controller for Checks {
    fn weight(&self) -> Weight {
        self.weights.get(self.step).copied().unwrap_or(Weight::FULL)
    }

    fn step(&mut self, now_ms: u64, canary: &BackendStats, _stable: &BackendStats) -> Option<End> {
        if now_ms < self.next_ms {
            return None;
        }
        self.next_ms = now_ms + self.interval_ms;
        let w = canary.window(now_ms / 1000, self.window_secs, KEEP_SECS);
        let (Some(rate), Some(p99)) = (w.counts.error_rate(), w.latency.quantile(0.99)) else {
            self.errors += 1;
            return self.error_limit.is_some_and(|limit| self.errors > limit).then_some(End::RolledBack);
        };
        self.errors = 0;
        if rate > self.max_error_rate || p99.as_secs_f64() * 1000.0 > self.max_p99_ms {
            self.failures += 1;
            return (self.failures >= self.failure_limit).then_some(End::RolledBack);
        }
        self.step += 1;
        (self.step >= self.weights.len()).then_some(End::Promoted)
    }
}

/// A Kayenta-style judgement: at the end of each step's bake (fixed
/// horizon), Mann-Whitney tests of the canary against stable on errors and
/// on latency over the step; a metric is "high" at one-sided p < 0.025,
/// and any high metric fails the canary (score below the pass mark).
pub struct Kayenta {
    weights: Vec<Weight>,
    step: usize,
    bake_ms: u64,
    since_ms: u64,
}

impl Kayenta {
    /// Steps as weir's plan, each judged after `bake`.
    pub fn new(weights: &[Weight], bake: Duration, now_ms: u64) -> Kayenta {
        Kayenta { weights: weights.to_vec(), step: 0, bake_ms: bake.as_millis() as u64, since_ms: now_ms }
    }
}

impl Controller for Kayenta {
    fn weight(&self) -> Weight {
        self.weights.get(self.step).copied().unwrap_or(Weight::FULL)
    }

    fn step(&mut self, now_ms: u64, canary: &BackendStats, stable: &BackendStats) -> Option<End> {
        if now_ms < self.since_ms + self.bake_ms {
            return None;
        }
        let span = (now_ms - self.since_ms) / 1000;
        let (c, s) = (canary.window(now_ms / 1000, span, KEEP_SECS), stable.window(now_ms / 1000, span, KEEP_SECS));
        self.since_ms = now_ms;
        let high = if s.counts.total() == 0 {
            false // at 100 %: no control group, nothing to judge
        } else {
            errors_higher(&c, &s) || mann_whitney(&c, &s).1 < 0.025
        };
        if high {
            return Some(End::RolledBack);
        }
        self.step += 1;
        (self.step >= self.weights.len()).then_some(End::Promoted)
    }
}

/// A lower bound on detection, not a controller anyone could run: a
/// sequential probability ratio test *told* the truth (the baseline error
/// rate, 1 %, and the regression, 5x), on the canary's requests alone,
/// every 250 ms, rolling back once the evidence reaches 1/α with α = 0.5 %
/// (weir's error test's budget). No valid test that does not know the
/// effect and the base rate beforehand can be faster on average.
pub struct Oracle {
    weight: Weight,
    next_ms: u64,
}

impl Oracle {
    /// The oracle at `weight` (one stage) from `now_ms`.
    pub fn new(weight: Weight, now_ms: u64) -> Oracle {
        Oracle { weight, next_ms: now_ms }
    }
}

impl Controller for Oracle {
    fn weight(&self) -> Weight {
        self.weight
    }

    fn step(&mut self, now_ms: u64, canary: &BackendStats, _stable: &BackendStats) -> Option<End> {
        if now_ms < self.next_ms {
            return None;
        }
        self.next_ms = now_ms + 250;
        let w = canary.window(now_ms / 1000, KEEP_SECS, KEEP_SECS);
        let (x, n) = (w.counts.failures() as f64, w.counts.total() as f64);
        let (p0, p1) = (BASELINE.error_rate, 5.0 * BASELINE.error_rate);
        let llr = x * (p1 / p0).ln() + (n - x) * ((1.0 - p1) / (1.0 - p0)).ln();
        (llr >= (1.0f64 / 0.005).ln()).then_some(End::RolledBack)
    }
}

/// Mann-Whitney on 0/1 failure indicators (a two-proportion z-test).
fn errors_higher(c: &Window, s: &Window) -> bool {
    let (nc, ns) = (c.counts.total() as f64, s.counts.total() as f64);
    if nc == 0.0 || ns == 0.0 {
        return false;
    }
    let (xc, xs) = (c.counts.failures() as f64, s.counts.failures() as f64);
    let pooled = (xc + xs) / (nc + ns);
    let se = (pooled * (1.0 - pooled) * (1.0 / nc + 1.0 / ns)).sqrt();
    se > 0.0 && (xc / nc - xs / ns) / se > 1.96
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

    /// Poisson with mean `mean` (Knuth below 30, normal above).
    pub fn poisson(&mut self, mean: f64) -> u64 {
        if mean <= 0.0 {
            return 0;
        }
        if mean > 30.0 {
            return (mean + mean.sqrt() * self.normal()).round().max(0.0) as u64;
        }
        let (limit, mut k, mut p) = ((-mean).exp(), 0, 1.0);
        loop {
            p *= self.uniform();
            if p <= limit {
                return k;
            }
            k += 1;
        }
    }
}

/// Per-side generator state: the rest of a burst of failures.
#[derive(Default)]
struct Burst(u32);

fn request(rng: &mut Rng, side: &Side, burst_len: u32, burst: &mut Burst, stats: &BackendStats) {
    let failed = if burst.0 > 0 {
        burst.0 -= 1;
        true
    } else if rng.uniform() < side.error_rate / f64::from(burst_len) {
        burst.0 = burst_len - 1;
        true
    } else {
        false
    };
    let mut ms = (side.median_ms.ln() + side.sigma * rng.normal()).exp();
    if side.slow_share > 0.0 && rng.uniform() < side.slow_share {
        ms += side.slow_ms;
    }
    let class = if failed { CodeClass::ServerError } else { CodeClass::Success };
    stats.record(class, None, Duration::from_micros((ms * 1000.0) as u64));
}

/// Simulation steps, milliseconds.
const STEP_MS: u64 = 100;
/// Stable serves alone for this long before the rollout starts (its
/// history: the baseline and its burstiness).
pub const WARMUP_SECS: u64 = 300;

/// Runs one rollout of `scenario` under `controller` for at most
/// `max_secs` simulated seconds after the warm-up.
pub fn run(scenario: &Scenario, seed: u64, max_secs: u64, controller: &mut dyn Controller) -> Outcome {
    let mut rng = Rng::new(seed);
    let (cs, ss) = (BackendStats::default(), BackendStats::default());
    let (mut cb, mut sb) = (Burst::default(), Burst::default());
    // Absolute clock (engine ms and slot seconds) far from 0, as in the proxy.
    let origin_ms = 1_000_000_000;
    let start_ms = origin_ms + WARMUP_SECS * 1000;
    let end_ms = start_ms + max_secs * 1000;
    let mut now_ms = origin_ms;
    while now_ms < end_ms {
        let secs = (now_ms as f64 - start_ms as f64) / 1000.0;
        let started = now_ms >= start_ms;
        let weight = if started { controller.weight().bp() as f64 / 10_000.0 } else { 0.0 };
        let rate =
            scenario.total_rps * (1.0 + scenario.diurnal * (2.0 * std::f64::consts::PI * secs.max(0.0) / 600.0).sin());
        let n = rng.poisson(rate * STEP_MS as f64 / 1000.0);
        let (canary, stable) = (scenario.canary.at(secs), scenario.stable.at(secs));
        for _ in 0..n {
            if rng.uniform() < weight {
                request(&mut rng, &canary, scenario.burst, &mut cb, &cs);
            } else {
                request(&mut rng, &stable, scenario.burst, &mut sb, &ss);
            }
        }
        now_ms += STEP_MS;
        if now_ms % 1000 == 0 {
            // The ticker's once-a-second fold into slots.
            cs.rotate(now_ms / 1000, KEEP_SECS);
            ss.rotate(now_ms / 1000, KEEP_SECS);
        }
        if now_ms >= start_ms {
            if let Some(end) = controller.step(now_ms, &cs, &ss) {
                let t = (now_ms - start_ms) as f64 / 1000.0;
                let onset = scenario.canary.onset.start() as f64;
                let detect = (end == End::RolledBack).then(|| (t - onset).max(0.0));
                return Outcome { end, detect_secs: detect };
            }
        }
    }
    Outcome { end: End::Held, detect_secs: None }
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
    /// Share still undecided at the end.
    pub held: f64,
    /// Median seconds from onset to rollback among rolled-back runs.
    pub median_detect_secs: Option<f64>,
    /// 90th percentile of the same.
    pub p90_detect_secs: Option<f64>,
}

/// Which controller a run uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Who {
    /// weir's engine with the given plan.
    Weir,
    /// Flagger's threshold checks.
    Flagger,
    /// Argo Rollouts' analysis.
    Argo,
    /// Kayenta-style fixed-horizon judgement.
    Kayenta,
    /// The detection bound ([`Oracle`]): the 5x-error rows only.
    Oracle,
}

impl Who {
    /// Row label.
    pub fn name(self) -> &'static str {
        match self {
            Who::Weir => "weir",
            Who::Flagger => "Flagger",
            Who::Argo => "Argo Rollouts",
            Who::Kayenta => "Kayenta-style",
            Who::Oracle => "oracle SPRT",
        }
    }

    fn controller(self, plan: &Rollout, now_ms: u64) -> Box<dyn Controller> {
        let weights: Vec<Weight> = plan.stages.iter().map(|s| s.weight).collect();
        let bake = plan.stages.first().map_or(Duration::from_secs(60), |s| s.bake);
        match self {
            Who::Weir => Box::new(Weir::new(plan, now_ms)),
            Who::Flagger => Box::new(Checks::flagger(&weights, now_ms)),
            Who::Argo => Box::new(Checks::argo(&weights, now_ms)),
            Who::Kayenta => Box::new(Kayenta::new(&weights, bake, now_ms)),
            Who::Oracle => Box::new(Oracle::new(weights.first().copied().unwrap_or(Weight::FULL), now_ms)),
        }
    }
}

/// Runs `runs` rollouts with seeds `seed..seed+runs`, on two threads.
pub fn many(who: Who, plan: &Rollout, scenario: &Scenario, runs: usize, seed: u64, max_secs: u64) -> Summary {
    let start_ms = 1_000_000_000 + WARMUP_SECS * 1000;
    let one = |i: u64| run(scenario, seed + i, max_secs, who.controller(plan, start_ms).as_mut());
    let half = runs as u64 / 2;
    let mut outcomes: Vec<Outcome> = std::thread::scope(|s| {
        let other = s.spawn(|| (half..runs as u64).map(one).collect::<Vec<_>>());
        let mut mine: Vec<Outcome> = (0..half).map(one).collect();
        mine.extend(other.join().unwrap_or_default());
        mine
    });
    outcomes.truncate(runs);
    summarize(&outcomes)
}

fn summarize(outcomes: &[Outcome]) -> Summary {
    let runs = outcomes.len().max(1);
    let mut detect: Vec<f64> = outcomes.iter().filter_map(|o| o.detect_secs).collect();
    detect.sort_by(f64::total_cmp);
    let share = |e: End| outcomes.iter().filter(|o| o.end == e).count() as f64 / runs as f64;
    let q = |f: f64| (!detect.is_empty()).then(|| detect[((detect.len() - 1) as f64 * f).round() as usize]);
    Summary {
        runs: outcomes.len(),
        rolled_back: share(End::RolledBack),
        promoted: share(End::Promoted),
        held: share(End::Held),
        median_detect_secs: q(0.5),
        p90_detect_secs: q(0.9),
    }
}

/// The rollout the figures are measured with: four stages of 60 s (5, 25,
/// 50, 100 %), checked every 250 ms; `error_rate_vs_stable` and
/// `latency_shift` at their default α = 0.5 % each (a 1 % false-rollback
/// budget per rollout) and an absolute 10 % error-rate ceiling.
pub fn reference_plan(failure_threshold: u32) -> Rollout {
    plan_with(failure_threshold, &[5.0, 25.0, 50.0, 100.0])
}

/// The reference gates on one stage at `weight` % (detection scenarios:
/// the canary's share of traffic stays what the scenario says).
pub fn single_stage_plan(weight: f64) -> Rollout {
    plan_with(1, &[weight])
}

fn plan_with(failure_threshold: u32, weights: &[f64]) -> Rollout {
    let stages: Vec<String> = weights.iter().map(|w| format!("{{ weight = {w}, bake = \"60s\" }}")).collect();
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
interval = "250ms"
failure_threshold = {failure_threshold}
stages = [{}]
gates = [
  {{ metric = "error_rate_vs_stable", alpha = 0.005, min_samples = 100 }},
  {{ metric = "latency_shift", alpha = 0.005, min_effect = 0.1, min_samples = 100 }},
  {{ metric = "error_rate", max = 0.1, min_samples = 100 }},
]
"#,
        stages.join(", ")
    );
    // A constant config: failing to parse it is a bug in this file.
    #[allow(clippy::expect_used)]
    let cfg = weir_control::config::parse(&text).expect("reference plan parses");
    #[allow(clippy::expect_used)]
    cfg.routes[0].rollout.clone().expect("reference plan has a rollout")
}

/// Simulated seconds a rollout may take (four 60 s stages, their holds and
/// the post-promotion bake fit).
pub const MAX_SECS: u64 = 900;

/// The scenarios of the table, with the plan each runs under.
pub fn scenarios() -> Vec<(Scenario, Rollout)> {
    let healthy = |name, total_rps, burst, diurnal| Scenario {
        name,
        total_rps,
        diurnal,
        burst,
        stable: Course::steady(BASELINE),
        canary: Course::steady(BASELINE),
        bad: false,
    };
    let bad = |name, canary: Side, onset| Scenario {
        canary: Course { base: BASELINE, changed: canary, onset },
        bad: true,
        ..healthy(name, 400.0, 1, 0.0)
    };
    let five = Side { error_rate: 0.05, ..BASELINE };
    // A build twice as slow and failing 2 % for its first 20 s.
    let warming = Course {
        base: BASELINE,
        changed: Side { median_ms: 40.0, error_rate: 0.02, ..BASELINE },
        onset: Onset::Between(0, 20),
    };
    let full = reference_plan(1);
    // 100 canary requests a second: 1/11 of 1100, 1/3 of 300.
    let (w1100, w300) = (9.09, 33.33);
    vec![
        (healthy("healthy, 400 rps", 400.0, 1, 0.0), full.clone()),
        (healthy("healthy, bursts of 5", 400.0, 5, 0.0), full.clone()),
        (healthy("healthy, diurnal +-70%", 400.0, 1, 0.7), full.clone()),
        (healthy("healthy, 5 rps", 5.0, 1, 0.0), full.clone()),
        (
            Scenario {
                stable: Course {
                    base: BASELINE,
                    changed: Side { error_rate: 0.10, ..BASELINE },
                    onset: Onset::Between(30, 90),
                },
                ..healthy("healthy, stable-only outage", 400.0, 1, 0.0)
            },
            full.clone(),
        ),
        (
            Scenario {
                stable: Course {
                    base: BASELINE,
                    changed: Side { error_rate: 0.6, ..BASELINE },
                    onset: Onset::Between(40, 60),
                },
                canary: Course {
                    base: BASELINE,
                    changed: Side { error_rate: 0.6, ..BASELINE },
                    onset: Onset::Between(40, 60),
                },
                ..healthy("healthy, shared outage", 400.0, 1, 0.0)
            },
            full.clone(),
        ),
        (
            Scenario { total_rps: 1100.0, ..bad("5x errors, stable 1000 rps", five, Onset::Always) },
            single_stage_plan(w1100),
        ),
        (
            Scenario { total_rps: 300.0, ..bad("5x errors, stable 200 rps", five, Onset::Always) },
            single_stage_plan(w300),
        ),
        (Scenario { burst: 5, ..bad("5x errors in bursts of 5", five, Onset::Always) }, full.clone()),
        (bad("2x errors", Side { error_rate: 0.02, ..BASELINE }, Onset::Always), full.clone()),
        (Scenario { total_rps: 5.0, ..bad("5x errors at 5 rps", five, Onset::Always) }, full.clone()),
        (Scenario { canary: warming, ..healthy("healthy after a 20 s warm-up", 400.0, 1, 0.0) }, full.clone()),
        (
            Scenario { canary: warming, ..healthy("same, with warmup = 30s", 400.0, 1, 0.0) },
            Rollout { warmup: Duration::from_secs(30), ..full.clone() },
        ),
        (bad("5x errors from 150 s", five, Onset::At(150)), full.clone()),
        (bad("errors drift 1->5% by 200 s", five, Onset::Drift(0, 200)), full.clone()),
        (
            Scenario {
                total_rps: 300.0,
                ..bad("variance x4, same median", Side { sigma: 1.0, ..BASELINE }, Onset::Always)
            },
            single_stage_plan(w300),
        ),
        (
            Scenario {
                total_rps: 300.0,
                ..bad("2% of requests +500 ms", Side { slow_share: 0.02, slow_ms: 500.0, ..BASELINE }, Onset::Always)
            },
            single_stage_plan(w300),
        ),
        (bad("+50% latency", Side { median_ms: 30.0, ..BASELINE }, Onset::Always), full.clone()),
        (bad("canary down (100% 5xx) from 100 s", Side { error_rate: 1.0, ..BASELINE }, Onset::At(100)), full),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A short seeded version of `gate-sim` (the full table is a benchmark):
    /// the figures hold with slack on few runs.
    #[test]
    fn seeded_simulation_within_goals() {
        let all = scenarios();
        let find = |name: &str| all.iter().find(|(s, _)| s.name == name).cloned().unwrap();
        let (s, plan) = find("healthy, bursts of 5");
        let healthy = many(Who::Weir, &plan, &s, 16, 1, MAX_SECS);
        assert!(healthy.rolled_back <= 0.07, "false rollbacks {healthy:?}");
        assert!(healthy.promoted >= 0.9, "{healthy:?}");
        let (s, plan) = find("5x errors, stable 1000 rps");
        let five = many(Who::Weir, &plan, &s, 16, 1000, 60);
        assert!(five.rolled_back >= 0.9, "5x errors {five:?}");
        assert!(five.median_detect_secs.is_some_and(|t| t <= 4.0), "{five:?}");
        let (s, plan) = find("variance x4, same median");
        let wide = many(Who::Weir, &plan, &s, 8, 2000, 60);
        assert!(wide.rolled_back >= 0.9, "variance x4 {wide:?}");
        // Same seed, same outcome.
        let (s, plan) = find("healthy, 400 rps");
        let start = 1_000_000_000 + WARMUP_SECS * 1000;
        let once = |seed| run(&s, seed, 60, &mut Weir::new(&plan, start));
        assert_eq!(once(7), once(7));
    }
}
