//! The admin listener against browsers and guessing: it is on loopback by
//! default, which is exactly what a page in a browser on the same machine
//! can reach.
//!
//! - **DNS rebinding**: a page on `evil.example` whose name is made to
//!   point at 127.0.0.1 talks to the admin port as its own origin, with
//!   `Host: evil.example:9901`. Every request but the health probes must
//!   name an IP address, `localhost` (or a `*.localhost` name) or one of
//!   `admin.hosts`. Over `admin.tls` the name is not checked: a browser
//!   sent to weir under another name finds the certificate is not that
//!   name's, and stops.
//! - **Cross-site requests**: a mutating call from a browser must come from
//!   the admin listener's own origin (`Origin` and `Sec-Fetch-Site`), token
//!   or not; `weir ctl` and scripts send neither header.
//! - **Token guessing**: an address (an IPv6 /64) that sent
//!   [`MAX_FAILURES`] wrong bearer tokens within [`WINDOW`] gets 429 for
//!   any call with a token until the window is over, its token not even
//!   compared (logged once per window). A call without a token is not a
//!   guess and is not counted. The real defence is a long random token:
//!   `weir check` and the start warn about a short one.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use http::{header, Request};

/// Wrong tokens an address may send within [`WINDOW`].
pub(crate) const MAX_FAILURES: u32 = 10;
/// How long failures are remembered (and a refused address stays refused).
pub(crate) const WINDOW: Duration = Duration::from_secs(60);
/// Addresses remembered at most (a flood of addresses cannot grow memory).
const PEERS: usize = 4096;

/// The host a request names (`Host`, or the HTTP/2 `:authority`), without
/// its port or a final dot, lowercase; `None` when it names none, `Some("")`
/// when its `Host` cannot be read.
fn host_of<B>(req: &Request<B>) -> Option<String> {
    let raw = match req.headers().get(header::HOST) {
        Some(v) => v.to_str().unwrap_or(""),
        None => req.uri().host()?,
    };
    let host = match raw.strip_prefix('[') {
        // [v6]:port
        Some(rest) => rest.split(']').next().unwrap_or(rest),
        None => {
            raw.rsplit_once(':').filter(|(_, port)| port.bytes().all(|b| b.is_ascii_digit())).map_or(raw, |(h, _)| h)
        }
    };
    Some(host.strip_suffix('.').unwrap_or(host).to_ascii_lowercase())
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
        None => a.strip_suffix('.').unwrap_or(a) == host,
    })
}

/// Refuses a request whose `Host` is not one of the admin listener's.
pub(crate) fn check_host<B>(req: &Request<B>, allowed: &[String]) -> Result<(), String> {
    match host_of(req) {
        // HTTP/1.0 without Host: not a browser.
        None => Ok(()),
        Some(host) if !host.is_empty() && host_allowed(&host, allowed) => Ok(()),
        Some(host) => Err(format!(
            "Host \"{host}\" is not a name of this admin listener: use its IP address or localhost, or add the name to admin.hosts"
        )),
    }
}

/// An authority without the default port of its scheme.
fn without_default_port(authority: &str) -> &str {
    authority.strip_suffix(":80").or_else(|| authority.strip_suffix(":443")).unwrap_or(authority)
}

/// Refuses a browser's mutating call from another origin. (A proxy in
/// front of the admin listener must pass the browser's `Host` on, or the
/// dashboard's buttons are refused: the message names both.)
pub(crate) fn check_origin<B>(req: &Request<B>) -> Result<(), String> {
    let site = req.headers().get("sec-fetch-site").and_then(|v| v.to_str().ok());
    if let Some(site @ ("cross-site" | "same-site")) = site {
        return Err(format!("cross-origin call refused (Sec-Fetch-Site: {site})"));
    }
    let Some(origin) = req.headers().get(header::ORIGIN) else { return Ok(()) };
    let origin = origin.to_str().unwrap_or("null");
    let authority = origin.strip_prefix("http://").or_else(|| origin.strip_prefix("https://"));
    let own = req
        .headers()
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .or_else(|| req.uri().authority().map(|a| a.as_str()));
    match (authority, own) {
        (Some(a), Some(own)) if without_default_port(a).eq_ignore_ascii_case(without_default_port(own)) => Ok(()),
        _ => Err(format!("cross-origin call refused (Origin: {origin}, Host: {})", own.unwrap_or("none"))),
    }
}

/// The address failures are counted under: an IPv6 address's /64 (one
/// host's share), an IPv4 address (or an IPv4-mapped one) itself.
fn key(peer: IpAddr) -> IpAddr {
    match peer {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::from([s[0], s[1], s[2], s[3], 0, 0, 0, 0])
            }
        },
        v4 => v4,
    }
}

/// Wrong bearer tokens per address, and when a refused `Host` was last
/// logged.
#[derive(Debug, Default)]
pub(crate) struct Failures {
    by_peer: Mutex<HashMap<IpAddr, (u32, Instant)>>,
    host_logged: Mutex<Option<Instant>>,
}

impl Failures {
    /// Whether `peer` is refused now; the seconds until it is not.
    pub(crate) fn blocked(&self, peer: IpAddr) -> Option<u64> {
        let map = self.by_peer.lock().unwrap_or_else(PoisonError::into_inner);
        let (n, since) = *map.get(&key(peer))?;
        let left = WINDOW.saturating_sub(since.elapsed());
        // Rounded up: never an invitation to come back early.
        (n >= MAX_FAILURES && !left.is_zero()).then(|| left.as_secs() + u64::from(left.subsec_nanos() > 0))
    }

    /// Counts a wrong token from `peer`; true when this one blocks it.
    pub(crate) fn failed(&self, peer: IpAddr) -> bool {
        let peer = key(peer);
        let mut map = self.by_peer.lock().unwrap_or_else(PoisonError::into_inner);
        if map.len() >= PEERS && !map.contains_key(&peer) {
            map.retain(|_, (_, since)| since.elapsed() < WINDOW);
            // Still full: the oldest goes (never all of them).
            if map.len() >= PEERS {
                if let Some(oldest) = map.iter().min_by_key(|(_, (_, since))| *since).map(|(k, _)| *k) {
                    map.remove(&oldest);
                }
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
        self.by_peer.lock().unwrap_or_else(PoisonError::into_inner).remove(&key(peer));
    }

    /// Whether a refused `Host` should be logged now (once per window).
    pub(crate) fn log_host(&self) -> bool {
        let mut last = self.host_logged.lock().unwrap_or_else(PoisonError::into_inner);
        if last.is_some_and(|t| t.elapsed() < WINDOW) {
            return false;
        }
        *last = Some(Instant::now());
        true
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
        assert!(check_host(&req(&[("host", "evilsvc.cluster.local")]), &named).is_err());
        assert!(check_host(&req(&[("host", "anything")]), &["*".to_string()]).is_ok());
        assert!(check_host(&req(&[]), none).is_ok());
        // A final dot names the same host; an unreadable Host is refused.
        assert!(check_host(&req(&[("host", "localhost.:9901")]), none).is_ok());
        assert!(check_host(&req(&[("host", "weir-admin.internal.")]), &named).is_ok());
        let mut unreadable = req(&[]);
        if let Ok(v) = http::HeaderValue::from_bytes(b"\xffbad") {
            unreadable.headers_mut().insert("host", v);
        }
        assert!(check_host(&unreadable, none).is_err());
    }

    #[test]
    fn origins() {
        let host = ("host", "127.0.0.1:9901");
        assert!(check_origin(&req(&[host])).is_ok());
        assert!(check_origin(&req(&[host, ("origin", "http://127.0.0.1:9901")])).is_ok());
        assert!(check_origin(&req(&[host, ("origin", "null")])).is_err());
        assert!(check_origin(&req(&[host, ("sec-fetch-site", "cross-site")])).is_err());
        assert!(check_origin(&req(&[host, ("sec-fetch-site", "same-origin")])).is_ok());
        // Default ports on either side.
        assert!(check_origin(&req(&[("host", "admin.local:80"), ("origin", "http://admin.local")])).is_ok());
        assert!(check_origin(&req(&[("host", "admin.local"), ("origin", "https://admin.local:443")])).is_ok());
        let refused = check_origin(&req(&[host, ("origin", "https://evil.example")]));
        assert!(refused.is_err_and(|m| m.contains("evil.example") && m.contains("127.0.0.1:9901")));
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
        // An IPv6 /64 is one address here.
        let a = IpAddr::from([0x2001, 0xdb8, 0, 0, 0, 0, 0, 1]);
        let b = IpAddr::from([0x2001, 0xdb8, 0, 0, 0, 0, 0, 2]);
        for _ in 0..MAX_FAILURES {
            f.failed(a);
        }
        assert!(f.blocked(b).is_some());
        assert!(f.log_host() && !f.log_host());
    }
}
