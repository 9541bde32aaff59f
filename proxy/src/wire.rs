//! Small pieces shared by weir's own HTTP/1.1 server loop and client:
//! per-thread scratch buffers, number formatting, the `Date` field, and the
//! connection timer built on the coarse clock.

use std::cell::RefCell;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::BytesMut;
use rustix::time::{clock_gettime, ClockId};
use tokio::io::{AsyncRead, ReadBuf};
use tokio::time::{Duration, Instant, Sleep};

use crate::clock::coarse_ms;

/// Scratch read size: one read takes whatever the socket has, up to this.
const SCRATCH: usize = 16 * 1024;

thread_local! {
    static READ_SCRATCH: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
    static WRITE_SCRATCH: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
    static DATE: RefCell<(u64, [u8; 29])> = const { RefCell::new((0, [0; 29])) };
}

/// Reads what the socket has, appending it to `pending` (which grows only
/// by what was read, so an idle connection holds no buffer). `Ok(0)` is end
/// of stream; `Pending` means nothing is there (and `cx` will be woken).
///
/// This goes through tokio's `poll_read` rather than `try_read` on
/// purpose: after a short read it forgets the socket's readiness (the
/// kernel buffer is drained; edge-triggered epoll reports what comes
/// next), so the next read waits for an event instead of costing a
/// `recvfrom` that fails with `EAGAIN`. That is one system call less per
/// request on each side.
pub(crate) fn poll_read<S: AsyncRead + Unpin>(
    stream: &mut S,
    cx: &mut Context<'_>,
    pending: &mut BytesMut,
) -> Poll<io::Result<usize>> {
    READ_SCRATCH.with(|s| {
        let mut s = s.borrow_mut();
        if s.len() < SCRATCH {
            s.resize(SCRATCH, 0);
        }
        let mut rb = ReadBuf::new(&mut s[..]);
        ready!(Pin::new(stream).poll_read(cx, &mut rb))?;
        pending.extend_from_slice(rb.filled());
        Poll::Ready(Ok(rb.filled().len()))
    })
}

/// This thread's write buffer, empty (a new one if it is lent out). Give it
/// back with [`put_write_scratch`] once written; a write that is cancelled
/// simply drops it.
pub(crate) fn take_write_scratch() -> Vec<u8> {
    let mut w = WRITE_SCRATCH.with(|s| std::mem::take(&mut *s.borrow_mut()));
    w.clear();
    w
}

/// Returns a write buffer for the next response or request on this thread.
pub(crate) fn put_write_scratch(mut w: Vec<u8>) {
    // A buffer grown by a huge head is not kept.
    if w.capacity() <= 64 * 1024 {
        w.clear();
        WRITE_SCRATCH.with(|s| *s.borrow_mut() = w);
    }
}

/// Appends today's `Date` (RFC 9110 §5.6.7), formatted once a second per
/// thread (from the coarse wall clock: within a tick of the second).
pub(crate) fn date(w: &mut Vec<u8>) {
    let secs = clock_gettime(ClockId::RealtimeCoarse).tv_sec.max(0) as u64;
    DATE.with(|d| {
        let mut d = d.borrow_mut();
        if d.0 != secs {
            let s = httpdate::fmt_http_date(std::time::UNIX_EPOCH + Duration::from_secs(secs));
            if s.len() == 29 {
                d.1.copy_from_slice(s.as_bytes());
                d.0 = secs;
            }
        }
        w.extend_from_slice(&d.1);
    });
}

/// `n` in decimal, written into `buf`.
pub(crate) fn itoa(mut n: u64, buf: &mut [u8; 20]) -> &[u8] {
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            return &buf[i..];
        }
    }
}

/// `n` in lowercase hexadecimal (a chunk size), written into `buf`.
pub(crate) fn hex(mut n: usize, buf: &mut [u8; 16]) -> &[u8] {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = DIGITS[n & 0xf];
        n >>= 4;
        if n == 0 {
            return &buf[i..];
        }
    }
}

/// A connection's timer for deadlines on the [`coarse_ms`] clock, kept for
/// the connection's life and moved lazily: it must never fire *later* than
/// the deadline it guards, but may fire earlier, and is then re-armed. So
/// a new deadline further away (the next request on a busy connection)
/// costs no timer update at all; only a nearer one moves it.
#[derive(Debug)]
pub(crate) struct LazyTimer {
    sleep: Pin<Box<Sleep>>,
    /// The [`coarse_ms`] deadline the timer is armed for.
    armed: u64,
    /// The waiting task's waker is registered with the timer (which keeps
    /// it until it fires): waiting again in the same task needs no new
    /// registration (each costs a waker clone and two atomic swaps).
    registered: bool,
}

impl LazyTimer {
    /// A timer that fires by `deadline` (a [`coarse_ms`] time).
    pub(crate) fn new(deadline: u64) -> Self {
        let now = coarse_ms();
        let sleep = Box::pin(tokio::time::sleep(Duration::from_millis(deadline.saturating_sub(now))));
        LazyTimer { sleep, armed: deadline, registered: false }
    }

    /// Makes sure the timer fires by `deadline`.
    pub(crate) fn guard(&mut self, deadline: u64) {
        if deadline < self.armed {
            self.arm(deadline);
        }
    }

    fn arm(&mut self, deadline: u64) {
        let wait = deadline.saturating_sub(coarse_ms());
        self.sleep.as_mut().reset(Instant::now() + Duration::from_millis(wait));
        self.armed = deadline;
        self.registered = false;
    }

    /// The timer now serves another task (a pooled connection checked out):
    /// its next wait registers that task.
    pub(crate) fn rebind(&mut self) {
        self.registered = false;
    }

    /// `Ready` once `deadline` has passed (re-arming, and waiting on, a
    /// timer that fired early). Always called from the same task between
    /// [`LazyTimer::rebind`]s.
    pub(crate) fn poll_expired(&mut self, cx: &mut Context<'_>, deadline: u64) -> Poll<()> {
        if self.registered && !self.sleep.is_elapsed() {
            return Poll::Pending;
        }
        loop {
            if self.sleep.as_mut().poll(cx).is_pending() {
                self.registered = true;
                return Poll::Pending;
            }
            if coarse_ms() >= deadline {
                return Poll::Ready(());
            }
            self.arm(deadline);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_written_in_decimal_and_hex() {
        assert_eq!(itoa(0, &mut [0; 20]), b"0");
        assert_eq!(itoa(u64::MAX, &mut [0; 20]), u64::MAX.to_string().as_bytes());
        assert_eq!(hex(0, &mut [0; 16]), b"0");
        assert_eq!(hex(0x1f2e, &mut [0; 16]), b"1f2e");
    }

    #[test]
    fn the_date_is_an_imf_fixdate() {
        let mut w = Vec::new();
        date(&mut w);
        let s = String::from_utf8(w).unwrap();
        assert!(httpdate::parse_http_date(&s).is_ok(), "{s}");
    }

    #[tokio::test]
    async fn lazy_timer_fires_at_the_deadline_it_guards_never_before() {
        let start = coarse_ms();
        // Armed far out, then guarding a nearer deadline: moved in.
        let mut timer = LazyTimer::new(start + 60_000);
        timer.guard(start + 40);
        std::future::poll_fn(|cx| timer.poll_expired(cx, start + 40)).await;
        assert!(coarse_ms() >= start + 40);
        // A further deadline leaves the timer where it is; when it fires
        // early, the deadline still holds.
        let start = coarse_ms();
        timer.guard(start + 10);
        timer.guard(start + 80);
        std::future::poll_fn(|cx| timer.poll_expired(cx, start + 80)).await;
        assert!(coarse_ms() >= start + 80);
    }
}
