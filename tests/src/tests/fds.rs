//! File descriptors: many downstream connections, opened and closed, leave
//! the real binary with the file descriptors it started with.

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::*;

/// Connections opened in all.
const TOTAL: usize = 2_000;
/// Connections held open at once (lowered when the fd limit is tight).
const HELD: usize = 500;
/// Connections connected concurrently.
const CONNECT_CHUNK: usize = 100;

/// The soft `RLIMIT_NOFILE` of this process (weir inherits it).
fn fd_limit() -> usize {
    let limits = std::fs::read_to_string("/proc/self/limits").unwrap();
    let line = limits.lines().find(|l| l.starts_with("Max open files")).unwrap();
    line.split_whitespace().nth(3).unwrap().parse().unwrap_or(usize::MAX)
}

/// Sends one keep-alive request and reads its response head; the connection
/// stays open.
async fn one_request(s: &mut TcpStream) {
    s.write_all(b"GET /fd HTTP/1.1\r\nhost: fds.test\r\n\r\n").await.unwrap();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 1024];
    let deadline = Instant::now() + Duration::from_secs(10);
    while !buf.windows(6).any(|w| w == b"stable") {
        let left = deadline.saturating_duration_since(Instant::now());
        let n = tokio::time::timeout(left, s.read(&mut chunk)).await.expect("response within 10 s").unwrap();
        assert!(n > 0, "closed before the response: {:?}", String::from_utf8_lossy(&buf));
        buf.extend_from_slice(&chunk[..n]);
    }
    assert!(buf.starts_with(b"HTTP/1.1 200 "), "{:?}", String::from_utf8_lossy(&buf));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closed_connections_give_back_their_file_descriptors() {
    let stable = Upstream::start("stable", Mode::Named).await;
    let canary = Upstream::start("canary", Mode::Named).await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("weir.toml");
    std::fs::write(&path, config_text(stable.addr, canary.addr, "weight = 0", "")).unwrap();
    let p = Process::spawn(&path);
    let url = format!("http://{}/", p.data_addr);
    // Warm up: the upstream pool now holds its keep-alive connection, which
    // the requests below (one at a time) reuse.
    assert_eq!(get(&client(), &url, &[]).await, (StatusCode::OK, "stable".to_string()));
    let baseline = p.fds().unwrap();

    // Both this process and weir hold one fd per connection.
    let held = HELD.min(fd_limit().saturating_sub(200) / 2).max(50);
    let mut opened = 0;
    let mut peak = 0;
    while opened < TOTAL {
        let batch = held.min(TOTAL - opened);
        let mut conns = Vec::with_capacity(batch);
        for start in (0..batch).step_by(CONNECT_CHUNK) {
            let n = CONNECT_CHUNK.min(batch - start);
            let chunk = futures_util::future::join_all((0..n).map(|_| TcpStream::connect(p.data_addr))).await;
            conns.extend(chunk.into_iter().map(Result::unwrap));
        }
        for (i, s) in conns.iter_mut().enumerate() {
            match i % 4 {
                // A whole request and its response; the connection stays open.
                0 => one_request(s).await,
                // Half a request head, never finished.
                1 => s.write_all(b"GET /fd HTTP/1.1\r\nhost: fd").await.unwrap(),
                // Nothing at all (2), or a request on a connection closed
                // right after, without reading the response (3).
                2 => {}
                _ => s.write_all(b"GET /fd HTTP/1.1\r\nhost: fds.test\r\n\r\n").await.unwrap(),
            }
        }
        // weir holds them: the measurement sees connections at all.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let n = p.fds().unwrap();
            peak = peak.max(n);
            if n >= baseline + batch * 9 / 10 || Instant::now() > deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(
            peak >= baseline + batch * 9 / 10,
            "weir holds {peak} fds with {batch} connections open (baseline {baseline})"
        );
        opened += batch;
        drop(conns);
    }

    // Every downstream fd goes back, without waiting for the idle timeout.
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut now = p.fds().unwrap();
    while now > baseline + 2 {
        assert!(
            Instant::now() < deadline,
            "weir still holds {now} fds 15 s after {TOTAL} connections closed (baseline {baseline}, peak {peak})"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
        now = p.fds().unwrap();
    }

    // And it still serves, on a fresh connection.
    assert_eq!(get(&client(), &url, &[]).await, (StatusCode::OK, "stable".to_string()));
    let mut s = TcpStream::connect(p.data_addr).await.unwrap();
    one_request(&mut s).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pooled_connections_the_upstream_closed_give_back_their_descriptors_within_seconds() {
    // Slow answers, so that concurrent requests each take a connection.
    let stable = Upstream::start("stable", Mode::Delay(Duration::from_millis(300))).await;
    let canary = Upstream::start("canary", Mode::Named).await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("weir.toml");
    // upstream_idle far longer than the wait below: only noticing the
    // upstream's close can give the descriptors back in time.
    std::fs::write(&path, config_text(stable.addr, canary.addr, "weight = 0", "[timeouts]\nupstream_idle = \"5m\""))
        .unwrap();
    let p = Process::spawn(&path);
    let url = format!("http://{}/", p.data_addr);
    assert_eq!(get(&client(), &url, &[]).await.0, StatusCode::OK);
    let baseline = p.fds().unwrap();

    // 40 requests at once: weir opens about 40 upstream connections, and
    // pools them when the answers are in.
    const BURST: usize = 40;
    let requests: Vec<_> = (0..BURST)
        .map(|_| {
            let addr = p.data_addr;
            tokio::spawn(async move {
                let mut s = TcpStream::connect(addr).await.unwrap();
                s.write_all(b"GET /fd HTTP/1.1\r\nhost: fds.test\r\nconnection: close\r\n\r\n").await.unwrap();
                let mut out = Vec::new();
                s.read_to_end(&mut out).await.unwrap();
                assert!(out.starts_with(b"HTTP/1.1 200 "), "{:?}", String::from_utf8_lossy(&out));
            })
        })
        .collect();
    for r in requests {
        r.await.unwrap();
    }
    let pooled = p.fds().unwrap();
    assert!(pooled >= baseline + BURST / 2, "{pooled} fds after the burst (baseline {baseline})");

    // The upstream restarts: it closes every idle connection. weir's pooled
    // ends are in CLOSE_WAIT until weir notices.
    stable.stop(Stop::Restart).await;
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut now = p.fds().unwrap();
    while now > baseline {
        assert!(
            Instant::now() < deadline,
            "weir still holds {now} fds 5 s after the upstream closed its {pooled} - {baseline} idle connections"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
        now = p.fds().unwrap();
    }
}
