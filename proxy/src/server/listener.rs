//! The data listener's accept loop: a connection permit per connection
//! (`limits.max_connections`, past which a short 503 answers), the TLS
//! acceptor of the current snapshot, and one task per connection.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};
use tokio_util::task::TaskTracker;

use super::conn;
use crate::dataplane::DataPlane;
use crate::tls::ListenerTls;

/// The next connection; on errors (EMFILE and friends) it backs off and
/// tries again instead of spinning.
pub(crate) async fn accept(listener: &TcpListener, what: &str) -> (TcpStream, std::net::SocketAddr) {
    loop {
        match listener.accept().await {
            Ok(pair) => return pair,
            Err(e) => {
                tracing::warn!("{what} accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// Accepts data-plane connections until shutdown; each connection task is
/// tracked, so that shutdown can wait for them to drain.
pub(crate) async fn accept_loop(
    dp: Arc<DataPlane>,
    listener: TcpListener,
    limit: Arc<Semaphore>,
    mut shutdown: watch::Receiver<bool>,
    tracker: TaskTracker,
) {
    let mut tls = ListenerTls::new(dp.load().listen_tls.as_ref());
    loop {
        let (stream, peer) = tokio::select! {
            _ = shutdown.changed() => return,
            pair = accept(&listener, "data") => pair,
        };
        let _ = stream.set_nodelay(true);
        match limit.clone().try_acquire_owned() {
            Ok(permit) => {
                let acceptor = tls.next(dp.load().listen_tls.as_ref());
                tracker.spawn(conn::serve(dp.clone(), stream, peer, permit, acceptor));
            }
            Err(_) => {
                tracing::warn!(%peer, "limits.max_connections reached: refusing connection");
                tokio::spawn(refuse(stream));
            }
        }
    }
}

/// Past the connection limit: a short 503 and close, rather than a hang.
async fn refuse(mut stream: TcpStream) {
    let _ = stream
        .write_all(
            b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\nconnection: close\r\nretry-after: 1\r\n\r\n",
        )
        .await;
    let _ = stream.shutdown().await;
}
