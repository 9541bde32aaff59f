//! `weir demo`: a self-contained tour. It starts two built-in upstreams
//! (stable and canary), weir in front of them, and sticky traffic from a few
//! hundred simulated users, then raises the canary weight step by step and
//! shows the split live: the delivered share follows the weight, and no user
//! who reached the canary is ever sent back to stable. Exits by itself.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Empty, Full};
use hyper::service::service_fn;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use weir_control::config::{self, Config};

use crate::Weir;

const USERS: u32 = 500;
const STEPS: [u32; 4] = [5, 10, 25, 50];

async fn upstream(body: &'static str) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let svc = service_fn(move |_req: Request<hyper::body::Incoming>| async move {
                    Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(body.as_bytes()))))
                });
                let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), svc).await;
            });
        }
    });
    Ok(addr)
}

fn demo_config(stable: SocketAddr, canary: SocketAddr, weight: u32) -> Result<Config, config::ConfigErrors> {
    config::parse(&format!(
        r#"
[listen]
addr = "127.0.0.1:0"
[admin]
addr = "127.0.0.1:0"
[backends.stable]
addrs = ["{stable}"]
version = "v1"
[backends.canary]
addrs = ["{canary}"]
version = "v2"
[[routes]]
name = "demo"
stable = "stable"
canary = "canary"
weight = {weight}
sticky = {{ header = "x-user-id" }}
force = {{ header = "x-canary" }}
"#
    ))
}

/// Runs the demo for about `duration`, then exits 0 (1 if something failed).
pub async fn run(duration: Duration) -> ExitCode {
    match demo(duration).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("weir demo failed: {e}");
            ExitCode::FAILURE
        }
    }
}

#[derive(Default)]
struct Counts {
    stable: AtomicU64,
    canary: AtomicU64,
    failed: AtomicU64,
}

async fn demo(duration: Duration) -> Result<(), Box<dyn std::error::Error>> {
    let stable = upstream("stable").await?;
    let canary = upstream("canary").await?;
    let weir = Weir::start(demo_config(stable, canary, STEPS[0])?, None).await?;
    let url = format!("http://{}/", weir.data_addr());
    println!("weir demo: stable upstream {stable}, canary upstream {canary}");
    println!("weir demo: proxy on {url} (admin {}), {USERS} sticky users", weir.admin_addr());
    println!("weir demo: try  curl -H 'x-user-id: alice' {url}   or   curl -H 'x-canary: always' {url}");
    println!();

    let counts = Arc::new(Counts::default());
    let moved_back = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let client: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let mut workers = Vec::new();
    for w in 0..4u32 {
        let (client, url, counts, stop, moved_back) =
            (client.clone(), url.clone(), counts.clone(), stop.clone(), moved_back.clone());
        workers.push(tokio::spawn(async move {
            // Each worker owns a quarter of the users and remembers their side.
            let mut on_canary: HashMap<u32, bool> = HashMap::new();
            let mut i = 0u32;
            while !stop.load(Ordering::Relaxed) {
                let user = w + 4 * (i % (USERS / 4));
                i = i.wrapping_add(1);
                let req = Request::get(&url).header("x-user-id", format!("user-{user}")).body(Empty::new());
                let Ok(req) = req else { continue };
                let body = match client.request(req).await {
                    Ok(resp) => resp.into_body().collect().await.map(|b| b.to_bytes()).ok(),
                    Err(_) => None,
                };
                match body.as_deref() {
                    Some(b"canary") => {
                        counts.canary.fetch_add(1, Ordering::Relaxed);
                        on_canary.insert(user, true);
                    }
                    Some(b"stable") => {
                        counts.stable.fetch_add(1, Ordering::Relaxed);
                        if on_canary.get(&user) == Some(&true) {
                            moved_back.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    _ => {
                        counts.failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }));
    }

    let step_len = duration / STEPS.len() as u32;
    let mut total = (0u64, 0u64);
    for (i, &weight) in STEPS.iter().enumerate() {
        if i > 0 {
            weir.apply(demo_config(stable, canary, weight)?).await?;
        }
        let ticks = (step_len.as_millis() / 500).max(1);
        for _ in 0..ticks {
            tokio::time::sleep(Duration::from_millis(500)).await;
            let s = counts.stable.swap(0, Ordering::Relaxed);
            let c = counts.canary.swap(0, Ordering::Relaxed);
            total = (total.0 + s, total.1 + c);
            let share = if s + c > 0 { 100.0 * c as f64 / (s + c) as f64 } else { 0.0 };
            let bar_len = (share / 2.0).round() as usize;
            println!(
                "weight {weight:>3}%  |{:<50}|  canary {share:5.1}%  ({c:>5} canary / {s:>6} stable in 0.5 s)",
                "#".repeat(bar_len.min(50))
            );
        }
    }
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        let _ = w.await;
    }
    let failed = counts.failed.load(Ordering::Relaxed);
    let moved = moved_back.load(Ordering::Relaxed);
    println!();
    println!(
        "weir demo: {} requests, {} on the canary, {failed} failed; users moved back from canary to stable: {moved}",
        total.0 + total.1,
        total.1
    );
    weir.shutdown().await;
    if failed > 0 || moved > 0 {
        return Err(format!("{failed} failed requests, {moved} users moved back").into());
    }
    println!("weir demo: done (the full staged rollout with gates comes with the gate engine)");
    Ok(())
}
