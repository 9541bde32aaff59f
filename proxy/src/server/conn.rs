//! One downstream connection: HTTP/1.1 or h2c (detected from the preface),
//! with weir's own connection timers.
//!
//! hyper's HTTP/1 `header_read_timeout` also covers the wait *between*
//! keep-alive requests, so it cannot give an idle timeout longer than the
//! head timeout, and HTTP/2 has neither. weir therefore keeps both timers
//! itself, from three atomics per connection:
//!
//! * **idle**: no request in flight and no byte of a new one since the last
//!   response finished → graceful close after `timeouts.idle`;
//! * **header_read**: the first byte of a new HTTP/1 request head arrived and
//!   the head is still incomplete after `timeouts.header_read` → the
//!   connection is dropped (slowloris). Checked every `header_read / 2`, so a
//!   slow head is cut between 1× and 1.5× the timeout.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::Instant;
use tokio_util::either::Either;

use super::request::{ConnCtx, Timer};
use crate::dataplane::DataPlane;
use crate::snapshot::Snapshot;

pin_project_lite::pin_project! {
    /// The connection's stream (TCP or TLS), noticing the first byte of
    /// each request head and measuring its request line.
    struct TrackedIo<S> {
        #[pin]
        inner: S,
        ctx: Arc<ConnCtx>,
        first_read: bool,
        // The request line of the current head is still open, this long.
        in_line: bool,
        line_len: usize,
        line_limit: usize,
    }
}

/// The answer to a request line longer than `limits.max_request_line`.
/// hyper only knows one head limit (→ 431), so weir answers this one
/// itself, before hyper has parsed anything, and closes.
const URI_TOO_LONG: &[u8] = b"HTTP/1.1 414 URI Too Long\r\ncontent-type: text/plain; charset=utf-8\r\n\
content-length: 28\r\nconnection: close\r\n\r\nweir: request line too long\n";

impl<S: AsyncRead + AsyncWrite> AsyncRead for TrackedIo<S> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let mut this = self.project();
        let before = buf.filled().len();
        let res = this.inner.as_mut().poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = &res {
            let new = &buf.filled()[before..];
            if !new.is_empty() {
                if this.ctx.on_bytes_read(*this.first_read, new) {
                    *this.in_line = true;
                    *this.line_len = 0;
                }
                *this.first_read = false;
                if *this.in_line {
                    match new.iter().position(|&b| b == b'\n') {
                        Some(end) => {
                            *this.in_line = false;
                            *this.line_len += end;
                        }
                        None => *this.line_len += new.len(),
                    }
                    if *this.line_len > *this.line_limit {
                        // Best effort: the answer fits any socket buffer.
                        let _ = this.inner.as_mut().poll_write(cx, URI_TOO_LONG);
                        let _ = this.inner.as_mut().poll_flush(cx);
                        tracing::debug!(peer = %this.ctx.peer, "request line longer than limits.max_request_line: 414");
                        return Poll::Ready(Err(io::Error::new(io::ErrorKind::InvalidData, "request line too long")));
                    }
                }
            }
        }
        res
    }
}

impl<S: AsyncWrite> AsyncWrite for TrackedIo<S> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        self.project().inner.poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.project().inner.poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().inner.poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().inner.poll_shutdown(cx)
    }
}

pin_project_lite::pin_project! {
    /// A stream that first yields bytes already read from it (what weir's
    /// own HTTP/1.1 loop read before handing the connection to hyper).
    struct Prefixed<S> {
        prefix: bytes::Bytes,
        #[pin]
        inner: S,
    }
}

impl<S: AsyncRead> AsyncRead for Prefixed<S> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.project();
        if !this.prefix.is_empty() {
            let n = this.prefix.len().min(buf.remaining());
            buf.put_slice(&this.prefix.split_to(n));
            return Poll::Ready(Ok(()));
        }
        this.inner.poll_read(cx, buf)
    }
}

impl<S: AsyncWrite> AsyncWrite for Prefixed<S> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        self.project().inner.poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.project().inner.poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().inner.poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().inner.poll_shutdown(cx)
    }
}

/// Serves one accepted connection (after the TLS handshake when `tls` is
/// set) until it closes, times out, or drains. Plaintext connections and
/// HTTP/1.1 over TLS start on weir's own HTTP/1.1 loop (see `h1.rs`), which
/// hands them to hyper at the first request it does not serve itself; h2
/// (by ALPN) goes to hyper at once.
///
/// A connection's task is as large as its largest state, and an idle
/// connection holds it for as long as it is open, so its state is kept
/// small: no `async fn` (whose arguments are copied into the state beside
/// themselves), a plaintext connection's context made before the task, and
/// the TLS and hyper states boxed (the TLS one would triple a plaintext
/// connection's task).
pub(crate) fn serve(
    dp: Arc<DataPlane>,
    stream: TcpStream,
    peer: SocketAddr,
    permit: OwnedSemaphorePermit,
    tls: Option<tokio_rustls::TlsAcceptor>,
) -> impl Future<Output = ()> + Send {
    match tls {
        None => {
            let ctx = Arc::new(ConnCtx::new(peer, dp.in_flight.clone(), false));
            // The connection keeps the settings of the snapshot it was accepted on.
            let snap = dp.load_full();
            Either::Left(serve_h1(dp, stream, ctx, snap, permit))
        }
        Some(acceptor) => Either::Right(Box::pin(serve_tls(dp, stream, peer, permit, acceptor))),
    }
}

/// weir's own HTTP/1.1 loop on `stream` (plaintext, or TLS that chose
/// HTTP/1.1), then hyper for the rest of the connection if the loop hands
/// it over. The permit is held until the connection ends.
// Not an `async fn`: see `serve`.
#[allow(clippy::manual_async_fn)]
fn serve_h1<S: super::h1::Stream + 'static>(
    dp: Arc<DataPlane>,
    mut stream: S,
    ctx: Arc<ConnCtx>,
    snap: Arc<Snapshot>,
    permit: OwnedSemaphorePermit,
) -> impl Future<Output = ()> + Send {
    async move {
        let _permit = &permit;
        // let-else: the loop's outcome is not kept across the await below.
        let super::h1::End::Fallback(prefix) = super::h1::serve(&dp, &mut stream, &ctx, &snap).await else {
            return;
        };
        let h2 = prefix.starts_with(b"PRI * HTTP/2.0\r\n");
        let io = Prefixed { prefix, inner: stream };
        // Boxed: hyper's connection state is allocated only for the
        // connections that need it.
        Box::pin(serve_http(dp, io, ctx, snap, h2)).await;
    }
}

async fn serve_tls(
    dp: Arc<DataPlane>,
    stream: TcpStream,
    peer: SocketAddr,
    permit: OwnedSemaphorePermit,
    acceptor: tokio_rustls::TlsAcceptor,
) {
    let timeout = dp.load().timeouts.tls_handshake;
    let Some(tls) = crate::tls::handshake(&acceptor, stream, timeout, peer).await else { return };
    let ctx = Arc::new(ConnCtx::new(peer, dp.in_flight.clone(), true));
    let snap = dp.load_full();
    if tls.get_ref().1.alpn_protocol() == Some(b"h2") {
        let _permit = permit;
        return serve_http(dp, tls, ctx, snap, true).await;
    }
    // HTTP/1.1 over TLS: weir's own loop, as on plaintext.
    serve_h1(dp, tls, ctx, snap, permit).await
}

/// `h2`: the connection speaks HTTP/2 (ALPN, or the h2c preface), so
/// that `timeouts.drain_delay` sends it a GOAWAY (HTTP/1.1 connections get
/// `Connection: close` on their responses instead, `proxy::handle`).
async fn serve_http<S>(dp: Arc<DataPlane>, stream: S, ctx: Arc<ConnCtx>, snap: Arc<Snapshot>, h2: bool)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let peer = ctx.peer;
    let io = TokioIo::new(TrackedIo {
        inner: stream,
        ctx: ctx.clone(),
        first_read: true,
        in_line: false,
        line_len: 0,
        line_limit: snap.config.limits.max_request_line,
    });
    let svc_ctx = ctx.clone();
    // Only a connection open when the delay begins is told to go: one
    // opened during it is served (a GOAWAY at once would send its client
    // round in circles until the listener closes).
    let mut leave = dp.leave.subscribe();
    let mut left = !h2 || *leave.borrow_and_update();
    let svc_dp = dp.clone();
    let svc = service_fn(move |req| super::proxy::handle(svc_dp.clone(), svc_ctx.clone(), req));
    let conn = snap.server.serve_connection_with_upgrades(io, svc);
    tokio::pin!(conn);
    let timer = tokio::time::sleep(Duration::ZERO);
    tokio::pin!(timer);
    // Made before the flag is read: a drain that begins in between still
    // wakes it.
    let drain = dp.drain.notified();
    tokio::pin!(drain);
    let mut draining = dp.draining.load(std::sync::atomic::Ordering::Relaxed);
    if draining {
        conn.as_mut().graceful_shutdown();
    }
    loop {
        tokio::select! {
            res = conn.as_mut() => {
                if let Err(e) = res {
                    tracing::debug!(%peer, "connection ended: {e}");
                }
                return;
            }
            _ = drain.as_mut(), if !draining => {
                draining = true;
                conn.as_mut().graceful_shutdown();
            }
            _ = leave.changed(), if !left && !draining => {
                left = true;
                draining = true;
                conn.as_mut().graceful_shutdown();
            }
            _ = &mut timer => match ctx.check(&snap.timeouts) {
                Timer::Wait(d) => timer.as_mut().reset(Instant::now() + d),
                Timer::HeadTimeout => {
                    tracing::debug!(%peer, "request head not complete within timeouts.header_read: closing");
                    return;
                }
                Timer::Idle => {
                    if !draining {
                        draining = true;
                        conn.as_mut().graceful_shutdown();
                    }
                    timer.as_mut().reset(Instant::now() + snap.timeouts.idle);
                }
            },
        }
    }
}
