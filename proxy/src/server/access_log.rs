//! The optional JSON access log: one line per request, written by a
//! dedicated thread so that requests never wait on disk.

use std::io::Write;
use std::sync::mpsc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::{Method, StatusCode, Uri};
use weir_control::config::AccessLog as Dest;

use super::error::ProxyError;
use super::request::{ConnCtx, Outcome};

/// Sender side of the access log.
pub(crate) struct AccessLog {
    tx: mpsc::Sender<String>,
}

impl AccessLog {
    pub(crate) fn open(dest: &Dest) -> std::io::Result<Option<AccessLog>> {
        let out: Box<dyn Write + Send> = match dest {
            Dest::Off => return Ok(None),
            Dest::Stdout => Box::new(std::io::stdout()),
            Dest::File(path) => Box::new(std::fs::OpenOptions::new().create(true).append(true).open(path)?),
        };
        let (tx, rx) = mpsc::channel::<String>();
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
        Ok(Some(AccessLog { tx }))
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
        let _ = self.tx.send(format!("{line}\n"));
    }
}
