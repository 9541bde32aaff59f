//! The admin listener: health and readiness (more endpoints arrive with the
//! telemetry and admin-API work). Never served on the data port.

use std::convert::Infallible;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_util::task::TaskTracker;

use crate::server::Shared;

pub(crate) async fn serve(
    shared: Arc<Shared>,
    listener: TcpListener,
    mut shutdown: watch::Receiver<bool>,
    tracker: TaskTracker,
) {
    let builder = Arc::new(auto::Builder::new(TokioExecutor::new()));
    loop {
        let stream = tokio::select! {
            _ = shutdown.changed() => return,
            r = listener.accept() => match r {
                Ok((s, _)) => s,
                Err(e) => {
                    tracing::warn!("admin accept failed: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let (shared, builder, mut shutdown) = (shared.clone(), builder.clone(), shutdown.clone());
        tracker.spawn(async move {
            let svc = service_fn(move |req| {
                let shared = shared.clone();
                async move { Ok::<_, Infallible>(route(&shared, req)) }
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
        });
    }
}

fn route(shared: &Shared, req: Request<Incoming>) -> Response<Full<Bytes>> {
    match (req.method(), req.uri().path()) {
        (&Method::GET, "/healthz") => text(StatusCode::OK, "ok\n"),
        (&Method::GET, "/metrics") => {
            let mut r = Response::new(Full::new(Bytes::from(shared.telemetry.render())));
            r.headers_mut()
                .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"));
            r
        }
        (&Method::GET, "/readyz") => {
            if shared.ready.load(Ordering::Relaxed) {
                text(StatusCode::OK, "ready\n")
            } else {
                text(StatusCode::SERVICE_UNAVAILABLE, "not ready\n")
            }
        }
        (&Method::GET, "/api/v1/routes") => json(StatusCode::OK, &routes(shared)),
        (&Method::GET, "/api/v1/events") => {
            let route = req.uri().query().and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("route=")));
            json(StatusCode::OK, &serde_json::json!({ "events": shared.audit.events(route) }))
        }
        _ => json_error(StatusCode::NOT_FOUND, "no such admin endpoint"),
    }
}

/// Every route with its backends, versions, weight and rollout.
fn routes(shared: &Shared) -> serde_json::Value {
    let snap = shared.snapshot.load();
    let cfg = &snap.config;
    let backend = |name: &str| serde_json::json!({ "backend": name, "version": cfg.backends.get(name).and_then(|b| b.version.clone()) });
    let list: Vec<serde_json::Value> = snap
        .routes
        .routes()
        .iter()
        .zip(&cfg.routes)
        .map(|(r, c)| {
            let rollout = r.state.engine().as_ref().map(|e| {
                let st = e.state();
                serde_json::json!({
                    "state": st.phase.as_str(),
                    "stage": st.stage,
                    "stages": e.plan().stages.iter().map(|s| s.weight.percent()).collect::<Vec<_>>(),
                    "since_ms": st.since_ms,
                    "consecutive_failures": st.consecutive_failures,
                    "verdicts": st.verdicts,
                })
            });
            serde_json::json!({
                "name": &*r.name,
                "stable": backend(&c.stable),
                "canary": c.canary.as_deref().map(backend),
                "weight": r.state.weight().percent(),
                "rollout": rollout,
            })
        })
        .collect();
    serde_json::json!({ "routes": list })
}

fn json(status: StatusCode, body: &serde_json::Value) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body.to_string())));
    *r.status_mut() = status;
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}

fn text(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *r.status_mut() = status;
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    r
}

fn json_error(status: StatusCode, message: &str) -> Response<Full<Bytes>> {
    let body = serde_json::json!({ "error": message }).to_string();
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}
