//! `[backends.NAME]`: addresses, release label, fault injection, upstream
//! TLS, outlier detection and health checks.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use toml::de::DeValue;

use super::check_name;
use super::listen::{cert_pair, server_name_ok};
use crate::config::fault::FaultSpec;
use crate::config::reader::{as_integer, as_str, Ctx, Table};
use crate::config::{Address, Backend, Fault, HealthCheck, Outlier, Release, UpstreamTls};

fn address(text: &str) -> Result<Address, String> {
    if let Ok(sa) = text.parse::<SocketAddr>() {
        return Ok(Address { host: sa.ip().to_string(), port: sa.port() });
    }
    let (host, port) = text.rsplit_once(':').ok_or_else(|| format!("\"{text}\" is not host:port"))?;
    let port: u16 = port.parse().map_err(|_| format!("\"{text}\" has an invalid port"))?;
    let valid_host = !host.is_empty()
        && host.len() <= 253
        && host.split('.').all(|label| {
            !label.is_empty() && label.len() <= 63 && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        });
    if !valid_host || port == 0 {
        return Err(format!("\"{text}\" is not host:port"));
    }
    Ok(Address { host: host.to_ascii_lowercase(), port })
}

pub(super) fn backends(ctx: &mut Ctx<'_>, top: &mut Table<'_, '_>) -> BTreeMap<String, Backend> {
    let mut out = BTreeMap::new();
    let Some(all) = top.table(ctx, "backends") else {
        ctx.error("backends", None, "at least one backend is required");
        return out;
    };
    let entries: Vec<_> = all.entries().collect();
    for (name, value) in entries {
        let path = all.key_path(name);
        check_name(ctx, &path, Some(&value.span()), name);
        let Some(mut t) = Table::from_value(ctx, path.clone(), value) else {
            continue;
        };
        let mut addrs = Vec::new();
        match t.array(ctx, "addrs") {
            Some(list) if !list.is_empty() => {
                for (i, v) in list.iter().enumerate() {
                    let p = format!("{path}.addrs[{i}]");
                    if let Some(s) = as_str(ctx, &p, v) {
                        match address(s) {
                            Ok(a) => addrs.push(a),
                            Err(e) => ctx.error(&p, Some(&v.span()), e),
                        }
                    }
                }
            }
            Some(_) => ctx.error(&t.key_path("addrs"), Some(&t.span), "needs at least one address"),
            None if t.get("addrs").is_none() => ctx.error(&t.key_path("addrs"), Some(&t.span), "is required"),
            None => {}
        }
        let version = t.string(ctx, "version");
        let release = t.table(ctx, "release").map(|mut r| {
            let release = release(ctx, &mut r);
            r.finish(ctx);
            release
        });
        let fault = t.table(ctx, "fault").and_then(|mut f| {
            let fault = fault(ctx, &mut f);
            f.finish(ctx);
            fault
        });
        let tls = upstream_tls(ctx, &mut t);
        let http2 = t.boolean(ctx, "http2").unwrap_or(false);
        let outlier = outlier(ctx, &mut t);
        let health = health(ctx, &mut t, http2);
        t.finish(ctx);
        out.insert(name.to_string(), Backend { addrs, version, release, fault, tls, http2, outlier, health });
    }
    if out.is_empty() {
        ctx.error("backends", Some(&all.span), "at least one backend is required");
    }
    all.finish_as_map();
    out
}

/// `release = { commit, notes, ticket }`: what the backend's build is, for
/// people (audit, API, dashboard, notifications). Free text, bounded and
/// printable; `notes` is a link.
fn release(ctx: &mut Ctx<'_>, t: &mut Table<'_, '_>) -> Release {
    let mut field = |ctx: &mut Ctx<'_>, key: &'static str| {
        let v = t.string(ctx, key)?;
        if v.is_empty() || v.len() > 256 || v.chars().any(char::is_control) {
            ctx.error(&t.key_path(key), Some(&t.span), "must be 1-256 printable characters");
            return None;
        }
        Some(v)
    };
    let commit = field(ctx, "commit");
    let notes = field(ctx, "notes");
    let ticket = field(ctx, "ticket");
    if let Some(n) = &notes {
        if !(n.starts_with("https://") || n.starts_with("http://")) || n.contains(char::is_whitespace) {
            ctx.error(&t.key_path("notes"), Some(&t.span), format!("\"{n}\" is not an http:// or https:// link"));
        }
    }
    Release { commit, notes, ticket }
}

/// `outlier = false | { consecutive_failures, base_ejection, max_ejection,
/// max_ejection_percent }` (absent = the defaults).
fn outlier(ctx: &mut Ctx<'_>, parent: &mut Table<'_, '_>) -> Option<Outlier> {
    let mut out = Outlier::default();
    let Some(v) = parent.get("outlier") else { return Some(out) };
    if let DeValue::Boolean(on) = v.get_ref() {
        return on.then_some(out);
    }
    let mut t = Table::from_value(ctx, parent.key_path("outlier"), v)?;
    if let Some(n) = t.integer(ctx, "consecutive_failures", 1..=1000) {
        out.consecutive_failures = n as u32;
    }
    if let Some(d) = t.duration(ctx, "base_ejection") {
        out.base_ejection = d;
    }
    if let Some(d) = t.duration(ctx, "max_ejection") {
        out.max_ejection = d;
    }
    if let Some(n) = t.integer(ctx, "max_ejection_percent", 0..=100) {
        out.max_ejection_percent = n as u32;
    }
    if out.base_ejection.is_zero() || out.max_ejection < out.base_ejection {
        ctx.error(&t.key_path("base_ejection"), Some(&t.span), "must be greater than zero and at most max_ejection");
    }
    t.finish(ctx);
    Some(out)
}

/// `health = { path, interval, timeout, healthy, unhealthy }`.
fn health(ctx: &mut Ctx<'_>, parent: &mut Table<'_, '_>, http2: bool) -> Option<HealthCheck> {
    let mut t = parent.table(ctx, "health")?;
    let path = t.string(ctx, "path").unwrap_or_else(|| "/healthz".into());
    if !path.starts_with('/') || !path.bytes().all(|b| b.is_ascii_graphic()) {
        ctx.error(&t.key_path("path"), Some(&t.span), format!("\"{path}\" is not a path starting with /"));
    }
    let grpc_service = t.string(ctx, "grpc_service");
    if grpc_service.is_some() && t.get("path").is_some() {
        ctx.error(
            &t.key_path("grpc_service"),
            Some(&t.span),
            "set path (HTTP check) or grpc_service (gRPC check), not both",
        );
    }
    if grpc_service.is_some() && !http2 {
        ctx.error(&t.key_path("grpc_service"), Some(&t.span), "a gRPC health check needs http2 = true on the backend");
    }
    let mut h = HealthCheck {
        path,
        grpc_service,
        interval: Duration::from_secs(5),
        timeout: Duration::from_secs(1),
        healthy: 2,
        unhealthy: 3,
    };
    if let Some(d) = t.duration(ctx, "interval") {
        h.interval = d;
    }
    if let Some(d) = t.duration(ctx, "timeout") {
        h.timeout = d;
    }
    if h.interval < Duration::from_millis(100) || h.timeout.is_zero() || h.timeout > h.interval {
        ctx.error(&t.key_path("timeout"), Some(&t.span), "need interval >= 100ms and 0 < timeout <= interval");
    }
    if let Some(n) = t.integer(ctx, "healthy", 1..=100) {
        h.healthy = n as u32;
    }
    if let Some(n) = t.integer(ctx, "unhealthy", 1..=100) {
        h.unhealthy = n as u32;
    }
    t.finish(ctx);
    Some(h)
}

/// `tls = true | false | { ca, server_name, cert, key }` of a backend.
fn upstream_tls(ctx: &mut Ctx<'_>, parent: &mut Table<'_, '_>) -> Option<UpstreamTls> {
    let v = parent.get("tls")?;
    let path = parent.key_path("tls");
    if let DeValue::Boolean(on) = v.get_ref() {
        return on.then(UpstreamTls::default);
    }
    let mut t = Table::from_value(ctx, path, v)?;
    let ca = t.string(ctx, "ca").map(PathBuf::from);
    let server_name = t.string(ctx, "server_name").map(|n| n.to_ascii_lowercase());
    if let Some(n) = &server_name {
        if !server_name_ok(n, false) && n.parse::<std::net::IpAddr>().is_err() {
            ctx.error(&t.key_path("server_name"), Some(&t.span), format!("\"{n}\" is not a DNS name or IP address"));
        }
    }
    let client = match (t.get("cert").is_some(), t.get("key").is_some()) {
        (false, false) => None,
        _ => cert_pair(ctx, &mut t),
    };
    t.finish(ctx);
    Some(UpstreamTls { ca, server_name, client })
}

/// `fault = { delay = "200ms", delay_percent = 10, abort_status = 503, abort_percent = 5, duration = "5m" }`:
/// the values as written, judged by the rules the admin API's faults share.
fn fault(ctx: &mut Ctx<'_>, t: &mut Table<'_, '_>) -> Option<Fault> {
    let spec = FaultSpec {
        delay: t.duration(ctx, "delay"),
        delay_percent: t.number(ctx, "delay_percent"),
        abort_status: t.get("abort_status").and_then(|v| as_integer(ctx, &t.key_path("abort_status"), v)),
        abort_percent: t.number(ctx, "abort_percent"),
        duration: t.duration(ctx, "duration"),
    };
    let status_span = t.get("abort_status").map(|v| v.span());
    let mut valid = true;
    let fault = spec.check(&mut |e| {
        valid = false;
        // Located where the typed getters used to put them: a status at its
        // value, a percentage (as every percentage) and the fault itself at
        // the table.
        let (path, span) = match e.key {
            "" => (t.path.clone(), &t.span),
            "abort_status" => (t.key_path(e.key), status_span.as_ref().unwrap_or(&t.span)),
            key => (t.key_path(key), &t.span),
        };
        ctx.error(&path, Some(span), e.reason);
    });
    valid.then_some(fault)
}
