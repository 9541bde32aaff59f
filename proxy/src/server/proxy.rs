//! The request path, shared by both servers (hyper's, and weir's own
//! HTTP/1.1 loop): [`respond`] runs the phases of [`forward`] and turns the
//! outcome into the response, its record and its access-log line.
//!
//! The phases, in order (as pingora names its request phases):
//!
//! | phase | what it decides | file |
//! | --- | --- | --- |
//! | check | the request is well-formed for a proxy (one Host, underscores) | `phases.rs` |
//! | route | route, side (synthetic tag, force, cohort, weight), backend | `phases.rs` |
//! | fault | an injected delay or abort | `phases.rs` |
//! | body | the request body, its first chunk validated | `phases.rs` |
//! | rewrite | hop-by-hop fields, X-Forwarded-*, Host, variant header, URI | `phases.rs` |
//! | shadow | a copy of the request for the canary | `phases.rs` |
//! | send | weir's own client or hyper's, one retry where safe | `send.rs` |
//! | response | the shadow comparison, an upgrade's tunnel, hop-by-hop fields | `phases.rs` |

use std::convert::Infallible;
use std::sync::Arc;

use http::{Request, Response};
use hyper::body::Incoming;
use tokio::time::Instant;

use super::error::ProxyError;
use super::grpc;
use super::phases;
use super::request::{ConnCtx, Outcome, Record, RequestGuard};
use super::rescue::rescue;
use super::response::ResponseBody;
use super::send::{self, Leg};
use crate::dataplane::DataPlane;
use crate::snapshot::Snapshot;
use crate::upstream::body::{materialize_headers, FromUpstream};
use crate::upstream::UpstreamErrorKind;

/// hyper service entry point: never fails; failures become responses.
pub(crate) async fn handle(
    dp: Arc<DataPlane>,
    conn: Arc<ConnCtx>,
    req: Request<Incoming>,
) -> Result<Response<ResponseBody>, Infallible> {
    let (mut parts, body) = req.into_parts();
    let http1 = parts.version <= http::Version::HTTP_11;
    let mut resp = respond(&dp, &conn, &mut parts, Some(body)).await;
    // hyper writes the head from the map.
    materialize_headers(&mut resp, ResponseBody::take_raw_headers);
    if http1 && dp.leaving.load(std::sync::atomic::Ordering::Relaxed) {
        // `timeouts.drain_delay`: the client's next request goes on a new
        // connection, which a load balancer no longer sends here (hyper
        // closes the connection after this response).
        resp.headers_mut().insert(http::header::CONNECTION, http::HeaderValue::from_static("close"));
    }
    Ok(resp)
}

/// The request path for both servers (weir's own HTTP/1.1 loop passes
/// `None` for a request without a body). Arguments are borrowed: an async
/// fn keeps a moved argument twice in its future (rust-lang/rust#62958),
/// and this one is built per request. `parts` may be left empty (when
/// hyper's client took the request).
pub(crate) async fn respond(
    dp: &DataPlane,
    conn: &Arc<ConnCtx>,
    parts: &mut http::request::Parts,
    body: Option<Incoming>,
) -> Response<ResponseBody> {
    let started = Instant::now();
    let mut guard = RequestGuard::new(conn.clone());
    let is_grpc = parts.method == http::Method::POST && grpc::is_grpc(&parts.headers);
    let snap = dp.load_full();
    let tracing = dp.otel.as_ref().map(|o| (o, snap.config.tracing.as_ref().unwrap_or(&o.started)));
    let trace = tracing.map(|(_, t)| crate::otel::TraceCtx::start(&parts.headers, t.sample_ratio, t.follow_caller));
    let method = (dp.access_log.is_some() || trace.is_some()).then(|| (parts.method.clone(), parts.uri.clone()));
    let wall = trace.map(|_| std::time::SystemTime::now());
    let mut outcome = Outcome {
        route: None,
        backend: None,
        version: None,
        side: None,
        upstream: None,
        stats: None,
        error: None,
        pending: None,
        failures: None,
        is_grpc,
        trace,
        retried: false,
        shadowed: false,
        synthetic: false,
    };
    let result = if guard.listener_in_flight >= snap.config.limits.max_requests_in_flight {
        Err(ProxyError::Overloaded)
    } else {
        forward(dp, &snap, conn, parts, body, &mut guard, &mut outcome).await
    };
    // Answered (or failed): no longer pending.
    outcome.pending = None;
    if let (true, Some(stats), Some(failures)) = (snap.config.telemetry.record, outcome.stats, outcome.failures) {
        let (recorded, awaiting_status) = grpc::classify(&result, is_grpc, failures);
        guard.set_record(Record {
            stats: stats.clone(),
            outcome: recorded,
            latency: started.elapsed(),
            awaiting_status,
        });
    }
    let resp = match result {
        Ok(resp) => {
            let (parts, body) = resp.into_parts();
            Response::from_parts(parts, ResponseBody::upstream(body, guard))
        }
        Err(e) => {
            outcome.error = Some(e);
            rescue(e, guard, is_grpc)
        }
    };
    if let (Some((otel, cfg)), Some(t), Some(wall), Some((method, uri))) = (tracing, &outcome.trace, wall, &method) {
        let status = resp.status().as_u16();
        let finished = crate::otel::Finished {
            method,
            path: uri.path(),
            status,
            route: outcome.route,
            side: outcome.side,
            backend: outcome.backend,
            release: outcome.version,
            upstream: outcome.upstream,
            error: outcome.error.map(|e| e.kind()),
            // As the route's telemetry judges it: the client's own faults
            // are not the backend's.
            failed: match outcome.error {
                Some(ProxyError::BadRequest(_) | ProxyError::BodyTimeout | ProxyError::NoRoute) => false,
                Some(_) => true,
                None => outcome.failures.is_some_and(|c| c.http_failed(status)),
            },
            retried: outcome.retried,
            shadowed: outcome.shadowed,
            synthetic: outcome.synthetic,
            grpc: is_grpc,
        };
        otel.finish(cfg, t, wall, started.elapsed(), &finished);
    }
    if let (Some(log), Some((method, uri))) = (&dp.access_log, &method) {
        log.record(conn, method, uri, resp.status(), started.elapsed(), &outcome);
    }
    resp
}

/// The phases of one request (see the module doc), from a checked request
/// to the upstream's response.
async fn forward<'s>(
    dp: &DataPlane,
    snap: &'s Arc<Snapshot>,
    conn: &ConnCtx,
    parts: &mut http::request::Parts,
    body: Option<Incoming>,
    guard: &mut RequestGuard,
    outcome: &mut Outcome<'s>,
) -> Result<Response<FromUpstream>, ProxyError> {
    phases::check(snap, parts)?;
    let (target, host) = phases::route(&dp.synthetic_tag, snap, parts, outcome)?;
    let is_grpc = outcome.is_grpc;
    if is_grpc {
        guard.expect_answer(snap.config.telemetry.record, outcome, &parts.headers);
    }
    phases::fault(target.backend).await?;
    let endpoint = target.backend.pick().ok_or(ProxyError::Upstream(UpstreamErrorKind::Unavailable))?;
    let body = phases::body(snap, parts, body, is_grpc).await?;
    let upgrade = phases::rewrite(conn, &target, host, parts, &body, endpoint.endpoint())?;
    if let Some(t) = &outcome.trace {
        parts.headers.insert(crate::otel::TRACEPARENT.clone(), t.traceparent());
        if t.parent.is_none() {
            // A new trace: the caller's tracestate was another trace's.
            parts.headers.remove(crate::otel::TRACESTATE);
        }
    }
    outcome.upstream = Some(endpoint.endpoint().addr);
    guard.set_endpoint(endpoint);
    let (body, shadow) = phases::shadow(dp, snap, &target, parts, body, upgrade).await?;
    outcome.shadowed = shadow.is_some();
    let leg = Leg { telemetry: &dp.telemetry, snap, route: &target.route.name, backend: target.backend };
    let (own_client, retry) = send::plan(target.backend, parts, &body, upgrade);
    let mut downstream_upgrade = None;
    let sent = if own_client {
        drop(body);
        send::own(&leg, parts, guard, outcome, retry).await
    } else {
        let (req, upgrade) = send::hyper_request(parts, body, upgrade);
        downstream_upgrade = upgrade;
        Box::pin(send::hyper(&leg, req, guard, outcome, retry)).await
    };
    phases::response(&target, sent?, shadow, downstream_upgrade)
}
