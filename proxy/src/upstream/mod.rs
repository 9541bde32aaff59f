//! Upstream backends: their addresses, the balancing policy, the pooled
//! clients, and the classification of upstream failures.
//!
//! **Balancing: power of two choices over in-flight requests (P2C).** Each
//! request samples two addresses at random and takes the one with fewer
//! requests in flight. It needs no lock and no shared cursor, reacts within
//! one request to a slow or stuck address (its in-flight count grows and it
//! stops being chosen), and avoids the herd effect of "always the least
//! loaded" when several workers decide at once. Linkerd and Envoy's
//! `LEAST_REQUEST` use the same policy.

pub(crate) mod client;
pub(crate) mod error;
pub(crate) mod fault;

use std::cell::Cell;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use http::uri::Authority;

pub(crate) use error::UpstreamErrorKind;

/// One resolved upstream address.
#[derive(Debug)]
pub(crate) struct Endpoint {
    pub(crate) addr: SocketAddr,
    /// `ip:port`, pre-built so that no request formats it.
    pub(crate) authority: Authority,
    inflight: AtomicU32,
}

/// A backend from the config with its resolved addresses.
#[derive(Debug)]
pub(crate) struct Backend {
    pub(crate) name: Arc<str>,
    /// Fault injection slot (shared with the admin API, survives reloads).
    pub(crate) fault: Arc<fault::Slot>,
    endpoints: Box<[Arc<Endpoint>]>,
    /// `https` for TLS backends.
    pub(crate) scheme: http::uri::Scheme,
    /// The backend's own client (TLS or HTTP/2); `None` = the shared one.
    pub(crate) client: Option<client::Dedicated>,
    /// What `client` was built from (settings and file contents), so that
    /// a reload reuses it, and its pool, when nothing changed.
    pub(crate) client_key: u64,
}

/// Counts a request as in flight on its endpoint until dropped.
#[derive(Debug)]
pub(crate) struct EndpointGuard(Arc<Endpoint>);

impl EndpointGuard {
    pub(crate) fn endpoint(&self) -> &Endpoint {
        &self.0
    }
}

impl Drop for EndpointGuard {
    fn drop(&mut self) {
        self.0.inflight.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Backend {
    pub(crate) fn new(name: &str, addrs: &[SocketAddr], fault: Arc<fault::Slot>) -> Result<Self, String> {
        let mut endpoints = Vec::with_capacity(addrs.len());
        for addr in addrs {
            let authority: Authority = addr.to_string().parse().map_err(|e| format!("address {addr}: {e}"))?;
            endpoints.push(Arc::new(Endpoint { addr: *addr, authority, inflight: AtomicU32::new(0) }));
        }
        Ok(Backend {
            name: name.into(),
            fault,
            endpoints: endpoints.into_boxed_slice(),
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

    /// Sends through the backend's own client, or else the `shared` one.
    pub(crate) fn send(
        &self,
        shared: &client::HttpClient,
        req: http::Request<crate::body::UpstreamBody>,
    ) -> hyper_util::client::legacy::ResponseFuture {
        match &self.client {
            Some(c) => c.request(req),
            None => shared.request(req),
        }
    }

    /// Gives the backend its own client (`tls` selects `https` URIs).
    pub(crate) fn with_client(mut self, client: client::Dedicated, key: u64) -> Self {
        if matches!(client, client::Dedicated::Tls(_)) {
            self.scheme = http::uri::Scheme::HTTPS;
        }
        self.client = Some(client);
        self.client_key = key;
        self
    }

    /// Picks an endpoint (P2C, see the module doc), or `None` if there is none.
    pub(crate) fn pick(&self) -> Option<EndpointGuard> {
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

    #[cfg(test)]
    pub(crate) fn endpoints(&self) -> &[Arc<Endpoint>] {
        &self.endpoints
    }
}

thread_local! {
    static RNG: Cell<u64> = Cell::new(seed());
}

fn seed() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_usize(&h as *const _ as usize);
    h.finish() | 1
}

/// xorshift64*: a per-thread generator, good enough to spread load.
pub(crate) fn next_random() -> u64 {
    RNG.with(|c| {
        let mut x = c.get();
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        c.set(x);
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn p2c_avoids_the_busy_endpoint_and_spreads_load() {
        let addrs: Vec<SocketAddr> = (0..3).map(|i| SocketAddr::from(([127, 0, 0, 1], 9000 + i))).collect();
        let b = Backend::new("b", &addrs, Default::default()).unwrap();
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

    #[test]
    fn empty_backend_has_no_pick() {
        let b = Backend::new("b", &[], Default::default()).unwrap();
        assert!(b.pick().is_none());
    }
}
