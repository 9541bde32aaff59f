//! Upstream failures and downstream timeouts.

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::*;

/// An address nothing listens on (bound, then released).
async fn dead_addr() -> std::net::SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    l.local_addr().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_down_is_502_and_no_route_is_404() {
    let stable = Upstream::start("stable", Mode::Named).await;
    let dead = dead_addr().await;
    let extra = "weight = 100\n[[routes]]\nname = \"only-api\"\nmatch = { host = \"api.example\", path_prefix = \"/api\" }\nstable = \"stable\"";
    let w = InProcess::start(&config_text(stable.addr, dead, extra, "")).await;
    let c = client();
    let (status, body) = get(&c, &w.url("/"), &[]).await;
    assert_eq!(status, 502, "{body}");
    assert!(body.contains("connect"), "{body}");
    // The proxy still serves other routes after the failure.
    assert_eq!(get(&c, &w.url("/api/x"), &[("host", "api.example")]).await, (StatusCode::OK, "stable".to_string()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hung_upstream_is_504_at_the_configured_timeout() {
    let hung = Upstream::start("hung", Mode::Hang).await;
    let stable = Upstream::start("stable", Mode::Named).await;
    let w = InProcess::start(&config_text(
        stable.addr,
        hung.addr,
        "weight = 100",
        "[timeouts]\nupstream_response = \"300ms\"",
    ))
    .await;
    let c = client();
    let t = Instant::now();
    let (status, _) = get(&c, &w.url("/"), &[]).await;
    let took = t.elapsed();
    assert_eq!(status, 504);
    // tokio's timers count whole milliseconds from the runtime's start, so
    // one may fire up to a millisecond before its duration has elapsed.
    assert!(took >= Duration::from_millis(298) && took < Duration::from_secs(3), "{took:?}");
    assert_eq!(hung.count(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_is_cut_at_header_read_while_others_are_served() {
    let stable = Upstream::start("stable", Mode::Named).await;
    let canary = Upstream::start("canary", Mode::Named).await;
    let w = InProcess::start(&config_text(
        stable.addr,
        canary.addr,
        "",
        "[timeouts]\nheader_read = \"500ms\"\nidle = \"30s\"",
    ))
    .await;
    let addr = w.weir.data_addr();

    let slow = tokio::spawn(async move {
        let mut s = TcpStream::connect(addr).await.unwrap();
        let t = Instant::now();
        s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n").await.unwrap();
        // Trickle a header byte every 100 ms; the head never completes.
        let mut buf = [0u8; 512];
        loop {
            tokio::select! {
                r = s.read(&mut buf) => {
                    // Closed (0 bytes or error): the proxy gave up on us.
                    if matches!(r, Ok(0) | Err(_)) { return t.elapsed(); }
                }
                _ = tokio::time::sleep(Duration::from_millis(100)) => {
                    if s.write_all(b"X-Slow: 1\r\n").await.is_err() { return t.elapsed(); }
                }
            }
            assert!(t.elapsed() < Duration::from_secs(5), "slowloris never cut");
        }
    });
    // Meanwhile, normal clients are served.
    let c = client();
    for _ in 0..20 {
        assert_eq!(get(&c, &w.url("/"), &[]).await.0, 200);
    }
    let cut_after = slow.await.unwrap();
    // Checked every header_read / 2: cut between 1x and 1.5x, plus scheduling.
    assert!(cut_after >= Duration::from_millis(500) && cut_after < Duration::from_millis(2000), "{cut_after:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_keep_alive_connections_are_closed_after_idle_but_not_before() {
    let stable = Upstream::start("stable", Mode::Named).await;
    let canary = Upstream::start("canary", Mode::Named).await;
    let w = InProcess::start(&config_text(
        stable.addr,
        canary.addr,
        "",
        "[timeouts]\nheader_read = \"200ms\"\nidle = \"1s\"",
    ))
    .await;
    let mut s = TcpStream::connect(w.weir.data_addr()).await.unwrap();
    let req = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n";
    let mut buf = vec![0u8; 4096];
    s.write_all(req).await.unwrap();
    let n = s.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    // Idle longer than header_read but shorter than idle: still open.
    tokio::time::sleep(Duration::from_millis(500)).await;
    s.write_all(req).await.unwrap();
    let n = s.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    // Then idle past `idle`: closed by the proxy.
    let t = Instant::now();
    let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await.unwrap().unwrap_or(0);
    assert_eq!(n, 0);
    assert!(t.elapsed() >= Duration::from_millis(900), "{:?}", t.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_past_the_limit_get_503() {
    let (_stable, _canary, w) = named_pair("", "[limits]\nmax_connections = 2").await;
    let addr = w.weir.data_addr();
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
        let mut buf = [0u8; 256];
        let n = s.read(&mut buf).await.unwrap();
        assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
        held.push(s);
    }
    let mut third = TcpStream::connect(addr).await.unwrap();
    let mut resp = Vec::new();
    third.read_to_end(&mut resp).await.unwrap();
    assert!(resp.starts_with(b"HTTP/1.1 503"), "{}", String::from_utf8_lossy(&resp));
    drop(held);
}
