//! The config file: schema, parsing and validation.
//!
//! ```text
//!  weir.toml ──toml spanned parse──▶ tree with spans
//!            ──parse::config──────▶ Config (validated, typed, defaults filled)
//!                                      │ every problem becomes a ConfigError
//!                                      ▼ { path: "routes[0].canary", line, message }
//!  proxy: Config ──▶ runtime Snapshot (resolved addresses, metric handles)
//! ```
//!
//! Precedence is simple: a key in the file wins, otherwise the documented
//! default applies (see `config/full.toml`). Validation never stops at the
//! first problem: `weir check` shows them all at once.
//!
//! Besides the schema: [`diff`] says what a reload from one `Config` to the
//! next changes, and [`fault`] holds the fault-injection rules that the
//! file and the admin API share.

pub mod diff;
pub mod fault;
mod parse;
mod reader;
mod rollout;
pub mod units;

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::split::Weight;

pub use parse::shown_url;
pub use rollout::{Gate, GateMetric, Notify, NotifyFormat, OnFailure, Rollout, Stage, Synthetic};

/// Parses and validates a config file's text.
pub fn parse(src: &str) -> Result<Config, ConfigErrors> {
    parse::config(src)
}

/// What is valid but likely not what was meant, as `(key path, why)`:
/// `weir check` prints these as warnings (exit 0), and a load or reload
/// logs them. Today: shadow traffic or synthetic requests on a route whose
/// backend checks its health over gRPC (without `grpc = true`, which makes
/// them errors).
pub fn warnings(cfg: &Config) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for (i, route) in cfg.routes.iter().enumerate() {
        let gates = route.rollout.as_ref().map_or(&[][..], |r| &r.gates[..]);
        // (A relative latency limit needs its bound within it to pass: it
        // shows the canary within a bound by itself.)
        let relative_only = |g: &Gate| g.metric == GateMetric::ErrorRate && g.max.is_none();
        if !gates.is_empty() && gates.iter().all(relative_only) {
            out.push((
                format!("routes[{i}].rollout.gates"),
                "every gate is a limit relative to stable, which passes whenever it is not breached: none shows \
                 the canary within a bound (add a max, error_rate_vs_stable or latency_shift)"
                    .to_string(),
            ));
        }
    }
    for (i, route) in cfg.routes.iter().enumerate().filter(|(_, r)| !r.grpc) {
        let grpc_health = [Some(&route.stable), route.canary.as_ref()]
            .into_iter()
            .flatten()
            .filter_map(|b| cfg.backends.get(b))
            .any(|b| b.health.as_ref().is_some_and(|h| h.grpc_service.is_some()));
        if grpc_health {
            for (key, why) in grpc_misfits(route) {
                out.push((
                    format!("routes[{i}].{key}"),
                    format!("{why}, and a backend of the route checks its health over gRPC (set grpc = true on a gRPC-only route)"),
                ));
            }
        }
    }
    out
}

/// What on a route cannot judge gRPC calls: `(key, why)`.
fn grpc_misfits(route: &Route) -> Vec<(String, &'static str)> {
    let mut out = Vec::new();
    if route.shadow.is_some() {
        out.push((
            "shadow".to_string(),
            "copies no gRPC call (a copy needs a declared Content-Length, which gRPC calls lack)",
        ));
    }
    let stages = route.rollout.as_ref().map_or(&[][..], |r| &r.stages[..]);
    for (j, _) in stages.iter().enumerate().filter(|(_, s)| s.synthetic.is_some()) {
        out.push((
            format!("rollout.stages[{j}].synthetic"),
            "sends HTTP GETs judged by their status, and a failed gRPC call is a 200",
        ));
    }
    out
}

/// One problem in a config file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    /// Key path, such as `routes[0].canary`.
    pub path: String,
    /// 1-based line in the file, where known.
    pub line: Option<u32>,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let path = if self.path.is_empty() { "(file)" } else { &self.path };
        match self.line {
            Some(line) => write!(f, "{path}: {} (line {line})", self.message),
            None => write!(f, "{path}: {}", self.message),
        }
    }
}

/// Every problem found in a config file (never empty).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// A validated configuration.
#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    /// The data-plane listener.
    pub listen: Listen,
    /// The admin listener.
    pub admin: Admin,
    /// The OFREP listener (off when absent).
    pub ofrep: Option<Ofrep>,
    /// Timeouts.
    pub timeouts: Timeouts,
    /// Resource limits.
    pub limits: Limits,
    /// Logging.
    pub log: Log,
    /// In-process measurement.
    pub telemetry: Telemetry,
    /// Persistence of rollout state.
    pub state: State,
    /// Fleet mode (`[fleet]`): replicas deciding as one, on etcd.
    pub fleet: Option<Fleet>,
    /// The Prometheus that `promql` gates query (`[prometheus]`).
    pub prometheus: Option<Prometheus>,
    /// Traffic recording for `weir replay` (`[recording]`).
    pub recording: Option<Recording>,
    /// Backend name resolution (`[dns]`).
    pub dns: Dns,
    /// How the rollouts' webhooks are sent (`[webhooks]`).
    pub webhooks: Webhooks,
    /// Request traces exported over OTLP (`[tracing]`; off when absent).
    pub tracing: Option<Tracing>,
    /// Upstream backends by name.
    pub backends: BTreeMap<String, Backend>,
    /// Routes, in file order.
    pub routes: Vec<Route>,
}

impl Config {
    /// The release label (`version`) of backend `backend`; `None` when the
    /// backend has none or does not exist.
    pub fn version_of(&self, backend: &str) -> Option<&str> {
        self.backends.get(backend)?.version.as_deref()
    }

    /// What identifies `route`'s canary build: its version label, else its
    /// addresses (a new build deployed without a label shows as new
    /// addresses). `None` without a canary.
    pub fn canary_build(&self, route: &Route) -> Option<String> {
        let b = self.backends.get(route.canary.as_deref()?)?;
        Some(match &b.version {
            Some(v) => v.clone(),
            None => format!("addrs {}", crate::fingerprint(&b.addrs)),
        })
    }
}

/// `[listen]`
#[derive(Clone, Debug, PartialEq)]
pub struct Listen {
    /// Address of the data-plane listener (HTTP/1.1 and h2c on one port,
    /// or HTTP/1.1 and h2 by ALPN when `tls` is set).
    pub addr: SocketAddr,
    /// TLS termination; with it the port speaks TLS only.
    pub tls: Option<ServerTls>,
}

/// A certificate chain and its private key, as PEM files (relative paths
/// are relative to the config file's directory).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct CertPair {
    /// Certificate chain, leaf first.
    pub cert: PathBuf,
    /// Private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

/// `listen.tls` / `admin.tls`: server certificates.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerTls {
    /// Served when the client sends no SNI name or one that no `sni` entry
    /// lists.
    pub default: CertPair,
    /// Certificates chosen by the SNI name (exact, or `*.example.com`
    /// matching one label).
    pub sni: Vec<SniCert>,
}

/// One `[[listen.tls.sni]]` entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SniCert {
    /// Server names (lower-case), exact or `*.suffix`.
    pub names: Vec<String>,
    /// The certificate served for them.
    pub pair: CertPair,
}

/// `backends.NAME.tls`: TLS to the upstream.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct UpstreamTls {
    /// CA bundle to verify the upstream against; the system roots when absent.
    pub ca: Option<PathBuf>,
    /// Name sent in SNI and verified in the certificate; the host of the
    /// first address when absent.
    pub server_name: Option<String>,
    /// Client certificate for mutual TLS.
    pub client: Option<CertPair>,
}

/// `[admin]`
#[derive(Clone, Debug, PartialEq)]
pub struct Admin {
    /// Address of the admin listener (loopback by default).
    pub addr: SocketAddr,
    /// File holding the bearer token for mutating admin calls.
    pub token_file: Option<PathBuf>,
    /// Serve the admin API and dashboard over TLS.
    pub tls: Option<ServerTls>,
    /// Host names the admin listener answers to besides IP addresses and
    /// `localhost` (lowercase; `*.suffix`, or `*` for any): a request
    /// naming another host is refused (DNS rebinding).
    pub hosts: Vec<String>,
}

/// `[ofrep]`: the OpenFeature Remote Evaluation Protocol listener, where
/// an application asks which release a user is on.
#[derive(Clone, Debug, PartialEq)]
pub struct Ofrep {
    /// Address of the OFREP listener.
    pub addr: SocketAddr,
    /// File holding the bearer token every evaluation must carry.
    pub token_file: Option<PathBuf>,
}

/// `[timeouts]`
#[derive(Clone, Debug, PartialEq)]
pub struct Timeouts {
    /// Upstream TCP connect.
    pub connect: Duration,
    /// Whole downstream request head, from its first byte (slowloris guard).
    pub header_read: Duration,
    /// From sending the request to the upstream's response headers (→ 504).
    pub upstream_response: Duration,
    /// A downstream connection with no request in flight is closed after this.
    pub idle: Duration,
    /// Idle pooled upstream connections are closed after this.
    pub upstream_idle: Duration,
    /// On SIGTERM/SIGINT, in-flight requests get this long to finish
    /// (counted from the end of `drain_delay`).
    pub shutdown_grace: Duration,
    /// On SIGTERM/SIGINT, weir first keeps accepting and serving this long
    /// with `/readyz` failing (and `Connection: close` on HTTP/1.1
    /// responses), so that load balancers and Kubernetes endpoints stop
    /// sending it traffic before it stops listening. Default 0.
    pub drain_delay: Duration,
    /// A downstream TLS handshake must finish within this (from accept).
    pub tls_handshake: Duration,
    /// Longest wait for the next piece of a request body from the client
    /// (→ 408 and close).
    pub body_read: Duration,
    /// Longest wait for the next piece of an upstream's response body
    /// (not for gRPC or gRPC-Web calls, whose deadline is `grpc-timeout`): past it the
    /// response is cut short and the upstream connection closed. Zero: no
    /// limit.
    pub upstream_read: Duration,
}

/// `[limits]`
#[derive(Clone, Debug, PartialEq)]
pub struct Limits {
    /// Largest request head in bytes (→ 431).
    pub max_header_bytes: usize,
    /// Most header fields in a request (→ 431).
    pub max_headers: usize,
    /// Most concurrent downstream connections (→ 503 and close).
    pub max_connections: usize,
    /// Longest HTTP/1 request line in bytes (→ 414 and close).
    pub max_request_line: usize,
    /// Most requests in flight on the data listener, all connections and
    /// streams together (→ 503 with `retry-after`).
    pub max_requests_in_flight: usize,
    /// What to do with request headers whose name contains `_` (some
    /// upstreams read `x_user` and `x-user` as the same header).
    pub headers_with_underscores: Underscores,
}

/// Policy for header names with underscores (as Envoy's
/// `headers_with_underscores_action`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Underscores {
    /// Forward them.
    Allow,
    /// Remove them before forwarding.
    Drop,
    /// Answer 400.
    Reject,
}

/// `[log]`
#[derive(Clone, Debug, PartialEq)]
pub struct Log {
    /// Where JSON access-log lines go.
    pub access: AccessLog,
    /// Where JSON audit events (rollout transitions, evaluations) go.
    pub audit: AccessLog,
    /// How weir's own process log (stderr) is written.
    pub format: LogFormat,
}

/// `log.format`: weir's process log on stderr.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LogFormat {
    /// One human-readable line per event (the default).
    #[default]
    Text,
    /// One JSON object per line (`timestamp`, `level`, `fields`, ...), for
    /// log collectors.
    Json,
}

/// `[dns]`: how backend host names are resolved and followed.
///
/// Names are resolved through `/etc/resolv.conf` and `/etc/hosts` (or the
/// `servers` given), and resolved again when their TTL runs out, the TTL
/// held between `min_ttl` and `max_ttl`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Dns {
    /// Floor of a name's TTL: a name is never re-resolved sooner, and a
    /// failed resolution is retried after this long.
    pub min_ttl: Duration,
    /// Ceiling of a name's TTL: a name is re-resolved at least this often
    /// (names from `/etc/hosts` too).
    pub max_ttl: Duration,
    /// Name servers asked instead of `/etc/resolv.conf`'s (its search
    /// domains and `ndots` still apply). Empty: the system's.
    pub servers: Vec<SocketAddr>,
}

impl Default for Dns {
    fn default() -> Self {
        Dns { min_ttl: Duration::from_secs(1), max_ttl: Duration::from_secs(30), servers: Vec::new() }
    }
}

/// `[telemetry]`
#[derive(Clone, Debug, PartialEq)]
pub struct Telemetry {
    /// Record every request (per route and backend). Switching it off exists
    /// to measure the recording cost: gates then see no data.
    pub record: bool,
    /// Longest window the gate engine and the API can ask for.
    pub window_max: Duration,
}

impl Telemetry {
    /// Seconds of history kept: `window_max` in whole seconds, at least 1
    /// (the one-second slots cannot keep less than one).
    pub fn keep_secs(&self) -> u64 {
        self.window_max.as_secs().max(1)
    }

    /// A window asked for, in seconds, clamped to `1..=keep_secs()`: the
    /// engine, the API and embedders all get the same answer.
    pub fn span_secs(&self, secs: u64) -> u64 {
        secs.clamp(1, self.keep_secs())
    }
}

/// Destination of the JSON access log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AccessLog {
    /// No access log (the default).
    Off,
    /// One JSON line per request on standard output.
    Stdout,
    /// Appended to a file.
    File(PathBuf),
}

/// `[backends.NAME]`
#[derive(Clone, Debug, PartialEq)]
pub struct Backend {
    /// One or more `host:port` addresses.
    pub addrs: Vec<Address>,
    /// Release label (shown in metrics, status and audit).
    pub version: Option<String>,
    /// What the release is (`release = { commit, notes, ticket }`), shown
    /// beside the version wherever it is.
    pub release: Option<Release>,
    /// Fault injection (chaos and game days).
    pub fault: Option<Fault>,
    /// TLS to the upstream (`tls = true` or a table); never falls back to
    /// plaintext.
    pub tls: Option<UpstreamTls>,
    /// Speak HTTP/2 to the upstream: offered by ALPN with TLS, prior
    /// knowledge (h2c) without.
    pub http2: bool,
    /// Passive outlier detection (on by default; `outlier = false` = off).
    pub outlier: Option<Outlier>,
    /// Active health checks (off by default).
    pub health: Option<HealthCheck>,
}

/// `backends.NAME.release`: what a backend's build is, for the people who
/// read a decision: its commit, release notes and ticket. It annotates the
/// build; the `version` label alone identifies it (a changed release with
/// the same version keeps a rollout).
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Release {
    /// Source revision.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commit: Option<String>,
    /// Link to the release notes or changelog.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notes: Option<String>,
    /// Change or ticket reference.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ticket: Option<String>,
}

impl Config {
    /// The release metadata of backend `backend`, if any.
    pub fn release_of(&self, backend: &str) -> Option<&Release> {
        self.backends.get(backend)?.release.as_ref()
    }
}

/// `backends.NAME.outlier`: an address that fails `consecutive_failures`
/// times in a row (connect failure, reset, timeout or 5xx) is ejected for
/// `base_ejection` × the number of times it was ejected (at most
/// `max_ejection`), then re-admitted. At most `max_ejection_percent` of the
/// addresses are ejected at once (at least one), and never the last
/// address still in service: passive detection alone never empties a
/// backend.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Outlier {
    /// Failures in a row that eject an address (Envoy: 5).
    pub consecutive_failures: u32,
    /// First ejection time (Envoy: 30 s).
    pub base_ejection: Duration,
    /// Longest ejection time (Envoy: 300 s).
    pub max_ejection: Duration,
    /// Share of addresses that may be ejected at once (Envoy: 10 %, at
    /// least one address).
    pub max_ejection_percent: u32,
}

impl Default for Outlier {
    fn default() -> Self {
        Outlier {
            consecutive_failures: 5,
            base_ejection: Duration::from_secs(30),
            max_ejection: Duration::from_secs(300),
            max_ejection_percent: 10,
        }
    }
}

/// `backends.NAME.health`: `GET path` to every address each `interval`; an
/// address is down after `unhealthy` failed checks in a row (no answer
/// within `timeout`, or a status other than 2xx/3xx) and up again after
/// `healthy` good ones. Addresses start up. A backend whose addresses are
/// all down answers 503 at once.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct HealthCheck {
    /// Request path (with query, if any).
    pub path: String,
    /// Check with gRPC's `grpc.health.v1.Health/Check` for this service
    /// (`""`: the server as a whole) instead of `GET path`.
    pub grpc_service: Option<String>,
    /// Time between checks of an address.
    pub interval: Duration,
    /// Time allowed for an answer.
    pub timeout: Duration,
    /// Good checks in a row to come back up.
    pub healthy: u32,
    /// Failed checks in a row to go down.
    pub unhealthy: u32,
}

/// Faults injected into a share of a backend's requests. Aborts are answered
/// by weir itself and never reach the upstream; both are measured like any
/// other request, so the gates see them.
#[derive(Clone, Debug, PartialEq)]
pub struct Fault {
    /// Added delay before forwarding.
    pub delay: Option<Duration>,
    /// Share of requests delayed, basis points.
    pub delay_bp: u32,
    /// Status answered instead of forwarding.
    pub abort_status: Option<u16>,
    /// Share of requests aborted, basis points.
    pub abort_bp: u32,
    /// The fault switches itself off this long after it was (re)loaded.
    pub duration: Option<Duration>,
}

/// A `host:port` upstream address.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Address {
    /// IP literal or DNS name (IPv6 without brackets).
    pub host: String,
    /// TCP port.
    pub port: u16,
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// Where a request-derived key comes from.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum KeySource {
    /// A request header (name stored lower-case).
    Header(String),
    /// A cookie by name.
    Cookie(String),
}

/// A cohort: requests whose key has one of `values` go to the canary.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Cohort {
    /// Where the cohort key is read.
    pub source: KeySource,
    /// Values that belong to the cohort (exact match).
    pub values: Vec<String>,
}

/// `[[routes]]`
#[derive(Clone, Debug, PartialEq)]
pub struct Route {
    /// Unique route name (used in metrics, the admin API and as default salt).
    pub name: String,
    /// Exact host to match (lower-case, no port); `None` matches any host.
    pub host: Option<String>,
    /// Path prefix to match; the longest matching prefix wins.
    pub path_prefix: String,
    /// Backend serving the stable release.
    pub stable: String,
    /// Backend serving the canary release, if the route has one.
    pub canary: Option<String>,
    /// Sticky key: same key, same side while the weight grows.
    pub sticky: Option<KeySource>,
    /// Salt for sticky hashing (defaults to the route name).
    pub salt: String,
    /// Force key: `always` → canary, `never` → stable (the user's opt-out).
    pub force: Option<KeySource>,
    /// Static cohort sent to the canary (routes without a rollout).
    pub cohort: Option<Cohort>,
    /// Static canary weight (routes without a rollout).
    pub weight: Weight,
    /// Header that tells the upstream its side (`stable`/`canary`).
    pub variant_header: Option<String>,
    /// Automatic progression, if configured.
    pub rollout: Option<Rollout>,
    /// Mirror a share of stable's traffic to the canary.
    pub shadow: Option<Shadow>,
    /// Which HTTP statuses and gRPC codes count as failures
    /// (`failures = { http = [...], grpc = [...] }`).
    pub failures: crate::classify::Classifier,
    /// `grpc = true`: the route carries gRPC calls only, so shadow traffic
    /// and synthetic requests, which cannot judge them, are errors.
    pub grpc: bool,
}

/// Shadow traffic: copies of live requests sent to the canary, compared with
/// stable's answers, never affecting the client.
#[derive(Clone, Debug, PartialEq)]
pub struct Shadow {
    /// Share of eligible stable requests mirrored, basis points.
    pub bp: u32,
    /// Largest request body mirrored (bodies must declare Content-Length).
    pub max_body: u64,
    /// Methods mirrored (default GET, HEAD, OPTIONS: idempotent ones).
    pub methods: Vec<String>,
    /// Also compare this response header (e.g. `etag`), besides the status.
    pub compare_header: Option<String>,
    /// Shadows in flight per route; past it new ones are dropped (counted).
    pub max_in_flight: u64,
}

/// `[state]`
#[derive(Clone, Debug, PartialEq)]
pub struct State {
    /// Where rollout state is persisted (atomically) so that a restart
    /// resumes every rollout where it was. `None`: not persisted.
    pub file: Option<PathBuf>,
}

/// `[fleet]`: many weir replicas run one rollout, on etcd.
#[derive(Clone, Debug, PartialEq)]
pub struct Fleet {
    /// etcd endpoints (`host:port`, `http://…` or `https://…`).
    pub endpoints: Vec<String>,
    /// The fleet's name: its keys live under `/weir/fleet/NAME/`.
    pub name: String,
    /// This replica's id; `None`: the host name.
    pub replica: Option<String>,
    /// The TTL of the replica's lease (leadership and reports).
    pub lease_ttl: Duration,
    /// Out of touch with etcd this long, a replica serves stable (unless
    /// the rollout was promoted).
    pub staleness: Duration,
    /// Replicas whose reports must count before the leader advances.
    pub min_reporters: usize,
    /// How often each replica publishes its evidence.
    pub report_interval: Duration,
    /// Timeout of one etcd request.
    pub timeout: Duration,
    /// TLS towards etcd.
    pub tls: Option<FleetTls>,
}

/// `[recording]`: each route's per-second slots and rollout events,
/// written to a file that `weir replay` re-judges under another plan.
#[derive(Clone, Debug, PartialEq)]
pub struct Recording {
    /// The file (relative to the config file); rotated to `FILE.1` when it
    /// reaches `max_size`, so at most twice that is kept.
    pub file: PathBuf,
    /// Size at which the file is rotated.
    pub max_size: u64,
}

/// `[prometheus]`: where `promql` gates send their queries.
#[derive(Clone, Debug, PartialEq)]
pub struct Prometheus {
    /// Base URL of Prometheus's HTTP API (`http://` or `https://`), without
    /// the `/api/v1/query` path.
    pub url: String,
    /// Timeout of one query.
    pub timeout: Duration,
    /// How often each `promql` gate is queried; a reading older than two
    /// intervals and a timeout is stale (inconclusive).
    pub interval: Duration,
    /// File holding a bearer token sent with every query (read at each
    /// query, so a rotated token is picked up).
    pub bearer_token_file: Option<PathBuf>,
    /// PEM CA bundle to verify an `https://` Prometheus against; the system
    /// roots when absent.
    pub ca: Option<PathBuf>,
}

/// `[tracing]`: W3C trace context to the upstreams and weir's own span per
/// request, exported over OTLP/HTTP (protobuf).
#[derive(Clone, Debug, PartialEq)]
pub struct Tracing {
    /// The collector's OTLP/HTTP base URL (`http://` or `https://`); spans
    /// go to `{endpoint}/v1/traces`.
    pub endpoint: String,
    /// Share of requests traced when the caller did not decide
    /// (`traceparent` without one, or none): 0.0-1.0. A caller's sampled
    /// flag is followed.
    pub sample_ratio: f64,
    /// Follow a caller's sampled flag (default); off (an edge facing
    /// untrusted clients), only `sample_ratio` decides, the caller's trace
    /// still continued.
    pub follow_caller: bool,
    /// Export every canary request that failed, sampled or not (its
    /// upstream saw the unsampled flag).
    pub canary_errors: bool,
    /// `service.name` of weir's spans.
    pub service_name: String,
    /// PEM CA bundle trusted for an `https://` endpoint besides the
    /// system roots.
    pub ca: Option<PathBuf>,
    /// Timeout of one export.
    pub timeout: Duration,
}

/// `[webhooks]`: how the rollouts' `pre_stage` and `notify` webhooks are
/// sent.
#[derive(Clone, Debug, PartialEq)]
pub struct Webhooks {
    /// PEM CA bundle trusted for `https://` webhooks besides the system
    /// roots (a private CA's receivers).
    pub ca: Option<PathBuf>,
    /// File holding the HMAC-SHA256 key that signs weir-format webhooks
    /// (`X-Weir-Signature`), read at each send.
    pub secret_file: Option<PathBuf>,
    /// Further attempts of a `notify` delivery that failed (no answer, 429
    /// or 5xx), with exponential backoff, within a retry budget.
    pub retries: u32,
    /// Webhook requests in flight at most (the rest wait).
    pub max_in_flight: usize,
}

impl Default for Webhooks {
    fn default() -> Self {
        Webhooks { ca: None, secret_file: None, retries: 3, max_in_flight: 8 }
    }
}

/// TLS towards etcd: a CA to trust (else the system's roots), a client
/// certificate.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct FleetTls {
    /// PEM CA bundle.
    pub ca_file: Option<PathBuf>,
    /// PEM client certificate.
    pub cert_file: Option<PathBuf>,
    /// PEM key of the client certificate.
    pub key_file: Option<PathBuf>,
    /// The name to verify on etcd's certificate (default: the endpoint's host).
    pub domain: Option<String>,
}

#[cfg(test)]
mod tests;
