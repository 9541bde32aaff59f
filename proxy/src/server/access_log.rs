//! The optional JSON access log: one line per request, written by a
//! dedicated thread so that requests never wait on disk. Its queue is
//! bounded ([`QUEUE`] lines, a path logged up to [`MAX_PATH`] bytes): when
//! the disk cannot keep up (stalled, a pipe nobody reads) lines are
//! dropped, and when a write fails (a full disk) they are lost; both are
//! counted in `weir_access_log_dropped_total` and said in the process log
//! by the once-a-second ticker (at most every 10 s), never from a request,
//! which goes on.

use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::{Method, StatusCode, Uri};
use weir_control::config::AccessLog as Dest;

use super::request::{ConnCtx, Outcome};

/// Lines queued for the writer at most (a few MiB).
pub(crate) const QUEUE: usize = 8192;
/// A longer request path is cut in its line (`path_cut: true`).
pub(crate) const MAX_PATH: usize = 2048;

/// Sender side of the access log.
pub(crate) struct AccessLog {
    tx: mpsc::SyncSender<String>,
    /// Lines dropped (the queue full) or lost (a write failed).
    dropped: metrics::Counter,
    /// The same, since the last warning.
    unwarned: Arc<AtomicU64>,
    /// [`crate::clock::coarse_ms`] of the last warning.
    warned_ms: AtomicU64,
}

impl AccessLog {
    /// Opens `dest`; `dropped` counts the lines a full queue drops.
    pub(crate) fn open(dest: &Dest, dropped: metrics::Counter) -> std::io::Result<Option<AccessLog>> {
        let out: Box<dyn Write + Send> = match dest {
            Dest::Off => return Ok(None),
            Dest::Stdout => Box::new(std::io::stdout()),
            Dest::File(path) => Box::new(std::fs::OpenOptions::new().create(true).append(true).open(path)?),
        };
        let (tx, rx) = mpsc::sync_channel::<String>(QUEUE);
        let unwarned = Arc::new(AtomicU64::new(0));
        let (lost, lost_unwarned) = (dropped.clone(), unwarned.clone());
        std::thread::Builder::new().name("weir-access-log".into()).spawn(move || {
            let mut out = out;
            // What is queued goes out in one write; a write that fails (a
            // full disk) loses its lines, counted.
            let mut batch = Vec::with_capacity(64 * 1024);
            while let Ok(line) = rx.recv() {
                batch.extend_from_slice(line.as_bytes());
                let mut lines = 1u64;
                while batch.len() < 1 << 20 {
                    let Ok(line) = rx.try_recv() else { break };
                    batch.extend_from_slice(line.as_bytes());
                    lines += 1;
                }
                if out.write_all(&batch).and_then(|()| out.flush()).is_err() {
                    lost.increment(lines);
                    lost_unwarned.fetch_add(lines, Ordering::Relaxed);
                }
                batch.clear();
                if batch.capacity() > 1 << 20 {
                    batch.shrink_to(64 * 1024);
                }
            }
        })?;
        Ok(Some(AccessLog { tx, dropped, unwarned, warned_ms: AtomicU64::new(0) }))
    }

    /// Says in the process log that lines were dropped or lost since the
    /// last time (at most every 10 s; the ticker calls it once a second).
    pub(crate) fn warn_if_dropped(&self) {
        let now = crate::clock::coarse_ms();
        if now.saturating_sub(self.warned_ms.load(Ordering::Relaxed)) < 10_000 {
            return;
        }
        let n = self.unwarned.swap(0, Ordering::Relaxed);
        if n > 0 {
            self.warned_ms.store(now, Ordering::Relaxed);
            tracing::warn!(
                "access log: {n} lines dropped or lost (the disk slow, stalled or full?); weir_access_log_dropped_total counts them"
            );
        }
    }

    pub(crate) fn record(
        &self,
        conn: &ConnCtx,
        method: &Method,
        uri: &Uri,
        status: StatusCode,
        elapsed: Duration,
        o: &Outcome<'_>,
    ) {
        let ts = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64());
        let error = o.error.map(|e| e.kind());
        let line = serde_json::json!({
            "ts": ts,
            "client": conn.peer.to_string(),
            "method": method.as_str(),
            "path": uri.path().get(..MAX_PATH).unwrap_or(uri.path()),
            "path_cut": uri.path().len() > MAX_PATH,
            "status": status.as_u16(),
            "route": o.route,
            "backend": o.backend,
            "version": o.version,
            "side": o.side.map(|s| s.as_str()),
            "upstream": o.upstream.map(|a| a.to_string()),
            "error": error,
            "duration_ms": elapsed.as_secs_f64() * 1000.0,
        });
        let mut line = line;
        if let (Some(t), Some(map)) = (o.trace, line.as_object_mut()) {
            map.insert("trace_id".into(), t.trace_id_hex().into());
        }
        if let Err(mpsc::TrySendError::Full(_)) = self.tx.try_send(format!("{line}\n")) {
            self.dropped.increment(1);
            self.unwarned.fetch_add(1, Ordering::Relaxed);
        }
    }
}
