//! Body types on both legs of the proxy. Enums rather than boxed trait
//! objects, so nothing is allocated per request to erase a type.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;

use crate::server::RequestGuard;

/// Body of a request sent upstream.
#[derive(Debug)]
pub(crate) enum UpstreamBody {
    /// The downstream request body, streamed through.
    Incoming(Incoming),
    /// A body already read (shadowed requests send it twice).
    Bytes(Option<Bytes>),
}

impl UpstreamBody {
    pub(crate) fn bytes(b: Bytes) -> Self {
        UpstreamBody::Bytes(if b.is_empty() { None } else { Some(b) })
    }
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match self.get_mut() {
            UpstreamBody::Incoming(b) => Pin::new(b).poll_frame(cx),
            UpstreamBody::Bytes(b) => Poll::Ready(b.take().map(|d| Ok(Frame::data(d)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            UpstreamBody::Incoming(b) => b.is_end_stream(),
            UpstreamBody::Bytes(b) => b.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            UpstreamBody::Incoming(b) => b.size_hint(),
            UpstreamBody::Bytes(b) => SizeHint::with_exact(b.as_ref().map_or(0, |b| b.len() as u64)),
        }
    }
}

/// Body of a response sent downstream. Holds the request's guard, so the
/// request counts as in flight until its body is fully sent (or dropped).
#[derive(Debug)]
pub(crate) struct ResponseBody {
    kind: Kind,
    guard: RequestGuard,
}

#[derive(Debug)]
enum Kind {
    Upstream(Incoming),
    Full(Option<Bytes>),
}

impl ResponseBody {
    pub(crate) fn upstream(body: Incoming, guard: RequestGuard) -> Self {
        ResponseBody { kind: Kind::Upstream(body), guard }
    }

    pub(crate) fn full(bytes: Bytes, guard: RequestGuard) -> Self {
        let kind = Kind::Full(if bytes.is_empty() { None } else { Some(bytes) });
        ResponseBody { kind, guard }
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = self.get_mut();
        match &mut this.kind {
            Kind::Upstream(b) => {
                let polled = Pin::new(b).poll_frame(cx);
                if let Poll::Ready(Some(Err(_))) = &polled {
                    this.guard.body_failed();
                }
                polled
            }
            Kind::Full(b) => Poll::Ready(b.take().map(|d| Ok(Frame::data(d)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Upstream(b) => b.is_end_stream(),
            Kind::Full(b) => b.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Upstream(b) => b.size_hint(),
            Kind::Full(b) => SizeHint::with_exact(b.as_ref().map_or(0, |b| b.len() as u64)),
        }
    }
}
