//! weir's own HTTP/1.1 paths (`server/h1.rs`, `upstream/h1.rs`) against raw
//! sockets on both sides: every response framing the client has to relay,
//! connection reuse and expiry upstream, pipelining, `Connection: close`,
//! and the hand-over to hyper in the middle of a connection.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

use http::HeaderValue;

use crate::*;

async fn metrics_text(w: &InProcess) -> String {
    let (status, body) = get(&client(), &format!("http://{}/metrics", w.weir.admin_addr()), &[]).await;
    assert_eq!(status, 200);
    body
}

async fn admin_json(w: &InProcess, path: &str) -> serde_json::Value {
    let (status, body) = get(&client(), &format!("http://{}{path}", w.weir.admin_addr()), &[]).await;
    assert_eq!(status, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

/// A scripted upstream: answers each request head by its path, on as many
/// requests per connection as the script allows; counts connections and
/// reports each connection's end on `closed`. `/conn` answers with the
/// connection's number (from 0, in order of accepting), `/slow` answers
/// as the script does after 100 ms.
struct Scripted {
    addr: SocketAddr,
    conns: Arc<AtomicUsize>,
    closed: mpsc::UnboundedReceiver<()>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Scripted {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The answer to `head`, and whether to close after it.
fn script(head: &str) -> (&'static [u8], bool) {
    let path = head.split_whitespace().nth(1).unwrap_or("/");
    if head.starts_with("HEAD ") {
        return (b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n", false);
    }
    match path {
        "/chunked" => (
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\nconnection: keep-alive\r\n\r\n\
5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nx-trailer: 1\r\n\r\n",
            false,
        ),
        "/early" => {
            (b"HTTP/1.1 103 Early Hints\r\nlink: </a>\r\n\r\nHTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok", false)
        }
        "/empty" => (b"HTTP/1.1 204 No Content\r\nx-a: 1\r\n\r\n", false),
        // Not an HTTP status (RFC 9110 §15: 100–599 only).
        "/status-803" => (b"HTTP/1.1 803 \r\ncontent-length: 2\r\n\r\nok", false),
        // 3 bytes of 10, then nothing (the connection stays open).
        "/stall" => (b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nabc", false),
        "/until-close" => (b"HTTP/1.1 200 OK\r\n\r\nuntil close", true),
        "/bad-chunk" => (b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\nzz\r\n", true),
        // Hop-by-hop fields between the others, names in any case.
        "/hop" => (
            b"HTTP/1.1 200 OK\r\nServer: Scripted\r\nConnection: keep-alive\r\nKeep-Alive: timeout=5\r\n\
X-Mixed-Case: Kept, as sent\r\nPROXY-CONNECTION: keep-alive\r\nUpgrade: h2c\r\nTrailer: X-T\r\nTE: trailers\r\n\
Content-Length: 5\r\nDate: Thu, 01 Jan 2026 00:00:00 GMT\r\nX-Last:  spaced \r\n\r\nhello",
            false,
        ),
        // A field named by Connection is hop-by-hop too.
        "/hop-named" => (
            b"HTTP/1.1 200 OK\r\nConnection: X-Hop, keep-alive\r\nX-Hop: secret\r\nX-Other: 1\r\ncontent-length: 5\r\n\r\nhello",
            false,
        ),
        // Kept and dropped fields alternating more often than the runs a
        // passed-through head holds; chunked overrides the length.
        "/hop-many" => (
            b"HTTP/1.1 200 OK\r\nX-1: a\r\nTE: x\r\nX-2: b\r\nTE: x\r\nX-3: c\r\nTE: x\r\nX-4: d\r\nTE: x\r\n\
X-5: e\r\nContent-Length: 99\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
            false,
        ),
        _ => (b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\nconnection: keep-alive\r\n\r\nhello", false),
    }
}

impl Scripted {
    async fn start() -> Scripted {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let conns = Arc::new(AtomicUsize::new(0));
        let (tx, closed) = mpsc::unbounded_channel();
        let c = conns.clone();
        let task = tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                let id = c.fetch_add(1, Ordering::SeqCst);
                let tx = tx.clone();
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 4096];
                    'conn: loop {
                        while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                            let head = String::from_utf8_lossy(&buf[..end]).into_owned();
                            buf.drain(..end + 4);
                            let (answer, close) = script(&head);
                            let answer = match head.split_whitespace().nth(1) {
                                Some("/conn") => {
                                    let id = id.to_string();
                                    format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{id}", id.len()).into_bytes()
                                }
                                Some("/slow") => {
                                    tokio::time::sleep(Duration::from_millis(100)).await;
                                    answer.to_vec()
                                }
                                // Half a body, a pause of 700 ms, the rest.
                                Some("/pause") => {
                                    let half = b"HTTP/1.1 200 OK\r\ncontent-length: 6\r\n\r\nabc";
                                    if s.write_all(half).await.is_err() {
                                        break 'conn;
                                    }
                                    tokio::time::sleep(Duration::from_millis(700)).await;
                                    b"def".to_vec()
                                }
                                _ => answer.to_vec(),
                            };
                            if s.write_all(&answer).await.is_err() || close {
                                break 'conn;
                            }
                        }
                        match s.read(&mut chunk).await {
                            Ok(0) | Err(_) => break,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    }
                    drop(s);
                    let _ = tx.send(());
                });
            }
        });
        Scripted { addr, conns, closed, task }
    }
}

async fn weir_before(up: &Scripted, top_extra: &str) -> InProcess {
    InProcess::start(&config_text(up.addr, up.addr, "weight = 0", top_extra)).await
}

/// Reads one HTTP/1.1 response (head and a content-length or chunked body)
/// from `s`, with `pending` holding bytes already read.
async fn read_response(s: &mut TcpStream, pending: &mut Vec<u8>) -> (String, Vec<u8>) {
    let mut chunk = [0u8; 4096];
    let end = loop {
        if let Some(end) = pending.windows(4).position(|w| w == b"\r\n\r\n") {
            break end;
        }
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut chunk)).await.unwrap().unwrap();
        assert!(n > 0, "closed before a response head: {:?}", String::from_utf8_lossy(pending));
        pending.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&pending[..end]).to_lowercase();
    pending.drain(..end + 4);
    let len = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length: "))
        .map(|v| v.trim().parse::<usize>().unwrap())
        .unwrap_or(0);
    while pending.len() < len {
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut chunk)).await.unwrap().unwrap();
        assert!(n > 0);
        pending.extend_from_slice(&chunk[..n]);
    }
    let body = pending.drain(..len).collect();
    (head, body)
}

#[tokio::test]
async fn every_response_framing_is_relayed_and_one_upstream_connection_serves_them() {
    let mut up = Scripted::start().await;
    let w = weir_before(&up, "").await;
    let c = client();
    for (path, want) in [("/cl", "hello"), ("/chunked", "hello world"), ("/early", "ok"), ("/cl", "hello")] {
        let (status, body) = get(&c, &w.url(path), &[]).await;
        assert_eq!((status.as_u16(), body.as_str()), (200, want), "{path}");
    }
    let resp = c.request(Request::head(w.url("/cl")).body(Full::new(Bytes::new())).unwrap()).await.unwrap();
    assert_eq!(resp.headers()["content-length"], "5", "HEAD keeps the length and sends no body");
    let resp = c.request(Request::get(w.url("/empty")).body(Full::new(Bytes::new())).unwrap()).await.unwrap();
    assert_eq!((resp.status().as_u16(), &resp.headers()["x-a"]), (204, &HeaderValue::from_static("1")));
    assert_eq!(up.conns.load(Ordering::SeqCst), 1, "every response was read to its end: one connection reused");

    // A body delimited by the close: relayed whole, and the connection is
    // not reused (the next request opens another).
    let (status, body) = get(&c, &w.url("/until-close"), &[]).await;
    assert_eq!((status.as_u16(), body.as_str()), (200, "until close"));
    up.closed.recv().await.unwrap();
    let (_, body) = get(&c, &w.url("/cl"), &[]).await;
    assert_eq!(body, "hello");
    assert_eq!(up.conns.load(Ordering::SeqCst), 2);

    // A malformed chunk mid-body: the client's response is cut, and the
    // request counts as an upstream reset.
    let resp = c.request(Request::get(w.url("/bad-chunk")).body(Full::new(Bytes::new())).unwrap()).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert!(resp.into_body().collect().await.is_err(), "a broken body must not look complete");
    let m = parse_prometheus(&metrics_text(&w).await);
    let resets =
        sample(&m, "weir_upstream_errors_total", &[("route", "web"), ("backend", "stable"), ("kind", "reset")]);
    assert_eq!(resets, 1.0);
}

#[tokio::test]
async fn idle_upstream_connections_are_closed_after_upstream_idle() {
    let mut up = Scripted::start().await;
    let w = weir_before(&up, "[timeouts]\nupstream_idle = \"1s\"").await;
    let c = client();
    let (_, body) = get(&c, &w.url("/cl"), &[]).await;
    assert_eq!(body, "hello");
    let idle = |v: &serde_json::Value| v.to_string().contains("\"idle_connections\":1");
    let backends = admin_json(&w, "/api/v1/backends").await;
    assert!(idle(&backends), "{backends}");
    // The sweeper runs every second: the upstream sees the close within
    // upstream_idle + 1 s (+ slack).
    tokio::time::timeout(Duration::from_secs(5), up.closed.recv()).await.expect("idle connection never closed");
    let backends = admin_json(&w, "/api/v1/backends").await;
    assert!(!idle(&backends), "{backends}");
    let (_, body) = get(&c, &w.url("/cl"), &[]).await;
    assert_eq!(body, "hello");
    assert_eq!(up.conns.load(Ordering::SeqCst), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trickle_after_a_burst_reuses_one_upstream_connection_and_the_rest_idle_out() {
    let mut up = Scripted::start().await;
    let w = weir_before(&up, "[timeouts]\nupstream_idle = \"2s\"").await;
    // A burst: 8 requests at once, each holding its upstream connection for
    // 100 ms, so weir opens several (8 unless a request was late).
    let burst: Vec<_> = (0..8)
        .map(|_| {
            let url = w.url("/slow");
            tokio::spawn(async move { get(&client(), &url, &[]).await })
        })
        .collect();
    for b in burst {
        assert_eq!(b.await.unwrap().1, "hello");
    }
    let opened = up.conns.load(Ordering::SeqCst);
    assert!(opened >= 2, "the burst opened {opened} connection(s)");
    // Then one request at a time, paced: the connection returned last
    // serves them all (not each in turn), so the others stay idle and the
    // sweeper closes them.
    let stop = Arc::new(tokio::sync::Notify::new());
    let trickle = {
        let (url, stop) = (w.url("/conn"), stop.clone());
        tokio::spawn(async move {
            let c = client();
            let mut served = Vec::new();
            loop {
                served.push(get(&c, &url, &[]).await.1);
                tokio::select! {
                    _ = stop.notified() => return served,
                    _ = tokio::time::sleep(Duration::from_millis(20)) => {}
                }
            }
        })
    };
    for i in 1..opened {
        tokio::time::timeout(Duration::from_secs(10), up.closed.recv())
            .await
            .unwrap_or_else(|_| panic!("only {} of the {} spare connections closed", i - 1, opened - 1));
    }
    stop.notify_one();
    let served = trickle.await.unwrap();
    assert!(served.len() >= 10, "{served:?}");
    assert!(served.iter().all(|id| *id == served[0]), "the trickle moved between connections: {served:?}");
    assert_eq!(up.conns.load(Ordering::SeqCst), opened, "no connection was opened for the trickle");
    let backends = admin_json(&w, "/api/v1/backends").await;
    assert!(backends.to_string().contains("\"idle_connections\":1"), "{backends}");
}

/// The whole answer to one request sent with `version`, the connection
/// closed after it.
async fn exchange(addr: SocketAddr, path: &str, version: &str) -> String {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let req = format!("GET {path} {version}\r\nHost: x\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out)).await.unwrap().unwrap();
    String::from_utf8(out).unwrap()
}

#[tokio::test]
async fn hop_by_hop_response_fields_never_reach_the_client_and_the_others_pass_as_sent() {
    let up = Scripted::start().await;
    let w = weir_before(&up, "").await;
    // HTTP/1.1 is served by weir's own loop, which writes the fields as the
    // upstream sent them; HTTP/1.0 by hyper's, from a header map.
    for version in ["HTTP/1.1", "HTTP/1.0"] {
        let resp = exchange(w.weir.data_addr(), "/hop", version).await;
        let (head, body) = resp.split_once("\r\n\r\n").unwrap();
        assert_eq!(body, "hello", "{version}");
        let lower = head.to_ascii_lowercase();
        for gone in ["keep-alive", "proxy-connection", "upgrade", "trailer", "te", "transfer-encoding"] {
            assert!(!lower.contains(&format!("\r\n{gone}:")), "{version}: {gone} reached the client:\n{head}");
        }
        assert_eq!(
            lower.matches("\r\ndate: thu, 01 jan 2026 00:00:00 gmt").count(),
            1,
            "{version}: the upstream's Date only:\n{head}"
        );
        assert_eq!(lower.matches("\r\ncontent-length: 5").count(), 1, "{version}:\n{head}");
        assert_eq!(
            lower.matches("connection: ").count(),
            lower.matches("connection: close").count(),
            "{version}: only weir's own close:\n{head}"
        );
        let (lines, want): (Vec<&str>, _) = if version == "HTTP/1.1" {
            (head.split("\r\n").collect(), ["Server: Scripted", "X-Mixed-Case: Kept, as sent", "X-Last:  spaced "])
        } else {
            (head.split("\r\n").collect(), ["server: Scripted", "x-mixed-case: Kept, as sent", "x-last: spaced"])
        };
        for line in want {
            assert!(lines.contains(&line), "{version}: {line:?} not as sent:\n{head}");
        }

        let resp = exchange(w.weir.data_addr(), "/hop-named", version).await;
        let lower = resp.to_ascii_lowercase();
        assert!(!lower.contains("x-hop"), "{version}: a field named by Connection reached the client:\n{resp}");
        assert!(lower.contains("\r\nx-other: 1\r\n") && resp.ends_with("\r\n\r\nhello"), "{version}:\n{resp}");

        let resp = exchange(w.weir.data_addr(), "/hop-many", version).await;
        let (head, body) = resp.split_once("\r\n\r\n").unwrap();
        let lower = head.to_ascii_lowercase();
        assert!(!lower.contains("\r\nte: ") && !lower.contains("content-length: 99"), "{version}:\n{head}");
        for i in 1..=5 {
            assert!(lower.contains(&format!("\r\nx-{i}: ")), "{version}: x-{i} lost:\n{head}");
        }
        let want = if version == "HTTP/1.1" { "5\r\nhello\r\n0\r\n\r\n" } else { "hello" };
        assert_eq!(body, want, "{version}");
    }
    // Every upstream response was read to its end: one connection per
    // round, closed after /hop-many, whose Content-Length beside chunked
    // is suspect framing (RFC 9112 §6.3: not reused).
    assert_eq!(up.conns.load(Ordering::SeqCst), 2, "one upstream connection per round");
}

#[tokio::test]
async fn pipelined_requests_are_answered_in_order_and_close_is_honoured() {
    let stable = Upstream::start("stable", Mode::Named).await;
    let w = InProcess::start(&config_text(stable.addr, stable.addr, "weight = 0", "")).await;
    let mut s = TcpStream::connect(w.weir.data_addr()).await.unwrap();
    s.write_all(
        b"GET /a HTTP/1.1\r\nHost: x\r\n\r\nHEAD /b HTTP/1.1\r\nHost: x\r\n\r\n\
GET /c HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await
    .unwrap();
    let mut pending = Vec::new();
    let (head, body) = read_response(&mut s, &mut pending).await;
    assert!(head.starts_with("http/1.1 200 ok") && head.contains("\r\ndate: "), "{head}");
    assert_eq!(body, b"stable");
    let (head, _) = read_response(&mut s, &mut pending).await;
    assert!(head.contains("content-length: 6"), "HEAD: the length of the body not sent: {head}");
    let (head, body) = read_response(&mut s, &mut pending).await;
    assert!(head.contains("connection: close"), "{head}");
    assert_eq!(body, b"stable");
    let mut rest = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut rest)).await.unwrap().unwrap();
    assert!(rest.is_empty() && pending.is_empty(), "nothing after the last response");
    let paths: Vec<_> = stable.seen.lock().unwrap().iter().map(|r| r.path.clone()).collect();
    assert_eq!(paths, ["/a", "/b", "/c"]);
}

#[tokio::test]
async fn shutdown_closes_idle_keep_alive_connections_at_once() {
    let stable = Upstream::start("stable", Mode::Named).await;
    let w = InProcess::start(&config_text(stable.addr, stable.addr, "weight = 0", "")).await;
    // Two idle connections: one that has served requests (its wait is
    // registered from an earlier wait), one that never sent anything.
    let mut served = TcpStream::connect(w.weir.data_addr()).await.unwrap();
    let mut pending = Vec::new();
    for _ in 0..3 {
        served.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
        let (head, body) = read_response(&mut served, &mut pending).await;
        assert!(head.starts_with("http/1.1 200"), "{head}");
        assert_eq!(body, b"stable");
    }
    let mut fresh = TcpStream::connect(w.weir.data_addr()).await.unwrap();
    // The default grace is 30 s; draining idle connections takes none of it.
    let drained = tokio::time::timeout(Duration::from_secs(10), w.weir.shutdown()).await;
    assert_eq!(drained.ok(), Some(true), "idle connections held shutdown up");
    let mut rest = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), served.read_to_end(&mut rest)).await.unwrap().unwrap();
    assert!(rest.is_empty(), "{}", String::from_utf8_lossy(&rest));
    // Closed too: at once if it was accepted, or reset with the listener if
    // it was still in the accept queue.
    let fresh = tokio::time::timeout(Duration::from_secs(5), fresh.read_to_end(&mut rest)).await.unwrap();
    assert!(
        matches!(&fresh, Ok(0)) || matches!(&fresh, Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset),
        "{fresh:?}"
    );
}

#[tokio::test]
async fn a_connection_moves_to_hyper_for_a_body_and_keeps_serving() {
    let up = Upstream::start("counter", Mode::CountBody).await;
    let w = InProcess::start(&config_text(up.addr, up.addr, "weight = 0", "")).await;
    let mut s = TcpStream::connect(w.weir.data_addr()).await.unwrap();
    let mut pending = Vec::new();
    for (req, want) in [
        (&b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"[..], &b"0"[..]),
        (b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 11\r\n\r\nhello world", b"11"),
        (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", b"0"),
        (b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n", b"3"),
    ] {
        s.write_all(req).await.unwrap();
        let (head, body) = read_response(&mut s, &mut pending).await;
        assert!(head.starts_with("http/1.1 200"), "{head}");
        let body = if head.contains("transfer-encoding: chunked") {
            // hyper re-chunks a body of unknown length.
            let mut rest = body;
            while !rest.ends_with(b"0\r\n\r\n") {
                let mut chunk = [0u8; 1024];
                let n = s.read(&mut chunk).await.unwrap();
                rest.extend_from_slice(&pending);
                pending.clear();
                rest.extend_from_slice(&chunk[..n]);
            }
            String::from_utf8_lossy(&rest).split("\r\n").nth(1).unwrap_or_default().as_bytes().to_vec()
        } else {
            body
        };
        assert_eq!(body, want, "{}", String::from_utf8_lossy(req));
    }
    assert_eq!(up.count(), 4);
}

/// A gRPC or gRPC-Web call's response may pause between messages for as
/// long as its deadline allows: `upstream_read` does not cut it; other
/// responses are cut.
#[tokio::test]
async fn grpc_and_grpc_web_responses_may_pause_past_upstream_read() {
    let up = Scripted::start().await;
    let w = weir_before(&up, "[timeouts]\nupstream_read = \"200ms\"").await;
    for (content_type, whole) in [
        ("application/grpc-web+proto", true),
        ("application/grpc-web-text", true),
        ("application/grpc", true),
        ("application/json", false),
    ] {
        let mut s = TcpStream::connect(w.weir.data_addr()).await.unwrap();
        let req = format!(
            "POST /pause HTTP/1.1\r\nhost: x\r\ncontent-type: {content_type}\r\ncontent-length: 3\r\n\
             connection: close\r\n\r\nabc"
        );
        s.write_all(req.as_bytes()).await.unwrap();
        let mut got = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut got)).await;
        assert!(read.is_ok(), "{content_type}: no end within 10 s");
        let text = String::from_utf8_lossy(&got);
        assert!(text.starts_with("HTTP/1.1 200 "), "{content_type}: {text:?}");
        assert_eq!(text.ends_with("\r\n\r\nabcdef"), whole, "{content_type}: {text:?}");
        assert!(text.ends_with("abc") || text.ends_with("abcdef"), "{content_type}: {text:?}");
    }
}

#[tokio::test]
async fn a_body_that_stops_is_cut_at_upstream_read_even_before_the_head_deadline() {
    let up = Scripted::start().await;
    // upstream_read well inside upstream_response (30 s): the first wait
    // after the head ends at upstream_read, not at the head's deadline.
    let w = weir_before(&up, "[timeouts]\nupstream_read = \"300ms\"").await;
    let mut s = TcpStream::connect(w.weir.data_addr()).await.unwrap();
    s.write_all(b"GET /stall HTTP/1.1\r\nhost: x\r\n\r\n").await.unwrap();
    let since = std::time::Instant::now();
    let mut got = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut got)).await;
    assert!(read.is_ok(), "the stalled body was not cut within 10 s");
    assert!(since.elapsed() < Duration::from_secs(5), "cut after {:?}", since.elapsed());
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("HTTP/1.1 200 ") && text.ends_with("\r\n\r\nabc"), "{text:?}");
    // Counted (the ticker exports once a second).
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let m = parse_prometheus(&metrics_text(&w).await);
        let n = sample(
            &m,
            "weir_upstream_connections_discarded_total",
            &[("backend", "stable"), ("reason", "read_timeout")],
        );
        if n >= 1.0 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "read_timeout not counted");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // "0s": no limit. The same stalled body is still open a second later
    // (three times the 300 ms above).
    let w = weir_before(&up, "[timeouts]\nupstream_read = \"0s\"").await;
    let mut s = TcpStream::connect(w.weir.data_addr()).await.unwrap();
    s.write_all(b"GET /stall HTTP/1.1\r\nhost: x\r\n\r\n").await.unwrap();
    let mut got = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(1), s.read_to_end(&mut got)).await;
    assert!(read.is_err(), "cut with upstream_read = 0s: {:?}", String::from_utf8_lossy(&got));
}

/// An upstream status outside 100–599 (RFC 9110 §15: not an HTTP status)
/// is a bad answer, never relayed: 502, through weir's own client (no
/// body) and hyper's (a body). Found by the `upstream` fuzz target.
#[tokio::test]
async fn a_status_outside_100_to_599_is_a_bad_gateway() {
    let up = Scripted::start().await;
    let w = weir_before(&up, "").await;
    let c = client();
    let (status, _) = get(&c, &w.url("/status-803"), &[]).await;
    assert_eq!(status, 502);
    let post = Request::post(w.url("/status-803")).body(Full::new(Bytes::from_static(b"abc"))).unwrap();
    assert_eq!(c.request(post).await.unwrap().status(), 502);
    let m = parse_prometheus(&metrics_text(&w).await);
    let protocol =
        sample(&m, "weir_upstream_errors_total", &[("route", "web"), ("backend", "stable"), ("kind", "protocol")]);
    assert_eq!(protocol, 2.0);
}
