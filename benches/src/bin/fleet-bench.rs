//! Fleet mode's figures, on a real 3-member etcd and three real weir
//! replicas on loopback (the tests crate's `Fleet`):
//!
//! 1. **apply lag**: `ACTIONS` manual actions (pause, resume, …), each sent
//!    to the next replica in turn; for each, the time from sending it to each
//!    replica serving it (its `/api/v1/routes` polled back to back, so the
//!    figure includes the etcd transaction and up to one poll, ~0.5 ms), and
//!    weir's own `weir_fleet_apply_lag_seconds` (the leader's decision to this
//!    replica serving it, per commit);
//! 2. **failover**: `FAILOVERS` times, SIGKILL the leader and time until
//!    another replica leads (polled every 20 ms), with the default 5 s lease;
//! 3. **detection**: a canary failing 10 % of requests (1 in 10) behind the
//!    demo's gates, at 50 %, each replica under the same load (steady, ~45
//!    req/s each, then thin, ~5 req/s each): the time from the rollout's
//!    start to its rollback, and the canary requests served until then, for
//!    the fleet of three and for one weir alone on one replica's share of
//!    the traffic (a third), 5 trials each.
//!
//! `benches/fleet.sh [--quick]` builds weir (with `fleet`) and runs it;
//! `--quick` (CI) runs 20 actions, 1 failover and 1 trial of each.
//! Loopback only; every process it starts is stopped when it ends.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use weir_tests::fleet::{api, route, Fleet};
use weir_tests::{client, config_text, get, parse_prometheus, sample_sum, Load, Mode, Process};

/// A rollout that stays where it is unless told (for the lag and failover).
const STILL: &str = r#"
[routes.rollout]
stages = [{ weight = 50, bake = "9m" }, { weight = 100 }]
gates = [{ metric = "error_rate", max = 0.05 }]
"#;

/// The demo's error gates, the bad canary exposed at 50 %.
const DETECT: &str = r#"
[routes.rollout]
stages = [{ weight = 50, bake = "9m" }, { weight = 100 }]
gates = [
  { metric = "error_rate", max = 0.02, min_samples = 30 },
  { metric = "error_rate_vs_stable", max_delta_to_stable = 0.02, min_samples = 30 },
]
"#;

/// Each replica's load: one client with a pause between requests (steady:
/// ~45 req/s; thin: ~5 req/s, where evidence, not the tick, is what a
/// decision waits for).
const STEADY: Duration = Duration::from_millis(20);
const THIN: Duration = Duration::from_millis(200);

fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

fn summary(label: &str, mut v: Vec<f64>, unit: &str) {
    v.sort_by(f64::total_cmp);
    println!(
        "  {label:<44} n={:<4} p50 {:>8.1} {unit}  p99 {:>8.1} {unit}  max {:>8.1} {unit}",
        v.len(),
        quantile(&v, 0.5),
        quantile(&v, 0.99),
        v.last().copied().unwrap_or(f64::NAN)
    );
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let (actions, failovers, trials) = if quick { (20, 1, 1) } else { (200, 5, 5) };
    println!("fleet bench: 3-member etcd, 3 replicas, loopback ({})", if quick { "quick" } else { "full" });
    apply_lag(actions).await;
    failover(failovers).await;
    detection(trials, STEADY, "steady").await;
    detection(trials, THIN, "thin").await;
}

async fn apply_lag(actions: usize) {
    let mut f = Fleet::start("bench-lag", Mode::Named).await;
    for i in 0..3 {
        f.spawn(i, STILL, &[0, 1, 2]);
    }
    f.all_at("progressing", 50.0, Duration::from_secs(30)).await;
    let c = client();
    let (mut answered, mut each, mut all, mut spread) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for k in 0..actions {
        let (action, phase) = if k % 2 == 0 { ("pause", "paused") } else { ("resume", "progressing") };
        let to = f.replica(k % 3);
        let url = format!("http://{}/api/v1/routes/web/{action}", to.admin_addr);
        let t0 = Instant::now();
        let resp = c.request(http::Request::post(url).body(Full::new(Bytes::new())).unwrap()).await.unwrap();
        assert!(resp.status().is_success(), "{action}: {}", resp.status());
        answered.push(t0.elapsed().as_secs_f64() * 1e3);
        let mut seen: [Option<f64>; 3] = [None; 3];
        let deadline = t0 + Duration::from_secs(10);
        while seen.iter().any(Option::is_none) {
            assert!(Instant::now() < deadline, "{action} #{k} not served everywhere: {seen:?}");
            let fleet = &f;
            let polls = futures_util::future::join_all(
                (0..3).filter(|&i| seen[i].is_none()).map(|i| async move { (i, route(fleet.replica(i)).await) }),
            )
            .await;
            for (i, (p, _, _)) in polls {
                if p == phase {
                    seen[i] = Some(t0.elapsed().as_secs_f64() * 1e3);
                }
            }
        }
        let seen: Vec<f64> = seen.iter().map(|s| s.unwrap_or(f64::NAN)).collect();
        let (lo, hi) = seen.iter().fold((f64::MAX, 0f64), |(lo, hi), &s| (lo.min(s), hi.max(s)));
        each.extend(&seen);
        all.push(hi);
        spread.push(hi - lo);
    }
    // weir's own measure, every replica's histogram added up.
    let mut buckets: Vec<(f64, f64)> = Vec::new();
    for i in 0..3 {
        let (_, text) = get(&c, &format!("http://{}/metrics", f.replica(i).admin_addr), &[]).await;
        for line in text.lines().filter(|l| l.starts_with("weir_fleet_apply_lag_seconds_bucket")) {
            let le = line.split("le=\"").nth(1).and_then(|r| r.split('"').next()).unwrap_or("+Inf");
            let le: f64 = if le == "+Inf" { f64::INFINITY } else { le.parse().unwrap() };
            let n: f64 = line.rsplit(' ').next().unwrap().parse().unwrap();
            match buckets.iter_mut().find(|(b, _)| *b == le) {
                Some(b) => b.1 += n,
                None => buckets.push((le, n)),
            }
        }
    }
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    let total = buckets.last().map_or(0.0, |b| b.1);
    let at = |q: f64| buckets.iter().find(|(_, n)| *n >= q * total).map_or(f64::NAN, |b| b.0 * 1e3);
    println!("apply lag ({actions} actions, sent round-robin to the 3 replicas):");
    summary("action answered (fenced commit done)", answered, "ms");
    summary("sent -> a replica serves it (each replica)", each, "ms");
    summary("sent -> all 3 replicas serve it", all, "ms");
    summary("first replica -> last replica", spread, "ms");
    println!(
        "  weir_fleet_apply_lag_seconds (decision -> serving, {total} applies): p50 <= {} ms, p99 <= {} ms (bucket bounds)",
        at(0.5),
        at(0.99)
    );
}

async fn failover(n: usize) {
    let mut f = Fleet::start("bench-failover", Mode::Named).await;
    // The defaults: lease_ttl 5 s.
    f.timings = "";
    for i in 0..3 {
        f.spawn(i, STILL, &[0, 1, 2]);
    }
    f.all_at("progressing", 50.0, Duration::from_secs(30)).await;
    let mut took = Vec::new();
    for _ in 0..n {
        let old = f.leader(Duration::from_secs(30)).await;
        f.replica(old).signal("KILL").unwrap();
        let killed = Instant::now();
        f.replicas[old] = None;
        let new = loop {
            let mut leads = None;
            for i in f.live() {
                if f.view(i).await["role"] == "leader" {
                    leads = Some(i);
                }
            }
            if let Some(i) = leads {
                break i;
            }
            assert!(killed.elapsed() < Duration::from_secs(30), "no new leader");
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        took.push(killed.elapsed().as_secs_f64());
        assert_ne!(new, old);
        f.all_at("progressing", 50.0, Duration::from_secs(5)).await;
        // The killed replica comes back (as a restarted pod would).
        f.spawn(old, STILL, &[0, 1, 2]);
        f.all_at("progressing", 50.0, Duration::from_secs(30)).await;
    }
    println!("failover (SIGKILL the leader, lease_ttl 5 s, {n} times):");
    summary("killed -> another replica leads", took, "s");
}

/// The audit's `started` and `rolled_back` times of route `web`, once it
/// rolled back.
async fn rolled_back_after(p: &Process, deadline: Instant) -> Duration {
    loop {
        let v = api(p, "/api/v1/events?route=web").await;
        let at = |kind: &str| {
            v["events"].as_array().unwrap().iter().find(|e| e["kind"] == kind).map(|e| e["at_ms"].as_u64().unwrap())
        };
        if let (Some(start), Some(back)) = (at("started"), at("rolled_back")) {
            return Duration::from_millis(back - start);
        }
        assert!(Instant::now() < deadline, "no rollback: {v}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn canary_served(p: &Process) -> f64 {
    let (_, text) = get(&client(), &format!("http://{}/metrics", p.admin_addr), &[]).await;
    sample_sum(&parse_prometheus(&text), "weir_requests_total", &[("backend", "canary")])
}

async fn detection(trials: usize, pause: Duration, label: &str) {
    let (mut fleet_t, mut fleet_n, mut one_t, mut one_n) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut rates = (0.0, 0.0);
    for k in 0..trials {
        // The fleet: three replicas, each under the same load.
        let mut f = Fleet::start(&format!("bench-detect-{label}-{k}"), Mode::FailTenths(1)).await;
        f.timings = "";
        let mut loads = Vec::new();
        for i in 0..3 {
            f.spawn(i, DETECT, &[0, 1, 2]);
            loads.push(Load::start(format!("http://{}/", f.replica(i).data_addr), 1, pause));
        }
        let t = Instant::now();
        let took = rolled_back_after(f.replica(0), Instant::now() + Duration::from_secs(120)).await;
        let sent: u64 = loads.iter().map(|l| l.sent.load(Ordering::Relaxed)).sum();
        rates.0 = sent as f64 / t.elapsed().as_secs_f64();
        for l in loads {
            l.stop().await;
        }
        let mut served = 0.0;
        for i in 0..3 {
            served += canary_served(f.replica(i)).await;
        }
        fleet_t.push(took.as_secs_f64());
        fleet_n.push(served);
        drop(f);

        // One weir alone, on one replica's traffic.
        let stable = weir_tests::Upstream::start("stable", Mode::Named).await;
        let canary = weir_tests::Upstream::start("canary", Mode::FailTenths(1)).await;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("weir.toml");
        std::fs::write(&path, config_text(stable.addr, canary.addr, DETECT, "")).unwrap();
        let p = Process::spawn(&path);
        let load = Load::start(format!("http://{}/", p.data_addr), 1, pause);
        let t = Instant::now();
        let took = rolled_back_after(&p, Instant::now() + Duration::from_secs(300)).await;
        rates.1 = load.sent.load(Ordering::Relaxed) as f64 / t.elapsed().as_secs_f64();
        load.stop().await;
        one_t.push(took.as_secs_f64());
        one_n.push(canary_served(&p).await);
    }
    println!(
        "detection, {label} traffic (canary 10 % errors at 50 %, the demo's error gates; fleet {:.0} req/s in all, one weir {:.0} req/s; {trials} trials):",
        rates.0, rates.1
    );
    summary("fleet of 3: started -> rolled back", fleet_t, "s");
    summary("fleet of 3: canary requests served by then", fleet_n, "");
    summary("one weir on a third: started -> rolled back", one_t, "s");
    summary("one weir on a third: canary requests by then", one_n, "");
}
