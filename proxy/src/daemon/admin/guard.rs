//! The admin listener against browsers and guessing: it is on loopback by
//! default, which is exactly what a page in a browser on the same machine
//! can reach.
//!
//! - **DNS rebinding**: a page on `evil.example` whose name is made to
//!   point at 127.0.0.1 talks to the admin port as its own origin, with
//!   `Host: evil.example:9901`. Every request must name an IP address,
//!   `localhost` (or a `*.localhost` name) or one of `admin.hosts`.
//! - **Cross-site requests**: a mutating call from a browser must come from
//!   the admin listener's own origin (`Origin` and `Sec-Fetch-Site`), token
//!   or not; `weir ctl` and scripts send neither header.
//! - **Token guessing**: a peer whose bearer tokens failed
//!   [`MAX_FAILURES`] times within [`WINDOW`] gets 429 until the window is
//!   over (logged once per window).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use http::{header, Request};

/// Failed tokens a peer may send within [`WINDOW`].
pub(crate) const MAX_FAILURES: u32 = 10;
/// How long failures are remembered (and a blocked peer stays blocked).
pub(crate) const WINDOW: Duration = Duration::from_secs(60);
/// Peers remembered at most (a flood of addresses cannot grow memory).
const PEERS: usize = 4096;

/// The host a request names (`Host`, or the HTTP/2 `:authority`), without
/// its port, lowercase; `None` when it names none.
fn host_of<B>(req: &Request<B>) -> Option<String> {
    let raw = req.headers().get(header::HOST).and_then(|v| v.to_str().ok()).or_else(|| req.uri().host())?;
    let host = match raw.strip_prefix('[') {
        // [v6]:port
        Some(rest) => rest.split(']').next().unwrap_or(rest),
        None => {
            raw.rsplit_once(':').filter(|(_, port)| port.bytes().all(|b| b.is_ascii_digit())).map_or(raw, |(h, _)| h)
        }
    };
    Some(host.to_ascii_lowercase())
}

/// Whether `host` may name the admin listener: an IP address, `localhost`,
/// or a name of `allowed` (exact, `*.suffix`, or `*` for any).
fn host_allowed(host: &str, allowed: &[String]) -> bool {
    if host.parse::<IpAddr>().is_ok() || host == "localhost" || host.ends_with(".localhost") {
        return true;
    }
    allowed.iter().any(|a| match a.strip_prefix('*') {
        Some("") => true,
        Some(suffix) => host.ends_with(suffix) && host.len() > suffix.len(),
        None => a == host,
    })
}

/// Refuses a request whose `Host` is not one of the admin listener's.
pub(crate) fn check_host<B>(req: &Request<B>, allowed: &[String]) -> Result<(), String> {
    match host_of(req) {
        // HTTP/1.0 without Host: not a browser.
        None => Ok(()),
        Some(host) if host_allowed(&host, allowed) => Ok(()),
        Some(host) => Err(format!(
            "Host \"{host}\" is not a name of this admin listener: use its IP address or localhost, or add the name to admin.hosts"
        )),
    }
}

/// Refuses a browser's mutating call from another origin.
pub(crate) fn check_origin<B>(req: &Request<B>) -> Result<(), &'static str> {
    let site = req.headers().get("sec-fetch-site").and_then(|v| v.to_str().ok());
    if matches!(site, Some("cross-site" | "same-site")) {
        return Err("cross-origin call refused");
    }
    let Some(origin) = req.headers().get(header::ORIGIN) else { return Ok(()) };
    let origin = origin.to_str().unwrap_or("null");
    let authority = origin.strip_prefix("https://").or_else(|| origin.strip_prefix("http://"));
    let own = req
        .headers()
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .or_else(|| req.uri().authority().map(|a| a.as_str()));
    match (authority, own) {
        (Some(a), Some(own)) if a.eq_ignore_ascii_case(own) => Ok(()),
        _ => Err("cross-origin call refused"),
    }
}

/// Failed bearer tokens per peer.
#[derive(Debug, Default)]
pub(crate) struct Failures {
    by_peer: Mutex<HashMap<IpAddr, (u32, Instant)>>,
}

impl Failures {
    /// Whether `peer` is blocked now; the seconds until it is not.
    pub(crate) fn blocked(&self, peer: IpAddr) -> Option<u64> {
        let map = self.by_peer.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let (n, since) = *map.get(&peer)?;
        let left = WINDOW.saturating_sub(since.elapsed());
        (n >= MAX_FAILURES && !left.is_zero()).then(|| left.as_secs().max(1))
    }

    /// Counts a failed token from `peer`; true when this failure blocks it.
    pub(crate) fn failed(&self, peer: IpAddr) -> bool {
        let mut map = self.by_peer.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if map.len() >= PEERS && !map.contains_key(&peer) {
            map.retain(|_, (_, since)| since.elapsed() < WINDOW);
            if map.len() >= PEERS {
                map.clear();
            }
        }
        let entry = map.entry(peer).or_insert((0, Instant::now()));
        if entry.1.elapsed() >= WINDOW {
            *entry = (0, Instant::now());
        }
        entry.0 += 1;
        entry.0 == MAX_FAILURES
    }

    /// A good token from `peer`: its failures are forgotten.
    pub(crate) fn succeeded(&self, peer: IpAddr) {
        self.by_peer.lock().unwrap_or_else(std::sync::PoisonError::into_inner).remove(&peer);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(headers: &[(&str, &str)]) -> Request<()> {
        let mut b = Request::post("/api/v1/routes/web/abort");
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        b.body(()).unwrap_or_default()
    }

    #[test]
    fn hosts() {
        let none: &[String] = &[];
        for ok in ["127.0.0.1:9901", "localhost:9901", "LOCALHOST", "[::1]:9901", "10.1.2.3:9901", "app.localhost"] {
            assert!(check_host(&req(&[("host", ok)]), none).is_ok(), "{ok}");
        }
        for bad in ["evil.example:9901", "localhost.evil.example", "127.0.0.1.nip.io:9901"] {
            assert!(check_host(&req(&[("host", bad)]), none).is_err(), "{bad}");
        }
        let named = ["weir-admin.internal".to_string(), "*.svc.cluster.local".to_string()];
        assert!(check_host(&req(&[("host", "weir-admin.internal:9901")]), &named).is_ok());
        assert!(check_host(&req(&[("host", "weir.default.svc.cluster.local")]), &named).is_ok());
        assert!(check_host(&req(&[("host", "svc.cluster.local")]), &named).is_err());
        assert!(check_host(&req(&[("host", "anything")]), &["*".to_string()]).is_ok());
        assert!(check_host(&req(&[]), none).is_ok());
    }

    #[test]
    fn origins() {
        assert!(check_origin(&req(&[("host", "127.0.0.1:9901")])).is_ok());
        assert!(check_origin(&req(&[("host", "127.0.0.1:9901"), ("origin", "http://127.0.0.1:9901")])).is_ok());
        assert!(check_origin(&req(&[("host", "127.0.0.1:9901"), ("origin", "https://evil.example")])).is_err());
        assert!(check_origin(&req(&[("host", "127.0.0.1:9901"), ("origin", "null")])).is_err());
        assert!(check_origin(&req(&[("host", "127.0.0.1:9901"), ("sec-fetch-site", "cross-site")])).is_err());
        assert!(check_origin(&req(&[("host", "127.0.0.1:9901"), ("sec-fetch-site", "same-origin")])).is_ok());
    }

    #[test]
    fn failures_block_after_the_limit_and_a_success_forgets() {
        let f = Failures::default();
        let peer = IpAddr::from([127, 0, 0, 1]);
        for i in 1..MAX_FAILURES {
            assert!(!f.failed(peer), "{i}");
            assert!(f.blocked(peer).is_none());
        }
        assert!(f.failed(peer));
        assert!(f.blocked(peer).is_some_and(|s| (1..=60).contains(&s)));
        assert!(f.blocked(IpAddr::from([127, 0, 0, 2])).is_none());
        f.succeeded(peer);
        assert!(f.blocked(peer).is_none());
    }
}
