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

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use crossbeam_queue::ArrayQueue;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Response, StatusCode, Version};
use http_body::{Frame, SizeHint};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use super::{Endpoint, UpstreamErrorKind};
use crate::wire::{coarse_ms, poll_read, put_write_scratch, read_now, take_write_scratch, LazyTimer};

/// Idle connections kept per address at most (more are closed).
const POOL_SIZE: usize = 1024;
/// Longest response head accepted from an upstream.
const MAX_HEAD: usize = 64 * 1024;
/// Most header fields in a response head.
const MAX_HEADERS: usize = 100;
/// Longest chunk-size or trailer line.
const MAX_LINE: usize = 4096;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// An idle upstream connection.
#[derive(Debug)]
struct Idle {
    stream: TcpStream,
    timer: LazyTimer,
    /// [`coarse_ms`] when it went idle.
    since: u64,
}

/// The idle connections to one address.
///
/// **Which connection a request gets.** A connection returned by the only
/// request in flight to its address goes to the `hot` slot, which
/// checkouts take first: one request at a time then reuses one connection,
/// whose socket and state (the runtime's and the upstream's) are still in
/// cache, and the connections a burst opened stay idle until the sweeper
/// closes them (nginx keeps its upstream connections in LIFO order for the
/// same reason). Measured here at one request at a time after a load of 64:
/// 4–8 µs less per request than taking them in turn. With other requests
/// in flight a connection goes to the back of the `idle` queue and the
/// connections are reused in turn: every one is warm then, and handing the
/// connection whose response was just read straight to the next request
/// cost about 1 % more CPU per request at 64 concurrent requests.
#[derive(Debug)]
pub(crate) struct Pool {
    hot: ArrayQueue<Idle>,
    idle: ArrayQueue<Idle>,
}

impl Default for Pool {
    fn default() -> Self {
        Pool { hot: ArrayQueue::new(1), idle: ArrayQueue::new(POOL_SIZE) }
    }
}

impl Pool {
    /// A connection the upstream has not closed, if there is one. (Age is
    /// the sweeper's business: it runs every second.)
    fn checkout(&self) -> Option<(TcpStream, LazyTimer)> {
        loop {
            // `is_empty` is two loads; a `pop` that finds nothing fences.
            let idle = if self.hot.is_empty() { None } else { self.hot.pop() };
            let idle = idle.or_else(|| self.idle.pop())?;
            // Readiness is cached by the runtime: when nothing arrived since
            // the last read, this costs no system call. Anything readable on
            // an idle connection (end of stream, stray bytes) retires it.
            let mut stream = idle.stream;
            if read_now(&mut stream, &mut BytesMut::new()).is_none() {
                return Some((stream, idle.timer));
            }
        }
    }

    /// Returns a connection; `in_flight` counts the address's requests in
    /// flight, the one returning it included.
    fn put(&self, stream: TcpStream, timer: LazyTimer, in_flight: u32) {
        let mut idle = Idle { stream, timer, since: coarse_ms() };
        if in_flight <= 1 {
            match self.hot.push(idle) {
                Ok(()) => return,
                Err(back) => idle = back,
            }
        }
        let _ = self.idle.push(idle);
    }

    /// Closes the connections idle for `max_idle` or more (called once a
    /// second, so within a second of it); the others keep their order.
    pub(crate) fn sweep(&self, max_idle: Duration) {
        let now = coarse_ms();
        for queue in [&self.hot, &self.idle] {
            for _ in 0..queue.len() {
                let Some(idle) = queue.pop() else { break };
                if now.saturating_sub(idle.since) < max_idle.as_millis() as u64 {
                    // Fails only for the hot slot, when a return took it
                    // meanwhile: the connection then joins the queue.
                    if let Err(idle) = queue.push(idle) {
                        let _ = self.idle.push(idle);
                    }
                }
            }
        }
    }

    /// Idle connections right now.
    pub(crate) fn len(&self) -> usize {
        self.hot.len() + self.idle.len()
    }
}

/// Sends a body-less request to `ep` and returns the response with its
/// head read within `response_timeout` (a new connection first connects
/// within `connect_timeout`); the body streams from the connection.
pub(crate) async fn send(
    ep: &Arc<Endpoint>,
    method: &Method,
    path: &str,
    headers: &HeaderMap,
    connect_timeout: Duration,
    response_timeout: Duration,
) -> Result<Response<UpstreamResponse>, UpstreamErrorKind> {
    let deadline = coarse_ms() + response_timeout.as_millis() as u64;
    let (mut stream, timer, reused) = match ep.pool.checkout() {
        Some((s, mut timer)) => {
            timer.rebind();
            timer.guard(deadline);
            (s, timer, true)
        }
        None => (connect(ep, connect_timeout).await?, LazyTimer::new(deadline), false),
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
    read_head(ep, stream, timer, deadline, *method == Method::HEAD).await
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
                    let conn = Conn { stream, buf, timer };
                    let mut body = UpstreamResponse { conn: Some(conn), framing, reusable, ep: ep.clone(), raw };
                    body.settle();
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

// Built once per response and consumed at once.
#[allow(clippy::large_enum_variant)]
enum Head {
    Partial,
    /// A 1xx response to skip, this long.
    Interim(usize),
    Complete(Response<()>, Option<Box<RawHeaders>>, usize, Framing, bool),
}

/// Runs of header lines a [`RawHeaders`] holds at most; a head cut into
/// more (many hop-by-hop fields between the others) is parsed into a
/// `HeaderMap` instead.
const RUNS: usize = 4;

/// An upstream's header fields, passed through as they came: the head's
/// bytes and the runs of whole lines (CRLF included) to forward, with the
/// hop-by-hop fields (RFC 9110 §7.6.1) and `Transfer-Encoding` left out.
/// Parsing each field into a `HeaderMap` and writing it back out took
/// ~0.35 µs of the ~1.8 µs between reading an upstream's response and
/// writing the client's (one request at a time), and 4 % of the CPU per
/// request under load. Only heads whose every line ends in CRLF and whose
/// `Connection` names no other field are kept this way; the response's
/// `HeaderMap` is then empty, and whoever needs the fields by name calls
/// [`RawHeaders::append_to`].
#[derive(Debug)]
pub(crate) struct RawHeaders {
    head: Bytes,
    runs: Runs,
    content_length: Option<u64>,
    has_date: bool,
}

/// Byte ranges of the head, in order.
#[derive(Debug, Default)]
struct Runs {
    at: [(u32, u32); RUNS],
    len: u8,
    /// More were pushed than fit.
    overflowed: bool,
}

impl Runs {
    fn push(&mut self, start: usize, end: usize) {
        match self.at.get_mut(self.len as usize) {
            Some(slot) => {
                *slot = (start as u32, end as u32);
                self.len += 1;
            }
            None => self.overflowed = true,
        }
    }

    fn iter(&self) -> impl Iterator<Item = std::ops::Range<usize>> + '_ {
        self.at[..self.len as usize].iter().map(|&(start, end)| start as usize..end as usize)
    }
}

impl RawHeaders {
    /// The upstream's `Content-Length`, when it sent one.
    pub(crate) fn content_length(&self) -> Option<u64> {
        self.content_length
    }

    /// Whether the upstream sent a `Date`.
    pub(crate) fn has_date(&self) -> bool {
        self.has_date
    }

    /// Appends the lines as they came (CRLF-terminated).
    pub(crate) fn write_to(&self, w: &mut Vec<u8>) {
        for run in self.runs.iter() {
            w.extend_from_slice(&self.head[run]);
        }
    }

    /// Adds the fields to `headers`, for code that looks them up by name
    /// (hyper's server, the shadow comparison).
    pub(crate) fn append_to(self, headers: &mut HeaderMap) {
        for run in self.runs.iter() {
            let run = self.head.slice(run);
            for line in run.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
                let Some(colon) = line.iter().position(|&b| b == b':') else { continue };
                let (Ok(name), Ok(value)) = (
                    HeaderName::from_bytes(&line[..colon]),
                    HeaderValue::from_maybe_shared(run.slice_ref(line[colon + 1..].trim_ascii())),
                ) else {
                    continue; // httparse accepted it; cannot happen
                };
                headers.append(name, value);
            }
        }
    }
}

/// A response field the client of the proxy must not see as it came, or
/// that decides the framing.
#[derive(Clone, Copy)]
enum Field {
    ContentLength,
    TransferEncoding,
    Connection,
    /// Keep-Alive, Proxy-Connection, TE, Trailer, Upgrade: dropped.
    HopByHop,
    Date,
    Other,
}

impl Field {
    fn of(name: &str) -> Field {
        let is = |n: &str| name.eq_ignore_ascii_case(n);
        match name.len() {
            4 if is("date") => Field::Date,
            14 if is("content-length") => Field::ContentLength,
            17 if is("transfer-encoding") => Field::TransferEncoding,
            10 if is("connection") => Field::Connection,
            10 if is("keep-alive") => Field::HopByHop,
            16 if is("proxy-connection") => Field::HopByHop,
            2 if is("te") => Field::HopByHop,
            7 if is("trailer") || is("upgrade") => Field::HopByHop,
            _ => Field::Other,
        }
    }

    /// Whether the field goes on to the client as it came (the map path
    /// makes the two exceptions `parse_head` describes).
    fn forwarded(self) -> bool {
        matches!(self, Field::ContentLength | Field::Date | Field::Other)
    }
}

fn parse_head(data: &Bytes, head_request: bool) -> Result<Head, UpstreamErrorKind> {
    // Uninitialised: httparse writes the slots it fills.
    let mut slots = [const { std::mem::MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut []);
    let len = match httparse::ParserConfig::default().parse_response_with_uninit_headers(&mut resp, data, &mut slots) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if data.len() <= MAX_HEAD => return Ok(Head::Partial),
        _ => return Err(UpstreamErrorKind::Protocol),
    };
    let (Some(code), Some(minor)) = (resp.code, resp.version) else { return Err(UpstreamErrorKind::Protocol) };
    let status = StatusCode::from_u16(code).map_err(|_| UpstreamErrorKind::Protocol)?;
    if status.is_informational() {
        // 101 answers an upgrade, which never comes this way.
        return if status == StatusCode::SWITCHING_PROTOCOLS {
            Err(UpstreamErrorKind::Protocol)
        } else {
            Ok(Head::Interim(len))
        };
    }
    // One pass for the framing and for the runs of lines to pass through.
    let mut length: Option<u64> = None;
    let mut chunked = None;
    let mut close = minor == 0;
    let mut names_others = false;
    let mut has_date = false;
    let mut runs = Runs::default();
    let mut passthrough = data[..len].ends_with(b"\r\n\r\n");
    let mut run_start = None;
    let offset = |s: &[u8]| s.as_ptr() as usize - data.as_ptr() as usize;
    for (i, h) in resp.headers.iter().enumerate() {
        let line_start = offset(h.name.as_bytes());
        // A line ends where the next begins; the last one before the blank line.
        let line_end = resp.headers.get(i + 1).map_or(len - 2, |next| offset(next.name.as_bytes()));
        passthrough &= data[..line_end].ends_with(b"\r\n");
        let field = Field::of(h.name);
        match field {
            Field::ContentLength => {
                let n = std::str::from_utf8(h.value)
                    .ok()
                    .filter(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
                    .and_then(|s| s.parse::<u64>().ok())
                    .ok_or(UpstreamErrorKind::Protocol)?;
                if length.is_some_and(|l| l != n) {
                    return Err(UpstreamErrorKind::Protocol);
                }
                length = Some(n);
            }
            Field::TransferEncoding => {
                // Only the last coding matters: chunked frames the body.
                let last = h.value.rsplit(|&b| b == b',').next().map(<[u8]>::trim_ascii).unwrap_or_default();
                chunked = Some(last.eq_ignore_ascii_case(b"chunked"));
            }
            Field::Connection => {
                for token in h.value.split(|&b| b == b',').map(<[u8]>::trim_ascii) {
                    if token.eq_ignore_ascii_case(b"close") {
                        close = true;
                    } else if token.eq_ignore_ascii_case(b"keep-alive") {
                        if minor == 0 {
                            close = false;
                        }
                    } else if !token.is_empty() {
                        names_others = true;
                    }
                }
            }
            Field::Date => has_date = true,
            Field::HopByHop | Field::Other => {}
        }
        match (field.forwarded(), run_start) {
            (true, None) => run_start = Some(line_start),
            (false, Some(start)) => {
                runs.push(start, line_start);
                run_start = None;
            }
            _ => {}
        }
    }
    if let Some(start) = run_start {
        runs.push(start, len - 2);
    }
    let framing = if head_request || status == StatusCode::NO_CONTENT || status == StatusCode::NOT_MODIFIED {
        Framing::Length(0)
    } else {
        match (chunked, length) {
            (Some(true), _) => Framing::Chunked(Chunk::Size),
            (Some(false), _) => Framing::Close,
            (None, Some(n)) => Framing::Length(n),
            (None, None) => Framing::Close,
        }
    };
    let reusable = !close && !matches!(framing, Framing::Close);
    let mut out = Response::new(());
    *out.status_mut() = status;
    *out.version_mut() = if minor == 0 { Version::HTTP_10 } else { Version::HTTP_11 };
    // RFC 9112 §6.3: Transfer-Encoding overrides Content-Length, which
    // then is not forwarded.
    let drop_length = chunked == Some(true) && length.is_some();
    if passthrough && !runs.overflowed && !names_others && !drop_length {
        let raw = Box::new(RawHeaders { head: data.slice(..len), runs, content_length: length, has_date });
        return Ok(Head::Complete(out, Some(raw), len, framing, reusable));
    }
    // The rare head that needs editing: into a map, with two exceptions to
    // what is forwarded: a `Connection` that names other fields stays, for
    // the hop-by-hop removal to find them, and a length that chunked
    // overrides goes.
    let headers = out.headers_mut();
    headers.reserve(resp.headers.len());
    for h in resp.headers.iter() {
        let name = HeaderName::from_bytes(h.name.as_bytes()).map_err(|_| UpstreamErrorKind::Protocol)?;
        let keep = match Field::of(h.name) {
            Field::Connection => names_others,
            Field::ContentLength => !drop_length,
            field => field.forwarded(),
        };
        if keep {
            let value =
                HeaderValue::from_maybe_shared(data.slice_ref(h.value)).map_err(|_| UpstreamErrorKind::Protocol)?;
            headers.append(name, value);
        }
    }
    Ok(Head::Complete(out, None, len, framing, reusable))
}

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

#[derive(Clone, Copy, Debug)]
enum Framing {
    /// This many bytes left.
    Length(u64),
    Chunked(Chunk),
    /// Until the upstream closes.
    Close,
    Done,
}

#[derive(Clone, Copy, Debug)]
enum Chunk {
    Size,
    Data(u64),
    DataEnd,
    Trailers,
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

    fn finish(&mut self) {
        self.framing = Framing::Done;
        if let Some(conn) = self.conn.take() {
            if self.reusable && conn.buf.is_empty() {
                self.ep.pool.put(conn.stream, conn.timer, self.ep.in_flight());
            }
        }
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
                Err(e) => {
                    self.conn = None;
                    self.framing = Framing::Done;
                    return Poll::Ready(Some(Err(e.into())));
                }
                Ok(Some(piece)) => {
                    self.settle();
                    return Poll::Ready(Some(Ok(piece)));
                }
                Ok(None) if matches!(self.framing, Framing::Done) => return Poll::Ready(None),
                Ok(None) => {}
            }
            let Some(conn) = self.conn.as_mut() else { return Poll::Ready(None) };
            match ready!(poll_read(&mut conn.stream, cx, &mut conn.buf)) {
                Ok(0) if matches!(self.framing, Framing::Close) => {
                    self.conn = None;
                    self.framing = Framing::Done;
                    return Poll::Ready(None);
                }
                Ok(0) => {
                    self.conn = None;
                    self.framing = Framing::Done;
                    return Poll::Ready(Some(Err(BodyError("upstream closed the connection mid-body").into())));
                }
                Ok(_) => {}
                Err(e) => {
                    self.conn = None;
                    self.framing = Framing::Done;
                    return Poll::Ready(Some(Err(e.into())));
                }
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

    fn head(raw: &str, head_request: bool) -> Result<Head, UpstreamErrorKind> {
        parse_head(&Bytes::copy_from_slice(raw.as_bytes()), head_request)
    }

    fn framing(raw: &str) -> (Framing, bool) {
        match head(raw, false) {
            Ok(Head::Complete(_, _, _, f, reusable)) => (f, reusable),
            _ => panic!("not complete: {raw:?}"),
        }
    }

    #[test]
    fn response_framing_follows_rfc_9112() {
        assert!(matches!(framing("HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n"), (Framing::Length(5), true)));
        assert!(matches!(
            framing("HTTP/1.1 200 OK\r\ncontent-length: 5\r\ntransfer-encoding: chunked\r\n\r\n"),
            (Framing::Chunked(Chunk::Size), true)
        ));
        assert!(matches!(framing("HTTP/1.1 200 OK\r\ntransfer-encoding: gzip\r\n\r\n"), (Framing::Close, false)));
        assert!(matches!(framing("HTTP/1.1 200 OK\r\n\r\n"), (Framing::Close, false)));
        assert!(matches!(framing("HTTP/1.1 204 No Content\r\n\r\n"), (Framing::Length(0), true)));
        assert!(matches!(
            framing("HTTP/1.1 200 OK\r\ncontent-length: 5\r\nconnection: close\r\n\r\n"),
            (Framing::Length(5), false)
        ));
        assert!(matches!(framing("HTTP/1.0 200 OK\r\ncontent-length: 5\r\n\r\n"), (Framing::Length(5), false)));
        assert!(matches!(
            head("HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n", true),
            Ok(Head::Complete(_, _, _, Framing::Length(0), true))
        ));
        assert!(matches!(head("HTTP/1.1 103 Early Hints\r\nlink: x\r\n\r\n", false), Ok(Head::Interim(_))));
        assert!(matches!(head("HTTP/1.1 200 OK\r\ncontent-le", false), Ok(Head::Partial)));
        for bad in [
            "HTTP/1.1 200 OK\r\ncontent-length: 2x\r\n\r\n",
            "HTTP/1.1 200 OK\r\ncontent-length: +2\r\n\r\n",
            "HTTP/1.1 200 OK\r\ncontent-length: 2\r\ncontent-length: 3\r\n\r\n",
            "HTTP/1.1 101 Switching Protocols\r\n\r\n",
            "HTTP/1.1 2000 OK\r\n\r\n",
            "HTTX/1.1 200 OK\r\n\r\n",
        ] {
            assert!(matches!(head(bad, false), Err(UpstreamErrorKind::Protocol)), "{bad:?}");
        }
    }

    /// The fields passed through unparsed, or `None` when the head went
    /// into a map.
    fn passed(raw: &str) -> Option<String> {
        match head(raw, false) {
            Ok(Head::Complete(_, Some(r), ..)) => {
                let mut w = Vec::new();
                r.write_to(&mut w);
                Some(String::from_utf8(w).unwrap())
            }
            Ok(Head::Complete(_, None, ..)) => None,
            _ => panic!("not complete: {raw:?}"),
        }
    }

    #[test]
    fn fields_pass_through_without_the_hop_by_hop_ones() {
        let kept = "Server: x\r\nX-A:  b \r\n";
        assert_eq!(passed(&format!("HTTP/1.1 200 OK\r\n{kept}\r\n")).as_deref(), Some(kept));
        assert_eq!(passed("HTTP/1.1 204 No Content\r\n\r\n").as_deref(), Some(""));
        assert_eq!(
            passed("HTTP/1.1 200 OK\r\nconnection: keep-alive\r\nA: 1\r\nKeep-Alive: x\r\nTE: y\r\nB: 2\r\nContent-Length: 0\r\nUpgrade: z\r\n\r\n")
                .as_deref(),
            Some("A: 1\r\nB: 2\r\nContent-Length: 0\r\n")
        );
        let Ok(Head::Complete(_, Some(r), ..)) = head("HTTP/1.1 200 OK\r\nDate: d\r\ncontent-length: 7\r\n\r\n", false)
        else {
            panic!()
        };
        assert_eq!((r.content_length(), r.has_date()), (Some(7), true));
        let mut map = HeaderMap::new();
        r.append_to(&mut map);
        assert_eq!((map["date"].as_bytes(), map["content-length"].as_bytes()), (&b"d"[..], &b"7"[..]));
        // Into a map: Connection names a field, a bare LF, more runs than
        // kept, a length that chunked overrides.
        for edited in [
            "HTTP/1.1 200 OK\r\nConnection: x-a\r\nX-A: 1\r\n\r\n",
            "HTTP/1.1 200 OK\r\nA: 1\nB: 2\r\n\r\n",
            "HTTP/1.1 200 OK\r\nA: 1\r\n\n",
            "HTTP/1.1 200 OK\r\nA: 1\r\nTE: x\r\nB: 1\r\nTE: x\r\nC: 1\r\nTE: x\r\nD: 1\r\nTE: x\r\nE: 1\r\n\r\n",
            "HTTP/1.1 200 OK\r\ncontent-length: 5\r\ntransfer-encoding: chunked\r\n\r\n",
        ] {
            assert_eq!(passed(edited), None, "{edited:?}");
        }
        let Ok(Head::Complete(resp, None, ..)) =
            head("HTTP/1.1 200 OK\r\ncontent-length: 5\r\ntransfer-encoding: chunked\r\nA: 1\r\n\r\n", false)
        else {
            panic!()
        };
        assert_eq!(resp.headers().keys().map(|k| k.as_str()).collect::<Vec<_>>(), ["a"]);
    }

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
