//! What a request carries through the data plane: its connection's facts
//! and timers ([`ConnCtx`]), the guard that keeps it counted in flight and
//! records it once when its response ends ([`RequestGuard`]), and what the
//! access log learns about it ([`Outcome`]).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use http::HeaderValue;
use weir_control::classify::grpc::{DEADLINE_EXCEEDED, UNAVAILABLE};
use weir_control::classify::{parse_grpc_timeout, Classifier, GrpcFailures};
use weir_control::config::Timeouts;
use weir_control::sample::{CodeClass, UpstreamErrorKind};
use weir_control::split::Side;

use super::error::ProxyError;
use crate::clock::coarse_ms;
use crate::telemetry::{BackendStats, Pending, Recorded};
use crate::upstream::{Endpoint, EndpointGuard};

/// Per-connection facts shared by the connection task, its IO and requests.
#[derive(Debug)]
pub(crate) struct ConnCtx {
    pub(crate) peer: SocketAddr,
    /// The peer IP, formatted once for X-Forwarded-For.
    pub(crate) peer_ip: HeaderValue,
    /// The connection came over TLS (X-Forwarded-Proto: https).
    pub(crate) tls: bool,
    active: AtomicU32,
    /// [`coarse_ms`] when the connection last became idle.
    idle_since: AtomicU64,
    /// [`coarse_ms`] of the first byte of a pending head; 0 = none.
    head_started: AtomicU64,
    is_h2: AtomicBool,
    /// Requests in flight on the whole listener (`limits.max_requests_in_flight`).
    listener_in_flight: Arc<AtomicUsize>,
}

impl ConnCtx {
    pub(crate) fn new(peer: SocketAddr, listener_in_flight: Arc<AtomicUsize>, tls: bool) -> Self {
        let peer_ip =
            HeaderValue::from_str(&peer.ip().to_string()).unwrap_or_else(|_| HeaderValue::from_static("unknown"));
        let ctx = ConnCtx {
            peer,
            peer_ip,
            tls,
            active: AtomicU32::new(0),
            idle_since: AtomicU64::new(0),
            head_started: AtomicU64::new(0),
            is_h2: AtomicBool::new(false),
            listener_in_flight,
        };
        ctx.idle_since.store(coarse_ms(), Ordering::Relaxed);
        ctx
    }

    /// Returns the number of requests in flight on the listener before this one.
    fn request_started(&self) -> usize {
        self.active.fetch_add(1, Ordering::Relaxed);
        self.head_started.store(0, Ordering::Relaxed);
        self.listener_in_flight.fetch_add(1, Ordering::Relaxed)
    }

    fn request_finished(&self) {
        self.listener_in_flight.fetch_sub(1, Ordering::Relaxed);
        if self.active.fetch_sub(1, Ordering::Relaxed) == 1 {
            self.idle_since.store(coarse_ms(), Ordering::Relaxed);
        }
    }

    /// Notes bytes read; `true` when they start a new HTTP/1 request head.
    pub(super) fn on_bytes_read(&self, first_read: bool, bytes: &[u8]) -> bool {
        // The h2 preface starts "PRI * HTTP/2.0"; no HTTP/1 method is "PRI".
        if first_read && bytes.starts_with(b"PRI") {
            self.is_h2.store(true, Ordering::Relaxed);
        }
        if !self.is_h2.load(Ordering::Relaxed)
            && self.active.load(Ordering::Relaxed) == 0
            && self.head_started.load(Ordering::Relaxed) == 0
        {
            self.head_started.store(coarse_ms(), Ordering::Relaxed);
            return true;
        }
        false
    }

    pub(super) fn check(&self, t: &Timeouts) -> Timer {
        let now = coarse_ms();
        let header_read = t.header_read.as_millis() as u64;
        let idle = t.idle.as_millis() as u64;
        let tick = (header_read / 2).max(1);
        if self.active.load(Ordering::Relaxed) > 0 {
            return Timer::Wait(Duration::from_millis(tick.min(idle)));
        }
        let head = self.head_started.load(Ordering::Relaxed);
        if head != 0 {
            let waited = now.saturating_sub(head);
            return if waited >= header_read {
                Timer::HeadTimeout
            } else {
                Timer::Wait(Duration::from_millis((header_read - waited).min(tick)))
            };
        }
        let waited = now.saturating_sub(self.idle_since.load(Ordering::Relaxed));
        if waited >= idle {
            Timer::Idle
        } else {
            Timer::Wait(Duration::from_millis((idle - waited).min(tick)))
        }
    }
}

/// What a connection's timer found.
pub(super) enum Timer {
    /// Nothing due; look again after this long.
    Wait(Duration),
    /// Idle for `timeouts.idle`: close gracefully.
    Idle,
    /// A request head incomplete after `timeouts.header_read`: drop.
    HeadTimeout,
}

/// Marks a request in flight on its connection (and endpoint) until dropped,
/// which happens when the response body is finished or abandoned; then the
/// request is recorded, once, with its outcome.
#[derive(Debug)]
pub(crate) struct RequestGuard {
    conn: Arc<ConnCtx>,
    /// Requests in flight on the listener before this one.
    pub(crate) listener_in_flight: usize,
    endpoint: Option<EndpointGuard>,
    record: Option<Record>,
    /// A gRPC call routed and not yet answered (see
    /// [`RequestGuard::expect_answer`]).
    unanswered: Option<Box<Unanswered>>,
}

/// What a gRPC call that ends before its answer is recorded with.
#[derive(Debug)]
struct Unanswered {
    stats: Arc<BackendStats>,
    codes: GrpcFailures,
    since: std::time::Instant,
    deadline: Option<Duration>,
}

/// What is recorded when a request completes.
#[derive(Debug)]
pub(crate) struct Record {
    pub(crate) stats: Arc<BackendStats>,
    pub(crate) outcome: Recorded,
    /// Request received → upstream response headers (or the failure).
    pub(crate) latency: Duration,
    /// A gRPC call whose `grpc-status` is still to come, in the trailers:
    /// the codes that will fail it.
    pub(crate) awaiting_status: Option<GrpcFailures>,
}

impl RequestGuard {
    pub(crate) fn new(conn: Arc<ConnCtx>) -> Self {
        let listener_in_flight = conn.request_started();
        RequestGuard { conn, listener_in_flight, endpoint: None, record: None, unanswered: None }
    }

    pub(crate) fn set_record(&mut self, record: Record) {
        self.unanswered = None;
        self.record = Some(record);
    }

    /// A gRPC call was routed: if it ends before its answer (its client
    /// reset the stream, which drops the request's future), it is still
    /// recorded when its `grpc-timeout` had passed, as DEADLINE_EXCEEDED
    /// (what the client saw; a failure by default). Cancelled before its
    /// deadline, it is the client's choice and not recorded.
    pub(crate) fn expect_answer(&mut self, record: bool, outcome: &Outcome<'_>, headers: &http::HeaderMap) {
        let (true, Some(stats), Some(failures)) = (record, outcome.stats, outcome.failures) else { return };
        let deadline = headers.get("grpc-timeout").and_then(|v| parse_grpc_timeout(v.as_bytes()));
        if deadline.is_some() {
            let since = std::time::Instant::now();
            self.unanswered =
                Some(Box::new(Unanswered { stats: stats.clone(), codes: failures.grpc, since, deadline }));
        }
    }

    /// The response body failed mid-stream: the request counts as an
    /// upstream reset, whatever its status said.
    pub(crate) fn body_failed(&mut self) {
        if let Some(r) = &mut self.record {
            // A gRPC call cut off mid-stream reads as UNAVAILABLE.
            let grpc = if r.awaiting_status.take().is_some() { Some(UNAVAILABLE) } else { r.outcome.grpc };
            r.outcome = Recorded { class: CodeClass::Error, error: Some(UpstreamErrorKind::Reset), failed: true, grpc };
        }
    }

    /// Whether the request is a gRPC call still waiting for its status.
    pub(crate) fn awaiting_status(&self) -> bool {
        self.record.as_ref().is_some_and(|r| r.awaiting_status.is_some())
    }

    /// The gRPC call ended with `code` (from its trailers, or UNKNOWN when
    /// the response ended without one).
    pub(crate) fn grpc_status(&mut self, code: u8) {
        if let Some(r) = &mut self.record {
            if let Some(codes) = r.awaiting_status.take() {
                r.outcome.grpc = Some(code);
                r.outcome.failed = codes.failed(code);
            }
        }
    }

    pub(crate) fn set_endpoint(&mut self, ep: EndpointGuard) {
        self.endpoint = Some(ep);
    }

    pub(crate) fn endpoint(&self) -> Option<&Endpoint> {
        self.endpoint.as_ref().map(EndpointGuard::endpoint)
    }

    pub(crate) fn endpoint_arc(&self) -> Option<&Arc<Endpoint>> {
        self.endpoint.as_ref().map(EndpointGuard::arc)
    }
}

impl Drop for RequestGuard {
    fn drop(&mut self) {
        // A gRPC response abandoned before its end: the client cancelled.
        self.grpc_status(weir_control::classify::grpc::CANCELLED);
        if let Some(u) = self.unanswered.take() {
            let waited = u.since.elapsed();
            // The client's clock started before weir saw the call (by the
            // network and weir's own queueing, tens of ms on a loaded
            // machine): slack so that a reset at the deadline counts as
            // expired (1 ms + 5 % missed it under load, seen in CI), at
            // most a quarter of the deadline (a short one's early cancel
            // is the client's choice, not a timeout).
            let slack = |d: Duration| (d / 10 + Duration::from_millis(25)).min(d / 4);
            if u.deadline.is_some_and(|d| waited + slack(d) >= d) {
                let outcome = Recorded {
                    class: CodeClass::Error,
                    error: Some(UpstreamErrorKind::Timeout),
                    failed: u.codes.failed(DEADLINE_EXCEEDED),
                    grpc: Some(DEADLINE_EXCEEDED),
                };
                u.stats.record_outcome(outcome, waited);
            }
        }
        if let Some(r) = self.record.take() {
            r.stats.record_outcome(r.outcome, r.latency);
        }
        self.conn.request_finished();
    }
}

/// What the access log and telemetry learn about a finished request.
pub(crate) struct Outcome<'a> {
    pub(crate) route: Option<&'a str>,
    pub(crate) backend: Option<&'a str>,
    /// The backend's release label: access-log lines join on it.
    pub(crate) version: Option<&'a str>,
    pub(crate) side: Option<Side>,
    pub(crate) upstream: Option<std::net::SocketAddr>,
    pub(crate) stats: Option<&'a Arc<BackendStats>>,
    pub(crate) error: Option<ProxyError>,
    /// The request counts as sent and unanswered until this is dropped.
    pub(crate) pending: Option<Pending<'a>>,
    /// The route's classifier (set with `stats`).
    pub(crate) failures: Option<&'a Classifier>,
    /// The request is a gRPC call (`content-type: application/grpc`).
    pub(crate) is_grpc: bool,
    /// Its trace context (`[tracing]` on).
    pub(crate) trace: Option<crate::otel::TraceCtx>,
    /// Sent again after a failed attempt.
    pub(crate) retried: bool,
    /// A copy went to the canary (shadow traffic).
    pub(crate) shadowed: bool,
    /// One of weir's own synthetic requests.
    pub(crate) synthetic: bool,
}
