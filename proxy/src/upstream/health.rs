//! Active health checks: `GET health.path` to every address of a backend
//! with `health` set, each `interval`, through the backend's own client (so
//! TLS backends are checked over TLS); or, with `health.grpc_service`,
//! gRPC's standard `grpc.health.v1.Health/Check`, which passes only when it
//! answers OK and SERVING. `unhealthy` failures in a row (no answer within
//! `timeout`, or a status other than 2xx/3xx) mark the address down;
//! `healthy` good answers in a row bring it back. Checks run in the
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
    let path = match &hc.grpc_service {
        Some(_) => "/grpc.health.v1.Health/Check".parse().ok(),
        None => hc.path.parse().ok(),
    };
    let Some(uri) = b.uri(&ep, path) else { return };
    let mut req = match &hc.grpc_service {
        Some(_) => Request::post(uri)
            .header(header::CONTENT_TYPE, HeaderValue::from_static("application/grpc"))
            .header(header::TE, HeaderValue::from_static("trailers")),
        None => Request::get(uri),
    };
    if let Some(h) = req.headers_mut() {
        h.insert(header::USER_AGENT, USER_AGENT.clone());
        if let Some(host) = &b.host_header {
            h.insert(header::HOST, host.clone());
        }
    }
    let body = hc.grpc_service.as_deref().map(grpc_check_request).unwrap_or_default();
    let Ok(req) = req.body(UpstreamBody::bytes(body)) else { return };
    let answer = async {
        let resp = b.send(&snap.client, req, false).await.ok()?;
        let status = resp.status();
        // Read to the end (so the pooled connection can be reused, and a
        // gRPC status arrives in the trailers).
        let (parts, body) = resp.into_parts();
        let collected = http_body_util::BodyExt::collect(body).await.ok()?;
        Some(match &hc.grpc_service {
            None => status.is_success() || status.is_redirection(),
            Some(_) => {
                let trailers = collected.trailers().cloned();
                let code = trailers.as_ref().and_then(grpc_status).or_else(|| grpc_status(&parts.headers));
                status.is_success() && code == Some(0) && serving(&collected.to_bytes())
            }
        })
    };
    let ok = matches!(tokio::time::timeout(hc.timeout, answer).await, Ok(Some(true)));
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

fn grpc_status(h: &http::HeaderMap) -> Option<u8> {
    h.get("grpc-status").map(|v| weir_control::classify::parse_grpc_status(v.as_bytes()))
}

/// A `grpc.health.v1.HealthCheckRequest { service }` in its gRPC frame
/// (flag 0, 4-byte length, then field 1 as a length-delimited string).
fn grpc_check_request(service: &str) -> bytes::Bytes {
    let mut msg = Vec::with_capacity(service.len() + 8);
    if !service.is_empty() {
        msg.push(0x0a);
        let mut n = service.len();
        while n >= 0x80 {
            msg.push((n as u8 & 0x7f) | 0x80);
            n >>= 7;
        }
        msg.push(n as u8);
        msg.extend_from_slice(service.as_bytes());
    }
    let mut frame = Vec::with_capacity(msg.len() + 5);
    frame.push(0);
    frame.extend_from_slice(&(msg.len() as u32).to_be_bytes());
    frame.extend_from_slice(&msg);
    frame.into()
}

/// Whether a gRPC-framed `HealthCheckResponse` says SERVING (field 1 = 1).
/// Fields other than 1 are skipped by their wire type; anything malformed
/// is not serving.
fn serving(frame: &[u8]) -> bool {
    let Some(msg) = frame.get(5..) else { return false };
    if frame[0] != 0 || u32::from_be_bytes([frame[1], frame[2], frame[3], frame[4]]) as usize != msg.len() {
        return false;
    }
    let mut i = 0;
    let mut status = 0u64;
    let varint = |i: &mut usize| -> Option<u64> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = *msg.get(*i)?;
            *i += 1;
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Some(v);
            }
        }
        None
    };
    while i < msg.len() {
        let Some(key) = varint(&mut i) else { return false };
        let skip = match key & 7 {
            0 => match varint(&mut i) {
                Some(v) if key >> 3 == 1 => {
                    status = v;
                    0
                }
                Some(_) => 0,
                None => return false,
            },
            1 => 8,
            2 => match varint(&mut i) {
                Some(n) => n as usize,
                None => return false,
            },
            5 => 4,
            _ => return false,
        };
        i = match i.checked_add(skip) {
            Some(n) if n <= msg.len() => n,
            _ => return false,
        };
    }
    status == 1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn health_check_messages() {
        assert_eq!(&grpc_check_request("")[..], [0, 0, 0, 0, 0]);
        assert_eq!(&grpc_check_request("a.B")[..], [0, 0, 0, 0, 5, 0x0a, 3, b'a', b'.', b'B']);
        assert!(serving(&[0, 0, 0, 0, 2, 0x08, 1]));
        assert!(!serving(&[0, 0, 0, 0, 2, 0x08, 2]), "NOT_SERVING");
        assert!(!serving(&[0, 0, 0, 0, 0]), "UNKNOWN (0) is not serving");
        assert!(serving(&[0, 0, 0, 0, 5, 0x12, 1, b'x', 0x08, 1]), "an unknown field is skipped");
        assert!(!serving(&[0, 0, 0, 0, 3, 0x08, 1]), "length mismatch");
        assert!(!serving(&[0, 0, 0, 0, 2, 0x08, 0x81]), "truncated varint");
        assert!(!serving(&[1, 0, 0, 0, 2, 0x08, 1]), "compressed");
    }
}
