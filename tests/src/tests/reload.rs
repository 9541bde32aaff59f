//! Hot reload under load: the file watcher, rename-on-save, bad files.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::AsyncReadExt;

use crate::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_under_load_loses_nothing_and_applies_within_a_second() {
    let stable = Upstream::start("stable", Mode::Named).await;
    let canary = Upstream::start("canary", Mode::Named).await;
    let base = config_text(stable.addr, canary.addr, "weight = 0", "");
    let w = InProcess::start(&base).await;
    let url = w.url("/");

    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let mut clients = Vec::new();
    for _ in 0..4 {
        let (stop, ok, failed, url) = (stop.clone(), ok.clone(), failed.clone(), url.clone());
        clients.push(tokio::spawn(async move {
            let c = client();
            while !stop.load(Ordering::Relaxed) {
                let req = Request::get(&url).body(Full::new(Bytes::new())).unwrap();
                match c.request(req).await {
                    Ok(r) if r.status() == 200 => {
                        let _ = r.into_body().collect().await;
                        ok.fetch_add(1, Ordering::Relaxed);
                    }
                    _ => {
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }));
    }

    let probe = client();
    let mut worst = Duration::ZERO;
    for i in 0..20 {
        let (weight, expect) = if i % 2 == 0 { (100, "canary") } else { (0, "stable") };
        let text = base.replace("weight = 0", &format!("weight = {weight}"));
        let t = Instant::now();
        if i % 3 == 0 {
            write_atomically(&w.path, &text).unwrap();
        } else {
            std::fs::write(&w.path, &text).unwrap();
        }
        loop {
            if get(&probe, &url, &[]).await.1 == expect {
                break;
            }
            assert!(t.elapsed() < Duration::from_secs(1), "weight {weight} not applied within 1 s (write {i})");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        worst = worst.max(t.elapsed());
        tokio::time::sleep(Duration::from_millis(250).saturating_sub(t.elapsed())).await;
    }
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.await.unwrap();
    }
    let (ok, failed) = (ok.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    eprintln!("reload under load: {ok} ok, {failed} failed, slowest apply {worst:?}");
    assert_eq!(failed, 0);
    assert!(ok > 100, "too little load: {ok}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_file_keeps_the_old_config_serving() {
    let stable = Upstream::start("stable", Mode::Named).await;
    let canary = Upstream::start("canary", Mode::Named).await;
    let base = config_text(stable.addr, canary.addr, "weight = 100", "");
    let w = InProcess::start(&base).await;
    let c = client();
    assert_eq!(get(&c, &w.url("/"), &[]).await.1, "canary");

    let broken = base.replace("canary = \"canary\"", "canary = \"canry\"");
    std::fs::write(&w.path, &broken).unwrap();
    let err = w.weir.reload().await.unwrap_err().to_string();
    assert!(err.contains("routes[0].canary"), "{err}");
    let syntax = base.replace("weight = 100", "weight = ");
    std::fs::write(&w.path, &syntax).unwrap();
    assert!(w.weir.reload().await.is_err());
    // Still serving the last good config.
    for _ in 0..10 {
        assert_eq!(get(&c, &w.url("/"), &[]).await, (StatusCode::OK, "canary".to_string()));
    }
    // A good file is picked up again.
    std::fs::write(&w.path, base.replace("weight = 100", "weight = 0")).unwrap();
    w.weir.reload().await.unwrap();
    assert_eq!(get(&c, &w.url("/"), &[]).await.1, "stable");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_flight_requests_finish_on_their_snapshot() {
    let stable = Upstream::start("stable", Mode::Delay(Duration::from_millis(400))).await;
    let canary = Upstream::start("canary", Mode::Named).await;
    let base = config_text(stable.addr, canary.addr, "weight = 0", "");
    let w = InProcess::start(&base).await;
    let url = w.url("/");
    let slow = tokio::spawn(async move { get(&client(), &url, &[]).await });
    while stable.count() == 0 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // Remove the stable backend's route target entirely.
    let other = base.replace(&stable.addr.to_string(), &canary.addr.to_string());
    std::fs::write(&w.path, other).unwrap();
    w.weir.reload().await.unwrap();
    assert_eq!(slow.await.unwrap(), (StatusCode::OK, "stable".to_string()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_watcher_reads_the_file_on_changes_only() {
    let stable = Upstream::start("stable", Mode::Named).await;
    let canary = Upstream::start("canary", Mode::Named).await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("weir.toml");
    let base = config_text(stable.addr, canary.addr, "weight = 0", "");
    std::fs::write(&path, &base).unwrap();
    let mut p = Process::spawn(&path);
    let pid = p.child.id();
    let read_calls = || -> u64 {
        let io = std::fs::read_to_string(format!("/proc/{pid}/io")).unwrap();
        io.lines().find_map(|l| l.strip_prefix("syscr: ")).unwrap().trim().parse().unwrap()
    };
    // The watch is set up before weir says it listens. Reading the file (as
    // `cat` would) is not a change, nor is weir's own read of it: it used to
    // take both for changes and re-read the file every 50 ms, for ever.
    let before = read_calls();
    std::fs::read(&path).unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let idle_reads = read_calls() - before;
    assert!(idle_reads < 10, "{idle_reads} read calls in a second while idle");
    // A write in place is still a change.
    std::fs::write(&path, base.replace("weight = 0", "weight = 100")).unwrap();
    p.wait_for_line("config reloaded", Duration::from_secs(5));
    assert_eq!(get(&client(), &format!("http://{}/", p.data_addr), &[]).await.1, "canary");
}

/// Context switches of every thread of `pid` so far: each wake-up of a
/// sleeping thread is one.
fn context_switches(pid: u32) -> u64 {
    let mut total = 0;
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let status = std::fs::read_to_string(task.unwrap().path().join("status")).unwrap_or_default();
        total += status
            .lines()
            .filter(|l| l.contains("ctxt_switches:"))
            .filter_map(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
            .sum::<u64>();
    }
    total
}

#[tokio::test]
async fn an_idle_weir_sleeps_and_a_reload_wakes_what_the_new_config_needs() {
    let stable = Upstream::start("stable", Mode::Named).await;
    // The canary address only accepts: a health check shows up as a connection.
    let canary = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("weir.toml");
    let base = config_text(stable.addr, canary.local_addr().unwrap(), "weight = 0", "");
    std::fs::write(&path, &base).unwrap();
    let mut p = Process::spawn(&path);
    let pid = p.child.id();
    // No health checks, no rollout: only the once-a-second ticker may wake
    // weir (the health, rollout and synthetic loops used to poll every
    // 50-100 ms: some 40 wake-ups a second, for nothing).
    let before = context_switches(pid);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let woken = context_switches(pid) - before;
    assert!(woken < 16, "{woken} context switches in 2 s while idle");
    // A reload that configures health checks starts them at once.
    let health = "[backends.canary]\naddrs = [";
    let with_health = base.replace(
        health,
        "[backends.canary]\nhealth = { path = \"/healthz\", interval = \"60s\", timeout = \"1s\" }\naddrs = [",
    );
    assert_ne!(with_health, base);
    std::fs::write(&path, with_health).unwrap();
    p.wait_for_line("config reloaded", Duration::from_secs(5));
    let (mut probe, _) = tokio::time::timeout(Duration::from_secs(5), canary.accept())
        .await
        .expect("no health check after the reload")
        .unwrap();
    let mut head = vec![0u8; 1024];
    let n = tokio::time::timeout(Duration::from_secs(5), probe.read(&mut head)).await.unwrap().unwrap();
    assert!(
        String::from_utf8_lossy(&head[..n]).starts_with("GET /healthz "),
        "{:?}",
        String::from_utf8_lossy(&head[..n])
    );
}
