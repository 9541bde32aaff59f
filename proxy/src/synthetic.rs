//! Synthetic requests: during a stage that declares `synthetic`, weir sends
//! requests at the given rate to its own listener, so they take the real
//! routing path. A per-process secret in `x-weir-synthetic` steers them to
//! the canary (and, with `target = "both"`, to stable) and tags them: they
//! are recorded apart from user traffic (`weir_synthetic_*` metrics), the
//! upstream sees `x-weir-synthetic: 1`, and the `synthetic` gate judges the
//! share that did not get `expect_status`. A client cannot forge the tag.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderName, HeaderValue, Method, Request};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio::sync::watch;
use weir_control::config::Synthetic;
use weir_control::sample::Checks;
use weir_control::split::Side;

use crate::server::Shared;

/// The request header carrying the tag.
pub(crate) static HEADER: HeaderName = HeaderName::from_static("x-weir-synthetic");

/// Most synthetic requests in flight per route; past it, a tick's requests
/// are skipped (and counted as failed checks: the canary is not keeping up).
const MAX_IN_FLIGHT: u64 = 64;

/// Per-process secret and check counters.
#[derive(Debug)]
pub(crate) struct Synthetics {
    canary: HeaderValue,
    stable: HeaderValue,
    /// Route name → (epoch = stage start, passed, failed).
    #[allow(clippy::disallowed_types)]
    checks: Mutex<HashMap<String, Arc<RouteChecks>>>,
}

#[derive(Debug, Default)]
pub(crate) struct RouteChecks {
    epoch: AtomicU64,
    passed: AtomicU64,
    failed: AtomicU64,
    in_flight: AtomicU64,
}

impl RouteChecks {
    fn restart(&self, epoch: u64) {
        if self.epoch.swap(epoch, Ordering::Relaxed) != epoch {
            self.passed.store(0, Ordering::Relaxed);
            self.failed.store(0, Ordering::Relaxed);
        }
    }
}

fn secret() -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut out = String::new();
    for i in 0..2u64 {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u64(i);
        out.push_str(&format!("{:016x}", h.finish()));
    }
    out
}

impl Synthetics {
    pub(crate) fn new() -> Self {
        let s = secret();
        let value = |side: &str| HeaderValue::from_str(&format!("{s}:{side}")).unwrap_or(HeaderValue::from_static("-"));
        Synthetics { canary: value("canary"), stable: value("stable"), checks: Mutex::new(HashMap::new()) }
    }

    /// The side a tagged request must take, if the tag is genuine.
    pub(crate) fn side_of(&self, v: &HeaderValue) -> Option<Side> {
        if v == self.canary {
            Some(Side::Canary)
        } else if v == self.stable {
            Some(Side::Stable)
        } else {
            None
        }
    }

    fn route(&self, name: &str) -> Arc<RouteChecks> {
        let mut map = self.checks.lock().unwrap_or_else(|p| p.into_inner());
        map.entry(name.to_string()).or_default().clone()
    }

    /// The route's canary checks since the stage that began at `epoch`.
    pub(crate) fn checks(&self, route: &str, epoch: u64) -> Checks {
        let c = self.route(route);
        if c.epoch.load(Ordering::Relaxed) != epoch {
            return Checks::default();
        }
        Checks { passed: c.passed.load(Ordering::Relaxed), failed: c.failed.load(Ordering::Relaxed) }
    }
}

/// Sends the synthetic requests of every route whose current stage has them.
pub(crate) async fn run(shared: Arc<Shared>, data: SocketAddr, shutdown: watch::Receiver<bool>) {
    let client: Client<HttpConnector, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let mut clock = crate::server::Periodic::on_demand(Duration::from_millis(50), shutdown, &shared);
    // Route → (epoch, requests sent this stage).
    let mut sent: HashMap<String, (u64, u64)> = HashMap::new();
    let mut busy = true;
    while clock.tick_if(busy).await {
        let snap = shared.snapshot.load_full();
        let now = crate::rollout::now_ms();
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
            let checks = shared.synthetic.route(&route.name);
            checks.restart(epoch);
            let entry = sent.entry(route.name.to_string()).or_insert((epoch, 0));
            if entry.0 != epoch {
                *entry = (epoch, 0);
            }
            let due = (now.saturating_sub(epoch) as f64 / 1000.0 * plan.rps) as u64;
            while entry.1 < due {
                entry.1 += 1;
                let host = cfg.host.clone().unwrap_or_else(|| data.to_string());
                send(&client, &shared, &checks, data, &host, &plan, Side::Canary, epoch);
                if plan.also_stable {
                    send(&client, &shared, &checks, data, &host, &plan, Side::Stable, epoch);
                }
            }
        }
        sent.retain(|name, _| snap.routes.routes().iter().any(|r| *r.name == **name));
    }
}

#[allow(clippy::too_many_arguments)]
fn send(
    client: &Client<HttpConnector, Full<Bytes>>,
    shared: &Shared,
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
    let tag = match side {
        Side::Canary => shared.synthetic.canary.clone(),
        Side::Stable => shared.synthetic.stable.clone(),
    };
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
