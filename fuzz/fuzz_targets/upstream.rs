//! Arbitrary response bytes from an upstream, through weir's own HTTP/1.1
//! client (`upstream/h1/`) and the real response path, to a real client.
//!
//! Once per process: a tokio runtime on its own thread, a scripted upstream
//! and weir in process in front of it (outlier detection off, short
//! `upstream_response` and `upstream_read`). Per input: the first byte
//! holds flags (bit 0: the upstream closes after writing; bit 1: a HEAD
//! request; bit 2: written in two pieces 5 ms apart), the rest is what the
//! upstream answers to `/fuzz/N`. Checked:
//!
//! - weir's reply is an HTTP/1.x response whose framing holds: nothing
//!   after the end its Content-Length or chunked coding gives (the client
//!   asked to close), and it comes within the timeouts;
//! - **no connection is reused past a bad response**: the next request,
//!   `/check/N` (the upstream answers it properly on whatever connection it
//!   comes), gets exactly its own answer, never bytes left over from the
//!   fuzzed one.
//!
//! `WEIR_FUZZ_STATS=1` prints a histogram of the statuses seen every 10 000
//! inputs.

#![no_main]

use std::collections::{HashMap, HashSet};
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

mod common;

/// Longer than any response may take: upstream_response 200 ms, then
/// upstream_read 100 ms between pieces (a trickle of 2 pieces).
const READ_FOR: Duration = Duration::from_secs(4);

/// The inputs by number, and the numbers the upstream has finished writing
/// (or gave up on: weir closed the connection).
#[derive(Default)]
struct Shared {
    inputs: Mutex<HashMap<u64, (u8, Vec<u8>)>>,
    written: Mutex<HashSet<u64>>,
    written_cv: Condvar,
}

type Inputs = Arc<Shared>;

/// Marks input N written when the upstream is done with it, however.
struct Written(Inputs, u64);

impl Drop for Written {
    fn drop(&mut self) {
        self.0.written.lock().unwrap().insert(self.1);
        self.0.written_cv.notify_all();
    }
}

struct Harness {
    weir: SocketAddr,
    inputs: Inputs,
}

fuzz_target!(|data: &[u8]| {
    let Some((&flags, response)) = data.split_first() else { return };
    let h = harness();
    let n = RUNS.fetch_add(1, Ordering::Relaxed);
    h.inputs.inputs.lock().unwrap().insert(n, (flags, response.to_vec()));
    let head = flags & 2 != 0;
    let method = if head { "HEAD" } else { "GET" };
    let (reply, timed_out) =
        exchange(h.weir, &format!("{method} /fuzz/{n} HTTP/1.1\r\nhost: fuzz.test\r\nconnection: close\r\n\r\n"));
    assert!(!timed_out, "no complete reply within {READ_FOR:?}: {:?}", common::show(&reply, 400));
    common::stats("upstream replies", &check_framing(&reply, head));
    // Bytes the upstream sends after weir has taken a connection back and
    // lent it to the next request cannot be told from that request's
    // answer (by any HTTP/1.1 client): the check starts once the upstream
    // has written everything, which weir must then notice.
    let written = h.inputs.written.lock().unwrap();
    let (mut written, waited) = h.inputs.written_cv.wait_timeout_while(written, READ_FOR, |w| !w.contains(&n)).unwrap();
    assert!(!waited.timed_out(), "the upstream never finished writing input {n}");
    written.remove(&n);
    drop(written);
    h.inputs.inputs.lock().unwrap().remove(&n);
    // The next request gets its own answer, whichever connection it takes:
    // never another body, nor a 502 (what a reused connection with bytes
    // left on it usually gives); a 504 (a machine too busy for the short
    // timeouts here) is asked again.
    let want = format!("check-{n}");
    for attempt in 1.. {
        let (reply, _) =
            exchange(h.weir, &format!("GET /check/{n} HTTP/1.1\r\nhost: fuzz.test\r\nconnection: close\r\n\r\n"));
        let body = reply.windows(4).position(|w| w == b"\r\n\r\n").map(|i| &reply[i + 4..]);
        if reply.starts_with(b"HTTP/1.1 200 ") && body == Some(want.as_bytes()) {
            break;
        }
        let retry = reply.starts_with(b"HTTP/1.1 504 ");
        assert!(retry && attempt < 3, "after a fuzzed response, /check/{n} got {:?}", common::show(&reply, 400));
    }
});

static RUNS: AtomicU64 = AtomicU64::new(0);

/// Sends `request` on a fresh connection; the reply up to the close, and
/// whether it took longer than [`READ_FOR`].
fn exchange(weir: SocketAddr, request: &str) -> (Vec<u8>, bool) {
    let mut s = TcpStream::connect(weir).expect("connect to weir");
    s.write_all(request.as_bytes()).expect("send the request");
    let deadline = Instant::now() + READ_FOR;
    let mut reply = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return (reply, true);
        }
        s.set_read_timeout(Some(left)).unwrap();
        match s.read(&mut buf) {
            Ok(0) => return (reply, false),
            Ok(n) if reply.len() + n > 16 << 20 => panic!("more than 16 MiB of reply"),
            Ok(n) => reply.extend_from_slice(&buf[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => return (reply, true),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            // Reset: weir cut a response short (a broken upstream body).
            Err(_) => return (reply, false),
        }
    }
}

/// Checks that `reply` is one HTTP/1.1 response with nothing after the end
/// its framing gives (it may be cut short: the upstream broke its body);
/// returns its status for the stats.
fn check_framing(reply: &[u8], head_request: bool) -> String {
    let mut headers = [httparse::EMPTY_HEADER; 128];
    let mut resp = httparse::Response::new(&mut headers);
    let len = match resp.parse(reply) {
        Ok(httparse::Status::Complete(len)) => len,
        _ => panic!("reply is not an HTTP/1.1 response head: {:?}", common::show(reply, 400)),
    };
    assert_eq!(resp.version, Some(1), "reply is not HTTP/1.1: {:?}", common::show(reply, 400));
    let status = resp.code.unwrap_or(0);
    assert!((200..600).contains(&status), "final status {status}: {:?}", common::show(reply, 400));
    let field = |name: &str| resp.headers.iter().filter(|h| h.name.eq_ignore_ascii_case(name)).collect::<Vec<_>>();
    let lengths = field("content-length");
    let te = field("transfer-encoding");
    assert!(lengths.len() <= 1, "several Content-Length fields: {:?}", common::show(reply, 400));
    assert!(
        te.is_empty() || lengths.is_empty(),
        "Content-Length and Transfer-Encoding: {:?}",
        common::show(reply, 400)
    );
    let body = &reply[len..];
    if head_request || status == 204 || status == 304 {
        assert!(body.is_empty(), "a body where none may be: {:?}", common::show(reply, 400));
    } else if let Some(te) = te.first() {
        assert!(te.value.eq_ignore_ascii_case(b"chunked"), "transfer-encoding {:?}", common::show(reply, 400));
        let rest = dechunk(body);
        assert!(rest.is_empty(), "bytes after the last chunk: {:?}", common::show(reply, 400));
    } else if let Some(cl) = lengths.first() {
        let n: usize = std::str::from_utf8(cl.value).ok().and_then(|v| v.parse().ok()).expect("a numeric length");
        assert!(body.len() <= n, "{} body bytes for content-length {n}: {:?}", body.len(), common::show(reply, 400));
    }
    status.to_string()
}

/// What follows a chunked body's end (empty if it was cut short).
fn dechunk(mut b: &[u8]) -> &[u8] {
    loop {
        let Some(end) = b.windows(2).position(|w| w == b"\r\n") else { return b"" };
        let size = std::str::from_utf8(&b[..end]).ok().and_then(|s| usize::from_str_radix(s, 16).ok());
        let size = size.unwrap_or_else(|| panic!("bad chunk size line from weir: {:?}", common::show(b, 400)));
        b = &b[end + 2..];
        if size == 0 {
            // No trailers from weir: the empty line ends the body.
            return b.strip_prefix(b"\r\n").unwrap_or(b"");
        }
        if b.len() < size + 2 {
            return b"";
        }
        assert_eq!(&b[size..size + 2], b"\r\n", "chunk data longer than its size");
        b = &b[size + 2..];
    }
}

fn harness() -> &'static Harness {
    static H: OnceLock<Harness> = OnceLock::new();
    H.get_or_init(|| {
        let inputs: Inputs = Arc::default();
        let shared = inputs.clone();
        let weir = common::start_weir(|| async { config(upstream(shared).await) });
        Harness { weir, inputs }
    })
}

/// Answers `/fuzz/N` with input N (as its flags say), anything else with a
/// proper response naming the path's last segment, for as many requests as
/// a connection carries.
async fn upstream(inputs: Inputs) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else { continue };
            let inputs = inputs.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        let head = String::from_utf8_lossy(&buf[..end]).into_owned();
                        buf.drain(..end + 4);
                        let path = head.split_whitespace().nth(1).unwrap_or("/").to_string();
                        let fuzzed = path
                            .strip_prefix("/fuzz/")
                            .and_then(|n| n.parse::<u64>().ok())
                            .and_then(|n| Some((n, inputs.inputs.lock().unwrap().get(&n).cloned()?)));
                        match fuzzed {
                            Some((n, (flags, bytes))) => {
                                let _written = Written(inputs.clone(), n);
                                let (a, b) = if flags & 4 != 0 {
                                    bytes.split_at(bytes.len() / 2)
                                } else {
                                    (&bytes[..], &[][..])
                                };
                                if s.write_all(a).await.is_err() {
                                    return;
                                }
                                if !b.is_empty() {
                                    tokio::time::sleep(Duration::from_millis(5)).await;
                                    if s.write_all(b).await.is_err() {
                                        return;
                                    }
                                }
                                if flags & 1 != 0 {
                                    // The FIN goes out before the input counts
                                    // as written: weir must see the close
                                    // before the next request.
                                    let _ = s.shutdown().await;
                                    return;
                                }
                            }
                            None => {
                                let name = path.rsplit('/').next().unwrap_or("");
                                let body = format!("check-{name}");
                                let answer = format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{body}", body.len());
                                if s.write_all(answer.as_bytes()).await.is_err() {
                                    return;
                                }
                            }
                        }
                    }
                    match s.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
            });
        }
    });
    addr
}

fn config(upstream: SocketAddr) -> String {
    format!(
        r#"
[listen]
addr = "127.0.0.1:0"
[admin]
addr = "127.0.0.1:0"
[timeouts]
connect = "1s"
upstream_response = "200ms"
upstream_read = "100ms"
[backends.up]
addrs = ["{upstream}"]
outlier = false

[[routes]]
name = "all"
stable = "up"
"#
    )
}
