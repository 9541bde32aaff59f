//! The phases of the request path before and after the upstream is asked
//! (see `proxy.rs` for their order). Each is small and named for what it
//! decides; the rare or hyper-only awaits are boxed, so that the future of
//! `forward`, moved into place once per request, stays the size of the
//! common path.

use std::sync::Arc;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Response, StatusCode, Version};
use hyper::body::Incoming;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::sync::oneshot;
use weir_control::config::Underscores;
use weir_control::split::Side;

use super::error::ProxyError;
use super::headers;
use super::request::{ConnCtx, Outcome};
use super::shadow::{self, StableAnswer};
use super::synthetic::{SyntheticTag, HEADER as SYNTHETIC};
use crate::dataplane::DataPlane;
use crate::route::Route;
use crate::snapshot::Snapshot;
use crate::upstream::body::{materialize_headers, FromUpstream, UpstreamBody};
use crate::upstream::{Backend, Endpoint, UpstreamErrorKind};

static STABLE: HeaderValue = HeaderValue::from_static("stable");
static CANARY: HeaderValue = HeaderValue::from_static("canary");

/// Where a request goes, as decided by [`route`]. Kept until the response
/// (the shadow comparison reads the route), so it holds only references.
pub(super) struct Target<'s> {
    pub(super) route: &'s Route,
    pub(super) side: Side,
    pub(super) backend: &'s Arc<Backend>,
    /// A genuine synthetic request (steered, and recorded apart).
    pub(super) synthetic: bool,
}

/// **check**: what makes a request unfit to forward.
pub(super) fn check(snap: &Snapshot, parts: &mut http::request::Parts) -> Result<(), ProxyError> {
    // RFC 9112 §6.3: for a request with both Transfer-Encoding and
    // Content-Length, hyper has already removed Content-Length, framed the
    // body by the chunked coding alone and marked the connection to close
    // after the response — the RFC's second option. What is forwarded
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
    Ok(())
}

/// **route**: the route for host and path, and the side: a genuine
/// synthetic tag steers (any other value of its header is dropped), else
/// the route's own selection (force, cohort, weight). Also returns the
/// request's host (Host, else the URI's authority), for [`rewrite`].
pub(super) fn route<'s>(
    tag: &SyntheticTag,
    snap: &'s Snapshot,
    parts: &mut http::request::Parts,
    outcome: &mut Outcome<'s>,
) -> Result<(Target<'s>, Option<HeaderValue>), ProxyError> {
    let host = parts
        .headers
        .get(header::HOST)
        .cloned()
        .or_else(|| parts.uri.authority().and_then(|a| HeaderValue::from_str(a.as_str()).ok()));
    let host_str = host.as_ref().and_then(|h| h.to_str().ok());
    let route = snap.routes.find(host_str, parts.uri.path()).ok_or(ProxyError::NoRoute)?;
    outcome.route = Some(&route.name);
    let synthetic = parts.headers.remove(&SYNTHETIC).and_then(|v| tag.side_of(&v));
    let side = match synthetic {
        Some(side) if route.canary.is_some() || side == Side::Stable => side,
        _ => route.select(&parts.headers),
    };
    outcome.side = Some(side);
    let backend = route.backend(side);
    outcome.stats = if synthetic.is_some() { route.synthetic_stats(side) } else { route.stats(side) };
    outcome.failures = Some(&route.failures);
    if snap.config.telemetry.record {
        // Sent from here on: unanswered until `respond` has the answer.
        outcome.pending = outcome.stats.map(|s| s.begin(crate::clock::coarse_ms() / 1000));
    }
    outcome.backend = Some(&backend.name);
    outcome.version = backend.version.as_deref();
    outcome.synthetic = synthetic.is_some();
    Ok((Target { route, side, backend, synthetic: synthetic.is_some() }, host))
}

/// **fault**: an injected delay (then the request goes on) or abort.
pub(super) async fn fault(backend: &Backend) -> Result<(), ProxyError> {
    let fault = crate::upstream::fault::decide(&backend.fault);
    if let Some(delay) = fault.delay {
        Box::pin(tokio::time::sleep(delay)).await;
    }
    match fault.abort {
        Some(status) => Err(ProxyError::Injected(status)),
        None => Ok(()),
    }
}

/// **body**: the request body to send upstream. RFC 9112 §7.1: a chunked
/// body is forwarded only once its first chunk has parsed, so a malformed
/// chunk line is a 400 and close with nothing sent upstream (a later bad
/// chunk aborts the upstream request). A gRPC call's body is a stream of
/// messages that may rightly pause (a watch, a chat): `timeouts.body_read`
/// does not apply to it (its deadline is the client's `grpc-timeout`).
pub(super) async fn body(
    snap: &Snapshot,
    parts: &http::request::Parts,
    body: Option<Incoming>,
    is_grpc: bool,
) -> Result<UpstreamBody, ProxyError> {
    let mut body = match body {
        Some(b) => UpstreamBody::incoming(b, (!is_grpc).then_some(snap.timeouts.body_read)),
        None => UpstreamBody::bytes(Bytes::new()),
    };
    if parts.headers.contains_key(header::TRANSFER_ENCODING) && !http_body::Body::is_end_stream(&body) {
        body.prefetch().await?;
    }
    Ok(body)
}

/// **rewrite**: the request as the upstream gets it: hop-by-hop fields
/// removed (an upgrade keeps its own), X-Forwarded-*, the synthetic mark,
/// Host, the variant header, and the absolute URI where hyper's client
/// needs it. Returns whether the request asks to switch protocols.
pub(super) fn rewrite(
    conn: &ConnCtx,
    target: &Target<'_>,
    host: Option<HeaderValue>,
    parts: &mut http::request::Parts,
    body: &UpstreamBody,
    endpoint: &Endpoint,
) -> Result<bool, ProxyError> {
    let upgrade = parts.version == Version::HTTP_11 && headers::is_upgrade_request(&parts.headers);
    headers::strip_hop_by_hop(&mut parts.headers, upgrade, target.backend.client.is_some());
    headers::add_forwarded(&mut parts.headers, &conn.peer_ip, host.clone(), conn.tls);
    if target.synthetic {
        parts.headers.insert(SYNTHETIC.clone(), HeaderValue::from_static("1"));
    }
    if !parts.headers.contains_key(header::HOST) {
        if let Some(h) = host {
            parts.headers.insert(header::HOST, h);
        }
    }
    if let Some(name) = &target.route.variant_header {
        let v = match target.side {
            Side::Stable => STABLE.clone(),
            Side::Canary => CANARY.clone(),
        };
        parts.headers.insert(name.clone(), v);
    }
    // hyper's client needs the upstream's absolute URI; weir's own client
    // (body-less requests to plain backends, see `send.rs`) only the path.
    let backend = target.backend;
    if backend.client.is_some() || upgrade || !http_body::Body::is_end_stream(body) {
        parts.uri = backend
            .uri(endpoint, std::mem::take(&mut parts.uri).into_parts().path_and_query)
            .ok_or(ProxyError::BadRequest("weir: invalid request target\n"))?;
    }
    parts.version = Version::HTTP_11;
    Ok(upgrade)
}

/// **shadow**: copies a share of stable's requests to the canary (see
/// `shadow.rs`); a small declared body is read once and sent to both.
/// Returns the body to send, and where stable's answer goes for the
/// comparison.
pub(super) async fn shadow(
    dp: &DataPlane,
    snap: &Arc<Snapshot>,
    target: &Target<'_>,
    parts: &http::request::Parts,
    body: UpstreamBody,
    upgrade: bool,
) -> Result<(UpstreamBody, Option<oneshot::Sender<StableAnswer>>), ProxyError> {
    let cfg = match (&target.route.shadow, target.side, target.synthetic, upgrade) {
        (Some(cfg), Side::Stable, false, false) => cfg,
        _ => return Ok((body, None)),
    };
    // Without Content-Length: HTTP/1 has no body then (RFC 9112 §6.3; it
    // came as an empty one), an HTTP/2 request may still carry one.
    let done = http_body::Body::is_end_stream(&body);
    let Some(len) = shadow::wanted(cfg, &parts.method, &parts.headers, done) else { return Ok((body, None)) };
    let bytes = if len == 0 {
        Bytes::new()
    } else {
        let limited = http_body_util::Limited::new(body, cfg.max_body as usize);
        match Box::pin(http_body_util::BodyExt::collect(limited)).await {
            Ok(c) => c.to_bytes(),
            Err(_) => return Err(ProxyError::BadRequest("weir: could not read the request body\n")),
        }
    };
    let tx = shadow::spawn(&dp.shadows, &dp.telemetry, snap, target.route, cfg, parts, bytes.clone());
    Ok((UpstreamBody::bytes(bytes), tx))
}

/// **response**: stable's answer to the shadow comparison, the tunnel of
/// an accepted upgrade, and the response's hop-by-hop fields removed.
pub(super) fn response(
    target: &Target<'_>,
    mut resp: Response<FromUpstream>,
    shadow: Option<oneshot::Sender<StableAnswer>>,
    downstream_upgrade: Option<OnUpgrade>,
) -> Result<Response<FromUpstream>, ProxyError> {
    if let Some(tx) = shadow {
        materialize_headers(&mut resp, FromUpstream::take_raw_headers);
        let compare = target.route.shadow.as_ref().and_then(|c| c.compare_header.as_deref());
        let header = compare.and_then(|h| resp.headers().get(h));
        let _ = tx.send(Some((resp.status(), header.cloned())));
    }
    if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
        let Some(downstream) = downstream_upgrade else {
            return Err(ProxyError::Upstream(UpstreamErrorKind::Protocol));
        };
        let upstream = hyper::upgrade::on(&mut resp);
        tokio::spawn(tunnel(downstream, upstream));
        return Ok(resp);
    }
    headers::strip_hop_by_hop(resp.headers_mut(), false, false);
    Ok(resp)
}

/// Copies bytes both ways between the two upgraded connections.
async fn tunnel(downstream: OnUpgrade, upstream: OnUpgrade) {
    match tokio::try_join!(downstream, upstream) {
        Ok((d, u)) => {
            let (mut d, mut u) = (TokioIo::new(d), TokioIo::new(u));
            if let Err(e) = tokio::io::copy_bidirectional(&mut d, &mut u).await {
                tracing::debug!("upgraded tunnel ended: {e}");
            }
        }
        Err(e) => tracing::debug!("upgrade failed: {e}"),
    }
}
