//! Header rules of a proxy (RFC 9110 §7.6): hop-by-hop fields are removed
//! in both directions, X-Forwarded-* are added towards the upstream.

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
static KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
static PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");

/// Removes hop-by-hop fields: every field named in `Connection`, then
/// Connection, Keep-Alive, Proxy-Connection, TE, Trailer, Transfer-Encoding
/// (hyper re-frames the body itself) and Upgrade. When `upgrade` is set, the
/// Upgrade field is kept and `Connection: upgrade` restored, as a tunnel
/// needs both.
///
/// With `keep_te`, a TE that accepts `trailers` is forwarded as
/// `te: trailers`, its one value HTTP/2 allows (RFC 9113 §8.2.2): gRPC
/// servers require it, and it tells the upstream that trailers will reach
/// the client (weir passes them through on HTTP/2 and TLS backends; weir's
/// own HTTP/1.1 client drops them, so plain backends are not told). Its
/// other codings are hop-by-hop and go.
pub(crate) fn strip_hop_by_hop(headers: &mut HeaderMap, upgrade: bool, keep_te: bool) {
    // Most messages carry none of them: one pass over the names, no lookups.
    let hop = |k: &HeaderName| {
        k == header::CONNECTION
            || k == header::TE
            || k == header::TRAILER
            || k == header::TRANSFER_ENCODING
            || k == header::UPGRADE
            || k == KEEP_ALIVE
            || k == PROXY_CONNECTION
    };
    if !upgrade && !headers.keys().any(hop) {
        return;
    }
    let trailers = keep_te
        && headers.get_all(header::TE).iter().any(|v| {
            v.to_str().is_ok_and(|s| {
                s.split(',').any(|t| t.split(';').next().is_some_and(|t| t.trim().eq_ignore_ascii_case("trailers")))
            })
        });
    if headers.contains_key(header::CONNECTION) {
        // Connection may repeat; collect every named field before removing.
        let named: Vec<HeaderName> = headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|s| s.split(','))
            .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok())
            .collect();
        headers.remove(header::CONNECTION);
        for name in named {
            if !(upgrade && name == header::UPGRADE) {
                headers.remove(name);
            }
        }
    }
    for name in [&KEEP_ALIVE, &PROXY_CONNECTION, &header::TE, &header::TRAILER, &header::TRANSFER_ENCODING] {
        headers.remove(name);
    }
    if trailers {
        headers.insert(header::TE, HeaderValue::from_static("trailers"));
    }
    if upgrade {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    } else {
        headers.remove(header::UPGRADE);
    }
}

/// Whether an HTTP/1.1 request asks to switch protocols (e.g. WebSocket).
pub(crate) fn is_upgrade_request(headers: &HeaderMap) -> bool {
    headers.contains_key(header::UPGRADE)
        && headers.get_all(header::CONNECTION).iter().any(|v| {
            v.to_str().map(|s| s.split(',').any(|t| t.trim().eq_ignore_ascii_case("upgrade"))).unwrap_or(false)
        })
}

/// Appends the peer to X-Forwarded-For and sets X-Forwarded-Proto and -Host
/// (the client's values for those two are not trusted).
pub(crate) fn add_forwarded(headers: &mut HeaderMap, peer_ip: &HeaderValue, host: Option<HeaderValue>, tls: bool) {
    let mut prior = headers.get_all(&X_FORWARDED_FOR).iter().peekable();
    if prior.peek().is_some() {
        let mut joined: Vec<u8> = Vec::with_capacity(64);
        for v in prior {
            joined.extend_from_slice(v.as_bytes());
            joined.extend_from_slice(b", ");
        }
        joined.extend_from_slice(peer_ip.as_bytes());
        match HeaderValue::from_bytes(&joined) {
            Ok(v) => {
                headers.insert(X_FORWARDED_FOR.clone(), v);
            }
            Err(_) => {
                headers.insert(X_FORWARDED_FOR.clone(), peer_ip.clone());
            }
        }
    } else {
        headers.insert(X_FORWARDED_FOR.clone(), peer_ip.clone());
    }
    headers.insert(X_FORWARDED_PROTO.clone(), HeaderValue::from_static(if tls { "https" } else { "http" }));
    match host {
        Some(h) => {
            headers.insert(X_FORWARDED_HOST.clone(), h);
        }
        None => {
            headers.remove(&X_FORWARDED_HOST);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut m = HeaderMap::new();
        for (k, v) in pairs {
            m.append(HeaderName::from_bytes(k.as_bytes()).unwrap(), HeaderValue::from_str(v).unwrap());
        }
        m
    }

    #[test]
    fn hop_by_hop_and_connection_named_fields_go() {
        let mut h = map(&[
            ("connection", "close, x-secret"),
            ("connection", "x-other"),
            ("x-secret", "1"),
            ("x-other", "1"),
            ("keep-alive", "timeout=5"),
            ("te", "trailers"),
            ("trailer", "x"),
            ("upgrade", "websocket"),
            ("proxy-connection", "keep-alive"),
            ("x-kept", "yes"),
        ]);
        strip_hop_by_hop(&mut h, false, true);
        assert_eq!(h.len(), 2, "{h:?}");
        assert_eq!(h["x-kept"], "yes");
        assert_eq!(h["te"], "trailers", "the one TE value HTTP/2 allows is kept");
    }

    #[test]
    fn te_keeps_only_trailers() {
        for (te, kept) in
            [("gzip, trailers;q=0.5", true), ("TRAILERS", true), ("gzip", false), ("deflate, chunked", false)]
        {
            let mut h = map(&[("te", te), ("x", "1")]);
            strip_hop_by_hop(&mut h, false, true);
            assert_eq!(h.get("te").map(|v| v.to_str().unwrap()), kept.then_some("trailers"), "{te}");
        }
    }

    #[test]
    fn upgrade_keeps_upgrade() {
        let mut h = map(&[("connection", "Upgrade"), ("upgrade", "websocket")]);
        assert!(is_upgrade_request(&h));
        strip_hop_by_hop(&mut h, true, true);
        assert_eq!(h["upgrade"], "websocket");
        assert_eq!(h["connection"], "upgrade");
    }

    #[test]
    fn forwarded_for_appends() {
        let mut h = map(&[("x-forwarded-for", "1.1.1.1"), ("x-forwarded-proto", "https")]);
        add_forwarded(
            &mut h,
            &HeaderValue::from_static("10.0.0.1"),
            Some(HeaderValue::from_static("a.example")),
            false,
        );
        assert_eq!(h["x-forwarded-for"], "1.1.1.1, 10.0.0.1");
        assert_eq!(h["x-forwarded-proto"], "http");
        assert_eq!(h["x-forwarded-host"], "a.example");
    }
}
