//! One resolved upstream address: its in-flight count, passive outlier
//! state, health-check verdict and pool of idle connections, kept across
//! reloads while the address stays.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;

use http::uri::Authority;

use super::h1::pool::Pool;

/// One resolved upstream address.
#[derive(Debug)]
pub(crate) struct Endpoint {
    pub(crate) addr: SocketAddr,
    /// `ip:port`, pre-built so that no request formats it.
    pub(crate) authority: Authority,
    pub(super) inflight: AtomicU32,
    /// Failures in a row (outlier detection).
    pub(super) failures: AtomicU32,
    /// [`coarse_ms`] until which the address is ejected; 0 = not ejected.
    pub(super) ejected_until: AtomicU64,
    /// Times ejected (the ejection time grows with it; forgotten after
    /// `max_ejection` back in service).
    pub(super) ejections: AtomicU32,
    /// [`coarse_ms`] of the last re-admission; 0 = never ejected.
    pub(super) readmitted_at: AtomicU64,
    /// Marked down by active health checks.
    pub(super) down: AtomicBool,
    /// Active health check streaks: good and failed checks in a row.
    pub(crate) hc_good: AtomicU32,
    pub(crate) hc_bad: AtomicU32,
    /// [`coarse_ms`] of the next active check.
    pub(crate) hc_next: AtomicU64,
    /// Idle connections of weir's own HTTP/1.1 client.
    pub(crate) pool: Pool,
}

impl Endpoint {
    pub(super) fn new(addr: SocketAddr) -> Result<Self, String> {
        let authority: Authority = addr.to_string().parse().map_err(|e| format!("address {addr}: {e}"))?;
        Ok(Endpoint {
            addr,
            authority,
            inflight: AtomicU32::new(0),
            failures: AtomicU32::new(0),
            ejected_until: AtomicU64::new(0),
            ejections: AtomicU32::new(0),
            readmitted_at: AtomicU64::new(0),
            down: AtomicBool::new(false),
            hc_good: AtomicU32::new(0),
            hc_bad: AtomicU32::new(0),
            hc_next: AtomicU64::new(0),
            pool: Pool::default(),
        })
    }

    /// In service now (re-admits an address whose ejection is over).
    pub(super) fn available(&self, now: u64) -> bool {
        if self.down.load(Ordering::Relaxed) {
            return false;
        }
        let until = self.ejected_until.load(Ordering::Relaxed);
        if until == 0 {
            return true;
        }
        if now >= until {
            if self.ejected_until.compare_exchange(until, 0, Ordering::Relaxed, Ordering::Relaxed).is_ok() {
                self.readmitted_at.store(now, Ordering::Relaxed);
                tracing::info!(addr = %self.addr, "outlier ejection over: address back in service");
            }
            return true;
        }
        false
    }

    /// Active health checks' verdict (logged on change).
    pub(crate) fn set_down(&self, down: bool) {
        if self.down.swap(down, Ordering::Relaxed) != down {
            if down {
                tracing::warn!(addr = %self.addr, "health check: address down");
            } else {
                tracing::info!(addr = %self.addr, "health check: address up");
            }
        }
    }

    pub(crate) fn is_down(&self) -> bool {
        self.down.load(Ordering::Relaxed)
    }

    pub(crate) fn in_flight(&self) -> u32 {
        self.inflight.load(Ordering::Relaxed)
    }

    pub(crate) fn is_ejected(&self) -> bool {
        self.ejected_until.load(Ordering::Relaxed) != 0
    }
}

/// Counts a request as in flight on its endpoint until dropped.
#[derive(Debug)]
pub(crate) struct EndpointGuard(pub(super) Arc<Endpoint>);

impl EndpointGuard {
    pub(crate) fn endpoint(&self) -> &Endpoint {
        &self.0
    }

    pub(crate) fn arc(&self) -> &Arc<Endpoint> {
        &self.0
    }
}

impl Drop for EndpointGuard {
    fn drop(&mut self) {
        self.0.inflight.fetch_sub(1, Ordering::Relaxed);
    }
}
