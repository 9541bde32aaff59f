//! Maps the spanned TOML tree onto [`Config`], filling defaults and checking
//! every value and cross-reference.
//!
//! One file per part of the file: `listen` (listeners and their TLS),
//! `settings` (timeouts, limits, log, telemetry), `backends`, `routes` and
//! `rollout` (stages and gates). The little readers more than one of them
//! needs (names, header names, key sources, cohorts, weights) live here, so
//! that the sections depend on this file and never on each other in a
//! circle.

mod backends;
mod fleet;
mod listen;
mod prometheus;
mod rollout;
mod routes;
mod settings;

use backends::backends;
use listen::{admin, listen, ofrep};
use routes::routes;
use settings::{dns, limits, log, telemetry, timeouts, tracing, webhooks};

use std::path::PathBuf;
use std::time::Duration;

use toml::de::DeTable;

use super::reader::{as_str, Ctx, Table, Value};
use super::{Cohort, Config, ConfigErrors, KeySource, Route, State, Telemetry};
use crate::split::Weight;

pub(super) fn config(src: &str) -> Result<Config, ConfigErrors> {
    let mut ctx = Ctx::new(src);
    let root = match DeTable::parse(src) {
        Ok(root) => root,
        Err(e) => {
            let span = e.span();
            ctx.error("", span.as_ref(), e.message().trim().to_string());
            return ctx.finish(None);
        }
    };
    let mut top = Table::root(&root);
    let listen = listen(&mut ctx, &mut top);
    let admin = admin(&mut ctx, &mut top);
    let ofrep = ofrep(&mut ctx, &mut top);
    let timeouts = timeouts(&mut ctx, &mut top);
    let limits = limits(&mut ctx, &mut top);
    let log = log(&mut ctx, &mut top);
    let (mut telemetry, window_given) = telemetry(&mut ctx, &mut top);
    let state = match top.table(&mut ctx, "state") {
        Some(mut t) => {
            let file = t.string(&mut ctx, "file").map(PathBuf::from);
            t.finish(&mut ctx);
            State { file }
        }
        None => State { file: None },
    };
    let fleet = fleet::fleet(&mut ctx, &mut top);
    let prometheus = prometheus::prometheus(&mut ctx, &mut top);
    let recording = prometheus::recording(&mut ctx, &mut top);
    let dns = dns(&mut ctx, &mut top);
    let webhooks = webhooks(&mut ctx, &mut top);
    let tracing = tracing(&mut ctx, &mut top);
    let backends = backends(&mut ctx, &mut top);
    let routes = routes(&mut ctx, &mut top, &backends);
    stage_windows(&mut ctx, &mut telemetry, window_given, &routes);
    probe_gates(&mut ctx, &routes);
    grpc_routes(&mut ctx, &routes);
    prometheus::promql_gates(&mut ctx, &routes, &backends, prometheus.is_some(), fleet.is_some());
    if fleet.is_some() {
        fleet::rollouts(&mut ctx, &routes);
    }
    top.finish(&mut ctx);
    ctx.finish(Some(Config {
        listen,
        admin,
        ofrep,
        timeouts,
        limits,
        log,
        telemetry,
        state,
        fleet,
        prometheus,
        recording,
        dns,
        webhooks,
        tracing,
        backends,
        routes,
    }))
}

/// The parts of an `http://` or `https://` URL weir checks (the scheme is
/// one of the two).
pub(super) struct UrlParts<'u> {
    /// `user:pass@` present.
    pub(super) userinfo: bool,
    pub(super) host: &'u str,
    /// What follows the authority (path, query, fragment).
    pub(super) rest: &'u str,
}

/// Splits `u` into scheme, host and the rest; `None` unless it is an
/// `http://` or `https://` URL with a host, a numeric port if any, and no
/// whitespace.
pub(super) fn split_url(u: &str) -> Option<UrlParts<'_>> {
    let (scheme, after) = u.split_once("://")?;
    if !matches!(scheme, "http" | "https") || u.contains(char::is_whitespace) {
        return None;
    }
    let end = after.find(['/', '?', '#']).unwrap_or(after.len());
    let (authority, rest) = after.split_at(end);
    let (userinfo, host_port) = match authority.rsplit_once('@') {
        Some((_, h)) => (true, h),
        None => (false, authority),
    };
    let (host, port) = match host_port.strip_prefix('[') {
        Some(v6) => {
            let (h, p) = v6.split_once(']')?;
            (h, p.strip_prefix(':'))
        }
        None => match host_port.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (host_port, None),
        },
    };
    if host.is_empty() || port.is_some_and(|p| p.parse::<u16>().is_err()) {
        return None;
    }
    Some(UrlParts { userinfo, host, rest })
}

/// `u` for an error message: scheme and authority without credentials,
/// never the path (a Slack or Teams URL carries its secret there, and
/// errors go to the log).
pub fn shown_url(u: &str) -> String {
    match u.split_once("://") {
        Some((scheme, after)) => {
            let authority = &after[..after.find(['/', '?', '#']).unwrap_or(after.len())];
            let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
            format!("{scheme}://{host}…")
        }
        None => format!("{}…", u.chars().take(16).collect::<String>()),
    }
}

/// Whether `u` is an `http://` or `https://` URL with a host (and a
/// numeric port, if any); says why not at `path`, showing only the scheme
/// and host.
pub(super) fn http_url(ctx: &mut Ctx<'_>, path: &str, span: &std::ops::Range<usize>, u: &str) -> bool {
    let ok = split_url(u).is_some();
    if !ok {
        ctx.error(path, Some(span), format!("\"{}\" is not an http:// or https:// URL with a host", shown_url(u)));
    }
    ok
}

/// Whether `u`'s host is a loopback address or `localhost` (a test or a
/// local relay: plain HTTP allowed for Slack, Teams and PagerDuty).
pub(super) fn loopback_url(u: &str) -> bool {
    split_url(u)
        .is_some_and(|p| p.host == "localhost" || p.host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback()))
}

/// Names that end up in metric labels and URLs: keep them boring.
fn check_name(ctx: &mut Ctx<'_>, path: &str, span: Option<&std::ops::Range<usize>>, name: &str) -> bool {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.');
    if !ok {
        ctx.error(
            path,
            span,
            format!("\"{name}\" is not a valid name (1-64 characters: letters, digits, '-', '_', '.')"),
        );
    }
    ok
}

fn header_name(ctx: &mut Ctx<'_>, path: &str, v: &Value<'_>, s: &str) -> Option<String> {
    let ok = !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
    if ok {
        Some(s.to_ascii_lowercase())
    } else {
        ctx.error(path, Some(&v.span()), format!("\"{s}\" is not a valid header name"));
        None
    }
}

/// `{ header = "x" }` or `{ cookie = "y" }` (exactly one), plus extra keys
/// read by the caller through `t`.
fn key_source(ctx: &mut Ctx<'_>, t: &mut Table<'_, '_>) -> Option<KeySource> {
    let header = t.get("header");
    let cookie = t.get("cookie");
    match (header, cookie) {
        (Some(h), None) => {
            let path = t.key_path("header");
            let s = as_str(ctx, &path, h)?;
            header_name(ctx, &path, h, s).map(KeySource::Header)
        }
        (None, Some(c)) => {
            let path = t.key_path("cookie");
            let s = as_str(ctx, &path, c)?;
            if s.is_empty() || s.bytes().any(|b| b <= b' ' || b"=;,\"\\".contains(&b) || b >= 0x7f) {
                ctx.error(&path, Some(&c.span()), format!("\"{s}\" is not a valid cookie name"));
                return None;
            }
            Some(KeySource::Cookie(s.to_string()))
        }
        (Some(_), Some(_)) => {
            ctx.error(&t.path, Some(&t.span), "set either header or cookie, not both");
            None
        }
        (None, None) => {
            ctx.error(&t.path, Some(&t.span), "needs header = \"NAME\" or cookie = \"NAME\"");
            None
        }
    }
}

fn cohort(ctx: &mut Ctx<'_>, t: &mut Table<'_, '_>) -> Option<Cohort> {
    let source = key_source(ctx, t);
    let path = t.key_path("values");
    let values = match t.array(ctx, "values") {
        Some(list) => {
            let mut out = Vec::new();
            for (i, v) in list.iter().enumerate() {
                if let Some(s) = as_str(ctx, &format!("{path}[{i}]"), v) {
                    out.push(s.to_string());
                }
            }
            if out.is_empty() {
                ctx.error(&path, Some(&t.span), "needs at least one value");
            }
            out
        }
        None => {
            if t.get("values").is_none() {
                ctx.error(&path, Some(&t.span), "is required");
            }
            Vec::new()
        }
    };
    t.finish(ctx);
    Some(Cohort { source: source?, values }).filter(|c| !c.values.is_empty())
}

fn weight(ctx: &mut Ctx<'_>, t: &mut Table<'_, '_>) -> Option<Weight> {
    let percent = t.number(ctx, "weight")?;
    match Weight::from_percent(percent) {
        Ok(w) => Some(w),
        Err(e) => {
            ctx.error(&t.key_path("weight"), Some(&t.span), e);
            None
        }
    }
}

/// The longest `telemetry.window_max` (also checked in `settings`).
const MAX_WINDOW: Duration = Duration::from_secs(3600);

/// A stage's gates read one window from the stage's start, so the telemetry
/// must keep a stage's whole length: its deadline (`max_duration`, else
/// `hold_timeout`). An explicit `telemetry.window_max` shorter than a
/// deadline is an error (the window would slide and forget the stage's
/// start: no always-valid test holds on a sliding window, and a large
/// `min_requests` might never be met); without one, it grows to the
/// longest deadline. A bake longer than its stage's deadline could never
/// pass: an error too.
fn stage_windows(ctx: &mut Ctx<'_>, telemetry: &mut Telemetry, window_given: bool, routes: &[Route]) {
    let secs = |d: Duration| format!("{}s", d.as_secs());
    for (i, route) in routes.iter().enumerate() {
        let Some(plan) = &route.rollout else { continue };
        for (j, stage) in plan.stages.iter().enumerate() {
            let deadline = stage.max_duration.unwrap_or(plan.hold_timeout);
            let path = format!("routes[{i}].rollout.stages[{j}]");
            if stage.bake > deadline {
                let key = if stage.max_duration.is_some() { "max_duration" } else { "hold_timeout" };
                ctx.error(
                    &format!("{path}.bake"),
                    None,
                    format!(
                        "{} is longer than the stage's deadline ({} from {key}): the stage could never pass",
                        secs(stage.bake),
                        secs(deadline)
                    ),
                );
            }
            if deadline <= telemetry.window_max {
                continue;
            }
            let limit = if window_given { telemetry.window_max } else { MAX_WINDOW };
            if deadline <= limit {
                telemetry.window_max = deadline;
                continue;
            }
            let key = if stage.max_duration.is_some() {
                format!("{path}.max_duration")
            } else {
                format!("routes[{i}].rollout.hold_timeout")
            };
            let whose = if window_given { "telemetry.window_max" } else { "the longest window telemetry keeps" };
            ctx.error(
                &key,
                None,
                format!(
                    "{} is longer than {whose} ({}): the stage's gate window would slide and forget its start; \
                     shorten the stage{}",
                    secs(deadline),
                    secs(limit),
                    if window_given { " or raise window_max" } else { "" }
                ),
            );
        }
    }
}

/// On a route that carries gRPC (`grpc = true`), shadow traffic and
/// synthetic requests would judge nothing: a copy needs a declared
/// Content-Length (gRPC calls have none, so none is ever copied), and a
/// synthetic request is an HTTP GET judged by its status (a failed call is
/// a 200 with `grpc-status`). Errors, rather than a stage that holds for
/// ever. Without the key, [`crate::config::warnings`] says it when a
/// backend's health check is gRPC.
fn grpc_routes(ctx: &mut Ctx<'_>, routes: &[Route]) {
    for (i, route) in routes.iter().enumerate().filter(|(_, r)| r.grpc) {
        for (key, why) in super::grpc_misfits(route) {
            ctx.error(&format!("routes[{i}].{key}"), None, format!("{why} (the route has grpc = true)"));
        }
    }
}

/// A gate on probes needs the probes: a `synthetic` gate with no stage
/// sending synthetic requests, or a `shadow_mismatch` gate on a route
/// without `shadow`, could never be evaluated (its stage would hold for
/// ever): an error with the key and why.
///
/// Likewise a stage no gate can judge (a stage advances only on a gate that
/// passed): a `synthetic` gate judges only the stages that send synthetic
/// requests, and a first stage at 100 % has no stable traffic and no
/// baseline, so gates that only compare with stable (`error_rate_vs_stable`,
/// `latency_shift`, limits relative to stable alone) skip it.
fn probe_gates(ctx: &mut Ctx<'_>, routes: &[Route]) {
    use super::GateMetric;
    for (i, route) in routes.iter().enumerate() {
        let Some(plan) = &route.rollout else { continue };
        for (k, stage) in plan.stages.iter().enumerate() {
            let alone = k == 0 && stage.weight == crate::split::Weight::FULL;
            let judges = |g: &&crate::config::Gate| {
                !g.dry_run
                    && match g.metric {
                        GateMetric::Synthetic => stage.synthetic.is_some(),
                        // An outside signal does not depend on the split.
                        GateMetric::Promql => true,
                        GateMetric::ErrorRateVsStable | GateMetric::LatencyShift => !alone,
                        GateMetric::ErrorRate | GateMetric::Latency(_) => !alone || g.max.is_some(),
                        // Copies are of requests stable serves: none at 100 %.
                        GateMetric::ShadowMismatch => !alone,
                    }
            };
            if !plan.gates.is_empty() && !plan.gates.iter().any(|g| judges(&g)) {
                let why = if alone {
                    "it takes all traffic at once, and its gates only compare with stable, which then has no \
                     traffic and no baseline (start lower, or add an absolute limit such as max)"
                } else {
                    "its only gates are synthetic and it sends no synthetic requests (give it synthetic = { ... }, \
                     or add a gate on live traffic)"
                };
                ctx.error(
                    &format!("routes[{i}].rollout.stages[{k}]"),
                    None,
                    format!("no gate can judge this stage, so it could never pass: {why}"),
                );
            }
        }
        for (j, g) in plan.gates.iter().enumerate() {
            let missing = match g.metric {
                GateMetric::Synthetic if plan.stages.iter().all(|s| s.synthetic.is_none()) => {
                    "no stage sends synthetic requests (stages[].synthetic)"
                }
                GateMetric::ShadowMismatch if route.shadow.is_none() => {
                    "the route has no shadow traffic (shadow = { ... })"
                }
                _ => continue,
            };
            ctx.error(
                &format!("routes[{i}].rollout.gates[{j}].metric"),
                None,
                format!("\"{}\" can never be evaluated: {missing}", g.metric.name()),
            );
        }
    }
}
