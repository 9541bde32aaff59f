//! Shadow traffic: a share of the requests served by stable is copied to
//! the canary in the background. The client only ever sees stable's answer;
//! the copy is recorded in the canary's `weir_shadow_*` metrics and its
//! status (and optionally one header) compared with stable's. The mismatch
//! share feeds the `shadow_mismatch` gate.
//!
//! Only idempotent methods are copied by default, and bodies only when they
//! declare a Content-Length up to `max_body` (they are read once and sent to
//! both). Copies never wait on anything the client waits on; past
//! `max_in_flight` per route new copies are dropped and counted.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::{HeaderName, HeaderValue, Request, StatusCode};
use tokio::sync::oneshot;
use tokio::time::Instant;
use weir_control::config::Shadow;
use weir_control::sample::{Checks, CodeClass};

use crate::random::next_random;
use crate::route::Route;
use crate::snapshot::Snapshot;
use crate::telemetry::{names, Telemetry};
use crate::upstream::body::UpstreamBody;

/// Tag on copies, so the canary can tell them apart.
pub(crate) static HEADER: HeaderName = HeaderName::from_static("x-weir-shadow");

/// Per-route comparison counters, keyed by stage epoch.
#[derive(Debug, Default)]
pub(crate) struct RouteShadow {
    epoch: AtomicU64,
    matched: AtomicU64,
    mismatched: AtomicU64,
    in_flight: AtomicU64,
}

/// All routes' shadow counters.
#[derive(Debug, Default)]
pub(crate) struct Shadows {
    #[allow(clippy::disallowed_types)]
    routes: Mutex<HashMap<String, Arc<RouteShadow>>>,
}

impl Shadows {
    fn route(&self, name: &str) -> Arc<RouteShadow> {
        let mut map = self.routes.lock().unwrap_or_else(|p| p.into_inner());
        map.entry(name.to_string()).or_default().clone()
    }

    /// Comparisons since the stage that began at `epoch` (failed = mismatch).
    pub(crate) fn checks(&self, route: &str, epoch: u64) -> Checks {
        let r = self.route(route);
        if r.epoch.swap(epoch, Ordering::Relaxed) != epoch {
            r.matched.store(0, Ordering::Relaxed);
            r.mismatched.store(0, Ordering::Relaxed);
        }
        Checks { passed: r.matched.load(Ordering::Relaxed), failed: r.mismatched.load(Ordering::Relaxed) }
    }
}

/// Stable's answer, sent to the copy for comparison.
pub(crate) type StableAnswer = Option<(StatusCode, Option<HeaderValue>)>;

/// Whether this request is copied (cheap checks first), and the length of
/// the body to read for both: its declared `Content-Length`, or 0 when it
/// has none and `body_done` (HTTP/1.1 without framing fields, or an
/// HTTP/2 request whose headers ended the stream). A body of unknown
/// length is never copied: reading it whole first would hold up a stream
/// (a gRPC call) until its end.
pub(crate) fn wanted(cfg: &Shadow, method: &http::Method, headers: &http::HeaderMap, body_done: bool) -> Option<u64> {
    if next_random() % 10_000 >= u64::from(cfg.bp) {
        return None;
    }
    if !cfg.methods.iter().any(|m| m == method.as_str()) || headers.contains_key(http::header::TRANSFER_ENCODING) {
        return None;
    }
    let len = match headers.get(http::header::CONTENT_LENGTH) {
        None if body_done => 0,
        None => return None,
        Some(v) => v.to_str().ok()?.parse::<u64>().ok()?,
    };
    (len <= cfg.max_body).then_some(len)
}

/// Starts the copy; returns the sender for stable's answer, or `None` when
/// the route is at its in-flight limit (the copy is dropped and counted).
pub(crate) fn spawn(
    shadows: &Shadows,
    telemetry: &Telemetry,
    snap: &Arc<Snapshot>,
    route: &Route,
    cfg: &Shadow,
    parts: &http::request::Parts,
    body: bytes::Bytes,
) -> Option<oneshot::Sender<StableAnswer>> {
    let canary = route.canary.clone()?;
    let counters = shadows.route(&route.name);
    if counters.in_flight.load(Ordering::Relaxed) >= cfg.max_in_flight {
        telemetry.route_counter(names::SHADOW_DROPPED_TOTAL, &route.name).increment(1);
        return None;
    }
    let endpoint = canary.pick()?;
    let uri = canary.uri(endpoint.endpoint(), parts.uri.path_and_query().cloned())?;
    let mut req = Request::builder().method(parts.method.clone()).uri(uri);
    if let Some(h) = req.headers_mut() {
        *h = parts.headers.clone();
        h.insert(HEADER.clone(), HeaderValue::from_static("1"));
    }
    let req = req.body(UpstreamBody::bytes(body)).ok()?;
    let (tx, rx) = oneshot::channel::<StableAnswer>();
    let snap = snap.clone();
    let stats = route.shadow_stats()?.clone();
    let compare = cfg.compare_header.clone();
    let mismatch_counter = telemetry.route_counter(names::SHADOW_MISMATCHES_TOTAL, &route.name);
    counters.in_flight.fetch_add(1, Ordering::Relaxed);
    let epoch = counters.epoch.load(Ordering::Relaxed);
    tokio::spawn(async move {
        let started = Instant::now();
        let sent = tokio::time::timeout(snap.timeouts.upstream_response, canary.send(&snap.client, req, false)).await;
        let answer = match sent {
            // Not an HTTP status (RFC 9110 §15): a protocol error, as on
            // the request path.
            Ok(Ok(resp)) if resp.status().as_u16() >= 600 => {
                stats.record(
                    CodeClass::Error,
                    Some(weir_control::sample::UpstreamErrorKind::Protocol),
                    started.elapsed(),
                );
                None
            }
            Ok(Ok(resp)) => {
                let status = resp.status();
                let header = compare.as_deref().and_then(|h| resp.headers().get(h).cloned());
                stats.record(CodeClass::of_status(status.as_u16()), None, started.elapsed());
                // Drain so the pooled connection can be reused.
                let _ = http_body_util::BodyExt::collect(resp.into_body()).await;
                Some((status, header))
            }
            Ok(Err(e)) => {
                let kind = crate::upstream::error::classify(&e);
                stats.record(CodeClass::Error, Some(kind), started.elapsed());
                None
            }
            Err(_) => {
                stats.record(
                    CodeClass::Error,
                    Some(weir_control::sample::UpstreamErrorKind::Timeout),
                    started.elapsed(),
                );
                None
            }
        };
        drop(endpoint);
        let stable = tokio::time::timeout(Duration::from_secs(60), rx).await.ok().and_then(Result::ok).flatten();
        // Only a stable answer can be compared; a stage change discards it.
        if let Some(stable) = stable {
            if counters.epoch.load(Ordering::Relaxed) == epoch {
                let same = answer.as_ref().is_some_and(|a| a.0 == stable.0 && a.1 == stable.1);
                if same {
                    counters.matched.fetch_add(1, Ordering::Relaxed);
                } else {
                    counters.mismatched.fetch_add(1, Ordering::Relaxed);
                    mismatch_counter.increment(1);
                }
            }
        }
        counters.in_flight.fetch_sub(1, Ordering::Relaxed);
    });
    Some(tx)
}
