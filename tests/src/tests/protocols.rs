//! Protocol behaviour: h2c, WebSocket, header hygiene, framing conflicts.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::*;

/// Sends raw bytes, returns everything the proxy answers until it closes.
async fn raw(addr: std::net::SocketAddr, bytes: &[u8]) -> String {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(bytes).await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out))
        .await
        .expect("the proxy must close the connection")
        .unwrap();
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2c_client_reaches_http1_upstream() {
    let (stable, _c, w) = named_pair("", "").await;
    let c = h2c_client();
    let resp = c.request(Request::get(w.url("/h2?x=1")).body(Full::new(Bytes::new())).unwrap()).await.unwrap();
    assert_eq!(resp.version(), http::Version::HTTP_2);
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.into_body().collect().await.unwrap().to_bytes(), "stable");
    let seen = stable.seen.lock().unwrap()[0].clone();
    assert_eq!(seen.path, "/h2?x=1");
    // h2 has no Host header: the proxy sends the :authority as Host.
    assert_eq!(seen.headers["host"], w.weir.data_addr().to_string());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_echo_through_the_proxy() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let (ws_addr, _task) = websocket_echo().await;
    let stable = Upstream::start("stable", Mode::Named).await;
    let w = InProcess::start(&config_text(stable.addr, ws_addr, "weight = 100", "")).await;
    let (mut ws, resp) = tokio_tungstenite::connect_async(format!("ws://{}/chat", w.weir.data_addr())).await.unwrap();
    assert_eq!(resp.status(), 101);
    for i in 0..10 {
        ws.send(Message::text(format!("hello {i}"))).await.unwrap();
        let got = ws.next().await.unwrap().unwrap();
        assert_eq!(got.into_text().unwrap().as_str(), format!("hello {i}"));
    }
    ws.send(Message::binary(vec![0u8, 1, 2, 255])).await.unwrap();
    assert_eq!(ws.next().await.unwrap().unwrap().into_data().as_ref(), &[0u8, 1, 2, 255]);
    ws.close(None).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hop_by_hop_headers_never_reach_the_upstream() {
    let (stable, _c, w) = named_pair("", "").await;
    let resp = raw(
        w.weir.data_addr(),
        b"GET /p HTTP/1.1\r\nHost: app.example\r\nConnection: keep-alive, X-Hop, close\r\nX-Hop: secret\r\nKeep-Alive: timeout=5\r\nTE: trailers\r\nTrailer: X-T\r\nProxy-Connection: keep-alive\r\nUpgrade: h2c\r\nX-Forwarded-For: 203.0.113.9\r\nX-Forwarded-Host: evil.example\r\nX-End: kept\r\n\r\n",
    )
    .await;
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    let seen = stable.seen.lock().unwrap()[0].clone();
    for h in ["x-hop", "keep-alive", "te", "trailer", "proxy-connection", "upgrade"] {
        assert!(!seen.headers.contains_key(h), "{h} reached the upstream: {:?}", seen.headers);
    }
    // hyper's client adds its own `connection` only when closing; the
    // client's never passes.
    assert_ne!(seen.headers.get("connection").map(|v| v.to_str().unwrap()), Some("keep-alive, X-Hop, close"));
    assert_eq!(seen.headers["x-end"], "kept");
    assert_eq!(seen.headers["host"], "app.example");
    assert_eq!(seen.headers["x-forwarded-for"], "203.0.113.9, 127.0.0.1");
    assert_eq!(seen.headers["x-forwarded-proto"], "http");
    assert_eq!(seen.headers["x-forwarded-host"], "app.example");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn content_length_with_transfer_encoding_is_framed_by_te_alone_and_closes() {
    let (stable, _c, w) = named_pair("", "").await;
    // RFC 9112 §6.3: TE overrides CL; the connection must close after the
    // response, so the bytes after the chunked body are never a request.
    let resp = raw(
        w.weir.data_addr(),
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 40\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n",
    )
    .await;
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    assert!(resp.to_ascii_lowercase().contains("connection: close"), "{resp}");
    assert_eq!(resp.matches("HTTP/1.1").count(), 1, "a second response means the smuggled request was served: {resp}");
    let seen = stable.seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].path, "/");
    assert!(!seen[0].headers.contains_key("content-length"), "{:?}", seen[0].headers);
    assert_eq!(seen[0].headers["transfer-encoding"], "chunked");

    // Conflicting Content-Length values: 400 and close, nothing forwarded.
    let resp =
        raw(w.weir.data_addr(), b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nContent-Length: 5\r\n\r\nabcde")
            .await;
    assert!(resp.starts_with("HTTP/1.1 400"), "{resp}");
    // Transfer-Encoding on HTTP/1.0, and a TE that is not chunked: 400.
    let resp =
        raw(w.weir.data_addr(), b"POST / HTTP/1.0\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n").await;
    assert!(resp.starts_with("HTTP/1.1 400"), "{resp}");
    let resp = raw(w.weir.data_addr(), b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n").await;
    assert!(resp.starts_with("HTTP/1.1 400"), "{resp}");
    assert_eq!(stable.count(), 1);

    // The proxy keeps serving.
    assert_eq!(get(&client(), &w.url("/"), &[]).await.0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_header_block_is_431() {
    let (stable, _c, w) = named_pair("", "").await;
    let big = "a".repeat(70_000);
    let resp = raw(w.weir.data_addr(), format!("GET / HTTP/1.1\r\nHost: x\r\nX-Big: {big}\r\n\r\n").as_bytes()).await;
    assert!(resp.starts_with("HTTP/1.1 431"), "{}", &resp[..resp.len().min(200)]);
    let many: String = (0..150).map(|i| format!("X-H{i}: v\r\n")).collect();
    let resp = raw(w.weir.data_addr(), format!("GET / HTTP/1.1\r\nHost: x\r\n{many}\r\n").as_bytes()).await;
    assert!(resp.starts_with("HTTP/1.1 431"), "{resp}");
    assert_eq!(stable.count(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http11_needs_exactly_one_host() {
    let (stable, _c, w) = named_pair("", "").await;
    let resp = raw(w.weir.data_addr(), b"GET / HTTP/1.1\r\nX-A: 1\r\n\r\n").await;
    assert!(resp.starts_with("HTTP/1.1 400"), "{resp}");
    let resp = raw(w.weir.data_addr(), b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n").await;
    assert!(resp.starts_with("HTTP/1.1 400"), "{resp}");
    assert_eq!(stable.count(), 0);
    // HTTP/1.0 may omit Host.
    let resp = raw(w.weir.data_addr(), b"GET / HTTP/1.0\r\n\r\n").await;
    assert!(resp.starts_with("HTTP/1.0 200") || resp.starts_with("HTTP/1.1 200"), "{resp}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn headers_with_underscores_follow_the_policy() {
    for (policy, expect) in [("allow", 200), ("drop", 200), ("reject", 400)] {
        let stable = Upstream::start("stable", Mode::Named).await;
        let canary = Upstream::start("canary", Mode::Named).await;
        let top = format!("[limits]\nheaders_with_underscores = \"{policy}\"");
        let w = InProcess::start(&config_text(stable.addr, canary.addr, "", &top)).await;
        let (status, _) = get(&client(), &w.url("/"), &[("x_user", "admin"), ("x-user", "alice")]).await;
        assert_eq!(status, expect, "{policy}");
        let seen = stable.seen.lock().unwrap().clone();
        match policy {
            "allow" => assert_eq!(seen[0].headers["x_user"], "admin"),
            "drop" => {
                assert!(!seen[0].headers.contains_key("x_user"));
                assert_eq!(seen[0].headers["x-user"], "alice");
            }
            _ => assert!(seen.is_empty()),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_upgrade_leaves_no_tunnel() {
    // A raw upstream that refuses the upgrade and records every byte it gets.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let up = listener.local_addr().unwrap();
    let got = Arc::new(Mutex::new(Vec::<u8>::new()));
    let got2 = got.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let got = got2.clone();
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let mut answered = false;
                while let Ok(Ok(n)) = tokio::time::timeout(Duration::from_millis(500), s.read(&mut buf)).await {
                    if n == 0 {
                        break;
                    }
                    got.lock().unwrap().extend_from_slice(&buf[..n]);
                    if !answered && got.lock().unwrap().windows(4).any(|w| w == b"\r\n\r\n") {
                        answered = true;
                        let _ = s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok").await;
                    }
                }
            });
        }
    });
    let stable = Upstream::start("stable", Mode::Named).await;
    let w = InProcess::start(&config_text(stable.addr, up, "weight = 100", "")).await;
    let resp = raw(
        w.weir.data_addr(),
        b"GET /chat HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n\x81\x85TUNNELED-BYTES",
    )
    .await;
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    tokio::time::sleep(Duration::from_millis(600)).await;
    let bytes = String::from_utf8_lossy(&got.lock().unwrap()).into_owned();
    assert_eq!(bytes.matches("GET /chat").count(), 1, "{bytes}");
    assert!(!bytes.contains("TUNNELED-BYTES"), "bytes after a refused upgrade reached the upstream: {bytes}");
}
