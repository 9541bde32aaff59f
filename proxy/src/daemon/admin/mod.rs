//! The admin listener: health, metrics, the JSON API, and the dashboard.
//! Never served on the data port; loopback by default.
//!
//! | endpoint | |
//! | --- | --- |
//! | `GET /healthz`, `GET /readyz` | liveness, readiness |
//! | `GET /metrics` | Prometheus exposition |
//! | `GET /api/v1/routes` | routes, weights, rollouts, verdicts, live numbers |
//! | `GET /api/v1/events[?route=R]` | the audit trail |
//! | `GET /api/v1/dashboard?since=S&events=N` | the dashboard's one poll: routes, fleet, new events, chart points |
//! | `POST /api/v1/routes/{name}/pause\|resume\|promote\|abort` | manual control (bearer token when configured); `promote?full=true` goes straight to 100 % |
//! | `GET /` | the live dashboard |

mod api;
pub(crate) mod auth;
mod dashboard;
pub(crate) mod guard;
pub(crate) mod reply;

use std::convert::Infallible;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use std::net::SocketAddr;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_util::task::TaskTracker;

use self::reply::{json, json_error, text, text_owned};
use super::context::Daemon;
use crate::server::listener::accept;
use crate::tls::ListenerTls;

/// Serves the admin listener until shutdown.
pub(crate) async fn serve(
    daemon: Arc<Daemon>,
    listener: TcpListener,
    mut shutdown: watch::Receiver<bool>,
    tracker: TaskTracker,
) {
    let builder = Arc::new(auto::Builder::new(TokioExecutor::new()));
    let mut tls = ListenerTls::new(daemon.dp.load().admin_tls.as_ref());
    loop {
        let (stream, peer) = tokio::select! {
            _ = shutdown.changed() => return,
            pair = accept(&listener, "admin") => pair,
        };
        let (daemon, builder, shutdown) = (daemon.clone(), builder.clone(), shutdown.clone());
        let acceptor = tls.next(daemon.dp.load().admin_tls.as_ref());
        tracker.spawn(async move {
            match acceptor {
                None => serve_conn(daemon, builder, stream, peer, shutdown, false).await,
                Some(acceptor) => {
                    let timeout = daemon.dp.load().timeouts.tls_handshake;
                    if let Some(tls) = crate::tls::handshake(&acceptor, stream, timeout, peer).await {
                        serve_conn(daemon, builder, tls, peer, shutdown, true).await;
                    }
                }
            }
        });
    }
}

async fn serve_conn<S>(
    daemon: Arc<Daemon>,
    builder: Arc<auto::Builder<TokioExecutor>>,
    stream: S,
    peer: SocketAddr,
    shutdown: watch::Receiver<bool>,
    tls: bool,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    serve_http(&builder, stream, shutdown, move |req| {
        let daemon = daemon.clone();
        async move { route(&daemon, peer, tls, req).await }
    })
    .await;
}

/// Serves one HTTP/1.1 or HTTP/2 connection, each request answered by
/// `handle`, until it ends, or until shutdown, when it is closed
/// gracefully. The admin and OFREP listeners' connections.
pub(crate) async fn serve_http<S, H, F>(
    builder: &auto::Builder<TokioExecutor>,
    stream: S,
    mut shutdown: watch::Receiver<bool>,
    handle: H,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    H: Fn(Request<Incoming>) -> F + Send + Sync + 'static,
    F: std::future::Future<Output = Response<Full<Bytes>>> + Send + 'static,
{
    let svc = service_fn(move |req| {
        let answer = handle(req);
        async move { Ok::<_, Infallible>(answer.await) }
    });
    let conn = builder.serve_connection(TokioIo::new(stream), svc);
    tokio::pin!(conn);
    tokio::select! {
        _ = conn.as_mut() => {}
        _ = shutdown.changed() => {
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
        }
    }
}

/// `tls`: the connection came over `admin.tls`, where a rebound name cannot
/// reach weir (the browser would find the certificate is not the name's),
/// so its `Host` is not checked.
async fn route(daemon: &Arc<Daemon>, peer: SocketAddr, tls: bool, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let path = req.uri().path().to_string();
    // The probes say nothing worth protecting, and a probe configured
    // with a host name must not fail.
    let probe = path == "/healthz" || path == "/readyz";
    if !probe && !tls {
        if let Err(why) = guard::check_host(&req, &daemon.dp.load().config.admin.hosts) {
            if daemon.admin_failures.log_host() {
                tracing::warn!(%peer, %path, "admin: refused (logged once a minute): {why}");
            }
            return json_error(StatusCode::FORBIDDEN, &why);
        }
    }
    match (req.method(), path.as_str()) {
        (&Method::GET, "/healthz") => text(StatusCode::OK, "ok\n"),
        (&Method::GET, "/readyz") => {
            // Ready whatever the disk does: the warnings go in the body.
            let (status, first) = if daemon.ready.load(Ordering::Relaxed) {
                (StatusCode::OK, "ready\n")
            } else {
                (StatusCode::SERVICE_UNAVAILABLE, "not ready\n")
            };
            match readyz_warnings(daemon) {
                None => text(status, first),
                Some(warnings) => text_owned(status, format!("{first}{warnings}")),
            }
        }
        (&Method::GET, "/metrics") => {
            let mut r = Response::new(Full::new(Bytes::from(daemon.dp.telemetry.render())));
            r.headers_mut()
                .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"));
            r
        }
        (&Method::GET, "/" | "/index.html") => dashboard::page(),
        (&Method::GET, "/api/v1/routes") => json(StatusCode::OK, &api::routes(daemon, query(&req, "window"))),
        (&Method::GET, "/api/v1/events") => {
            let route = query(&req, "route");
            json(StatusCode::OK, &serde_json::json!({ "events": daemon.audit.events(route.as_deref()) }))
        }
        (&Method::GET, "/api/v1/dashboard") => {
            json(StatusCode::OK, &api::dashboard(daemon, query(&req, "since"), query(&req, "events")))
        }
        (&Method::GET, "/api/v1/backends") => json(StatusCode::OK, &api::backends(&daemon.dp)),
        (&Method::GET, "/api/v1/fleet") => api::fleet(daemon),
        (method, p) if p.starts_with("/api/v1/backends/") && p.ends_with("/fault") => {
            let name = &p["/api/v1/backends/".len()..p.len() - "/fault".len()];
            if method != Method::POST && method != Method::DELETE {
                let mut r = json_error(StatusCode::METHOD_NOT_ALLOWED, "use POST or DELETE");
                r.headers_mut().insert(header::ALLOW, HeaderValue::from_static("POST, DELETE"));
                return r;
            }
            if let Some(refused) = authorize(daemon, peer, &req, &path) {
                return refused;
            }
            if method == Method::DELETE {
                return api::set_fault(&daemon.dp, name, None);
            }
            let body = match http_body_util::Limited::new(req.into_body(), 64 * 1024).collect().await {
                Ok(b) => b.to_bytes(),
                Err(_) => return json_error(StatusCode::PAYLOAD_TOO_LARGE, "body too large or unreadable"),
            };
            api::set_fault(&daemon.dp, name, Some(&body))
        }
        (method, p) if p.starts_with("/api/v1/routes/") => {
            let rest = &p["/api/v1/routes/".len()..];
            let Some((name, action)) = rest.split_once('/') else {
                return json_error(StatusCode::NOT_FOUND, "no such admin endpoint");
            };
            if method != Method::POST {
                let mut r = json_error(StatusCode::METHOD_NOT_ALLOWED, "use POST");
                r.headers_mut().insert(header::ALLOW, HeaderValue::from_static("POST"));
                return r;
            }
            if let Some(refused) = authorize(daemon, peer, &req, &path) {
                return refused;
            }
            let full = query(&req, "full").is_some_and(|v| v == "true" || v == "1");
            api::act(daemon, name, action, full).await
        }
        _ => json_error(StatusCode::NOT_FOUND, "no such admin endpoint"),
    }
}

/// A mutating call's checks: same origin (for browsers), not an address
/// that guessed too many tokens (its token is not even compared), and the
/// bearer token when one is configured. The answer when refused.
fn authorize<B>(daemon: &Daemon, peer: SocketAddr, req: &Request<B>, path: &str) -> Option<Response<Full<Bytes>>> {
    if let Err(why) = guard::check_origin(req) {
        tracing::warn!(%peer, %path, "admin: {why}");
        return Some(json_error(StatusCode::FORBIDDEN, &why));
    }
    // A call without a token is not a guess.
    let guess = req.headers().contains_key(header::AUTHORIZATION);
    if let Some(secs) = daemon.admin_failures.blocked(peer.ip()).filter(|_| guess) {
        let mut r = json_error(StatusCode::TOO_MANY_REQUESTS, "too many wrong tokens from this address: wait");
        r.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(secs));
        return Some(r);
    }
    match auth::check(daemon, req) {
        Ok(()) => {
            if guess {
                daemon.admin_failures.succeeded(peer.ip());
            }
            None
        }
        Err(why) => {
            if guess && daemon.admin_failures.failed(peer.ip()) {
                tracing::warn!(
                    %peer,
                    "admin: {} wrong tokens within {:?}: refusing this address's tokens for that long",
                    guard::MAX_FAILURES,
                    guard::WINDOW
                );
            }
            Some(unauthorized(peer, path, why))
        }
    }
}

fn unauthorized(peer: SocketAddr, path: &str, why: &str) -> Response<Full<Bytes>> {
    tracing::warn!(%peer, %path, "admin: refused unauthenticated call ({why})");
    let mut r = json_error(StatusCode::UNAUTHORIZED, why);
    r.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer realm=\"weir\""));
    r
}

/// A query parameter's value (no percent-decoding: names are plain).
fn query(req: &Request<Incoming>, key: &str) -> Option<String> {
    req.uri().query()?.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        (k == key).then(|| v.to_string())
    })
}

/// What `/readyz` says besides ready: weir's own files failing to be
/// written (weir stays ready: serving must not stop because a disk is
/// full), and a state file that could not be read at start.
fn readyz_warnings(daemon: &Daemon) -> Option<String> {
    use std::fmt::Write;
    let mut out = String::new();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
    let state = daemon.state_writer.as_ref().and_then(|w| Some((w.what(), w.problem()?)));
    for (what, p) in [state, daemon.audit.problem()].into_iter().flatten() {
        {
            let _ = writeln!(
                out,
                "warning: {what}: {} failed writes over {} s, retrying: {}",
                p.failures,
                now.saturating_sub(p.since_ms) / 1000,
                p.error
            );
        }
    }
    if let Some(why) = &daemon.unreadable_state {
        let _ = writeln!(out, "warning: at start, {why}: rollouts started held with the canary at 0");
    }
    (!out.is_empty()).then_some(out)
}
