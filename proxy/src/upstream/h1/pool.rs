//! The idle connections of one upstream address, in lock-free queues on
//! the address itself: a checkout is a pop, a return a push.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use crossbeam_queue::ArrayQueue;
use tokio::net::TcpStream;

use crate::clock::coarse_ms;
use crate::wire::LazyTimer;

/// Whether an idle connection has nothing to read: anything readable (end
/// of stream, stray bytes) retires it. Readiness is cached by the runtime:
/// when nothing arrived since the last read this costs no system call, and
/// unlike a poll it spends none of the task's cooperative budget (a sweep
/// over hundreds of closed connections sees every one).
fn quiet(stream: &TcpStream, discards: &Discards) -> bool {
    match stream.try_read(&mut [0u8; 1]) {
        Err(e) => e.kind() == std::io::ErrorKind::WouldBlock,
        Ok(0) => false,
        // Bytes nobody asked for: the previous response was longer than
        // its framing said (or the upstream is confused).
        Ok(_) => {
            discards.count(Discard::UnreadBytes);
            false
        }
    }
}

/// Why a connection was closed rather than pooled, when the upstream is to
/// blame (a `Connection: close`, a read-to-close body or an upstream that
/// closed an idle connection are ordinary and not counted).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Discard {
    /// Bytes after the end of a response, or on an idle connection.
    UnreadBytes,
    /// The body broke its framing: a bad chunk, or closed short.
    BrokenBody,
    /// Nothing arrived for `timeouts.upstream_read` in the middle of a body.
    ReadTimeout,
}

impl Discard {
    pub(crate) const ALL: [Discard; 3] = [Discard::UnreadBytes, Discard::BrokenBody, Discard::ReadTimeout];

    /// The `reason` label of `weir_upstream_connections_discarded_total`.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Discard::UnreadBytes => "unread_bytes",
            Discard::BrokenBody => "broken_body",
            Discard::ReadTimeout => "read_timeout",
        }
    }
}

/// Connections discarded, by [`Discard`], since the ticker last took them.
#[derive(Debug, Default)]
pub(crate) struct Discards([AtomicU64; 3]);

impl Discards {
    pub(crate) fn count(&self, why: Discard) {
        self.0[why as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// The counts since the last call, zeroed.
    pub(crate) fn take(&self, why: Discard) -> u64 {
        self.0[why as usize].swap(0, Ordering::Relaxed)
    }
}

/// Idle connections kept per address at most (more are closed).
const POOL_SIZE: usize = 1024;

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
///
/// **The sweep and checkouts.** A sweep (on the control thread) takes each
/// connection out of its queue to look at it, so for that instant a
/// checkout could find the pool empty and connect anew. A sweep holds
/// `sweeping` throughout, and a checkout that finds nothing waits for it
/// and looks once more: only the path that is about to open a connection
/// takes the lock, never a checkout that finds one.
#[derive(Debug)]
pub(crate) struct Pool {
    hot: ArrayQueue<Idle>,
    idle: ArrayQueue<Idle>,
    /// Held by a sweep while it has connections out of the queues.
    sweeping: Mutex<()>,
    /// The address left the config (or its DNS answer): nothing is kept.
    retired: AtomicBool,
    /// Connections closed for the upstream's fault, for the ticker to export.
    pub(crate) discards: Discards,
}

impl Default for Pool {
    fn default() -> Self {
        Pool {
            hot: ArrayQueue::new(1),
            idle: ArrayQueue::new(POOL_SIZE),
            retired: AtomicBool::new(false),
            sweeping: Mutex::new(()),
            discards: Discards::default(),
        }
    }
}

impl Pool {
    /// A connection the upstream has not closed, if there is one. (Age is
    /// the sweeper's business: it runs every second.)
    pub(super) fn checkout(&self) -> Option<(TcpStream, LazyTimer)> {
        if let Some(found) = self.take() {
            return Some(found);
        }
        // Nothing: a sweep may have them out for a look. Once it is over
        // they are back (the sweep pushes before it lets go), and none
        // starts while this looks again.
        let _no_sweep = self.sweeping.lock().unwrap_or_else(PoisonError::into_inner);
        self.take()
    }

    fn take(&self) -> Option<(TcpStream, LazyTimer)> {
        loop {
            // `is_empty` is two loads; a `pop` that finds nothing fences.
            let idle = if self.hot.is_empty() { None } else { self.hot.pop() };
            let idle = idle.or_else(|| self.idle.pop())?;
            if quiet(&idle.stream, &self.discards) {
                return Some((idle.stream, idle.timer));
            }
        }
    }

    /// Returns a connection; `in_flight` counts the address's requests in
    /// flight, the one returning it included.
    pub(super) fn put(&self, stream: TcpStream, timer: LazyTimer, in_flight: u32) {
        if self.retired.load(Ordering::Relaxed) {
            return; // closed
        }
        let mut idle = Idle { stream, timer, since: coarse_ms() };
        if in_flight <= 1 {
            match self.hot.push(idle) {
                Ok(()) => return,
                Err(back) => idle = back,
            }
        }
        let _ = self.idle.push(idle);
    }

    /// Closes the connections idle for `max_idle` or more, and those the
    /// upstream closed (or sent stray bytes on) meanwhile: called once a
    /// second, so a connection in CLOSE_WAIT gives its descriptor back
    /// within a second, not at the next checkout or `max_idle` later. The
    /// others keep their order.
    pub(crate) fn sweep(&self, max_idle: Duration) {
        let sweeping = self.sweeping.lock().unwrap_or_else(PoisonError::into_inner);
        let now = coarse_ms();
        // Closed once the lock is let go: a checkout waiting on it waits
        // for no close(2).
        let mut closing = Vec::new();
        for queue in [&self.hot, &self.idle] {
            for _ in 0..queue.len() {
                let Some(idle) = queue.pop() else { break };
                if quiet(&idle.stream, &self.discards) && now.saturating_sub(idle.since) < max_idle.as_millis() as u64 {
                    // Fails only for the hot slot, when a return took it
                    // meanwhile: the connection then joins the queue.
                    if let Err(idle) = queue.push(idle) {
                        let _ = self.idle.push(idle);
                    }
                } else {
                    closing.push(idle);
                }
            }
        }
        drop(sweeping);
        drop(closing);
    }

    /// The address is no longer served: closes the idle connections, and
    /// every connection returned from now on (one returned in the instant
    /// of retiring may still get in: the ticker retires the pool once more
    /// a second later, `DataPlane::swap_in`).
    pub(crate) fn retire(&self) {
        self.retired.store(true, Ordering::Relaxed);
        self.sweep(Duration::ZERO);
    }

    /// Idle connections right now.
    pub(crate) fn len(&self) -> usize {
        self.hot.len() + self.idle.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    /// A sweep on another thread never makes a checkout miss the one idle
    /// connection (it did when a sweep had it out of the queue for a look:
    /// the end-to-end test of one reused connection then saw two).
    #[test]
    fn a_sweep_never_hides_an_idle_connection_from_a_checkout() {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let stream = TcpStream::connect(listener.local_addr().unwrap()).await.unwrap();
            let (_peer, _) = listener.accept().await.unwrap();
            let pool = Arc::new(Pool::default());
            pool.put(stream, LazyTimer::new(coarse_ms() + 60_000), 1);
            let done = Arc::new(AtomicBool::new(false));
            let sweeper = {
                let (pool, done) = (pool.clone(), done.clone());
                std::thread::spawn(move || {
                    while !done.load(Ordering::Relaxed) {
                        pool.sweep(Duration::from_secs(600));
                    }
                })
            };
            let mut misses = 0;
            for _ in 0..200_000 {
                match pool.checkout() {
                    Some((s, t)) => pool.put(s, t, 1),
                    None => misses += 1,
                }
                if misses > 0 {
                    break;
                }
            }
            done.store(true, Ordering::Relaxed);
            sweeper.join().unwrap();
            assert_eq!(misses, 0, "a checkout found the pool empty during a sweep");
            assert_eq!(pool.len(), 1);
        });
    }
}
