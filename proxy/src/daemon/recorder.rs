//! `[recording]`'s writer: lines go through a bounded channel to a thread
//! of their own, which appends them to the file and rotates it to
//! `FILE.1` at `max_size` (each file starts with a `start` line). A slow
//! disk never holds the daemon thread: lines that do not fit in the
//! channel are dropped and logged. `recording.rs` makes the lines.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::time::Duration;

use weir_control::config::Recording;
use weir_control::recording::Line;

use crate::clock::engine_ms;

/// Lines waiting for the writer at most.
const QUEUE: usize = 4096;

/// What the writer is asked.
enum Msg {
    /// A line for the file `path` (rotated at `max_size`).
    Line { path: PathBuf, max_size: u64, text: String },
    /// Answer once every line before this one is written.
    Flush(SyncSender<()>),
}

/// The writer thread's sending end.
pub(crate) struct Recorder {
    tx: SyncSender<Msg>,
    dropped: AtomicU64,
    /// The last second written (0: none yet), for `recording.rs`.
    pub(super) written: AtomicU64,
}

impl Recorder {
    /// Starts the writer thread (it ends when the recorder is dropped).
    pub(crate) fn start() -> Recorder {
        let (tx, rx) = sync_channel(QUEUE);
        let dropped = AtomicU64::new(0);
        let spawned = std::thread::Builder::new().name("weir-recording".into()).spawn(move || write_lines(&rx));
        if let Err(e) = spawned {
            tracing::warn!("recording: cannot start its writer thread: {e}; nothing will be recorded");
        }
        Recorder { tx, dropped, written: AtomicU64::new(0) }
    }

    /// Queues `line` for the recording `cfg` names (its file resolved
    /// against the config file's directory).
    pub(crate) fn send(&self, cfg: &Recording, config_path: Option<&Path>, line: &Line) {
        let Ok(text) = serde_json::to_string(line) else { return };
        let path = crate::files::config_relative(&cfg.file, config_path);
        match self.tx.try_send(Msg::Line { path, max_size: cfg.max_size, text }) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                if self.dropped.fetch_add(1, Ordering::Relaxed).is_multiple_of(1000) {
                    tracing::warn!("recording: the writer is behind (slow disk?); lines dropped");
                }
            }
            Err(TrySendError::Disconnected(_)) => {}
        }
    }

    /// Waits (at most `timeout`) until every line queued so far is
    /// written: at shutdown, so that the last events reach the file.
    pub(crate) fn flush(&self, timeout: Duration) {
        let (ack, done) = sync_channel(1);
        if self.tx.send(Msg::Flush(ack)).is_ok() {
            let _ = done.recv_timeout(timeout);
        }
    }
}

/// A line to write, and where.
struct ToWrite {
    path: PathBuf,
    max_size: u64,
    text: String,
}

/// The open file: where, its handle, its size.
struct Open {
    path: PathBuf,
    file: File,
    size: u64,
}

/// The writer thread: appends each line to its file, rotating at the
/// size limit. Failures are logged once per file, and the line dropped.
fn write_lines(rx: &Receiver<Msg>) {
    let mut open: Option<Open> = None;
    let mut failing: Option<PathBuf> = None;
    while let Ok(msg) = rx.recv() {
        let msg = match msg {
            Msg::Flush(ack) => {
                let _ = ack.try_send(());
                continue;
            }
            Msg::Line { path, max_size, text } => ToWrite { path, max_size, text },
        };
        let line = msg.text + "\n";
        let needs_open = open.as_ref().is_none_or(|o| o.path != msg.path);
        let full = open.as_ref().is_some_and(|o| o.size > 0 && o.size + line.len() as u64 > msg.max_size);
        let result = (|| -> std::io::Result<()> {
            if needs_open || full {
                if full {
                    open = None;
                    std::fs::rename(&msg.path, rotated(&msg.path))?;
                }
                let file = OpenOptions::new().create(true).append(true).open(&msg.path)?;
                let size = file.metadata()?.len();
                let mut o = Open { path: msg.path.clone(), file, size };
                let start = Line::Start { weir: env!("CARGO_PKG_VERSION").into(), at_ms: engine_ms() };
                let text = serde_json::to_string(&start).map_err(std::io::Error::other)? + "\n";
                o.file.write_all(text.as_bytes())?;
                o.size += text.len() as u64;
                open = Some(o);
            }
            if let Some(o) = open.as_mut() {
                o.file.write_all(line.as_bytes())?;
                o.size += line.len() as u64;
            }
            Ok(())
        })();
        match result {
            Ok(()) => failing = None,
            Err(e) => {
                open = None;
                if failing.as_ref() != Some(&msg.path) {
                    tracing::warn!("recording {}: {e}; lines dropped until it works again", msg.path.display());
                    failing = Some(msg.path.clone());
                }
            }
        }
    }
}

/// `FILE.1`.
fn rotated(path: &Path) -> PathBuf {
    let mut name = path.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    name.push(".1");
    path.with_file_name(name)
}
