//! A backend from the config with its resolved addresses, and how a
//! request picks one of them.
//!
//! **Balancing: power of two choices over in-flight requests (P2C).** Each
//! request samples two addresses at random and takes the one with fewer
//! requests in flight. It needs no lock and no shared cursor, reacts within
//! one request to a slow or stuck address (its in-flight count grows and it
//! stops being chosen), and avoids the herd effect of "always the least
//! loaded" when several workers decide at once. Linkerd and Envoy's
//! `LEAST_REQUEST` use the same policy.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use weir_control::config::Outlier;

use super::body::UpstreamBody;
use super::client::{self, HttpClient};
use super::endpoint::{Endpoint, EndpointGuard};
use super::fault;
use crate::clock::coarse_ms;
use crate::random::next_random;

/// A backend from the config with its resolved addresses.
#[derive(Debug)]
pub(crate) struct Backend {
    pub(crate) name: Arc<str>,
    /// The release label (`version`), for access-log lines.
    pub(crate) version: Option<Arc<str>>,
    /// Fault injection slot (shared with the admin API, survives reloads).
    pub(crate) fault: Arc<fault::Slot>,
    endpoints: Box<[Arc<Endpoint>]>,
    /// Addresses out of service (ejected or down) as last seen: while 0,
    /// `pick` takes the fast path. A hint, recounted on the slow path.
    out_of_service: AtomicU32,
    outlier: Option<Outlier>,
    /// Active health checks, if configured.
    pub(crate) health: Option<weir_control::config::HealthCheck>,
    /// Host header of health checks (`tls.server_name`, else the first
    /// address as written).
    pub(crate) host_header: Option<http::HeaderValue>,
    /// `https` for TLS backends.
    pub(crate) scheme: http::uri::Scheme,
    /// The backend's own client (TLS or HTTP/2); `None` = the shared one.
    pub(crate) client: Option<client::Dedicated>,
    /// What `client` was built from (settings and file contents), so that
    /// a reload reuses it, and its pool, when nothing changed.
    pub(crate) client_key: u64,
}

impl Backend {
    /// A backend over `addrs`; endpoints of `prev` with the same address are
    /// kept (with their in-flight counts, ejections and health).
    pub(crate) fn new(
        name: &str,
        addrs: &[SocketAddr],
        fault: Arc<fault::Slot>,
        outlier: Option<Outlier>,
        prev: Option<&Backend>,
    ) -> Result<Self, String> {
        let mut endpoints = Vec::with_capacity(addrs.len());
        for addr in addrs {
            match prev.and_then(|p| p.endpoints.iter().find(|e| e.addr == *addr)) {
                Some(e) => endpoints.push(e.clone()),
                None => endpoints.push(Arc::new(Endpoint::new(*addr)?)),
            }
        }
        let out = endpoints.iter().filter(|e| e.is_down() || e.is_ejected()).count() as u32;
        Ok(Backend {
            name: name.into(),
            version: None,
            fault,
            endpoints: endpoints.into_boxed_slice(),
            out_of_service: AtomicU32::new(out),
            outlier,
            health: None,
            host_header: None,
            scheme: http::uri::Scheme::HTTP,
            client: None,
            client_key: 0,
        })
    }

    /// The upstream URI of a request to `ep`.
    pub(crate) fn uri(&self, ep: &Endpoint, path: Option<http::uri::PathAndQuery>) -> Option<http::Uri> {
        let mut uri = http::uri::Parts::default();
        uri.scheme = Some(self.scheme.clone());
        uri.authority = Some(ep.authority.clone());
        uri.path_and_query = Some(path.unwrap_or_else(|| http::uri::PathAndQuery::from_static("/")));
        http::Uri::from_parts(uri).ok()
    }

    /// Sends through the backend's own client (through its pool of
    /// refused requests if `retry`), or else the `shared` one.
    pub(crate) fn send(
        &self,
        shared: &HttpClient,
        req: http::Request<UpstreamBody>,
        retry: bool,
    ) -> hyper_util::client::legacy::ResponseFuture {
        match &self.client {
            Some(c) => c.request(req, retry),
            None => shared.request(req),
        }
    }

    /// Whether requests may go over HTTP/2 (`http2 = true`), where an
    /// upstream can refuse a stream it did not process.
    pub(crate) fn may_refuse(&self) -> bool {
        self.client.as_ref().is_some_and(client::Dedicated::may_refuse)
    }

    /// Turns on active health checks, sent with `host` as Host.
    pub(crate) fn with_health(mut self, hc: Option<weir_control::config::HealthCheck>, host: &str) -> Self {
        self.health = hc;
        self.host_header = http::HeaderValue::from_str(host).ok();
        self
    }

    /// Gives the backend its own client (`tls` selects `https` URIs).
    pub(crate) fn with_client(mut self, client: client::Dedicated, key: u64) -> Self {
        if matches!(client, client::Dedicated::Tls { .. }) {
            self.scheme = http::uri::Scheme::HTTPS;
        }
        self.client = Some(client);
        self.client_key = key;
        self
    }

    /// Picks an endpoint in service (P2C, see the module doc), or `None` if
    /// there is none.
    pub(crate) fn pick(&self) -> Option<EndpointGuard> {
        if self.out_of_service.load(Ordering::Relaxed) != 0 {
            return self.pick_slow(None);
        }
        let eps = &self.endpoints;
        let chosen = match eps.len() {
            0 => return None,
            1 => &eps[0],
            n => {
                let r = next_random();
                let a = (r % n as u64) as usize;
                // A second index distinct from the first.
                let b = (a + 1 + ((r >> 32) % (n as u64 - 1)) as usize) % n;
                let (ea, eb) = (&eps[a], &eps[b]);
                if eb.inflight.load(Ordering::Relaxed) < ea.inflight.load(Ordering::Relaxed) {
                    eb
                } else {
                    ea
                }
            }
        };
        chosen.inflight.fetch_add(1, Ordering::Relaxed);
        Some(EndpointGuard(chosen.clone()))
    }

    /// Another endpoint than `failed`, in service, for a retry.
    pub(crate) fn pick_other(&self, failed: &Endpoint) -> Option<EndpointGuard> {
        self.pick_slow(Some(failed.addr))
    }

    /// The least loaded endpoint in service (and not `except`); taken only
    /// while some address is out of service, or for a retry.
    fn pick_slow(&self, except: Option<SocketAddr>) -> Option<EndpointGuard> {
        let now = coarse_ms();
        let mut out = 0;
        let mut best: Option<&Arc<Endpoint>> = None;
        let mut seen = 0u64;
        for e in self.endpoints.iter() {
            if !e.available(now) {
                out += 1;
                continue;
            }
            if Some(e.addr) == except {
                continue;
            }
            // The least loaded address in service, ties broken at random
            // (this path runs only while some address is out of service).
            seen += 1;
            best = match best {
                None => Some(e),
                Some(b) => {
                    let (lb, le) = (b.inflight.load(Ordering::Relaxed), e.inflight.load(Ordering::Relaxed));
                    if le < lb || (le == lb && next_random().is_multiple_of(seen)) {
                        Some(e)
                    } else {
                        Some(b)
                    }
                }
            };
        }
        self.out_of_service.store(out, Ordering::Relaxed);
        let chosen = best?;
        chosen.inflight.fetch_add(1, Ordering::Relaxed);
        Some(EndpointGuard(chosen.clone()))
    }

    /// How many addresses the backend has.
    pub(crate) fn len(&self) -> usize {
        self.endpoints.len()
    }

    pub(crate) fn endpoints(&self) -> &[Arc<Endpoint>] {
        &self.endpoints
    }

    /// Counts an address out of service (health checks call this).
    pub(crate) fn note_out_of_service(&self) {
        self.out_of_service.fetch_add(1, Ordering::Relaxed);
    }

    /// Passive outlier detection: the outcome of one request to `ep`.
    pub(crate) fn report(&self, ep: &Endpoint, failed: bool) {
        let Some(o) = &self.outlier else { return };
        if !failed {
            if ep.failures.load(Ordering::Relaxed) != 0 {
                ep.failures.store(0, Ordering::Relaxed);
            }
            return;
        }
        if ep.failures.fetch_add(1, Ordering::Relaxed) + 1 < o.consecutive_failures {
            return;
        }
        ep.failures.store(0, Ordering::Relaxed);
        let now = coarse_ms();
        let total = self.endpoints.len();
        let out = self.endpoints.iter().filter(|e| !e.available(now)).count();
        let cap = (total * o.max_ejection_percent as usize / 100).max(1);
        // Never the last address in service, and at most `cap` at once.
        if out + 1 > cap || out + 1 >= total || !ep.available(now) {
            return;
        }
        let back = ep.readmitted_at.load(Ordering::Relaxed);
        if back != 0 && now.saturating_sub(back) > o.max_ejection.as_millis() as u64 {
            ep.ejections.store(0, Ordering::Relaxed);
        }
        let k = ep.ejections.fetch_add(1, Ordering::Relaxed) + 1;
        let time = o.base_ejection.saturating_mul(k).min(o.max_ejection);
        let until = now + time.as_millis() as u64;
        if ep.ejected_until.compare_exchange(0, until, Ordering::Relaxed, Ordering::Relaxed).is_ok() {
            self.out_of_service.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(backend = %self.name, addr = %ep.addr, failures = o.consecutive_failures, ejection = ?time, "outlier detection: address ejected");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn p2c_avoids_the_busy_endpoint_and_spreads_load() {
        let addrs: Vec<SocketAddr> = (0..3).map(|i| SocketAddr::from(([127, 0, 0, 1], 9000 + i))).collect();
        let b = Backend::new("b", &addrs, Default::default(), None, None).unwrap();
        // Pin 50 requests on endpoint 0: it must (almost) never be chosen.
        let busy: Vec<_> = (0..50)
            .map(|_| {
                EndpointGuard({
                    b.endpoints()[0].inflight.fetch_add(1, Ordering::Relaxed);
                    b.endpoints()[0].clone()
                })
            })
            .collect();
        let mut counts = [0usize; 3];
        for _ in 0..3000 {
            let g = b.pick().unwrap();
            let i = addrs.iter().position(|a| *a == g.endpoint().addr).unwrap();
            counts[i] += 1;
        }
        assert_eq!(counts[0], 0, "{counts:?}");
        assert!(counts[1] > 1000 && counts[2] > 1000, "{counts:?}");
        drop(busy);
        assert_eq!(b.endpoints()[0].inflight.load(Ordering::Relaxed), 0);
    }

    fn outlier(consecutive: u32, base_ms: u64, pct: u32) -> Option<Outlier> {
        Some(Outlier {
            consecutive_failures: consecutive,
            base_ejection: Duration::from_millis(base_ms),
            max_ejection: Duration::from_millis(base_ms * 4),
            max_ejection_percent: pct,
        })
    }

    fn picks(b: &Backend, n: usize) -> Vec<SocketAddr> {
        (0..n).map(|_| b.pick().unwrap().endpoint().addr).collect()
    }

    #[test]
    fn consecutive_failures_eject_an_address_until_its_time_is_over() {
        let addrs: Vec<SocketAddr> = (0..3).map(|i| SocketAddr::from(([127, 0, 0, 1], 9100 + i))).collect();
        let b = Backend::new("b", &addrs, Default::default(), outlier(3, 200, 10), None).unwrap();
        let ep0 = b.endpoints()[0].clone();
        // A success in between resets the streak.
        for failed in [true, true, false, true, true] {
            b.report(&ep0, failed);
        }
        assert!(picks(&b, 300).contains(&addrs[0]));
        b.report(&ep0, true);
        assert!(!picks(&b, 300).contains(&addrs[0]), "ejected after 3 failures in a row");
        // 10 % of 3 addresses rounds to 0: at most one ejected at a time.
        let ep1 = b.endpoints()[1].clone();
        for _ in 0..3 {
            b.report(&ep1, true);
        }
        assert!(picks(&b, 300).contains(&addrs[1]), "the cap keeps the second failing address in");
        // Endpoints (and their ejection) survive a rebuild of the backend.
        let rebuilt = Backend::new("b", &addrs, Default::default(), outlier(3, 200, 10), Some(&b)).unwrap();
        assert!(!picks(&rebuilt, 300).contains(&addrs[0]));
        std::thread::sleep(Duration::from_millis(250));
        assert!(picks(&rebuilt, 300).contains(&addrs[0]), "re-admitted when the ejection is over");
    }

    #[test]
    fn the_last_address_in_service_is_never_ejected() {
        let one = [SocketAddr::from(([127, 0, 0, 1], 9200))];
        let b = Backend::new("b", &one, Default::default(), outlier(1, 10_000, 100), None).unwrap();
        for _ in 0..10 {
            b.report(&b.endpoints()[0].clone(), true);
        }
        assert!(b.pick().is_some());
        let two: Vec<SocketAddr> = (0..2).map(|i| SocketAddr::from(([127, 0, 0, 1], 9300 + i))).collect();
        let b = Backend::new("b", &two, Default::default(), outlier(1, 10_000, 100), None).unwrap();
        let (e0, e1) = (b.endpoints()[0].clone(), b.endpoints()[1].clone());
        b.report(&e0, true);
        b.report(&e1, true);
        assert_eq!(picks(&b, 50), vec![two[1]; 50]);
        // Without outlier detection nothing is ejected.
        let b = Backend::new("b", &two, Default::default(), None, None).unwrap();
        for _ in 0..10 {
            b.report(&b.endpoints()[0].clone(), true);
        }
        assert!(picks(&b, 100).contains(&two[0]));
    }

    #[test]
    fn down_addresses_are_skipped_and_a_backend_with_none_up_has_no_pick() {
        let two: Vec<SocketAddr> = (0..2).map(|i| SocketAddr::from(([127, 0, 0, 1], 9400 + i))).collect();
        let b = Backend::new("b", &two, Default::default(), None, None).unwrap();
        b.endpoints()[0].set_down(true);
        b.note_out_of_service();
        assert_eq!(picks(&b, 20), vec![two[1]; 20]);
        let g = b.pick_other(&b.endpoints()[1].clone());
        assert!(g.is_none(), "the only other address is down");
        b.endpoints()[1].set_down(true);
        assert!(b.pick().is_none());
        b.endpoints()[0].set_down(false);
        assert_eq!(picks(&b, 5), vec![two[0]; 5]);
    }

    #[test]
    fn empty_backend_has_no_pick() {
        let b = Backend::new("b", &[], Default::default(), None, None).unwrap();
        assert!(b.pick().is_none());
    }
}
