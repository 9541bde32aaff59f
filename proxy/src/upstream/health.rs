//! Active health checks: `GET health.path` to every address of a backend
//! with `health` set, each `interval`, through the backend's own client (so
//! TLS backends are checked over TLS). `unhealthy` failures in a row (no
//! answer within `timeout`, or a status other than 2xx/3xx) mark the address
//! down; `healthy` good answers in a row bring it back. Checks run in the
//! background and never touch the request path except through the flag.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use http::{header, HeaderValue, Request};
use tokio::sync::watch;

use super::backend::Backend;
use super::body::UpstreamBody;
use super::endpoint::Endpoint;
use crate::clock::{coarse_ms, Periodic};
use crate::dataplane::DataPlane;
use crate::snapshot::Snapshot;

static USER_AGENT: HeaderValue = HeaderValue::from_static("weir-health-check");

/// Runs until shutdown, looking every 100 ms for checks that are due (and
/// not at all while no backend has `health`).
pub(crate) async fn run(dp: Arc<DataPlane>, shutdown: watch::Receiver<bool>) {
    let mut clock = Periodic::on_demand(Duration::from_millis(100), shutdown, dp.reloads());
    let mut busy = true;
    while clock.tick_if(busy).await {
        let snap = dp.load_full();
        busy = snap.backends.iter().any(|b| b.health.is_some());
        let now = coarse_ms();
        for b in &snap.backends {
            let Some(hc) = &b.health else { continue };
            for ep in b.endpoints() {
                let next = ep.hc_next.load(Ordering::Relaxed);
                if now < next {
                    continue;
                }
                ep.hc_next.store(now + hc.interval.as_millis() as u64, Ordering::Relaxed);
                tokio::spawn(check(snap.clone(), b.clone(), ep.clone()));
            }
        }
    }
}

async fn check(snap: Arc<Snapshot>, b: Arc<Backend>, ep: Arc<Endpoint>) {
    let Some(hc) = &b.health else { return };
    let Some(uri) = b.uri(&ep, hc.path.parse().ok()) else { return };
    let mut req = Request::get(uri);
    if let Some(h) = req.headers_mut() {
        h.insert(header::USER_AGENT, USER_AGENT.clone());
        if let Some(host) = &b.host_header {
            h.insert(header::HOST, host.clone());
        }
    }
    let Ok(req) = req.body(UpstreamBody::bytes(bytes::Bytes::new())) else { return };
    let ok = match tokio::time::timeout(hc.timeout, b.send(&snap.client, req)).await {
        Ok(Ok(resp)) => {
            let good = resp.status().is_success() || resp.status().is_redirection();
            // Drain so the pooled connection can be reused.
            let _ = http_body_util::BodyExt::collect(resp.into_body()).await;
            good
        }
        _ => false,
    };
    if ok {
        ep.hc_bad.store(0, Ordering::Relaxed);
        let good = ep.hc_good.fetch_add(1, Ordering::Relaxed) + 1;
        if ep.is_down() && good >= hc.healthy {
            ep.set_down(false);
        }
    } else {
        ep.hc_good.store(0, Ordering::Relaxed);
        let bad = ep.hc_bad.fetch_add(1, Ordering::Relaxed) + 1;
        if !ep.is_down() && bad >= hc.unhealthy {
            ep.set_down(true);
            b.note_out_of_service();
        }
    }
}
