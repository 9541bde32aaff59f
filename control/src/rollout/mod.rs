//! The rollout state machine: time and windows in, transitions and audit
//! events out. No clock, no I/O, no randomness: the proxy calls
//! [`Engine::tick`] every `interval` with the current time (unix ms) and the
//! canary and stable windows since the stage started, and applies
//! [`Engine::weight`] in the same tick.
//!
//! ```text
//!   gates pass or skip with ≥ 1 pass, bake done, min_requests (≥ 1) met (and pre_stage 2xx)
//!   ┌──────────────┐ ─────────────────────────────▶ next stage … last stage ─▶ promoted
//!   │ progressing  │ ── failure_threshold consecutive fails ──────────────────▶ on_failure
//!   └──────────────┘ ── a severe breach, or a failing gate at 100 % ──────────▶ rolled_back
//!        ▲   │       ── no decision by the hold deadline ─────────────────────▶ on_hold
//!  resume│   ▼ pause (manual)                     on_failure / on_hold: rolled_back | paused
//!   ┌──────────────┐ ── a severe breach ──────────────────────────────────────▶ rolled_back
//!   │   paused     │      abort (manual, any state) ─▶ aborted (weight 0)
//!   └──────────────┘
//! ```
//!
//! Decisions, in plain words:
//! * inconclusive gates never promote; past the hold deadline the stage runs
//!   `on_hold` (default pause), never a silent pass;
//! * failures must repeat `failure_threshold` times in a row, but a severe
//!   breach (canary error rate ≥ `severe_error_rate` over at least
//!   `severe_min_requests` requests) acts in the same tick, always by
//!   rolling back (weight 0) whatever `on_failure` says, and watches paused
//!   rollouts too (a paused canary keeps its weight);
//! * a stage passes on evidence: every gate passes or does not apply, at
//!   least one passes, over at least one request (gates that all skip, or
//!   none at all, never promote);
//! * every transition restarts the gate window, so verdicts never rest on
//!   data from before it (no flapping on stale numbers); a rolled-back
//!   version is not retried automatically: a new canary version (a reload)
//!   or a manual resume starts it again;
//! * after promotion, the absolute limits keep running for
//!   `post_promotion_bake` (the last stage's bake) and any failure falls back
//!   to stable at once.
//!
//! [`persisted`] is the state file's format: what a restart resumes from.

pub mod lifecycle;
pub mod persisted;
mod summary;

use serde::{Deserialize, Serialize};

use crate::config::{Gate, GateMetric, OnFailure, Release, Rollout};
use crate::evidence::{self, RatioTest};
use crate::gate::{self, Carry, GateResult, Inputs, Verdict};
use crate::sample::{Probes, Window};
use crate::signal::Signal;
use crate::split::{Weight, FULL};

pub use persisted::{Persisted, StateFile};

/// Stable requests its history needs before it serves as the rollout's
/// reference (its error rate and latency tails of then).
pub const REFERENCE_MIN_REQUESTS: u64 = 1000;

/// Where a rollout stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Moving through the stages.
    Progressing,
    /// Held at the current weight until resumed.
    Paused,
    /// The canary serves everything.
    Promoted,
    /// Back on stable after failing gates (weight 0).
    RolledBack,
    /// Stopped by hand (weight 0).
    Aborted,
}

impl Phase {
    /// Every phase, in metric order.
    pub const ALL: [Phase; 5] = [Phase::Progressing, Phase::Paused, Phase::Promoted, Phase::RolledBack, Phase::Aborted];

    /// Lower-case name (the `state` label).
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Progressing => "progressing",
            Phase::Paused => "paused",
            Phase::Promoted => "promoted",
            Phase::RolledBack => "rolled_back",
            Phase::Aborted => "aborted",
        }
    }
}

/// Who caused a transition.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Actor {
    /// The gate engine.
    Auto,
    /// An operator through the admin API.
    Manual,
}

/// What an audit event records.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// A rollout began at stage 0.
    Started,
    /// State restored after a restart.
    Restored,
    /// Gate verdicts changed (an evaluation summary).
    Evaluated,
    /// Moved to the next stage.
    Advanced,
    /// The canary took all traffic.
    Promoted,
    /// Back to stable.
    RolledBack,
    /// Held at the current weight.
    Paused,
    /// Progress resumed.
    Resumed,
    /// Stopped by hand.
    Aborted,
    /// The pre_stage webhook did not approve the next stage.
    Held,
}

impl EventKind {
    /// Snake-case name, as in the JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Started => "started",
            EventKind::Restored => "restored",
            EventKind::Evaluated => "evaluated",
            EventKind::Advanced => "advanced",
            EventKind::Promoted => "promoted",
            EventKind::RolledBack => "rolled_back",
            EventKind::Paused => "paused",
            EventKind::Resumed => "resumed",
            EventKind::Aborted => "aborted",
            EventKind::Held => "held",
        }
    }
}

/// One audit event: every transition, and evaluation summaries.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// Unix time, milliseconds.
    pub at_ms: u64,
    /// Route name.
    pub route: String,
    /// What happened.
    pub kind: EventKind,
    /// Who caused it.
    pub actor: Actor,
    /// Phase before.
    pub from: Phase,
    /// Phase after.
    pub to: Phase,
    /// Stage index after.
    pub stage: usize,
    /// Canary weight after, percent.
    pub weight: f64,
    /// Why, in words.
    pub cause: String,
    /// Gate verdicts with values, thresholds, p-values and sample counts.
    pub verdicts: Vec<GateResult>,
    /// Stable release label.
    pub stable_version: Option<String>,
    /// Canary release label.
    pub canary_version: Option<String>,
    /// Hash of the config that was in force.
    pub config_hash: String,
    /// Stable's release metadata (commit, notes, ticket).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stable_release: Option<Release>,
    /// The canary's release metadata.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary_release: Option<Release>,
    /// In fleet mode: the leader's term and the etcd revision that
    /// committed the decision (the same pair twice is the same event).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fleet: Option<FleetStamp>,
}

/// Where a fleet decision was committed: the leader's term (its leader
/// key's create revision) and the revision of the commit.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FleetStamp {
    /// The deciding leader's term (0: a manual action by any replica).
    pub term: i64,
    /// The etcd revision of the commit.
    pub revision: i64,
}

/// Identity of a rollout, stamped on its events.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Context {
    /// Route name.
    pub route: String,
    /// Stable release label.
    pub stable_version: Option<String>,
    /// Canary release label.
    pub canary_version: Option<String>,
    /// What identifies the canary's build: its version label, else its
    /// addresses ([`crate::config::Config::canary_build`]). A changed build
    /// is a new canary, labelled or not.
    #[serde(default)]
    pub canary_build: Option<String>,
    /// Hash of the config in force.
    pub config_hash: String,
    /// Stable's release metadata.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stable_release: Option<Release>,
    /// The canary's release metadata.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary_release: Option<Release>,
}

impl Context {
    /// The identity `cfg` gives route `r`'s rollout, under the config hash
    /// `config_hash`: versions, the canary's build, releases.
    pub fn of(cfg: &crate::config::Config, r: &crate::config::Route, config_hash: String) -> Context {
        let canary = r.canary.as_deref();
        Context {
            route: r.name.clone(),
            stable_version: cfg.version_of(&r.stable).map(str::to_string),
            canary_version: canary.and_then(|c| cfg.version_of(c)).map(str::to_string),
            canary_build: cfg.canary_build(r),
            config_hash,
            stable_release: cfg.release_of(&r.stable).cloned(),
            canary_release: canary.and_then(|c| cfg.release_of(c)).cloned(),
        }
    }
}

/// The state that is persisted and restored.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct State {
    /// Current phase.
    pub phase: Phase,
    /// Current stage index.
    pub stage: usize,
    /// When the current stage (or the last transition) started, unix ms.
    pub since_ms: u64,
    /// Consecutive evaluations with a failing gate.
    pub consecutive_failures: u32,
    /// The latest verdicts.
    pub verdicts: Vec<GateResult>,
    /// The first stage's `warmup` is over (`since_ms` then moved to its
    /// end). False while it lasts, and with no warm-up.
    #[serde(default, skip_serializing_if = "is_false")]
    pub warmed: bool,
    /// When this attempt of the rollout started (stage 0; a resume from
    /// weight 0 starts a new one), unix ms; 0 in state written before it
    /// was kept (see [`Engine::started_ms`]).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub started_ms: u64,
}

fn is_false(b: &bool) -> bool {
    !*b
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// The result of one tick.
#[derive(Debug, Default)]
pub struct Tick {
    /// Audit events to record (transitions, changed verdicts).
    pub events: Vec<Event>,
    /// The stage is ready to advance but needs the pre_stage webhook's 2xx:
    /// call it, then [`Engine::approve`].
    pub needs_approval: bool,
}

/// A rejected manual action.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("cannot {action} a rollout that is {phase}")]
pub struct ActionError {
    /// The action.
    pub action: &'static str,
    /// The phase it was tried in.
    pub phase: &'static str,
}

/// What the engine reads at a tick.
#[derive(Clone, Copy, Debug)]
pub struct Observed<'a> {
    /// The canary's requests since the last transition.
    pub canary: &'a Window,
    /// Stable's requests since the last transition.
    pub stable: &'a Window,
    /// Stable's recent history, before the last transition too (as much as
    /// the proxy keeps): its baseline, and how bursty its failures are.
    pub stable_history: &'a Window,
    /// Synthetic checks and shadow comparisons of the stage.
    pub probes: Probes,
    /// The latest reading of each `promql` gate (by gate name); one taken
    /// for another window, or past its freshness, is not used.
    pub signals: &'a [Signal],
}

/// A rollout of one route.
#[derive(Clone, Debug)]
pub struct Engine {
    plan: Rollout,
    ctx: Context,
    state: State,
    /// Each gate's evidence from the rollout's earlier stages.
    carried: Vec<Carry>,
    /// Each gate's evidence in the current stage (latest tick).
    stage: Vec<Carry>,
    /// Stable's history at the latest tick where it still had traffic: the
    /// baseline the canary is held to once it takes everything.
    stable_ref: Option<Window>,
    /// Stable's failures and requests when the rollout started (its recent
    /// history, at least [`REFERENCE_MIN_REQUESTS`]).
    reference: Option<(u64, u64)>,
    /// Stable's p90 and p99 then, µs.
    reference_tails: Option<[u64; 2]>,
    /// Data before this (a restart) is gone: the window and the bake start
    /// here at the earliest. Not persisted.
    data_since_ms: u64,
    /// The latest tick found stable degraded (a hold, said once).
    stable_degraded: bool,
    /// Per gate: when the outside reading last counted as a failure
    /// (`promql`): one reading is one failure, however many ticks see it.
    /// Not persisted.
    counted_reading: Vec<Option<u64>>,
}

impl Engine {
    /// A new rollout at stage 0, progressing from `now_ms`.
    pub fn new(plan: Rollout, ctx: Context, now_ms: u64) -> (Engine, Event) {
        let state = State {
            phase: Phase::Progressing,
            stage: 0,
            since_ms: now_ms,
            consecutive_failures: 0,
            verdicts: vec![],
            warmed: false,
            started_ms: now_ms,
        };
        let e = Engine::with_state(plan, ctx, state, 0);
        let warmup = match e.plan.warmup.as_secs() {
            0 => String::new(),
            s => format!("; the gates wait out a {s}s warm-up (the severe rule does not)"),
        };
        let cause = format!("rollout started; {}{warmup}", e.budget());
        let ev = e.event(now_ms, EventKind::Started, Actor::Auto, Phase::Progressing, cause);
        e.check_invariants();
        (e, ev)
    }

    fn with_state(plan: Rollout, ctx: Context, state: State, data_since_ms: u64) -> Engine {
        let gates = plan.gates.len();
        Engine {
            plan,
            ctx,
            state,
            carried: vec![Carry::default(); gates],
            stage: vec![Carry::default(); gates],
            stable_ref: None,
            reference: None,
            reference_tails: None,
            data_since_ms,
            stable_degraded: false,
            counted_reading: vec![None; gates],
        }
    }

    /// The rollout's false-rollback budget, in words: each statistical gate
    /// spends its `alpha` once per rollout (its evidence runs across the
    /// stages), so a canary as good as stable is rolled back by them with a
    /// chance of at most their sum.
    pub fn budget(&self) -> String {
        let statistical: Vec<_> = self
            .plan
            .gates
            .iter()
            .filter(|g| matches!(g.metric, GateMetric::ErrorRateVsStable | GateMetric::LatencyShift))
            .collect();
        if statistical.is_empty() {
            return "no statistical gate: only thresholds judge the canary".into();
        }
        let total: f64 = statistical.iter().map(|g| g.alpha).sum();
        let parts: Vec<String> = statistical.iter().map(|g| format!("{} {}%", g.name, 100.0 * g.alpha)).collect();
        format!("false-rollback budget {}% ({})", 100.0 * total, parts.join(", "))
    }

    /// Restores a persisted state; `None` if it does not fit the plan.
    pub fn restore(plan: Rollout, ctx: Context, state: State, now_ms: u64) -> Option<(Engine, Event)> {
        if state.stage >= plan.stages.len() {
            return None;
        }
        // The telemetry of before the restart is gone: the stage's window
        // and bake count from now (issue 21, bug 9).
        let e = Engine::with_state(plan, ctx, state, now_ms);
        let ev = e.event(
            now_ms,
            EventKind::Restored,
            Actor::Auto,
            e.state.phase,
            format!("restored after restart: {} at stage {}", e.state.phase.as_str(), e.state.stage),
        );
        e.check_invariants();
        Some((e, ev))
    }

    /// The persisted state.
    pub fn state(&self) -> &State {
        &self.state
    }

    /// The plan.
    pub fn plan(&self) -> &Rollout {
        &self.plan
    }

    /// The identity stamped on events.
    pub fn context(&self) -> &Context {
        &self.ctx
    }

    /// A reload changed the config but not this rollout (the same canary
    /// build): new events carry the new config hash, versions and release
    /// metadata. The rollout's identity (route, canary build) stays.
    pub fn relabel(&mut self, ctx: Context) {
        let Context { stable_version, config_hash, stable_release, canary_release, .. } = ctx;
        self.ctx = Context { stable_version, config_hash, stable_release, canary_release, ..self.ctx.clone() };
    }

    /// The canary weight the route must serve now.
    pub fn weight(&self) -> Weight {
        match self.state.phase {
            Phase::Progressing | Phase::Paused => self.plan.stages[self.state.stage].weight,
            Phase::Promoted => Weight::FULL,
            Phase::RolledBack | Phase::Aborted => Weight::ZERO,
        }
    }

    /// Whether the stage's cohort applies (not after rollback or abort).
    pub fn cohort_active(&self) -> bool {
        matches!(self.state.phase, Phase::Progressing | Phase::Paused)
    }

    /// Span of the gate window: time since the last transition (or since a
    /// restart, whose data before it are gone).
    pub fn window_ms(&self, now_ms: u64) -> u64 {
        now_ms.saturating_sub(self.window_start_ms())
    }

    /// When this attempt of the rollout started (unix ms): its first
    /// stage's start, or (state from before this was kept) its last
    /// transition.
    pub fn started_ms(&self) -> u64 {
        if self.state.started_ms > 0 {
            self.state.started_ms
        } else {
            self.state.since_ms
        }
    }

    /// Whether the gates judge the canary now: a progressing rollout past
    /// its warm-up, or a promoted one in its post-promotion bake. (What an
    /// outside signal is worth asking for.)
    pub fn judging(&self, now_ms: u64) -> bool {
        let bake = self.plan.stages.last().map_or(0, |s| s.bake.as_millis() as u64);
        match self.state.phase {
            Phase::Progressing => self.warming_until().is_none(),
            Phase::Promoted => self.window_ms(now_ms) < bake,
            _ => false,
        }
    }

    /// The end of the first stage's warm-up while it lasts (unix ms).
    pub fn warming_until(&self) -> Option<u64> {
        let warmup = self.plan.warmup.as_millis() as u64;
        let warming = warmup > 0 && self.state.phase == Phase::Progressing && self.state.stage == 0;
        (warming && !self.state.warmed).then_some(self.state.since_ms + warmup)
    }

    /// When the current window starts: the last transition, or a restart
    /// (whose data before it are gone), unix ms.
    pub fn window_start_ms(&self) -> u64 {
        self.state.since_ms.max(self.data_since_ms)
    }

    /// Evaluates the gates on the windows since the last transition and
    /// decides.
    pub fn tick(&mut self, now_ms: u64, canary: &Window, stable: &Window) -> Tick {
        self.tick_with(
            now_ms,
            &Observed { canary, stable, stable_history: stable, probes: Probes::default(), signals: &[] },
        )
    }

    /// [`Engine::tick`], with stable's history and the stage's synthetic
    /// checks and shadow comparisons on the canary (both also count towards
    /// `min_requests`).
    pub fn tick_with(&mut self, now_ms: u64, seen: &Observed<'_>) -> Tick {
        let mut out = Tick::default();
        let (canary, stable, probes) = (seen.canary, seen.stable, seen.probes);
        if self.state.phase == Phase::Paused {
            // Held (by hand, or by on_failure / on_hold = pause), the canary
            // keeps its weight: the severe rule still watches it.
            let phi = evidence::observed_dispersion(&[&seen.stable_history.seconds, &canary.seconds]);
            if let Some(cause) = self.severe(canary, stable, phi) {
                out.events.push(self.act(now_ms, OnFailure::Rollback, cause));
            }
            return out;
        }
        let post_promotion = self.state.phase == Phase::Promoted;
        if !(self.state.phase == Phase::Progressing || post_promotion) {
            return out;
        }
        let last = self.plan.stages.len() - 1;
        if post_promotion && self.window_ms(now_ms) >= self.plan.stages[last].bake.as_millis() as u64 {
            return out; // post-promotion bake over: nothing left to watch
        }
        let canary_only = post_promotion || self.weight() == Weight::FULL;
        let history = seen.stable_history;
        if !canary_only && history.counts.total() > 0 {
            // Stable's reference needs a real sample: a few requests with no
            // failure would set every tolerance to its floor.
            if self.reference.is_none() && history.counts.total() >= REFERENCE_MIN_REQUESTS {
                self.reference = Some((history.counts.failures(), history.counts.total()));
                let [p90, p99] = gate::TAILS.map(|q| gate::quantile_micros(history, q));
                self.reference_tails = p90.zip(p99).map(|(a, b)| [a, b]);
            }
            self.stable_ref = Some(history.clone());
        }
        if let Some(end) = self.warming_until() {
            // The build warms up: only the severe rule judges it. Once over,
            // the first stage's window, bake and deadline start.
            if let Some(cause) = self.severe_breach(seen) {
                out.events.push(self.act(now_ms, OnFailure::Rollback, cause));
            } else if now_ms >= end {
                self.state.since_ms = now_ms;
                self.state.warmed = true;
                let cause =
                    format!("warm-up over ({}s): the gates judge the canary from now", self.plan.warmup.as_secs());
                out.events.push(self.event(now_ms, EventKind::Evaluated, Actor::Auto, self.state.phase, cause));
            }
            return out;
        }
        // At full weight stable has no traffic of its own: its history from
        // before is the baseline (none after a restart: comparisons skip).
        let (compare_with, baseline) =
            if canary_only { (self.stable_ref.as_ref(), true) } else { (Some(stable), false) };
        // Burstiness from stable's history (its baseline once it has no
        // traffic) and the canary's stage.
        let stable_seconds = if canary_only { compare_with.map_or(&[][..], |w| &w.seconds) } else { &history.seconds };
        let phi = evidence::dispersion(&[stable_seconds, &canary.seconds]);
        let phi_seen = evidence::observed_dispersion(&[stable_seconds, &canary.seconds]);
        // Per-window shares of alpha: every stage, and the bake after
        // promotion.
        let stages = self.plan.stages.len() + 1;
        // A synthetic gate judges the stages that send synthetic requests;
        // in the others it does not apply (rather than hold them).
        let probing = self.plan.stages.get(self.state.stage).is_some_and(|s| s.synthetic.is_some());
        let window_start = self.window_start_ms();
        let reading = |g: &Gate| -> Result<&Signal, &'static str> {
            let s = seen.signals.iter().find(|s| s.gate == g.name).ok_or("no reading from Prometheus yet")?;
            if s.window_start_ms != window_start {
                Err("no reading for this stage's window yet")
            } else if now_ms > s.fresh_until_ms {
                Err("the last reading is stale (Prometheus has not answered since)")
            } else {
                Ok(s)
            }
        };
        let (verdicts, stage): (Vec<GateResult>, Vec<Carry>) = self
            .plan
            .gates
            .iter()
            .zip(&self.carried)
            .map(|(g, carried)| {
                let inputs = Inputs {
                    canary,
                    stable: compare_with,
                    baseline,
                    reference_rate: self.reference.map(|(x, n)| x as f64 / n as f64),
                    reference_tails: self.reference_tails,
                    probes,
                    phi,
                    phi_seen,
                    carried: *carried,
                    stages,
                    signal: if g.metric == GateMetric::Promql { reading(g) } else { Err("") },
                };
                let (mut r, carry) = gate::evaluate_with(g, &inputs);
                if g.metric == GateMetric::Synthetic && !probing {
                    r.verdict = Verdict::Skipped;
                }
                (r, carry)
            })
            .unzip();
        self.stage = stage;
        let changed = summary(&verdicts) != summary(&self.state.verdicts);
        self.state.verdicts = verdicts;
        let failing: Vec<String> = self
            .state
            .verdicts
            .iter()
            .filter(|v| !v.dry_run && v.verdict == Verdict::Fail)
            .map(|v| v.gate.clone())
            .collect();
        let degraded = if canary_only { None } else { self.stable_degraded(stable, phi) };
        let stable_phi = evidence::observed_dispersion(&[stable_seconds]);
        let was_degraded = std::mem::replace(&mut self.stable_degraded, degraded.is_some());
        let none = Window::default();
        if let Some(cause) = self.severe(canary, if canary_only { &none } else { stable }, stable_phi) {
            // Whatever on_failure says: pausing would leave the failing
            // canary its weight.
            out.events.push(self.act(now_ms, OnFailure::Rollback, cause));
        } else if let Some(cause) = degraded {
            // Environment guard: stable is failing too. Neither blame the
            // canary nor pass it because stable is worse: hold, and say so.
            let (elapsed, deadline) = (self.window_ms(now_ms), self.deadline_ms());
            if !post_promotion && elapsed >= deadline {
                // Held for good: the stage's deadline runs all the same.
                let cause =
                    format!("{cause}; no decision after {}s in stage {}: holding", elapsed / 1000, self.state.stage);
                out.events.push(self.act(now_ms, self.plan.on_hold, cause));
            } else if !was_degraded || changed {
                out.events.push(self.event(now_ms, EventKind::Evaluated, Actor::Auto, self.state.phase, cause));
            }
        } else if was_degraded {
            // Stable recovered: what the stage saw meanwhile is not the
            // canary's to answer for. Its window (not its stage) restarts.
            // The ratio tests keep what they learnt (stable failing more
            // only ever argued for the canary; dropping it would hand the
            // test a fresh start); the canary's own counts of the outage do
            // not count towards its safety.
            self.state.since_ms = now_ms;
            self.state.consecutive_failures = 0;
            for (c, s) in self.carried.iter_mut().zip(&self.stage) {
                *c = c.plus(&Carry { requests: 0, failures: 0, above: [0; 2], ..*s });
            }
            self.stage.iter_mut().for_each(|c| *c = Carry::default());
            let cause = "stable recovered: the stage's window starts again".to_string();
            out.events.push(self.event(now_ms, EventKind::Evaluated, Actor::Auto, self.state.phase, cause));
        } else if !failing.is_empty() && !self.fresh_failure() {
            // Only readings this tick has already counted are failing (an
            // outside signal is read every few seconds, the gates every
            // tick): no new evidence, nothing to count.
        } else if !failing.is_empty() {
            self.state.consecutive_failures += 1;
            let k = self.state.consecutive_failures;
            let at_once = post_promotion || canary_only;
            if at_once || k >= self.plan.failure_threshold {
                let cause = format!(
                    "gates failing ({}) {k} time(s) in a row{}",
                    failing.join(", "),
                    if at_once { " at full weight" } else { "" }
                );
                // At full weight (and after promotion) there is no stable
                // share to hold at: a failing gate falls back at once,
                // whatever on_failure says.
                let action = if at_once { OnFailure::Rollback } else { self.plan.on_failure };
                out.events.push(self.act(now_ms, action, cause));
            } else if changed {
                let cause = format!("gates failing ({}): {k} of {}", failing.join(", "), self.plan.failure_threshold);
                out.events.push(self.event(now_ms, EventKind::Evaluated, Actor::Auto, self.state.phase, cause));
            }
        } else {
            self.state.consecutive_failures = 0;
            let stage = &self.plan.stages[self.state.stage];
            let elapsed = self.window_ms(now_ms);
            // Decided on evidence: every gate passed or does not apply, and
            // at least one passed (gates that all skip, or none at all, are
            // no evidence), over at least one request whatever min_requests.
            let decided = self.decided();
            let evidence = canary.counts.total() + probes.synthetic.total() + probes.shadow.total();
            let ready = !post_promotion
                && decided
                && elapsed >= stage.bake.as_millis() as u64
                && evidence >= stage.min_requests.max(1);
            let deadline = self.deadline_ms();
            if ready {
                if self.plan.pre_stage.is_some() {
                    out.needs_approval = true;
                } else {
                    out.events.push(self.advance(now_ms, Actor::Auto, "all gates pass".into()));
                }
            } else if !post_promotion && elapsed >= deadline {
                let why = if self.acting().any(|v| v.verdict != Verdict::Skipped) {
                    ""
                } else {
                    " (no gate judged this stage: none applies here, so none can pass)"
                };
                let cause =
                    format!("no decision after {}s in stage {}{why}: holding", elapsed / 1000, self.state.stage);
                out.events.push(self.act(now_ms, self.plan.on_hold, cause));
            } else if changed {
                let cause = format!("verdicts: {}", summary(&self.state.verdicts));
                out.events.push(self.event(now_ms, EventKind::Evaluated, Actor::Auto, self.state.phase, cause));
            }
        }
        self.check_invariants();
        out
    }

    /// Answer of the pre_stage webhook, asked when the stage whose window
    /// started at `asked_since_ms` ([`Engine::window_start_ms`]) was ready.
    /// The webhook answers while the gates keep running: the stage advances
    /// only if it is still that stage and the latest verdicts (those of the
    /// tick just before this answer) still pass. `None` when the stage moved
    /// on meanwhile (the answer is for another stage).
    pub fn approve(&mut self, now_ms: u64, asked_since_ms: u64, approved: bool, detail: String) -> Option<Event> {
        if self.window_start_ms() != asked_since_ms {
            return None;
        }
        let still_ready = self.state.phase == Phase::Progressing && self.decided() && !self.stable_degraded;
        let ev = if approved && still_ready {
            self.advance(now_ms, Actor::Auto, format!("all gates pass; pre_stage webhook: {detail}"))
        } else {
            let why = if approved { format!("{detail}, but the gates no longer all pass") } else { detail };
            self.event(now_ms, EventKind::Held, Actor::Auto, self.state.phase, format!("pre_stage webhook: {why}"))
        };
        self.check_invariants();
        Some(ev)
    }

    /// The current stage's hold deadline, ms after its window started.
    fn deadline_ms(&self) -> u64 {
        let stage = &self.plan.stages[self.state.stage];
        stage.max_duration.unwrap_or(self.plan.hold_timeout).as_millis() as u64
    }

    /// Every gate passed or does not apply, and at least one passed
    /// (dry-run gates aside: they never act).
    fn decided(&self) -> bool {
        self.acting().all(|v| matches!(v.verdict, Verdict::Pass | Verdict::Skipped))
            && self.acting().any(|v| v.verdict == Verdict::Pass)
    }

    /// Whether this tick's failing verdicts hold new evidence: a failing
    /// gate on weir's own data, or an outside reading not counted before
    /// (which it then is).
    fn fresh_failure(&mut self) -> bool {
        let mut fresh = false;
        for (v, counted) in self.state.verdicts.iter().zip(self.counted_reading.iter_mut()) {
            if v.dry_run || v.verdict != Verdict::Fail {
                continue;
            }
            match v.evaluated_at_ms {
                Some(at) if *counted == Some(at) => {}
                Some(at) => {
                    *counted = Some(at);
                    fresh = true;
                }
                None => fresh = true,
            }
        }
        fresh
    }

    /// The verdicts that act: all but the dry-run gates'.
    fn acting(&self) -> impl Iterator<Item = &GateResult> {
        self.state.verdicts.iter().filter(|v| !v.dry_run)
    }

    /// Manual pause: keep the weight, stop progressing.
    pub fn pause(&mut self, now_ms: u64) -> Result<Event, ActionError> {
        self.require("pause", &[Phase::Progressing])?;
        Ok(self.transition(now_ms, Phase::Paused, EventKind::Paused, Actor::Manual, "paused by hand".into()))
    }

    /// Manual resume: a paused rollout continues its stage; a rolled-back or
    /// aborted one starts again at stage 0.
    pub fn resume(&mut self, now_ms: u64) -> Result<Event, ActionError> {
        self.require("resume", &[Phase::Paused, Phase::RolledBack, Phase::Aborted])?;
        if self.state.phase == Phase::Paused {
            // Paused, the canary kept its weight: it is warm.
            self.state.warmed = true;
        } else {
            // From weight 0: a new attempt, cold, with nothing judged yet.
            self.state.stage = 0;
            self.state.warmed = false;
            self.state.verdicts.clear();
            self.state.started_ms = now_ms;
        }
        Ok(self.transition(now_ms, Phase::Progressing, EventKind::Resumed, Actor::Manual, "resumed by hand".into()))
    }

    /// Manual promote: the next stage, or straight to 100 % with `full`.
    pub fn promote(&mut self, now_ms: u64, full: bool) -> Result<Event, ActionError> {
        self.require("promote", &[Phase::Progressing, Phase::Paused])?;
        if full {
            self.state.stage = self.plan.stages.len() - 1;
            return Ok(self.transition(
                now_ms,
                Phase::Promoted,
                EventKind::Promoted,
                Actor::Manual,
                "promoted to 100% by hand".into(),
            ));
        }
        self.state.phase = Phase::Progressing;
        Ok(self.advance(now_ms, Actor::Manual, "promoted to the next stage by hand".into()))
    }

    /// Manual abort: weight 0 at once.
    pub fn abort(&mut self, now_ms: u64) -> Result<Event, ActionError> {
        self.require("abort", &[Phase::Progressing, Phase::Paused, Phase::Promoted])?;
        Ok(self.transition(now_ms, Phase::Aborted, EventKind::Aborted, Actor::Manual, "aborted by hand".into()))
    }

    fn require(&self, action: &'static str, phases: &[Phase]) -> Result<(), ActionError> {
        if phases.contains(&self.state.phase) {
            Ok(())
        } else {
            Err(ActionError { action, phase: self.state.phase.as_str() })
        }
    }

    fn advance(&mut self, now_ms: u64, actor: Actor, cause: String) -> Event {
        if self.state.stage + 1 < self.plan.stages.len() {
            self.state.stage += 1;
            let cause = format!("{cause}: stage {} at {}", self.state.stage, self.weight());
            self.transition(now_ms, Phase::Progressing, EventKind::Advanced, actor, cause)
        } else {
            self.transition(now_ms, Phase::Promoted, EventKind::Promoted, actor, format!("{cause}: promoted"))
        }
    }

    /// The severe rule alone on `seen`, as the tick applies it to a
    /// progressing or paused rollout: its cause when the canary breaches.
    /// A fleet replica cut off from etcd acts on this by itself (it serves
    /// stable); anything short of it waits for the fleet.
    pub fn severe_breach(&self, seen: &Observed<'_>) -> Option<String> {
        if !matches!(self.state.phase, Phase::Progressing | Phase::Paused) {
            return None;
        }
        let none = Window::default();
        let full = self.weight() == Weight::FULL;
        let stable_phi = evidence::observed_dispersion(&[&seen.stable_history.seconds]);
        self.severe(seen.canary, if full { &none } else { seen.stable }, stable_phi)
    }

    /// A severe breach, in words: over some span back from the newest
    /// second of the canary's window (at most `severe_window`), an error
    /// rate of at least `severe_error_rate` over at least
    /// `severe_min_requests` requests (times the dispersion `phi`), and at
    /// least twice stable's over the same seconds.
    fn severe(&self, canary: &Window, stable: &Window, phi: f64) -> Option<String> {
        let secs = self.plan.severe_window.as_secs().max(1);
        let newest = canary.seconds.last()?.sec;
        // Every span back from the newest second that holds enough
        // requests (independent ones: bursts count once), up to
        // severe_window: a crash at a high rate shows in the first second,
        // a slow one over the whole window.
        let (mut n, mut x) = (0, 0);
        for s in canary.seconds.iter().rev().take_while(|s| s.sec + secs > newest) {
            n += s.total;
            x += s.failures;
            let rate = x as f64 / n as f64;
            if n as f64 >= self.plan.severe_min_requests as f64 * phi && rate >= self.plan.severe_error_rate {
                // Stable over the same seconds: a shared outage is not the
                // canary's doing (it must fail at least twice as often).
                // Only a stable sample as large counts; a longer span may
                // still tell them apart.
                let (sn, sx) = stable.since(s.sec);
                if sn >= self.plan.severe_min_requests && rate < 2.0 * sx as f64 / sn as f64 {
                    continue;
                }
                return Some(format!(
                    "severe breach: canary error rate {:.1}% over its last {n} requests in {}s (limit {:.1}%)",
                    100.0 * rate,
                    newest + 1 - s.sec,
                    100.0 * self.plan.severe_error_rate
                ));
            }
        }
        None
    }

    /// Stable failing clearly more than when the rollout started (beyond
    /// the tolerance `2 × rate + 0.5 %`, with evidence at 1 % against its
    /// rate of then by its 99 % upper bound) over the last 30 s, in words.
    fn stable_degraded(&self, stable: &Window, phi: f64) -> Option<String> {
        let (rx, rn) = self.reference?;
        let reference = rx as f64 / rn as f64;
        let (n, x) = stable.recent(30);
        let rate = (n > 0).then(|| x as f64 / n as f64)?;
        let limit = gate::DEFAULT_TOLERANCE_RATIO * reference + gate::DEFAULT_TOLERANCE_DELTA;
        let e = RatioTest::against_rate(x, n, evidence::upper_bound(rx, rn, 0.01, phi)).e_value(phi);
        (rate > limit && e >= 100.0).then(|| {
            format!(
                "stable is degraded: {:.2}% errors over the last 30s against {:.2}% when the rollout started; \
                 holding without judging the canary",
                100.0 * rate,
                100.0 * reference
            )
        })
    }

    fn act(&mut self, now_ms: u64, action: OnFailure, cause: String) -> Event {
        match action {
            OnFailure::Rollback => {
                self.transition(now_ms, Phase::RolledBack, EventKind::RolledBack, Actor::Auto, cause)
            }
            OnFailure::Pause => self.transition(now_ms, Phase::Paused, EventKind::Paused, Actor::Auto, cause),
        }
    }

    fn transition(&mut self, now_ms: u64, to: Phase, kind: EventKind, actor: Actor, cause: String) -> Event {
        let from = self.state.phase;
        self.roll_evidence(from, to);
        self.state.phase = to;
        self.state.since_ms = now_ms;
        self.state.consecutive_failures = 0;
        let mut ev = self.event(now_ms, kind, actor, to, cause);
        ev.from = from;
        self.check_invariants();
        ev
    }

    /// Takes a state decided elsewhere (fleet mode: the state the leader,
    /// or a manual action on any replica, committed): the evidence is kept
    /// or dropped as the same transition here would have. `false`, and
    /// nothing changed, if the state does not fit the plan.
    pub fn adopt(&mut self, state: State) -> bool {
        if state.stage >= self.plan.stages.len() {
            return false;
        }
        let moved =
            (state.phase, state.stage, state.since_ms) != (self.state.phase, self.state.stage, self.state.since_ms);
        if moved {
            self.roll_evidence(self.state.phase, state.phase);
        }
        self.state = state;
        true
    }

    /// The evidence bookkeeping of a transition from `from` to `to`.
    fn roll_evidence(&mut self, from: Phase, to: Phase) {
        if matches!(to, Phase::RolledBack | Phase::Aborted) || matches!(from, Phase::RolledBack | Phase::Aborted) {
            // A new attempt gathers its own evidence, against stable as it
            // is when it starts.
            self.carried.iter_mut().for_each(|c| *c = Carry::default());
            self.reference = None;
            self.reference_tails = None;
        } else {
            for (c, s) in self.carried.iter_mut().zip(&self.stage) {
                *c = c.plus(s);
            }
        }
        self.stage.iter_mut().for_each(|c| *c = Carry::default());
        self.stable_degraded = false;
    }

    fn event(&self, now_ms: u64, kind: EventKind, actor: Actor, to: Phase, cause: String) -> Event {
        Event {
            at_ms: now_ms,
            route: self.ctx.route.clone(),
            kind,
            actor,
            from: self.state.phase,
            to,
            stage: self.state.stage,
            weight: self.weight().percent(),
            cause,
            verdicts: self.state.verdicts.clone(),
            stable_version: self.ctx.stable_version.clone(),
            canary_version: self.ctx.canary_version.clone(),
            config_hash: self.ctx.config_hash.clone(),
            stable_release: self.ctx.stable_release.clone(),
            canary_release: self.ctx.canary_release.clone(),
            fleet: None,
        }
    }

    /// Checked after every transition in debug builds (and in tests).
    fn check_invariants(&self) {
        debug_assert!(!self.plan.stages.is_empty(), "a rollout has stages");
        debug_assert!(self.state.stage < self.plan.stages.len(), "stage index in range");
        debug_assert!(
            self.state.phase != Phase::Progressing || self.state.consecutive_failures < self.plan.failure_threshold,
            "a progressing rollout is below its failure threshold"
        );
        debug_assert!(
            match self.state.phase {
                Phase::RolledBack | Phase::Aborted => self.weight() == Weight::ZERO,
                Phase::Promoted => self.weight().bp() == FULL,
                _ => true,
            },
            "weight follows the phase"
        );
    }
}

fn summary(v: &[GateResult]) -> String {
    v.iter()
        .map(|r| format!("{}={}{}", r.gate, r.verdict.as_str(), if r.dry_run { " (dry run)" } else { "" }))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests;
