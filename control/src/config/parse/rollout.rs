//! `[routes.rollout]`: stages (with their synthetic requests) and gates.

use std::time::Duration;

use super::{cohort, header_name, http_url, loopback_url, weight};
use crate::config::reader::{as_str, Ctx, Table, Value};
use crate::config::{Gate, GateMetric, Notify, NotifyFormat, OnFailure, Rollout, Stage, Synthetic};
use crate::signal;

pub(super) fn rollout(ctx: &mut Ctx<'_>, t: &mut Table<'_, '_>) -> Option<Rollout> {
    let interval = match t.duration(ctx, "interval") {
        Some(d) if d < Duration::from_millis(100) => {
            ctx.error(&t.key_path("interval"), Some(&t.span), "must be at least 100ms (the driver looks every 100 ms)");
            d
        }
        Some(d) => d,
        None => Duration::from_secs(1),
    };
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
    if t.get("gates").is_none() {
        // A stage advances only on a gate that passed: without gates a
        // rollout could only hold (it used to promote on nothing).
        ctx.error(&t.key_path("gates"), Some(&t.span), "is required: a stage advances only on a gate that passed");
    }
    if let Some(list) = t.array(ctx, "gates") {
        if list.is_empty() {
            ctx.error(
                &t.key_path("gates"),
                Some(&t.span),
                "needs at least one gate: a stage advances only on a gate that passed",
            );
        }
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
        if !gates.is_empty() && gates.iter().all(|g| g.dry_run) {
            ctx.error(
                &t.key_path("gates"),
                Some(&t.span),
                "every gate is dry_run: a stage advances only on a gate that passed, and a dry-run gate never acts",
            );
        }
    }
    let hold_timeout = t.duration(ctx, "hold_timeout").unwrap_or(Duration::from_secs(600));
    let warmup = match t.duration(ctx, "warmup") {
        Some(d) if d > Duration::from_secs(3600) => {
            ctx.error(&t.key_path("warmup"), Some(&t.span), "must be at most 1h");
            d
        }
        Some(d) => d,
        None => Duration::ZERO,
    };
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
    let severe_window = match t.duration(ctx, "severe_window") {
        Some(d) if d < Duration::from_secs(1) => {
            ctx.error(&t.key_path("severe_window"), Some(&t.span), "must be at least 1s (windows are whole seconds)");
            d
        }
        Some(d) => d,
        None => Duration::from_secs(10),
    };
    let pre_stage = t.string(ctx, "pre_stage").filter(|u| http_url(ctx, &t.key_path("pre_stage"), &t.span, u));
    let notify = notify(ctx, t);
    let webhook_timeout = t.duration(ctx, "webhook_timeout").unwrap_or(Duration::from_secs(5));
    t.finish(ctx);
    Some(Rollout {
        interval,
        on_failure,
        failure_threshold,
        stages,
        warmup,
        gates,
        hold_timeout,
        on_hold,
        severe_error_rate,
        severe_min_requests,
        severe_window,
        pre_stage,
        notify,
        webhook_timeout,
    })
}

/// `notify`: a URL (weir's JSON), a sink table, or a list of either.
fn notify(ctx: &mut Ctx<'_>, t: &mut Table<'_, '_>) -> Vec<Notify> {
    let Some(v) = t.get("notify") else { return Vec::new() };
    let path = t.key_path("notify");
    let one = |ctx: &mut Ctx<'_>, path: String, v: &Value<'_>| -> Option<Notify> {
        if let Some(u) = v.get_ref().as_str() {
            return http_url(ctx, &path, &v.span(), u).then(|| Notify {
                url: u.to_string(),
                format: NotifyFormat::Weir,
                routing_key_file: None,
            });
        }
        if v.get_ref().as_table().is_none() {
            ctx.error(&path, Some(&v.span()), "expected a URL, a sink table ({ url, format }) or a list of them");
            return None;
        }
        let mut s = Table::from_value(ctx, path.clone(), v)?;
        let url = s.required_string(ctx, "url").filter(|u| http_url(ctx, &s.key_path("url"), &s.span, u));
        let format = match s.string(ctx, "format").as_deref() {
            None | Some("weir") => Some(NotifyFormat::Weir),
            Some("slack") => Some(NotifyFormat::Slack),
            Some("teams") => Some(NotifyFormat::Teams),
            Some("pagerduty") => Some(NotifyFormat::PagerDuty),
            Some(other) => {
                ctx.error(
                    &s.key_path("format"),
                    Some(&s.span),
                    format!("\"{other}\" is not one of \"weir\", \"slack\", \"teams\", \"pagerduty\""),
                );
                None
            }
        };
        let routing_key_file = s.string(ctx, "routing_key_file").map(std::path::PathBuf::from);
        // Their URL or key is the secret: never in the clear off the host.
        if let (Some(f), Some(u)) = (format, &url) {
            if f != NotifyFormat::Weir && u.starts_with("http://") && !loopback_url(u) {
                ctx.error(&s.key_path("url"), Some(&s.span), format!("{} needs an https:// URL", f.as_str()));
            }
        }
        match (format, &routing_key_file) {
            (Some(NotifyFormat::PagerDuty), None) => {
                ctx.error(&s.key_path("routing_key_file"), Some(&s.span), "is required with format = \"pagerduty\"")
            }
            (Some(f), Some(_)) if f != NotifyFormat::PagerDuty => {
                ctx.error(&s.key_path("routing_key_file"), Some(&s.span), "is for format = \"pagerduty\" only")
            }
            _ => {}
        }
        s.finish(ctx);
        Some(Notify { url: url?, format: format?, routing_key_file })
    };
    if let Some(list) = v.get_ref().as_array() {
        if list.is_empty() {
            ctx.error(&path, Some(&v.span()), "needs at least one sink (or leave it out)");
        }
        list.iter().enumerate().filter_map(|(i, v)| one(ctx, format!("{path}[{i}]"), v)).collect()
    } else {
        one(ctx, path, v).into_iter().collect()
    }
}

fn fraction(ctx: &mut Ctx<'_>, g: &mut Table<'_, '_>, key: &'static str, lo: f64, hi: f64) -> Option<f64> {
    let x = g.number(ctx, key)?;
    if !(lo..=hi).contains(&x) {
        ctx.error(&g.key_path(key), Some(&g.span), format!("{x} is not between {lo} and {hi}"));
        return None;
    }
    Some(x)
}

/// Default `alpha` of a statistical gate: what it spends per rollout.
pub(crate) const DEFAULT_ALPHA: f64 = 0.005;

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
        "promql" => GateMetric::Promql,
        other => {
            ctx.error(
                &metric_path,
                Some(&g.span),
                format!("unknown metric \"{other}\" (error_rate, latency_p50, latency_p90, latency_p95, latency_p99, latency_p999, error_rate_vs_stable, latency_shift, synthetic, shadow_mismatch, promql)"),
            );
            return None;
        }
    };
    let name = g.string(ctx, "name").unwrap_or_else(|| metric.name());
    let dry_run = g.boolean(ctx, "dry_run").unwrap_or(false);
    if metric == GateMetric::Promql {
        return promql_gate(ctx, g, name, dry_run);
    }
    for key in ["query", "min"] {
        if g.get(key).is_some() {
            ctx.error(&g.key_path(key), Some(&g.span), "only a promql gate takes this");
        }
    }
    let min_samples = g.integer(ctx, "min_samples", 1..=10_000_000).unwrap_or(50);
    let statistical = matches!(metric, GateMetric::ErrorRateVsStable | GateMetric::LatencyShift);
    // Two statistical gates at the default spend 1 % per rollout.
    let alpha = fraction(ctx, g, "alpha", 1e-6, 0.2).unwrap_or(DEFAULT_ALPHA);
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
            // The error test's tolerance: the canary passes once its error
            // rate is shown below max_ratio_to_stable × stable + max_delta.
            GateMetric::ErrorRateVsStable if key == "max_delta_to_stable" => fraction(ctx, g, key, 0.0, 1.0),
            GateMetric::ErrorRateVsStable if key == "max_ratio_to_stable" => g.number(ctx, key),
            _ => {
                if g.get(key).is_some() {
                    let what = if metric == GateMetric::ErrorRateVsStable {
                        "error_rate_vs_stable takes alpha, min_effect, and its tolerance as max_ratio_to_stable and max_delta_to_stable"
                    } else {
                        "a statistical gate takes alpha and min_effect instead"
                    };
                    ctx.error(&g.key_path(key), Some(&g.span), what);
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
    Some(Gate {
        name,
        metric,
        min_samples,
        alpha,
        min_effect,
        max,
        max_ratio_to_stable,
        max_delta_to_stable,
        min: None,
        query: None,
        dry_run,
    })
}

/// `{ metric = "promql", query = "...", max = 0.01 }` (also `min`, and the
/// relative `max_ratio_to_stable` / `max_delta_to_stable`, which compare
/// with the same query for stable).
fn promql_gate(ctx: &mut Ctx<'_>, g: &mut Table<'_, '_>, name: String, dry_run: bool) -> Option<Gate> {
    for key in ["alpha", "min_effect", "min_samples"] {
        if g.get(key).is_some() {
            ctx.error(
                &g.key_path(key),
                Some(&g.span),
                "a promql gate reads one value from Prometheus: it has no samples or test to tune",
            );
        }
    }
    let query = g.required_string(ctx, "query")?;
    if query.trim().is_empty() {
        ctx.error(&g.key_path("query"), Some(&g.span), "is empty");
        return None;
    }
    let mut ok = true;
    let used = signal::variables(&query);
    for v in &used {
        if !signal::VARIABLES.contains(v) {
            ctx.error(
                &g.key_path("query"),
                Some(&g.span),
                format!("unknown variable {{{{{v}}}}} (known: {})", signal::VARIABLES.join(", ")),
            );
            ok = false;
        }
    }
    let max = g.number(ctx, "max");
    let min = g.number(ctx, "min");
    let max_ratio_to_stable = g.number(ctx, "max_ratio_to_stable");
    let max_delta_to_stable = g.number(ctx, "max_delta_to_stable");
    if let Some(r) = max_ratio_to_stable {
        if r <= 0.0 {
            ctx.error(&g.key_path("max_ratio_to_stable"), Some(&g.span), format!("{r} must be above 0"));
        }
    }
    if let (Some(lo), Some(hi)) = (min, max) {
        if lo > hi {
            ctx.error(&g.key_path("min"), Some(&g.span), format!("{lo} is above max ({hi}): nothing could pass"));
        }
    }
    let relative = max_ratio_to_stable.is_some() || max_delta_to_stable.is_some();
    if relative && !used.iter().any(|v| matches!(*v, "version" | "backend")) {
        ctx.error(
            &g.key_path("query"),
            Some(&g.span),
            "a relative limit compares this query for the canary with the same query for stable: \
             it needs {{version}} or {{backend}} to tell them apart",
        );
        ok = false;
    }
    if max.is_none() && min.is_none() && !relative {
        ctx.error(&g.path, Some(&g.span), "needs max, min, max_ratio_to_stable or max_delta_to_stable");
        return None;
    }
    ok.then_some(Gate {
        name,
        metric: GateMetric::Promql,
        min_samples: 0,
        alpha: DEFAULT_ALPHA,
        min_effect: 0.0,
        max,
        max_ratio_to_stable,
        max_delta_to_stable,
        min,
        query: Some(query),
        dry_run,
    })
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
