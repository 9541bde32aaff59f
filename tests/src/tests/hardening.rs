//! Edge hardening: malformed framing never reaches the upstream, limits and
//! timeouts (414, 408, in-flight 503), and upstream health (outlier
//! ejection, retry of connect failures, active health checks).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::*;

/// Sends raw bytes, returns everything the proxy answers until it closes.
async fn raw(addr: SocketAddr, bytes: &[u8]) -> String {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(bytes).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out))
        .await
        .expect("the proxy must close the connection");
    String::from_utf8_lossy(&out).into_owned()
}

/// A raw TCP upstream: records every byte it receives, answers each
/// connection with `answer` (if any) once it has read a request head, and
/// counts connections.
struct RawUpstream {
    addr: SocketAddr,
    bytes: Arc<Mutex<Vec<u8>>>,
    conns: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for RawUpstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl RawUpstream {
    async fn start(answer: Option<&'static [u8]>) -> RawUpstream {
        Self::spawn(answer, 0, Duration::from_millis(300)).await
    }

    /// As `start` with no answer, but a connection is closed only after
    /// `idle` without a byte from weir: an upstream more patient than weir's
    /// own timeouts, so that what the test sees is weir's doing.
    async fn patient(idle: Duration) -> RawUpstream {
        Self::spawn(None, 0, idle).await
    }

    /// As `start`, but the first `drop_first` connections are closed as
    /// soon as a request head arrived, without an answer (an upstream
    /// restarting under a request just written).
    async fn start_dropping_first(answer: Option<&'static [u8]>, drop_first: usize) -> RawUpstream {
        Self::spawn(answer, drop_first, Duration::from_millis(300)).await
    }

    async fn spawn(answer: Option<&'static [u8]>, drop_first: usize, idle: Duration) -> RawUpstream {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let bytes = Arc::new(Mutex::new(Vec::new()));
        let conns = Arc::new(AtomicUsize::new(0));
        let (b, c) = (bytes.clone(), conns.clone());
        let task = tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                let nth = c.fetch_add(1, Ordering::SeqCst);
                let b = b.clone();
                let answer = if nth < drop_first { None } else { answer };
                let drop_it = nth < drop_first;
                tokio::spawn(async move {
                    let mut buf = [0u8; 4096];
                    let mut seen = Vec::new();
                    while let Ok(Ok(n)) = tokio::time::timeout(idle, s.read(&mut buf)).await {
                        if n == 0 {
                            break;
                        }
                        seen.extend_from_slice(&buf[..n]);
                        b.lock().unwrap().extend_from_slice(&buf[..n]);
                        let head_done = seen.windows(4).any(|w| w == b"\r\n\r\n");
                        if head_done && drop_it {
                            break;
                        }
                        if let (Some(a), true) = (answer, head_done) {
                            let _ = s.write_all(a).await;
                            break;
                        }
                    }
                });
            }
        });
        RawUpstream { addr, bytes, conns, task }
    }

    fn received(&self) -> String {
        String::from_utf8_lossy(&self.bytes.lock().unwrap()).into_owned()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_framing_and_headers_are_400_and_nothing_reaches_the_upstream() {
    let up = RawUpstream::start(Some(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")).await;
    let w = InProcess::start(&config_text(up.addr, up.addr, "", "")).await;
    let cases: &[(&str, &[u8])] = &[
        ("letters in Content-Length", b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n"),
        ("empty Content-Length", b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: \r\n\r\n"),
        ("signed Content-Length", b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: +5\r\n\r\nhello"),
        ("negative Content-Length", b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\nhello"),
        ("hex Content-Length", b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 0x5\r\n\r\nhello"),
        ("differing Content-Length", b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!"),
        ("Content-Length list", b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5, 6\r\n\r\nhello!"),
        ("xchunked", b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: xchunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"),
        ("chunked, identity", b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n"),
        ("TE not ending in chunked", b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n"),
        ("TE with a leading space line", b"POST / HTTP/1.1\r\nHost: x\r\n Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
        ("TE with a vertical tab", b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding:\x0bchunked\r\n\r\n0\r\n\r\n"),
        ("TE on HTTP/1.0", b"POST / HTTP/1.0\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
        ("chunk size 0x", b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0x5\r\nhello\r\n0\r\n\r\n"),
        ("chunk size _", b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n_5\r\nhello\r\n0\r\n\r\n"),
        ("chunk size +", b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n+5\r\nhello\r\n0\r\n\r\n"),
        ("empty chunk size", b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n\r\nhello\r\n0\r\n\r\n"),
        (
            "chunk size overflow",
            b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nfffffffffffffffffffff\r\nhello\r\n0\r\n\r\n",
        ),
        ("bare LF in chunk line", b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\nhello\r\n0\r\n\r\n"),
        ("bare CR in chunk line", b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\rhello\r\n0\r\n\r\n"),
        ("whitespace before colon", b"GET / HTTP/1.1\r\nHost: x\r\nX-A : b\r\n\r\n"),
        ("obs-fold", b"GET / HTTP/1.1\r\nHost: x\r\nX-A: b\r\n c\r\n\r\n"),
        ("NUL in a value", b"GET / HTTP/1.1\r\nHost: x\r\nX-A: b\x00c\r\n\r\n"),
        ("CR in a value", b"GET / HTTP/1.1\r\nHost: x\r\nX-A: b\rc\r\n\r\n"),
        ("empty header name", b"GET / HTTP/1.1\r\nHost: x\r\n: b\r\n\r\n"),
        ("missing Host", b"GET / HTTP/1.1\r\nX-A: b\r\n\r\n"),
        ("two Hosts", b"GET / HTTP/1.1\r\nHost: x\r\nHost: y\r\n\r\n"),
    ];
    for (what, bytes) in cases {
        let resp = raw(w.weir.data_addr(), bytes).await;
        assert!(resp.starts_with("HTTP/1.1 400"), "{what}: {resp:?}");
        let answers =
            resp.match_indices("HTTP/1.1 ").filter(|(i, _)| resp[i + 9..].starts_with(|c: char| c.is_ascii_digit()));
        assert_eq!(answers.count(), 1, "{what}: one answer, then close: {resp:?}");
        assert_eq!(up.received(), "", "{what}: bytes reached the upstream");
    }
    // Still serving.
    let resp = raw(w.weir.data_addr(), b"GET /fine HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await;
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    assert!(up.received().starts_with("GET /fine HTTP/1.1\r\n"), "{}", up.received());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_request_line_is_414_and_the_limit_is_configurable() {
    let (stable, _c, w) = named_pair("", "[limits]\nmax_request_line = 1024").await;
    let long = format!("GET /{} HTTP/1.1\r\nHost: x\r\n\r\n", "a".repeat(2000));
    let resp = raw(w.weir.data_addr(), long.as_bytes()).await;
    assert!(resp.starts_with("HTTP/1.1 414"), "{resp}");
    // Also when the line never ends.
    let resp = raw(w.weir.data_addr(), format!("GET /{}", "b".repeat(3000)).as_bytes()).await;
    assert!(resp.starts_with("HTTP/1.1 414"), "{resp}");
    assert_eq!(stable.count(), 0);
    // Under the limit it is served; on the same kept-alive connection, the
    // next request's line is measured again.
    let mut s = TcpStream::connect(w.weir.data_addr()).await.unwrap();
    s.write_all(format!("GET /{} HTTP/1.1\r\nHost: x\r\n\r\n", "a".repeat(900)).as_bytes()).await.unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    while !got.ends_with(b"stable") {
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await.unwrap().unwrap();
        assert!(n > 0, "closed early: {}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&buf[..n]);
    }
    assert!(got.starts_with(b"HTTP/1.1 200"));
    s.write_all(long.as_bytes()).await.unwrap();
    let mut rest = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut rest)).await.unwrap().unwrap();
    assert!(rest.starts_with(b"HTTP/1.1 414"), "{}", String::from_utf8_lossy(&rest));
    assert_eq!(stable.count(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_request_body_is_408_and_not_an_upstream_error() {
    // The upstream waits longer than weir's body_read: with the same 300 ms
    // it could close first, and weir would rightly answer 502.
    let up = RawUpstream::patient(Duration::from_secs(10)).await;
    let w = InProcess::start(&config_text(up.addr, up.addr, "", "[timeouts]\nbody_read = \"300ms\"")).await;
    for head in [
        "POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n0123456789",
        "POST /upload HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n",
    ] {
        let started = Instant::now();
        let resp = raw(w.weir.data_addr(), head.as_bytes()).await;
        assert!(resp.starts_with("HTTP/1.1 408"), "{resp}");
        assert!(resp.to_ascii_lowercase().contains("connection: close"), "{resp}");
        let took = started.elapsed();
        assert!(took >= Duration::from_millis(250) && took < Duration::from_secs(4), "{took:?}");
    }
    let (_, text) = get(&client(), &format!("http://{}/metrics", w.weir.admin_addr()), &[]).await;
    let m = parse_prometheus(&text);
    let errors: f64 = ["connect", "reset", "timeout", "protocol"]
        .iter()
        .map(|k| sample(&m, "weir_upstream_errors_total", &[("route", "web"), ("backend", "stable"), ("kind", k)]))
        .sum();
    assert_eq!(errors, 0.0, "a slow client is not the upstream's fault");
    assert_eq!(
        sample(&m, "weir_requests_total", &[("route", "web"), ("backend", "stable"), ("code_class", "4xx")]),
        2.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_the_in_flight_limit_requests_get_503_at_once() {
    let slow = Upstream::start("slow", Mode::Delay(Duration::from_millis(1500))).await;
    let w = InProcess::start(&config_text(slow.addr, slow.addr, "", "[limits]\nmax_requests_in_flight = 2")).await;
    let url = w.url("/");
    let held: Vec<_> = (0..2)
        .map(|_| {
            let url = url.clone();
            tokio::spawn(async move { get(&client(), &url, &[]).await.0 })
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(5);
    while slow.count() < 2 {
        assert!(Instant::now() < deadline, "the two held requests never arrived");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let started = Instant::now();
    let resp = client().request(Request::get(&url).body(Full::new(Bytes::new())).unwrap()).await.unwrap();
    assert_eq!(resp.status(), 503);
    assert_eq!(resp.headers()["retry-after"], "1");
    assert!(started.elapsed() < Duration::from_millis(500), "refused at once, not queued");
    for h in held {
        assert_eq!(h.await.unwrap(), 200);
    }
    assert_eq!(get(&client(), &url, &[]).await.0, 200, "served again once under the limit");
}

async fn endpoints(w: &InProcess, backend: &str) -> Vec<serde_json::Value> {
    let (_, body) = get(&client(), &format!("http://{}/api/v1/backends", w.weir.admin_addr()), &[]).await;
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    v["backends"].as_array().unwrap().iter().find(|b| b["name"] == backend).unwrap()["endpoints"]
        .as_array()
        .unwrap()
        .clone()
}

fn two_address_config(a: SocketAddr, b: SocketAddr, canary: SocketAddr, backend_extra: &str) -> String {
    config_text(a, canary, "", "").replacen(
        &format!("addrs = [\"{a}\"]"),
        &format!("addrs = [\"{a}\", \"{b}\"]\n{backend_extra}"),
        1,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_failures_are_retried_on_another_address_and_the_dead_one_is_ejected() {
    let live = Upstream::start("live", Mode::Named).await;
    let dead = TcpListener::bind("127.0.0.1:0").await.unwrap().local_addr().unwrap();
    let w = InProcess::start(&two_address_config(
        live.addr,
        dead,
        live.addr,
        "outlier = { consecutive_failures = 3, base_ejection = \"30s\", max_ejection_percent = 50 }",
    ))
    .await;
    let c = client();
    for i in 0..40 {
        assert_eq!(get(&c, &w.url("/"), &[]).await, (StatusCode::OK, "live".to_string()), "request {i}");
    }
    let eps = endpoints(&w, "stable").await;
    let dead_ep = eps.iter().find(|e| e["addr"] == dead.to_string()).unwrap();
    assert_eq!(dead_ep["ejected"], true, "{eps:?}");
    assert_eq!(live.count(), 40);
    // A request with a body is never sent twice: with only dead addresses
    // in play it fails (the retry needs a body-less request).
    let dead2 = TcpListener::bind("127.0.0.1:0").await.unwrap().local_addr().unwrap();
    let w2 = InProcess::start(&two_address_config(dead, dead2, live.addr, "outlier = false")).await;
    let req = Request::post(w2.url("/")).body(Full::new(Bytes::from_static(b"payload"))).unwrap();
    assert_eq!(c.request(req).await.unwrap().status(), 502);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_whose_body_was_sent_is_not_retried() {
    // Both addresses read the request and close without answering.
    let a = RawUpstream::start(None).await;
    let b = RawUpstream::start(None).await;
    let canary = Upstream::start("canary", Mode::Named).await;
    let w = InProcess::start(&two_address_config(a.addr, b.addr, canary.addr, "outlier = false")).await;
    let req = Request::post(w.url("/")).body(Full::new(Bytes::from_static(b"pay once"))).unwrap();
    let status = client().request(req).await.unwrap().status();
    assert!(status == 502 || status == 504, "{status}");
    let total = a.conns.load(Ordering::SeqCst) + b.conns.load(Ordering::SeqCst);
    assert_eq!(total, 1, "the request reached an upstream exactly once");
    assert_eq!(format!("{}{}", a.received(), b.received()).matches("pay once").count(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn active_health_checks_take_addresses_out_and_an_empty_backend_fails_fast() {
    let good = Upstream::start("good", Mode::Named).await;
    let sick = Upstream::start("sick", Mode::Status(503)).await;
    let health =
        "health = { path = \"/healthz\", interval = \"100ms\", timeout = \"80ms\", unhealthy = 2, healthy = 1 }";
    let w = InProcess::start(&two_address_config(good.addr, sick.addr, good.addr, health)).await;
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let eps = endpoints(&w, "stable").await;
        if eps.iter().any(|e| e["addr"] == sick.addr.to_string() && e["down"] == true) {
            break;
        }
        assert!(Instant::now() < deadline, "the sick address was never marked down: {eps:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(sick.seen.lock().unwrap().iter().all(|s| s.path == "/healthz"));
    let c = client();
    for _ in 0..20 {
        assert_eq!(get(&c, &w.url("/"), &[]).await, (StatusCode::OK, "good".to_string()));
    }

    // A backend whose only address fails its checks answers 503 at once,
    // and the failures are measured (the gate engine sees them).
    let sick_only = config_text(sick.addr, good.addr, "", "").replacen(
        &format!("addrs = [\"{}\"]", sick.addr),
        &format!("addrs = [\"{}\"]\n{health}", sick.addr),
        1,
    );
    let w = InProcess::start(&sick_only).await;
    let deadline = Instant::now() + Duration::from_secs(5);
    while endpoints(&w, "stable").await[0]["down"] != true {
        assert!(Instant::now() < deadline, "never marked down");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let before = sick.count();
    let started = Instant::now();
    let (status, body) = get(&c, &w.url("/"), &[]).await;
    assert_eq!(status, 503, "{body}");
    assert!(started.elapsed() < Duration::from_millis(500));
    let user_requests = sick.seen.lock().unwrap()[before..].iter().filter(|s| s.path != "/healthz").count();
    assert_eq!(user_requests, 0);
    let (_, text) = get(&c, &format!("http://{}/metrics", w.weir.admin_addr()), &[]).await;
    let n = sample(
        &parse_prometheus(&text),
        "weir_upstream_errors_total",
        &[("route", "web"), ("backend", "stable"), ("kind", "unavailable")],
    );
    assert_eq!(n, 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unread_request_body_is_never_read_as_the_next_request() {
    // weir answers /abort itself (fault injection) without reading the body,
    // whose bytes look like a second request.
    let stable = Upstream::start("stable", Mode::Named).await;
    let extra = format!(
        "[[routes]]\nname = \"abort\"\nmatch = {{ path_prefix = \"/abort\" }}\nstable = \"gone\"\n[backends.gone]\naddrs = [\"{}\"]\nfault = {{ abort_status = 503 }}",
        stable.addr
    );
    let w = InProcess::start(&config_text(stable.addr, stable.addr, &extra, "")).await;
    let smuggled = "GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n";
    let req = format!("POST /abort HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n{smuggled}", smuggled.len());
    let mut s = TcpStream::connect(w.weir.data_addr()).await.unwrap();
    s.write_all(req.as_bytes()).await.unwrap();
    let mut got = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(2), s.read_to_end(&mut got)).await;
    let got = String::from_utf8_lossy(&got);
    assert!(got.starts_with("HTTP/1.1 503"), "{got}");
    assert_eq!(got.matches("HTTP/1.1 ").count(), 1, "{got}");
    assert!(stable.seen.lock().unwrap().iter().all(|s| !s.path.contains("smuggled")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_upstream_response_is_502_and_its_connection_is_discarded() {
    let bad = RawUpstream::start(Some(b"HTTP/1.1 200 OK\r\ncontent-length: 2x\r\n\r\nok")).await;
    let w = InProcess::start(&config_text(bad.addr, bad.addr, "", "")).await;
    let c = client();
    for _ in 0..2 {
        let (status, body) = get(&c, &w.url("/"), &[]).await;
        assert_eq!(status, 502, "{body}");
        assert!(body.contains("invalid upstream response"), "{body}");
    }
    assert_eq!(bad.conns.load(Ordering::SeqCst), 2, "the bad connection was not reused");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reset_under_an_idempotent_request_is_retried_once_and_counted() {
    let up = RawUpstream::start_dropping_first(Some(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"), 1).await;
    let w = InProcess::start(&config_text(up.addr, up.addr, "", "")).await;
    let (status, body) = get(&client(), &w.url("/"), &[]).await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "ok"));
    assert_eq!(up.conns.load(Ordering::SeqCst), 2);
    let (_, text) = get(&client(), &format!("http://{}/metrics", w.weir.admin_addr()), &[]).await;
    let m = parse_prometheus(&text);
    let labels = [("route", "web"), ("backend", "stable"), ("kind", "reset")];
    assert_eq!(sample(&m, "weir_upstream_retries_total", &labels), 1.0);
    assert_eq!(sample(&m, "weir_upstream_errors_total", &labels), 0.0);

    // A POST is not idempotent: the reset is the answer.
    let up = RawUpstream::start_dropping_first(Some(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"), 1).await;
    let w = InProcess::start(&config_text(up.addr, up.addr, "", "")).await;
    let req = Request::post(w.url("/")).body(Full::new(Bytes::new())).unwrap();
    assert_eq!(client().request(req).await.unwrap().status(), 502);
    assert_eq!(up.conns.load(Ordering::SeqCst), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_cut_short_by_the_client_is_the_clients_fault() {
    let a = Upstream::start("a", Mode::CountBody).await;
    let b = Upstream::start("b", Mode::CountBody).await;
    let w = InProcess::start(&two_address_config(a.addr, b.addr, a.addr, "")).await;
    for _ in 0..12 {
        let mut s = TcpStream::connect(w.weir.data_addr()).await.unwrap();
        s.write_all(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabc").await.unwrap();
        s.shutdown().await.unwrap();
        let mut got = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut got)).await.unwrap();
        let got = String::from_utf8_lossy(&got);
        assert!(got.is_empty() || got.starts_with("HTTP/1.1 400"), "{got}");
    }
    // Not an upstream error, and no healthy address was ejected.
    let (_, text) = get(&client(), &format!("http://{}/metrics", w.weir.admin_addr()), &[]).await;
    let m = parse_prometheus(&text);
    for kind in ["reset", "protocol", "connect"] {
        let n = sample(&m, "weir_upstream_errors_total", &[("route", "web"), ("backend", "stable"), ("kind", kind)]);
        assert_eq!(n, 0.0, "{kind}");
    }
    assert!(endpoints(&w, "stable").await.iter().all(|e| e["ejected"] == false));
    assert_eq!(get(&client(), &w.url("/"), &[]).await.0, 200);
}
