//! `[listen]`, `[admin]` and `[ofrep]`: addresses, and the certificates a listener
//! serves (also the server-name and certificate-pair rules that upstream
//! TLS shares).

use std::net::SocketAddr;
use std::path::PathBuf;

use crate::config::reader::{as_str, Ctx, Table};
use crate::config::{Admin, CertPair, Listen, Ofrep, ServerTls, SniCert};

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

pub(super) fn listen(ctx: &mut Ctx<'_>, top: &mut Table<'_, '_>) -> Listen {
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
pub(super) fn cert_pair(ctx: &mut Ctx<'_>, t: &mut Table<'_, '_>) -> Option<CertPair> {
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
pub(super) fn server_name_ok(name: &str, wildcard: bool) -> bool {
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

pub(super) fn admin(ctx: &mut Ctx<'_>, top: &mut Table<'_, '_>) -> Admin {
    let mut admin =
        Admin { addr: SocketAddr::from(([127, 0, 0, 1], 9901)), token_file: None, tls: None, hosts: Vec::new() };
    if let Some(mut t) = top.table(ctx, "admin") {
        admin.addr = socket_addr(ctx, &mut t, "addr", "127.0.0.1:9901");
        admin.token_file = t.string(ctx, "token_file").map(PathBuf::from);
        if let Some(list) = t.array(ctx, "hosts") {
            for (i, v) in list.iter().enumerate() {
                let path = format!("{}[{i}]", t.key_path("hosts"));
                let Some(name) = as_str(ctx, &path, v) else { continue };
                let name = name.to_ascii_lowercase();
                let bare = name.strip_prefix("*.").unwrap_or(&name);
                let ok = name == "*"
                    || (!bare.is_empty() && bare.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.'));
                if ok {
                    admin.hosts.push(name);
                } else {
                    ctx.error(&path, Some(&v.span()), format!("\"{name}\" is not a host name, *.suffix or *"));
                }
            }
        }
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

/// `[ofrep]`: off when the table is absent; `addr` is then required.
pub(super) fn ofrep(ctx: &mut Ctx<'_>, top: &mut Table<'_, '_>) -> Option<Ofrep> {
    let mut t = top.table(ctx, "ofrep")?;
    let addr = if t.get("addr").is_some() {
        Some(socket_addr(ctx, &mut t, "addr", "127.0.0.1:9903"))
    } else {
        ctx.error(&t.key_path("addr"), Some(&t.span), "missing: the OFREP listener's address, e.g. \"127.0.0.1:9903\"");
        None
    };
    let token_file = t.string(ctx, "token_file").map(PathBuf::from);
    if let (Some(a), None) = (addr, &token_file) {
        if !a.ip().is_loopback() {
            ctx.error(
                &t.key_path("addr"),
                Some(&t.span),
                format!("{a} is not a loopback address: set ofrep.token_file so that callers need a token"),
            );
        }
    }
    t.finish(ctx);
    Some(Ofrep { addr: addr?, token_file })
}
