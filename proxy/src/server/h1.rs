//! weir's own HTTP/1.1 loop, for plaintext connections and HTTP/1.1 over
//! TLS: the common case, served without hyper's connection machinery.
//!
//! **Why.** hyper keeps a 16 KiB read buffer, an 8 KiB write buffer and its
//! dispatcher on every connection for as long as it is open, idle or not,
//! and its per-request path (dispatcher, codec state, buffered writes) was
//! the largest user-space cost in the profile. This loop holds **nothing**
//! while a connection waits between requests: it waits for readability
//! without a buffer, reads into a per-thread scratch buffer, copies the
//! request (usually ~100 bytes) into an exactly sized one that its header
//! values then share, and writes each response from a per-thread buffer.
//!
//! **Scope.** Only what it fully understands: an HTTP/1.1 request in origin
//! form, without a body (no Content-Length, no Transfer-Encoding), without
//! Upgrade or Expect, whose `Connection` says at most `close` or
//! `keep-alive`, within every head limit. Anything else (a body, an
//! upgrade, HTTP/1.0, h2c, a malformed or oversized head) hands the
//! connection, with the bytes already read, to hyper for the rest of its
//! life ([`End::Fallback`]), so every rule hyper enforces still applies to
//! whatever this loop does not serve itself.
//!
//! Both paths share the request path itself ([`super::proxy::respond`]):
//! routing, telemetry, access log and error responses are the same.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;

use bytes::{Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode, Uri, Version};
use http_body::Body;
use tokio::io::AsyncWriteExt;
use tokio::io::{AsyncRead, AsyncWrite};
use weir_control::config::Limits;

use super::request::ConnCtx;
use super::response::ResponseBody;
use crate::clock::coarse_ms;
use crate::dataplane::DataPlane;
use crate::snapshot::Snapshot;
use crate::wire::{date, hex, itoa, poll_read, put_write_scratch, take_write_scratch, LazyTimer};

/// Header slots of the parser; a request with more goes to hyper, which
/// applies `limits.max_headers`.
const MAX_HEADERS: usize = 64;
/// Response bytes gathered before a write; larger body pieces are written
/// straight from their own buffer.
const GATHER: usize = 16 * 1024;

/// What this loop serves: a TCP stream, or a TLS one over it (whose
/// writes must be flushed: rustls may keep records it could not send).
pub(crate) trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<S: AsyncRead + AsyncWrite + Unpin + Send> Stream for S {}

/// How the loop ended.
pub(crate) enum End {
    /// The connection is done (closed, timed out, drained, or failed).
    Closed,
    /// A request this loop does not serve: hyper takes the connection,
    /// starting with these bytes.
    Fallback(Bytes),
}

/// A request head parsed for the fast path.
struct Head {
    parts: http::request::Parts,
    len: usize,
    /// The client asked to close after this request.
    close: bool,
}

// Built once per request and consumed at once: boxing it would only add an
// allocation.
#[allow(clippy::large_enum_variant)]
enum Parsed {
    Complete(Head),
    Partial,
    Fallback,
}

/// Parses a request head out of `data`, sharing its bytes.
fn parse(data: &Bytes, limits: &Limits) -> Parsed {
    // Uninitialised: httparse writes the slots it fills (64 × 32 bytes
    // cleared per request otherwise).
    let mut slots = [const { std::mem::MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut []);
    let line_len = memchr_nl(data).unwrap_or(data.len());
    if line_len > limits.max_request_line {
        return Parsed::Fallback; // 414, answered on the hyper path
    }
    let len = match req.parse_with_uninit_headers(data, &mut slots) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if data.len() <= limits.max_header_bytes => return Parsed::Partial,
        _ => return Parsed::Fallback,
    };
    if len > limits.max_header_bytes || req.headers.len() > limits.max_headers || req.version != Some(1) {
        return Parsed::Fallback;
    }
    let (Some(method), Some(path)) = (req.method, req.path) else { return Parsed::Fallback };
    let Ok(method) = Method::from_bytes(method.as_bytes()) else { return Parsed::Fallback };
    if method == Method::CONNECT || !path.starts_with('/') {
        return Parsed::Fallback;
    }
    let Ok(uri) = Uri::from_maybe_shared(data.slice_ref(path.as_bytes())) else { return Parsed::Fallback };
    // Room for the X-Forwarded-* fields added on the way.
    let mut headers = HeaderMap::with_capacity(req.headers.len() + 4);
    let mut close = false;
    for h in req.headers.iter() {
        let Ok(name) = HeaderName::from_bytes(h.name.as_bytes()) else { return Parsed::Fallback };
        if name == header::CONTENT_LENGTH
            || name == header::TRANSFER_ENCODING
            || name == header::UPGRADE
            || name == header::EXPECT
        {
            return Parsed::Fallback;
        }
        if name == header::CONNECTION {
            for token in h.value.split(|&b| b == b',') {
                let token = token.trim_ascii();
                if token.eq_ignore_ascii_case(b"close") {
                    close = true;
                } else if !token.eq_ignore_ascii_case(b"keep-alive") && !token.is_empty() {
                    return Parsed::Fallback;
                }
            }
        }
        let Ok(value) = HeaderValue::from_maybe_shared(data.slice_ref(h.value)) else { return Parsed::Fallback };
        headers.append(name, value);
    }
    let (mut parts, ()) = Request::new(()).into_parts();
    parts.method = method;
    parts.uri = uri;
    parts.version = Version::HTTP_11;
    parts.headers = headers;
    Parsed::Complete(Head { parts, len, close })
}

fn memchr_nl(data: &[u8]) -> Option<usize> {
    data.iter().position(|&b| b == b'\n')
}

/// Serves requests on `stream` until it closes, times out, drains, or sends
/// something for hyper.
///
/// An idle connection's task holds this future's state for as long as the
/// connection is open (see `conn::serve`): not an `async fn`, whose
/// arguments would be copied beside themselves, and what the snapshot
/// holds is read from it rather than kept in locals.
#[allow(clippy::manual_async_fn)] // on purpose: see above
pub(crate) fn serve<'a, S: Stream>(
    dp: &'a Arc<DataPlane>,
    stream: &'a mut S,
    ctx: &'a Arc<ConnCtx>,
    snap: &'a Snapshot,
) -> impl Future<Output = End> + Send + 'a {
    async move {
        let mut pending = BytesMut::new();
        // One timer per connection, moved only when a deadline comes nearer
        // (see `LazyTimer`): a request on a busy connection touches no timer.
        let idle = || snap.timeouts.idle.as_millis() as u64;
        let mut idle_since = coarse_ms();
        let mut head_started = idle_since;
        let mut timer = LazyTimer::new(idle_since + idle());
        // Made before the flag is read: a drain that begins in between still
        // wakes it. Polled once, in place: it keeps this task's waker
        // registered until shutdown notifies (one registration per connection).
        let drain = dp.drain.notified();
        tokio::pin!(drain);
        let mut draining = dp.draining.load(std::sync::atomic::Ordering::Relaxed);
        let mut drain_registered = false;
        loop {
            // --- a request head ---
            let head = loop {
                if !pending.is_empty() {
                    let data = std::mem::take(&mut pending).freeze();
                    match parse(&data, &snap.config.limits) {
                        Parsed::Complete(head) => {
                            if head.len < data.len() {
                                // Pipelined: the next request is already here.
                                pending.extend_from_slice(&data[head.len..]);
                            }
                            break head;
                        }
                        Parsed::Fallback => return End::Fallback(data),
                        Parsed::Partial => pending.extend_from_slice(&data),
                    }
                }
                if draining && pending.is_empty() {
                    return End::Closed;
                }
                let was_empty = pending.is_empty();
                let deadline = if was_empty {
                    idle_since + idle()
                } else {
                    head_started + snap.timeouts.header_read.as_millis() as u64
                };
                timer.guard(deadline);
                // Bytes, the timer, or shutdown: one poll of each, no future
                // built per wait.
                let event = std::future::poll_fn(|cx| {
                    if let Poll::Ready(r) = poll_read(stream, cx, &mut pending) {
                        return Poll::Ready(Wake::Read(r));
                    }
                    if !draining {
                        // `shutdown()` sets the flag before it notifies; the
                        // notification, once registered, wakes this task.
                        if dp.draining.load(std::sync::atomic::Ordering::Relaxed) {
                            return Poll::Ready(Wake::Drain);
                        }
                        if !drain_registered {
                            if drain.as_mut().poll(cx).is_ready() {
                                return Poll::Ready(Wake::Drain);
                            }
                            drain_registered = true;
                        }
                    }
                    if timer.poll_expired(cx, deadline).is_ready() {
                        return Poll::Ready(Wake::Timer);
                    }
                    Poll::Pending
                })
                .await;
                match event {
                    Wake::Read(Ok(0) | Err(_)) => return End::Closed,
                    Wake::Read(Ok(_)) => {
                        if was_empty {
                            head_started = coarse_ms();
                        }
                    }
                    Wake::Drain => draining = true,
                    Wake::Timer => {
                        if !pending.is_empty() {
                            tracing::debug!(peer = %ctx.peer, "request head not complete within timeouts.header_read: closing");
                        }
                        return End::Closed;
                    }
                }
            };

            // --- the request ---
            // The request and its response in one boxed future, so that this
            // task is no larger than its wait between requests (an idle
            // connection holds it; the response writer alone would more than
            // double it), for the one allocation a request made before.
            let written = Box::pin(exchange(dp, ctx, stream, head, draining)).await;
            draining |= dp.draining.load(std::sync::atomic::Ordering::Relaxed);
            match written {
                Ok(true) => {}
                Ok(false) => {
                    let _ = stream.shutdown().await;
                    return End::Closed;
                }
                Err(e) => {
                    tracing::debug!(peer = %ctx.peer, "writing a response failed: {e}");
                    return End::Closed;
                }
            }
            idle_since = coarse_ms();
        }
    }
}

/// Answers one request and writes the response; `Ok(true)` when the
/// connection may carry another.
async fn exchange<S: Stream>(
    dp: &Arc<DataPlane>,
    ctx: &Arc<ConnCtx>,
    stream: &mut S,
    mut head: Head,
    draining: bool,
) -> io::Result<bool> {
    let head_only = head.parts.method == Method::HEAD;
    let resp = super::proxy::respond(dp, ctx, &mut head.parts, None).await;
    let close = head.close
        || draining
        || dp.draining.load(std::sync::atomic::Ordering::Relaxed)
        || dp.leaving.load(std::sync::atomic::Ordering::Relaxed);
    write_response(stream, resp, head_only, close).await
}

/// What ended a wait between requests.
enum Wake {
    Read(io::Result<usize>),
    Drain,
    Timer,
}

/// How the response body is framed on the wire.
#[derive(Clone, Copy)]
enum Framing {
    None,
    Length(u64),
    Chunked,
}

/// Writes `resp`; `Ok(true)` when the connection may carry another request.
async fn write_response<S: Stream>(
    stream: &mut S,
    resp: Response<ResponseBody>,
    head_only: bool,
    mut close: bool,
) -> io::Result<bool> {
    let mut w = take_write_scratch();
    let (parts, mut body) = resp.into_parts();
    let raw = body.take_raw_headers();
    let status = parts.status;
    let no_body = head_only
        || status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED;
    // Ours: weir's own error responses say `connection: close` when the
    // connection cannot be trusted (the upstream's was removed as hop-by-hop).
    if let Some(c) = parts.headers.get(header::CONNECTION) {
        close |= c.as_bytes().eq_ignore_ascii_case(b"close");
    }
    let declared = match &raw {
        Some(raw) => raw.content_length(),
        None => parts.headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok()),
    };
    let framing = match declared {
        _ if no_body => Framing::None,
        Some(n) => Framing::Length(n),
        None => match body.size_hint().exact() {
            Some(n) => Framing::Length(n),
            None => Framing::Chunked,
        },
    };

    w.extend_from_slice(b"HTTP/1.1 ");
    w.extend_from_slice(status.as_str().as_bytes());
    w.push(b' ');
    w.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
    w.extend_from_slice(b"\r\n");
    for (name, value) in parts.headers.iter() {
        if name == header::CONNECTION {
            continue;
        }
        w.extend_from_slice(name.as_str().as_bytes());
        w.extend_from_slice(b": ");
        w.extend_from_slice(value.as_bytes());
        w.extend_from_slice(b"\r\n");
    }
    if let Some(raw) = &raw {
        raw.write_to(&mut w);
    }
    if !raw.as_ref().is_some_and(|r| r.has_date()) && !parts.headers.contains_key(header::DATE) {
        w.extend_from_slice(b"date: ");
        date(&mut w);
        w.extend_from_slice(b"\r\n");
    }
    match framing {
        Framing::Length(n) if declared.is_none() => {
            w.extend_from_slice(b"content-length: ");
            w.extend_from_slice(itoa(n, &mut [0; 20]));
            w.extend_from_slice(b"\r\n");
        }
        Framing::Chunked => w.extend_from_slice(b"transfer-encoding: chunked\r\n"),
        _ => {}
    }
    if close {
        w.extend_from_slice(b"connection: close\r\n");
    }
    w.extend_from_slice(b"\r\n");

    let mut sent = 0u64;
    if !matches!(framing, Framing::None) && !body.is_end_stream() {
        loop {
            // Gather whatever is ready; write before waiting for more.
            let polled = std::future::poll_fn(|cx| Poll::Ready(Pin::new(&mut body).poll_frame(cx))).await;
            let frame = match polled {
                Poll::Ready(f) => f,
                Poll::Pending => {
                    if !w.is_empty() {
                        stream.write_all(&w).await?;
                        w.clear();
                    }
                    // Out before the wait (a no-op on TCP; rustls may hold
                    // records back).
                    stream.flush().await?;
                    std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await
                }
            };
            let data = match frame {
                None => break,
                Some(Err(e)) => {
                    // What was gathered goes out; the unterminated body
                    // and the close tell the client it is incomplete.
                    let _ = stream.write_all(&w).await;
                    let _ = stream.flush().await;
                    return Err(io::Error::other(e));
                }
                Some(Ok(f)) => match f.into_data() {
                    Ok(d) => d,
                    Err(_) => continue, // trailers are not forwarded
                },
            };
            if data.is_empty() {
                continue;
            }
            sent += data.len() as u64;
            match framing {
                Framing::Length(n) if sent > n => {
                    return Err(io::Error::other("response body longer than its content-length"));
                }
                Framing::Chunked => {
                    w.extend_from_slice(hex(data.len(), &mut [0; 16]));
                    w.extend_from_slice(b"\r\n");
                    put(stream, &mut w, &data).await?;
                    w.extend_from_slice(b"\r\n");
                }
                _ => put(stream, &mut w, &data).await?,
            }
            if body.is_end_stream() {
                break;
            }
        }
    }
    match framing {
        Framing::Chunked => w.extend_from_slice(b"0\r\n\r\n"),
        Framing::Length(n) if sent != n => {
            // The upstream's body ended short: the client must not wait.
            stream.write_all(&w).await?;
            stream.flush().await?;
            return Ok(false);
        }
        _ => {}
    }
    drop(body); // the request is recorded here, before the client can send another
    stream.write_all(&w).await?;
    stream.flush().await?;
    put_write_scratch(w);
    Ok(!close)
}

/// Appends `data` to the gathered bytes, or (when large) writes both.
async fn put<S: Stream>(stream: &mut S, w: &mut Vec<u8>, data: &Bytes) -> io::Result<()> {
    if w.len() + data.len() <= GATHER {
        w.extend_from_slice(data);
        return Ok(());
    }
    if !w.is_empty() {
        stream.write_all(w).await?;
        w.clear();
    }
    stream.write_all(data).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> Limits {
        Limits {
            max_header_bytes: 65_536,
            max_headers: 100,
            max_connections: 10_000,
            max_request_line: 8192,
            max_requests_in_flight: 10_000,
            headers_with_underscores: weir_control::config::Underscores::Allow,
        }
    }

    fn parsed(raw: &str) -> Parsed {
        parse(&Bytes::copy_from_slice(raw.as_bytes()), &limits())
    }

    #[test]
    fn a_plain_get_is_served_here_and_shares_its_bytes() {
        let raw = "GET /a?b=1 HTTP/1.1\r\nHost: x\r\nConnection: keep-alive\r\nX-A: 1\r\n\r\nGET /next";
        let Parsed::Complete(h) = parsed(raw) else { panic!("not complete") };
        assert_eq!(h.len, raw.find("GET /next").unwrap());
        assert_eq!(h.parts.uri, "/a?b=1");
        assert_eq!(h.parts.headers["x-a"], "1");
        assert!(!h.close);
        let Parsed::Complete(h) = parsed("HEAD / HTTP/1.1\r\nhost: x\r\nconnection: Close\r\n\r\n") else { panic!() };
        assert!(h.close);
        assert_eq!(h.parts.method, Method::HEAD);
    }

    #[test]
    fn anything_else_goes_to_hyper() {
        for raw in [
            "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n\r\na",
            "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n",
            "GET / HTTP/1.0\r\nHost: x\r\n\r\n",
            "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n\r\n",
            "GET http://x/ HTTP/1.1\r\nHost: x\r\n\r\n",
            "CONNECT x:443 HTTP/1.1\r\nHost: x\r\n\r\n",
            "GET / HTTP/1.1\r\nHost : x\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: x\r\n folded\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: x\r\nX: a\0b\r\n\r\n",
        ] {
            assert!(matches!(parsed(raw), Parsed::Fallback), "{raw:?}");
        }
        let long = format!("GET /{} HTTP/1.1\r\n", "a".repeat(limits().max_request_line));
        assert!(matches!(parsed(&long), Parsed::Fallback), "request line over the limit");
        let many: String = (0..70).map(|i| format!("x-{i}: 1\r\n")).collect();
        assert!(matches!(parsed(&format!("GET / HTTP/1.1\r\nHost: x\r\n{many}\r\n")), Parsed::Fallback));
        assert!(matches!(parsed("GET / HTTP/1.1\r\nHost: x\r\n"), Parsed::Partial));
    }
}
