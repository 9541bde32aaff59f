//! Files the config names: paths relative to the config file, and the
//! admin token file (read at start, on reload, and by `weir ctl`).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use weir_control::config::Config;

/// A path from the config: relative paths are relative to the config file.
pub(crate) fn config_relative(file: &Path, config_path: Option<&Path>) -> PathBuf {
    if file.is_absolute() {
        return file.to_path_buf();
    }
    let base = config_path.and_then(Path::parent).filter(|p| !p.as_os_str().is_empty());
    base.map_or_else(|| file.to_path_buf(), |b| b.join(file))
}

/// The directory a file is in (`.` for a bare file name).
pub(crate) fn parent_dir(p: &Path) -> &Path {
    p.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."))
}

/// Reads a token file: its trimmed content, which must not be empty
/// (`key` names it in errors).
pub(crate) fn read_token(path: &Path, key: &str) -> Result<String, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{key} {}: {e}", path.display()))?;
    let token = text.trim();
    if token.is_empty() {
        return Err(format!("{key} {}: the file is empty", path.display()));
    }
    Ok(token.to_string())
}

/// The admin token `cfg` names (`admin.token_file`, relative to the config
/// file), read now: at start and on every reload.
pub(crate) fn admin_token(cfg: &Config, config_path: Option<&Path>) -> Result<Option<Arc<String>>, String> {
    token(cfg.admin.token_file.as_deref(), "admin.token_file", config_path)
}

/// The OFREP token `cfg` names (`ofrep.token_file`), read now, like
/// [`admin_token`].
pub(crate) fn ofrep_token(cfg: &Config, config_path: Option<&Path>) -> Result<Option<Arc<String>>, String> {
    token(cfg.ofrep.as_ref().and_then(|o| o.token_file.as_deref()), "ofrep.token_file", config_path)
}

fn token(file: Option<&Path>, key: &str, config_path: Option<&Path>) -> Result<Option<Arc<String>>, String> {
    let Some(f) = file else { return Ok(None) };
    read_token(&config_relative(f, config_path), key).map(|t| Some(Arc::new(t)))
}

/// Why an admin token is too easy to guess, if it is: shorter than 16
/// characters, or an example's placeholder left in place.
pub(crate) fn weak_token(token: &str) -> Option<String> {
    if token.contains("change-me") || token.contains("changeme") {
        return Some("is an example's placeholder: anyone who read the example can steer a rollout".into());
    }
    (token.len() < 16)
        .then(|| format!("is {} characters long: use a long random one (openssl rand -hex 32)", token.len()))
}

/// This machine's host name (a Kubernetes pod's name), cleaned to a
/// metric-label-safe id of at most 64 characters; "weir" when unknown.
pub(crate) fn host_name() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_default();
    let clean: String = host
        .trim()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.' { c } else { '_' })
        .take(64)
        .collect();
    if clean.is_empty() {
        "weir".into()
    } else {
        clean
    }
}
