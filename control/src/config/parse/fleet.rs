//! `[fleet]`: many replicas, one rollout, on etcd. Absent: weir is one
//! process with its state file.

use std::path::PathBuf;
use std::time::Duration;

use super::check_name;
use crate::config::reader::{as_str, Ctx, Table};
use crate::config::{Fleet, FleetTls};

pub(super) fn fleet(ctx: &mut Ctx<'_>, top: &mut Table<'_, '_>) -> Option<Fleet> {
    let mut t = top.table(ctx, "fleet")?;
    let mut out = Fleet {
        endpoints: Vec::new(),
        name: "default".into(),
        replica: None,
        lease_ttl: Duration::from_secs(5),
        staleness: Duration::from_secs(30),
        min_reporters: 1,
        report_interval: Duration::from_millis(500),
        timeout: Duration::from_secs(2),
        tls: None,
    };
    let path = t.key_path("endpoints");
    match t.array(ctx, "endpoints") {
        Some(list) => {
            for (i, v) in list.iter().enumerate() {
                let p = format!("{path}[{i}]");
                let Some(s) = as_str(ctx, &p, v) else { continue };
                let rest = s.strip_prefix("http://").or_else(|| s.strip_prefix("https://")).unwrap_or(s);
                let (host, port) = rest.rsplit_once(':').unwrap_or((rest, ""));
                if host.is_empty() || port.parse::<u16>().is_err() || rest.contains('/') {
                    ctx.error(
                        &p,
                        Some(&v.span()),
                        format!("\"{s}\" is not an etcd endpoint (host:port, http:// or https://)"),
                    );
                } else {
                    out.endpoints.push(s.to_string());
                }
            }
            if list.is_empty() {
                ctx.error(&path, Some(&t.span), "needs at least one etcd endpoint");
            }
        }
        None if t.get("endpoints").is_none() => ctx.error(&path, Some(&t.span), "is required"),
        None => {}
    }
    if let Some(name) = t.string(ctx, "name") {
        if check_name(ctx, &t.key_path("name"), Some(&t.span), &name) {
            out.name = name;
        }
    }
    if let Some(id) = t.string(ctx, "replica") {
        if check_name(ctx, &t.key_path("replica"), Some(&t.span), &id) {
            out.replica = Some(id);
        }
    }
    for (key, slot, min) in [
        ("lease_ttl", &mut out.lease_ttl, Duration::from_secs(1)),
        ("staleness", &mut out.staleness, Duration::from_secs(1)),
        ("report_interval", &mut out.report_interval, Duration::from_millis(50)),
        ("timeout", &mut out.timeout, Duration::from_millis(100)),
    ] {
        if let Some(d) = t.duration(ctx, key) {
            if d < min {
                ctx.error(&t.key_path(key), Some(&t.span), format!("must be at least {min:?}"));
            } else {
                *slot = d;
            }
        }
    }
    if out.lease_ttl.subsec_millis() != 0 {
        ctx.error(&t.key_path("lease_ttl"), Some(&t.span), "must be whole seconds (etcd leases count in seconds)");
    }
    if out.staleness < out.lease_ttl {
        ctx.error(
            &t.key_path("staleness"),
            Some(&t.span),
            format!(
                "must be at least lease_ttl ({:?}): a replica would give up before a new leader could take over",
                out.lease_ttl
            ),
        );
    }
    if t.get("timeout").is_none() {
        // The default fits any lease: at most half of it.
        out.timeout = out.timeout.min(out.lease_ttl / 2);
    } else if out.timeout > out.lease_ttl / 2 {
        ctx.error(
            &t.key_path("timeout"),
            Some(&t.span),
            format!(
                "must be at most half of lease_ttl ({:?}): a keep-alive that times out must leave time for another before the lease lapses",
                out.lease_ttl
            ),
        );
    }
    if out.report_interval >= out.lease_ttl {
        ctx.error(&t.key_path("report_interval"), Some(&t.span), "must be shorter than lease_ttl");
    }
    if let Some(n) = t.integer(ctx, "min_reporters", 1..=1000) {
        out.min_reporters = n as usize;
    }
    if let Some(mut tls) = t.table(ctx, "tls") {
        let ca_file = tls.string(ctx, "ca_file").map(PathBuf::from);
        let cert_file = tls.string(ctx, "cert_file").map(PathBuf::from);
        let key_file = tls.string(ctx, "key_file").map(PathBuf::from);
        let domain = tls.string(ctx, "domain");
        if cert_file.is_some() != key_file.is_some() {
            ctx.error(
                &tls.path,
                Some(&tls.span),
                "cert_file and key_file go together (a client certificate needs its key)",
            );
        }
        tls.finish(ctx);
        out.tls = Some(FleetTls { ca_file, cert_file, key_file, domain });
    }
    if out.tls.is_none() && out.endpoints.iter().any(|e| e.starts_with("https://")) {
        out.tls = Some(FleetTls::default());
    }
    t.finish(ctx);
    Some(out)
}

/// What fleet mode does not support yet, said at load time rather than
/// found out when a stage never advances.
pub(super) fn rollouts(ctx: &mut Ctx<'_>, routes: &[crate::config::Route]) {
    for (i, r) in routes.iter().enumerate() {
        if r.rollout.as_ref().is_some_and(|ro| ro.pre_stage.is_some()) {
            ctx.error(
                &format!("routes[{i}].rollout.pre_stage"),
                None,
                "is not supported in fleet mode yet (the leader would have to ask it on behalf of every replica)",
            );
        }
    }
}
