//! `[timeouts]`, `[limits]`, `[log]`, `[telemetry]`, `[dns]`, `[webhooks]` and
//! `[tracing]`: plain
//! settings with documented defaults.

use std::path::PathBuf;
use std::time::Duration;

use crate::config::reader::{as_str, Ctx, Table};
use crate::config::{AccessLog, Dns, Limits, Log, LogFormat, Telemetry, Timeouts, Tracing, Underscores, Webhooks};

pub(super) fn timeouts(ctx: &mut Ctx<'_>, top: &mut Table<'_, '_>) -> Timeouts {
    let mut out = Timeouts {
        connect: Duration::from_secs(1),
        header_read: Duration::from_secs(10),
        upstream_response: Duration::from_secs(30),
        idle: Duration::from_secs(60),
        upstream_idle: Duration::from_secs(30),
        shutdown_grace: Duration::from_secs(30),
        tls_handshake: Duration::from_secs(10),
        body_read: Duration::from_secs(30),
        upstream_read: Duration::from_secs(60),
        drain_delay: Duration::ZERO,
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
            ("upstream_read", &mut out.upstream_read),
            ("drain_delay", &mut out.drain_delay),
        ] {
            if let Some(d) = t.duration(ctx, key) {
                if d.is_zero() && !matches!(key, "shutdown_grace" | "drain_delay" | "upstream_read") {
                    ctx.error(&t.key_path(key), Some(&t.span), "must be greater than zero");
                } else if key == "drain_delay" && d > Duration::from_secs(3600) {
                    // Not ready and still serving for longer than that is
                    // a typo, not a drain.
                    ctx.error(&t.key_path(key), Some(&t.span), "must be at most 1h");
                } else {
                    *slot = d;
                }
            }
        }
        t.finish(ctx);
    }
    out
}

pub(super) fn limits(ctx: &mut Ctx<'_>, top: &mut Table<'_, '_>) -> Limits {
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

pub(super) fn log(ctx: &mut Ctx<'_>, top: &mut Table<'_, '_>) -> Log {
    let mut out = Log { access: AccessLog::Off, audit: AccessLog::Off, format: LogFormat::Text };
    if let Some(mut t) = top.table(ctx, "log") {
        if let Some(s) = t.string(ctx, "format") {
            match s.as_str() {
                "text" => out.format = LogFormat::Text,
                "json" => out.format = LogFormat::Json,
                other => ctx.error(&t.key_path("format"), Some(&t.span), format!("\"{other}\" is not text or json")),
            }
        }
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

/// `[telemetry]`, and whether `window_max` was given (when it was not, it
/// grows to the longest stage deadline: see `parse::stage_windows`).
pub(super) fn telemetry(ctx: &mut Ctx<'_>, top: &mut Table<'_, '_>) -> (Telemetry, bool) {
    let mut out = Telemetry { record: true, window_max: Duration::from_secs(300) };
    let mut explicit = false;
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
            explicit = true;
        }
        t.finish(ctx);
    }
    (out, explicit)
}

/// `[tracing]`: off when absent.
pub(super) fn tracing(ctx: &mut Ctx<'_>, top: &mut Table<'_, '_>) -> Option<Tracing> {
    let mut t = top.table(ctx, "tracing")?;
    let endpoint = t.required_string(ctx, "endpoint").map(|e| e.trim_end_matches('/').to_string());
    if let Some(e) = &endpoint {
        let path = t.key_path("endpoint");
        match super::split_url(e) {
            None => ctx.error(
                &path,
                Some(&t.span),
                format!("\"{}\" is not an http:// or https:// URL with a host", super::shown_url(e)),
            ),
            Some(p) if p.userinfo || p.rest.contains(['?', '#']) => ctx.error(
                &path,
                Some(&t.span),
                format!("\"{}\": no credentials, query or fragment (the collector's base URL)", super::shown_url(e)),
            ),
            Some(_) => {}
        }
    }
    let sample_ratio = match t.number(ctx, "sample_ratio") {
        Some(r) if (0.0..=1.0).contains(&r) => r,
        Some(r) => {
            ctx.error(&t.key_path("sample_ratio"), Some(&t.span), format!("{r} is not between 0 and 1"));
            0.0
        }
        None => 0.01,
    };
    let canary_errors = t.boolean(ctx, "canary_errors").unwrap_or(true);
    let follow_caller = t.boolean(ctx, "follow_caller").unwrap_or(true);
    let service_name = t.string(ctx, "service_name").unwrap_or_else(|| "weir".to_string());
    if service_name.is_empty() {
        ctx.error(&t.key_path("service_name"), Some(&t.span), "must not be empty");
    }
    let ca = t.string(ctx, "ca").map(PathBuf::from);
    let timeout = match t.duration(ctx, "timeout") {
        Some(d) if d < Duration::from_millis(100) || d > Duration::from_secs(60) => {
            ctx.error(&t.key_path("timeout"), Some(&t.span), "must be between 100ms and 1m");
            d
        }
        Some(d) => d,
        None => Duration::from_secs(5),
    };
    t.finish(ctx);
    Some(Tracing { endpoint: endpoint?, sample_ratio, follow_caller, canary_errors, service_name, ca, timeout })
}

pub(super) fn webhooks(ctx: &mut Ctx<'_>, top: &mut Table<'_, '_>) -> Webhooks {
    let mut out = Webhooks::default();
    let Some(mut t) = top.table(ctx, "webhooks") else { return out };
    out.ca = t.string(ctx, "ca").map(PathBuf::from);
    out.secret_file = t.string(ctx, "secret_file").map(PathBuf::from);
    if let Some(n) = t.integer(ctx, "retries", 0..=10) {
        out.retries = n as u32;
    }
    if let Some(n) = t.integer(ctx, "max_in_flight", 1..=1024) {
        out.max_in_flight = n as usize;
    }
    t.finish(ctx);
    out
}

/// `[dns]`: the TTL bounds of backend host names, and name servers.
pub(super) fn dns(ctx: &mut Ctx<'_>, top: &mut Table<'_, '_>) -> Dns {
    let mut out = Dns::default();
    let Some(mut t) = top.table(ctx, "dns") else { return out };
    for (key, slot) in [("min_ttl", &mut out.min_ttl), ("max_ttl", &mut out.max_ttl)] {
        if let Some(d) = t.duration(ctx, key) {
            if d < Duration::from_millis(100) {
                ctx.error(&t.key_path(key), Some(&t.span), "must be at least 100ms");
            } else {
                *slot = d;
            }
        }
    }
    if out.min_ttl > out.max_ttl {
        ctx.error(
            &t.key_path("min_ttl"),
            Some(&t.span),
            format!("{:?} is above max_ttl ({:?})", out.min_ttl, out.max_ttl),
        );
    }
    if let Some(list) = t.array(ctx, "servers") {
        for (i, v) in list.iter().enumerate() {
            let path = format!("{}[{i}]", t.key_path("servers"));
            let Some(s) = as_str(ctx, &path, v) else { continue };
            // A bare IP means port 53.
            let addr = s
                .parse::<std::net::SocketAddr>()
                .or_else(|_| s.parse::<std::net::IpAddr>().map(|ip| std::net::SocketAddr::new(ip, 53)));
            match addr {
                Ok(a) => out.servers.push(a),
                Err(_) => ctx.error(&path, Some(&v.span()), format!("\"{s}\" is not an IP address or IP:port")),
            }
        }
    }
    t.finish(ctx);
    out
}
