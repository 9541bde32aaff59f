//! The request path: route, select a side, pick an address, forward.

use std::convert::Infallible;
use std::sync::Arc;

use http::header::{self, HeaderValue};
use http::{Request, Response, StatusCode, Version};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::time::Instant;

use super::conn::{ConnCtx, Record, RequestGuard};
use super::headers;
use super::Shared;
use crate::body::{FromUpstream, ResponseBody, UpstreamBody};
use crate::rescue::{rescue, ProxyError};
use crate::upstream::UpstreamErrorKind;
use weir_control::config::Underscores;
use weir_control::sample::CodeClass;
use weir_control::split::Side;

static STABLE: HeaderValue = HeaderValue::from_static("stable");
static CANARY: HeaderValue = HeaderValue::from_static("canary");

/// What the access log and telemetry learn about a finished request.
pub(crate) struct Outcome<'a> {
    pub(crate) route: Option<&'a str>,
    pub(crate) backend: Option<&'a str>,
    pub(crate) side: Option<weir_control::split::Side>,
    pub(crate) upstream: Option<std::net::SocketAddr>,
    pub(crate) stats: Option<&'a Arc<crate::telemetry::BackendStats>>,
    pub(crate) error: Option<ProxyError>,
}

/// hyper service entry point: never fails; failures become responses.
pub(crate) async fn handle(
    shared: Arc<Shared>,
    conn: Arc<ConnCtx>,
    req: Request<Incoming>,
) -> Result<Response<ResponseBody>, Infallible> {
    let (mut parts, body) = req.into_parts();
    let mut resp = respond(&shared, &conn, &mut parts, Some(body)).await;
    // hyper writes the head from the map.
    crate::body::materialize_headers(&mut resp, ResponseBody::take_raw_headers);
    Ok(resp)
}

/// The request path for both servers (hyper's, and weir's own HTTP/1.1
/// loop, which passes `None` for a request without a body). Arguments are
/// borrowed: an async fn keeps a moved argument twice in its future
/// (rust-lang/rust#62958), and this one is built per request. `parts` may
/// be left empty (when hyper's client took the request).
pub(crate) async fn respond(
    shared: &Shared,
    conn: &Arc<ConnCtx>,
    parts: &mut http::request::Parts,
    body: Option<Incoming>,
) -> Response<ResponseBody> {
    let started = Instant::now();
    let mut guard = RequestGuard::new(conn.clone());
    let method = shared.access_log.is_some().then(|| (parts.method.clone(), parts.uri.clone()));
    let snap = shared.snapshot.load_full();
    let mut outcome = Outcome { route: None, backend: None, side: None, upstream: None, stats: None, error: None };
    let result = if guard.listener_in_flight >= snap.config.limits.max_requests_in_flight {
        Err(ProxyError::Overloaded)
    } else {
        forward(shared, &snap, conn, parts, body, &mut guard, &mut outcome).await
    };
    if let (true, Some(stats)) = (snap.config.telemetry.record, outcome.stats) {
        let (class, error) = match &result {
            Ok(resp) => (CodeClass::of_status(resp.status().as_u16()), None),
            Err(ProxyError::Upstream(k)) => (CodeClass::Error, Some(*k)),
            Err(e) => (CodeClass::of_status(e.status().as_u16()), None),
        };
        guard.set_record(Record { stats: stats.clone(), class, error, latency: started.elapsed() });
    }
    let resp = match result {
        Ok(resp) => {
            let (parts, body) = resp.into_parts();
            Response::from_parts(parts, ResponseBody::upstream(body, guard))
        }
        Err(e) => {
            outcome.error = Some(e);
            rescue(e, guard)
        }
    };
    if let (Some(log), Some((method, uri))) = (&shared.access_log, method) {
        log.record(conn, &method, &uri, resp.status(), started.elapsed(), &outcome);
    }
    resp
}

async fn forward<'s>(
    shared: &Shared,
    snap: &'s crate::snapshot::Snapshot,
    conn: &ConnCtx,
    parts: &mut http::request::Parts,
    body: Option<Incoming>,
    guard: &mut RequestGuard,
    outcome: &mut Outcome<'s>,
) -> Result<Response<FromUpstream>, ProxyError> {
    // RFC 9112 §6.3: for a request with both Transfer-Encoding and
    // Content-Length, hyper has already removed Content-Length, framed the
    // body by the chunked coding alone and marked the connection to close
    // after the response — the RFC's second option. What is forwarded below
    // is therefore unambiguous, and nothing after the body is ever read as
    // another request.

    // RFC 9112 §3.2: an HTTP/1.1 request carries exactly one Host.
    if parts.version == Version::HTTP_11 {
        let mut hosts = parts.headers.get_all(header::HOST).iter();
        match (hosts.next(), hosts.next()) {
            (None, _) => return Err(ProxyError::BadRequest("weir: HTTP/1.1 request without Host\n")),
            (Some(_), Some(_)) => return Err(ProxyError::BadRequest("weir: more than one Host header\n")),
            _ => {}
        }
    }
    match snap.config.limits.headers_with_underscores {
        Underscores::Allow => {}
        policy => {
            if parts.headers.keys().any(|k| k.as_str().contains('_')) {
                if policy == Underscores::Reject {
                    return Err(ProxyError::BadRequest("weir: header name with an underscore\n"));
                }
                let names: Vec<_> = parts.headers.keys().filter(|k| k.as_str().contains('_')).cloned().collect();
                for n in names {
                    parts.headers.remove(n);
                }
            }
        }
    }

    let host_value = parts
        .headers
        .get(header::HOST)
        .cloned()
        .or_else(|| parts.uri.authority().and_then(|a| HeaderValue::from_str(a.as_str()).ok()));
    let host = host_value.as_ref().and_then(|h| h.to_str().ok());
    let route = snap.routes.find(host, parts.uri.path()).ok_or(ProxyError::NoRoute)?;
    outcome.route = Some(&route.name);
    // A genuine synthetic tag steers the request and is recorded apart; any
    // other value of the header is dropped.
    let synthetic = parts.headers.remove(&crate::synthetic::HEADER).and_then(|v| shared.synthetic.side_of(&v));
    let side = match synthetic {
        Some(side) if route.canary.is_some() || side == Side::Stable => side,
        _ => route.select(&parts.headers),
    };
    outcome.side = Some(side);
    let backend = route.backend(side);
    outcome.stats = if synthetic.is_some() { route.synthetic_stats(side) } else { route.stats(side) };
    outcome.backend = Some(&backend.name);
    let fault = crate::upstream::fault::decide(&backend.fault);
    if let Some(delay) = fault.delay {
        // Boxed, as are the other rare or hyper-only awaits below: the
        // future of this function is moved (copied) into place once per
        // request, so its size should be that of the common path.
        Box::pin(tokio::time::sleep(delay)).await;
    }
    if let Some(status) = fault.abort {
        return Err(ProxyError::Injected(status));
    }
    let endpoint = backend.pick().ok_or(ProxyError::Upstream(UpstreamErrorKind::Unavailable))?;

    // RFC 9112 §7.1: a chunked body is forwarded only once its first chunk
    // has parsed, so a malformed chunk line is a 400 and close with nothing
    // sent upstream (a later bad chunk aborts the upstream request).
    let mut body = match body {
        Some(b) => UpstreamBody::incoming(b, snap.timeouts.body_read),
        None => UpstreamBody::bytes(bytes::Bytes::new()),
    };
    if parts.headers.contains_key(header::TRANSFER_ENCODING) && !http_body::Body::is_end_stream(&body) {
        body.prefetch().await?;
    }
    let upgrade = parts.version == Version::HTTP_11 && headers::is_upgrade_request(&parts.headers);
    headers::strip_hop_by_hop(&mut parts.headers, upgrade);
    headers::add_forwarded(&mut parts.headers, &conn.peer_ip, host_value.clone(), conn.tls);
    if synthetic.is_some() {
        parts.headers.insert(crate::synthetic::HEADER.clone(), HeaderValue::from_static("1"));
    }
    if !parts.headers.contains_key(header::HOST) {
        if let Some(h) = host_value {
            parts.headers.insert(header::HOST, h);
        }
    }
    if let Some(name) = &route.variant_header {
        let v = match side {
            weir_control::split::Side::Stable => STABLE.clone(),
            weir_control::split::Side::Canary => CANARY.clone(),
        };
        parts.headers.insert(name.clone(), v);
    }

    // hyper's client needs the upstream's absolute URI; weir's own client
    // (body-less requests to plain backends, see below) only the path.
    if backend.client.is_some() || upgrade || !http_body::Body::is_end_stream(&body) {
        parts.uri = backend
            .uri(endpoint.endpoint(), std::mem::take(&mut parts.uri).into_parts().path_and_query)
            .ok_or(ProxyError::BadRequest("weir: invalid request target\n"))?;
    }
    parts.version = Version::HTTP_11;
    outcome.upstream = Some(endpoint.endpoint().addr);
    guard.set_endpoint(endpoint);

    // Shadow: copy a share of stable's requests to the canary (see shadow.rs).
    let mut shadow_tx = None;
    let up_body = match (&route.shadow, side, synthetic, upgrade) {
        (Some(cfg), Side::Stable, None, false) => match crate::shadow::wanted(cfg, &parts.method, &parts.headers) {
            Some(len) => {
                // A small declared body is read once and sent to both.
                let bytes = if len == 0 {
                    bytes::Bytes::new()
                } else {
                    let limited = http_body_util::Limited::new(body, cfg.max_body as usize);
                    match Box::pin(http_body_util::BodyExt::collect(limited)).await {
                        Ok(c) => c.to_bytes(),
                        Err(_) => return Err(ProxyError::BadRequest("weir: could not read the request body\n")),
                    }
                };
                shadow_tx = crate::shadow::spawn(shared, route, cfg, parts, bytes.clone());
                UpstreamBody::bytes(bytes)
            }
            None => body,
        },
        _ => body,
    };

    // A request without a body may be sent again (see `retry_target`); one
    // with a body never is (some of it may have left). weir's own client
    // takes body-less requests to plain HTTP/1.1 backends (upstream/h1.rs);
    // it only borrows the request, so a retry sends the same one again.
    // Each path is its own function, and hyper's is boxed, so this
    // function's future stays the size of the common path.
    let body_less = !upgrade && http_body::Body::is_end_stream(&up_body);
    let idempotent = parts.method.is_idempotent();
    let retry = Retry { allowed: body_less && (backend.len() > 1 || idempotent), idempotent };
    let mut downstream_upgrade = None;
    let sent = if body_less && backend.client.is_none() {
        drop(up_body);
        send_own_path(shared, snap, &route.name, backend, parts, guard, outcome, retry).await
    } else {
        // hyper's client takes the request; the caller keeps an empty head.
        let parts = std::mem::replace(parts, Request::new(()).into_parts().0);
        let mut up_req = Request::from_parts(parts, up_body);
        if upgrade {
            // The request's upgrade handle was moved into `up_req` with its
            // extensions; take it back before the request is sent.
            downstream_upgrade = up_req.extensions_mut().remove::<hyper::upgrade::OnUpgrade>();
        }
        Box::pin(send_hyper_path(shared, snap, &route.name, backend, up_req, guard, outcome, retry)).await
    };
    let mut resp = sent?;
    if let Some(tx) = shadow_tx {
        crate::body::materialize_headers(&mut resp, FromUpstream::take_raw_headers);
        let header =
            route.shadow.as_ref().and_then(|c| c.compare_header.as_deref()).and_then(|h| resp.headers().get(h));
        let _ = tx.send(Some((resp.status(), header.cloned())));
    }

    if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
        let Some(downstream) = downstream_upgrade else {
            return Err(ProxyError::Upstream(UpstreamErrorKind::Protocol));
        };
        let upstream = hyper::upgrade::on(&mut resp);
        tokio::spawn(async move {
            match tokio::try_join!(downstream, upstream) {
                Ok((d, u)) => {
                    let (mut d, mut u) = (TokioIo::new(d), TokioIo::new(u));
                    if let Err(e) = tokio::io::copy_bidirectional(&mut d, &mut u).await {
                        tracing::debug!("upgraded tunnel ended: {e}");
                    }
                }
                Err(e) => tracing::debug!("upgrade failed: {e}"),
            }
        });
        return Ok(resp);
    }
    headers::strip_hop_by_hop(resp.headers_mut(), false);
    Ok(resp)
}

/// Whether a failed request may be sent once more.
#[derive(Clone, Copy)]
struct Retry {
    /// The request has no body, and there is another address or the method
    /// is idempotent.
    allowed: bool,
    idempotent: bool,
}

/// Where to send a request again, if at all: on another address after a
/// failed connect (nothing was sent), or after a reset for an idempotent
/// method (RFC 9110 §9.2.2: an upstream restarting closes pooled
/// connections under requests just written).
fn retry_target(
    sent: &Result<Response<FromUpstream>, ProxyError>,
    retry: Retry,
    backend: &crate::upstream::Backend,
    guard: &RequestGuard,
) -> Option<(UpstreamErrorKind, crate::upstream::EndpointGuard)> {
    match sent {
        Err(ProxyError::Upstream(k @ (UpstreamErrorKind::Connect | UpstreamErrorKind::ConnectTimeout)))
            if retry.allowed =>
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
fn start_retry(
    shared: &Shared,
    route: &str,
    backend: &crate::upstream::Backend,
    kind: UpstreamErrorKind,
    ep: &crate::upstream::EndpointGuard,
    outcome: &mut Outcome<'_>,
) {
    shared.telemetry.retried(route, &backend.name, kind);
    outcome.upstream = Some(ep.endpoint().addr);
}

/// weir's own client, once more on failure if `retry` allows: the request
/// is only borrowed, so a retry sends the same one.
#[allow(clippy::too_many_arguments)]
async fn send_own_path<'s>(
    shared: &Shared,
    snap: &crate::snapshot::Snapshot,
    route: &str,
    backend: &crate::upstream::Backend,
    parts: &http::request::Parts,
    guard: &mut RequestGuard,
    outcome: &mut Outcome<'s>,
    retry: Retry,
) -> Result<Response<FromUpstream>, ProxyError> {
    let Some(ep) = guard.endpoint_arc() else {
        return Err(ProxyError::Upstream(UpstreamErrorKind::Unavailable));
    };
    let mut sent = send_own(snap, backend, ep, route, parts).await;
    report(backend, guard, &sent);
    if let Some((kind, ep)) = retry_target(&sent, retry, backend, guard) {
        start_retry(shared, route, backend, kind, &ep, outcome);
        sent = send_own(snap, backend, ep.arc(), route, parts).await;
        guard.set_endpoint(ep);
        report(backend, guard, &sent);
    }
    sent
}

/// hyper's client, once more on failure if `retry` allows (from a copy of
/// the request kept for that: hyper's client consumes what it sends).
#[allow(clippy::too_many_arguments)]
async fn send_hyper_path<'s>(
    shared: &Shared,
    snap: &crate::snapshot::Snapshot,
    route: &str,
    backend: &crate::upstream::Backend,
    req: Request<UpstreamBody>,
    guard: &mut RequestGuard,
    outcome: &mut Outcome<'s>,
    retry: Retry,
) -> Result<Response<FromUpstream>, ProxyError> {
    if guard.endpoint().is_none() {
        return Err(ProxyError::Upstream(UpstreamErrorKind::Unavailable));
    }
    let copy =
        retry.allowed.then(|| (req.method().clone(), req.uri().path_and_query().cloned(), req.headers().clone()));
    let mut sent = send(snap, backend, route, req).await;
    report(backend, guard, &sent);
    if let (Some((kind, ep)), Some((method, path, headers))) = (retry_target(&sent, retry, backend, guard), copy) {
        start_retry(shared, route, backend, kind, &ep, outcome);
        let uri = backend.uri(ep.endpoint(), path).ok_or(ProxyError::BadRequest("weir: invalid request target\n"))?;
        let mut req = Request::new(UpstreamBody::bytes(bytes::Bytes::new()));
        *req.method_mut() = method;
        *req.uri_mut() = uri;
        *req.headers_mut() = headers;
        sent = send(snap, backend, route, req).await;
        guard.set_endpoint(ep);
        report(backend, guard, &sent);
    }
    sent
}

/// Sends a body-less request to a plain HTTP/1.1 backend through weir's
/// own client (`upstream/h1.rs`), within `timeouts.upstream_response`.
async fn send_own(
    snap: &crate::snapshot::Snapshot,
    backend: &crate::upstream::Backend,
    ep: &Arc<crate::upstream::Endpoint>,
    route: &str,
    req: &http::request::Parts,
) -> Result<Response<FromUpstream>, ProxyError> {
    let path = req.uri.path_and_query().map_or("/", |p| p.as_str());
    let t = &snap.timeouts;
    match crate::upstream::h1::send(ep, &req.method, path, &req.headers, t.connect, t.upstream_response).await {
        Err(kind) => {
            tracing::debug!(route, backend = %backend.name, kind = kind.as_str(), "upstream error");
            Err(ProxyError::Upstream(kind))
        }
        Ok(resp) => Ok(resp.map(FromUpstream::Weir)),
    }
}

/// Sends through hyper's client within `timeouts.upstream_response`.
async fn send(
    snap: &crate::snapshot::Snapshot,
    backend: &crate::upstream::Backend,
    route: &str,
    req: Request<UpstreamBody>,
) -> Result<Response<FromUpstream>, ProxyError> {
    match tokio::time::timeout(snap.timeouts.upstream_response, backend.send(&snap.client, req)).await {
        Err(_elapsed) => Err(ProxyError::Upstream(UpstreamErrorKind::Timeout)),
        Ok(Err(e)) => {
            // A client that stops sending or cuts its body short must not
            // count against the upstream (nor eject it, nor fail a gate).
            if let Some(fault) = crate::body::client_fault(&e) {
                return Err(fault);
            }
            let kind = crate::upstream::error::classify(&e);
            tracing::debug!(route, backend = %backend.name, kind = kind.as_str(), "upstream error: {e:#}");
            Err(ProxyError::Upstream(kind))
        }
        Ok(Ok(resp)) => Ok(resp.map(FromUpstream::Hyper)),
    }
}

/// Feeds passive outlier detection: upstream failures and 5xx count.
fn report(backend: &crate::upstream::Backend, guard: &RequestGuard, sent: &Result<Response<FromUpstream>, ProxyError>) {
    if let Some(ep) = guard.endpoint() {
        let failed = match sent {
            Ok(resp) => resp.status().is_server_error(),
            Err(ProxyError::Upstream(_)) => true,
            Err(_) => false,
        };
        backend.report(ep, failed);
    }
}
