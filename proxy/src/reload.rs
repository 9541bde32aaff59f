//! Loading the config file and hot reload.
//!
//! The file watcher, SIGHUP and [`crate::Weir::reload`] all go through
//! [`reload_file`]: read → parse and validate (in `weir-control`) → build a
//! complete snapshot → one atomic store. Any failure leaves the serving
//! snapshot untouched, is logged with its key paths, and is counted.
//!
//! The watcher watches the file's *directory*, so it survives editors that
//! save by rename and Kubernetes ConfigMap symlink swaps; events that can
//! change bytes (not opening or reading a file) are debounced, and a reload
//! runs only when the file's bytes changed.
//!
//! Settings that need a restart (`listen.addr`, `admin.addr`, switching
//! `listen.tls` or `admin.tls` on or off (certificates reload),
//! `limits.max_connections`, `log.access`, `log.audit`, `state.file`) are logged as such and keep their
//! running values; everything else applies to new requests at once (and
//! server settings to new connections).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use weir_control::config::{self, Config, ConfigErrors};

use crate::server::Shared;
use crate::snapshot::{self, BuildError};

/// Why a reload was refused (the old config keeps serving).
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// OS error.
        source: std::io::Error,
    },
    /// The config is invalid.
    #[error("{0}")]
    Invalid(#[from] ConfigErrors),
    /// The runtime snapshot could not be built.
    #[error(transparent)]
    Build(#[from] BuildError),
    /// The admin token file could not be read.
    #[error("{0}")]
    Token(String),
    /// There is no file to reload from.
    #[error("weir was started without a config file")]
    NoFile,
}

/// Reads and validates a config file.
pub fn read_config(path: &Path) -> Result<Config, ReloadError> {
    let text =
        std::fs::read_to_string(path).map_err(|source| ReloadError::Read { path: path.to_path_buf(), source })?;
    Ok(config::parse(&text)?)
}

pub(crate) async fn reload_file(shared: &Arc<Shared>) -> Result<u64, ReloadError> {
    let path = shared.config_path.clone().ok_or(ReloadError::NoFile)?;
    let cfg = match read_config(&path) {
        Ok(cfg) => cfg,
        Err(e) => return Err(failed(shared, e)),
    };
    apply(shared, cfg).await
}

fn failed(shared: &Shared, e: ReloadError) -> ReloadError {
    shared.telemetry.reload_error();
    tracing::error!("config reload rejected, the previous config keeps serving:\n{e}");
    e
}

/// Swaps in `cfg`; returns the new generation.
pub(crate) async fn apply(shared: &Arc<Shared>, cfg: Config) -> Result<u64, ReloadError> {
    let _serial = shared.reload_lock.lock().await;
    let token = match &cfg.admin.token_file {
        Some(f) => {
            let path = crate::rollout::config_relative(f, shared.config_path.as_deref());
            match crate::admin::auth::read_token(&path) {
                Ok(t) => Some(Arc::new(t)),
                Err(e) => return Err(failed(shared, ReloadError::Token(e))),
            }
        }
        None => None,
    };
    let prev = shared.snapshot.load_full();
    let old = &prev.config;
    for (key, changed) in [
        ("listen.addr", old.listen.addr != cfg.listen.addr),
        ("admin.addr", old.admin.addr != cfg.admin.addr),
        ("listen.tls (on or off)", old.listen.tls.is_some() != cfg.listen.tls.is_some()),
        ("admin.tls (on or off)", old.admin.tls.is_some() != cfg.admin.tls.is_some()),
        ("limits.max_connections", old.limits.max_connections != cfg.limits.max_connections),
        ("log.access", old.log.access != cfg.log.access),
        ("log.audit", old.log.audit != cfg.log.audit),
        ("state.file", old.state.file != cfg.state.file),
    ] {
        if changed {
            tracing::warn!("{key} changed: this setting needs a restart; the running value stays");
        }
    }
    // Certificate files can change while the config text does not.
    let tls_same = prev.tls_digest == crate::tls::digest(&crate::tls::files(&cfg, shared.config_path.as_deref()));
    if *old.as_ref() == cfg && tls_same {
        shared.admin_token.store(token);
        tracing::info!(generation = prev.generation, "config unchanged");
        shared.telemetry.reload_ok();
        return Ok(prev.generation);
    }
    let (next, events) = match snapshot::build(
        Arc::new(cfg),
        shared.config_path.as_deref(),
        Some(&prev),
        &shared.telemetry,
        &shared.faults,
        None,
    )
    .await
    {
        Ok(s) => s,
        Err(e) => return Err(failed(shared, e.into())),
    };
    let generation = next.generation;
    shared.snapshot.store(Arc::new(next));
    shared.reloads.send_replace(generation);
    shared.admin_token.store(token);
    shared.telemetry.reload_ok();
    crate::rollout::emit_built(shared, events);
    crate::rollout::persist_now(shared);
    tracing::info!(generation, "config reloaded");
    Ok(generation)
}

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
pub(crate) fn watch_file(shared: Arc<Shared>, path: PathBuf, mut shutdown: watch::Receiver<bool>) {
    use notify::{RecursiveMode, Watcher};
    let (tx, mut rx) = mpsc::channel::<()>(1);
    let parent = |p: &Path| p.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new(".")).to_path_buf();
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
        for dir in files.iter().map(|f| parent(f)) {
            if !watched.contains(&dir) {
                match watcher.watch(&dir, RecursiveMode::NonRecursive) {
                    Ok(()) => watched.push(dir),
                    Err(e) => tracing::warn!("cannot watch {}: {e}; reload with SIGHUP", dir.display()),
                }
            }
        }
    };
    watch_dirs(&mut watcher, std::slice::from_ref(&path));
    watch_dirs(&mut watcher, &shared.snapshot.load().tls_files);
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
            let files = shared.snapshot.load().tls_files.clone();
            let now = Some((text, crate::tls::digest(&files)));
            if now == last {
                continue; // another file in a watched directory
            }
            last = now;
            tracing::info!("{} or a certificate it names changed: reloading", path.display());
            let _ = reload_file(&shared).await;
            watch_dirs(&mut watcher, &shared.snapshot.load().tls_files);
        }
    });
}
