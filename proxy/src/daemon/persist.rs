//! The state file (`state.file`): every route's rollout, written after
//! every change (temp file + fsync + rename + fsync of the directory) and
//! read at start, so that a restart never silently resets a rollout. The
//! format and the rule of which saved state still fits a route are
//! `weir_control::rollout::{StateFile, Persisted}`.

use std::collections::HashMap;
use std::path::Path;

use weir_control::rollout::{Persisted, StateFile};

use super::context::Daemon;
use crate::files::parent_dir;

/// Reads the state file; a missing file is empty, an unreadable one is
/// logged and treated as empty (rollouts then start at stage 0, logged).
pub(crate) fn load(path: &Path) -> HashMap<String, Persisted> {
    match std::fs::read(path) {
        Ok(bytes) => match StateFile::from_json(&bytes) {
            Ok(f) => f.routes,
            Err(e) => {
                tracing::error!("state file {} is not valid ({e}): rollouts start afresh", path.display());
                HashMap::new()
            }
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => HashMap::new(),
        Err(e) => {
            tracing::error!("cannot read state file {}: {e}", path.display());
            HashMap::new()
        }
    }
}

/// Writes the state file atomically: temp file, fsync, rename, fsync dir.
fn save(path: &Path, file: &StateFile) -> std::io::Result<()> {
    use std::io::Write;
    let bytes = file.to_json().map_err(std::io::Error::other)?;
    let dir = parent_dir(path);
    let tmp = dir.join(format!(".{}.tmp", path.file_name().and_then(|n| n.to_str()).unwrap_or("weir-state")));
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(&bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)?;
    std::fs::File::open(dir)?.sync_all()
}

/// Saves every route's rollout now (after a transition, a manual action or
/// a reload), when weir has a state file.
pub(crate) fn persist(daemon: &Daemon) {
    let Some(path) = daemon.state_file.as_ref() else { return };
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
    if let Err(e) = save(path, &file) {
        tracing::error!("cannot write state file {}: {e}", path.display());
    }
}
