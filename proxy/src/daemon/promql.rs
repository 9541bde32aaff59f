//! The `promql` gates' queries, off the tick loop.
//!
//! Every 250 ms this task looks for `promql` gates whose query is due
//! (every `prometheus.interval`) on routes whose rollout is being judged,
//! renders each query for the stage's window (`weir_control::signal`), and
//! sends it in a task of its own, at most one per gate at a time: a slow
//! or unreachable Prometheus delays no route's tick and piles nothing up.
//! The answer becomes the gate's latest [`Signal`], which the driver hands
//! to the engine; a reading older than two intervals and a timeout is
//! stale there (inconclusive), as is one taken for another stage.
//!
//! Queries go to `/api/v1/query` (an instant query at Prometheus's now),
//! with the bearer token of `prometheus.bearer_token_file` read at each
//! query (a rotated token is picked up), over TLS for an `https://` URL.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{header, Request};
use http_body_util::{BodyExt, Empty, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use tokio::sync::watch;
use weir_control::config::{GateMetric, Prometheus, UpstreamTls};
use weir_control::signal::{self, Signal, Vars};

use super::context::Daemon;
use crate::clock::{engine_ms, Periodic};

/// The largest answer read from Prometheus (a one-series answer is a few
/// hundred bytes).
const MAX_ANSWER: usize = 1 << 20;

/// Queries in flight to Prometheus at most (both sides of every gate).
const MAX_IN_FLIGHT: usize = 16;

/// The query client, as a tower stack: a concurrency limit (shared by every
/// query) over a per-query timeout over a pooled hyper client. No retry: a
/// gate asks again every `prometheus.interval`, and a reading that failed
/// is stale (inconclusive) until one succeeds.
#[derive(Clone)]
struct PromClient {
    client: Client<HttpsConnector<HttpConnector>, Empty<Bytes>>,
    in_flight: Arc<tokio::sync::Semaphore>,
}

/// Clears a gate's in-flight mark when dropped.
struct InFlight<'a>(&'a Daemon, &'a (Arc<str>, String));

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.signals.done(self.1);
    }
}

/// One query to send: a gate's templates rendered for the current window.
struct Due {
    key: (Arc<str>, String),
    window_start_ms: u64,
    canary: Result<String, String>,
    stable: Option<Result<String, String>>,
}

/// Runs until shutdown.
pub(crate) async fn run(daemon: Arc<Daemon>, shutdown: watch::Receiver<bool>) {
    let mut clock = Periodic::on_demand(Duration::from_millis(250), shutdown, daemon.dp.reloads());
    let mut next: HashMap<(Arc<str>, String), u64> = HashMap::new();
    let mut client: Option<(Prometheus, Result<PromClient, String>)> = None;
    let mut busy = true;
    while clock.tick_if(busy).await {
        let snap = daemon.dp.load_full();
        let Some(prom) = snap.config.prometheus.clone() else {
            busy = false;
            continue;
        };
        if client.as_ref().is_none_or(|(p, _)| *p != prom) {
            client = Some((prom.clone(), build_client(&prom, daemon.config_path.as_deref())));
        }
        let Some((_, built)) = &client else { continue };
        let now = engine_ms();
        let mut configured = HashSet::new();
        busy = false;
        for due in due_queries(&snap, now, &mut next, prom.interval, &mut configured, &mut busy) {
            if !daemon.signals.start(&due.key) {
                continue; // the last one has not answered yet
            }
            let (daemon, prom, built) = (daemon.clone(), prom.clone(), built.clone());
            tokio::spawn(async move {
                // However the query ends (a panic included), the gate may
                // be asked again.
                let _done = InFlight(&daemon, &due.key);
                let signal = ask(built, &prom, daemon.config_path.as_deref(), &due).await;
                daemon.signals.store(due.key.0.clone(), signal);
            });
        }
        next.retain(|k, _| configured.contains(k));
        daemon.signals.retain(&configured);
    }
}

/// The queries due now; notes every (route, promql gate) configured, and
/// whether there is any.
fn due_queries(
    snap: &crate::snapshot::Snapshot,
    now: u64,
    next: &mut HashMap<(Arc<str>, String), u64>,
    interval: Duration,
    configured: &mut HashSet<(Arc<str>, String)>,
    busy: &mut bool,
) -> Vec<Due> {
    let mut out = Vec::new();
    for route in snap.routes.routes() {
        let Some(cfg) = snap.config.routes.iter().find(|r| *r.name == *route.name) else { continue };
        let slot = route.state.engine();
        let Some(engine) = slot.as_ref() else { continue };
        let judged = engine.judging(now);
        // The canary alone (full weight, promoted): stable serves nothing
        // to compare with, and the relative limits skip.
        let alone = engine.weight() == weir_control::split::Weight::FULL;
        let ctx = engine.context();
        for g in engine.plan().gates.iter().filter(|g| g.metric == GateMetric::Promql) {
            let Some(template) = g.query.as_deref() else { continue };
            let key = (route.name.clone(), g.name.clone());
            configured.insert(key.clone());
            // Ticking on while the rollout is paused: a resume is no reload.
            *busy = true;
            if !judged {
                continue;
            }
            let at = next.entry(key.clone()).or_insert(now);
            if now < *at {
                continue;
            }
            *at = now + interval.as_millis() as u64;
            let window_start_ms = engine.window_start_ms();
            let vars = Vars {
                route: &route.name,
                stable_side: false,
                canary: (cfg.canary.as_deref().unwrap_or(""), ctx.canary_version.as_deref()),
                stable: (&cfg.stable, ctx.stable_version.as_deref()),
                window_secs: now.saturating_sub(window_start_ms).div_ceil(1000),
            };
            let render = |vars: &Vars<'_>| {
                signal::render(template, vars).map_err(|v| format!("{{{{{v}}}}} has no value (no version label?)"))
            };
            let relative = g.max_ratio_to_stable.is_some() || g.max_delta_to_stable.is_some();
            out.push(Due {
                key,
                window_start_ms,
                canary: render(&vars),
                stable: (relative && !alone).then(|| render(&Vars { stable_side: true, ..vars.clone() })),
            });
        }
    }
    out
}

/// Sends `due`'s queries (both sides at once) and makes the reading.
async fn ask(client: Result<PromClient, String>, prom: &Prometheus, config: Option<&Path>, due: &Due) -> Signal {
    let one = |q: &Result<String, String>| {
        let (client, q) = (client.clone(), q.clone());
        async move {
            let client = client?;
            query(&client, prom, config, &q?).await
        }
    };
    let (canary, stable) = match &due.stable {
        Some(s) => {
            let (c, s) = tokio::join!(one(&due.canary), one(s));
            (c, Some(s))
        }
        None => (one(&due.canary).await, None),
    };
    let at_ms = engine_ms();
    Signal {
        gate: due.key.1.clone(),
        window_start_ms: due.window_start_ms,
        at_ms,
        fresh_until_ms: at_ms + 2 * prom.interval.as_millis() as u64 + prom.timeout.as_millis() as u64,
        query: due.canary.clone().unwrap_or_default(),
        canary,
        stable,
    }
}

/// One instant query: its value, or why there is none.
async fn query(client: &PromClient, prom: &Prometheus, config: Option<&Path>, q: &str) -> Result<f64, String> {
    let uri = format!("{}/api/v1/query?query={}", prom.url, encode(q));
    let mut req = Request::get(uri).header(header::ACCEPT, "application/json");
    if let Some(file) = &prom.bearer_token_file {
        let path = crate::files::config_relative(file, config);
        let read = tokio::task::spawn_blocking(move || crate::files::read_token(&path, "prometheus.bearer_token_file"));
        let token = read.await.map_err(|e| format!("prometheus.bearer_token_file: {e}"))??;
        req = req.header(header::AUTHORIZATION, format!("Bearer {token}"));
    }
    let req = req.body(Empty::new()).map_err(|e| format!("bad request: {e}"))?;
    let call = async {
        let stack = tower::limit::ConcurrencyLimit::with_semaphore(
            tower::timeout::Timeout::new(client.client.clone(), prom.timeout),
            client.in_flight.clone(),
        );
        // The stack's timeout and the one around the whole query (below)
        // are the same length: either may fire first; both read alike.
        let resp = tower::ServiceExt::oneshot(stack, req).await.map_err(|e| {
            if e.is::<tower::timeout::error::Elapsed>() {
                format!("no answer within {:?}", prom.timeout)
            } else {
                format!("{}: {}", prom.url, crate::log::error_chain(&*e))
            }
        })?;
        let status = resp.status();
        let body = Limited::new(resp.into_body(), MAX_ANSWER)
            .collect()
            .await
            .map_err(|e| format!("reading the answer: {e}"))?
            .to_bytes();
        match signal::parse_answer(&body) {
            // Prometheus explains its 4xx/5xx in the same JSON.
            Err(e) if !status.is_success() => Err(format!("HTTP {}: {e}", status.as_u16())),
            other => other,
        }
    };
    match tokio::time::timeout(prom.timeout, call).await {
        Ok(r) => r,
        Err(_) => Err(format!("no answer within {:?}", prom.timeout)),
    }
}

/// Percent-encoding of a query string value (RFC 3986 unreserved kept).
fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3);
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The client for `prom`: plain HTTP, or TLS verified against `prom.ca`
/// (else the system roots) for an `https://` URL; `config_path` anchors a
/// relative `ca`.
fn build_client(prom: &Prometheus, config_path: Option<&Path>) -> Result<PromClient, String> {
    let tls = if prom.url.starts_with("https://") {
        let cfg = UpstreamTls { ca: prom.ca.clone(), server_name: None, client: None };
        let mut tls = crate::tls::client_config(&cfg, false, config_path, "prometheus")?;
        // HTTP/1.1 without ALPN: the connector refuses (panics on) a config
        // that already offers protocols.
        tls.alpn_protocols.clear();
        tls
    } else {
        // Never used for http://, but the connector type wants one.
        rustls::ClientConfig::builder_with_provider(crate::tls::provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("prometheus: {e}"))?
            .with_root_certificates(rustls::RootCertStore::empty())
            .with_no_client_auth()
    };
    Ok(PromClient {
        client: crate::tls::https_client(tls, prom.timeout),
        in_flight: Arc::new(tokio::sync::Semaphore::new(MAX_IN_FLIGHT)),
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn queries_are_percent_encoded() {
        assert_eq!(super::encode(r#"sum(x{a="b c"})/2"#), "sum%28x%7Ba%3D%22b%20c%22%7D%29%2F2");
    }
}
