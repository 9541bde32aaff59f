//! weir's own HTTP/1.1 upstream client (`upstream/h1/`) against hyper's, on
//! the same response bytes: a seeded generator writes responses as broken
//! upstreams do (interim storms, 204/304/HEAD with bodies, Content-Length
//! mismatches and lists, Transfer-Encoding with and without chunked, bad
//! chunk lines, bare LFs, folded fields, bytes after the response, bodies
//! that stop), a scripted upstream answers each one to hyper's client and,
//! through weir, to a raw client, and what each got is compared: the same
//! status, the same end-to-end fields and the same body, complete on both
//! sides or cut short on both. Where the two may rightly differ (weir is
//! stricter: it refuses framing hyper tolerates), the case is named by
//! [`stricter`] with the RFC's reason, and counted.
//!
//! After each case a request for `/check/N` through weir must get its own
//! answer: a connection left with unread bytes or a half-read body is never
//! lent to the next request.

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Notify;

use crate::*;

/// Cases generated (plus the fixed ones), and how many run at once.
const GENERATED: usize = 1500;
const PARALLEL: usize = 16;
/// What hyper's side waits for a head and between body pieces: longer
/// than weir's `upstream_response` (1 s) and `upstream_read` (1 s), so that
/// weir is the first to give up on a stalled upstream.
const READ: Duration = Duration::from_millis(2000);
const HEAD_WAIT: Duration = Duration::from_millis(2000);

/// One upstream response: its bytes, whether the upstream closes after
/// writing them, whether it answers a HEAD request, whether it is written
/// in two pieces 5 ms apart.
#[derive(Clone, Debug)]
struct Case {
    bytes: Vec<u8>,
    close: bool,
    head: bool,
    trickle: bool,
}

/// SplitMix64: small, seeded, good enough to pick grammar branches.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn chance(&mut self, percent: usize) -> bool {
        self.below(100) < percent
    }

    fn pick<'a, T>(&mut self, from: &'a [T]) -> &'a T {
        &from[self.below(from.len())]
    }
}

/// A response as a broken upstream might write it.
fn generate(rng: &mut Rng) -> Case {
    let head = rng.chance(8);
    // Most heads are well formed (the framing is what varies); a third
    // carry one kind of malformation or oddity in the head itself.
    let odd = rng.chance(33);
    let eol: &str = if odd && rng.chance(15) { "\n" } else { "\r\n" };
    let mut out = String::new();
    // Interim responses first, now and then a storm of them.
    let interim = match rng.below(10) {
        0 => 1 + rng.below(3),
        1 => 50,
        _ => 0,
    };
    for _ in 0..interim {
        out += *rng.pick(&[
            "HTTP/1.1 100 Continue\r\n\r\n",
            "HTTP/1.1 103 Early Hints\r\nlink: </a>\r\n\r\n",
            "HTTP/1.1 199 Odd\r\n\r\n",
        ]);
    }
    let version = match odd && rng.chance(30) {
        true => *rng.pick(&["HTTP/2.0", "http/1.1", "HTTP/1.1 ", "HTTP/1.2"]),
        false => *rng.pick(&["HTTP/1.1", "HTTP/1.1", "HTTP/1.1", "HTTP/1.0"]),
    };
    let status = match odd && rng.chance(30) {
        true => *rng.pick(&["101 Switching Protocols", "200", "099 Low", "600 High", "20 Short"]),
        false => *rng.pick(&[
            "200 OK",
            "200 OK",
            "200 OK",
            "201 Created",
            "204 No Content",
            "304 Not Modified",
            "404 Not Found",
            "500 Oops",
        ]),
    };
    out += &format!("{version} {status}{eol}");
    let body_text: String = (0..rng.below(40)).map(|i| char::from(b'a' + (i % 26) as u8)).collect();
    let mut body = body_text.clone().into_bytes();
    // Framing fields.
    match rng.below(12) {
        0..=3 => {
            let n = body.len();
            let value = match rng.below(12) {
                0 => format!("{}", n + 3),
                1 => format!("{}", n.saturating_sub(3)),
                2 => format!("{n}, {n}"),
                3 => format!(" {n} "),
                4 => format!("+{n}"),
                5 => "abc".into(),
                6 => "99999999999999999999999".into(),
                7 => format!("0{n}"),
                _ => n.to_string(),
            };
            out += &format!("content-length: {value}{eol}");
            if rng.chance(10) {
                let again = if rng.chance(50) { n.to_string() } else { (n + 1).to_string() };
                out += &format!("Content-Length: {again}{eol}");
            }
        }
        4..=6 => {
            let value =
                *rng.pick(&["chunked", "chunked", "Chunked", "gzip, chunked", "chunked, gzip", "identity", "gzip"]);
            out += &format!("transfer-encoding: {value}{eol}");
            if rng.chance(15) {
                out += &format!("content-length: {}{eol}", body.len());
            }
            if value.to_ascii_lowercase().ends_with("chunked") {
                body = chunk(rng, &body_text);
            }
        }
        7 => {
            out += &format!("transfer-encoding: chunked{eol}transfer-encoding: gzip{eol}");
        }
        _ => {} // until close
    }
    if rng.chance(30) {
        out += &format!("connection: {}{eol}", rng.pick(&["close", "keep-alive", "x-hop, keep-alive", "upgrade"]));
    }
    // End-to-end fields, now and then malformed.
    for i in 0..rng.below(4) {
        out += &match if odd { rng.below(14) } else { 6 + rng.below(8) } {
            0 => format!("x-fold-{i}: a{eol} folded{eol}"),
            1 => format!("x-space-{i} : v{eol}"),
            2 => format!("x bad{i}: v{eol}"),
            3 => format!("x-nocolon-{i}{eol}"),
            4 => format!("x-empty-{i}:{eol}"),
            5 => format!("x-ctl-{i}: a\x01b{eol}"),
            6 => format!("x-hop: secret{eol}"),
            _ => format!("x-field-{i}: value {i}{eol}"),
        };
    }
    out += eol;
    let mut bytes = out.into_bytes();
    if !head {
        bytes.extend_from_slice(&body);
    }
    // Bytes after the response: a second response, or noise.
    if rng.chance(12) {
        let extra: &[&[u8]] = &[b"HTTP/1.1 500 Smuggled\r\ncontent-length: 0\r\n\r\n", b"\r\n", b"garbage"];
        let piece: &[u8] = extra[rng.below(extra.len())];
        bytes.extend_from_slice(piece);
    }
    Case { bytes, close: rng.chance(70), head, trickle: rng.chance(15) }
}

/// `text` in chunked coding, now and then broken.
fn chunk(rng: &mut Rng, text: &str) -> Vec<u8> {
    let mut out = String::new();
    let mut rest = text;
    while !rest.is_empty() {
        let n = 1 + rng.below(rest.len().min(9));
        let (piece, tail) = rest.split_at(n);
        let size = match rng.below(40) {
            0 => format!("{:x}", n + 1),
            1 => "zz".into(),
            2 => format!("0x{n:x}"),
            3 => format!("{n:x};ext=\"q\""),
            4 => format!("{n:X} "),
            _ => format!("{n:x}"),
        };
        let crlf = if rng.chance(3) { "\n" } else { "\r\n" };
        out += &format!("{size}{crlf}{piece}\r\n");
        rest = tail;
    }
    match rng.below(10) {
        0 => {}                                  // never ends
        1 => out += "0\r\nx-trailer: 1\r\n\r\n", // trailers
        2 => out += "0\r\n",                     // cut short
        _ => out += "0\r\n\r\n",
    }
    out.into_bytes()
}

/// Cases every run has, whatever the seed.
fn fixed() -> Vec<Case> {
    let c = |bytes: &[u8], close: bool| Case { bytes: bytes.to_vec(), close, head: false, trickle: false };
    vec![
        c(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\nx-a: 1\r\n\r\nhello", false),
        c(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5;a=b\r\nhello\r\n0\r\nx-t: 1\r\n\r\n", false),
        c(b"HTTP/1.1 200 OK\r\n\r\nuntil close", true),
        c(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nokHTTP/1.1 500 Smuggled\r\ncontent-length: 0\r\n\r\n", false),
        c(b"HTTP/1.1 204 No Content\r\ncontent-length: 3\r\n\r\nabc", false),
        c(b"HTTP/1.1 304 Not Modified\r\n\r\n", false),
        c(b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\n01234", false),
        c(b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\n01234", true),
        c(b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n", false),
        c(
            b"HTTP/1.0 200 OK\r\nconnection: keep-alive\r\ntransfer-encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n",
            false,
        ),
        c(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n", false),
        Case { head: true, ..c(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n", false) },
        Case { trickle: true, ..c(b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\n0123456789", false) },
    ]
}

/// The scripted upstream: `/case/N/SIDE` gets case N's bytes, anything else
/// a proper response naming the path's last segment; `written` gets
/// (N, SIDE) once the bytes are out (or the connection is gone).
struct Upstream {
    addr: SocketAddr,
    written: Arc<Mutex<HashSet<(usize, char)>>>,
    notify: Arc<Notify>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Upstream {
    async fn start(cases: Arc<Vec<Case>>) -> Upstream {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let written = Arc::new(Mutex::new(HashSet::new()));
        let notify = Arc::new(Notify::new());
        let (w, n) = (written.clone(), notify.clone());
        let task = tokio::spawn(async move {
            while let Ok((s, _)) = listener.accept().await {
                tokio::spawn(serve(s, cases.clone(), w.clone(), n.clone()));
            }
        });
        Upstream { addr, written, notify, task }
    }

    /// Whether the upstream wrote case `key` within 5 s.
    async fn wait_written(&self, key: (usize, char)) -> bool {
        let wait = async {
            loop {
                let notified = self.notify.notified();
                if self.written.lock().unwrap().contains(&key) {
                    return;
                }
                notified.await;
            }
        };
        tokio::time::timeout(Duration::from_secs(5), wait).await.is_ok()
    }
}

async fn serve(
    mut s: TcpStream,
    cases: Arc<Vec<Case>>,
    written: Arc<Mutex<HashSet<(usize, char)>>>,
    notify: Arc<Notify>,
) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).into_owned();
            buf.drain(..end + 4);
            let path = head.split_whitespace().nth(1).unwrap_or("/").to_string();
            let parts: Vec<&str> = path.split('/').collect();
            if let ["", "case", n, side] = parts[..] {
                let n: usize = n.parse().unwrap();
                let side = side.chars().next().unwrap();
                let case = &cases[n];
                let (a, b) =
                    if case.trickle { case.bytes.split_at(case.bytes.len() / 2) } else { (&case.bytes[..], &[][..]) };
                let mut ok = s.write_all(a).await.is_ok();
                if ok && !b.is_empty() {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    ok = s.write_all(b).await.is_ok();
                }
                // A close goes out before the case counts as written: weir
                // must see it before the next request.
                let close = !ok || case.close;
                if close {
                    let _ = s.shutdown().await;
                }
                written.lock().unwrap().insert((n, side));
                notify.notify_waiters();
                if close {
                    return;
                }
            } else {
                let name = parts.last().copied().unwrap_or("");
                let answer = format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\ncheck-{name}", name.len() + 6);
                if s.write_all(answer.as_bytes()).await.is_err() {
                    return;
                }
            }
        }
        match s.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

/// What a client got.
#[derive(Debug, PartialEq)]
enum Seen {
    /// weir's reply is not a well-framed HTTP/1.1 response (a finding).
    Broken(String),
    /// No response head: hyper's client failed (weir answers that 502/504).
    NoHead(String),
    Response {
        status: u16,
        /// The `x-` fields ([`x_fields`]).
        fields: Vec<(String, String)>,
        body: Vec<u8>,
        /// The body ended where its framing said (not cut short).
        complete: bool,
    },
}

/// The `x-` fields, lowercased, sorted by name (the order of different
/// names carries no meaning, RFC 9110 §5.3; a name's values keep theirs).
fn x_fields<'a>(fields: impl Iterator<Item = (&'a str, &'a [u8])>) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = fields
        .filter(|(n, _)| n.to_ascii_lowercase().starts_with("x-"))
        .map(|(n, v)| (n.to_ascii_lowercase(), String::from_utf8_lossy(v).into_owned()))
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

async fn via_hyper(addr: SocketAddr, n: usize, case: &Case) -> Seen {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut tx, conn) = hyper::client::conn::http1::handshake::<_, Empty<Bytes>>(TokioIo::new(stream)).await.unwrap();
    let conn = tokio::spawn(conn);
    let method = if case.head { http::Method::HEAD } else { http::Method::GET };
    let req = http::Request::builder()
        .method(method)
        .uri(format!("/case/{n}/h"))
        .header("host", "diff")
        .body(Empty::new())
        .unwrap();
    let resp = match tokio::time::timeout(HEAD_WAIT, tx.send_request(req)).await {
        Err(_) => return Seen::NoHead("timeout".into()),
        Ok(Err(e)) => return Seen::NoHead(e.to_string()),
        Ok(Ok(resp)) => resp,
    };
    let status = resp.status().as_u16();
    // What a proxy passes on: not the fields Connection names (RFC 9110 §7.6.1).
    let named: Vec<String> = resp
        .headers()
        .get_all(http::header::CONNECTION)
        .iter()
        .flat_map(|v| v.to_str().unwrap_or("").split(','))
        .map(|t| t.trim().to_ascii_lowercase())
        .collect();
    let mut fields = x_fields(resp.headers().iter().map(|(n, v)| (n.as_str(), v.as_bytes())));
    fields.retain(|(n, _)| !named.contains(n));
    let mut body = resp.into_body();
    let mut bytes = Vec::new();
    let complete = loop {
        match tokio::time::timeout(READ, body.frame()).await {
            Err(_) | Ok(Some(Err(_))) => break false,
            Ok(None) => break true,
            Ok(Some(Ok(frame))) => {
                if let Some(d) = frame.data_ref() {
                    bytes.extend_from_slice(d);
                }
            }
        }
    };
    conn.abort();
    Seen::Response { status, fields, body: bytes, complete }
}

async fn via_weir(weir: SocketAddr, n: usize, case: &Case) -> Seen {
    let method = if case.head { "HEAD" } else { "GET" };
    let raw =
        exchange_raw(weir, &format!("{method} /case/{n}/w HTTP/1.1\r\nhost: diff\r\nconnection: close\r\n\r\n")).await;
    parse_downstream(&raw, case.head).unwrap_or_else(|e| Seen::Broken(format!("weir's reply {e}: {:?}", show(&raw))))
}

async fn exchange_raw(weir: SocketAddr, request: &str) -> Vec<u8> {
    let mut s = TcpStream::connect(weir).await.unwrap();
    s.write_all(request.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    // Reset after a body cut short is an end too.
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut raw)).await.expect("weir's reply ends");
    raw
}

/// weir's reply as a client reads it; an error if its framing is broken
/// (bytes past the end, a bad chunk line from weir).
fn parse_downstream(raw: &[u8], head_request: bool) -> Result<Seen, String> {
    let mut headers = [httparse::EMPTY_HEADER; 128];
    let mut resp = httparse::Response::new(&mut headers);
    let len = match resp.parse(raw) {
        Ok(httparse::Status::Complete(len)) => len,
        other => return Err(format!("is not a response head ({other:?})")),
    };
    let status = resp.code.unwrap_or(0);
    if (100..200).contains(&status) {
        return Err("is an interim response".into());
    }
    let fields = x_fields(resp.headers.iter().map(|h| (h.name, h.value)));
    let get = |name: &str| resp.headers.iter().find(|h| h.name.eq_ignore_ascii_case(name)).map(|h| h.value);
    let rest = &raw[len..];
    if head_request || status == 204 || status == 304 {
        if !rest.is_empty() {
            return Err("has a body where none may be".into());
        }
        return Ok(Seen::Response { status, fields, body: Vec::new(), complete: true });
    }
    if get("transfer-encoding").is_some() {
        let (body, complete, after) = dechunk(rest)?;
        if !after.is_empty() {
            return Err("has bytes after its last chunk".into());
        }
        return Ok(Seen::Response { status, fields, body, complete });
    }
    if let Some(cl) = get("content-length") {
        let n: usize = std::str::from_utf8(cl).ok().and_then(|v| v.parse().ok()).ok_or("has a bad content-length")?;
        if rest.len() > n {
            return Err(format!("has {} body bytes for content-length {n}", rest.len()));
        }
        return Ok(Seen::Response { status, fields, body: rest.to_vec(), complete: rest.len() == n });
    }
    // Until close: weir sends that only to HTTP/1.0 clients.
    Err("has no framing".into())
}

/// A chunked body: its data, whether it ended, what follows the end.
fn dechunk(mut b: &[u8]) -> Result<(Vec<u8>, bool, &[u8]), String> {
    let mut data = Vec::new();
    loop {
        let Some(end) = b.windows(2).position(|w| w == b"\r\n") else { return Ok((data, false, b"")) };
        let size = std::str::from_utf8(&b[..end]).ok().and_then(|s| usize::from_str_radix(s, 16).ok());
        let size = size.ok_or("has a bad chunk size line")?;
        b = &b[end + 2..];
        if size == 0 {
            return match b.strip_prefix(b"\r\n") {
                Some(after) => Ok((data, true, after)),
                None => Ok((data, false, b"")),
            };
        }
        if b.len() < size + 2 {
            data.extend_from_slice(&b[..b.len().min(size)]);
            return Ok((data, false, b""));
        }
        if &b[size..size + 2] != b"\r\n" {
            return Err("has chunk data longer than its size".into());
        }
        data.extend_from_slice(&b[..size]);
        b = &b[size + 2..];
    }
}

fn show(b: &[u8]) -> String {
    String::from_utf8_lossy(&b[..b.len().min(600)]).into_owned()
}

/// The final response head of a case (past the interim ones): its version,
/// status and fields (names lowercased, values trimmed).
fn final_head(case: &Case) -> (String, u16, Vec<(String, String)>) {
    let text = String::from_utf8_lossy(&case.bytes).into_owned();
    let mut rest = text.as_str();
    loop {
        let end = rest.find("\r\n\r\n").or_else(|| rest.find("\n\n")).unwrap_or(rest.len());
        let (head, after) = rest.split_at(end);
        let mut lines = head.lines().map(|l| l.trim_end_matches('\r'));
        let first = lines.next().unwrap_or("");
        let version = first.split(' ').next().unwrap_or("").to_string();
        let status = first.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
        if (100..200).contains(&status) && status != 101 && !after.is_empty() {
            rest = after.trim_start_matches(['\r', '\n']);
            continue;
        }
        let fields = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(n, v)| (n.to_ascii_lowercase(), v.trim().to_string()))
            .collect();
        return (version, status, fields);
    }
}

/// Where weir rightly refuses (502) what hyper's client accepts: the
/// reason, or `None`. Each rule names the exact framing it excuses.
fn stricter(case: &Case) -> Option<&'static str> {
    let (version, status, fields) = final_head(case);
    if status == 101 {
        return Some("RFC 9110 §15.2.2: a 101 answers only a request with Upgrade (hyper passes it on)");
    }
    if status >= 600 {
        return Some("RFC 9110 §15: a status outside 100-599 is not an HTTP status (hyper takes any three digits)");
    }
    if version == "HTTP/1.0" && fields.iter().any(|(n, _)| n == "transfer-encoding") {
        return Some("RFC 9112 §6.1: Transfer-Encoding in HTTP/1.0 is faulty framing (hyper refuses it too, but not on a 204, a 304 or after an interim response)");
    }
    let lengths: Vec<&str> = fields.iter().filter(|(n, _)| n == "content-length").map(|(_, v)| v.as_str()).collect();
    if lengths.len() > 1 || lengths.iter().any(|v| v.contains(',')) {
        return Some("RFC 9112 §6.3: a Content-Length list or a duplicate is refused, not reduced");
    }
    if lengths.iter().any(|v| v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) || v.len() > 19) {
        return Some("RFC 9110 §8.6: Content-Length is 1*DIGIT, whatever the status (hyper takes a sign, and ignores it on a 204 or 304)");
    }
    None
}

/// One case, both ways: the agreement's class, or what differs.
fn compare(case: &Case, hyper: &Seen, weir: &Seen) -> Result<&'static str, String> {
    use self::Seen::{Broken, NoHead, Response};
    match (hyper, weir) {
        (_, Broken(e)) => Err(e.clone()),
        (Broken(_), _) | (_, NoHead(_)) => unreachable!("hyper's side is never broken, weir's always has a head"),
        (NoHead(_), Response { status: 502 | 504, .. }) => Ok("both refused the head"),
        (NoHead(e), w) => Err(format!("hyper refused the head ({e}), weir passed {w:?}")),
        (Response { status: hs, .. }, Response { status: 502, .. }) if *hs != 502 => match stricter(case) {
            Some(why) => Ok(why),
            None => Err(format!("weir refused what hyper took: {hyper:?}")),
        },
        (
            Response { status: hs, fields: hf, body: hb, complete: hc },
            Response { status: ws, fields: wf, body: wb, complete: wc },
        ) => {
            if hs != ws {
                return Err(format!("status {hs} (hyper) vs {ws} (weir)"));
            }
            if hf != wf {
                return Err(format!("fields {hf:?} (hyper) vs {wf:?} (weir)"));
            }
            match (hc, wc) {
                (true, true) if hb == wb => Ok("both whole, same body"),
                (true, true) => Err(format!("bodies differ: {:?} (hyper) vs {:?} (weir)", show(hb), show(wb))),
                (false, false) if hb.starts_with(wb) || wb.starts_with(hb) => Ok("both cut short"),
                (false, false) => Err(format!("cut bodies differ: {:?} vs {:?}", show(hb), show(wb))),
                (true, false) => Err(format!("weir cut a body hyper read whole: {:?}", show(hb))),
                (false, true) => Err(format!("weir passed as whole a body hyper found broken: {:?}", show(wb))),
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weir_and_hyper_read_the_same_upstream_bytes_alike_and_no_bad_connection_is_reused() {
    let mut rng = Rng(0x005e_ed0f_d1ff);
    let mut cases = fixed();
    cases.extend((0..GENERATED).map(|_| generate(&mut rng)));
    let cases = Arc::new(cases);
    let up = Arc::new(Upstream::start(cases.clone()).await);
    let top = "[timeouts]\nupstream_response = \"1s\"\nupstream_read = \"1s\"";
    let text = config_text(up.addr, up.addr, "weight = 0", top)
        .replace("[backends.canary]", "outlier = false\n[backends.canary]");
    let w = Arc::new(InProcess::start(&text).await);
    let weir = w.weir.data_addr();

    let results: Vec<(usize, Result<&'static str, String>)> = futures_util::stream::iter(0..cases.len())
        .map(|n| {
            let (cases, up) = (cases.clone(), up.clone());
            async move {
                let case = &cases[n];
                let hyper = via_hyper(up.addr, n, case).await;
                let seen = via_weir(weir, n, case).await;
                let verdict = compare(case, &hyper, &seen);
                // Whatever weir made of it, the next request gets its own answer.
                if !up.wait_written((n, 'w')).await {
                    let e = "the upstream never got the request through weir (a pooled connection answered it?)";
                    return (n, Err(format!("{e}\n  case: {:?}", show(&case.bytes))));
                }
                let raw =
                    exchange_raw(weir, &format!("GET /check/{n} HTTP/1.1\r\nhost: diff\r\nconnection: close\r\n\r\n"))
                        .await;
                let want = format!("check-{n}");
                let verdict = match parse_downstream(&raw, false) {
                    Ok(Seen::Response { status: 200, body, complete: true, .. }) if body == want.as_bytes() => verdict,
                    _ => Err(format!("the request after it got {:?}", show(&raw))),
                };
                (n, verdict.map_err(|e| format!("{e}\n  case: {:?}", show(&case.bytes))))
            }
        })
        .buffer_unordered(PARALLEL)
        .collect()
        .await;

    let mut classes: BTreeMap<&str, usize> = BTreeMap::new();
    let mut failures = Vec::new();
    for (n, r) in results {
        match r {
            Ok(class) => *classes.entry(class).or_default() += 1,
            Err(e) => failures.push(format!("case {n}: {e}")),
        }
    }
    println!("{} cases: {classes:#?}", cases.len());
    assert!(failures.is_empty(), "{} of {} cases differ:\n{}", failures.len(), cases.len(), failures.join("\n"));
    // The generator reaches every kind of outcome.
    for class in ["both refused the head", "both whole, same body", "both cut short"] {
        assert!(classes.get(class).copied().unwrap_or(0) >= 20, "only {:?} cases where {class}", classes.get(class));
    }

    // Connections closed for the upstream's fault are counted (the ticker
    // exports them once a second).
    let admin = w.weir.admin_addr();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let (_, text) = get(&client(), &format!("http://{admin}/metrics"), &[]).await;
        let count = |reason: &str| {
            text.lines()
                .find(|l| {
                    l.starts_with("weir_upstream_connections_discarded_total")
                        && l.contains("backend=\"stable\"")
                        && l.contains(&format!("reason=\"{reason}\""))
                })
                .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                .unwrap_or(0.0)
        };
        let counts = [count("unread_bytes"), count("broken_body"), count("read_timeout")];
        if counts.iter().all(|&c| c > 0.0) {
            println!("discarded: unread_bytes {} broken_body {} read_timeout {}", counts[0], counts[1], counts[2]);
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "discards not all counted: {counts:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
