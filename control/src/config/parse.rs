//! Maps the spanned TOML tree onto [`Config`], filling defaults and checking
//! every value and cross-reference.

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use toml::de::{DeTable, DeValue};

use super::reader::{as_str, Ctx, Table, Value};
use super::*;

pub(super) fn config(src: &str) -> Result<Config, ConfigErrors> {
    let mut ctx = Ctx::new(src);
    let root = match DeTable::parse(src) {
        Ok(root) => root,
        Err(e) => {
            let span = e.span();
            ctx.error("", span.as_ref(), e.message().trim().to_string());
            return ctx.finish(None);
        }
    };
    let mut top = Table::root(&root);
    let listen = listen(&mut ctx, &mut top);
    let admin = admin(&mut ctx, &mut top);
    let timeouts = timeouts(&mut ctx, &mut top);
    let limits = limits(&mut ctx, &mut top);
    let log = log(&mut ctx, &mut top);
    let telemetry = telemetry(&mut ctx, &mut top);
    let state = match top.table(&mut ctx, "state") {
        Some(mut t) => {
            let file = t.string(&mut ctx, "file").map(PathBuf::from);
            t.finish(&mut ctx);
            State { file }
        }
        None => State { file: None },
    };
    let backends = backends(&mut ctx, &mut top);
    let routes = routes(&mut ctx, &mut top, &backends);
    top.finish(&mut ctx);
    ctx.finish(Some(Config { listen, admin, timeouts, limits, log, telemetry, state, backends, routes }))
}

fn socket_addr(ctx: &mut Ctx<'_>, t: &mut Table<'_, '_>, key: &'static str, default: &str) -> SocketAddr {
    let fallback: SocketAddr = default.parse().unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 0)));
    let Some(v) = t.get(key) else { return fallback };
    let path = t.key_path(key);
    let Some(text) = as_str(ctx, &path, v) else {
        return fallback;
    };
    match text.parse() {
        Ok(a) => a,
        Err(_) => {
            ctx.error(&path, Some(&v.span()), format!("\"{text}\" is not an IP:port address"));
            fallback
        }
    }
}

fn listen(ctx: &mut Ctx<'_>, top: &mut Table<'_, '_>) -> Listen {
    let mut t = top.table(ctx, "listen");
    let addr = match t.as_mut() {
        Some(t) => socket_addr(ctx, t, "addr", "127.0.0.1:8080"),
        None => SocketAddr::from(([127, 0, 0, 1], 8080)),
    };
    let tls = t.as_mut().and_then(|t| server_tls(ctx, t));
    if let Some(t) = t {
        t.finish(ctx);
    }
    Listen { addr, tls }
}

/// `cert = "…", key = "…"`, both required.
fn cert_pair(ctx: &mut Ctx<'_>, t: &mut Table<'_, '_>) -> Option<CertPair> {
    let cert = t.required_string(ctx, "cert");
    let key = t.required_string(ctx, "key");
    for (k, v) in [("cert", &cert), ("key", &key)] {
        if v.as_deref() == Some("") {
            ctx.error(&t.key_path(k), Some(&t.span), "must not be empty");
            return None;
        }
    }
    Some(CertPair { cert: PathBuf::from(cert?), key: PathBuf::from(key?) })
}

/// A server name as written in SNI: lower-case DNS labels, optionally
/// starting with the `*.` wildcard.
fn server_name_ok(name: &str, wildcard: bool) -> bool {
    let rest = match name.strip_prefix("*.") {
        Some(rest) if wildcard => rest,
        _ => name,
    };
    !rest.is_empty()
        && rest.len() <= 253
        && rest.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        })
}

/// `tls = { cert, key, sni = [{ names, cert, key }, …] }` of a listener.
fn server_tls(ctx: &mut Ctx<'_>, parent: &mut Table<'_, '_>) -> Option<ServerTls> {
    let mut t = parent.table(ctx, "tls")?;
    let default = cert_pair(ctx, &mut t);
    let mut sni = Vec::new();
    if let Some(list) = t.array(ctx, "sni") {
        for (i, v) in list.iter().enumerate() {
            let path = format!("{}[{i}]", t.key_path("sni"));
            let Some(mut e) = Table::from_value(ctx, path.clone(), v) else { continue };
            let mut names = Vec::new();
            match e.array(ctx, "names") {
                Some(list) if !list.is_empty() => {
                    for (j, n) in list.iter().enumerate() {
                        let p = format!("{path}.names[{j}]");
                        let Some(n) = as_str(ctx, &p, n) else { continue };
                        let lower = n.to_ascii_lowercase();
                        if server_name_ok(&lower, true) {
                            names.push(lower);
                        } else {
                            ctx.error(&p, Some(&v.span()), format!("\"{n}\" is not a DNS name (or *.name)"));
                        }
                    }
                }
                _ => ctx.error(&e.key_path("names"), Some(&e.span), "is required (one or more server names)"),
            }
            let pair = cert_pair(ctx, &mut e);
            e.finish(ctx);
            if let Some(pair) = pair {
                sni.push(SniCert { names, pair });
            }
        }
    }
    t.finish(ctx);
    Some(ServerTls { default: default?, sni })
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
fn health(ctx: &mut Ctx<'_>, parent: &mut Table<'_, '_>) -> Option<HealthCheck> {
    let mut t = parent.table(ctx, "health")?;
    let path = t.string(ctx, "path").unwrap_or_else(|| "/healthz".into());
    if !path.starts_with('/') || !path.bytes().all(|b| b.is_ascii_graphic()) {
        ctx.error(&t.key_path("path"), Some(&t.span), format!("\"{path}\" is not a path starting with /"));
    }
    let mut h = HealthCheck {
        path,
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

fn admin(ctx: &mut Ctx<'_>, top: &mut Table<'_, '_>) -> Admin {
    let mut admin = Admin { addr: SocketAddr::from(([127, 0, 0, 1], 9901)), token_file: None, tls: None };
    if let Some(mut t) = top.table(ctx, "admin") {
        admin.addr = socket_addr(ctx, &mut t, "addr", "127.0.0.1:9901");
        admin.token_file = t.string(ctx, "token_file").map(PathBuf::from);
        admin.tls = server_tls(ctx, &mut t);
        if !admin.addr.ip().is_loopback() && admin.token_file.is_none() {
            ctx.error(
                &t.key_path("addr"),
                Some(&t.span),
                format!(
                    "{} is not a loopback address: set admin.token_file so that mutating calls need a token",
                    admin.addr
                ),
            );
        }
        t.finish(ctx);
    }
    admin
}

fn timeouts(ctx: &mut Ctx<'_>, top: &mut Table<'_, '_>) -> Timeouts {
    let mut out = Timeouts {
        connect: Duration::from_secs(1),
        header_read: Duration::from_secs(10),
        upstream_response: Duration::from_secs(30),
        idle: Duration::from_secs(60),
        upstream_idle: Duration::from_secs(30),
        shutdown_grace: Duration::from_secs(30),
        tls_handshake: Duration::from_secs(10),
        body_read: Duration::from_secs(30),
    };
    if let Some(mut t) = top.table(ctx, "timeouts") {
        for (key, slot) in [
            ("connect", &mut out.connect),
            ("header_read", &mut out.header_read),
            ("upstream_response", &mut out.upstream_response),
            ("idle", &mut out.idle),
            ("upstream_idle", &mut out.upstream_idle),
            ("shutdown_grace", &mut out.shutdown_grace),
            ("tls_handshake", &mut out.tls_handshake),
            ("body_read", &mut out.body_read),
        ] {
            if let Some(d) = t.duration(ctx, key) {
                if d.is_zero() && key != "shutdown_grace" {
                    ctx.error(&t.key_path(key), Some(&t.span), "must be greater than zero");
                } else {
                    *slot = d;
                }
            }
        }
        t.finish(ctx);
    }
    out
}

fn limits(ctx: &mut Ctx<'_>, top: &mut Table<'_, '_>) -> Limits {
    let mut out = Limits {
        max_header_bytes: 65_536,
        max_headers: 100,
        max_connections: 10_000,
        max_request_line: 8192,
        max_requests_in_flight: 10_000,
        headers_with_underscores: Underscores::Allow,
    };
    if let Some(mut t) = top.table(ctx, "limits") {
        // hyper's HTTP/1 read buffer cannot be smaller than 8 KiB.
        if let Some(n) = t.integer(ctx, "max_header_bytes", 8192..=16 << 20) {
            out.max_header_bytes = n as usize;
        }
        if let Some(n) = t.integer(ctx, "max_headers", 1..=10_000) {
            out.max_headers = n as usize;
        }
        if let Some(n) = t.integer(ctx, "max_connections", 1..=10_000_000) {
            out.max_connections = n as usize;
        }
        if let Some(n) = t.integer(ctx, "max_request_line", 256..=16 << 20) {
            out.max_request_line = n as usize;
        }
        if let Some(n) = t.integer(ctx, "max_requests_in_flight", 1..=10_000_000) {
            out.max_requests_in_flight = n as usize;
        }
        if let Some(s) = t.string(ctx, "headers_with_underscores") {
            out.headers_with_underscores = match s.as_str() {
                "allow" => Underscores::Allow,
                "drop" => Underscores::Drop,
                "reject" => Underscores::Reject,
                other => {
                    ctx.error(
                        &t.key_path("headers_with_underscores"),
                        Some(&t.span),
                        format!("\"{other}\" is not allow, drop or reject"),
                    );
                    Underscores::Allow
                }
            };
        }
        t.finish(ctx);
    }
    out
}

fn log(ctx: &mut Ctx<'_>, top: &mut Table<'_, '_>) -> Log {
    let mut out = Log { access: AccessLog::Off, audit: AccessLog::Off };
    if let Some(mut t) = top.table(ctx, "log") {
        for (key, slot) in [("access", &mut out.access), ("audit", &mut out.audit)] {
            if let Some(s) = t.string(ctx, key) {
                *slot = match s.as_str() {
                    "off" => AccessLog::Off,
                    "stdout" => AccessLog::Stdout,
                    "" => {
                        ctx.error(&t.key_path(key), Some(&t.span), "use \"off\", \"stdout\" or a file path");
                        AccessLog::Off
                    }
                    path => AccessLog::File(PathBuf::from(path)),
                };
            }
        }
        t.finish(ctx);
    }
    out
}

fn telemetry(ctx: &mut Ctx<'_>, top: &mut Table<'_, '_>) -> Telemetry {
    let mut out = Telemetry { record: true, window_max: Duration::from_secs(300) };
    if let Some(mut t) = top.table(ctx, "telemetry") {
        if let Some(b) = t.boolean(ctx, "record") {
            out.record = b;
        }
        if let Some(d) = t.duration(ctx, "window_max") {
            if d < Duration::from_secs(1) || d > Duration::from_secs(3600) {
                ctx.error(&t.key_path("window_max"), Some(&t.span), "must be between 1s and 1h");
            } else {
                out.window_max = d;
            }
        }
        t.finish(ctx);
    }
    out
}

/// Names that end up in metric labels and URLs: keep them boring.
fn check_name(ctx: &mut Ctx<'_>, path: &str, span: Option<&std::ops::Range<usize>>, name: &str) -> bool {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.');
    if !ok {
        ctx.error(
            path,
            span,
            format!("\"{name}\" is not a valid name (1-64 characters: letters, digits, '-', '_', '.')"),
        );
    }
    ok
}

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

fn backends(ctx: &mut Ctx<'_>, top: &mut Table<'_, '_>) -> BTreeMap<String, Backend> {
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
        let fault = t.table(ctx, "fault").and_then(|mut f| {
            let fault = fault(ctx, &mut f);
            f.finish(ctx);
            fault
        });
        let tls = upstream_tls(ctx, &mut t);
        let http2 = t.boolean(ctx, "http2").unwrap_or(false);
        let outlier = outlier(ctx, &mut t);
        let health = health(ctx, &mut t);
        t.finish(ctx);
        out.insert(name.to_string(), Backend { addrs, version, fault, tls, http2, outlier, health });
    }
    if out.is_empty() {
        ctx.error("backends", Some(&all.span), "at least one backend is required");
    }
    all.finish_as_map();
    out
}

fn percent_bp(ctx: &mut Ctx<'_>, t: &mut Table<'_, '_>, key: &'static str) -> Option<u32> {
    let x = t.number(ctx, key)?;
    match Weight::from_percent(x) {
        Ok(w) => Some(w.bp()),
        Err(e) => {
            ctx.error(&t.key_path(key), Some(&t.span), e);
            None
        }
    }
}

/// `shadow = { percent = 10, max_body = "64KiB" }`
fn shadow(ctx: &mut Ctx<'_>, t: &mut Table<'_, '_>) -> Option<Shadow> {
    let bp = percent_bp(ctx, t, "percent");
    if bp.is_none() && t.get("percent").is_none() {
        ctx.error(&t.key_path("percent"), Some(&t.span), "is required");
    }
    let max_body = match t.get("max_body") {
        None => 65_536,
        Some(v) => match v.get_ref() {
            DeValue::Integer(_) => {
                super::reader::as_integer(ctx, &t.key_path("max_body"), v).map_or(0, |n| n.max(0) as u64)
            }
            _ => {
                let path = t.key_path("max_body");
                match as_str(ctx, &path, v).map(units::parse_size) {
                    Some(Ok(n)) => n,
                    Some(Err(e)) => {
                        ctx.error(&path, Some(&v.span()), e);
                        0
                    }
                    None => 0,
                }
            }
        },
    };
    let mut methods = Vec::new();
    match t.array(ctx, "methods") {
        Some(list) => {
            for (i, v) in list.iter().enumerate() {
                if let Some(m) = as_str(ctx, &format!("{}[{i}]", t.key_path("methods")), v) {
                    methods.push(m.to_ascii_uppercase());
                }
            }
        }
        None => methods.extend(["GET", "HEAD", "OPTIONS"].map(String::from)),
    }
    let compare_header = t.get("compare_header").and_then(|v| {
        let p = t.key_path("compare_header");
        let s = as_str(ctx, &p, v)?;
        header_name(ctx, &p, v, s)
    });
    let max_in_flight = t.integer(ctx, "max_in_flight", 1..=100_000).unwrap_or(64);
    Some(Shadow { bp: bp?, max_body, methods, compare_header, max_in_flight })
}

/// `synthetic = { rps = 20, path = "/synthetic-check", expect_status = 200 }`
fn synthetic(ctx: &mut Ctx<'_>, t: &mut Table<'_, '_>) -> Option<Synthetic> {
    let rps = match t.number(ctx, "rps") {
        Some(x) if x > 0.0 && x <= 1000.0 => x,
        Some(x) => {
            ctx.error(&t.key_path("rps"), Some(&t.span), format!("{x} is not between 0 and 1000"));
            return None;
        }
        None => {
            ctx.error(&t.key_path("rps"), Some(&t.span), "is required");
            return None;
        }
    };
    let method = t.string(ctx, "method").unwrap_or_else(|| "GET".into()).to_ascii_uppercase();
    if method.is_empty() || !method.bytes().all(|b| b.is_ascii_alphabetic()) {
        ctx.error(&t.key_path("method"), Some(&t.span), format!("\"{method}\" is not a method"));
    }
    let path = t.string(ctx, "path").unwrap_or_else(|| "/".into());
    if !path.starts_with('/') {
        ctx.error(&t.key_path("path"), Some(&t.span), format!("\"{path}\" must start with '/'"));
    }
    let mut headers = Vec::new();
    if let Some(h) = t.table(ctx, "headers") {
        for (name, v) in h.entries() {
            let p = h.key_path(name);
            if let (Some(n), Some(val)) = (header_name(ctx, &p, v, name), as_str(ctx, &p, v)) {
                headers.push((n, val.to_string()));
            }
        }
        h.finish_as_map();
    }
    let body = t.string(ctx, "body");
    let expect_status = t.integer(ctx, "expect_status", 100..=599).unwrap_or(200) as u16;
    let also_stable = match t.string(ctx, "target").as_deref() {
        None | Some("canary") => false,
        Some("both") => true,
        Some(other) => {
            ctx.error(&t.key_path("target"), Some(&t.span), format!("\"{other}\" is not canary or both"));
            false
        }
    };
    Some(Synthetic { rps, method, path, headers, body, expect_status, also_stable })
}

/// `fault = { delay = "200ms", delay_percent = 10, abort_status = 503, abort_percent = 5, duration = "5m" }`
pub(super) fn fault(ctx: &mut Ctx<'_>, t: &mut Table<'_, '_>) -> Option<Fault> {
    let delay = t.duration(ctx, "delay");
    let delay_bp = percent_bp(ctx, t, "delay_percent").unwrap_or(if delay.is_some() { 10_000 } else { 0 });
    let abort_status = t.integer(ctx, "abort_status", 200..=599).map(|n| n as u16);
    let abort_bp = percent_bp(ctx, t, "abort_percent").unwrap_or(if abort_status.is_some() { 10_000 } else { 0 });
    let duration = t.duration(ctx, "duration");
    if delay.is_none() && abort_status.is_none() {
        ctx.error(&t.path, Some(&t.span), "needs delay or abort_status");
        return None;
    }
    Some(Fault { delay, delay_bp, abort_status, abort_bp, duration })
}

fn header_name(ctx: &mut Ctx<'_>, path: &str, v: &Value<'_>, s: &str) -> Option<String> {
    let ok = !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
    if ok {
        Some(s.to_ascii_lowercase())
    } else {
        ctx.error(path, Some(&v.span()), format!("\"{s}\" is not a valid header name"));
        None
    }
}

/// `{ header = "x" }` or `{ cookie = "y" }` (exactly one), plus extra keys
/// read by the caller through `t`.
fn key_source(ctx: &mut Ctx<'_>, t: &mut Table<'_, '_>) -> Option<KeySource> {
    let header = t.get("header");
    let cookie = t.get("cookie");
    match (header, cookie) {
        (Some(h), None) => {
            let path = t.key_path("header");
            let s = as_str(ctx, &path, h)?;
            header_name(ctx, &path, h, s).map(KeySource::Header)
        }
        (None, Some(c)) => {
            let path = t.key_path("cookie");
            let s = as_str(ctx, &path, c)?;
            if s.is_empty() || s.bytes().any(|b| b <= b' ' || b"=;,\"\\".contains(&b) || b >= 0x7f) {
                ctx.error(&path, Some(&c.span()), format!("\"{s}\" is not a valid cookie name"));
                return None;
            }
            Some(KeySource::Cookie(s.to_string()))
        }
        (Some(_), Some(_)) => {
            ctx.error(&t.path, Some(&t.span), "set either header or cookie, not both");
            None
        }
        (None, None) => {
            ctx.error(&t.path, Some(&t.span), "needs header = \"NAME\" or cookie = \"NAME\"");
            None
        }
    }
}

fn cohort(ctx: &mut Ctx<'_>, t: &mut Table<'_, '_>) -> Option<Cohort> {
    let source = key_source(ctx, t);
    let path = t.key_path("values");
    let values = match t.array(ctx, "values") {
        Some(list) => {
            let mut out = Vec::new();
            for (i, v) in list.iter().enumerate() {
                if let Some(s) = as_str(ctx, &format!("{path}[{i}]"), v) {
                    out.push(s.to_string());
                }
            }
            if out.is_empty() {
                ctx.error(&path, Some(&t.span), "needs at least one value");
            }
            out
        }
        None => {
            if t.get("values").is_none() {
                ctx.error(&path, Some(&t.span), "is required");
            }
            Vec::new()
        }
    };
    t.finish(ctx);
    Some(Cohort { source: source?, values }).filter(|c| !c.values.is_empty())
}

fn weight(ctx: &mut Ctx<'_>, t: &mut Table<'_, '_>) -> Option<Weight> {
    let percent = t.number(ctx, "weight")?;
    match Weight::from_percent(percent) {
        Ok(w) => Some(w),
        Err(e) => {
            ctx.error(&t.key_path("weight"), Some(&t.span), e);
            None
        }
    }
}

fn routes(ctx: &mut Ctx<'_>, top: &mut Table<'_, '_>, backends: &BTreeMap<String, Backend>) -> Vec<Route> {
    let mut out = Vec::new();
    let Some(list) = top.array(ctx, "routes") else {
        if top.get("routes").is_none() {
            ctx.error("routes", None, "at least one [[routes]] entry is required");
        }
        return out;
    };
    let mut names = HashSet::new();
    let mut matches = HashSet::new();
    for (i, value) in list.iter().enumerate() {
        let path = format!("routes[{i}]");
        let Some(mut t) = Table::from_value(ctx, path.clone(), value) else {
            continue;
        };
        if let Some(r) = route(ctx, &mut t, backends) {
            if !names.insert(r.name.clone()) {
                ctx.error(&t.key_path("name"), Some(&t.span), format!("duplicate route name \"{}\"", r.name));
            }
            if !matches.insert((r.host.clone(), r.path_prefix.clone())) {
                ctx.error(
                    &t.key_path("match"),
                    Some(&t.span),
                    format!("another route already matches host {:?} and path_prefix \"{}\"", r.host, r.path_prefix),
                );
            }
            out.push(r);
        }
        t.finish(ctx);
    }
    out
}

fn backend_ref(
    ctx: &mut Ctx<'_>,
    t: &mut Table<'_, '_>,
    key: &'static str,
    backends: &BTreeMap<String, Backend>,
) -> Option<String> {
    let name = t.string(ctx, key)?;
    if backends.contains_key(&name) {
        Some(name)
    } else {
        let v = t.get(key).map(|v| v.span());
        ctx.error(&t.key_path(key), v.as_ref(), format!("unknown backend \"{name}\""));
        None
    }
}

fn route(ctx: &mut Ctx<'_>, t: &mut Table<'_, '_>, backends: &BTreeMap<String, Backend>) -> Option<Route> {
    let name = t.required_string(ctx, "name");
    if let (Some(n), Some(v)) = (&name, t.get("name")) {
        check_name(ctx, &t.key_path("name"), Some(&v.span()), n);
    }
    let (mut host, mut path_prefix) = (None, "/".to_string());
    if let Some(mut m) = t.table(ctx, "match") {
        if let Some(h) = m.string(ctx, "host") {
            let lower = h.to_ascii_lowercase();
            if lower.is_empty() || lower.contains(['/', ' ', ':']) {
                ctx.error(
                    &m.key_path("host"),
                    Some(&m.span),
                    format!("\"{h}\" is not a host name (no port, no scheme)"),
                );
            }
            host = Some(lower);
        }
        if let Some(p) = m.string(ctx, "path_prefix") {
            if !p.starts_with('/') {
                ctx.error(&m.key_path("path_prefix"), Some(&m.span), format!("\"{p}\" must start with '/'"));
            }
            path_prefix = p;
        }
        m.finish(ctx);
    }
    if t.get("stable").is_none() {
        ctx.error(&t.key_path("stable"), Some(&t.span), "is required");
    }
    let stable = backend_ref(ctx, t, "stable", backends);
    let canary = backend_ref(ctx, t, "canary", backends);
    let has_canary = t.get("canary").is_some();
    if let (Some(s), Some(c)) = (&stable, &canary) {
        if s == c {
            ctx.error(&t.key_path("canary"), Some(&t.span), format!("is the same backend as stable (\"{s}\")"));
        }
    }
    let mut salt = None;
    let sticky = t.table(ctx, "sticky").and_then(|mut s| {
        let src = key_source(ctx, &mut s);
        salt = s.string(ctx, "salt");
        s.finish(ctx);
        src
    });
    let force = t.table(ctx, "force").and_then(|mut s| {
        let src = key_source(ctx, &mut s);
        s.finish(ctx);
        src
    });
    let static_cohort = t.table(ctx, "cohort").and_then(|mut c| cohort(ctx, &mut c));
    let w = weight(ctx, t);
    let variant_header = match t.get("variant_header") {
        None => None,
        Some(v) => match v.get_ref() {
            DeValue::Boolean(true) => Some("x-weir-variant".to_string()),
            DeValue::Boolean(false) => None,
            DeValue::String(s) => header_name(ctx, &t.key_path("variant_header"), v, s),
            _ => {
                ctx.error(&t.key_path("variant_header"), Some(&v.span()), "expected true, false or a header name");
                None
            }
        },
    };
    let rollout = t.table(ctx, "rollout").and_then(|mut r| rollout(ctx, &mut r));
    let shadow = t.table(ctx, "shadow").and_then(|mut s| {
        let out = shadow(ctx, &mut s);
        s.finish(ctx);
        out
    });
    if shadow.is_some() && !has_canary {
        ctx.error(&t.key_path("shadow"), Some(&t.span), "needs a canary backend on the route");
    }
    if !has_canary {
        for (key, set) in [
            ("weight", w.is_some_and(|w| w.bp() > 0)),
            ("rollout", t.get("rollout").is_some()),
            ("cohort", t.get("cohort").is_some()),
        ] {
            if set {
                ctx.error(&t.key_path(key), Some(&t.span), "needs a canary backend on the route");
            }
        }
    }
    if t.get("rollout").is_some() {
        for key in ["weight", "cohort"] {
            if t.get(key).is_some() {
                ctx.error(
                    &t.key_path(key),
                    Some(&t.span),
                    "a route with a rollout takes this from its current stage; remove it",
                );
            }
        }
    }
    let name = name?;
    Some(Route {
        salt: salt.unwrap_or_else(|| name.clone()),
        name,
        host,
        path_prefix,
        stable: stable?,
        canary,
        sticky,
        force,
        cohort: static_cohort,
        weight: w.unwrap_or(Weight::ZERO),
        variant_header,
        rollout,
        shadow,
    })
}

fn rollout(ctx: &mut Ctx<'_>, t: &mut Table<'_, '_>) -> Option<Rollout> {
    let interval = t.duration(ctx, "interval").unwrap_or(Duration::from_secs(1));
    let on_failure = match t.string(ctx, "on_failure").as_deref() {
        None | Some("rollback") => OnFailure::Rollback,
        Some("pause") => OnFailure::Pause,
        Some(other) => {
            ctx.error(&t.key_path("on_failure"), Some(&t.span), format!("\"{other}\" is not rollback or pause"));
            OnFailure::Rollback
        }
    };
    let failure_threshold = t.integer(ctx, "failure_threshold", 1..=1000).unwrap_or(2) as u32;
    let mut stages = Vec::new();
    match t.array(ctx, "stages") {
        Some(list) => {
            for (i, v) in list.iter().enumerate() {
                let Some(mut s) = Table::from_value(ctx, t.key_path(&format!("stages[{i}]")), v) else {
                    continue;
                };
                let weight = if s.get("weight").is_none() {
                    ctx.error(&s.key_path("weight"), Some(&s.span), "is required");
                    None
                } else {
                    weight(ctx, &mut s)
                };
                let cohort = s.table(ctx, "cohort").and_then(|mut c| cohort(ctx, &mut c));
                let bake = s.duration(ctx, "bake").unwrap_or(Duration::ZERO);
                let min_requests = s.integer(ctx, "min_requests", 0..=u64::MAX >> 1).unwrap_or(0);
                let max_duration = s.duration(ctx, "max_duration");
                let synthetic = s.table(ctx, "synthetic").and_then(|mut t| {
                    let out = synthetic(ctx, &mut t);
                    t.finish(ctx);
                    out
                });
                if let Some(w) = weight {
                    if let Some(prev) = stages.last().map(|p: &Stage| p.weight) {
                        if w < prev {
                            ctx.error(
                                &s.key_path("weight"),
                                Some(&s.span),
                                format!("{w} is lower than the previous stage's {prev}"),
                            );
                        }
                    }
                    stages.push(Stage { weight: w, cohort, bake, min_requests, max_duration, synthetic });
                }
                s.finish(ctx);
            }
            if list.is_empty() {
                ctx.error(&t.key_path("stages"), Some(&t.span), "needs at least one stage");
            }
        }
        None => {
            if t.get("stages").is_none() {
                ctx.error(&t.key_path("stages"), Some(&t.span), "is required");
            }
        }
    }
    let mut gates: Vec<Gate> = Vec::new();
    if let Some(list) = t.array(ctx, "gates") {
        for (i, v) in list.iter().enumerate() {
            let Some(mut g) = Table::from_value(ctx, t.key_path(&format!("gates[{i}]")), v) else { continue };
            if let Some(mut gate) = gate(ctx, &mut g) {
                if gates.iter().any(|o| o.name == gate.name) {
                    if g.get("name").is_some() {
                        ctx.error(&g.key_path("name"), Some(&g.span), format!("duplicate gate name \"{}\"", gate.name));
                    } else {
                        // The first free "NAME#n" (n ≥ 2), even if a gate
                        // was explicitly named like that.
                        let base = gate.name.clone();
                        let mut n = 2;
                        while gates.iter().any(|o| o.name == format!("{base}#{n}")) {
                            n += 1;
                        }
                        gate.name = format!("{base}#{n}");
                    }
                }
                gates.push(gate);
            }
            g.finish(ctx);
        }
    }
    let hold_timeout = t.duration(ctx, "hold_timeout").unwrap_or(Duration::from_secs(600));
    let on_hold = match t.string(ctx, "on_hold").as_deref() {
        None | Some("pause") => OnFailure::Pause,
        Some("rollback") => OnFailure::Rollback,
        Some(other) => {
            ctx.error(&t.key_path("on_hold"), Some(&t.span), format!("\"{other}\" is not pause or rollback"));
            OnFailure::Pause
        }
    };
    let severe_error_rate = match t.number(ctx, "severe_error_rate") {
        Some(x) if x > 0.0 && x <= 1.0 => x,
        Some(x) => {
            ctx.error(&t.key_path("severe_error_rate"), Some(&t.span), format!("{x} is not a fraction in (0, 1]"));
            0.5
        }
        None => 0.5,
    };
    let severe_min_requests = t.integer(ctx, "severe_min_requests", 1..=1_000_000).unwrap_or(20);
    let mut url = |ctx: &mut Ctx<'_>, key: &'static str| -> Option<String> {
        let u = t.string(ctx, key)?;
        let ok = u.strip_prefix("http://").is_some_and(|r| !r.is_empty() && !r.starts_with('/'));
        if !ok {
            ctx.error(
                &t.key_path(key),
                Some(&t.span),
                format!("\"{u}\" is not an http:// URL (https webhooks come with TLS support)"),
            );
            return None;
        }
        Some(u)
    };
    let pre_stage = url(ctx, "pre_stage");
    let notify = url(ctx, "notify");
    let webhook_timeout = t.duration(ctx, "webhook_timeout").unwrap_or(Duration::from_secs(5));
    t.finish(ctx);
    Some(Rollout {
        interval,
        on_failure,
        failure_threshold,
        stages,
        gates,
        hold_timeout,
        on_hold,
        severe_error_rate,
        severe_min_requests,
        pre_stage,
        notify,
        webhook_timeout,
    })
}

fn fraction(ctx: &mut Ctx<'_>, g: &mut Table<'_, '_>, key: &'static str, lo: f64, hi: f64) -> Option<f64> {
    let x = g.number(ctx, key)?;
    if !(lo..=hi).contains(&x) {
        ctx.error(&g.key_path(key), Some(&g.span), format!("{x} is not between {lo} and {hi}"));
        return None;
    }
    Some(x)
}

fn gate(ctx: &mut Ctx<'_>, g: &mut Table<'_, '_>) -> Option<Gate> {
    let metric_path = g.key_path("metric");
    let metric = match g.required_string(ctx, "metric")?.as_str() {
        "error_rate" => GateMetric::ErrorRate,
        "latency_p50" => GateMetric::Latency(0.50),
        "latency_p90" => GateMetric::Latency(0.90),
        "latency_p95" => GateMetric::Latency(0.95),
        "latency_p99" => GateMetric::Latency(0.99),
        "latency_p999" => GateMetric::Latency(0.999),
        "error_rate_vs_stable" => GateMetric::ErrorRateVsStable,
        "latency_shift" => GateMetric::LatencyShift,
        "synthetic" => GateMetric::Synthetic,
        "shadow_mismatch" => GateMetric::ShadowMismatch,
        other => {
            ctx.error(
                &metric_path,
                Some(&g.span),
                format!("unknown metric \"{other}\" (error_rate, latency_p50, latency_p90, latency_p95, latency_p99, latency_p999, error_rate_vs_stable, latency_shift, synthetic, shadow_mismatch)"),
            );
            return None;
        }
    };
    let name = g.string(ctx, "name").unwrap_or_else(|| metric.name());
    let min_samples = g.integer(ctx, "min_samples", 1..=10_000_000).unwrap_or(50);
    let statistical = matches!(metric, GateMetric::ErrorRateVsStable | GateMetric::LatencyShift);
    let alpha = fraction(ctx, g, "alpha", 1e-6, 0.2).unwrap_or(0.01);
    let min_effect = fraction(ctx, g, "min_effect", 0.0, 0.5).unwrap_or(match metric {
        GateMetric::LatencyShift => 0.1,
        _ => 0.0,
    });
    if !statistical {
        for key in ["alpha", "min_effect"] {
            if g.get(key).is_some() {
                ctx.error(&g.key_path(key), Some(&g.span), "only error_rate_vs_stable and latency_shift take this");
            }
        }
    }
    // Error-rate thresholds are fractions; latency thresholds are durations.
    let mut threshold = |ctx: &mut Ctx<'_>, key: &'static str| -> Option<f64> {
        match metric {
            GateMetric::ErrorRate | GateMetric::Synthetic | GateMetric::ShadowMismatch => {
                fraction(ctx, g, key, 0.0, 1.0)
            }
            GateMetric::Latency(_) => g.duration(ctx, key).map(|d| d.as_secs_f64()),
            _ => {
                if g.get(key).is_some() {
                    ctx.error(&g.key_path(key), Some(&g.span), "a statistical gate takes alpha and min_effect instead");
                }
                None
            }
        }
    };
    let max = threshold(ctx, "max");
    let max_delta_to_stable = threshold(ctx, "max_delta_to_stable");
    let max_ratio_to_stable =
        if statistical { threshold(ctx, "max_ratio_to_stable") } else { g.number(ctx, "max_ratio_to_stable") };
    if let Some(r) = max_ratio_to_stable {
        if r < 1.0 {
            ctx.error(&g.key_path("max_ratio_to_stable"), Some(&g.span), format!("{r} must be at least 1.0"));
        }
    }
    let synthetic = matches!(metric, GateMetric::Synthetic | GateMetric::ShadowMismatch);
    if !statistical && !synthetic && max.is_none() && max_ratio_to_stable.is_none() && max_delta_to_stable.is_none() {
        ctx.error(&g.path, Some(&g.span), "needs max, max_ratio_to_stable or max_delta_to_stable");
        return None;
    }
    Some(Gate { name, metric, min_samples, alpha, min_effect, max, max_ratio_to_stable, max_delta_to_stable })
}
