//! Loading the config file and hot reload.
//!
//! The file watcher (`watch.rs`), SIGHUP and [`crate::Weir::reload`] all go
//! through [`reload_file`]: read → parse and validate (in `weir-control`) →
//! build a complete snapshot → one atomic store. Any failure leaves the
//! serving snapshot untouched, is logged with its key paths, and is
//! counted.
//!
//! Settings that need a restart (`weir_control::config::diff::restart_only`:
//! `listen.addr`, `admin.addr`, switching `listen.tls` or `admin.tls` on or
//! off (certificates reload), `limits.max_connections`, `log.access`,
//! `log.audit`, `state.file`) are logged as such and keep their running
//! values; everything else applies to new requests at once (and server
//! settings to new connections).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use weir_control::config::{self, Config, ConfigErrors};

use super::context::Daemon;
use super::events::emit_built;
use super::persist::persist;
use crate::files::{admin_token, ofrep_token};
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
    /// A file the config names could not be read or used (a token file,
    /// a webhook CA bundle or secret).
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

/// Logs what [`config::warnings`] finds in a config about to serve.
pub fn log_warnings(cfg: &Config) {
    for (key, why) in config::warnings(cfg) {
        tracing::warn!("config: {key}: {why}");
    }
}

/// Re-reads the config file and swaps it in (see [`apply`]).
pub(crate) async fn reload_file(daemon: &Arc<Daemon>) -> Result<u64, ReloadError> {
    let started = std::time::Instant::now();
    let path = daemon.config_path.clone().ok_or(ReloadError::NoFile)?;
    let cfg = match read_config(&path) {
        Ok(cfg) => cfg,
        Err(e) => return Err(failed(daemon, e)),
    };
    log_warnings(&cfg);
    apply_from(daemon, cfg, started).await
}

fn failed(daemon: &Daemon, e: ReloadError) -> ReloadError {
    daemon.dp.telemetry.reload_error();
    tracing::error!("config reload rejected, the previous config keeps serving:\n{e}");
    e
}

/// Swaps in `cfg`; returns the new generation.
pub(crate) async fn apply(daemon: &Arc<Daemon>, cfg: Config) -> Result<u64, ReloadError> {
    apply_from(daemon, cfg, std::time::Instant::now()).await
}

/// [`apply`], for a reload that began at `started` (its log line says
/// how long it took: reading and checking the file, building, swapping).
async fn apply_from(daemon: &Arc<Daemon>, cfg: Config, started: std::time::Instant) -> Result<u64, ReloadError> {
    let _serial = daemon.reload_lock.lock().await;
    let dp = &daemon.dp;
    let token = match admin_token(&cfg, daemon.config_path.as_deref()) {
        Ok(t) => t,
        Err(e) => return Err(failed(daemon, ReloadError::Token(e))),
    };
    // Without [ofrep] now, its listener runs on until a restart: with the
    // token it had, not open (`None`: keep it).
    let ofrep = match ofrep_token(&cfg, daemon.config_path.as_deref()) {
        Ok(t) => cfg.ofrep.is_some().then_some(t),
        Err(e) => return Err(failed(daemon, ReloadError::Token(e))),
    };
    // A changed [webhooks] (or CA file, or the first https:// webhook) gets
    // a new sender, its CA and secret checked now: a bad one refuses the
    // reload; deliveries under way finish on the old one.
    let current = daemon.webhooks.load();
    let https = super::webhook::any_https(&cfg);
    let same = current.settings == cfg.webhooks
        && current.https == https
        && current.ca_digest == super::webhook::ca_digest(&cfg.webhooks, daemon.config_path.as_deref());
    let webhooks = if same {
        None
    } else {
        match super::webhook::Sender::new(&cfg.webhooks, daemon.config_path.as_deref(), https) {
            Ok(s) => Some(s),
            Err(e) => return Err(failed(daemon, ReloadError::Token(e))),
        }
    };
    let store_tokens = move || {
        daemon.admin_token.store(token);
        if let Some(t) = ofrep {
            daemon.ofrep_token.store(t);
        }
        if let Some(w) = webhooks {
            daemon.webhooks.store(std::sync::Arc::new(w));
        }
    };
    let prev = dp.load_full();
    let old = &prev.config;
    for key in config::diff::restart_only(old, &cfg) {
        tracing::warn!("{key} changed: this setting needs a restart; the running value stays");
    }
    // Certificate files can change while the config text does not.
    let tls_same = prev.tls_digest == crate::tls::digest(&crate::tls::files(&cfg, daemon.config_path.as_deref()));
    if *old.as_ref() == cfg && tls_same {
        store_tokens();
        tracing::info!(generation = prev.generation, "config unchanged");
        dp.telemetry.reload_ok();
        return Ok(prev.generation);
    }
    let resolved = match crate::dns::resolve_all(&cfg, Some((&prev.config, &prev.resolved))).await {
        Ok(r) => r,
        Err(e) => return Err(failed(daemon, BuildError::from(e).into())),
    };
    let (next, events) = match next_snapshot(daemon, &prev, Arc::new(cfg), resolved) {
        Ok(s) => s,
        Err(e) => return Err(failed(daemon, e.into())),
    };
    let generation = next.generation;
    dp.swap_in(next);
    store_tokens();
    dp.telemetry.reload_ok();
    emit_built(daemon, events);
    persist(daemon);
    tracing::info!(generation, took_ms = started.elapsed().as_millis() as u64, "config reloaded");
    Ok(generation)
}

/// Serves the same config with the backends' host names as `resolved`
/// says (the DNS follower found new addresses), if the snapshot serving is
/// still generation `from` (a reload in between resolved on its own).
/// Routes, rollouts and the endpoints of addresses that stay carry on.
pub(crate) async fn follow_dns(daemon: &Arc<Daemon>, from: u64, resolved: crate::dns::Resolved) -> Option<u64> {
    let _serial = daemon.reload_lock.lock().await;
    let dp = &daemon.dp;
    let prev = dp.load_full();
    if prev.generation != from {
        return None;
    }
    match next_snapshot(daemon, &prev, prev.config.clone(), resolved) {
        Ok((next, events)) => {
            let generation = next.generation;
            dp.swap_in(next);
            emit_built(daemon, events);
            Some(generation)
        }
        Err(e) => {
            // The config built a moment ago; only a certificate file that
            // changed since can fail it (its reload will say so).
            tracing::warn!("cannot serve the new backend addresses: {e}");
            None
        }
    }
}

/// The snapshot after `prev` for `cfg` and its host names' answers.
fn next_snapshot(
    daemon: &Daemon,
    prev: &snapshot::Snapshot,
    cfg: Arc<Config>,
    resolved: crate::dns::Resolved,
) -> Result<(snapshot::Snapshot, Vec<weir_control::rollout::Event>), BuildError> {
    let dp = &daemon.dp;
    snapshot::build(cfg, daemon.config_path.as_deref(), Some(prev), &dp.telemetry, &dp.faults, None, resolved)
}
