//! HTTP/2 upstreams that refuse streams they did not process (RFC 9113
//! §8.7): a `REFUSED_STREAM` reset (from the `h2` crate's server) and a
//! graceful GOAWAY whose last stream id is below a request in flight (from
//! a server written with raw frames, the one way to choose that id). weir
//! sends such a request again, whatever its method, with its body, on a new
//! connection, and counts `weir_upstream_retries_total{kind="refused"}`.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Request, StatusCode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::*;

/// weir with both backends on `addr`, over prior-knowledge h2c.
async fn weir_in_front_of(addr: SocketAddr) -> InProcess {
    let text = config_text(addr, addr, "", "")
        .replacen("version = \"v1\"", "version = \"v1\"\nhttp2 = true", 1)
        .replacen("version = \"v2\"", "version = \"v2\"\nhttp2 = true", 1);
    InProcess::start(&text).await
}

async fn post(w: &InProcess, body: Bytes) -> (StatusCode, Bytes) {
    send(w, http::Method::POST, body).await
}

async fn send(w: &InProcess, method: http::Method, body: Bytes) -> (StatusCode, Bytes) {
    let req = Request::builder().method(method).uri(w.url("/submit")).body(Full::new(body)).unwrap();
    let resp = client().request(req).await.unwrap();
    let status = resp.status();
    (status, resp.into_body().collect().await.unwrap().to_bytes())
}

async fn refused_retries(w: &InProcess) -> f64 {
    let m = parse_prometheus(&get(&client(), &format!("http://{}/metrics", w.weir.admin_addr()), &[]).await.1);
    sample_sum(&m, "weir_upstream_retries_total", &[("route", "web"), ("kind", "refused")])
}

/// An h2 server (the `h2` crate) that reads each request's body whole,
/// then, on its first connection, refuses the stream if the body starts
/// with `refuse`; otherwise it answers `conn<i>:` and the body. Counts
/// connections and requests.
struct Refuser {
    addr: SocketAddr,
    connections: Arc<AtomicUsize>,
    requests: Arc<AtomicUsize>,
}

impl Refuser {
    async fn start() -> Refuser {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (connections, requests) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let (conns, reqs) = (connections.clone(), requests.clone());
        tokio::spawn(async move {
            while let Ok((sock, _)) = listener.accept().await {
                let i = conns.fetch_add(1, SeqCst);
                let reqs = reqs.clone();
                tokio::spawn(async move {
                    let Ok(mut conn) = h2::server::handshake(sock).await else { return };
                    while let Some(Ok((req, mut respond))) = conn.accept().await {
                        reqs.fetch_add(1, SeqCst);
                        tokio::spawn(async move {
                            let mut body = req.into_body();
                            let mut got = Vec::new();
                            while let Some(Ok(d)) = body.data().await {
                                let _ = body.flow_control().release_capacity(d.len());
                                got.extend_from_slice(&d);
                            }
                            if i == 0 && got.starts_with(b"refuse") {
                                respond.send_reset(h2::Reason::REFUSED_STREAM);
                                return;
                            }
                            let resp = http::Response::new(());
                            let Ok(mut send) = respond.send_response(resp, false) else { return };
                            let mut out = format!("conn{i}:").into_bytes();
                            out.extend_from_slice(&got);
                            let _ = send.send_data(out.into(), true);
                        });
                    }
                });
            }
        });
        Refuser { addr, connections, requests }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_stream_is_sent_again_with_its_body_on_a_new_connection() {
    let up = Refuser::start().await;
    let w = weir_in_front_of(up.addr).await;

    let (status, body) = post(&w, Bytes::from_static(b"first")).await;
    assert_eq!((status, &body[..]), (StatusCode::OK, &b"conn0:first"[..]));

    // The upstream read the whole body, then refused: a POST is sent again
    // (it was not processed), body and all, on a new connection.
    let (status, body) = post(&w, Bytes::from_static(b"refuse once")).await;
    assert_eq!((status, &body[..]), (StatusCode::OK, &b"conn1:refuse once"[..]));
    assert_eq!((up.requests.load(SeqCst), up.connections.load(SeqCst)), (3, 2));
    assert_eq!(refused_retries(&w).await, 1.0);

    // A body larger than weir keeps for that is not sent again: the caller
    // gets the failure.
    let mut big = b"refuse".to_vec();
    big.resize(200 * 1024, b'x');
    let (status, _) = post(&w, big.into()).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY);
    assert_eq!(up.requests.load(SeqCst), 4, "sent once");
    assert_eq!(refused_retries(&w).await, 1.0);

    // The pooled connection still serves.
    let (status, body) = post(&w, Bytes::from_static(b"after")).await;
    assert_eq!((status, &body[..]), (StatusCode::OK, &b"conn0:after"[..]));
}

/// A raw HTTP/2 server: on its first connection it answers requests until
/// two whose body starts with `hold`, or is empty, are in; then it sends GOAWAY with the
/// lower of their stream ids as the last it processes (NO_ERROR), answers
/// that one, drains for 2 s (a stream opened on it after the GOAWAY is
/// never answered, as with h2 servers) and closes. Later connections answer every request. Each answer is
/// `conn<i>:` and the request body. `closed` fires when the first
/// connection is done.
async fn going_away_server() -> (SocketAddr, Arc<AtomicUsize>, tokio::sync::oneshot::Receiver<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let connections = Arc::new(AtomicUsize::new(0));
    let conns = connections.clone();
    let (closed_tx, closed) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let mut closed_tx = Some(closed_tx);
        while let Ok((sock, _)) = listener.accept().await {
            let i = conns.fetch_add(1, SeqCst);
            let done = if i == 0 { closed_tx.take() } else { None };
            tokio::spawn(async move {
                let _ = raw_h2(sock, i, i == 0).await;
                if let Some(done) = done {
                    let _ = done.send(());
                }
            });
        }
    });
    (addr, connections, closed)
}

const DATA: u8 = 0;
const HEADERS: u8 = 1;
const SETTINGS: u8 = 4;
const PING: u8 = 6;
const GOAWAY: u8 = 7;
const END_STREAM: u8 = 1;
const ACK: u8 = 1;
const END_HEADERS: u8 = 4;

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    let mut f = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
    f.extend_from_slice(&stream.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// `:status: 200` (HPACK static index 8), then the body.
fn answer(stream: u32, conn: usize, body: &[u8]) -> Vec<u8> {
    let mut out = frame(HEADERS, END_HEADERS, stream, &[0x88]);
    let mut text = format!("conn{conn}:").into_bytes();
    text.extend_from_slice(body);
    out.extend(frame(DATA, END_STREAM, stream, &text));
    out
}

async fn raw_h2(mut sock: TcpStream, conn: usize, go_away: bool) -> std::io::Result<()> {
    let mut preface = [0u8; 24];
    sock.read_exact(&mut preface).await?;
    sock.write_all(&frame(SETTINGS, 0, 0, &[])).await?;
    let mut bodies: HashMap<u32, Vec<u8>> = HashMap::new();
    let mut held: Vec<u32> = Vec::new();
    loop {
        let mut head = [0u8; 9];
        if sock.read_exact(&mut head).await.is_err() {
            return Ok(());
        }
        let len = (usize::from(head[0]) << 16) | (usize::from(head[1]) << 8) | usize::from(head[2]);
        let (kind, flags) = (head[3], head[4]);
        let stream = u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff;
        let mut payload = vec![0u8; len];
        sock.read_exact(&mut payload).await?;
        let ended = match kind {
            SETTINGS if flags & ACK == 0 => {
                sock.write_all(&frame(SETTINGS, ACK, 0, &[])).await?;
                false
            }
            PING if flags & ACK == 0 => {
                sock.write_all(&frame(PING, ACK, 0, &payload)).await?;
                false
            }
            HEADERS => {
                bodies.entry(stream).or_default();
                flags & END_STREAM != 0
            }
            DATA => {
                bodies.entry(stream).or_default().extend_from_slice(&payload);
                flags & END_STREAM != 0
            }
            _ => false,
        };
        if !ended {
            continue;
        }
        let body = bodies.remove(&stream).unwrap_or_default();
        if !(go_away && (body.is_empty() || body.starts_with(b"hold"))) {
            sock.write_all(&answer(stream, conn, &body)).await?;
            continue;
        }
        held.push(stream);
        bodies.insert(stream, body);
        if held.len() < 2 {
            continue;
        }
        let first = held.iter().copied().min().unwrap_or(stream);
        let mut payload = first.to_be_bytes().to_vec();
        payload.extend_from_slice(&0u32.to_be_bytes()); // NO_ERROR
        sock.write_all(&frame(GOAWAY, 0, 0, &payload)).await?;
        let body = bodies.remove(&first).unwrap_or_default();
        sock.write_all(&answer(first, conn, &body)).await?;
        // Draining: the connection stays open a while, reading and
        // answering nothing (as a server does while its last calls end).
        let drain = tokio::time::Instant::now() + Duration::from_secs(2);
        let mut sink = vec![0u8; 16 * 1024];
        while let Ok(Ok(n)) = tokio::time::timeout_at(drain, sock.read(&mut sink)).await {
            if n == 0 {
                break;
            }
        }
        // Done: close our side, then read until the client closes (a
        // close with unread input would reset the connection under the
        // answer).
        sock.shutdown().await?;
        while tokio::time::timeout(Duration::from_secs(5), sock.read(&mut sink))
            .await
            .is_ok_and(|r| r.is_ok_and(|n| n > 0))
        {}
        return Ok(());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_above_a_graceful_goaway_is_sent_again_on_a_new_connection() {
    let (addr, connections, closed) = going_away_server().await;
    let w = weir_in_front_of(addr).await;
    // One connection up first, so that both held requests share it.
    let (status, body) = post(&w, Bytes::from_static(b"warm")).await;
    assert_eq!((status, &body[..]), (StatusCode::OK, &b"conn0:warm"[..]));

    let (a, b) = tokio::join!(post(&w, Bytes::from_static(b"hold a")), post(&w, Bytes::from_static(b"hold b")));
    assert_eq!((a.0, b.0), (StatusCode::OK, StatusCode::OK), "{a:?} {b:?}");
    let mut served = [String::from_utf8_lossy(&a.1).into_owned(), String::from_utf8_lossy(&b.1).into_owned()];
    served.sort_by_key(|s| s.split(':').nth(1).map(str::to_owned));
    // One was processed on the first connection; the other, refused by the
    // GOAWAY, went again with its body on a new connection (it would never
    // be answered on the first).
    let conns: Vec<&str> = served.iter().filter_map(|s| s.split(':').next()).collect();
    let mut sorted = conns.clone();
    sorted.sort();
    assert_eq!(sorted, ["conn0", "conn1"], "{served:?}");
    assert!(served[0].ends_with(":hold a") && served[1].ends_with(":hold b"), "{served:?}");
    assert_eq!(refused_retries(&w).await, 1.0);

    // While the first connection drains, a new request goes on another one
    // (on the first it would never be answered).
    let (status, body) = post(&w, Bytes::from_static(b"during")).await;
    assert_eq!(status, StatusCode::OK, "{body:?}");
    assert!(!body.starts_with(b"conn0:"), "{body:?}");

    // Once the first connection is gone, requests go on.
    tokio::time::timeout(Duration::from_secs(10), closed).await.unwrap().unwrap();
    let (status, body) = post(&w, Bytes::from_static(b"later")).await;
    assert_eq!(status, StatusCode::OK, "{body:?}");
    assert!(connections.load(SeqCst) >= 2);
}

/// A request without a body is whole in its HEADERS: after a GOAWAY, hyper
/// cannot tell one it never sent from one whose HEADERS left in the instant
/// the GOAWAY arrived, so a POST without a body is not sent again (the
/// upstream may have processed it); a GET is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_goaway_a_post_without_a_body_is_not_sent_again_but_a_get_is() {
    for (method, retried) in [(http::Method::POST, false), (http::Method::GET, true)] {
        let (addr, _, _) = going_away_server().await;
        let w = weir_in_front_of(addr).await;
        assert_eq!(post(&w, Bytes::from_static(b"warm")).await.0, StatusCode::OK);
        let (a, b) = tokio::join!(send(&w, method.clone(), Bytes::new()), send(&w, method.clone(), Bytes::new()));
        let mut statuses = [a.0, b.0];
        statuses.sort();
        let want = if retried { [StatusCode::OK; 2] } else { [StatusCode::OK, StatusCode::BAD_GATEWAY] };
        assert_eq!(statuses, want, "{method}: {a:?} {b:?}");
        assert_eq!(refused_retries(&w).await, if retried { 1.0 } else { 0.0 }, "{method}");
    }
}
