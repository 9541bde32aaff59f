//! Every `weir_*` metric name and label, declared once.

/// Requests by route, backend and code class (counter).
pub(crate) const REQUESTS_TOTAL: &str = "weir_requests_total";
/// Request latency to upstream response headers, seconds (histogram).
pub(crate) const REQUEST_DURATION_SECONDS: &str = "weir_request_duration_seconds";
/// Upstream failures by route, backend and kind (counter).
pub(crate) const UPSTREAM_ERRORS_TOTAL: &str = "weir_upstream_errors_total";
/// gRPC calls by route, backend and `grpc_code` (counter).
pub(crate) const GRPC_RESPONSES_TOTAL: &str = "weir_grpc_responses_total";
/// Synthetic requests by route, backend and code class (counter).
pub(crate) const SYNTHETIC_REQUESTS_TOTAL: &str = "weir_synthetic_requests_total";
/// Synthetic request latency to upstream response headers, seconds (histogram).
pub(crate) const SYNTHETIC_DURATION_SECONDS: &str = "weir_synthetic_request_duration_seconds";
/// Synthetic requests without a usable upstream response (counter).
pub(crate) const SYNTHETIC_ERRORS_TOTAL: &str = "weir_synthetic_upstream_errors_total";
/// Shadow copies by route, backend and code class (counter).
pub(crate) const SHADOW_REQUESTS_TOTAL: &str = "weir_shadow_requests_total";
/// Shadow latency to upstream response headers, seconds (histogram).
pub(crate) const SHADOW_DURATION_SECONDS: &str = "weir_shadow_request_duration_seconds";
/// Shadow copies without a usable upstream response (counter).
pub(crate) const SHADOW_ERRORS_TOTAL: &str = "weir_shadow_upstream_errors_total";
/// Shadow copies dropped under load (counter).
pub(crate) const SHADOW_DROPPED_TOTAL: &str = "weir_shadow_dropped_total";
pub(crate) const UPSTREAM_RETRIES_TOTAL: &str = "weir_upstream_retries_total";
/// Shadow answers that differed from stable's (counter).
pub(crate) const SHADOW_MISMATCHES_TOTAL: &str = "weir_shadow_mismatches_total";
/// Current canary weight of a route, percent (gauge).
pub(crate) const CANARY_WEIGHT: &str = "weir_canary_weight";
/// Config reloads by result (counter).
pub(crate) const CONFIG_RELOADS_TOTAL: &str = "weir_config_reloads_total";
/// Access-log lines dropped because the writer was behind (counter).
pub(crate) const ACCESS_LOG_DROPPED_TOTAL: &str = "weir_access_log_dropped_total";
/// Failed re-resolutions of a backend's host name (counter).
pub(crate) const DNS_FAILURES_TOTAL: &str = "weir_dns_failures_total";
/// Upstream connections closed rather than pooled for the upstream's
/// fault, by reason (counter).
pub(crate) const UPSTREAM_CONNECTIONS_DISCARDED_TOTAL: &str = "weir_upstream_connections_discarded_total";
/// Failed writes of weir's own files, by file (state, audit) (counter).
pub(crate) const FILE_WRITE_FAILURES_TOTAL: &str = "weir_file_write_failures_total";
/// Audit lines dropped because the audit writer's queue was full (counter).
pub(crate) const AUDIT_DROPPED_TOTAL: &str = "weir_audit_dropped_total";
/// `notify` deliveries by route, format and result: delivered, or
/// dead_letter (failed after its retries) (counter).
pub(crate) const NOTIFY_DELIVERIES_TOTAL: &str = "weir_notify_deliveries_total";
/// `notify` attempts beyond each delivery's first (counter).
pub(crate) const NOTIFY_RETRIES_TOTAL: &str = "weir_notify_retries_total";
/// OTLP exports of spans, by result (ok, failed) (counter).
pub(crate) const OTLP_EXPORTS_TOTAL: &str = "weir_otlp_exports_total";
/// Build and release versions (gauge, always 1 for the current set).
pub(crate) const BUILD_INFO: &str = "weir_build_info";

/// Current stage index of a route's rollout (gauge).
pub(crate) const ROLLOUT_STAGE: &str = "weir_rollout_stage";
/// 1 for the rollout's current state, 0 for the others (gauge).
pub(crate) const ROLLOUT_STATE: &str = "weir_rollout_state";
/// Automatic and manual rollbacks (counter).
pub(crate) const ROLLBACKS_TOTAL: &str = "weir_rollbacks_total";
/// Gate evaluations by verdict (counter).
pub(crate) const GATE_VERDICTS_TOTAL: &str = "weir_gate_verdicts_total";
/// Latest measured value of a gate (gauge).
pub(crate) const GATE_VALUE: &str = "weir_gate_value";
/// Latest threshold of a gate (gauge).
pub(crate) const GATE_THRESHOLD: &str = "weir_gate_threshold";
/// Latest always-valid p-value of a statistical gate (gauge).
pub(crate) const GATE_P_VALUE: &str = "weir_gate_p_value";
/// Seconds since the rollout (this attempt) started (gauge): an alert
/// finds the forgotten ones.
pub(crate) const ROLLOUT_AGE: &str = "weir_rollout_age_seconds";
/// 1 for a dry-run gate (reported, never acting), 0 for the others (gauge).
pub(crate) const GATE_DRY_RUN: &str = "weir_gate_dry_run";

/// Fleet mode: 1 while this replica is the fleet's leader (gauge).
pub(crate) const FLEET_LEADER: &str = "weir_fleet_leader";
/// Fleet mode: the current leader's term (gauge).
pub(crate) const FLEET_TERM: &str = "weir_fleet_term";
/// Fleet mode: the etcd revision of the committed state this replica serves (gauge).
pub(crate) const FLEET_APPLIED_REVISION: &str = "weir_fleet_applied_revision";
/// Fleet mode: replicas reporting (gauge).
pub(crate) const FLEET_MEMBERS: &str = "weir_fleet_members";
/// Fleet mode: seconds since this replica last heard from etcd (gauge).
pub(crate) const FLEET_OUT_OF_TOUCH: &str = "weir_fleet_out_of_touch_seconds";
/// Fleet mode: routes this replica serves stable on its own (gauge).
pub(crate) const FLEET_OVERRIDES: &str = "weir_fleet_overrides";
/// Fleet mode: from a commit to this replica serving it, seconds (histogram).
pub(crate) const FLEET_APPLY_LAG: &str = "weir_fleet_apply_lag_seconds";

/// Label names.
pub(crate) mod label {
    pub(crate) const ROUTE: &str = "route";
    pub(crate) const BACKEND: &str = "backend";
    pub(crate) const CODE_CLASS: &str = "code_class";
    pub(crate) const KIND: &str = "kind";
    pub(crate) const REASON: &str = "reason";
    pub(crate) const FILE: &str = "file";
    pub(crate) const GRPC_CODE: &str = "grpc_code";
    pub(crate) const RESULT: &str = "result";
    pub(crate) const FORMAT: &str = "format";
    pub(crate) const VERSION: &str = "version";
    pub(crate) const STABLE_VERSION: &str = "stable_version";
    pub(crate) const CANARY_VERSION: &str = "canary_version";
    pub(crate) const STABLE_COMMIT: &str = "stable_commit";
    pub(crate) const CANARY_COMMIT: &str = "canary_commit";
    pub(crate) const STATE: &str = "state";
    pub(crate) const GATE: &str = "gate";
    pub(crate) const VERDICT: &str = "verdict";
}

/// Histogram buckets for request latency, seconds: fine enough between
/// 0.5 ms and 10 s for canary gates, and explicit so that fleet-wide
/// quantiles aggregate across instances.
pub(crate) const DURATION_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.0075, 0.01, 0.015, 0.025, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 0.75, 1.0, 1.5, 2.5,
    5.0, 10.0,
];
