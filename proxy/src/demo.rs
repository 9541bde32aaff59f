//! `weir demo`: a whole rollout in about a minute, with nothing to set up.
//!
//! It starts two built-in upstreams (stable, and canary: healthy, or with
//! `--bad-canary` failing 8 % of requests and 40 ms slower), weir in front of
//! them with a built-in staged rollout (internal users → 5 % → 25 % → 50 % →
//! 100 %), and sticky traffic from 2 000 simulated users, 5 % of them
//! internal. It shows the rollout live and ends with the outcome and the
//! numbers that decided it. Every port is chosen by the OS, so demos and a
//! running weir never clash.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Empty, Full};
use hyper::service::service_fn;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use weir_control::config::{self, Config};
use weir_control::gate::GateResult;
use weir_control::rollout::{Event, EventKind, Phase};
use weir_control::split::Side;

use crate::Weir;

const USERS: u64 = 2000;

/// How an upstream behaves.
#[derive(Clone, Copy)]
struct Behaviour {
    name: &'static str,
    /// Requests out of 1000 that fail with 500.
    errors_per_mille: u64,
    /// Added latency.
    extra: Duration,
}

async fn upstream(b: Behaviour) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let seq = Arc::new(AtomicU64::new(0));
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let seq = seq.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |_req: Request<hyper::body::Incoming>| {
                    let i = seq.fetch_add(1, Ordering::Relaxed);
                    async move {
                        // A few ms of "work", varying per request.
                        tokio::time::sleep(Duration::from_millis(2 + (i * 7919) % 5) + b.extra).await;
                        let mut r = Response::new(Full::new(Bytes::from_static(b.name.as_bytes())));
                        if (i * 7919) % 1000 < b.errors_per_mille {
                            *r.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
                        }
                        Ok::<_, Infallible>(r)
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), svc).await;
            });
        }
    });
    Ok(addr)
}

fn demo_config(
    stable: SocketAddr,
    canary: SocketAddr,
    bake: &str,
    record: Option<&Path>,
) -> Result<Config, config::ConfigErrors> {
    let recording = record.map(|p| format!("[recording]\nfile = {}\n", toml_string(&p.display().to_string())));
    let recording = recording.unwrap_or_default();
    config::parse(&format!(
        r#"
{recording}
[listen]
addr = "127.0.0.1:0"
[admin]
addr = "127.0.0.1:0"
[backends.stable]
addrs = ["{stable}"]
version = "v1.4.2"
[backends.canary]
addrs = ["{canary}"]
version = "v1.5.0"
[[routes]]
name = "demo"
stable = "stable"
canary = "canary"
sticky = {{ header = "x-user-id" }}
force = {{ header = "x-canary" }}
[routes.rollout]
interval = "500ms"
failure_threshold = 2
stages = [
  {{ weight = 0, cohort = {{ header = "x-user-group", values = ["internal"] }}, bake = "{bake}", min_requests = 30 }},
  {{ weight = 5, bake = "{bake}", min_requests = 30 }},
  {{ weight = 25, bake = "{bake}" }},
  {{ weight = 50, bake = "{bake}" }},
  {{ weight = 100, bake = "{bake}" }},
]
gates = [
  {{ metric = "error_rate", max = 0.02, min_samples = 30 }},
  {{ metric = "latency_p99", max_ratio_to_stable = 1.5, max_delta_to_stable = "25ms", min_samples = 50 }},
  {{ metric = "error_rate_vs_stable", max_delta_to_stable = 0.02, min_samples = 30 }},
]
"#
    ))
}

/// `s` as a TOML basic string: quoted, with `\\`, `"` and control
/// characters escaped.
fn toml_string(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Runs the demo; exits 0 whatever the outcome (it is the point of the demo).
pub async fn run(bad_canary: bool, fast: bool, record: Option<PathBuf>) -> ExitCode {
    match demo(bad_canary, fast, record.as_deref()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("weir demo failed: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Simulated users at a time: about 1 000 requests a second in all, so that
/// the 5 % stages show a p99 within its limit (409 canary requests) in
/// seconds.
const WORKERS: u64 = 16;

fn traffic(url: String, stop: Arc<AtomicBool>) -> Vec<tokio::task::JoinHandle<()>> {
    let client: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    (0..WORKERS)
        .map(|w| {
            let (client, url, stop) = (client.clone(), url.clone(), stop.clone());
            tokio::spawn(async move {
                let mut i = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let user = (w + WORKERS * i) % USERS;
                    i += 1;
                    let mut req = Request::get(&url).header("x-user-id", format!("user-{user}"));
                    if user.is_multiple_of(20) {
                        req = req.header("x-user-group", "internal");
                    }
                    let Ok(req) = req.body(Empty::new()) else { continue };
                    if let Ok(resp) = client.request(req).await {
                        let _ = resp.into_body().collect().await;
                    }
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            })
        })
        .collect()
}

fn side_line(w: &weir_control::sample::Window, secs: f64) -> String {
    let p99 =
        w.latency.quantile(0.99).map_or("   -  ".to_string(), |d| format!("{:>4.0} ms", d.as_secs_f64() * 1000.0));
    let err = w.counts.error_rate().map_or("  -  ".to_string(), |r| format!("{:>4.1}%", 100.0 * r));
    format!("{:>4.0} rps {err} err p99 {p99}", w.counts.total() as f64 / secs)
}

fn verdicts(v: &[GateResult]) -> String {
    v.iter().map(|r| format!("{}={}", r.gate, r.verdict.as_str())).collect::<Vec<_>>().join(" ")
}

async fn demo(bad_canary: bool, fast: bool, record: Option<&Path>) -> Result<(), Box<dyn std::error::Error>> {
    let stable = upstream(Behaviour { name: "stable", errors_per_mille: 0, extra: Duration::ZERO }).await?;
    let canary_b = if bad_canary {
        Behaviour { name: "canary", errors_per_mille: 80, extra: Duration::from_millis(40) }
    } else {
        Behaviour { name: "canary", errors_per_mille: 0, extra: Duration::ZERO }
    };
    let canary = upstream(canary_b).await?;
    let bake = if fast { "1s" } else { "8s" };
    let weir = Weir::start(demo_config(stable, canary, bake, record)?, None).await?;
    let mut events = weir.subscribe();
    let url = format!("http://{}/", weir.data_addr());
    println!(
        "weir demo: rolling out canary v1.5.0 over stable v1.4.2 ({})",
        if bad_canary { "a degraded canary: 8% errors, +40 ms" } else { "a healthy canary" }
    );
    println!("  proxy      {url}    try: curl -H 'x-user-id: alice' {url}");
    println!("  dashboard  http://{}/   (open it while the demo runs)", weir.admin_addr());
    println!("  plan       internal users -> 5% -> 25% -> 50% -> 100%, {bake} bake per stage; gates: error rate <= 2%, p99 <= 1.5x stable + 25 ms, error rate vs stable (sequential; passes once shown within stable + 2 points)");
    println!();

    let stop = Arc::new(AtomicBool::new(false));
    let workers = traffic(url, stop.clone());
    let started = Instant::now();
    // The 5 % stages wait for ~409 canary requests to show the p99: about
    // 10 s each at the demo's rate, more on a busy machine.
    let limit = if fast { Duration::from_secs(120) } else { Duration::from_secs(240) };
    let mut tick = tokio::time::interval(Duration::from_millis(if fast { 500 } else { 1000 }));
    let mut last_compared: Vec<GateResult> = Vec::new();
    let decided: Option<Event> = loop {
        tokio::select! {
            ev = events.recv() => match ev {
                Ok(ev) if ev.kind != EventKind::Evaluated => {
                    println!("  -> {:>5.1}s {:?}: {}", started.elapsed().as_secs_f64(), ev.kind, ev.cause);
                    if matches!(ev.to, Phase::Promoted | Phase::RolledBack | Phase::Paused | Phase::Aborted) {
                        break Some(ev);
                    }
                }
                Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                Err(tokio::sync::broadcast::error::RecvError::Closed) => break None,
            },
            _ = tick.tick() => {
                let Some(state) = weir.rollout("demo") else { break None };
                let compared = state.verdicts.iter().all(|v| {
                    matches!(v.verdict, weir_control::gate::Verdict::Pass | weir_control::gate::Verdict::Fail)
                });
                if compared && !state.verdicts.is_empty() {
                    last_compared = state.verdicts.clone();
                }
                let secs = 2.0;
                let win = |side| weir.window("demo", side, Duration::from_secs(2)).unwrap_or_default();
                let weight = weir.route_weight_bp("demo").unwrap_or(0) as f64 / 100.0;
                let bar = "#".repeat((weight / 5.0).round() as usize);
                println!(
                    "  {:>5.1}s stage {}/5 {:>5.1}% |{bar:<20}| stable {} | canary {} | {}",
                    started.elapsed().as_secs_f64(),
                    state.stage + 1,
                    weight,
                    side_line(&win(Side::Stable), secs),
                    side_line(&win(Side::Canary), secs),
                    verdicts(&state.verdicts),
                );
                if started.elapsed() > limit {
                    break None;
                }
            }
        }
    };
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        let _ = w.await;
    }
    weir.shutdown().await;
    println!();
    let took = started.elapsed().as_secs_f64();
    match decided {
        Some(ev) if ev.to == Phase::Promoted => {
            println!(
                "weir demo: promoted v1.5.0 to 100% after {took:.1}s; last comparison with stable: {}",
                deciding(&last_compared)
            );
        }
        Some(ev) if ev.to == Phase::RolledBack => {
            println!(
                "weir demo: rolled back v1.5.0 after {took:.1}s at stage {} ({}): {}",
                ev.stage + 1,
                ev.cause,
                deciding(&ev.verdicts)
            );
        }
        Some(ev) => println!("weir demo: {} after {took:.1}s: {}", ev.to.as_str(), ev.cause),
        None => println!("weir demo: no decision within {:.0}s", limit.as_secs_f64()),
    }
    Ok(())
}

/// The gate numbers, in words.
fn deciding(v: &[GateResult]) -> String {
    v.iter()
        .map(|r| {
            let show = |x: Option<f64>| match x {
                None => "-".to_string(),
                Some(x) if r.gate.starts_with("latency") => format!("{:.1} ms", x * 1000.0),
                Some(x) => format!("{:.2}%", 100.0 * x),
            };
            match r.gate.as_str() {
                "error_rate_vs_stable" => format!(
                    "{} {} (canary {} vs stable {}; bound {} vs tolerance {}, p={:.1e})",
                    r.gate,
                    r.verdict.as_str(),
                    show(r.value),
                    show(r.stable_value),
                    show(r.upper_bound),
                    show(r.threshold),
                    r.p_value.unwrap_or(1.0)
                ),
                _ => format!(
                    "{} {} ({} vs limit {}, n={})",
                    r.gate,
                    r.verdict.as_str(),
                    show(r.value),
                    show(r.threshold),
                    r.canary_samples
                ),
            }
        })
        .collect::<Vec<_>>()
        .join("; ")
}
