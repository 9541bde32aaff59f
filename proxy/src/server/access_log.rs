//! The optional JSON access log: one line per request, written by a
//! dedicated thread so that requests never wait on disk. Its queue is
//! bounded ([`QUEUE`] lines): when the disk cannot keep up (stalled, full,
//! a pipe nobody reads), lines are dropped, counted in
//! `weir_access_log_dropped_total` and warned about (at most every 10 s),
//! and requests go on.

use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::{Method, StatusCode, Uri};
use weir_control::config::AccessLog as Dest;

use super::error::ProxyError;
use super::request::{ConnCtx, Outcome};

/// Lines queued for the writer at most (about 2 MiB).
pub(crate) const QUEUE: usize = 8192;

/// Sender side of the access log.
pub(crate) struct AccessLog {
    tx: mpsc::SyncSender<String>,
    /// Lines dropped because the queue was full.
    dropped: metrics::Counter,
    /// [`coarse_ms`] of the last warning about dropped lines.
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
        std::thread::Builder::new().name("weir-access-log".into()).spawn(move || {
            let mut out = std::io::BufWriter::new(out);
            while let Ok(line) = rx.recv() {
                let _ = out.write_all(line.as_bytes());
                // Drain what is queued, then flush once.
                while let Ok(line) = rx.try_recv() {
                    let _ = out.write_all(line.as_bytes());
                }
                let _ = out.flush();
            }
        })?;
        Ok(Some(AccessLog { tx, dropped, warned_ms: AtomicU64::new(0) }))
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
        let error = match o.error {
            Some(ProxyError::Upstream(k)) => Some(k.as_str()),
            Some(ProxyError::BadRequest(_)) => Some("bad_request"),
            Some(ProxyError::NoRoute) => Some("no_route"),
            Some(ProxyError::Injected(_)) => Some("injected"),
            Some(ProxyError::BodyTimeout) => Some("body_timeout"),
            Some(ProxyError::Overloaded) => Some("overloaded"),
            None => None,
        };
        let line = serde_json::json!({
            "ts": ts,
            "client": conn.peer.to_string(),
            "method": method.as_str(),
            "path": uri.path(),
            "status": status.as_u16(),
            "route": o.route,
            "backend": o.backend,
            "version": o.version,
            "side": o.side.map(|s| s.as_str()),
            "upstream": o.upstream.map(|a| a.to_string()),
            "error": error,
            "duration_ms": elapsed.as_secs_f64() * 1000.0,
        });
        if let Err(mpsc::TrySendError::Full(_)) = self.tx.try_send(format!("{line}\n")) {
            self.dropped.increment(1);
            let now = crate::clock::coarse_ms();
            let last = self.warned_ms.load(Ordering::Relaxed);
            if now.saturating_sub(last) >= 10_000
                && self.warned_ms.compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed).is_ok()
            {
                tracing::warn!(
                    "access log: the writer is behind by {QUEUE} lines (disk slow or full?): dropping lines (weir_access_log_dropped_total)"
                );
            }
        }
    }
}
