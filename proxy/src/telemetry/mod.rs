//! In-process measurement: per (route, backend) recording for the gate
//! engine's windows, and the Prometheus registry behind `GET /metrics`.
//!
//! Each running weir has its own [`Telemetry`] (no global recorder), so
//! several instances in one process never mix their numbers. Stats objects
//! are keyed by (route, backend) name and reused across reloads, so a reload
//! that keeps a route keeps its windows and counters.

mod counters;
mod histogram;
pub(crate) mod names;
mod recorder;
mod stage;

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex};

use metrics::{Counter, Gauge, Key, Label, Metadata, Recorder};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle, PrometheusRecorder};
use weir_control::classify::GRPC_CODES;
use weir_control::rollout::{Engine, Event, EventKind, Phase};
use weir_control::sample::{CodeClass, UpstreamErrorKind};

pub(crate) use recorder::Handles;
pub(crate) use recorder::Pending;
pub use recorder::{BackendStats, Recorded};
pub use stage::{follow, tick_recorded, tick_windows, StageMarks, TickWindows};

use names::label;

/// One side's release in `weir_build_info`: its version label and commit.
pub(crate) type Release<'a> = (Option<&'a str>, Option<&'a str>);

static METADATA: Metadata<'static> = Metadata::new("weir", metrics::Level::INFO, Some("weir_proxy::telemetry"));

/// Which traffic a stats object measures (each has its own metric names).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Traffic {
    User,
    Synthetic,
    Shadow,
}

impl Traffic {
    /// The request counter's name and help text (by code class).
    fn requests(self) -> (&'static str, &'static str) {
        match self {
            Traffic::User => (
                names::REQUESTS_TOTAL,
                "Proxied requests by route, backend and code class (error: no upstream response).",
            ),
            Traffic::Synthetic => {
                (names::SYNTHETIC_REQUESTS_TOTAL, "Synthetic requests sent by weir, by route, backend and code class.")
            }
            Traffic::Shadow => {
                (names::SHADOW_REQUESTS_TOTAL, "Shadow copies sent to the canary, by route, backend and code class.")
            }
        }
    }

    /// The upstream error counter's name and help text (by kind).
    fn errors(self) -> (&'static str, &'static str) {
        match self {
            Traffic::User => (names::UPSTREAM_ERRORS_TOTAL, "Requests that got no usable upstream response, by kind."),
            Traffic::Synthetic => {
                (names::SYNTHETIC_ERRORS_TOTAL, "Synthetic requests that got no usable upstream response, by kind.")
            }
            Traffic::Shadow => {
                (names::SHADOW_ERRORS_TOTAL, "Shadow copies that got no usable upstream response, by kind.")
            }
        }
    }

    /// The latency histogram's name and help text.
    fn duration(self) -> (&'static str, &'static str) {
        match self {
            Traffic::User => {
                (names::REQUEST_DURATION_SECONDS, "Time from request received to upstream response headers.")
            }
            Traffic::Synthetic => {
                (names::SYNTHETIC_DURATION_SECONDS, "Synthetic requests: time to upstream response headers.")
            }
            Traffic::Shadow => (names::SHADOW_DURATION_SECONDS, "Shadow copies: time to upstream response headers."),
        }
    }
}

/// `weir_grpc_responses_total` of one (route, backend): one counter per
/// `grpc_code` (17 names, never a value from a request), registered when
/// the code is first seen.
#[derive(Debug)]
pub(crate) struct GrpcHandles {
    recorder: Arc<PrometheusRecorder>,
    route: String,
    backend: String,
    made: Mutex<[Option<Counter>; GRPC_CODES.len()]>,
}

impl GrpcHandles {
    /// Adds `n` calls that ended with `code` (0..=16). Off the request path
    /// (telemetry folds call it).
    pub(crate) fn increment(&self, code: usize, n: u64) {
        let Some(name) = GRPC_CODES.get(code) else { return };
        let mut made = self.made.lock().unwrap_or_else(|p| p.into_inner());
        let counter = made[code].get_or_insert_with(|| {
            let key = Key::from_parts(
                names::GRPC_RESPONSES_TOTAL,
                labels(&[(label::ROUTE, &self.route), (label::BACKEND, &self.backend), (label::GRPC_CODE, name)]),
            );
            self.recorder.register_counter(&key, &METADATA)
        });
        counter.increment(n);
    }
}

/// Fleet mode's metrics (see `names::FLEET_*`).
#[cfg(feature = "fleet")]
pub(crate) struct FleetMetrics {
    pub(crate) leader: Gauge,
    pub(crate) term: Gauge,
    pub(crate) applied_revision: Gauge,
    pub(crate) members: Gauge,
    pub(crate) out_of_touch: Gauge,
    pub(crate) overrides: Gauge,
    pub(crate) apply_lag: metrics::Histogram,
}

/// The registry of one running weir: Prometheus handles and per
/// (route, backend) stats.
pub struct Telemetry {
    recorder: Arc<PrometheusRecorder>,
    handle: PrometheusHandle,
    stats: Mutex<HashMap<(String, String, Traffic), Arc<BackendStats>>>,
    build_info: Mutex<HashMap<String, Gauge>>,
    reloads_ok: Counter,
    reloads_error: Counter,
    keep_secs: std::sync::atomic::AtomicU64,
}

impl Default for Telemetry {
    fn default() -> Self {
        Telemetry::new()
    }
}

impl std::fmt::Debug for Telemetry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Telemetry").finish_non_exhaustive()
    }
}

fn labels(pairs: &[(&'static str, &str)]) -> Vec<Label> {
    pairs.iter().map(|(k, v)| Label::new(*k, v.to_string())).collect()
}

impl Telemetry {
    /// A registry with weir's metric descriptions and latency buckets.
    pub fn new() -> Self {
        let builder = PrometheusBuilder::new();
        let builder = match builder
            .set_buckets_for_metric(Matcher::Suffix("_duration_seconds".to_string()), names::DURATION_BUCKETS)
            .and_then(|b| {
                b.set_buckets_for_metric(Matcher::Full(names::FLEET_APPLY_LAG.to_string()), names::DURATION_BUCKETS)
            }) {
            Ok(b) => b,
            // Only fails for an empty bucket list, which the constant is not.
            Err(_) => PrometheusBuilder::new(),
        };
        let recorder = builder.build_recorder();
        let handle = recorder.handle();
        describe(&recorder);
        let reload = |result: &str| {
            recorder.register_counter(
                &Key::from_parts(names::CONFIG_RELOADS_TOTAL, labels(&[(label::RESULT, result)])),
                &METADATA,
            )
        };
        let (reloads_ok, reloads_error) = (reload("ok"), reload("error"));
        let version = recorder.register_gauge(
            &Key::from_parts(names::BUILD_INFO, labels(&[(label::VERSION, env!("CARGO_PKG_VERSION"))])),
            &METADATA,
        );
        version.set(1.0);
        Telemetry {
            recorder: Arc::new(recorder),
            handle,
            stats: Mutex::new(HashMap::new()),
            build_info: Mutex::new(HashMap::new()),
            reloads_ok,
            reloads_error,
            keep_secs: std::sync::atomic::AtomicU64::new(300),
        }
    }

    /// The slot clock: whole seconds of the engine's clock
    /// ([`crate::clock::engine_ms`]), so that a rollout's transition falls
    /// in a known slot.
    pub(crate) fn now_sec(&self) -> u64 {
        crate::clock::engine_ms() / 1000
    }

    pub(crate) fn reload_ok(&self) {
        self.reloads_ok.increment(1);
    }

    pub(crate) fn reload_error(&self) {
        self.reloads_error.increment(1);
    }

    /// The count of access-log lines dropped (the writer behind).
    pub(crate) fn access_log_dropped(&self) -> Counter {
        self.recorder.register_counter(&Key::from_name(names::ACCESS_LOG_DROPPED_TOTAL), &METADATA)
    }

    /// The count of a backend's failed re-resolutions (created at 0 on
    /// first use; off the data path).
    pub(crate) fn dns_failures(&self, backend: &str) -> Counter {
        let key = Key::from_parts(names::DNS_FAILURES_TOTAL, labels(&[(label::BACKEND, backend)]));
        self.recorder.register_counter(&key, &METADATA)
    }

    /// Failed writes of weir's own `file` ("state" or "audit"; created at 0).
    pub(crate) fn write_failures(&self, file: &'static str) -> Counter {
        let key = Key::from_parts(names::FILE_WRITE_FAILURES_TOTAL, labels(&[(label::FILE, file)]));
        self.recorder.register_counter(&key, &METADATA)
    }

    /// `notify` deliveries to sinks of `format` (a config value) for
    /// `route`, by result (`delivered`, `dead_letter`).
    pub(crate) fn notify_deliveries(&self, route: &str, format: &'static str, result: &'static str) -> Counter {
        let key = Key::from_parts(
            names::NOTIFY_DELIVERIES_TOTAL,
            labels(&[(label::ROUTE, route), (label::FORMAT, format), (label::RESULT, result)]),
        );
        self.recorder.register_counter(&key, &METADATA)
    }

    /// OTLP span exports by `result` (ok, failed).
    pub(crate) fn otlp_exports(&self, result: &'static str) -> Counter {
        let key = Key::from_parts(names::OTLP_EXPORTS_TOTAL, labels(&[(label::RESULT, result)]));
        self.recorder.register_counter(&key, &METADATA)
    }

    /// `notify` attempts beyond each delivery's first.
    pub(crate) fn notify_retries(&self, route: &str, format: &'static str) -> Counter {
        let key =
            Key::from_parts(names::NOTIFY_RETRIES_TOTAL, labels(&[(label::ROUTE, route), (label::FORMAT, format)]));
        self.recorder.register_counter(&key, &METADATA)
    }

    /// Audit lines dropped by a full queue (created at 0).
    pub(crate) fn audit_dropped(&self) -> Counter {
        self.recorder.register_counter(&Key::from_name(names::AUDIT_DROPPED_TOTAL), &METADATA)
    }

    /// The count of a backend's upstream connections discarded for
    /// `reason` (a [`crate::upstream::Discard`] label; off the data path).
    pub(crate) fn connections_discarded(&self, backend: &str, reason: &'static str) -> Counter {
        let key = Key::from_parts(
            names::UPSTREAM_CONNECTIONS_DISCARDED_TOTAL,
            labels(&[(label::BACKEND, backend), (label::REASON, reason)]),
        );
        self.recorder.register_counter(&key, &METADATA)
    }

    /// The stats of (route, backend), created with resolved metric handles
    /// on first use and kept across reloads.
    pub fn stats(&self, route: &str, backend: &str) -> Arc<BackendStats> {
        self.stats_of(route, backend, Traffic::User)
    }

    /// The stats of synthetic requests to (route, backend).
    pub(crate) fn synthetic_stats(&self, route: &str, backend: &str) -> Arc<BackendStats> {
        self.stats_of(route, backend, Traffic::Synthetic)
    }

    /// The stats of shadow copies sent to (route, backend).
    pub(crate) fn shadow_stats(&self, route: &str, backend: &str) -> Arc<BackendStats> {
        self.stats_of(route, backend, Traffic::Shadow)
    }

    /// A per-route counter (shadow drops and mismatches).
    /// Counts one retried attempt (rare: resolved when it happens).
    pub(crate) fn retried(&self, route: &str, backend: &str, kind: UpstreamErrorKind) {
        self.counter(
            names::UPSTREAM_RETRIES_TOTAL,
            &[(label::ROUTE, route), (label::BACKEND, backend), (label::KIND, kind.as_str())],
        )
        .increment(1);
    }

    pub(crate) fn route_counter(&self, name: &'static str, route: &str) -> Counter {
        self.counter(name, &[(label::ROUTE, route)])
    }

    fn stats_of(&self, route: &str, backend: &str, traffic: Traffic) -> Arc<BackendStats> {
        let mut map = self.stats.lock().unwrap_or_else(|p| p.into_inner());
        map.entry((route.to_string(), backend.to_string(), traffic))
            .or_insert_with(|| Arc::new(BackendStats::new(Some(self.handles(route, backend, traffic)))))
            .clone()
    }

    /// Forgets stats that no route uses any more.
    pub(crate) fn retain(&self, in_use: &[(String, String)]) {
        let mut map = self.stats.lock().unwrap_or_else(|p| p.into_inner());
        map.retain(|(r, b, _), _| in_use.iter().any(|(ur, ub)| ur == r && ub == b));
    }

    fn handles(&self, route: &str, backend: &str, traffic: Traffic) -> Handles {
        let grpc = (traffic == Traffic::User).then(|| GrpcHandles {
            recorder: self.recorder.clone(),
            route: route.to_string(),
            backend: backend.to_string(),
            made: Mutex::new(Default::default()),
        });
        Handles {
            labels: histogram::series(&[(label::ROUTE, route), (label::BACKEND, backend)]),
            requests: Default::default(),
            errors: Default::default(),
            duration: histogram::PromHistogram::new(),
            grpc,
        }
    }

    /// The canary-weight gauge of a route.
    pub(crate) fn weight_gauge(&self, route: &str) -> Gauge {
        self.recorder
            .register_gauge(&Key::from_parts(names::CANARY_WEIGHT, labels(&[(label::ROUTE, route)])), &METADATA)
    }

    /// Sets `weir_build_info` for a route's releases (version label and
    /// commit, each side); the previous label set of the route (if
    /// different) drops to 0.
    pub(crate) fn set_versions(&self, route: &str, stable: Release<'_>, canary: Release<'_>) {
        let key = Key::from_parts(
            names::BUILD_INFO,
            labels(&[
                (label::VERSION, env!("CARGO_PKG_VERSION")),
                (label::ROUTE, route),
                (label::STABLE_VERSION, stable.0.unwrap_or("")),
                (label::CANARY_VERSION, canary.0.unwrap_or("")),
                (label::STABLE_COMMIT, stable.1.unwrap_or("")),
                (label::CANARY_COMMIT, canary.1.unwrap_or("")),
            ]),
        );
        let gauge = self.recorder.register_gauge(&key, &METADATA);
        gauge.set(1.0);
        let mut map = self.build_info.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(old) = map.insert(route.to_string(), gauge.clone()) {
            // Same labels → same underlying gauge, set again to 1 below.
            old.set(0.0);
            gauge.set(1.0);
        }
    }

    /// Sets how much history the slots keep, in seconds
    /// (`telemetry.window_max`, see `config::Telemetry::keep_secs`).
    pub(crate) fn set_keep(&self, keep_secs: u64) {
        self.keep_secs.store(keep_secs, std::sync::atomic::Ordering::Relaxed);
    }

    fn gauge(&self, name: &'static str, pairs: &[(&'static str, &str)]) -> Gauge {
        self.recorder.register_gauge(&Key::from_parts(name, labels(pairs)), &METADATA)
    }

    fn counter(&self, name: &'static str, pairs: &[(&'static str, &str)]) -> Counter {
        self.recorder.register_counter(&Key::from_parts(name, labels(pairs)), &METADATA)
    }

    /// Publishes a rollout's stage, state and latest gate verdicts.
    pub(crate) fn rollout_tick(&self, route: &str, engine: &Engine, evaluated: bool) {
        let st = engine.state();
        self.gauge(names::ROLLOUT_STAGE, &[(label::ROUTE, route)]).set(st.stage as f64);
        let age_ms = crate::clock::engine_ms().saturating_sub(engine.started_ms());
        self.gauge(names::ROLLOUT_AGE, &[(label::ROUTE, route)]).set(age_ms as f64 / 1000.0);
        for phase in Phase::ALL {
            let on = if phase == st.phase { 1.0 } else { 0.0 };
            self.gauge(names::ROLLOUT_STATE, &[(label::ROUTE, route), (label::STATE, phase.as_str())]).set(on);
        }
        if !evaluated {
            return;
        }
        for v in &st.verdicts {
            let gate = [(label::ROUTE, route), (label::GATE, v.gate.as_str())];
            self.counter(
                names::GATE_VERDICTS_TOTAL,
                &[(label::ROUTE, route), (label::GATE, v.gate.as_str()), (label::VERDICT, v.verdict.as_str())],
            )
            .increment(1);
            if let Some(x) = v.value {
                self.gauge(names::GATE_VALUE, &gate).set(x);
            }
            if let Some(x) = v.threshold {
                self.gauge(names::GATE_THRESHOLD, &gate).set(x);
            }
            if let Some(x) = v.p_value {
                self.gauge(names::GATE_P_VALUE, &gate).set(x);
            }
            self.gauge(names::GATE_DRY_RUN, &gate).set(if v.dry_run { 1.0 } else { 0.0 });
        }
    }

    /// Fleet mode's metric handles.
    #[cfg(feature = "fleet")]
    pub(crate) fn fleet(&self) -> FleetMetrics {
        FleetMetrics {
            leader: self.gauge(names::FLEET_LEADER, &[]),
            term: self.gauge(names::FLEET_TERM, &[]),
            applied_revision: self.gauge(names::FLEET_APPLIED_REVISION, &[]),
            members: self.gauge(names::FLEET_MEMBERS, &[]),
            out_of_touch: self.gauge(names::FLEET_OUT_OF_TOUCH, &[]),
            overrides: self.gauge(names::FLEET_OVERRIDES, &[]),
            apply_lag: self.recorder.register_histogram(&Key::from_name(names::FLEET_APPLY_LAG), &METADATA),
        }
    }

    /// Counts rollbacks.
    pub(crate) fn rollout_event(&self, ev: &Event) {
        if matches!(ev.kind, EventKind::RolledBack | EventKind::Aborted) {
            self.counter(names::ROLLBACKS_TOTAL, &[(label::ROUTE, ev.route.as_str())]).increment(1);
        }
    }

    /// Folds every stats object's shards into the current slot and into the
    /// Prometheus handles.
    pub(crate) fn rotate_all(&self) {
        let now = self.now_sec();
        let keep = self.keep_secs.load(std::sync::atomic::Ordering::Relaxed);
        let all: Vec<Arc<BackendStats>> =
            self.stats.lock().unwrap_or_else(|p| p.into_inner()).values().cloned().collect();
        for s in all {
            s.rotate(now, keep);
        }
        self.handle.run_upkeep();
    }

    /// The Prometheus text exposition: the exporter's metrics, then the
    /// per (route, backend) counters and latency histograms weir keeps
    /// itself (`counters.rs`, `histogram.rs`), one family at a time.
    pub fn render(&self) -> String {
        self.rotate_all();
        let mut out = self.handle.render();
        let map = self.stats.lock().unwrap_or_else(|p| p.into_inner());
        // A route's synthetic and shadow series are there for every
        // route, checks configured or not: they are exported once they
        // have counted a request (as client libraries do for a label set
        // never used). User traffic's are exported from the start.
        let mut series: Vec<_> = map
            .iter()
            .filter_map(|(k, s)| Some((k, s.handles()?)))
            .filter(|((_, _, t), h)| *t == Traffic::User || h.requests.any())
            .collect();
        series.sort_by(|a, b| a.0.cmp(b.0));
        // At most 37 lines of about 80 bytes per series.
        out.reserve(series.len() * 37 * 80);
        let classes = CodeClass::ALL.map(CodeClass::as_str);
        let kinds = UpstreamErrorKind::ALL.map(UpstreamErrorKind::as_str);
        for traffic in [Traffic::User, Traffic::Synthetic, Traffic::Shadow] {
            let of_kind = || series.iter().filter(move |((_, _, t), _)| *t == traffic).map(|(_, h)| h);
            if of_kind().next().is_none() {
                continue;
            }
            let (name, help) = traffic.requests();
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
            for h in of_kind() {
                h.requests.render(name, &h.labels, label::CODE_CLASS, &classes, &mut out);
            }
            let (name, help) = traffic.errors();
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
            for h in of_kind() {
                h.errors.render(name, &h.labels, label::KIND, &kinds, &mut out);
            }
            let (name, help) = traffic.duration();
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
            for h in of_kind() {
                h.duration.render(name, &h.labels, &mut out);
            }
        }
        out
    }
}

fn describe(r: &PrometheusRecorder) {
    use metrics::{SharedString, Unit};
    let d = |name: &'static str, unit: Option<Unit>, help: &'static str| {
        r.describe_counter(name.into(), unit, SharedString::const_str(help));
    };
    d(names::GRPC_RESPONSES_TOTAL, None, "gRPC calls by grpc-status (from trailers, or a trailers-only response).");
    d(names::UPSTREAM_RETRIES_TOTAL, None, "Requests sent again after a failed attempt, by the kind of that failure.");
    d(names::CONFIG_RELOADS_TOTAL, None, "Config reloads by result.");
    d(
        names::ACCESS_LOG_DROPPED_TOTAL,
        None,
        "Access-log lines dropped because the writer was behind (a slow or full disk); requests are never held up.",
    );
    d(
        names::DNS_FAILURES_TOTAL,
        None,
        "Failed re-resolutions of a backend's host name (its last addresses keep serving).",
    );
    d(
        names::FILE_WRITE_FAILURES_TOTAL,
        None,
        "Failed writes of weir's state file or audit log (kept and tried again; weir keeps serving).",
    );
    d(names::AUDIT_DROPPED_TOTAL, None, "Audit lines dropped because the disk was behind by more than 4 MiB.");
    d(
        names::NOTIFY_DELIVERIES_TOTAL,
        None,
        "Rollout notifications by route, sink format and result: delivered (2xx), or dead_letter (no 2xx after its retries).",
    );
    d(names::OTLP_EXPORTS_TOTAL, None, "OTLP exports of spans to the [tracing] collector, by result (a batch each).");
    d(
        names::NOTIFY_RETRIES_TOTAL,
        None,
        "Rollout notification attempts beyond each delivery's first (no answer, 429 or 5xx).",
    );
    d(
        names::UPSTREAM_CONNECTIONS_DISCARDED_TOTAL,
        None,
        "Connections of weir's own HTTP/1.1 client closed instead of reused for the upstream's fault: \
unread_bytes (bytes after a response), broken_body (a bad chunk or a body cut short), \
read_timeout (no body data for timeouts.upstream_read).",
    );
    for (name, help) in [
        (names::FLEET_LEADER, "Fleet mode: 1 while this replica is the fleet's leader."),
        (names::FLEET_TERM, "Fleet mode: the term of the leader this replica knows."),
        (names::FLEET_APPLIED_REVISION, "Fleet mode: etcd revision of the committed state this replica serves."),
        (names::FLEET_MEMBERS, "Fleet mode: replicas reporting to the fleet."),
        (names::FLEET_OUT_OF_TOUCH, "Fleet mode: seconds since this replica last heard from etcd."),
        (names::FLEET_OVERRIDES, "Fleet mode: routes this replica serves stable on its own."),
    ] {
        r.describe_gauge(name.into(), None, SharedString::const_str(help));
    }
    r.describe_histogram(
        names::FLEET_APPLY_LAG.into(),
        Some(Unit::Seconds),
        SharedString::const_str("Fleet mode: from a commit to this replica serving it."),
    );
    d(names::SHADOW_DROPPED_TOTAL, None, "Shadow copies not sent because too many were in flight.");
    d(names::SHADOW_MISMATCHES_TOTAL, None, "Shadow answers that differed from stable's.");
    r.describe_gauge(names::CANARY_WEIGHT.into(), None, SharedString::const_str("Current canary weight, percent."));
    r.describe_gauge(names::ROLLOUT_STAGE.into(), None, SharedString::const_str("Current stage index of the rollout."));
    r.describe_gauge(names::ROLLOUT_STATE.into(), None, SharedString::const_str("1 for the rollout's current state."));
    d(names::ROLLBACKS_TOTAL, None, "Rollbacks and aborts of the route's canary.");
    d(names::GATE_VERDICTS_TOTAL, None, "Gate evaluations by verdict.");
    r.describe_gauge(names::GATE_VALUE.into(), None, SharedString::const_str("Latest measured value of a gate."));
    r.describe_gauge(
        names::GATE_THRESHOLD.into(),
        None,
        SharedString::const_str("Latest threshold of a gate (a statistical gate's tolerance), in the value's unit."),
    );
    r.describe_gauge(
        names::GATE_P_VALUE.into(),
        None,
        SharedString::const_str("Latest always-valid p-value of a statistical gate (it fails at or below its alpha)."),
    );
    r.describe_gauge(
        names::ROLLOUT_AGE.into(),
        None,
        SharedString::const_str(
            "Seconds since the rollout (this attempt) started: finished ones left in the config age.",
        ),
    );
    r.describe_gauge(
        names::GATE_DRY_RUN.into(),
        None,
        SharedString::const_str("1 for a dry-run gate: reported like the others, never acting."),
    );
    r.describe_gauge(
        names::BUILD_INFO.into(),
        None,
        SharedString::const_str("weir version, and the stable and canary release versions and commits per route."),
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use weir_control::rollout::Context;
    use weir_control::sample::{Counts, Window};

    /// Issue 28: the per (route, backend) counters are rendered by weir
    /// (the exporter took ~1.7 µs a sample: 200 ms for 1 000 routes × 2
    /// backends). What a scrape shows must not change with it: user
    /// traffic's counters from the route's start, at zero, one family at a
    /// time with its HELP and TYPE; synthetic and shadow series only once
    /// they count a request (every route has them, checks or not).
    #[test]
    fn weir_renders_each_counter_family_once_and_unused_synthetic_series_not_at_all() {
        let t = Telemetry::new();
        for (route, backend) in [("b", "stable"), ("a", "stable"), ("a", "canary")] {
            t.stats(route, backend);
            t.synthetic_stats(route, backend);
            t.shadow_stats(route, backend);
        }
        let out = t.render();
        for name in [names::REQUESTS_TOTAL, names::UPSTREAM_ERRORS_TOTAL] {
            assert_eq!(out.matches(&format!("# TYPE {name} counter\n")).count(), 1, "{out}");
            assert_eq!(out.matches(&format!("# HELP {name} ")).count(), 1, "{out}");
        }
        assert_eq!(out.matches("weir_requests_total{").count(), 3 * CodeClass::ALL.len(), "{out}");
        assert_eq!(out.matches("weir_upstream_errors_total{").count(), 3 * UpstreamErrorKind::ALL.len(), "{out}");
        assert!(out.contains("weir_requests_total{route=\"a\",backend=\"canary\",code_class=\"5xx\"} 0\n"), "{out}");
        // Sorted by route then backend, within the family.
        let at = |s: &str| out.find(s).unwrap_or(usize::MAX);
        assert!(
            at("weir_requests_total{route=\"a\",backend=\"canary\"")
                < at("weir_requests_total{route=\"a\",backend=\"stable\"")
                && at("weir_requests_total{route=\"a\",backend=\"stable\"") < at("weir_requests_total{route=\"b\""),
            "{out}"
        );
        assert!(!out.contains("synthetic"), "{out}");
        assert!(!out.contains("shadow"), "{out}");
        assert!(!out.contains("_bucket"), "no latency sample yet: {out}");

        t.synthetic_stats("a", "canary").record(CodeClass::ServerError, None, std::time::Duration::from_millis(3));
        t.stats("b", "stable").record(CodeClass::Error, Some(UpstreamErrorKind::Reset), std::time::Duration::ZERO);
        let out = t.render();
        assert!(
            out.contains("weir_synthetic_requests_total{route=\"a\",backend=\"canary\",code_class=\"5xx\"} 1\n"),
            "{out}"
        );
        assert_eq!(out.matches("weir_synthetic_requests_total{").count(), CodeClass::ALL.len(), "{out}");
        assert!(out.contains("weir_upstream_errors_total{route=\"b\",backend=\"stable\",kind=\"reset\"} 1\n"), "{out}");
        assert!(out.contains("weir_requests_total{route=\"b\",backend=\"stable\",code_class=\"error\"} 1\n"), "{out}");
        assert_eq!(out.matches("weir_synthetic_request_duration_seconds_count{").count(), 1, "{out}");
        assert!(!out.contains("shadow"), "{out}");
    }

    fn window(total: u64, failures: u64) -> Window {
        let c = Counts::of(total, failures);
        let mut w = Window::default();
        w.push_second(0, &c);
        w
    }

    /// Issue 21, bug 11: `error_rate_vs_stable` exported the canary's error
    /// rate as its value and alpha as its threshold, which a dashboard drew
    /// on one axis as if comparable, and no p-value at all. Its threshold is
    /// now its tolerance (a rate, like the value), and the p-value has a
    /// gauge of its own.
    #[test]
    fn a_statistical_gate_exports_a_comparable_threshold_and_its_p_value() {
        let cfg = weir_control::config::parse(
            "[backends.s]\naddrs = [\"127.0.0.1:1\"]\n[backends.c]\naddrs = [\"127.0.0.1:2\"]\n[[routes]]\nname = \"web\"\nstable = \"s\"\ncanary = \"c\"\n[routes.rollout]\nstages = [{ weight = 10, bake = \"1m\" }, { weight = 100 }]\ngates = [{ metric = \"error_rate_vs_stable\" }]\n",
        )
        .unwrap();
        let plan = cfg.routes[0].rollout.clone().unwrap();
        let ctx = Context {
            route: "web".into(),
            stable_version: None,
            canary_version: None,
            canary_build: None,
            config_hash: String::new(),
            ..Default::default()
        };
        let (mut engine, _) = Engine::new(plan, ctx, 0);
        engine.tick(1000, &window(2000, 20), &window(20_000, 200));
        let t = Telemetry::new();
        t.rollout_tick("web", &engine, true);
        let text = t.render();
        let gauge = |name: &str| {
            let prefix = format!("{name}{{route=\"web\",gate=\"error_rate_vs_stable\"}} ");
            text.lines().find_map(|l| l.strip_prefix(&prefix)).and_then(|v| v.parse::<f64>().ok())
        };
        let (value, threshold) = (gauge("weir_gate_value").unwrap(), gauge("weir_gate_threshold").unwrap());
        assert!((value - 0.01).abs() < 1e-9, "{text}");
        assert!((threshold - 0.025).abs() < 1e-9, "tolerance 2 x 1% + 0.5%: {text}");
        let p = gauge("weir_gate_p_value").unwrap();
        assert!(p > 0.0 && p <= 1.0, "{text}");
    }
}
