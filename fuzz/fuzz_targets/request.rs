//! Raw bytes on weir's data port, through a real listener, the real request
//! path and a real upstream.
//!
//! Once per process: a tokio runtime on its own thread, a tiny upstream
//! (hyper, answers 200 "ok") and weir in process in front of it. Per input:
//! a fresh connection, the bytes written, the write side shut, and the
//! answer read for up to 2 s. Whatever comes back must be empty (closed) or
//! start with an HTTP/1.x status line (an h2 SETTINGS frame after the h2c
//! preface). Every 64 inputs, and after any input that did not end cleanly,
//! a good request on a fresh connection must still get its 200.
//!
//! `WEIR_FUZZ_STATS=1` prints a histogram of the status codes seen every
//! 10 000 inputs (to see what the fuzzer reaches).

#![no_main]

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;

mod common;

const READ_FOR: Duration = Duration::from_secs(2);
const CHECK_EVERY: u64 = 64;
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const GOOD: &[u8] = b"GET /health HTTP/1.1\r\nhost: fuzz.test\r\nconnection: close\r\n\r\n";

fuzz_target!(|data: &[u8]| {
    let weir = harness();
    let n = RUNS.fetch_add(1, Ordering::Relaxed);
    let outcome = exchange(weir, data);
    if !outcome.reply.is_empty() {
        let status = match outcome.reply.get(9..12) {
            Some(code) if outcome.reply.starts_with(b"HTTP/1.") => String::from_utf8_lossy(code).into_owned(),
            _ => "other".to_string(),
        };
        common::stats("request replies", &status);
    } else if outcome.timed_out {
        common::stats("request replies", "timeout");
    } else {
        common::stats("request replies", "closed");
    }
    check_reply(data, &outcome.reply);
    if n % CHECK_EVERY == 0 || outcome.timed_out || outcome.reset {
        still_serves(weir);
    }
});

static RUNS: AtomicU64 = AtomicU64::new(0);

struct Outcome {
    reply: Vec<u8>,
    timed_out: bool,
    reset: bool,
}

fn exchange(weir: SocketAddr, data: &[u8]) -> Outcome {
    let mut s = TcpStream::connect(weir).expect("connect to weir");
    s.set_read_timeout(Some(READ_FOR)).unwrap();
    s.set_write_timeout(Some(READ_FOR)).unwrap();
    // weir may answer and close before reading everything: a failed write
    // is not a finding, what comes back is.
    let _ = s.write_all(data);
    let _ = s.shutdown(Shutdown::Write);
    let deadline = Instant::now() + READ_FOR;
    let mut reply = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    let (mut timed_out, mut reset) = (false, false);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            timed_out = true;
            break;
        }
        s.set_read_timeout(Some(left)).unwrap();
        match s.read(&mut buf) {
            Ok(0) => break,
            // Bounded: a reply larger than this is a finding of its own.
            Ok(n) if reply.len() + n > 16 << 20 => panic!("more than 16 MiB of reply"),
            Ok(n) => reply.extend_from_slice(&buf[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                timed_out = true;
                break;
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => {
                reset = true;
                break;
            }
        }
    }
    Outcome { reply, timed_out, reset }
}

fn check_reply(data: &[u8], reply: &[u8]) {
    if reply.is_empty() {
        return;
    }
    if data.starts_with(H2_PREFACE) {
        // h2c: the server's first frame is SETTINGS (type 4).
        assert!(
            reply.len() < 9 || reply[3] == 4,
            "h2c reply does not start with SETTINGS: {:?}",
            common::show(reply, 300)
        );
        return;
    }
    assert!(
        reply.starts_with(b"HTTP/1.1 ") || reply.starts_with(b"HTTP/1.0 "),
        "reply is not an HTTP/1.x response: {:?}",
        common::show(reply, 300)
    );
}

fn still_serves(weir: SocketAddr) {
    let mut s = TcpStream::connect(weir).expect("weir accepts a fresh connection");
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(GOOD).unwrap();
    let mut reply = Vec::new();
    let _ = s.read_to_end(&mut reply);
    assert!(
        reply.starts_with(b"HTTP/1.1 200 "),
        "weir no longer serves a good request: {:?}",
        common::show(&reply, 300)
    );
}

/// weir's data address, starting everything on first use.
fn harness() -> SocketAddr {
    static WEIR: OnceLock<SocketAddr> = OnceLock::new();
    *WEIR.get_or_init(|| {
        let addr = common::start_weir(|| async { config(upstream().await) });
        still_serves(addr);
        addr
    })
}

/// A hyper HTTP/1.1 server that answers every request 200 "ok".
async fn upstream() -> SocketAddr {
    use bytes::Bytes;
    use http_body_util::Full;
    use hyper::service::service_fn;
    use hyper_util::rt::TokioIo;

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else { continue };
            tokio::spawn(async move {
                let svc = service_fn(|_req| async {
                    Ok::<_, std::convert::Infallible>(hyper::Response::new(Full::new(Bytes::from_static(b"ok"))))
                });
                let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), svc).await;
            });
        }
    });
    addr
}

/// Several routes (host and prefix matches, sticky, force, cohort, shadow,
/// variant header) so that inputs reach every branch of routing.
fn config(upstream: SocketAddr) -> String {
    format!(
        r#"
[listen]
addr = "127.0.0.1:0"
[admin]
addr = "127.0.0.1:0"
[timeouts]
connect = "1s"
header_read = "1s"
upstream_response = "1s"
idle = "5s"
[limits]
max_header_bytes = 8192
max_headers = 32
headers_with_underscores = "drop"
[backends.stable]
addrs = ["{upstream}"]
version = "v1"
[backends.canary]
addrs = ["{upstream}"]
version = "v2"

[[routes]]
name = "web"
stable = "stable"
canary = "canary"
weight = 50
sticky = {{ header = "x-user-id" }}
force = {{ cookie = "canary" }}
variant_header = true
shadow = {{ percent = 10, max_body = "1KiB", max_in_flight = 4 }}

[[routes]]
name = "api"
match = {{ host = "api.test", path_prefix = "/api/" }}
stable = "stable"
canary = "canary"
weight = 5
sticky = {{ cookie = "session" }}
force = {{ header = "x-canary" }}
cohort = {{ header = "x-user-group", values = ["internal"] }}

[[routes]]
name = "plain"
match = {{ path_prefix = "/plain" }}
stable = "stable"
"#
    )
}
