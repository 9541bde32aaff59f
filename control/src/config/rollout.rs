//! `[routes.rollout]`: the schema of an automatic rollout (stages, gates,
//! what failing or undecided gates do). Re-exported from `config`, so every
//! type keeps its `weir_control::config::` path.

use std::time::Duration;

use crate::config::Cohort;
use crate::split::Weight;

/// `[routes.rollout]`
#[derive(Clone, PartialEq)]
pub struct Rollout {
    /// How often the gates are evaluated.
    pub interval: Duration,
    /// What a failed gate does.
    pub on_failure: OnFailure,
    /// Consecutive failing evaluations before `on_failure` runs.
    pub failure_threshold: u32,
    /// Ordered stages.
    pub stages: Vec<Stage>,
    /// Time at the start of the first stage (a rollout's start, or a new
    /// canary build's) during which the gates wait: a build warming its
    /// caches or JIT is not judged on it. The severe rule still watches,
    /// and the first stage's window, bake and deadline start after it.
    pub warmup: Duration,
    /// Gates evaluated every interval.
    pub gates: Vec<Gate>,
    /// A stage still without a decision after this long (or its own
    /// `max_duration`) runs `on_hold`: never a silent pass.
    pub hold_timeout: Duration,
    /// What a stage that stays undecided does.
    pub on_hold: OnFailure,
    /// Canary error rate that rolls back at once (whatever `on_failure`
    /// says, paused rollouts included), without waiting for
    /// `failure_threshold` …
    pub severe_error_rate: f64,
    /// … once the canary has served at least this many requests in the stage …
    pub severe_min_requests: u64,
    /// … counted over this last stretch of the stage (a sudden failure acts
    /// in seconds, however long the stage has run).
    pub severe_window: Duration,
    /// URL that must answer 2xx before a stage advances (`http://` or
    /// `https://`).
    pub pre_stage: Option<String>,
    /// Where each transition is sent (`notify`: a URL for weir's JSON, or
    /// a list of sinks with their formats).
    pub notify: Vec<Notify>,
    /// Timeout of each webhook call.
    pub webhook_timeout: Duration,
}

/// As derived, but without `warmup` while it is 0: the `Debug` text is the
/// rollout's fingerprint ([`crate::fingerprint`]), which a persisted or
/// fleet-committed rollout must keep across an upgrade that adds a key.
/// A key added later goes at the end the same way.
impl std::fmt::Debug for Rollout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut d = f.debug_struct("Rollout");
        d.field("interval", &self.interval)
            .field("on_failure", &self.on_failure)
            .field("failure_threshold", &self.failure_threshold)
            .field("stages", &self.stages)
            .field("gates", &self.gates)
            .field("hold_timeout", &self.hold_timeout)
            .field("on_hold", &self.on_hold)
            .field("severe_error_rate", &self.severe_error_rate)
            .field("severe_min_requests", &self.severe_min_requests)
            .field("severe_window", &self.severe_window)
            .field("pre_stage", &self.pre_stage)
            .field("notify", &NotifyPrint(&self.notify))
            .field("webhook_timeout", &self.webhook_timeout);
        if !self.warmup.is_zero() {
            d.field("warmup", &self.warmup);
        }
        d.finish()
    }
}

/// One `notify` sink: where, and in which format.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Notify {
    /// `http://` or `https://` URL.
    pub url: String,
    /// The payload's format.
    pub format: NotifyFormat,
    /// PagerDuty's routing (integration) key, read at each send.
    pub routing_key_file: Option<std::path::PathBuf>,
}

/// A `notify` sink's payload.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum NotifyFormat {
    /// weir's event JSON (as in the audit trail), signed when
    /// `webhooks.secret_file` is set.
    Weir,
    /// A Slack incoming webhook (`text` and Block Kit `blocks`).
    Slack,
    /// A Microsoft Teams workflow webhook (an Adaptive Card message).
    Teams,
    /// PagerDuty Events API v2: rollbacks, pauses and holds trigger an
    /// alert, a promotion or resume resolves it.
    PagerDuty,
}

impl NotifyFormat {
    /// The name in the config and in metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            NotifyFormat::Weir => "weir",
            NotifyFormat::Slack => "slack",
            NotifyFormat::Teams => "teams",
            NotifyFormat::PagerDuty => "pagerduty",
        }
    }
}

/// `notify` in the rollout's fingerprint as it printed when it was one
/// optional URL (a rollout persisted then must not look changed).
struct NotifyPrint<'a>(&'a [Notify]);

impl std::fmt::Debug for NotifyPrint<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            [] => f.write_str("None"),
            [one] if one.format == NotifyFormat::Weir && one.routing_key_file.is_none() => {
                write!(f, "Some({:?})", one.url)
            }
            many => write!(f, "Some({many:?})"),
        }
    }
}

/// Action when gates fail.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OnFailure {
    /// Weight to 0, state `rolled_back`.
    Rollback,
    /// Keep the weight, state `paused`.
    Pause,
}

/// One stage of a rollout.
#[derive(Clone, Debug, PartialEq)]
pub struct Stage {
    /// Canary weight during the stage.
    pub weight: Weight,
    /// Cohort sent to the canary during the stage.
    pub cohort: Option<Cohort>,
    /// Minimum time in the stage.
    pub bake: Duration,
    /// Minimum canary requests seen in the stage.
    pub min_requests: u64,
    /// Longest time the stage may take before the hold action runs.
    pub max_duration: Option<Duration>,
    /// Synthetic requests sent during the stage.
    pub synthetic: Option<Synthetic>,
}

/// Synthetic requests: sent by weir through its own listener and routing
/// path, tagged (`x-weir-synthetic: 1` reaches the upstream), counted
/// apart from user traffic, and judged by the `synthetic` gate.
#[derive(Clone, Debug, PartialEq)]
pub struct Synthetic {
    /// Requests per second, per target side.
    pub rps: f64,
    /// Method.
    pub method: String,
    /// Path and query.
    pub path: String,
    /// Extra request headers (lower-case names).
    pub headers: Vec<(String, String)>,
    /// Optional request body.
    pub body: Option<String>,
    /// The status a passing check gets.
    pub expect_status: u16,
    /// Also send to stable, for comparison.
    pub also_stable: bool,
}

/// A gate: a measured value compared with thresholds.
#[derive(Clone, PartialEq)]
pub struct Gate {
    /// Unique name within the rollout (default: the metric, `#2`… on repeats).
    pub name: String,
    /// What is measured on the canary.
    pub metric: GateMetric,
    /// Fewer samples than this (canary, and stable for comparisons) makes
    /// the verdict inconclusive.
    pub min_samples: u64,
    /// False-alarm rate of statistical gates.
    pub alpha: f64,
    /// Smallest effect that may fail a statistical gate (see `weir_control::gate`).
    pub min_effect: f64,
    /// Absolute ceiling (error rate as a fraction; latency in seconds).
    pub max: Option<f64>,
    /// Ceiling as a ratio to stable's value in the same window.
    pub max_ratio_to_stable: Option<f64>,
    /// Ceiling as a difference to stable's value (fraction or seconds).
    pub max_delta_to_stable: Option<f64>,
    /// Floor (`promql` gates: a value below it fails).
    pub min: Option<f64>,
    /// The PromQL template of a `promql` gate (see `weir_control::signal`).
    pub query: Option<String>,
    /// Evaluated, exported and audited, never acting: the gate neither
    /// fails, holds nor passes a stage.
    pub dry_run: bool,
}

/// As derived, but without the keys added after the first release while
/// they keep their defaults: the `Debug` text is part of the rollout's
/// fingerprint (see [`Rollout`]'s).
impl std::fmt::Debug for Gate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut d = f.debug_struct("Gate");
        d.field("name", &self.name)
            .field("metric", &self.metric)
            .field("min_samples", &self.min_samples)
            .field("alpha", &self.alpha)
            .field("min_effect", &self.min_effect)
            .field("max", &self.max)
            .field("max_ratio_to_stable", &self.max_ratio_to_stable)
            .field("max_delta_to_stable", &self.max_delta_to_stable);
        if self.min.is_some() {
            d.field("min", &self.min);
        }
        if self.query.is_some() {
            d.field("query", &self.query);
        }
        if self.dry_run {
            d.field("dry_run", &self.dry_run);
        }
        d.finish()
    }
}

/// The measured quantity of a gate.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum GateMetric {
    /// Share of requests that failed (5xx or upstream error).
    ErrorRate,
    /// Latency quantile in (0, 1), e.g. 0.99.
    Latency(f64),
    /// Canary error rate higher than stable's, by a sequential test (mSPRT)
    /// that stays valid when checked every tick.
    ErrorRateVsStable,
    /// Canary latency shifted up from stable's (Mann-Whitney U over the
    /// histogram buckets, with an effect-size floor).
    LatencyShift,
    /// Share of the stage's synthetic checks on the canary that did not get
    /// their expected status.
    Synthetic,
    /// Share of the stage's shadow requests whose canary answer differed
    /// from stable's (status, and the compared header).
    ShadowMismatch,
    /// A value read from Prometheus by the gate's `query` (an outside
    /// signal: missing, empty or NaN is inconclusive, never a pass).
    Promql,
}

impl GateMetric {
    /// The config name of the metric.
    pub fn name(&self) -> String {
        match self {
            GateMetric::ErrorRate => "error_rate".into(),
            GateMetric::Latency(q) => match q {
                x if (*x - 0.999).abs() < 1e-9 => "latency_p999".into(),
                x => format!("latency_p{}", (x * 100.0).round() as u32),
            },
            GateMetric::ErrorRateVsStable => "error_rate_vs_stable".into(),
            GateMetric::LatencyShift => "latency_shift".into(),
            GateMetric::Synthetic => "synthetic".into(),
            GateMetric::ShadowMismatch => "shadow_mismatch".into(),
            GateMetric::Promql => "promql".into(),
        }
    }
}
