//! A response body read from an upstream connection, framed by its head
//! (Content-Length, strict chunked coding, or until close), and the
//! connection's return to its pool when the body ended exactly.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use bytes::{Buf, Bytes, BytesMut};
use http_body::{Frame, SizeHint};
use tokio::net::TcpStream;

use super::head::{Chunk, Framing, RawHeaders};
use super::pool::Discard;
use crate::clock::coarse_ms;
use crate::upstream::endpoint::Endpoint;
use crate::wire::{poll_read, LazyTimer};

/// Longest chunk-size or trailer line.
const MAX_LINE: usize = 4096;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

#[derive(Debug)]
struct Conn {
    stream: TcpStream,
    /// Bytes read and not yet consumed.
    buf: BytesMut,
    /// The response-head timer, kept for the connection's life: moved only
    /// when a deadline comes nearer, where a timer per request costs a
    /// registration and a removal.
    timer: LazyTimer,
}

/// A response body read from an upstream connection, which goes back to
/// its address's pool when the body was read to its end.
#[derive(Debug)]
pub(crate) struct UpstreamResponse {
    conn: Option<Conn>,
    framing: Framing,
    reusable: bool,
    ep: Arc<Endpoint>,
    /// The header fields, when they pass through unparsed. Boxed: this
    /// body is part of the connection task's state while the response is
    /// written, and that task's allocation is what an idle keep-alive
    /// connection costs (inline, it grew from 2.5 to 2.9 KiB).
    raw: Option<Box<RawHeaders>>,
    /// `timeouts.upstream_read` in ms (0: no limit), and the
    /// [`coarse_ms`] by which the next piece of body must arrive.
    read_ms: u64,
    deadline: u64,
}

/// The upstream broke the response body (closed early, or bad chunking).
#[derive(Debug)]
pub(crate) struct BodyError(&'static str);

impl std::fmt::Display for BodyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0)
    }
}

impl std::error::Error for BodyError {}

/// One CRLF-terminated line at the front of `buf` (without the CRLF).
fn line(buf: &BytesMut) -> Result<Option<usize>, BodyError> {
    match buf.iter().take(MAX_LINE).position(|&b| b == b'\n') {
        Some(end) if end > 0 && buf[end - 1] == b'\r' => Ok(Some(end - 1)),
        Some(_) => Err(BodyError("chunked body: line without CRLF")),
        None if buf.len() >= MAX_LINE => Err(BodyError("chunked body: line too long")),
        None => Ok(None),
    }
}

fn chunk_size(line: &[u8]) -> Result<u64, BodyError> {
    let digits = line.split(|&b| b == b';').next().unwrap_or_default();
    let digits = digits.trim_ascii_end();
    if digits.is_empty() || digits.len() > 15 || !digits.iter().all(u8::is_ascii_hexdigit) {
        return Err(BodyError("chunked body: invalid chunk size"));
    }
    let s = std::str::from_utf8(digits).map_err(|_| BodyError("chunked body: invalid chunk size"))?;
    u64::from_str_radix(s, 16).map_err(|_| BodyError("chunked body: invalid chunk size"))
}

impl UpstreamResponse {
    /// The body that follows a response head, on its connection (`buf`
    /// holds what was read past the head), framed as the head says.
    pub(super) fn new(
        (stream, buf, mut timer): (TcpStream, BytesMut, LazyTimer),
        (framing, reusable): (Framing, bool),
        ep: Arc<Endpoint>,
        raw: Option<Box<RawHeaders>>,
        read_timeout: std::time::Duration,
    ) -> Self {
        // The body may be read by another task than the head's (the
        // timer's next wait registers whichever reads it).
        timer.rebind();
        // Whole milliseconds (the coarse clock's), at least 1 when set.
        let read_ms = if read_timeout.is_zero() { 0 } else { (read_timeout.as_millis() as u64).max(1) };
        let deadline = coarse_ms() + read_ms;
        // Armed for the head's deadline: moved in if the body's first wait
        // must end sooner (a no-op with the defaults).
        if read_ms > 0 {
            timer.guard(deadline);
        }
        let conn = Conn { stream, buf, timer };
        let mut body = UpstreamResponse { conn: Some(conn), framing, reusable, ep, raw, read_ms, deadline };
        body.settle();
        body
    }

    /// The header fields kept unparsed (see [`RawHeaders`]), once.
    pub(crate) fn take_raw_headers(&mut self) -> Option<Box<RawHeaders>> {
        self.raw.take()
    }

    /// Ends the body if nothing is left, returning the connection to its
    /// pool when it may carry another request.
    fn settle(&mut self) {
        if matches!(self.framing, Framing::Length(0)) {
            self.finish();
        }
    }

    /// The body ended at its framing's end: the connection goes back to
    /// the pool only when nothing was read past that end.
    fn finish(&mut self) {
        self.framing = Framing::Done;
        if let Some(conn) = self.conn.take() {
            if !conn.buf.is_empty() {
                tracing::debug!(addr = %self.ep.addr, bytes = conn.buf.len(), "upstream sent bytes after its response: connection closed");
                self.ep.pool.discards.count(Discard::UnreadBytes);
            } else if self.reusable {
                self.ep.pool.put(conn.stream, conn.timer, self.ep.in_flight());
            }
        }
    }

    /// The body cannot go on: the connection is closed (counted as `why`).
    fn broken(&mut self, why: Discard, err: BoxError) -> Poll<Option<Result<Bytes, BoxError>>> {
        tracing::debug!(addr = %self.ep.addr, reason = why.as_str(), "upstream response body cut short: {err}");
        self.ep.pool.discards.count(why);
        self.conn = None;
        self.framing = Framing::Done;
        Poll::Ready(Some(Err(err)))
    }

    /// The next piece of body out of the buffered bytes, if one is there.
    fn next_piece(&mut self) -> Result<Option<Bytes>, BodyError> {
        loop {
            let Some(conn) = self.conn.as_mut() else { return Ok(None) };
            match self.framing {
                Framing::Done => return Ok(None),
                Framing::Length(0) => {
                    self.finish();
                    return Ok(None);
                }
                Framing::Length(left) => {
                    if conn.buf.is_empty() {
                        return Ok(None);
                    }
                    let n = (conn.buf.len() as u64).min(left) as usize;
                    self.framing = Framing::Length(left - n as u64);
                    return Ok(Some(conn.buf.split_to(n).freeze()));
                }
                Framing::Close => {
                    return Ok((!conn.buf.is_empty()).then(|| conn.buf.split().freeze()));
                }
                Framing::Chunked(Chunk::Size) => {
                    let Some(end) = line(&conn.buf)? else { return Ok(None) };
                    let size = chunk_size(&conn.buf[..end])?;
                    conn.buf.advance(end + 2);
                    self.framing = Framing::Chunked(if size == 0 { Chunk::Trailers } else { Chunk::Data(size) });
                }
                Framing::Chunked(Chunk::Data(left)) => {
                    if conn.buf.is_empty() {
                        return Ok(None);
                    }
                    let n = (conn.buf.len() as u64).min(left) as usize;
                    let rest = left - n as u64;
                    self.framing = Framing::Chunked(if rest == 0 { Chunk::DataEnd } else { Chunk::Data(rest) });
                    return Ok(Some(conn.buf.split_to(n).freeze()));
                }
                Framing::Chunked(Chunk::DataEnd) => {
                    if conn.buf.len() < 2 {
                        return Ok(None);
                    }
                    if &conn.buf[..2] != b"\r\n" {
                        return Err(BodyError("chunked body: chunk data longer than its size"));
                    }
                    conn.buf.advance(2);
                    self.framing = Framing::Chunked(Chunk::Size);
                }
                Framing::Chunked(Chunk::Trailers) => {
                    // Trailer fields are read and dropped, up to the empty line.
                    let Some(end) = line(&conn.buf)? else { return Ok(None) };
                    conn.buf.advance(end + 2);
                    if end == 0 {
                        self.finish();
                        return Ok(None);
                    }
                }
            }
        }
    }

    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Bytes, BoxError>>> {
        loop {
            match self.next_piece() {
                Err(e) => return self.broken(Discard::BrokenBody, e.into()),
                Ok(Some(piece)) => {
                    self.settle();
                    return Poll::Ready(Some(Ok(piece)));
                }
                Ok(None) if matches!(self.framing, Framing::Done) => return Poll::Ready(None),
                Ok(None) => {}
            }
            let Some(conn) = self.conn.as_mut() else { return Poll::Ready(None) };
            let read = match poll_read(&mut conn.stream, cx, &mut conn.buf) {
                Poll::Ready(read) => read,
                Poll::Pending if self.read_ms == 0 => return Poll::Pending,
                Poll::Pending => {
                    ready!(conn.timer.poll_expired(cx, self.deadline));
                    let err = BodyError("no response body data from the upstream within timeouts.upstream_read");
                    return self.broken(Discard::ReadTimeout, err.into());
                }
            };
            match read {
                Ok(0) if matches!(self.framing, Framing::Close) => {
                    self.conn = None;
                    self.framing = Framing::Done;
                    return Poll::Ready(None);
                }
                Ok(0) => {
                    return self
                        .broken(Discard::BrokenBody, BodyError("upstream closed the connection mid-body").into());
                }
                Ok(_) => self.deadline = coarse_ms() + self.read_ms,
                Err(e) => return self.broken(Discard::BrokenBody, e.into()),
            }
        }
    }
}

impl http_body::Body for UpstreamResponse {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        self.get_mut().poll(cx).map(|r| r.map(|r| r.map(Frame::data)))
    }

    fn is_end_stream(&self) -> bool {
        matches!(self.framing, Framing::Done | Framing::Length(0))
    }

    fn size_hint(&self) -> SizeHint {
        match self.framing {
            Framing::Length(n) => SizeHint::with_exact(n),
            Framing::Done => SizeHint::with_exact(0),
            _ => SizeHint::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunk_lines_are_strict() {
        assert_eq!(chunk_size(b"1f").unwrap(), 31);
        assert_eq!(chunk_size(b"A;ext=1").unwrap(), 10);
        for bad in [&b""[..], b"0x1", b"+1", b"-1", b"g", b"1234567890abcdef0", b" 1"] {
            assert!(chunk_size(bad).is_err(), "{bad:?}");
        }
        assert!(line(&BytesMut::from(&b"5\n"[..])).is_err(), "bare LF");
        assert_eq!(line(&BytesMut::from(&b"5\r\nabc"[..])).unwrap(), Some(1));
        assert_eq!(line(&BytesMut::from(&b"5"[..])).unwrap(), None);
    }
}
