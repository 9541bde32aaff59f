//! The state file (`state.file`): every route's rollout, written after
//! every change (temp file + fsync + rename + fsync of the directory, by a
//! write-behind thread: [`super::behind`]) and read at start, so that a
//! restart never silently resets a rollout. The format and the rule of
//! which saved state still fits a route are
//! `weir_control::rollout::{StateFile, Persisted}`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use weir_control::rollout::{Persisted, StateFile};

use super::behind::{Behind, Counters, Mode};
use super::context::Daemon;
use crate::files::parent_dir;
use crate::snapshot::Loaded;

/// How long a change waits for the state file on a healthy disk (on a
/// failing one, not at all).
const WAIT: Duration = Duration::from_millis(250);

/// Reads the state file; a missing file is a first start. A file that is
/// there but cannot be read or parsed is kept aside as `FILE.unreadable`
/// before it is written again.
pub(crate) fn load(path: &Path) -> Loaded {
    let reason = match std::fs::read(path) {
        // weir never writes an empty file (it replaces the file whole): one
        // emptied by hand or by a disk fault says nothing of where the
        // rollouts were, so it is held like any unreadable one.
        Ok(bytes) if bytes.is_empty() => {
            format!(
                "state file {} is empty (weir never writes an empty one; delete it for a first start)",
                path.display()
            )
        }
        Ok(bytes) => match StateFile::from_json(&bytes) {
            Ok(f) => return Loaded::Routes(f.routes),
            Err(e) => format!("state file {} is not valid ({} bytes): {e}", path.display(), bytes.len()),
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Loaded::Routes(HashMap::new()),
        Err(e) => format!("cannot read state file {}: {e}", path.display()),
    };
    let aside = aside(path);
    let kept = match std::fs::copy(path, &aside) {
        Ok(_) => format!("; its bytes are kept in {}", aside.display()),
        Err(e) => format!("; could not keep a copy in {}: {e}", aside.display()),
    };
    tracing::error!("{reason}: every rollout starts held, the canary at 0, until resumed (weir ctl resume){kept}");
    Loaded::Unreadable(reason)
}

/// Where an unreadable state file is kept: `FILE.unreadable`.
fn aside(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".unreadable");
    PathBuf::from(name)
}

/// Writes the state file atomically: temp file, fsync, rename, fsync dir.
/// A failed write leaves the old file as it was and no temp file behind.
fn save(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let dir = parent_dir(path);
    let tmp = dir.join(format!(".{}.tmp", path.file_name().and_then(|n| n.to_str()).unwrap_or("weir-state")));
    let written = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written?;
    std::fs::File::open(dir)?.sync_all()
}

/// The state file's writer thread.
pub(crate) fn writer(path: PathBuf, failures: metrics::Counter) -> std::io::Result<Behind> {
    let what = format!("state file {}", path.display());
    Behind::start("weir-state", what, Mode::Replace, Counters { failures, dropped: None }, move |b| save(&path, b))
}

/// Saves every route's rollout now (after a transition, a manual action or
/// a reload), when weir has a state file.
pub(crate) fn persist(daemon: &Daemon) {
    let Some(writer) = daemon.state_writer.as_ref() else { return };
    let snap = daemon.dp.load();
    if snap.config.fleet.is_some() {
        return; // in fleet mode the state lives in etcd
    }
    // One writer at a time (the engine's clock and a manual action or an
    // embedder's call may persist at once): two writers of the one temp
    // file would interleave their bytes. Held while the states are read, so
    // the last file written has the latest states.
    static WRITING: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one = WRITING.lock().unwrap_or_else(|p| p.into_inner());
    let mut file = StateFile::default();
    for r in snap.routes.routes() {
        if let Some(e) = r.state.engine().as_ref() {
            file.routes.insert(r.name.to_string(), Persisted::of(e));
        }
    }
    let bytes = match file.to_json() {
        Ok(b) => b,
        Err(e) => {
            tracing::error!("state file: cannot encode the rollouts: {e}");
            return;
        }
    };
    // On a healthy disk the file holds the change when this returns.
    if let Some(seq) = writer.submit(&bytes) {
        drop(_one);
        writer.wait(seq, WAIT);
    }
}
