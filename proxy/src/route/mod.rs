//! Routes at run time: matching a request to a route ([`table`]) and
//! choosing stable or canary for it ([`select`]).

pub(crate) mod select;
pub(crate) mod table;

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;

use http::HeaderName;
use weir_control::classify::Classifier;
use weir_control::config;
use weir_control::rollout::Engine;
use weir_control::split::{Salt, Side, Weight};

use crate::telemetry::{BackendStats, StageMarks};
use crate::upstream::Backend;

/// Live state of a route that survives reloads keyed by route name: the
/// current weight and stage (written by the rollout driver or the config),
/// and the keyless split sequence.
#[derive(Debug)]
pub(crate) struct RouteState {
    weight_bp: AtomicU32,
    stage: AtomicU32,
    cohort_active: AtomicBool,
    sequence: AtomicU64,
    /// The rollout, for routes that have one. Locked only by the rollout
    /// driver and the admin API, never on the request path.
    #[allow(clippy::disallowed_types)]
    pub(crate) engine: std::sync::Mutex<Option<Engine>>,
    /// Where the rollout's current stage starts in the slots (taken with
    /// the engine's lock held; see `telemetry::stage`).
    #[allow(clippy::disallowed_types)]
    pub(crate) marks: std::sync::Mutex<Option<StageMarks>>,
    /// A pre_stage webhook call is in flight (one at a time per route).
    pub(crate) approving: AtomicBool,
}

impl Default for RouteState {
    fn default() -> Self {
        RouteState {
            weight_bp: AtomicU32::new(0),
            stage: AtomicU32::new(0),
            cohort_active: AtomicBool::new(true),
            sequence: AtomicU64::new(0),
            engine: std::sync::Mutex::new(None),
            marks: std::sync::Mutex::new(None),
            approving: AtomicBool::new(false),
        }
    }
}

impl RouteState {
    pub(crate) fn weight(&self) -> Weight {
        Weight::from_bp(self.weight_bp.load(Ordering::Relaxed))
    }

    pub(crate) fn set_weight(&self, w: Weight) {
        self.weight_bp.store(w.bp(), Ordering::Relaxed);
    }

    pub(crate) fn stage(&self) -> usize {
        self.stage.load(Ordering::Relaxed) as usize
    }

    pub(crate) fn set_stage(&self, stage: usize) {
        self.stage.store(stage as u32, Ordering::Relaxed);
    }

    pub(crate) fn cohort_active(&self) -> bool {
        self.cohort_active.load(Ordering::Relaxed)
    }

    /// Publishes what the engine decided to the request path.
    pub(crate) fn apply(&self, engine: &Engine) {
        self.set_stage(engine.state().stage);
        self.cohort_active.store(engine.cohort_active(), Ordering::Relaxed);
        self.set_weight(engine.weight());
    }

    /// Serves stable only, whatever the engine says (fleet mode: a replica
    /// whose config does not fit the fleet's rollout, or out of touch).
    pub(crate) fn serve_stable(&self) {
        self.cohort_active.store(false, Ordering::Relaxed);
        self.set_weight(Weight::ZERO);
    }

    /// Locks the engine slot (a poisoned lock still holds a valid engine).
    pub(crate) fn engine(&self) -> std::sync::MutexGuard<'_, Option<Engine>> {
        self.engine.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Locks the stage marks.
    pub(crate) fn marks(&self) -> std::sync::MutexGuard<'_, Option<StageMarks>> {
        self.marks.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn next_sequence(&self) -> u64 {
        self.sequence.fetch_add(1, Ordering::Relaxed)
    }
}

/// Where a request key is read, with names pre-parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Key {
    Header(HeaderName),
    Cookie(Box<str>),
}

impl Key {
    fn from_config(k: &config::KeySource) -> Result<Self, String> {
        Ok(match k {
            config::KeySource::Header(h) => {
                Key::Header(HeaderName::from_bytes(h.as_bytes()).map_err(|e| format!("header {h}: {e}"))?)
            }
            config::KeySource::Cookie(c) => Key::Cookie(c.as_str().into()),
        })
    }
}

/// A cohort with pre-parsed key.
#[derive(Debug, Clone)]
pub(crate) struct Cohort {
    key: Key,
    values: Box<[Box<str>]>,
}

impl Cohort {
    fn from_config(c: &config::Cohort) -> Result<Self, String> {
        Ok(Cohort { key: Key::from_config(&c.source)?, values: c.values.iter().map(|v| v.as_str().into()).collect() })
    }
}

/// A route of a snapshot.
#[derive(Debug)]
pub(crate) struct Route {
    pub(crate) name: Arc<str>,
    pub(crate) host: Option<Box<str>>,
    pub(crate) path_prefix: Box<str>,
    pub(crate) stable: Arc<Backend>,
    pub(crate) canary: Option<Arc<Backend>>,
    pub(crate) salt: Salt,
    pub(crate) sticky: Option<Key>,
    pub(crate) force: Option<Key>,
    /// Static cohort, or one per rollout stage (indexed by the live stage).
    pub(crate) cohorts: Box<[Option<Cohort>]>,
    pub(crate) variant_header: Option<HeaderName>,
    pub(crate) state: Arc<RouteState>,
    /// Measurements of the stable and canary backends (kept across reloads).
    pub(crate) stable_stats: Arc<BackendStats>,
    pub(crate) canary_stats: Option<Arc<BackendStats>>,
    /// Synthetic requests, measured apart from user traffic.
    synthetic_stable: Arc<BackendStats>,
    synthetic_canary: Option<Arc<BackendStats>>,
    shadow_canary: Option<Arc<BackendStats>>,
    /// Shadow traffic settings.
    pub(crate) shadow: Option<config::Shadow>,
    weight_gauge: metrics::Gauge,
    /// Which statuses and gRPC codes count as failures (`failures`).
    pub(crate) failures: Classifier,
}

/// Per-route telemetry handles, resolved when the snapshot is built.
pub(crate) struct RouteTelemetry {
    pub(crate) stable: Arc<BackendStats>,
    pub(crate) canary: Option<Arc<BackendStats>>,
    pub(crate) synthetic_stable: Arc<BackendStats>,
    pub(crate) synthetic_canary: Option<Arc<BackendStats>>,
    pub(crate) shadow_canary: Option<Arc<BackendStats>>,
    pub(crate) weight_gauge: metrics::Gauge,
}

impl Route {
    /// Builds a route; `state` is the previous generation's when kept.
    pub(crate) fn build(
        cfg: &config::Route,
        stable: Arc<Backend>,
        canary: Option<Arc<Backend>>,
        state: Arc<RouteState>,
        telemetry: RouteTelemetry,
    ) -> Result<Self, String> {
        let cohorts = match &cfg.rollout {
            Some(r) => r
                .stages
                .iter()
                .map(|s| s.cohort.as_ref().map(Cohort::from_config).transpose())
                .collect::<Result<Vec<_>, _>>()?,
            None => vec![cfg.cohort.as_ref().map(Cohort::from_config).transpose()?],
        };
        Ok(Route {
            name: cfg.name.as_str().into(),
            host: cfg.host.as_deref().map(Into::into),
            path_prefix: cfg.path_prefix.as_str().into(),
            stable,
            canary,
            salt: Salt::new(&cfg.salt),
            sticky: cfg.sticky.as_ref().map(Key::from_config).transpose()?,
            force: cfg.force.as_ref().map(Key::from_config).transpose()?,
            cohorts: cohorts.into_boxed_slice(),
            variant_header: cfg
                .variant_header
                .as_deref()
                .map(|h| HeaderName::from_bytes(h.as_bytes()).map_err(|e| format!("variant_header: {e}")))
                .transpose()?,
            state,
            stable_stats: telemetry.stable,
            canary_stats: telemetry.canary,
            synthetic_stable: telemetry.synthetic_stable,
            synthetic_canary: telemetry.synthetic_canary,
            shadow_canary: telemetry.shadow_canary,
            shadow: cfg.shadow.clone(),
            weight_gauge: telemetry.weight_gauge,
            failures: cfg.failures,
        })
    }

    /// The stats of the backend serving `side`.
    /// The canary's and stable's stats, as `telemetry::stage` reads them.
    pub(crate) fn both_stats(&self) -> (Option<&BackendStats>, Option<&BackendStats>) {
        (self.canary_stats.as_deref(), Some(&self.stable_stats))
    }

    pub(crate) fn stats(&self, side: Side) -> Option<&Arc<BackendStats>> {
        match side {
            Side::Stable => Some(&self.stable_stats),
            Side::Canary => self.canary_stats.as_ref(),
        }
    }

    /// The synthetic-traffic stats of the backend serving `side`.
    pub(crate) fn synthetic_stats(&self, side: Side) -> Option<&Arc<BackendStats>> {
        match side {
            Side::Stable => Some(&self.synthetic_stable),
            Side::Canary => self.synthetic_canary.as_ref(),
        }
    }

    /// The stats of shadow copies sent to the canary.
    pub(crate) fn shadow_stats(&self) -> Option<&Arc<BackendStats>> {
        self.shadow_canary.as_ref()
    }

    /// Publishes what the engine decided to the request path and, in the
    /// same step, to `weir_canary_weight`: the gauge changes with the
    /// rollout's state gauges, not up to a second after them.
    pub(crate) fn apply(&self, engine: &Engine) {
        self.state.apply(engine);
        self.publish_weight();
    }

    /// [`RouteState::serve_stable`], and the gauge with it.
    pub(crate) fn serve_stable(&self) {
        self.state.serve_stable();
        self.publish_weight();
    }

    /// Publishes the live weight as `weir_canary_weight` (percent).
    pub(crate) fn publish_weight(&self) {
        self.weight_gauge.set(self.state.weight().percent());
    }

    /// The backend serving `side`.
    pub(crate) fn backend(&self, side: Side) -> &Arc<Backend> {
        match (side, &self.canary) {
            (Side::Canary, Some(c)) => c,
            _ => &self.stable,
        }
    }
}
