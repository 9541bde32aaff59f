//! Bodies on the upstream leg: the request body sent upstream, and the
//! response body as the upstream sends it. Enums rather than boxed trait
//! objects, so nothing is allocated per request to erase a type.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use tokio::time::{Instant, Sleep};

use super::h1::{RawHeaders, UpstreamResponse};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Body of a request sent upstream.
#[derive(Debug)]
pub(crate) enum UpstreamBody {
    /// The downstream request body, streamed through, with the
    /// `timeouts.body_read` timer between its pieces.
    Incoming(TimedBody),
    /// A body already read (shadowed requests send it twice).
    Bytes(Option<Bytes>),
    /// A body that comes back if the attempt fails (see [`Returning`]).
    Returning(Returning),
    /// A body that came back: what the failed attempt read, then the rest.
    Replayed(Box<Replayed>),
}

/// A request body handed to hyper's client that comes back when the
/// attempt ends, as long as what the client read of it fits in `room`
/// bytes (kept as the frames read, which share the buffers): the request,
/// body and all, can then go again (to another address after a failed
/// connect, with `room` 0: nothing read; or on a new connection after an
/// HTTP/2 upstream refused the stream, with what was read kept).
#[derive(Debug)]
pub(crate) struct Returning {
    inner: Option<Box<UpstreamBody>>,
    back: Option<tokio::sync::oneshot::Sender<UpstreamBody>>,
    kept: Vec<Frame<Bytes>>,
    room: usize,
}

/// The frames a failed attempt read, to send first, then the rest.
#[derive(Debug)]
pub(crate) struct Replayed {
    kept: std::collections::VecDeque<Frame<Bytes>>,
    rest: UpstreamBody,
}

impl Returning {
    /// Keeps `frame` if it fits in what is left of `room`; if not, the
    /// body is spent and will not come back.
    fn keep(&mut self, frame: &Frame<Bytes>) {
        let copy = match (frame.data_ref(), frame.trailers_ref()) {
            (Some(d), _) if d.len() <= self.room => {
                self.room -= d.len();
                Some(Frame::data(d.clone()))
            }
            (None, Some(t)) => Some(Frame::trailers(t.clone())),
            _ => None,
        };
        match copy {
            Some(f) => self.kept.push(f),
            None => self.spend(),
        }
    }

    fn spend(&mut self) {
        self.back = None;
        self.kept = Vec::new();
    }
}

impl Drop for Returning {
    fn drop(&mut self) {
        if let (Some(tx), Some(rest)) = (self.back.take(), self.inner.take()) {
            let body = if self.kept.is_empty() {
                *rest
            } else {
                let kept = std::mem::take(&mut self.kept).into();
                UpstreamBody::Replayed(Box::new(Replayed { kept, rest: *rest }))
            };
            let _ = tx.send(body);
        }
    }
}

impl UpstreamBody {
    /// This body, to come back through the receiver when the attempt ends
    /// having read at most `room` bytes of it (see [`Returning`]).
    pub(crate) fn returning(self, room: usize) -> (UpstreamBody, tokio::sync::oneshot::Receiver<UpstreamBody>) {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let r = Returning { inner: Some(Box::new(self)), back: Some(tx), kept: Vec::new(), room };
        (UpstreamBody::Returning(r), rx)
    }
}

/// A downstream body whose client must keep sending: if no piece arrives
/// for `timeout` while the upstream waits for one, the body fails with
/// [`BodyReadTimeout`]. The timer is allocated only when a read has to
/// wait, so bodies that arrive with their head cost nothing.
#[derive(Debug)]
pub(crate) struct TimedBody {
    /// A first piece read before forwarding (see [`UpstreamBody::incoming`]).
    first: Option<Frame<Bytes>>,
    body: Incoming,
    gap: Gap,
}

/// The longest wait between two pieces of a streamed body: armed (its
/// timer allocated the first time) only when the body waits, so a body
/// whose pieces are there when asked for costs nothing.
#[derive(Debug)]
pub(crate) struct Gap {
    /// `None`: no timer (a gRPC stream may rightly stay idle).
    timeout: Option<Duration>,
    timer: Option<Pin<Box<Sleep>>>,
    armed: bool,
}

impl Gap {
    pub(crate) fn new(timeout: Option<Duration>) -> Self {
        Gap { timeout, timer: None, armed: false }
    }

    /// A piece arrived: the next wait starts afresh.
    fn progress(&mut self) {
        self.armed = false;
    }

    /// The body waits: `Ready` once it has waited `timeout` since the
    /// last piece.
    fn poll_expired(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let Some(timeout) = self.timeout else { return Poll::Pending };
        let deadline = Instant::now() + timeout;
        let timer = match &mut self.timer {
            Some(t) => {
                if !self.armed {
                    t.as_mut().reset(deadline);
                }
                t
            }
            None => self.timer.insert(Box::pin(tokio::time::sleep_until(deadline))),
        };
        self.armed = true;
        timer.as_mut().poll(cx)
    }
}

/// The upstream stopped sending its response body (see [`Gap`]).
#[derive(Debug)]
pub(crate) struct UpstreamReadTimeout;

impl std::fmt::Display for UpstreamReadTimeout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("no response body data from the upstream within timeouts.upstream_read")
    }
}

impl std::error::Error for UpstreamReadTimeout {}

/// The client stopped sending its request body (see [`TimedBody`]).
#[derive(Debug)]
pub(crate) struct BodyReadTimeout;

impl std::fmt::Display for BodyReadTimeout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("request body not received within timeouts.body_read")
    }
}

impl std::error::Error for BodyReadTimeout {}

/// The client's request body failed (cut short, or a malformed chunk):
/// the request is the client's fault, never the upstream's.
#[derive(Debug)]
pub(crate) struct ClientBodyError(hyper::Error);

impl std::fmt::Display for ClientBodyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "request body from the client: {}", self.0)
    }
}

impl std::error::Error for ClientBodyError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.0)
    }
}

/// A request failure that is the client's, not the upstream's: it must not
/// count against the upstream (nor eject it, nor fail a gate).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ClientFault {
    /// The client stopped sending its body ([`BodyReadTimeout`]).
    BodyTimeout,
    /// The body was cut short or malformed ([`ClientBodyError`]); for a
    /// first piece read before forwarding, `prefetch` says which.
    BadBody(&'static str),
}

/// What an upstream failure owes to the client's body, if anything.
pub(crate) fn client_fault(err: &hyper_util::client::legacy::Error) -> Option<ClientFault> {
    use super::error::chain_has;
    if chain_has::<BodyReadTimeout>(err) {
        Some(ClientFault::BodyTimeout)
    } else if chain_has::<ClientBodyError>(err) {
        Some(ClientFault::BadBody("weir: request body incomplete or malformed\n"))
    } else {
        None
    }
}

impl UpstreamBody {
    pub(crate) fn bytes(b: Bytes) -> Self {
        UpstreamBody::Bytes(if b.is_empty() { None } else { Some(b) })
    }

    pub(crate) fn incoming(body: Incoming, timeout: Option<Duration>) -> Self {
        UpstreamBody::Incoming(TimedBody { first: None, body, gap: Gap::new(timeout) })
    }

    /// Reads the first piece of a streamed body now, under the same timer
    /// as the rest; it is kept and sent first. A malformed first piece (a
    /// bad chunk line) is a 400 before anything was forwarded.
    pub(crate) async fn prefetch(&mut self) -> Result<(), ClientFault> {
        let UpstreamBody::Incoming(b) = self else { return Ok(()) };
        match std::future::poll_fn(|cx| b.poll(cx)).await {
            None => Ok(()),
            Some(Ok(f)) => {
                b.first = Some(f);
                Ok(())
            }
            Some(Err(e)) if e.is::<BodyReadTimeout>() => Err(ClientFault::BodyTimeout),
            Some(Err(_)) => Err(ClientFault::BadBody("weir: invalid chunked request body\n")),
        }
    }
}

impl TimedBody {
    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if let Some(f) = self.first.take() {
            return Poll::Ready(Some(Ok(f)));
        }
        match Pin::new(&mut self.body).poll_frame(cx) {
            Poll::Ready(r) => {
                self.gap.progress();
                Poll::Ready(r.map(|r| r.map_err(|e| ClientBodyError(e).into())))
            }
            Poll::Pending => self.gap.poll_expired(cx).map(|()| Some(Err(BodyReadTimeout.into()))),
        }
    }
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            UpstreamBody::Incoming(b) => b.poll(cx),
            UpstreamBody::Bytes(b) => Poll::Ready(b.take().map(|d| Ok(Frame::data(d)))),
            UpstreamBody::Returning(r) => {
                let Some(b) = &mut r.inner else { return Poll::Ready(None) };
                let polled = Pin::new(b.as_mut()).poll_frame(cx);
                // Nobody waits any more (the attempt got its answer): keep
                // nothing.
                if r.back.as_ref().is_some_and(|tx| tx.is_closed()) {
                    r.spend();
                }
                if r.back.is_some() {
                    match &polled {
                        Poll::Ready(Some(Ok(frame))) => r.keep(frame),
                        Poll::Ready(Some(Err(_))) => r.spend(),
                        Poll::Ready(None) | Poll::Pending => {}
                    }
                }
                polled
            }
            UpstreamBody::Replayed(r) => match r.kept.pop_front() {
                Some(f) => Poll::Ready(Some(Ok(f))),
                None => Pin::new(&mut r.rest).poll_frame(cx),
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            UpstreamBody::Incoming(b) => b.first.is_none() && b.body.is_end_stream(),
            UpstreamBody::Bytes(b) => b.is_none(),
            UpstreamBody::Returning(r) => r.inner.as_ref().is_none_or(|b| b.is_end_stream()),
            UpstreamBody::Replayed(r) => r.kept.is_empty() && r.rest.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            UpstreamBody::Incoming(b) if b.first.is_none() => b.body.size_hint(),
            UpstreamBody::Incoming(_) => SizeHint::default(),
            UpstreamBody::Bytes(b) => SizeHint::with_exact(b.as_ref().map_or(0, |b| b.len() as u64)),
            UpstreamBody::Returning(r) => r.inner.as_ref().map_or_else(|| SizeHint::with_exact(0), |b| b.size_hint()),
            UpstreamBody::Replayed(_) => SizeHint::default(),
        }
    }
}

/// A response body as an upstream sends it: through hyper's client, or
/// weir's own HTTP/1.1 client (`upstream/h1/`).
#[derive(Debug)]
pub(crate) enum FromUpstream {
    /// With `timeouts.upstream_read` between its pieces (weir's own client
    /// keeps that timer itself).
    Hyper(Incoming, Gap),
    Weir(UpstreamResponse),
}

impl FromUpstream {
    /// The upstream's header fields when they were kept unparsed (weir's
    /// own client, see [`RawHeaders`]); the response's `HeaderMap` then
    /// holds none of them.
    pub(crate) fn take_raw_headers(&mut self) -> Option<Box<RawHeaders>> {
        match self {
            FromUpstream::Hyper(..) => None,
            FromUpstream::Weir(b) => b.take_raw_headers(),
        }
    }
}

/// Moves header fields kept unparsed into the response's `HeaderMap`, for
/// code that looks them up by name.
pub(crate) fn materialize_headers<B>(
    resp: &mut http::Response<B>,
    take: impl FnOnce(&mut B) -> Option<Box<RawHeaders>>,
) {
    if let Some(raw) = take(resp.body_mut()) {
        raw.append_to(resp.headers_mut());
    }
}

impl Body for FromUpstream {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            FromUpstream::Hyper(b, gap) => match Pin::new(b).poll_frame(cx) {
                Poll::Ready(r) => {
                    gap.progress();
                    Poll::Ready(r.map(|r| r.map_err(Into::into)))
                }
                Poll::Pending => gap.poll_expired(cx).map(|()| Some(Err(UpstreamReadTimeout.into()))),
            },
            FromUpstream::Weir(b) => Pin::new(b).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            FromUpstream::Hyper(b, _) => b.is_end_stream(),
            FromUpstream::Weir(b) => b.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            FromUpstream::Hyper(b, _) => b.size_hint(),
            FromUpstream::Weir(b) => b.size_hint(),
        }
    }
}
