//! `[prometheus]`, and what `promql` gates need of the rest of the file;
//! `[recording]`, what `weir replay` reads (both are about judging a
//! canary on more than the live gates).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use crate::config::reader::{Ctx, Table};
use crate::config::{Backend, GateMetric, Prometheus, Recording, Route};
use crate::signal;

pub(super) fn prometheus(ctx: &mut Ctx<'_>, top: &mut Table<'_, '_>) -> Option<Prometheus> {
    let mut t = top.table(ctx, "prometheus")?;
    let url = t.required_string(ctx, "url");
    if let Some(u) = &url {
        let rest = u.strip_prefix("http://").or_else(|| u.strip_prefix("https://"));
        let authority = rest.map(|r| r.split('/').next().unwrap_or(""));
        // host[:port], the host not empty, the port a number.
        let ok = authority.is_some_and(|a| {
            let (host, port) = match a.rsplit_once(':') {
                Some((h, p)) if !h.ends_with(']') || a.starts_with('[') => (h, Some(p)),
                _ => (a, None),
            };
            !host.is_empty() && port.is_none_or(|p| p.parse::<u16>().is_ok())
        });
        if !ok || u.contains(['?', '#']) || u.contains(char::is_whitespace) {
            ctx.error(
                &t.key_path("url"),
                Some(&t.span),
                format!("\"{u}\" is not a Prometheus base URL (http:// or https://, host, optional path prefix)"),
            );
        }
    }
    let mut out = Prometheus {
        url: url.unwrap_or_default().trim_end_matches('/').to_string(),
        timeout: Duration::from_secs(5),
        interval: Duration::from_secs(5),
        bearer_token_file: t.string(ctx, "bearer_token_file").map(PathBuf::from),
        ca: t.string(ctx, "ca").map(PathBuf::from),
    };
    for (key, slot, min) in [
        ("timeout", &mut out.timeout, Duration::from_millis(100)),
        ("interval", &mut out.interval, Duration::from_millis(500)),
    ] {
        if let Some(d) = t.duration(ctx, key) {
            if d < min || d > Duration::from_secs(300) {
                ctx.error(&t.key_path(key), Some(&t.span), format!("must be between {min:?} and 5m"));
            } else {
                *slot = d;
            }
        }
    }
    if out.ca.is_some() && out.url.starts_with("http://") {
        ctx.error(&t.key_path("ca"), Some(&t.span), "is for an https:// url");
    }
    t.finish(ctx);
    Some(out)
}

/// A `promql` gate needs `[prometheus]`, and the version labels its query
/// names; fleet mode does not run them yet (its leader would need every
/// replica's view of the same reading).
pub(super) fn promql_gates(
    ctx: &mut Ctx<'_>,
    routes: &[Route],
    backends: &BTreeMap<String, Backend>,
    prometheus: bool,
    fleet: bool,
) {
    for (i, r) in routes.iter().enumerate() {
        let Some(plan) = &r.rollout else { continue };
        for (j, g) in plan.gates.iter().enumerate() {
            let Some(query) = g.query.as_deref().filter(|_| g.metric == GateMetric::Promql) else { continue };
            let path = format!("routes[{i}].rollout.gates[{j}]");
            if !prometheus {
                ctx.error(&format!("{path}.metric"), None, "a promql gate needs a [prometheus] section with its url");
            }
            if fleet {
                ctx.error(
                    &format!("{path}.metric"),
                    None,
                    "promql gates are not supported in fleet mode yet (gate on weir's own metrics, which the fleet merges)",
                );
            }
            let relative = g.max_ratio_to_stable.is_some() || g.max_delta_to_stable.is_some();
            let version = |name: &str| backends.get(name).and_then(|b| b.version.as_deref());
            for v in signal::variables(query) {
                let side = match v {
                    "version" if relative => vec![Some(r.stable.as_str()), r.canary.as_deref()],
                    "version" | "canary_version" => vec![r.canary.as_deref()],
                    "stable_version" => vec![Some(r.stable.as_str())],
                    _ => continue,
                };
                for b in side.into_iter().flatten() {
                    if version(b).is_none() {
                        ctx.error(
                            &format!("{path}.query"),
                            None,
                            format!(
                                "uses {{{{{v}}}}} but backend \"{b}\" has no version label (set backends.{b}.version)"
                            ),
                        );
                    }
                }
            }
        }
    }
}

pub(super) fn recording(ctx: &mut Ctx<'_>, top: &mut Table<'_, '_>) -> Option<Recording> {
    let mut t = top.table(ctx, "recording")?;
    let file = t.required_string(ctx, "file").map(PathBuf::from);
    let max_size = match t.size(ctx, "max_size") {
        Some(n) if n < 1 << 16 => {
            ctx.error(&t.key_path("max_size"), Some(&t.span), "must be at least 64KiB");
            n
        }
        Some(n) => n,
        None => 64 << 20,
    };
    t.finish(ctx);
    Some(Recording { file: file?, max_size })
}
