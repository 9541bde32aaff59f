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
use crate::upstream::body::{client_fault, FromUpstream, UpstreamBody};
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
/// [`retry_target`]); one with a body never is (some of it may have left).
/// weir's own client ([`own`]) takes body-less requests to plain HTTP/1.1
/// backends; hyper's ([`hyper`], with [`hyper_request`]) the rest.
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
    let idempotent = parts.method.is_idempotent();
    let retry = Retry {
        allowed: body_less && (backend.len() > 1 || idempotent),
        idempotent,
        body_back: !body_less && !upgrade && backend.len() > 1,
    };
    (body_less && backend.client.is_none(), retry)
}

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
    /// The request has no body, and there is another address or the method
    /// is idempotent.
    allowed: bool,
    idempotent: bool,
    /// The request has a body and there is another address: a failed
    /// connect gives the body back unread (see [`UpstreamBody::returning`]),
    /// and the request goes to another address with it.
    body_back: bool,
}

/// Where to send a request again, if at all: on another address after a
/// failed connect (nothing was sent; for a request with a body, only if
/// the body came back unread: `body_back`), or after a reset for an
/// idempotent method (RFC 9110 §9.2.2: an upstream restarting closes pooled
/// connections under requests just written).
fn retry_target(
    sent: &Result<Response<FromUpstream>, ProxyError>,
    retry: Retry,
    body_back: bool,
    backend: &Backend,
    guard: &RequestGuard,
) -> Option<(UpstreamErrorKind, EndpointGuard)> {
    match sent {
        Err(ProxyError::Upstream(k @ (UpstreamErrorKind::Connect | UpstreamErrorKind::ConnectTimeout)))
            if retry.allowed || body_back =>
        {
            guard.endpoint().and_then(|failed| backend.pick_other(failed)).map(|ep| (*k, ep))
        }
        Err(ProxyError::Upstream(k @ UpstreamErrorKind::Reset)) if retry.allowed && retry.idempotent => {
            let ep = guard.endpoint().and_then(|failed| backend.pick_other(failed)).or_else(|| backend.pick());
            ep.map(|ep| (*k, ep))
        }
        _ => None,
    }
}

/// Switches the request to the retry address and counts the retry.
fn start_retry(leg: &Leg<'_>, kind: UpstreamErrorKind, ep: &EndpointGuard, outcome: &mut Outcome<'_>) {
    leg.telemetry.retried(leg.route, &leg.backend.name, kind);
    outcome.upstream = Some(ep.endpoint().addr);
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
/// the request kept for that: hyper's client consumes what it sends).
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
    let copy = (retry.allowed || retry.body_back)
        .then(|| (req.method().clone(), req.uri().path_and_query().cloned(), req.headers().clone()));
    let (req, mut back) = if retry.body_back {
        let (parts, body) = req.into_parts();
        let (body, back) = body.returning();
        (Request::from_parts(parts, body), Some(back))
    } else {
        (req, None)
    };
    let mut sent = send_hyper(leg, req).await;
    report(leg.backend, guard, &sent);
    // Given back only if the attempt never read it.
    let body = back.as_mut().and_then(|rx| rx.try_recv().ok());
    let target = retry_target(&sent, retry, body.is_some(), leg.backend, guard);
    if let (Some((kind, ep)), Some((method, path, headers))) = (target, copy) {
        start_retry(leg, kind, &ep, outcome);
        let uri =
            leg.backend.uri(ep.endpoint(), path).ok_or(ProxyError::BadRequest("weir: invalid request target\n"))?;
        let mut req = Request::new(body.unwrap_or_else(|| UpstreamBody::bytes(bytes::Bytes::new())));
        *req.method_mut() = method;
        *req.uri_mut() = uri;
        *req.headers_mut() = headers;
        sent = send_hyper(leg, req).await;
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
    match crate::upstream::h1::send(ep, &req.method, path, &req.headers, t.connect, t.upstream_response).await {
        Err(kind) => {
            tracing::debug!(route = leg.route, backend = %leg.backend.name, kind = kind.as_str(), "upstream error");
            Err(ProxyError::Upstream(kind))
        }
        Ok(resp) => Ok(resp.map(FromUpstream::Weir)),
    }
}

/// Sends through hyper's client within `timeouts.upstream_response`.
async fn send_hyper(leg: &Leg<'_>, req: Request<UpstreamBody>) -> Result<Response<FromUpstream>, ProxyError> {
    let snap = leg.snap;
    match tokio::time::timeout(snap.timeouts.upstream_response, leg.backend.send(&snap.client, req)).await {
        Err(_elapsed) => Err(ProxyError::Upstream(UpstreamErrorKind::Timeout)),
        Ok(Err(e)) => {
            // A client that stops sending or cuts its body short must not
            // count against the upstream (nor eject it, nor fail a gate).
            if let Some(fault) = client_fault(&e) {
                return Err(fault.into());
            }
            let kind = crate::upstream::error::classify(&e);
            let (route, backend) = (leg.route, &leg.backend.name);
            tracing::debug!(route, backend = %backend, kind = kind.as_str(), "upstream error: {e:#}");
            Err(ProxyError::Upstream(kind))
        }
        Ok(Ok(resp)) => Ok(resp.map(FromUpstream::Hyper)),
    }
}

/// Feeds passive outlier detection: upstream failures and 5xx count.
fn report(backend: &Backend, guard: &RequestGuard, sent: &Result<Response<FromUpstream>, ProxyError>) {
    if let Some(ep) = guard.endpoint() {
        let failed = match sent {
            Ok(resp) => resp.status().is_server_error(),
            Err(ProxyError::Upstream(_)) => true,
            Err(_) => false,
        };
        backend.report(ep, failed);
    }
}
