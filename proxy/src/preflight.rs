//! `weir check`'s second half: every file the config names loaded as
//! `weir run` loads it (token files, certificates and keys, CA bundles),
//! and every backend host name resolved, each failure said with its key,
//! as `nginx -t` does.

use std::path::Path;

use weir_control::config::{AccessLog, Config, UpstreamTls};

use crate::files::{config_relative, parent_dir, read_token};

/// What to load besides the config text.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Scope {
    /// Resolve backend host names (off: `--no-resolve`, for offline CI).
    pub(crate) resolve: bool,
}

/// Every problem found, one line each (`KEY: reason`); empty when `weir
/// run` would load everything the config names.
pub(crate) async fn problems(cfg: &Config, path: &Path, scope: Scope) -> Vec<String> {
    let base = Some(path);
    let mut out = Vec::new();
    let mut check = |r: Result<(), String>| {
        if let Err(e) = r {
            out.push(e);
        }
    };
    check(crate::files::admin_token(cfg, base).map(drop));
    check(crate::files::ofrep_token(cfg, base).map(drop));
    for (tls, at) in [(&cfg.listen.tls, "listen.tls"), (&cfg.admin.tls, "admin.tls")] {
        if let Some(t) = tls {
            check(crate::tls::acceptor(t, base, at).map(drop));
        }
    }
    for (name, b) in &cfg.backends {
        if let Some(t) = &b.tls {
            check(crate::tls::client_config(t, b.http2, base, &format!("backends.{name}.tls")).map(drop));
        }
    }
    if let Some(p) = &cfg.prometheus {
        if let Some(f) = &p.bearer_token_file {
            check(read_token(&config_relative(f, base), "prometheus.bearer_token_file").map(drop));
        }
        if p.url.starts_with("https://") {
            let t = UpstreamTls { ca: p.ca.clone(), server_name: None, client: None };
            check(crate::tls::client_config(&t, false, base, "prometheus").map(drop));
        }
    }
    if let Some(t) = &cfg.tracing {
        let https = t.endpoint.starts_with("https://");
        check(crate::tls::client_with_extra_roots(t.ca.as_deref(), base, "tracing.ca", https).map(drop));
    }
    check(crate::daemon::webhook::Sender::new(&cfg.webhooks, base, crate::daemon::webhook::any_https(cfg)).map(drop));
    for (i, r) in cfg.routes.iter().enumerate() {
        let sinks = r.rollout.as_ref().map(|ro| ro.notify.as_slice()).unwrap_or_default();
        for (j, sink) in sinks.iter().enumerate() {
            if let Some(f) = &sink.routing_key_file {
                let key = format!("routes[{i}].rollout.notify[{j}].routing_key_file");
                check(read_token(&config_relative(f, base), &key).map(drop));
            }
        }
    }
    if let Some(t) = cfg.fleet.as_ref().and_then(|f| f.tls.as_ref()) {
        for (file, key) in [(&t.ca_file, "fleet.tls.ca_file"), (&t.cert_file, "fleet.tls.cert_file")] {
            if let Some(f) = file {
                check(crate::tls::certs(base, f, key).map(drop));
            }
        }
        if let Some(f) = &t.key_file {
            check(crate::tls::private_key(base, f, "fleet.tls.key_file").map(drop));
        }
    }
    // Files weir writes: their directories must be there.
    let written = [
        (
            "log.access",
            match &cfg.log.access {
                AccessLog::File(f) => Some(f),
                _ => None,
            },
        ),
        (
            "log.audit",
            match &cfg.log.audit {
                AccessLog::File(f) => Some(f),
                _ => None,
            },
        ),
        ("state.file", cfg.state.file.as_ref().filter(|_| cfg.fleet.is_none())),
        ("recording.file", cfg.recording.as_ref().map(|r| &r.file)),
    ];
    for (key, file) in written {
        if let Some(f) = file {
            let full = config_relative(f, base);
            let dir = parent_dir(&full);
            if !dir.is_dir() {
                check(Err(format!("{key} {}: no directory {}", full.display(), dir.display())));
            }
        }
    }
    if scope.resolve {
        let resolver = crate::dns::resolver(&cfg.dns);
        let mut seen = std::collections::HashSet::new();
        for (backend, a) in crate::dns::names(cfg) {
            if !seen.insert((backend, a)) {
                continue;
            }
            let found = match &resolver {
                Ok(r) => crate::dns::lookup(r, &cfg.dns, a).await.map(drop),
                Err(e) => Err(e.clone()),
            };
            check(found.map_err(|e| format!("backends.{backend}.addrs: cannot resolve {a}: {e}")));
        }
    }
    out
}
