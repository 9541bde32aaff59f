//! **send**: the request to the upstream, through weir's own HTTP/1.1
//! client (body-less requests to plain backends, `upstream/h1`) or hyper's
//! (bodies, upgrades, TLS and HTTP/2 backends), within
//! `timeouts.upstream_response`, once more on another address (or the same
//! one) where that is safe (see [`retry_target`]). Every attempt feeds
//! passive outlier detection.

use std::sync::Arc;

use http::{Request, Response};
use hyper::upgrade::OnUpgrade;

use super::error::ProxyError;
use super::request::{Outcome, RequestGuard};
use crate::snapshot::Snapshot;
use crate::telemetry::Telemetry;
use crate::upstream::body::{client_fault, FromUpstream, Gap, UpstreamBody};
use crate::upstream::error::Refusal;
use crate::upstream::{Backend, Endpoint, EndpointGuard, UpstreamErrorKind};

/// Where a request goes, for the attempts to send it.
pub(super) struct Leg<'a> {
    pub(super) telemetry: &'a Telemetry,
    pub(super) snap: &'a Snapshot,
    pub(super) route: &'a str,
    pub(super) backend: &'a Backend,
}

/// Which client sends the request, and whether a failed attempt may be
/// retried. A request without a body may be sent again (see
/// [`retry_target`]); one with a body only if the body comes back from the
/// failed attempt (see [`UpstreamBody::returning`]): unread after a failed
/// connect, or read no further than [`REPLAY_ROOM`] when an HTTP/2
/// upstream refused the stream. weir's own client ([`own`]) takes
/// body-less requests to plain HTTP/1.1 backends; hyper's ([`hyper`], with
/// [`hyper_request`]) the rest.
///
/// The caller awaits one of the two in its own branch, hyper's boxed, so
/// that its future stays the size of the common path: an async fn that
/// took the body, or a value holding hyper's request, would keep either in
/// the future while weir's own client waits for the upstream.
pub(super) fn plan(
    backend: &Backend,
    parts: &http::request::Parts,
    body: &UpstreamBody,
    upgrade: bool,
) -> (bool, Retry) {
    let body_less = !upgrade && http_body::Body::is_end_stream(body);
    let many = backend.len() > 1;
    let refusable = !upgrade && backend.may_refuse();
    let keep = match () {
        _ if body_less || upgrade => None,
        _ if refusable => Some(REPLAY_ROOM),
        _ if many => Some(0),
        _ => None,
    };
    let retry = Retry { body_less, many, idempotent: parts.method.is_idempotent(), refusable, keep };
    (body_less && backend.client.is_none(), retry)
}

/// How much of a request body an HTTP/2 attempt keeps (the frames it read,
/// sharing their buffers) to send the request again if the upstream
/// refuses the stream: a gRPC unary call or a form fits.
const REPLAY_ROOM: usize = 64 * 1024;

/// How long a refused attempt's body is waited for: hyper's stream task,
/// which holds it, ends as soon as the stream is refused.
const BODY_BACK_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

/// The request for hyper's client, which takes it: the head moves out of
/// `parts` (left empty). Also returns the client's side of an upgrade, for
/// the tunnel.
pub(super) fn hyper_request(
    parts: &mut http::request::Parts,
    body: UpstreamBody,
    upgrade: bool,
) -> (Request<UpstreamBody>, Option<OnUpgrade>) {
    let parts = std::mem::replace(parts, Request::new(()).into_parts().0);
    let mut req = Request::from_parts(parts, body);
    // The request's upgrade handle was moved into `req` with its
    // extensions; take it back before the request is sent.
    let downstream_upgrade = if upgrade { req.extensions_mut().remove::<OnUpgrade>() } else { None };
    (req, downstream_upgrade)
}

/// Whether a failed request may be sent once more.
#[derive(Clone, Copy)]
pub(super) struct Retry {
    /// No body (and no upgrade).
    body_less: bool,
    /// The backend has another address.
    many: bool,
    idempotent: bool,
    /// The backend may speak HTTP/2, whose upstreams can refuse a stream.
    refusable: bool,
    /// The body is handed over as [`UpstreamBody::returning`] with this
    /// room, to come back for a retry.
    keep: Option<usize>,
}

impl Retry {
    /// Whether any failure could be retried (the request head is then
    /// copied before hyper's client takes it).
    fn possible(self) -> bool {
        self.keep.is_some() || (self.body_less && (self.many || self.idempotent || self.refusable))
    }
}

/// Where to send a request again, if at all: on another address after a
/// failed connect (nothing was sent); after a reset for an idempotent
/// method without a body (RFC 9110 §9.2.2: an upstream restarting closes
/// pooled connections under requests just written); after an HTTP/2
/// upstream refused the stream, any method (it was not processed, RFC 9113
/// §8.7; but see `Refusal::GoAway`), through the pool of refused requests,
/// to another address if there is one. A request with a body goes again
/// only if the body came back (`body_back`).
fn retry_target(
    sent: &Result<Response<FromUpstream>, ProxyError>,
    retry: Retry,
    body_back: bool,
    backend: &Backend,
    guard: &RequestGuard,
) -> Option<(UpstreamErrorKind, EndpointGuard)> {
    let resend = retry.body_less || body_back;
    let Err(ProxyError::Upstream(kind)) = sent else { return None };
    let other = || guard.endpoint().and_then(|failed| backend.pick_other(failed));
    let ep = match kind {
        UpstreamErrorKind::Connect | UpstreamErrorKind::ConnectTimeout if resend => other(),
        UpstreamErrorKind::Reset if retry.body_less && retry.idempotent => other().or_else(|| backend.pick()),
        UpstreamErrorKind::Refused if resend && retry.refusable => other().or_else(|| backend.pick()),
        _ => None,
    };
    ep.map(|ep| (*kind, ep))
}

/// Switches the request to the retry address and counts the retry.
fn start_retry(leg: &Leg<'_>, kind: UpstreamErrorKind, ep: &EndpointGuard, outcome: &mut Outcome<'_>) {
    leg.telemetry.retried(leg.route, &leg.backend.name, kind);
    outcome.upstream = Some(ep.endpoint().addr);
    outcome.retried = true;
}

/// weir's own client, once more on failure if `retry` allows: the request
/// is only borrowed, so a retry sends the same one.
pub(super) async fn own<'s>(
    leg: &Leg<'_>,
    parts: &http::request::Parts,
    guard: &mut RequestGuard,
    outcome: &mut Outcome<'s>,
    retry: Retry,
) -> Result<Response<FromUpstream>, ProxyError> {
    let Some(ep) = guard.endpoint_arc() else {
        return Err(ProxyError::Upstream(UpstreamErrorKind::Unavailable));
    };
    let mut sent = send_own(leg, ep, parts).await;
    report(leg.backend, guard, &sent);
    if let Some((kind, ep)) = retry_target(&sent, retry, false, leg.backend, guard) {
        start_retry(leg, kind, &ep, outcome);
        sent = send_own(leg, ep.arc(), parts).await;
        guard.set_endpoint(ep);
        report(leg.backend, guard, &sent);
    }
    sent
}

/// hyper's client, once more on failure if `retry` allows (from a copy of
/// the request head kept for that, and the body if it came back: hyper's
/// client consumes what it sends).
pub(super) async fn hyper<'s>(
    leg: &Leg<'_>,
    req: Request<UpstreamBody>,
    guard: &mut RequestGuard,
    outcome: &mut Outcome<'s>,
    retry: Retry,
) -> Result<Response<FromUpstream>, ProxyError> {
    if guard.endpoint().is_none() {
        return Err(ProxyError::Upstream(UpstreamErrorKind::Unavailable));
    }
    let copy =
        retry.possible().then(|| (req.method().clone(), req.uri().path_and_query().cloned(), req.headers().clone()));
    let (req, back) = match retry.keep {
        Some(room) => {
            let (parts, body) = req.into_parts();
            let (body, back) = body.returning(room);
            (Request::from_parts(parts, body), Some(back))
        }
        None => (req, None),
    };
    // A body-less request that may not be sent twice goes again after a
    // GOAWAY only if it cannot have reached the upstream: never (see
    // `Refusal::GoAway`), as its HEADERS alone make a whole request.
    let goaway_retry = !retry.body_less || retry.idempotent;
    let mut sent = send_hyper(leg, req, Attempt::First { goaway_retry }).await;
    report(leg.backend, guard, &sent);
    let body = match back {
        None => None,
        // hyper's stream task holds the body until it sees the refusal.
        Some(rx) if matches!(sent, Err(ProxyError::Upstream(UpstreamErrorKind::Refused))) => {
            tokio::time::timeout(BODY_BACK_WAIT, rx).await.ok().and_then(Result::ok)
        }
        // A failed connect drops the request, body and all, before the
        // error is returned.
        Some(mut rx) => rx.try_recv().ok(),
    };
    let target = retry_target(&sent, retry, body.is_some(), leg.backend, guard);
    if let (Some((kind, ep)), Some((method, path, headers))) = (target, copy) {
        start_retry(leg, kind, &ep, outcome);
        let uri =
            leg.backend.uri(ep.endpoint(), path).ok_or(ProxyError::BadRequest("weir: invalid request target\n"))?;
        let mut req = Request::new(body.unwrap_or_else(|| UpstreamBody::bytes(bytes::Bytes::new())));
        *req.method_mut() = method;
        *req.uri_mut() = uri;
        *req.headers_mut() = headers;
        sent = send_hyper(leg, req, Attempt::Retry { refused: kind == UpstreamErrorKind::Refused }).await;
        guard.set_endpoint(ep);
        report(leg.backend, guard, &sent);
    }
    sent
}

/// Sends a body-less request to a plain HTTP/1.1 backend through weir's
/// own client (`upstream/h1/`), within `timeouts.upstream_response`.
async fn send_own(
    leg: &Leg<'_>,
    ep: &Arc<Endpoint>,
    req: &http::request::Parts,
) -> Result<Response<FromUpstream>, ProxyError> {
    let path = req.uri.path_and_query().map_or("/", |p| p.as_str());
    let t = &leg.snap.timeouts;
    let t = crate::upstream::h1::Timeouts { connect: t.connect, response: t.upstream_response, read: t.upstream_read };
    match crate::upstream::h1::send(ep, &req.method, path, &req.headers, t).await {
        Err(kind) => {
            tracing::debug!(route = leg.route, backend = %leg.backend.name, kind = kind.as_str(), "upstream error");
            Err(ProxyError::Upstream(kind))
        }
        Ok(resp) => Ok(resp.map(FromUpstream::Weir)),
    }
}

/// Which attempt [`send_hyper`] makes.
#[derive(Clone, Copy)]
enum Attempt {
    /// The first, through the backend's pool; a refusal by GOAWAY reads as
    /// a reset unless `goaway_retry`.
    First { goaway_retry: bool },
    /// The retry; through the pool of refused requests if `refused`.
    Retry { refused: bool },
}

/// Sends through hyper's client within `timeouts.upstream_response`.
async fn send_hyper(
    leg: &Leg<'_>,
    req: Request<UpstreamBody>,
    attempt: Attempt,
) -> Result<Response<FromUpstream>, ProxyError> {
    let snap = leg.snap;
    let pool = matches!(attempt, Attempt::Retry { refused: true });
    // A gRPC or gRPC-Web call's response is a stream of messages that may
    // rightly pause: its deadline is the client's grpc-timeout.
    let grpc = req.method() == http::Method::POST
        && (super::grpc::is_grpc(req.headers()) || super::grpc::is_grpc_web(req.headers()));
    let read = snap.timeouts.upstream_read;
    let read_timeout = (!grpc && !read.is_zero()).then_some(read);
    match tokio::time::timeout(snap.timeouts.upstream_response, leg.backend.send(&snap.client, req, pool)).await {
        Err(_elapsed) => Err(ProxyError::Upstream(UpstreamErrorKind::Timeout)),
        Ok(Err(e)) => {
            // A client that stops sending or cuts its body short must not
            // count against the upstream (nor eject it, nor fail a gate).
            if let Some(fault) = client_fault(&e) {
                return Err(fault.into());
            }
            let mut kind = crate::upstream::error::classify(&e);
            if kind == UpstreamErrorKind::Refused
                && matches!(attempt, Attempt::First { goaway_retry: false })
                && crate::upstream::error::refusal(&e) == Some(Refusal::GoAway)
            {
                kind = UpstreamErrorKind::Reset;
            }
            let (route, backend) = (leg.route, &leg.backend.name);
            tracing::debug!(route, backend = %backend, kind = kind.as_str(), "upstream error: {e:#}");
            Err(ProxyError::Upstream(kind))
        }
        // RFC 9110 §15: 600–999 are not HTTP statuses; hyper's parser
        // takes any three digits.
        Ok(Ok(resp)) if resp.status().as_u16() >= 600 => {
            tracing::debug!(route = leg.route, backend = %leg.backend.name, status = resp.status().as_u16(), "upstream answered a status outside 100-599");
            Err(ProxyError::Upstream(UpstreamErrorKind::Protocol))
        }
        Ok(Ok(resp)) => Ok(resp.map(|b| FromUpstream::Hyper(b, Gap::new(read_timeout)))),
    }
}

/// Feeds passive outlier detection: upstream failures and 5xx count; a
/// refused stream is not reported (an upstream draining its connections
/// refuses what it has not started, which is not a fault).
fn report(backend: &Backend, guard: &RequestGuard, sent: &Result<Response<FromUpstream>, ProxyError>) {
    if let Some(ep) = guard.endpoint() {
        let failed = match sent {
            Ok(resp) => resp.status().is_server_error(),
            // Neither a failure nor a success (which would clear the
            // address's run of failures).
            Err(ProxyError::Upstream(UpstreamErrorKind::Refused)) => return,
            Err(ProxyError::Upstream(_)) => true,
            Err(_) => false,
        };
        backend.report(ep, failed);
    }
}
