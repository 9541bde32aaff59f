//! Synthetic requests: during a stage that declares `synthetic`, the daemon
//! sends requests at the given rate to weir's own listener, so they take the
//! real routing path, tagged (see `server/synthetic.rs`) to reach the canary
//! (and, with `target = "both"`, stable). They are recorded apart from user
//! traffic (`weir_synthetic_*` metrics), and the `synthetic` gate judges the
//! share that did not get `expect_status`.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio::sync::watch;
use weir_control::config::Synthetic;
use weir_control::split::Side;

use super::checks::RouteChecks;
use super::context::Daemon;
use crate::clock::{engine_ms, Periodic};
use crate::server::synthetic::HEADER;

/// Most synthetic requests in flight per route; past it, a tick's requests
/// are skipped (and counted as failed checks: the canary is not keeping up).
const MAX_IN_FLIGHT: u64 = 64;

/// Sends the synthetic requests of every route whose current stage has them.
pub(crate) async fn run(daemon: Arc<Daemon>, data: SocketAddr, shutdown: watch::Receiver<bool>) {
    let client: Client<HttpConnector, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let mut clock = Periodic::on_demand(Duration::from_millis(50), shutdown, daemon.dp.reloads());
    // Route → (epoch, requests sent this stage).
    let mut sent: HashMap<String, (u64, u64)> = HashMap::new();
    let mut busy = true;
    while clock.tick_if(busy).await {
        let snap = daemon.dp.load_full();
        let now = engine_ms();
        // Stages (and so synthetic plans) change without a reload; engines
        // come and go only with one.
        busy = false;
        for (route, cfg) in snap.routes.routes().iter().zip(&snap.config.routes) {
            let (epoch, plan) = {
                let slot = route.state.engine();
                let Some(e) = slot.as_ref() else { continue };
                busy = true;
                if e.state().phase != weir_control::rollout::Phase::Progressing {
                    continue;
                }
                let Some(plan) = e.plan().stages[e.state().stage].synthetic.clone() else { continue };
                (e.state().since_ms, plan)
            };
            let checks = daemon.synthetic_checks.route(&route.name);
            checks.restart(epoch);
            let entry = sent.entry(route.name.to_string()).or_insert((epoch, 0));
            if entry.0 != epoch {
                *entry = (epoch, 0);
            }
            let due = (now.saturating_sub(epoch) as f64 / 1000.0 * plan.rps) as u64;
            while entry.1 < due {
                entry.1 += 1;
                let host = cfg.host.clone().unwrap_or_else(|| data.to_string());
                send(&client, &daemon, &checks, data, &host, &plan, Side::Canary, epoch);
                if plan.also_stable {
                    send(&client, &daemon, &checks, data, &host, &plan, Side::Stable, epoch);
                }
            }
        }
        sent.retain(|name, _| snap.routes.routes().iter().any(|r| *r.name == **name));
    }
}

#[allow(clippy::too_many_arguments)]
fn send(
    client: &Client<HttpConnector, Full<Bytes>>,
    daemon: &Daemon,
    checks: &Arc<RouteChecks>,
    data: SocketAddr,
    host: &str,
    plan: &Synthetic,
    side: Side,
    epoch: u64,
) {
    let counts = side == Side::Canary;
    if counts && checks.in_flight.load(Ordering::Relaxed) >= MAX_IN_FLIGHT {
        checks.failed.fetch_add(1, Ordering::Relaxed);
        return;
    }
    let tag = daemon.dp.synthetic_tag.value(side).clone();
    let mut req = Request::builder()
        .method(Method::from_bytes(plan.method.as_bytes()).unwrap_or(Method::GET))
        .uri(format!("http://{data}{}", plan.path))
        .header(http::header::HOST, host)
        .header(&HEADER, tag);
    for (k, v) in &plan.headers {
        req = req.header(k.as_str(), v.as_str());
    }
    let body = plan.body.clone().map(Bytes::from).unwrap_or_default();
    let Ok(req) = req.body(Full::new(body)) else { return };
    let (client, checks, expect) = (client.clone(), checks.clone(), plan.expect_status);
    if counts {
        checks.in_flight.fetch_add(1, Ordering::Relaxed);
    }
    tokio::spawn(async move {
        let ok = match tokio::time::timeout(Duration::from_secs(30), client.request(req)).await {
            Ok(Ok(resp)) => {
                let ok = resp.status().as_u16() == expect;
                let _ = resp.into_body().collect().await;
                ok
            }
            _ => false,
        };
        if counts {
            checks.in_flight.fetch_sub(1, Ordering::Relaxed);
            // A check that finishes after its stage ended does not count.
            if checks.epoch.load(Ordering::Relaxed) == epoch {
                let c = if ok { &checks.passed } else { &checks.failed };
                c.fetch_add(1, Ordering::Relaxed);
            }
        }
    });
}
