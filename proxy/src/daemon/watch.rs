//! The config file watcher: reloads (through `reload.rs`) when the file
//! or a certificate it names changes.
//!
//! It watches the files' *directories*, so it survives editors that save
//! by rename and Kubernetes ConfigMap symlink swaps; events that can change
//! bytes (not opening or reading a file) are debounced, and a reload runs
//! only when the file's bytes (or the certificates' digest) changed.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};

use super::context::Daemon;
use super::reload::reload_file;
use crate::files::parent_dir;

/// Whether a file event may have changed a file's bytes. Opening, reading
/// and closing a file unwritten may not; and reacting to them would make
/// the watcher's own read of the file an event (a re-read every debounce
/// period, forever).
fn changes_content(kind: &notify::EventKind) -> bool {
    use notify::event::{AccessKind, AccessMode, EventKind};
    match kind {
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
        EventKind::Access(_) => false,
        _ => true,
    }
}

/// Watches `path` (and the certificate files it names) and reloads on
/// change until shutdown.
pub(crate) fn watch_file(daemon: Arc<Daemon>, path: PathBuf, mut shutdown: watch::Receiver<bool>) {
    use notify::{RecursiveMode, Watcher};
    let (tx, mut rx) = mpsc::channel::<()>(1);
    let watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
        // Full channel = a reload is already pending: nothing to add.
        if res.is_ok_and(|e| changes_content(&e.kind)) {
            let _ = tx.try_send(());
        }
    });
    let mut watcher = match watcher {
        Ok(w) => w,
        Err(e) => {
            tracing::warn!("cannot watch {}: {e}; reload with SIGHUP", path.display());
            return;
        }
    };
    let mut watched: Vec<PathBuf> = Vec::new();
    let mut watch_dirs = move |watcher: &mut notify::RecommendedWatcher, files: &[PathBuf]| {
        for dir in files.iter().map(|f| parent_dir(f).to_path_buf()) {
            if !watched.contains(&dir) {
                match watcher.watch(&dir, RecursiveMode::NonRecursive) {
                    Ok(()) => watched.push(dir),
                    Err(e) => tracing::warn!("cannot watch {}: {e}; reload with SIGHUP", dir.display()),
                }
            }
        }
    };
    watch_dirs(&mut watcher, std::slice::from_ref(&path));
    watch_dirs(&mut watcher, &daemon.dp.load().tls_files);
    tokio::spawn(async move {
        // Unknown at first, so the first event always reloads: the files may
        // have changed between the initial load and the watch starting.
        // `apply` ignores a reload whose config equals the serving one.
        let mut last: Option<(Vec<u8>, u64)> = None;
        loop {
            tokio::select! {
                _ = shutdown.changed() => return,
                got = rx.recv() => if got.is_none() { return },
            }
            // Debounce: editors write in several steps.
            tokio::time::sleep(Duration::from_millis(50)).await;
            while rx.try_recv().is_ok() {}
            let Ok(text) = std::fs::read(&path) else {
                continue; // mid-rename
            };
            let files = daemon.dp.load().tls_files.clone();
            let now = Some((text, crate::tls::digest(&files)));
            if now == last {
                continue; // another file in a watched directory
            }
            last = now;
            tracing::info!("{} or a certificate it names changed: reloading", path.display());
            let _ = reload_file(&daemon).await;
            watch_dirs(&mut watcher, &daemon.dp.load().tls_files);
        }
    });
}
