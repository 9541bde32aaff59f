//! Write-behind for weir's own files (the state file, the audit log): a
//! thread per file writes what the daemon hands it, so that a slow or full
//! disk never holds up a gate decision or the admin API. A failed write is
//! kept and tried again with backoff (1 s doubling to 30 s), counted in a
//! metric, logged (at the first failure, then once a minute, and when it
//! works again) and shown in `/readyz`'s body ([`Behind::problem`]); weir
//! stays ready, since serving must not stop because a disk is full.
//!
//! Two ways to queue: [`Mode::Replace`] keeps only the newest (a state file
//! is whole each time), [`Mode::Append`] appends, up to a bound past which
//! what comes is dropped and counted (a log).
//!
//! On a healthy disk the caller may wait for its write ([`Behind::wait`],
//! bounded), so the file holds what the API shows; while writes fail
//! nobody waits.

use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Longest wait between two tries of a failing write.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// How submissions queue.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Mode {
    /// The newest submission replaces what is not yet written.
    Replace,
    /// Submissions append, up to this many bytes waiting.
    Append(usize),
}

/// A failing file, as `/readyz` shows it.
#[derive(Clone, Debug)]
pub(crate) struct Problem {
    pub(crate) error: String,
    pub(crate) failures: u64,
    /// Unix ms of the first failure in this run of failures.
    pub(crate) since_ms: u64,
}

#[derive(Debug, Default)]
struct Inner {
    pending: Vec<u8>,
    /// Submissions queued, and written (a write covers every submission
    /// queued before it began).
    queued: u64,
    done: u64,
    problem: Option<Problem>,
    /// Bytes dropped because the queue was full (Append).
    dropped: u64,
    closed: bool,
    /// The thread has ended.
    ended: bool,
}

#[derive(Debug)]
struct Shared {
    inner: Mutex<Inner>,
    cv: Condvar,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The handle of one write-behind thread.
#[derive(Debug)]
pub(crate) struct Behind {
    shared: Arc<Shared>,
    mode: Mode,
    /// Counts dropped submissions (Append).
    dropped: Option<metrics::Counter>,
    /// The file, as logs and `/readyz` name it.
    what: String,
}

/// Counters of a [`Behind`].
pub(crate) struct Counters {
    /// Failed writes.
    pub(crate) failures: metrics::Counter,
    /// Submissions dropped because the queue was full (Append only).
    pub(crate) dropped: Option<metrics::Counter>,
}

impl Behind {
    /// Starts the thread `name`, which writes with `write` (the whole file
    /// for Replace, the bytes to append for Append); `what` names the file
    /// in the process log.
    pub(crate) fn start(
        name: &str,
        what: String,
        mode: Mode,
        counters: Counters,
        mut write: impl FnMut(&[u8]) -> std::io::Result<()> + Send + 'static,
    ) -> std::io::Result<Behind> {
        let shared = Arc::new(Shared { inner: Mutex::new(Inner::default()), cv: Condvar::new() });
        let s = shared.clone();
        let failures = counters.failures;
        let name_of = what.clone();
        std::thread::Builder::new().name(name.into()).spawn(move || {
            let mut backoff = Duration::from_secs(1);
            let mut logged: Option<Instant> = None;
            loop {
                let mut inner = s.lock();
                while inner.pending.is_empty() && !inner.closed {
                    inner = s.cv.wait(inner).unwrap_or_else(PoisonError::into_inner);
                }
                if inner.pending.is_empty() {
                    inner.ended = true;
                    s.cv.notify_all();
                    return;
                }
                let batch = std::mem::take(&mut inner.pending);
                let upto = inner.queued;
                let closing = inner.closed;
                drop(inner);
                let result = write(&batch);
                let mut inner = s.lock();
                match result {
                    Ok(()) => {
                        inner.done = upto;
                        if let Some(p) = inner.problem.take() {
                            tracing::info!("{what}: written again after {} failed writes", p.failures);
                        }
                        backoff = Duration::from_secs(1);
                        logged = None;
                        s.cv.notify_all();
                    }
                    Err(e) => {
                        failures.increment(1);
                        let p = inner.problem.get_or_insert_with(|| Problem {
                            error: String::new(),
                            failures: 0,
                            since_ms: unix_ms(),
                        });
                        p.failures += 1;
                        p.error = e.to_string();
                        if logged.is_none_or(|t| t.elapsed() >= Duration::from_secs(60)) {
                            tracing::error!(
                                "{what}: write failed ({e}); kept and tried again (every {}s at most; weir keeps serving)",
                                MAX_BACKOFF.as_secs()
                            );
                            logged = Some(Instant::now());
                        }
                        // Back in front of what came since (Replace: only
                        // if nothing newer came).
                        match mode {
                            Mode::Replace if !inner.pending.is_empty() => {}
                            _ => {
                                let newer = std::mem::replace(&mut inner.pending, batch);
                                inner.pending.extend_from_slice(&newer);
                            }
                        }
                        s.cv.notify_all();
                        if closing {
                            // Shutting down: one try, no waiting.
                            inner.ended = true;
                            s.cv.notify_all();
                            return;
                        }
                        let until = Instant::now() + backoff;
                        backoff = (backoff * 2).min(MAX_BACKOFF);
                        while !inner.closed {
                            let left = until.saturating_duration_since(Instant::now());
                            if left.is_zero() {
                                break;
                            }
                            inner = s.cv.wait_timeout(inner, left).unwrap_or_else(PoisonError::into_inner).0;
                        }
                    }
                }
            }
        })?;
        Ok(Behind { shared, mode, dropped: counters.dropped, what: name_of })
    }

    /// Queues `bytes`; the submission's number for [`Behind::wait`], or
    /// `None` if it was dropped (Append, queue full).
    pub(crate) fn submit(&self, bytes: &[u8]) -> Option<u64> {
        let mut inner = self.shared.lock();
        match self.mode {
            Mode::Replace => {
                inner.pending.clear();
                inner.pending.extend_from_slice(bytes);
            }
            Mode::Append(max) => {
                if inner.pending.len() + bytes.len() > max {
                    inner.dropped += 1;
                    if let Some(c) = &self.dropped {
                        c.increment(1);
                    }
                    return None;
                }
                inner.pending.extend_from_slice(bytes);
            }
        }
        inner.queued += 1;
        self.shared.cv.notify_all();
        Some(inner.queued)
    }

    /// Waits up to `timeout` for submission `seq` to be written, unless
    /// writes are failing (then at once); whether it was.
    pub(crate) fn wait(&self, seq: u64, timeout: Duration) -> bool {
        let inner = self.shared.lock();
        let (inner, _) = self
            .shared
            .cv
            .wait_timeout_while(inner, timeout, |i| i.done < seq && i.problem.is_none() && !i.ended)
            .unwrap_or_else(PoisonError::into_inner);
        inner.done >= seq
    }

    /// Writes what is queued (one try if writes are failing) and ends the
    /// thread, waiting up to `timeout`.
    pub(crate) fn close(&self, timeout: Duration) {
        let mut inner = self.shared.lock();
        inner.closed = true;
        self.shared.cv.notify_all();
        let _ = self.shared.cv.wait_timeout_while(inner, timeout, |i| !i.ended).unwrap_or_else(PoisonError::into_inner);
    }

    /// The current run of failed writes, if writes are failing.
    pub(crate) fn problem(&self) -> Option<Problem> {
        self.shared.lock().problem.clone()
    }

    /// The file, as logs name it ("state file PATH").
    pub(crate) fn what(&self) -> &str {
        &self.what
    }

    /// Submissions dropped because the queue was full.
    #[cfg(test)]
    pub(crate) fn dropped(&self) -> u64 {
        self.shared.lock().dropped
    }
}

impl Drop for Behind {
    /// The thread writes what is queued and ends (nobody waits).
    fn drop(&mut self) {
        self.shared.lock().closed = true;
        self.shared.cv.notify_all();
    }
}

fn unix_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};

    fn counters() -> Counters {
        Counters { failures: metrics::Counter::noop(), dropped: None }
    }

    #[test]
    fn a_failed_write_is_kept_and_written_when_the_disk_is_back() {
        let fail = Arc::new(AtomicBool::new(true));
        let out = Arc::new(Mutex::new(Vec::new()));
        let (f, o) = (fail.clone(), out.clone());
        let w = Behind::start("test-behind", "test".into(), Mode::Append(1 << 20), counters(), move |b| {
            if f.load(Ordering::SeqCst) {
                return Err(std::io::Error::other("disk full"));
            }
            o.lock().unwrap().extend_from_slice(b);
            Ok(())
        })
        .unwrap();
        let a = w.submit(b"a\n").unwrap();
        // Failing: nobody waits, the problem is there to see.
        assert!(!w.wait(a, Duration::from_secs(5)));
        let p = w.problem().expect("a problem");
        assert_eq!(p.error, "disk full");
        let b = w.submit(b"b\n").unwrap();
        fail.store(false, Ordering::SeqCst);
        // The retry (after 1 s) writes both, in order.
        let since = Instant::now();
        while !w.wait(b, Duration::from_millis(100)) {
            assert!(since.elapsed() < Duration::from_secs(10), "never written");
        }
        assert_eq!(&*out.lock().unwrap(), b"a\nb\n");
        assert!(w.problem().is_none());
        w.close(Duration::from_secs(1));
    }

    #[test]
    fn replace_keeps_the_newest_and_append_drops_past_its_bound() {
        let out = Arc::new(Mutex::new(Vec::<Vec<u8>>::new()));
        let o = out.clone();
        let w = Behind::start("test-behind", "test".into(), Mode::Replace, counters(), move |b| {
            o.lock().unwrap().push(b.to_vec());
            Ok(())
        })
        .unwrap();
        let mut last = 0;
        for i in 0..100 {
            last = w.submit(format!("{i}").as_bytes()).unwrap();
        }
        assert!(w.wait(last, Duration::from_secs(5)));
        assert_eq!(out.lock().unwrap().last().unwrap(), b"99");
        w.close(Duration::from_secs(1));

        let gate = Arc::new(Mutex::new(()));
        let held = gate.lock().unwrap();
        let g = gate.clone();
        let w = Behind::start("test-behind", "test".into(), Mode::Append(10), counters(), move |_| {
            drop(g.lock().unwrap());
            Ok(())
        })
        .unwrap();
        // The first write blocks on the gate; then 10 bytes queue, no more.
        w.submit(b"first").unwrap();
        let since = Instant::now();
        while !w.shared.lock().pending.is_empty() {
            assert!(since.elapsed() < Duration::from_secs(5));
            std::thread::yield_now();
        }
        assert!(w.submit(b"0123456789").is_some());
        assert!(w.submit(b"x").is_none());
        assert_eq!(w.dropped(), 1);
        drop(held);
        w.close(Duration::from_secs(5));
        assert!(w.shared.lock().ended);
    }
}
