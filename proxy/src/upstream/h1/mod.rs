//! weir's own HTTP/1.1 client for plain backends, for requests without a
//! body (the common case of a proxy's traffic).
//!
//! **Why.** hyper-util's pooled client runs every upstream connection as a
//! task of its own, reached through a channel, checks connections out of a
//! pool behind a mutex and a hash map, and boxes its futures. Here the
//! request's own task writes the request and reads the response, and the
//! idle connections of an address wait in lock-free queues on the address
//! itself ([`Pool`]): a checkout is a pop, a return a push.
//!
//! **Scope.** Plain HTTP/1.1 backends (no `tls`, no `http2`) and requests
//! without a body or upgrade; everything else goes through hyper's client.
//!
//! **Framing** follows RFC 9112 §6.3: no body for HEAD, 1xx, 204 and 304;
//! Transfer-Encoding chunked (validated strictly: hex sizes, CRLF line
//! ends, bounded lines); otherwise Content-Length (every value must be the
//! same valid number); otherwise until the upstream closes. A connection
//! goes back to the pool only when its response was read exactly to its end
//! with nothing after it, the response was HTTP/1.1 and did not say
//! `Connection: close`.

mod head;
pub(crate) mod pool;
mod response;

use std::io;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use bytes::BytesMut;
use http::header::{self, HeaderMap};
use http::{Method, Response};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

pub(crate) use self::head::RawHeaders;
use self::head::{parse_head, Head};
pub(crate) use self::response::UpstreamResponse;
use crate::clock::coarse_ms;
use crate::upstream::endpoint::Endpoint;
use crate::upstream::error::UpstreamErrorKind;
use crate::wire::{poll_read, put_write_scratch, take_write_scratch, LazyTimer};

/// The timeouts of one request: `connect` for a new connection, `response`
/// from sending to the whole response head, `read` between two pieces of
/// the body.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Timeouts {
    pub(crate) connect: Duration,
    pub(crate) response: Duration,
    pub(crate) read: Duration,
}

/// Sends a body-less request to `ep` and returns the response with its
/// head read within `t.response` (a new connection first connects within
/// `t.connect`); the body streams from the connection.
pub(crate) async fn send(
    ep: &Arc<Endpoint>,
    method: &Method,
    path: &str,
    headers: &HeaderMap,
    t: Timeouts,
) -> Result<Response<UpstreamResponse>, UpstreamErrorKind> {
    let deadline = coarse_ms() + t.response.as_millis() as u64;
    let (mut stream, timer, reused) = match ep.pool.checkout() {
        Some((s, mut timer)) => {
            timer.rebind();
            timer.guard(deadline);
            (s, timer, true)
        }
        None => (connect(ep, t.connect).await?, LazyTimer::new(deadline), false),
    };
    let mut w = take_write_scratch();
    w.extend_from_slice(method.as_str().as_bytes());
    w.push(b' ');
    w.extend_from_slice(path.as_bytes());
    w.extend_from_slice(b" HTTP/1.1\r\n");
    if !headers.contains_key(header::HOST) {
        w.extend_from_slice(b"host: ");
        w.extend_from_slice(ep.authority.as_str().as_bytes());
        w.extend_from_slice(b"\r\n");
    }
    for (name, value) in headers {
        w.extend_from_slice(name.as_str().as_bytes());
        w.extend_from_slice(b": ");
        w.extend_from_slice(value.as_bytes());
        w.extend_from_slice(b"\r\n");
    }
    // As hyper does: methods that usually carry a body say it is empty.
    if matches!(*method, Method::POST | Method::PUT | Method::PATCH) {
        w.extend_from_slice(b"content-length: 0\r\n");
    }
    w.extend_from_slice(b"\r\n");
    let written = stream.write_all(&w).await;
    put_write_scratch(w);
    if let Err(e) = written {
        tracing::debug!(addr = %ep.addr, reused, "upstream write failed: {e}");
        return Err(UpstreamErrorKind::Reset);
    }
    read_head(ep, stream, timer, deadline, *method == Method::HEAD, t.read).await
}

async fn connect(ep: &Endpoint, timeout: Duration) -> Result<TcpStream, UpstreamErrorKind> {
    match tokio::time::timeout(timeout, TcpStream::connect(ep.addr)).await {
        Err(_) => Err(UpstreamErrorKind::ConnectTimeout),
        Ok(Err(e)) => {
            tracing::debug!(addr = %ep.addr, "upstream connect failed: {e}");
            Err(if e.kind() == io::ErrorKind::TimedOut {
                UpstreamErrorKind::ConnectTimeout
            } else {
                UpstreamErrorKind::Connect
            })
        }
        Ok(Ok(s)) => {
            let _ = s.set_nodelay(true);
            Ok(s)
        }
    }
}

/// Reads more of the response; `Ok(0)` is end of stream, `None` that the
/// [`coarse_ms`] `deadline` passed.
async fn read_more(
    stream: &mut TcpStream,
    buf: &mut BytesMut,
    timer: &mut LazyTimer,
    deadline: u64,
) -> Option<io::Result<usize>> {
    std::future::poll_fn(|cx| match poll_read(stream, cx, buf) {
        Poll::Ready(r) => Poll::Ready(Some(r)),
        Poll::Pending => timer.poll_expired(cx, deadline).map(|()| None),
    })
    .await
}

async fn read_head(
    ep: &Arc<Endpoint>,
    mut stream: TcpStream,
    mut timer: LazyTimer,
    deadline: u64,
    head_request: bool,
    read_timeout: Duration,
) -> Result<Response<UpstreamResponse>, UpstreamErrorKind> {
    let mut buf = BytesMut::new();
    loop {
        if !buf.is_empty() {
            let data = std::mem::take(&mut buf).freeze();
            match parse_head(&data, head_request)? {
                Head::Partial => buf.extend_from_slice(&data),
                Head::Interim(len) => {
                    buf.extend_from_slice(&data[len..]);
                    continue;
                }
                Head::Complete(resp, raw, len, framing, reusable) => {
                    buf.extend_from_slice(&data[len..]);
                    let conn = (stream, buf, timer);
                    let body = UpstreamResponse::new(conn, (framing, reusable), ep.clone(), raw, read_timeout);
                    return Ok(resp.map(|()| body));
                }
            }
        }
        match read_more(&mut stream, &mut buf, &mut timer, deadline).await {
            None => return Err(UpstreamErrorKind::Timeout),
            Some(Ok(0)) => {
                // Closed before a complete head: a pooled connection the
                // upstream had just closed, or an upstream that died.
                tracing::debug!(addr = %ep.addr, "upstream closed before the response head");
                return Err(UpstreamErrorKind::Reset);
            }
            Some(Ok(_)) => {}
            Some(Err(e)) => {
                tracing::debug!(addr = %ep.addr, "upstream read failed: {e}");
                return Err(UpstreamErrorKind::Reset);
            }
        }
    }
}
