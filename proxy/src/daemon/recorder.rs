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
    /// The last second written (0: none yet), for `recording.rs`, which
    /// takes `writing` while it writes seconds (the per-second task and the
    /// shutdown's last write never interleave).
    pub(super) written: AtomicU64,
    pub(super) writing: std::sync::Mutex<()>,
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
        Recorder { tx, dropped, written: AtomicU64::new(0), writing: std::sync::Mutex::new(()) }
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
        let deadline = std::time::Instant::now() + timeout;
        let (ack, done) = sync_channel(1);
        let mut msg = Msg::Flush(ack);
        // A writer stuck on a hung disk with a full queue: give up at the
        // deadline rather than hold the shutdown.
        loop {
            match self.tx.try_send(msg) {
                Ok(()) => break,
                Err(TrySendError::Full(m)) if std::time::Instant::now() < deadline => {
                    msg = m;
                    std::thread::sleep(Duration::from_millis(10));
                }
                Err(_) => return,
            }
        }
        let _ = done.recv_timeout(deadline.saturating_duration_since(std::time::Instant::now()));
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
        match write_line(&mut open, &msg.path, msg.max_size, &line) {
            Ok(()) => failing = None,
            Err(e) => {
                open = None;
                // Once per failing spell: the next success says it works.
                if failing.as_ref() != Some(&msg.path) {
                    tracing::warn!("recording {}: {e}; lines dropped until it works again", msg.path.display());
                    failing = Some(msg.path.clone());
                }
            }
        }
    }
}

/// Appends `line` to `path` (kept open in `open`): rotated first when it
/// would grow past `max_size` (a rotation that fails writes nothing, so
/// the file never grows past it), a new file starting with a `start`
/// line. A write that fails part-way is cut back, so that the file holds
/// whole lines only.
fn write_line(open: &mut Option<Open>, path: &Path, max_size: u64, line: &str) -> std::io::Result<()> {
    let mut rotated_once = false;
    loop {
        if open.as_ref().is_none_or(|o| o.path != path) {
            *open = None;
            let mut file = OpenOptions::new().create(true).read(true).append(true).open(path)?;
            let size = file.metadata()?.len();
            if size > 0 && !ends_with_newline(&mut file)? {
                // A line cut short (a crash, a full disk): end it, unread.
                file.write_all(b"\n")?;
            }
            *open = Some(Open { path: path.to_path_buf(), size: file.metadata()?.len(), file });
        }
        let Some(o) = open.as_mut() else { return Ok(()) };
        // The file as it is (truncated or appended to underneath, say).
        o.size = o.file.metadata()?.len();
        if o.size > 0 && o.size + line.len() as u64 > max_size && !rotated_once {
            *open = None;
            std::fs::rename(path, rotated(path))?;
            // Once: a rename that changes nothing (FILE and FILE.1 one
            // file) must not loop.
            rotated_once = true;
            continue;
        }
        break;
    }
    let Some(o) = open.as_mut() else { return Ok(()) };
    if o.size == 0 {
        let start = Line::Start { weir: env!("CARGO_PKG_VERSION").into(), at_ms: engine_ms() };
        let text = serde_json::to_string(&start).map_err(std::io::Error::other)? + "\n";
        append(o, &text)?;
    }
    append(o, line)
}

/// Appends `text`, or leaves the file as it was.
fn append(o: &mut Open, text: &str) -> std::io::Result<()> {
    match o.file.write_all(text.as_bytes()) {
        Ok(()) => {
            o.size += text.len() as u64;
            Ok(())
        }
        Err(e) => {
            let _ = o.file.set_len(o.size);
            Err(e)
        }
    }
}

/// Whether `f` (not empty) ends with a newline.
fn ends_with_newline(f: &mut File) -> std::io::Result<bool> {
    use std::io::{Read, Seek, SeekFrom};
    f.seek(SeekFrom::End(-1))?;
    let mut b = [0u8; 1];
    f.read_exact(&mut b)?;
    Ok(b[0] == b'\n')
}

/// `FILE.1`.
fn rotated(path: &Path) -> PathBuf {
    let mut name = path.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    name.push(".1");
    path.with_file_name(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(name: &str) -> PathBuf {
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
        let d = std::env::temp_dir().join(format!("weir-recorder-{name}-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    fn lines(p: &Path) -> Vec<String> {
        std::fs::read_to_string(p).unwrap_or_default().lines().map(str::to_string).collect()
    }

    #[test]
    fn files_rotate_at_their_size_and_keep_whole_lines() {
        let d = dir("rotate");
        let path = d.join("rec.jsonl");
        let mut open = None;
        let line = format!("{{\"kind\":\"start\",\"weir\":\"{}\",\"at_ms\":1}}\n", "x".repeat(20));
        for _ in 0..20 {
            write_line(&mut open, &path, 400, &line).unwrap();
        }
        for p in [path.clone(), rotated(&path)] {
            let size = std::fs::metadata(&p).unwrap().len();
            assert!(size <= 400, "{}: {size}", p.display());
            let l = lines(&p);
            assert!(l[0].contains("\"kind\":\"start\"") && l.len() > 2, "{l:?}");
        }
        // A line cut short by a crash is ended before the next one.
        drop(open.take());
        std::fs::write(&path, "{\"kind\":\"sec").unwrap();
        write_line(&mut open, &path, 1 << 20, &line).unwrap();
        let l = lines(&path);
        assert_eq!(l.len(), 2, "{l:?}");
        assert!(serde_json::from_str::<Line>(&l[1]).is_ok(), "{l:?}");
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn a_rotation_that_fails_writes_nothing() {
        let d = dir("stuck");
        let path = d.join("rec.jsonl");
        // FILE.1 is a directory with something in it: the rename fails.
        std::fs::create_dir_all(rotated(&path).join("x")).unwrap();
        let mut open = None;
        let line = "{\"kind\":\"start\",\"weir\":\"y\",\"at_ms\":1}\n";
        let results: Vec<bool> = (0..30).map(|_| write_line(&mut open, &path, 300, line).is_ok()).collect();
        assert!(results.iter().any(|ok| !ok), "some writes fail");
        assert!(std::fs::metadata(&path).unwrap().len() <= 300, "the file stayed within max_size");
        let _ = std::fs::remove_dir_all(&d);
    }
}
