//! `[[routes]]`: matching, the stable and canary backends (which must
//! exist), sticky and force keys, the static split, the variant header and
//! shadow traffic; the rollout itself is read by `rollout`.

use std::collections::{BTreeMap, HashSet};

use toml::de::DeValue;

use super::rollout::rollout;
use super::{check_name, cohort, header_name, key_source, weight};
use crate::classify::{grpc_code, Classifier, GRPC_CODES};
use crate::config::reader::{as_str, Ctx, Table};
use crate::config::{units, Backend, Route, Shadow};
use crate::split::Weight;

pub(super) fn routes(ctx: &mut Ctx<'_>, top: &mut Table<'_, '_>, backends: &BTreeMap<String, Backend>) -> Vec<Route> {
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
    let failures = t.table(ctx, "failures").map_or_else(Classifier::default, |mut f| {
        let c = failures(ctx, &mut f);
        f.finish(ctx);
        c
    });
    let grpc = t.boolean(ctx, "grpc").unwrap_or(false);
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
        failures,
        stable: stable?,
        canary,
        sticky,
        force,
        cohort: static_cohort,
        weight: w.unwrap_or(Weight::ZERO),
        variant_header,
        rollout,
        shadow,
        grpc,
    })
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

/// `failures = { http = ["5xx", 429], grpc = ["UNAVAILABLE", "INTERNAL"] }`:
/// each list replaces its default (`["5xx"]`; UNKNOWN, DEADLINE_EXCEEDED,
/// INTERNAL, UNAVAILABLE, DATA_LOSS). HTTP entries are statuses (100–599)
/// or classes (`"4xx"`, `"5xx"`); gRPC entries are code names or numbers.
fn failures(ctx: &mut Ctx<'_>, t: &mut Table<'_, '_>) -> Classifier {
    let mut out = Classifier::default();
    let path = t.key_path("http");
    if let Some(list) = t.array(ctx, "http") {
        out.clear_http();
        for (i, v) in list.iter().enumerate() {
            let p = format!("{path}[{i}]");
            let range = match v.get_ref() {
                DeValue::Integer(_) => crate::config::reader::as_integer(ctx, &p, v)
                    .filter(|n| (100..=599).contains(n))
                    .map(|n| (n as u16, n as u16)),
                DeValue::String(s) => match s.as_bytes() {
                    [d @ b'1'..=b'5', b'x' | b'X', b'x' | b'X'] => {
                        let base = u16::from(d - b'0') * 100;
                        Some((base, base + 99))
                    }
                    _ => s.parse::<u16>().ok().filter(|n| (100..=599).contains(n)).map(|n| (n, n)),
                },
                _ => {
                    as_str(ctx, &p, v); // reports the type
                    continue;
                }
            };
            match range {
                Some((from, to)) => out.add_http_range(from, to),
                None => ctx.error(&p, Some(&v.span()), "expected an HTTP status (100-599) or a class such as \"5xx\""),
            }
        }
    }
    let path = t.key_path("grpc");
    if let Some(list) = t.array(ctx, "grpc") {
        out.clear_grpc();
        for (i, v) in list.iter().enumerate() {
            let p = format!("{path}[{i}]");
            let code = match v.get_ref() {
                DeValue::Integer(_) => crate::config::reader::as_integer(ctx, &p, v)
                    .and_then(|n| u8::try_from(n).ok())
                    .and_then(|n| grpc_code(&n.to_string())),
                DeValue::String(s) => grpc_code(s),
                _ => {
                    as_str(ctx, &p, v); // reports the type
                    continue;
                }
            };
            match code {
                Some(c) => out.add_grpc(c),
                None => ctx.error(
                    &p,
                    Some(&v.span()),
                    format!("expected a gRPC code (0-16) or its name: {}", GRPC_CODES.join(", ")),
                ),
            }
        }
    }
    out
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
                crate::config::reader::as_integer(ctx, &t.key_path("max_body"), v).map_or(0, |n| n.max(0) as u64)
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
