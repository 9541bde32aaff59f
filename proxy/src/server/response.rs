//! The body of a response sent downstream: the upstream's, or one weir
//! wrote itself. It holds the request's guard, so the request counts as in
//! flight until its body is fully sent (or dropped).

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};

use super::grpc;
use super::request::RequestGuard;
use crate::upstream::body::FromUpstream;
use crate::upstream::h1::RawHeaders;
use weir_control::classify::grpc::UNKNOWN;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Body of a response sent downstream. Holds the request's guard, so the
/// request counts as in flight until its body is fully sent (or dropped).
#[derive(Debug)]
pub(crate) struct ResponseBody {
    kind: Kind,
    guard: RequestGuard,
}

#[derive(Debug)]
enum Kind {
    Upstream(FromUpstream),
    Full(Option<Bytes>),
}

impl ResponseBody {
    pub(crate) fn upstream(body: FromUpstream, guard: RequestGuard) -> Self {
        ResponseBody { kind: Kind::Upstream(body), guard }
    }

    /// See [`FromUpstream::take_raw_headers`].
    pub(crate) fn take_raw_headers(&mut self) -> Option<Box<RawHeaders>> {
        match &mut self.kind {
            Kind::Upstream(b) => b.take_raw_headers(),
            Kind::Full(_) => None,
        }
    }

    pub(crate) fn full(bytes: Bytes, guard: RequestGuard) -> Self {
        let kind = Kind::Full(if bytes.is_empty() { None } else { Some(bytes) });
        ResponseBody { kind, guard }
    }
}

impl Drop for ResponseBody {
    fn drop(&mut self) {
        // A gRPC response that ended without a status (its body is over,
        // with no trailers): UNKNOWN, as the client reads it. One dropped
        // before its end was cancelled (see `RequestGuard`).
        if self.guard.awaiting_status() && self.is_end_stream() {
            self.guard.grpc_status(UNKNOWN);
        }
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        match &mut this.kind {
            Kind::Upstream(b) => {
                let polled = Pin::new(b).poll_frame(cx);
                match &polled {
                    Poll::Ready(Some(Err(_))) => this.guard.body_failed(),
                    Poll::Ready(Some(Ok(f))) if this.guard.awaiting_status() => {
                        // Trailers end the call: without a status, UNKNOWN.
                        if let Some(t) = f.trailers_ref() {
                            this.guard.grpc_status(grpc::status_in(t).unwrap_or(UNKNOWN));
                        }
                    }
                    Poll::Ready(None) if this.guard.awaiting_status() => this.guard.grpc_status(UNKNOWN),
                    _ => {}
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
