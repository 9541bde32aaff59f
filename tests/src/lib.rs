//! Helpers for weir's end-to-end tests: real upstream servers on
//! `127.0.0.1:0`, weir started in process or as the real binary, and real
//! HTTP clients. The tests themselves live in `tests/` (one test binary).

#![allow(missing_docs, unreachable_pub, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::convert::Infallible;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;

pub mod browser;
#[cfg(test)]
mod tests;
pub mod tls;

/// What a test upstream does with a request.
#[derive(Clone, Copy, Debug)]
pub enum Mode {
    /// Answers 200 with its name as the body and in `x-upstream`.
    Named,
    /// Accepts the request and never answers.
    Hang,
    /// Reads the whole body and answers with its length.
    CountBody,
    /// Answers with a streamed body of this many bytes.
    Stream(u64),
    /// Answers 200 with its name after a delay.
    Delay(Duration),
    /// Answers with this status and its name.
    Status(u16),
    /// Answers 500 to `n` of every 10 requests, 200 otherwise.
    FailTenths(u64),
}

/// A request as an upstream saw it.
#[derive(Clone, Debug)]
pub struct Seen {
    pub headers: HeaderMap,
    pub path: String,
}

/// A real HTTP/1.1 upstream server on an ephemeral loopback port.
pub struct Upstream {
    pub addr: SocketAddr,
    pub name: &'static str,
    pub seen: Arc<Mutex<Vec<Seen>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Upstream {
    pub async fn start(name: &'static str, mode: Mode) -> Upstream {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let seen2 = seen.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let seen = seen2.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |req: Request<Incoming>| {
                        let seen = seen.clone();
                        async move {
                            seen.lock()
                                .unwrap()
                                .push(Seen { headers: req.headers().clone(), path: req.uri().to_string() });
                            Ok::<_, Infallible>(respond(name, mode, req).await)
                        }
                    });
                    let _ =
                        hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), svc).await;
                });
            }
        });
        Upstream { addr, name, seen, task }
    }

    pub fn count(&self) -> usize {
        self.seen.lock().unwrap().len()
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

type BoxBody = http_body_util::combinators::BoxBody<Bytes, std::io::Error>;

async fn respond(name: &'static str, mode: Mode, req: Request<Incoming>) -> Response<BoxBody> {
    let full = |s: String| Full::new(Bytes::from(s)).map_err(|never| match never {}).boxed();
    match mode {
        Mode::Named => {
            let mut r = Response::new(full(name.to_string()));
            r.headers_mut().insert("x-upstream", http::HeaderValue::from_static(name));
            r
        }
        Mode::Hang => {
            std::future::pending::<()>().await;
            unreachable!()
        }
        Mode::FailTenths(n) => {
            static SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
            let i = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let mut r = Response::new(full(name.to_string()));
            if i % 10 < n {
                *r.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
            }
            r
        }
        Mode::Status(code) => {
            let mut r = Response::new(full(name.to_string()));
            *r.status_mut() = StatusCode::from_u16(code).unwrap();
            r
        }
        Mode::Delay(d) => {
            tokio::time::sleep(d).await;
            Response::new(full(name.to_string()))
        }
        Mode::CountBody => {
            let mut body = req.into_body();
            let mut n = 0u64;
            while let Some(frame) = body.frame().await {
                if let Ok(d) = frame.unwrap().into_data() {
                    n += d.len() as u64;
                }
            }
            Response::new(full(n.to_string()))
        }
        Mode::Stream(total) => {
            let chunk = Bytes::from(vec![b'x'; 64 * 1024]);
            let stream = futures_util::stream::unfold(total, move |left| {
                let chunk = chunk.clone();
                async move {
                    if left == 0 {
                        return None;
                    }
                    let n = left.min(chunk.len() as u64);
                    Some((Ok::<_, std::io::Error>(hyper::body::Frame::data(chunk.slice(..n as usize))), left - n))
                }
            });
            Response::new(http_body_util::StreamBody::new(stream).boxed())
        }
    }
}

/// A WebSocket echo upstream.
pub async fn websocket_echo() -> (SocketAddr, tokio::task::JoinHandle<()>) {
    use futures_util::{SinkExt, StreamExt};
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let Ok(mut ws) = tokio_tungstenite::accept_async(stream).await else {
                    return;
                };
                while let Some(Ok(msg)) = ws.next().await {
                    if msg.is_text() || msg.is_binary() {
                        let _ = ws.send(msg).await;
                    }
                }
            });
        }
    });
    (addr, task)
}

/// A config with two backends, `stable` and `canary`, and one route `web`
/// whose extra keys are `route_extra` (TOML lines).
pub fn config_text(stable: SocketAddr, canary: SocketAddr, route_extra: &str, top_extra: &str) -> String {
    format!(
        r#"
[listen]
addr = "127.0.0.1:0"
[admin]
addr = "127.0.0.1:0"
{top_extra}
[backends.stable]
addrs = ["{stable}"]
version = "v1"
[backends.canary]
addrs = ["{canary}"]
version = "v2"

[[routes]]
name = "web"
stable = "stable"
canary = "canary"
{route_extra}
"#
    )
}

/// Two named upstreams (`stable`, `canary`) and weir in front of them, with
/// [`config_text`]'s extras.
pub async fn named_pair(route_extra: &str, top_extra: &str) -> (Upstream, Upstream, InProcess) {
    let stable = Upstream::start("stable", Mode::Named).await;
    let canary = Upstream::start("canary", Mode::Named).await;
    let w = InProcess::start(&config_text(stable.addr, canary.addr, route_extra, top_extra)).await;
    (stable, canary, w)
}

/// weir running in this process from a config file in a temp dir.
pub struct InProcess {
    pub weir: weir_proxy::Weir,
    pub dir: tempfile::TempDir,
    pub path: PathBuf,
}

impl InProcess {
    pub async fn start(text: &str) -> InProcess {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("weir.toml");
        std::fs::write(&path, text).unwrap();
        let cfg = weir_proxy::reload::read_config(&path).unwrap();
        let weir = weir_proxy::Weir::start(cfg, Some(path.clone())).await.unwrap();
        InProcess { weir, dir, path }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.weir.data_addr(), path)
    }
}

/// A pooled HTTP/1.1 client.
pub fn client() -> Client<HttpConnector, Full<Bytes>> {
    Client::builder(TokioExecutor::new()).build_http()
}

/// An h2c (prior knowledge) client.
pub fn h2c_client() -> Client<HttpConnector, Full<Bytes>> {
    Client::builder(TokioExecutor::new()).http2_only(true).build_http()
}

/// GET `url` with headers; returns status and body text.
pub async fn get(c: &Client<HttpConnector, Full<Bytes>>, url: &str, headers: &[(&str, &str)]) -> (StatusCode, String) {
    let mut b = Request::get(url);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    let resp = c.request(b.body(Full::new(Bytes::new())).unwrap()).await.unwrap();
    let status = resp.status();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

/// The real `weir` binary, built on first use. `cargo test` builds the
/// test harnesses but not other packages' binaries, so the helper asks cargo
/// for it (a no-op when it is fresh) instead of testing a stale file.
pub fn weir_bin() -> PathBuf {
    static BUILT: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BUILT
        .get_or_init(|| {
            let exe = std::env::current_exe().unwrap();
            // target/<profile>/deps/weir_tests-HASH → target/<profile>/weir
            let profile_dir = exe.parent().unwrap().parent().unwrap();
            let bin = profile_dir.join("weir");
            let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
            let mut cmd = Command::new(cargo);
            cmd.args(["build", "-q", "-p", "weir-proxy", "--bin", "weir"]).current_dir(workspace());
            if profile_dir.file_name().is_some_and(|p| p == "release") {
                cmd.arg("--release");
            }
            let status = cmd.status().unwrap();
            assert!(status.success(), "building the weir binary failed");
            assert!(bin.exists(), "{} missing after build", bin.display());
            bin
        })
        .clone()
}

/// The workspace root.
pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

/// `weir run` as a child process, with its addresses read from its log.
pub struct Process {
    pub child: Child,
    pub data_addr: SocketAddr,
    pub admin_addr: SocketAddr,
    pub log: Arc<Mutex<Vec<String>>>,
    lines: std::sync::mpsc::Receiver<String>,
}

impl Process {
    pub fn spawn(config: &Path) -> Process {
        let mut child = Command::new(weir_bin())
            .args(["run", "-c"])
            .arg(config)
            .args(["--workers", "2"])
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let log = Arc::new(Mutex::new(Vec::new()));
        let log2 = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                log2.lock().unwrap().push(line.clone());
                let _ = tx.send(line);
            }
        });
        let mut p = Process {
            child,
            data_addr: ([0, 0, 0, 0], 0).into(),
            admin_addr: ([0, 0, 0, 0], 0).into(),
            log,
            lines: rx,
        };
        let line = p.wait_for_line("weir listening", Duration::from_secs(20));
        let field = |name: &str| -> SocketAddr {
            let start = line.find(&format!("{name}=")).unwrap() + name.len() + 1;
            line[start..].split_whitespace().next().unwrap().parse().unwrap()
        };
        p.data_addr = field("data");
        p.admin_addr = field("admin");
        p
    }

    /// Waits for a log line containing `needle` (lines since the last wait).
    pub fn wait_for_line(&mut self, needle: &str, timeout: Duration) -> String {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if line.contains(needle) => return line,
                Ok(_) => {}
                Err(_) => panic!("no log line with {needle:?}; log:\n{}", self.log.lock().unwrap().join("\n")),
            }
        }
    }

    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill").arg(format!("-{sig}")).arg(self.child.id().to_string()).status().unwrap();
        assert!(ok.success());
    }

    /// Resident set size in KiB, from /proc.
    pub fn rss_kib(&self) -> u64 {
        proc_status_kib(self.child.id(), "VmRSS:")
    }

    /// Peak resident set size in KiB.
    pub fn peak_rss_kib(&self) -> u64 {
        proc_status_kib(self.child.id(), "VmHWM:")
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn proc_status_kib(pid: u32, key: &str) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = s.lines().find(|l| l.starts_with(key)).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// Samples of a Prometheus exposition: (name, sorted labels) → value.
pub type Samples = std::collections::HashMap<(String, Vec<(String, String)>), f64>;

/// Parses a Prometheus text exposition into [`Samples`].
pub fn parse_prometheus(text: &str) -> Samples {
    let mut out = std::collections::HashMap::new();
    for line in text.lines().filter(|l| !l.starts_with('#') && !l.trim().is_empty()) {
        let (series, value) = line.rsplit_once(' ').unwrap();
        let (name, labels) = match series.split_once('{') {
            Some((n, rest)) => (n, rest.trim_end_matches('}')),
            None => (series, ""),
        };
        let mut pairs: Vec<(String, String)> = labels
            .split("\",")
            .filter(|p| !p.is_empty())
            .map(|p| {
                let (k, v) = p.split_once('=').unwrap();
                (k.to_string(), v.trim_matches('"').to_string())
            })
            .collect();
        pairs.sort();
        out.insert((name.to_string(), pairs), value.parse().unwrap());
    }
    out
}

/// One sample's value (0 when absent) from [`parse_prometheus`]'s output.
pub fn sample(m: &Samples, name: &str, labels: &[(&str, &str)]) -> f64 {
    let mut key: Vec<(String, String)> = labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    key.sort();
    m.get(&(name.to_string(), key)).copied().unwrap_or(0.0)
}

/// Continuous traffic from `concurrency` clients until dropped or stopped.
pub struct Load {
    stop: Arc<std::sync::atomic::AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    pub sent: Arc<std::sync::atomic::AtomicU64>,
}

impl Load {
    pub fn start(url: String, concurrency: usize, pause: Duration) -> Load {
        use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
        let stop = Arc::new(AtomicBool::new(false));
        let sent = Arc::new(AtomicU64::new(0));
        let tasks = (0..concurrency)
            .map(|i| {
                let (stop, sent, url) = (stop.clone(), sent.clone(), url.clone());
                tokio::spawn(async move {
                    let c = client();
                    let mut n = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        let req = Request::get(&url)
                            .header("x-user-id", format!("u{i}-{n}"))
                            .body(Full::new(Bytes::new()))
                            .unwrap();
                        if let Ok(r) = c.request(req).await {
                            let _ = r.into_body().collect().await;
                        }
                        sent.fetch_add(1, Ordering::Relaxed);
                        n += 1;
                        if !pause.is_zero() {
                            tokio::time::sleep(pause).await;
                        }
                    }
                })
            })
            .collect();
        Load { stop, tasks, sent }
    }

    pub async fn stop(self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        for t in self.tasks {
            let _ = t.await;
        }
    }
}

/// Waits for an audit event of `route` matching `pred`, up to `timeout`.
pub async fn wait_event(
    rx: &mut tokio::sync::broadcast::Receiver<weir_control::rollout::Event>,
    timeout: Duration,
    pred: impl Fn(&weir_control::rollout::Event) -> bool,
) -> weir_control::rollout::Event {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Ok(ev)) if pred(&ev) => return ev,
            Ok(Ok(_)) | Ok(Err(tokio::sync::broadcast::error::RecvError::Lagged(_))) => {}
            Ok(Err(e)) => panic!("event stream ended: {e}"),
            Err(_) => panic!("no matching event within {timeout:?}"),
        }
    }
}
