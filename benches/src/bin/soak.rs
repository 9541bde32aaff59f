//! Soak test: the real release binary under steady, mixed load while
//! everything around it moves, checking that it neither errs nor grows.
//!
//! `benches/soak.sh [SECONDS]`, or
//! `cargo run --release -p weir-benches --features soak --bin soak -- [SECONDS] [OPTIONS]`
//! (the binary is `weir` next to the soak binary, e.g. `target/release/weir`,
//! or `$WEIR`). Options: `--clients N --h2 N --ws N --grpc N --misbehaving N
//! --slowloris N --allow-flap-errors --crash-flaps`.
//!
//! For SECONDS (default 600), four routes on one listener:
//!
//! * `web` (`/`): stable on two addresses (`a`, `b`), canary on one (`c`),
//!   all HTTP/1.1 upstreams answering their name. `b` **flaps**: every 6 s
//!   its listener closes for 2 s, then it comes back on the same port. It
//!   goes down like a server being restarted (requests in flight finish,
//!   then its connections close); with `--crash-flaps` like a crashed one
//!   (connections reset with requests in flight). Clients: `--clients` (16)
//!   HTTP/1.1 keep-alive clients and `--h2` (2) HTTP/2 (h2c) connections
//!   with 4 streams each, back to back (sticky keys, forced canary, and
//!   keyless requests);
//! * `ws` (`/ws/`): a WebSocket echo server on each side; `--ws` (2) clients
//!   open sessions of 50 messages, each echo checked, over and over;
//! * `grpc` (`/weir.test.Echo/`, `grpc = true`): a tonic server on each side
//!   over h2c; `--grpc` (2) tonic channels with 2 callers each make unary,
//!   server-streaming and bidirectional calls, each answer checked;
//! * `misbehaving` (`/bad/`): one upstream that answers 13 of every 20
//!   requests with a fault or an unusual response, chosen by the request's
//!   sequence number: bodies cut or reset,
//!   bytes after the response, both Content-Length and Transfer-Encoding,
//!   a bad head, no answer, 1xx responses, a trickled head or body, a 204
//!   followed by junk, chunked with extensions and trailers, read-to-close.
//!   `--misbehaving` (2) HTTP/1.1 clients. Each request knows what it must
//!   get: the exact answer where the upstream's response can be read
//!   whole, a 502 or a cut response where it cannot (never no response). Where a response
//!   leaves its connection unfit for another (bytes after it, both lengths,
//!   `connection: close`), the upstream keeps the connection open and
//!   counts any further request on it (weir must have closed it).
//!
//! Every second the config file is rewritten (temp file + rename, so weir's
//! watcher sees one atomic change) with new weights and a new canary
//! version, and every other second a SIGHUP follows at once, racing the
//! watcher. `--slowloris` (4) clients send a request head one byte every
//! 300 ms and must be cut by `timeouts.header_read` (2 s) within 1.5× of it.
//!
//! It prints requests by protocol, non-2xx by status, transport errors, the
//! misbehaving upstream's outcomes, reloads, and weir's RSS and open fds
//! after warm-up and at the end, then stops weir with SIGTERM. It exits 1
//! when:
//!
//! * any request failed outside a flap window (or with a status other than
//!   502/503/504 inside one), any transport error, a wrong body or echo;
//! * any request failed inside a flap window (its start or end within
//!   250 ms of one), unless `--allow-flap-errors`;
//! * a request to the misbehaving upstream got other than what it must, or
//!   weir sent a request on a connection it must have closed;
//! * a kind of client got no answer at all, or the misbehaving upstream
//!   caused no failure (its route was not reached);
//! * a client task panicked;
//! * a slowloris connection outlived 1.5× `header_read` + 1 s, or none was cut;
//! * a reload was rejected, fewer than half the files written were
//!   reloaded, or weir exited early or not cleanly on SIGTERM;
//! * RSS grew by more than 50 % + 10 MiB between warm-up and end, open fds
//!   under load by more than the client connections of every kind + 8
//!   (a WebSocket session counts twice: its upstream), or the fds do not
//!   return to the idle baseline (+2) once the load stops.
//!
//! The steady upstreams, the gRPC and WebSocket servers, the weir child,
//! and the reading of its metrics are the tests crate's helpers
//! (`weir_tests`).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;
use weir_tests::grpc::{Caller, GrpcServer};
use weir_tests::{
    sample_sum, try_parse_prometheus, websocket_echo, write_atomically, Keep, Launch, Mode, Process, Samples, Stop,
    Upstream,
};

type Error = Box<dyn std::error::Error + Send + Sync>;
type Res<T> = Result<T, Error>;
type HttpClient = Client<HttpConnector, Empty<Bytes>>;

const HEADER_READ: Duration = Duration::from_secs(2);
const FLAP_UP: Duration = Duration::from_secs(4);
const FLAP_DOWN: Duration = Duration::from_secs(2);
/// A request touching a flap window widened by this much counts as flap-related.
const FLAP_MARGIN: Duration = Duration::from_millis(250);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
const SLOWLORIS_BYTE_EVERY: Duration = Duration::from_millis(300);
/// Streams each `--h2` connection carries at once.
const H2_STREAMS: usize = 4;
/// Callers on each `--grpc` channel.
const GRPC_CALLERS: usize = 2;
/// Messages per WebSocket session, and the pause between them.
const WS_MESSAGES: u64 = 50;
const WS_PAUSE: Duration = Duration::from_millis(20);
/// An ephemeral loopback port.
const LOOPBACK: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 0);

struct Args {
    seconds: u64,
    clients: usize,
    h2: usize,
    ws: usize,
    grpc: usize,
    misbehaving: usize,
    slowloris: usize,
    allow_flap_errors: bool,
    crash_flaps: bool,
    weir: PathBuf,
}

impl Args {
    /// Client connections the load holds open at once.
    fn connections(&self) -> usize {
        self.clients + self.h2 + self.ws + self.grpc + self.misbehaving + self.slowloris
    }

    /// [`Args::connections`], plus the upstream connection each WebSocket
    /// session holds: the open fds under load may grow by this.
    fn fd_slack(&self) -> usize {
        self.connections() + self.ws + 8
    }
}

const USAGE: &str = "soak [SECONDS] [--clients N] [--h2 N] [--ws N] [--grpc N] [--misbehaving N] [--slowloris N] \
                     [--allow-flap-errors] [--crash-flaps]   (WEIR=path/to/weir)";

fn args() -> Res<Args> {
    let mut a = Args {
        seconds: 600,
        clients: 16,
        h2: 2,
        ws: 2,
        grpc: 2,
        misbehaving: 2,
        slowloris: 4,
        allow_flap_errors: false,
        crash_flaps: false,
        weir: std::env::var_os("WEIR").map(PathBuf::from).unwrap_or_else(default_weir),
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut number = |what: &str| -> Res<usize> {
            let v = it.next().ok_or_else(|| format!("{what} needs a number"))?;
            Ok(v.parse().map_err(|_| format!("{what}: \"{v}\" is not a number"))?)
        };
        match arg.as_str() {
            "--clients" => a.clients = number("--clients")?,
            "--h2" => a.h2 = number("--h2")?,
            "--ws" => a.ws = number("--ws")?,
            "--grpc" => a.grpc = number("--grpc")?,
            "--misbehaving" => a.misbehaving = number("--misbehaving")?,
            "--slowloris" => a.slowloris = number("--slowloris")?,
            "--allow-flap-errors" => a.allow_flap_errors = true,
            "--crash-flaps" => a.crash_flaps = true,
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            s => a.seconds = s.parse().map_err(|_| format!("unknown argument \"{s}\"\nusage: {USAGE}"))?,
        }
    }
    if a.seconds < 10 || a.clients == 0 {
        return Err("SECONDS must be at least 10 and --clients at least 1".into());
    }
    Ok(a)
}

/// `target/release/weir` next to this binary (`target/release/soak`).
fn default_weir() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|d| d.join("weir")))
        .unwrap_or_else(|| PathBuf::from("target/release/weir"))
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The kinds of client, for the counts.
#[derive(Clone, Copy, Debug)]
enum Proto {
    H1,
    H2,
    Ws,
    Grpc,
    Misbehaving,
}

impl Proto {
    const ALL: [Proto; 5] = [Proto::H1, Proto::H2, Proto::Ws, Proto::Grpc, Proto::Misbehaving];

    fn name(self) -> &'static str {
        match self {
            Proto::H1 => "http/1.1",
            Proto::H2 => "h2",
            Proto::Ws => "websocket",
            Proto::Grpc => "grpc",
            Proto::Misbehaving => "misbehaving",
        }
    }
}

/// What the run saw; every field is bounded (counters and small maps whose
/// keys carry no request value).
#[derive(Default)]
struct Stats {
    /// Requests (WebSocket: sessions) answered as they must be, by [`Proto`].
    ok: [AtomicU64; 5],
    /// WebSocket messages echoed.
    ws_messages: AtomicU64,
    /// gRPC calls answered, by kind of call.
    grpc_calls: Mutex<BTreeMap<&'static str, u64>>,
    by_body: Mutex<BTreeMap<String, u64>>,
    /// Non-2xx outside flap windows, by protocol and status.
    failed: Mutex<BTreeMap<String, u64>>,
    /// Non-2xx touching a flap window, by protocol and status.
    flap_failed: Mutex<BTreeMap<String, u64>>,
    /// When the first of them ended, in ms after the address went down.
    flap_when_ms: Mutex<Vec<i64>>,
    /// Errors below HTTP (and gRPC and WebSocket failures), by protocol and cause.
    transport: Mutex<BTreeMap<String, u64>>,
    /// Failures the misbehaving upstream caused, by what it did and what
    /// the client saw.
    upstream_caused: Mutex<BTreeMap<String, u64>>,
    /// Answers other than the one a request must get: wrong bodies,
    /// wrong echoes, a misbehaving upstream's fault passed off as a whole
    /// response, or a valid response lost.
    violations: Mutex<BTreeMap<String, u64>>,
    /// The slowest request (or gRPC call; not WebSocket sessions).
    max_latency_us: AtomicU64,
    slowloris_cut: AtomicU64,
    slowloris_max_ms: AtomicU64,
    slowloris_survived: AtomicU64,
    /// Flap windows (down from, back at); `None` while down. One per 6 s.
    flaps: Mutex<Vec<(Instant, Option<Instant>)>>,
}

impl Stats {
    /// The flap window a request touched: the time from the address going
    /// down to the request's end, in ms (negative: it ended just before).
    fn in_flap(&self, start: Instant, end: Instant) -> Option<i64> {
        lock(&self.flaps).iter().rev().find_map(|&(down, up)| {
            let up = up.map_or(end + FLAP_MARGIN, |u| u + FLAP_MARGIN);
            (start <= up && end + FLAP_MARGIN >= down).then(|| match end.checked_duration_since(down) {
                Some(after) => after.as_millis() as i64,
                None => -(down.duration_since(end).as_millis() as i64),
            })
        })
    }

    fn ok(&self, proto: Proto) -> u64 {
        self.ok[proto as usize].load(Ordering::Relaxed)
    }

    fn total(&self) -> u64 {
        let sum = |m: &Mutex<BTreeMap<String, u64>>| lock(m).values().sum::<u64>();
        Proto::ALL.iter().map(|&p| self.ok(p)).sum::<u64>()
            + sum(&self.failed)
            + sum(&self.flap_failed)
            + sum(&self.transport)
            + sum(&self.upstream_caused)
            + sum(&self.violations)
    }

    fn timed(&self, start: Instant) {
        self.max_latency_us.fetch_max(start.elapsed().as_micros() as u64, Ordering::Relaxed);
    }
}

fn bump<K: Ord>(m: &Mutex<BTreeMap<K, u64>>, k: K) {
    *lock(m).entry(k).or_default() += 1;
}

// ---------------------------------------------------------------- upstreams

/// A steady upstream on an ephemeral loopback port (answering its name).
async fn upstream(name: &'static str) -> Res<Upstream> {
    Ok(Upstream::bind(LOOPBACK, name, Mode::Named, false).await?)
}

/// An upstream that goes away (listener and connections) for [`FLAP_DOWN`]
/// every [`FLAP_UP`] + [`FLAP_DOWN`], and comes back on the same port. It
/// goes down as a restarted server does (requests in flight finish, then
/// its connections close), or, with `crash`, as a crashed one (connections
/// reset with requests in flight).
async fn flapping_upstream(
    name: &'static str,
    crash: bool,
    stats: Arc<Stats>,
    stop: Arc<AtomicBool>,
) -> Res<SocketAddr> {
    let first = Upstream::bind(LOOPBACK, name, Mode::Named, false).await?;
    let addr = first.addr;
    tokio::spawn(async move {
        let mut up = Some(first);
        while !stop.load(Ordering::Relaxed) {
            let Some(u) = up.take() else { break };
            tokio::time::sleep(FLAP_UP).await;
            lock(&stats.flaps).push((Instant::now(), None));
            u.stop(if crash { Stop::Crash } else { Stop::Restart }).await;
            tokio::time::sleep(FLAP_DOWN).await;
            // Same port again; retry briefly if the kernel is slow to free it.
            for _ in 0..50 {
                if let Ok(u) = Upstream::bind(addr, name, Mode::Named, false).await {
                    up = Some(u);
                    break;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            if let Some(last) = lock(&stats.flaps).last_mut() {
                last.1 = Some(Instant::now());
            }
            if up.is_none() {
                eprintln!("soak: could not bind {addr} again; the flapping upstream stays down");
            }
        }
    });
    Ok(addr)
}

/// What the misbehaving upstream does with a request, by its sequence
/// number (`GET /bad/N`): [`Misbehaviour::of`]. Most are faults; the
/// trickles, 1xx responses and chunk extensions are valid but unusual.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Misbehaviour {
    /// A valid response, the connection kept.
    Fine,
    /// Content-Length promises more than is sent; then the connection closes.
    CutBody,
    /// A whole response followed by the bytes of another one ("EVIL!").
    TrailingBytes,
    /// A head that is not HTTP; then the connection closes.
    BadHead,
    /// Both Transfer-Encoding: chunked and a wrong Content-Length. RFC 9112
    /// §6.3 lets a client read it as chunked or fail it; weir reads it as
    /// chunked (and never reuses the connection), so the soak expects the
    /// whole body.
    BothLengths,
    /// Part of the body, then a TCP reset.
    Reset,
    /// The body a byte at a time.
    TrickledBody,
    /// The connection closes without a byte of response.
    NoResponse,
    /// `100 Continue` and `103 Early Hints` before the response.
    Interim,
    /// Chunked, with a chunk extension and a trailer field.
    ChunkedTrailers,
    /// `connection: close`, and the connection left open.
    CloseAfter,
    /// The whole response three bytes at a time.
    TrickledHead,
    /// `204 No Content`, then bytes that are no response ("JUNK").
    NoContentWithJunk,
    /// No length: the body runs to the connection's close.
    ReadToClose,
}

impl Misbehaviour {
    /// 13 misbehaviours and 7 valid responses, in a fixed round.
    const ROUND: [Misbehaviour; 20] = [
        Misbehaviour::Fine,
        Misbehaviour::CutBody,
        Misbehaviour::TrailingBytes,
        Misbehaviour::Fine,
        Misbehaviour::BadHead,
        Misbehaviour::BothLengths,
        Misbehaviour::Fine,
        Misbehaviour::Reset,
        Misbehaviour::TrickledBody,
        Misbehaviour::Fine,
        Misbehaviour::NoResponse,
        Misbehaviour::Interim,
        Misbehaviour::Fine,
        Misbehaviour::ChunkedTrailers,
        Misbehaviour::CloseAfter,
        Misbehaviour::Fine,
        Misbehaviour::TrickledHead,
        Misbehaviour::NoContentWithJunk,
        Misbehaviour::Fine,
        Misbehaviour::ReadToClose,
    ];

    fn of(seq: u64) -> Misbehaviour {
        Self::ROUND[(seq % Self::ROUND.len() as u64) as usize]
    }

    /// What the client must get: exactly this status and body, or `None`
    /// for a failure the upstream caused (a 502, or a response cut short).
    fn expect(self, seq: u64) -> Option<(u16, String)> {
        match self {
            Misbehaviour::CutBody | Misbehaviour::BadHead | Misbehaviour::Reset | Misbehaviour::NoResponse => None,
            Misbehaviour::NoContentWithJunk => Some((204, String::new())),
            _ => Some((200, misbehaving_body(seq))),
        }
    }
}

fn misbehaving_body(seq: u64) -> String {
    format!("bad-ok {seq}")
}

/// The misbehaving upstream: raw HTTP/1.1 on an ephemeral loopback port.
/// `reused` counts the requests weir sent on a connection it must have
/// closed.
async fn misbehaving_upstream(reused: Arc<AtomicU64>) -> Res<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = TcpListener::bind(LOOPBACK).await?;
    let addr = listener.local_addr()?;
    let task = tokio::spawn(async move {
        loop {
            match listener.accept().await {
                Ok((s, _)) => {
                    tokio::spawn(misbehave(s, reused.clone()));
                }
                // Out of fds for a moment, or a connection aborted before
                // it was accepted: the listener goes on.
                Err(e) => {
                    eprintln!("soak: the misbehaving upstream's accept: {e}");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
        }
    });
    Ok((addr, task))
}

/// What the connection does after an answer.
enum Next {
    /// Reads the next request.
    Serve,
    /// Closes.
    Close,
    /// Stays open, but its framing was broken or it said `close`: weir must
    /// not send another request on it. Any that comes is counted and
    /// answered "EVIL!", which the client sees as a wrong body.
    Poisoned,
}

/// Serves one connection: reads request heads (weir sends these GETs
/// without a body) and answers each as its sequence number says, until
/// the connection closes or a misbehaviour ends it.
async fn misbehave(mut s: TcpStream, reused: Arc<AtomicU64>) {
    let mut buf = Vec::with_capacity(1024);
    let mut poisoned = false;
    loop {
        let end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            if buf.len() > 16 * 1024 {
                return;
            }
            let mut chunk = [0u8; 2048];
            match s.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        let seq = std::str::from_utf8(&buf[..end])
            .ok()
            .and_then(|head| head.split_whitespace().nth(1))
            .and_then(|path| path.strip_prefix("/bad/"))
            .and_then(|n| n.parse::<u64>().ok());
        buf.drain(..end);
        if poisoned {
            reused.fetch_add(1, Ordering::Relaxed);
            let _ = s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nEVIL!").await;
            continue;
        }
        let Some(seq) = seq else {
            let _ = s.write_all(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\nconnection: close\r\n\r\n").await;
            return;
        };
        match answer_as(&mut s, seq).await {
            Ok(Next::Serve) => {}
            Ok(Next::Poisoned) => poisoned = true,
            Ok(Next::Close) | Err(_) => return,
        }
    }
}

/// Writes the answer to request `seq`; what the connection does next.
async fn answer_as(s: &mut TcpStream, seq: u64) -> std::io::Result<Next> {
    let body = misbehaving_body(seq);
    let whole = format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{body}", body.len());
    let cut_head = format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n", body.len() + 100);
    Ok(match Misbehaviour::of(seq) {
        Misbehaviour::Fine => {
            s.write_all(whole.as_bytes()).await?;
            Next::Serve
        }
        Misbehaviour::CutBody => {
            s.write_all(format!("{cut_head}{body}").as_bytes()).await?;
            s.shutdown().await?;
            Next::Close
        }
        Misbehaviour::TrailingBytes => {
            s.write_all(format!("{whole}HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nEVIL!").as_bytes()).await?;
            Next::Poisoned
        }
        Misbehaviour::BadHead => {
            s.write_all(b"HTTP/1.1 2x0 OK\r\n\r\n").await?;
            Next::Close
        }
        Misbehaviour::BothLengths => {
            let r = format!(
                "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ncontent-length: 3\r\n\r\n{:x}\r\n{body}\r\n0\r\n\r\n",
                body.len()
            );
            s.write_all(r.as_bytes()).await?;
            Next::Poisoned
        }
        Misbehaviour::Reset => {
            s.write_all(format!("{cut_head}{}", &body[..3]).as_bytes()).await?;
            s.flush().await?;
            // A zero linger makes the close a reset; it never blocks.
            #[allow(deprecated)]
            s.set_linger(Some(Duration::ZERO))?;
            Next::Close
        }
        Misbehaviour::TrickledBody => {
            s.write_all(format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n", body.len()).as_bytes()).await?;
            for b in body.bytes() {
                tokio::time::sleep(Duration::from_millis(5)).await;
                s.write_all(&[b]).await?;
            }
            Next::Serve
        }
        Misbehaviour::NoResponse => Next::Close,
        Misbehaviour::Interim => {
            let r = format!(
                "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nlink: </a.css>; rel=preload\r\n\r\n{whole}"
            );
            s.write_all(r.as_bytes()).await?;
            Next::Serve
        }
        Misbehaviour::ChunkedTrailers => {
            let (a, b) = body.split_at(3);
            let r = format!(
                "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ntrailer: x-t\r\n\r\n3;ext=1\r\n{a}\r\n{:x}\r\n{b}\r\n0\r\nx-t: 1\r\n\r\n",
                b.len()
            );
            s.write_all(r.as_bytes()).await?;
            Next::Serve
        }
        Misbehaviour::CloseAfter => {
            let r = format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}", body.len());
            s.write_all(r.as_bytes()).await?;
            Next::Poisoned
        }
        Misbehaviour::TrickledHead => {
            for piece in whole.as_bytes().chunks(3) {
                s.write_all(piece).await?;
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            Next::Serve
        }
        Misbehaviour::NoContentWithJunk => {
            s.write_all(b"HTTP/1.1 204 No Content\r\n\r\nJUNK").await?;
            Next::Poisoned
        }
        Misbehaviour::ReadToClose => {
            s.write_all(format!("HTTP/1.1 200 OK\r\n\r\n{body}").as_bytes()).await?;
            s.shutdown().await?;
            Next::Close
        }
    })
}

// --------------------------------------------------------------------- weir

/// Where the upstreams listen.
struct Addrs {
    a: SocketAddr,
    b: SocketAddr,
    c: SocketAddr,
    ws: [SocketAddr; 2],
    grpc: [SocketAddr; 2],
    bad: SocketAddr,
}

fn config_text(u: &Addrs, weight: u32, version: &str) -> String {
    format!(
        r#"[listen]
addr = "127.0.0.1:0"
[admin]
addr = "127.0.0.1:0"
[timeouts]
connect = "500ms"
header_read = "{header_read}s"
upstream_response = "5s"
idle = "30s"
upstream_idle = "2s"

[backends.stable]
addrs = ["{a}", "{b}"]
version = "v1"
[backends.canary]
addrs = ["{c}"]
version = "{version}"
[backends.ws-stable]
addrs = ["{ws0}"]
version = "v1"
[backends.ws-canary]
addrs = ["{ws1}"]
version = "v2"
[backends.grpc-stable]
addrs = ["{g0}"]
version = "v1"
http2 = true
[backends.grpc-canary]
addrs = ["{g1}"]
version = "v2"
http2 = true
[backends.misbehaving]
addrs = ["{bad}"]

[[routes]]
name = "grpc"
match = {{ path_prefix = "/weir.test.Echo/" }}
grpc = true
stable = "grpc-stable"
canary = "grpc-canary"
weight = {weight}
sticky = {{ header = "x-user-id" }}

[[routes]]
name = "ws"
match = {{ path_prefix = "/ws/" }}
stable = "ws-stable"
canary = "ws-canary"
weight = {weight}
sticky = {{ header = "x-user-id" }}

[[routes]]
name = "misbehaving"
match = {{ path_prefix = "/bad/" }}
stable = "misbehaving"

[[routes]]
name = "web"
stable = "stable"
canary = "canary"
weight = {weight}
sticky = {{ header = "x-user-id" }}
force = {{ header = "x-canary" }}
"#,
        header_read = HEADER_READ.as_secs(),
        a = u.a,
        b = u.b,
        c = u.c,
        ws0 = u.ws[0],
        ws1 = u.ws[1],
        g0 = u.grpc[0],
        g1 = u.grpc[1],
        bad = u.bad,
    )
}

/// GET on the admin listener with a throwaway connection.
async fn admin_get(admin: SocketAddr, path: &str) -> Res<(u16, String)> {
    let mut s = tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(admin)).await??;
    s.write_all(format!("GET {path} HTTP/1.1\r\nhost: {admin}\r\nconnection: close\r\n\r\n").as_bytes()).await?;
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut buf)).await??;
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status = text.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    Ok((status, body))
}

// ------------------------------------------------------------------ clients

/// Requests to the `web` route, back to back, on `client` (HTTP/1.1 with
/// one keep-alive connection, or a stream of a shared h2 connection).
async fn web_loop(proto: Proto, id: usize, client: HttpClient, url: String, stats: Arc<Stats>, stop: Arc<AtomicBool>) {
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let mut req = hyper::Request::get(&url);
        match n % 4 {
            0 => {}                                                           // keyless: the exact sequence
            1 => req = req.header("x-canary", "always"),                      // forced canary
            _ => req = req.header("x-user-id", format!("u{id}-{}", n % 500)), // sticky
        }
        n += 1;
        let Ok(req) = req.body(Empty::new()) else { continue };
        let start = Instant::now();
        let result = tokio::time::timeout(REQUEST_TIMEOUT, async {
            let resp = client.request(req).await?;
            let status = resp.status().as_u16();
            let body = resp.into_body().collect().await?.to_bytes();
            Ok::<_, Error>((status, body))
        })
        .await;
        let end = Instant::now();
        stats.timed(start);
        match result {
            Ok(Ok((status, body))) if (200..300).contains(&status) => match &body[..] {
                b"stable-a" | b"stable-b" | b"canary" => {
                    stats.ok[proto as usize].fetch_add(1, Ordering::Relaxed);
                    bump(&stats.by_body, String::from_utf8_lossy(&body).into_owned());
                }
                _ => bump(&stats.violations, format!("{}: unexpected body", proto.name())),
            },
            Ok(Ok((status, _))) => {
                let flap = if matches!(status, 502..=504) { stats.in_flap(start, end) } else { None };
                if let Some(ms) = flap {
                    bump(&stats.flap_failed, format!("{} {status}", proto.name()));
                    let mut when = lock(&stats.flap_when_ms);
                    if when.len() < 20 {
                        when.push(ms);
                    }
                } else {
                    bump(&stats.failed, format!("{} {status}", proto.name()));
                }
            }
            Ok(Err(e)) => bump(&stats.transport, format!("{}: {}", proto.name(), short_error(&*e))),
            Err(_) => bump(&stats.transport, format!("{}: timeout", proto.name())),
        }
    }
}

/// WebSocket sessions on the `ws` route, over and over: each sends
/// [`WS_MESSAGES`] text messages, checks every echo, and closes.
async fn ws_loop(id: usize, data: SocketAddr, stats: Arc<Stats>, stop: Arc<AtomicBool>) {
    let mut session = 0u64;
    while !stop.load(Ordering::Relaxed) {
        session += 1;
        let run = async {
            let mut req = format!("ws://{data}/ws/{id}").into_client_request()?;
            req.headers_mut().insert("x-user-id", format!("w{id}-{}", session % 50).parse()?);
            let (mut ws, _) = tokio_tungstenite::connect_async(req).await?;
            for i in 0..WS_MESSAGES {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let text = format!("s{session} m{i}");
                ws.send(Message::text(text.clone())).await?;
                match ws.next().await {
                    Some(Ok(Message::Text(got))) if got.as_str() == text => {
                        stats.ws_messages.fetch_add(1, Ordering::Relaxed);
                    }
                    Some(Ok(_)) => return Ok(false),
                    Some(Err(e)) => return Err(e.into()),
                    None => return Err("closed before the echo".into()),
                }
                tokio::time::sleep(WS_PAUSE).await;
            }
            ws.close(None).await?;
            // The server's close frame, then the end of the stream.
            while let Some(m) = ws.next().await {
                m?;
            }
            Ok::<_, Error>(true)
        };
        let limit = REQUEST_TIMEOUT + WS_PAUSE * WS_MESSAGES as u32;
        match tokio::time::timeout(limit, run).await {
            Ok(Ok(true)) => {
                stats.ok[Proto::Ws as usize].fetch_add(1, Ordering::Relaxed);
            }
            Ok(Ok(false)) => bump(&stats.violations, "websocket: wrong echo".to_string()),
            Ok(Err(e)) => bump(&stats.transport, format!("websocket: {}", short_error(&*e))),
            Err(_) => bump(&stats.transport, "websocket: timeout".to_string()),
        }
    }
}

/// gRPC calls on the `grpc` route, back to back on a shared channel:
/// unary (half of them), server-streaming and bidirectional; each answer
/// checked.
async fn grpc_loop(id: usize, mut caller: Caller, stats: Arc<Stats>, stop: Arc<AtomicBool>) {
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        n += 1;
        let payload = Bytes::from(format!("g{id}-{n}"));
        let user = format!("g{id}-{}", n % 200);
        let start = Instant::now();
        let (kind, result) = match n % 4 {
            0 | 1 => {
                let md = [("x-user-id", user.as_str())];
                let r = tokio::time::timeout(REQUEST_TIMEOUT, caller.unary(payload.clone(), &md)).await;
                let r = r.map(|r| {
                    r.map(|resp| {
                        let served =
                            resp.metadata().get("x-served-by").and_then(|v| v.to_str().ok()).map(str::to_string);
                        resp.into_inner() == payload && matches!(served.as_deref(), Some("grpc-stable" | "grpc-canary"))
                    })
                });
                ("unary", r)
            }
            2 => {
                let md = [("x-user-id", user.as_str()), ("x-count", "3")];
                let r = tokio::time::timeout(REQUEST_TIMEOUT, caller.server_stream(payload.clone(), &md)).await;
                let r = r.map(|r| {
                    r.and_then(|(_, msgs, end)| {
                        end?;
                        Ok(msgs.len() == 3 && msgs.iter().all(|m| *m == payload))
                    })
                });
                ("server-streaming", r)
            }
            _ => {
                let msgs = vec![payload.clone(); 3];
                let r = tokio::time::timeout(REQUEST_TIMEOUT, caller.bidi_ping_pong(msgs.clone())).await;
                ("bidirectional", r.map(|r| r.map(|got| got == msgs)))
            }
        };
        stats.timed(start);
        match result {
            Ok(Ok(true)) => {
                stats.ok[Proto::Grpc as usize].fetch_add(1, Ordering::Relaxed);
                bump(&stats.grpc_calls, kind);
            }
            Ok(Ok(false)) => bump(&stats.violations, format!("grpc {kind}: wrong answer")),
            Ok(Err(status)) => bump(&stats.transport, format!("grpc {kind}: {:?}", status.code())),
            Err(_) => bump(&stats.transport, format!("grpc {kind}: timeout")),
        }
    }
}

/// Requests to the misbehaving upstream, each numbered from `seq`, each
/// checked against what its number says it must get.
async fn misbehaving_loop(url: String, seq: Arc<AtomicU64>, stats: Arc<Stats>, stop: Arc<AtomicBool>) {
    let client: HttpClient = Client::builder(TokioExecutor::new()).pool_max_idle_per_host(1).build_http();
    while !stop.load(Ordering::Relaxed) {
        let n = seq.fetch_add(1, Ordering::Relaxed);
        let kind = Misbehaviour::of(n);
        let Ok(req) = hyper::Request::get(format!("{url}/bad/{n}")).body(Empty::new()) else { continue };
        /// What the client saw.
        enum Got {
            Whole(u16, Bytes),
            /// The head came, then the body failed.
            Cut(u16),
            /// No response.
            Closed(String),
        }
        let got = tokio::time::timeout(REQUEST_TIMEOUT, async {
            match client.request(req).await {
                Ok(resp) => {
                    let status = resp.status().as_u16();
                    match resp.into_body().collect().await {
                        Ok(b) => Got::Whole(status, b.to_bytes()),
                        Err(_) => Got::Cut(status),
                    }
                }
                Err(e) => Got::Closed(short_error(&e)),
            }
        })
        .await;
        // Not in max_latency: some of these answers trickle on purpose.
        let Ok(got) = got else {
            bump(&stats.violations, format!("{kind:?}: no answer within {} s", REQUEST_TIMEOUT.as_secs()));
            continue;
        };
        match (kind.expect(n), got) {
            (Some((status, body)), Got::Whole(s, b)) if s == status && b == body.as_bytes() => {
                stats.ok[Proto::Misbehaving as usize].fetch_add(1, Ordering::Relaxed);
            }
            (Some(_), Got::Whole(s, _)) => bump(&stats.violations, format!("{kind:?}: {s} with another body")),
            (Some(_), Got::Cut(s)) => bump(&stats.violations, format!("{kind:?}: {s}, body cut")),
            (Some(_), Got::Closed(e)) => bump(&stats.violations, format!("{kind:?}: no response: {e}")),
            (None, Got::Whole(502, _)) => bump(&stats.upstream_caused, format!("{kind:?}: 502")),
            (None, Got::Whole(s, _)) => bump(&stats.violations, format!("{kind:?}: {s}, as if whole")),
            (None, Got::Cut(s)) => bump(&stats.upstream_caused, format!("{kind:?}: {s}, body cut")),
            // weir answers 502 to whatever fails before a response head.
            (None, Got::Closed(e)) => bump(&stats.violations, format!("{kind:?}: no response: {e}")),
        }
    }
}

/// The innermost cause, without addresses or numbers that would make the
/// map grow.
fn short_error(e: &(dyn std::error::Error + 'static)) -> String {
    let mut inner = e;
    while let Some(src) = inner.source() {
        inner = src;
    }
    inner.to_string().chars().filter(|c| !c.is_ascii_digit()).take(80).collect()
}

/// Sends a request head one byte at a time and times how long weir takes to
/// cut the connection; over and over until stopped.
async fn slowloris_loop(data: SocketAddr, stats: Arc<Stats>, stop: Arc<AtomicBool>) {
    let head = b"GET /slow HTTP/1.1\r\nhost: soak\r\nx-pad: ";
    let limit = HEADER_READ * 3 / 2 + Duration::from_secs(1);
    while !stop.load(Ordering::Relaxed) {
        let Ok(mut s) = TcpStream::connect(data).await else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let start = Instant::now();
        let mut buf = [0u8; 512];
        let mut i = 0usize;
        let cut = loop {
            if stop.load(Ordering::Relaxed) {
                break None;
            }
            if start.elapsed() > limit {
                break Some(false);
            }
            let byte = head.get(i).copied().unwrap_or(b'a');
            i += 1;
            if s.write_all(&[byte]).await.is_err() {
                break Some(true);
            }
            match tokio::time::timeout(SLOWLORIS_BYTE_EVERY, s.read(&mut buf)).await {
                Ok(Ok(0)) | Ok(Err(_)) => break Some(true),
                Ok(Ok(_)) => {} // an error response before the close is fine
                Err(_) => {}
            }
        };
        match cut {
            Some(true) => {
                stats.slowloris_cut.fetch_add(1, Ordering::Relaxed);
                stats.slowloris_max_ms.fetch_max(start.elapsed().as_millis() as u64, Ordering::Relaxed);
            }
            Some(false) => {
                stats.slowloris_survived.fetch_add(1, Ordering::Relaxed);
            }
            None => {}
        }
    }
}

// --------------------------------------------------------------------- main

struct Sample {
    rss_kib: u64,
    fds: usize,
}

impl Sample {
    /// weir's RSS and open fds now (0 where /proc has none).
    fn of(weir: &Process) -> Sample {
        Sample { rss_kib: weir.rss_kib().unwrap_or(0), fds: weir.fds().unwrap_or(0) }
    }
}

fn main() -> ExitCode {
    let args = match args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("soak: {e}");
            return ExitCode::from(2);
        }
    };
    let rt = match tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("soak: {e}");
            return ExitCode::from(2);
        }
    };
    match rt.block_on(soak(args)) {
        Ok(failures) if failures.is_empty() => {
            println!("PASS");
            ExitCode::SUCCESS
        }
        Ok(failures) => {
            for f in failures {
                println!("FAIL: {f}");
            }
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("soak: {e}");
            ExitCode::from(2)
        }
    }
}

async fn soak(args: Args) -> Res<Vec<String>> {
    let stats = Arc::new(Stats::default());
    let stop_all = Arc::new(AtomicBool::new(false));
    // Held to the end: dropped, an upstream stops listening.
    let stable_a = upstream("stable-a").await?;
    let b = flapping_upstream("stable-b", args.crash_flaps, stats.clone(), stop_all.clone()).await?;
    let canary = upstream("canary").await?;
    let (ws0, _ws0_task) = websocket_echo().await;
    let (ws1, _ws1_task) = websocket_echo().await;
    let grpc_stable = GrpcServer::start("grpc-stable").await;
    let grpc_canary = GrpcServer::start("grpc-canary").await;
    let reused = Arc::new(AtomicU64::new(0));
    let (bad, _bad_task) = misbehaving_upstream(reused.clone()).await?;
    let addrs =
        Addrs { a: stable_a.addr, b, c: canary.addr, ws: [ws0, ws1], grpc: [grpc_stable.addr, grpc_canary.addr], bad };

    let dir = tempfile::Builder::new().prefix("weir-soak-").tempdir()?;
    let path = dir.path().join("weir.toml");
    write_atomically(&path, &config_text(&addrs, 10, "v2-a"))?;
    let launch = Launch {
        bin: args.weir.clone(),
        args: Vec::new(),
        keep: Keep::Warnings(10),
        startup: Duration::from_secs(30),
        env: Vec::new(),
    };
    let mut weir = Process::start(&launch, &path).map_err(|e| format!("weir did not start: {e}"))?;
    println!(
        "soak: weir {} (pid {}) data {} admin {}; web upstreams a={} b={b} (flapping) c={}; {} s; clients: \
         {} http/1.1, {} h2 x {H2_STREAMS} streams, {} websocket, {} grpc x {GRPC_CALLERS} callers, \
         {} to the misbehaving upstream, {} slowloris",
        args.weir.display(),
        weir.child.id(),
        weir.data_addr,
        weir.admin_addr,
        addrs.a,
        addrs.c,
        args.seconds,
        args.clients,
        args.h2,
        args.ws,
        args.grpc,
        args.misbehaving,
        args.slowloris
    );
    let ready_by = Instant::now() + Duration::from_secs(20);
    while !matches!(admin_get(weir.admin_addr, "/readyz").await, Ok((200, _))) {
        if Instant::now() > ready_by {
            return Err("weir not ready within 20 s".into());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Idle baseline: no client connection and an empty upstream pool.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let idle = Sample::of(&weir);

    let start = Instant::now();
    let stop_load = Arc::new(AtomicBool::new(false));
    let mut tasks = JoinSet::new();
    let url = format!("http://{}/soak", weir.data_addr);
    for id in 0..args.clients {
        let client = Client::builder(TokioExecutor::new()).pool_max_idle_per_host(1).build_http();
        tasks.spawn(web_loop(Proto::H1, id, client, url.clone(), stats.clone(), stop_load.clone()));
    }
    for conn in 0..args.h2 {
        // One h2 connection per client, its streams shared by the loops.
        let client = Client::builder(TokioExecutor::new()).http2_only(true).build_http();
        for stream in 0..H2_STREAMS {
            let id = 1000 + conn * H2_STREAMS + stream;
            tasks.spawn(web_loop(Proto::H2, id, client.clone(), url.clone(), stats.clone(), stop_load.clone()));
        }
    }
    for id in 0..args.ws {
        tasks.spawn(ws_loop(id, weir.data_addr, stats.clone(), stop_load.clone()));
    }
    for channel in 0..args.grpc {
        let caller = Caller::try_connect(weir.data_addr).await.map_err(|e| format!("a gRPC channel to weir: {e}"))?;
        for c in 0..GRPC_CALLERS {
            let id = channel * GRPC_CALLERS + c;
            tasks.spawn(grpc_loop(id, caller.clone(), stats.clone(), stop_load.clone()));
        }
    }
    let seq = Arc::new(AtomicU64::new(0));
    for _ in 0..args.misbehaving {
        let base = format!("http://{}", weir.data_addr);
        tasks.spawn(misbehaving_loop(base, seq.clone(), stats.clone(), stop_load.clone()));
    }
    for _ in 0..args.slowloris {
        tasks.spawn(slowloris_loop(weir.data_addr, stats.clone(), stop_load.clone()));
    }

    let total = Duration::from_secs(args.seconds);
    let warm_up = Duration::from_secs((args.seconds / 6).clamp(5, 30));
    let mut warm = None;
    let mut tick = 0u64;
    let mut signals = 0u64;
    let mut last_report = (Instant::now(), 0u64);
    let mut failures = Vec::new();
    while start.elapsed() < total {
        tokio::time::sleep_until(tokio::time::Instant::from_std(start + Duration::from_secs(tick + 1))).await;
        tick += 1;
        if let Ok(Some(status)) = weir.child.try_wait() {
            failures.push(format!("weir exited during the soak: {status}"));
            break;
        }
        // A reload every second: new weight (0..=50 %), a version out of three.
        let weight = (tick * 5) % 55;
        let version = ["v2-a", "v2-b", "v2-c"][(tick / 10 % 3) as usize];
        write_atomically(&path, &config_text(&addrs, weight as u32, version))?;
        if tick.is_multiple_of(2) {
            weir.signal("HUP")?;
            signals += 1;
        }
        if warm.is_none() && start.elapsed() >= warm_up {
            warm = Some(Sample::of(&weir));
        }
        if last_report.0.elapsed() >= Duration::from_secs(10) {
            let n = stats.total();
            let rps = (n - last_report.1) as f64 / last_report.0.elapsed().as_secs_f64();
            println!(
                "{:>5} s  {n:>9} requests  {rps:>7.0} req/s  rss {:>6} KiB  fds {:>4}  failed {:?}  flap {:?}  transport {:?}",
                start.elapsed().as_secs(),
                weir.rss_kib().unwrap_or(0),
                weir.fds().unwrap_or(0),
                lock(&stats.failed),
                lock(&stats.flap_failed),
                lock(&stats.transport)
            );
            last_report = (Instant::now(), n);
        }
    }
    let elapsed = start.elapsed();
    let end = Sample::of(&weir);
    let warm = warm.unwrap_or(Sample { rss_kib: idle.rss_kib, fds: idle.fds });

    stop_load.store(true, Ordering::Relaxed);
    while let Some(done) = tasks.join_next().await {
        if let Err(e) = done {
            failures.push(format!("a client task failed: {e}"));
        }
    }
    let metrics = admin_get(weir.admin_addr, "/metrics").await.map(|(_, body)| body).unwrap_or_default();
    let metrics = try_parse_prometheus(&metrics).unwrap_or_else(|e| {
        eprintln!("soak: /metrics: {e}");
        Samples::default()
    });
    // Once the load is gone (client connections closed, upstream pool idle
    // for timeouts.upstream_idle), the fds must come back.
    let settle_by = Instant::now() + Duration::from_secs(15);
    let mut settled = weir.fds().unwrap_or(0);
    while settled > idle.fds + 2 && Instant::now() < settle_by {
        tokio::time::sleep(Duration::from_millis(100)).await;
        settled = weir.fds().unwrap_or(0);
    }
    stop_all.store(true, Ordering::Relaxed);

    // Stop weir as an orchestrator would.
    weir.signal("TERM")?;
    let term_by = Instant::now() + Duration::from_secs(15);
    let exit = loop {
        if let Some(status) = weir.child.try_wait()? {
            break Some(status);
        }
        if Instant::now() > term_by {
            break None;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };

    // ---- report
    let n = stats.total();
    let failed = lock(&stats.failed).clone();
    let flap_failed = lock(&stats.flap_failed).clone();
    let transport = lock(&stats.transport).clone();
    let violations = lock(&stats.violations).clone();
    let caused = lock(&stats.upstream_caused).clone();
    let flaps = lock(&stats.flaps).len();
    let mib = |k: u64| k as f64 / 1024.0;
    println!(
        "\n== weir soak: {:.0} s, {} client connections, {} slowloris",
        elapsed.as_secs_f64(),
        args.connections() - args.slowloris,
        args.slowloris
    );
    println!("requests            {n} ({:.0} req/s)", n as f64 / elapsed.as_secs_f64());
    let ok: Vec<String> = Proto::ALL.iter().map(|&p| format!("{} {}", p.name(), stats.ok(p))).collect();
    println!("answered right      {} (websocket: sessions)", ok.join(", "));
    println!("served by           {:?}", lock(&stats.by_body));
    println!(
        "websocket           {} messages echoed; grpc calls {:?}",
        stats.ws_messages.load(Ordering::Relaxed),
        lock(&stats.grpc_calls)
    );
    println!("misbehaving upstream, failures it caused:");
    for (what, count) in &caused {
        println!("    {count:>8}  {what}");
    }
    println!("wrong answers       {violations:?}");
    let reused = reused.load(Ordering::Relaxed);
    println!("requests on connections weir must have closed: {reused}");
    let discarded: Vec<String> = ["unread_bytes", "broken_body", "read_timeout"]
        .iter()
        .map(|r| (r, sample_sum(&metrics, "weir_upstream_connections_discarded_total", &[("reason", r)])))
        .map(|(r, v)| format!("{r} {v}"))
        .collect();
    println!("weir discarded      {} upstream connections", discarded.join(", "));
    println!("non-2xx             {failed:?}");
    let mode = if args.crash_flaps { "crash" } else { "restart" };
    println!("non-2xx, flapping   {flap_failed:?} (over {flaps} {mode} flaps of {} s)", FLAP_DOWN.as_secs());
    if !flap_failed.is_empty() {
        println!("  ms after going down {:?}", lock(&stats.flap_when_ms));
    }
    println!("transport errors    {transport:?}");
    println!("max latency         {:.1} ms", stats.max_latency_us.load(Ordering::Relaxed) as f64 / 1000.0);
    println!(
        "slowloris           {} cut (slowest after {} ms, header_read {} s), {} survived",
        stats.slowloris_cut.load(Ordering::Relaxed),
        stats.slowloris_max_ms.load(Ordering::Relaxed),
        HEADER_READ.as_secs(),
        stats.slowloris_survived.load(Ordering::Relaxed)
    );
    let reloads_ok = sample_sum(&metrics, "weir_config_reloads_total", &[("result", "ok")]);
    let reloads_err = sample_sum(&metrics, "weir_config_reloads_total", &[("result", "error")]);
    println!("reloads             {tick} files written, {signals} SIGHUP; weir counted {reloads_ok} ok, {reloads_err} rejected");
    let kinds: Vec<String> = ["connect", "connect_timeout", "timeout", "reset", "protocol", "unavailable"]
        .iter()
        .map(|k| (k, sample_sum(&metrics, "weir_upstream_errors_total", &[("kind", k)])))
        .filter(|(_, v)| *v > 0.0)
        .map(|(k, v)| format!("{k} {v}"))
        .collect();
    println!("upstream errors     {}", if kinds.is_empty() { "none".to_string() } else { kinds.join(", ") });
    println!(
        "RSS                 idle {:.1} MiB, after warm-up {:.1} MiB, end {:.1} MiB",
        mib(idle.rss_kib),
        mib(warm.rss_kib),
        mib(end.rss_kib)
    );
    println!(
        "open fds            idle {}, after warm-up {}, end {}, after the load stopped {settled}",
        idle.fds, warm.fds, end.fds
    );
    println!("weir warnings/errors logged: {}", weir.warnings.load(Ordering::Relaxed));
    for line in lock(&weir.log).iter() {
        println!("    {line}");
    }
    match exit {
        Some(status) => println!("SIGTERM             exited with {status}"),
        None => println!("SIGTERM             still running after 15 s"),
    }

    // ---- verdict
    if n == 0 {
        failures.push("no request completed".to_string());
    }
    if !failed.is_empty() {
        failures.push(format!("non-2xx outside flap windows: {failed:?}"));
    }
    if !flap_failed.is_empty() && !args.allow_flap_errors {
        failures.push(format!("non-2xx while the stable address flapped: {flap_failed:?} (--allow-flap-errors)"));
    }
    if !transport.is_empty() {
        failures.push(format!("transport errors: {transport:?}"));
    }
    if !violations.is_empty() {
        failures.push(format!("wrong answers: {violations:?}"));
    }
    if reused > 0 {
        failures.push(format!("{reused} requests sent on upstream connections weir must have closed"));
    }
    let expected =
        [(Proto::H2, args.h2), (Proto::Ws, args.ws), (Proto::Grpc, args.grpc), (Proto::Misbehaving, args.misbehaving)];
    for (proto, clients) in expected {
        if clients > 0 && stats.ok(proto) == 0 {
            failures.push(format!("no {} request was answered", proto.name()));
        }
    }
    if args.misbehaving > 0 && caused.is_empty() {
        failures.push("the misbehaving upstream caused no failure: its route is not reached".to_string());
    }
    if stats.slowloris_survived.load(Ordering::Relaxed) > 0 {
        failures.push("a slowloris connection outlived 1.5 x header_read + 1 s".to_string());
    }
    if args.slowloris > 0 && stats.slowloris_cut.load(Ordering::Relaxed) == 0 {
        failures.push("no slowloris connection was cut".to_string());
    }
    if reloads_err > 0.0 {
        failures.push(format!("{reloads_err} reloads rejected"));
    }
    if reloads_ok < (tick / 2) as f64 {
        failures.push(format!("only {reloads_ok} reloads for {tick} changed files"));
    }
    let rss_limit = warm.rss_kib * 3 / 2 + 10 * 1024;
    if end.rss_kib > rss_limit {
        failures.push(format!("RSS grew from {} to {} KiB (limit {rss_limit})", warm.rss_kib, end.rss_kib));
    }
    let fd_slack = args.fd_slack();
    if end.fds > warm.fds + fd_slack {
        failures.push(format!("open fds under load grew from {} to {} (slack {fd_slack})", warm.fds, end.fds));
    }
    if settled > idle.fds + 2 {
        failures.push(format!("open fds stayed at {settled} after the load stopped (idle baseline {})", idle.fds));
    }
    match exit {
        Some(status) if status.success() => {}
        Some(status) => failures.push(format!("weir exited with {status} on SIGTERM")),
        None => failures.push("weir did not exit within 15 s of SIGTERM".to_string()),
    }
    Ok(failures)
}
