//! Helpers for weir's end-to-end tests: real upstream servers on
//! `127.0.0.1:0`, weir started in process or as the real binary, and real
//! HTTP clients. The tests themselves live in `tests/` (one test binary).
//! The soak (`benches/src/bin/soak.rs`) runs on the same helpers.

#![allow(unreachable_pub, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::convert::Infallible;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

#[allow(missing_docs)]
pub mod browser;
#[cfg(feature = "fleet")]
pub mod etcd;
#[cfg(feature = "fleet")]
pub mod fleet;
#[allow(missing_docs)]
pub mod grpc;
#[cfg(test)]
mod tests;
#[allow(missing_docs)]
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
    /// Answers 500 to requests that carry this header, 200 to the others.
    FailWithHeader(&'static str),
}

/// A request as an upstream saw it.
#[derive(Clone, Debug)]
pub struct Seen {
    /// Its headers.
    pub headers: HeaderMap,
    /// Its path and query.
    pub path: String,
}

/// How [`Upstream::stop`] ends the connections it has open.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stop {
    /// As a server being restarted: a request in flight is answered, then
    /// its connection closes.
    Restart,
    /// As a crashed server: every connection is dropped at once, requests in
    /// flight unanswered.
    Crash,
}

/// A real HTTP/1.1 upstream server on a loopback port. Dropped, it stops
/// accepting; the connections it has open go on being served.
pub struct Upstream {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its name, which [`Mode::Named`] answers with.
    pub name: &'static str,
    /// Every request it saw (none when started by [`Upstream::bind`] with
    /// `record` false).
    pub seen: Arc<Mutex<Vec<Seen>>>,
    /// How many connections it accepted.
    pub accepted: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
    stop: watch::Sender<Option<Stop>>,
}

impl Upstream {
    /// On an ephemeral loopback port, recording every request in `seen`.
    pub async fn start(name: &'static str, mode: Mode) -> Upstream {
        Upstream::bind(([127, 0, 0, 1], 0).into(), name, mode, true).await.unwrap()
    }

    /// On `addr` (port 0: an ephemeral one), e.g. again on the port of one
    /// that was stopped; with `record` false `seen` stays empty, so that a
    /// long run does not grow.
    pub async fn bind(addr: SocketAddr, name: &'static str, mode: Mode, record: bool) -> std::io::Result<Upstream> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (stop, stopped) = watch::channel(None);
        let seen2 = record.then(|| seen.clone());
        let accepted = Arc::new(AtomicU64::new(0));
        let counted = accepted.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                counted.fetch_add(1, Ordering::Relaxed);
                tokio::spawn(serve(stream, name, mode, seen2.clone(), stopped.clone()));
            }
        });
        Ok(Upstream { addr, name, seen, accepted, task, stop })
    }

    /// How many requests it saw (0 when it does not record them).
    pub fn count(&self) -> usize {
        self.seen.lock().unwrap().len()
    }

    /// Closes the listener, then ends the open connections as `how` says.
    pub async fn stop(mut self, how: Stop) {
        self.task.abort();
        let _ = (&mut self.task).await;
        self.stop.send_replace(Some(how));
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Serves one connection of an [`Upstream`] until it closes or the upstream
/// is stopped.
async fn serve(
    stream: TcpStream,
    name: &'static str,
    mode: Mode,
    seen: Option<Arc<Mutex<Vec<Seen>>>>,
    mut stopped: watch::Receiver<Option<Stop>>,
) {
    let svc = service_fn(move |req: Request<Incoming>| {
        let seen = seen.clone();
        async move {
            if let Some(seen) = seen {
                seen.lock().unwrap().push(Seen { headers: req.headers().clone(), path: req.uri().to_string() });
            }
            Ok::<_, Infallible>(respond(name, mode, req).await)
        }
    });
    let conn = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), svc);
    tokio::pin!(conn);
    let stopping = async {
        match stopped.wait_for(Option::is_some).await.map(|how| *how) {
            Ok(how) => how,
            // Dropped, not stopped: the connection goes on.
            Err(_) => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = conn.as_mut() => {}
        how = stopping => if how == Some(Stop::Restart) {
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
        },
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
        Mode::FailWithHeader(h) => {
            let mut r = Response::new(full(name.to_string()));
            if req.headers().contains_key(h) {
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
    config_text_with(&[stable], &[canary], "v2", route_extra, top_extra)
}

/// [`config_text`] with any number of addresses per backend and the
/// canary's version; `top_extra` (TOML) comes after `[admin]`.
pub fn config_text_with(
    stable: &[SocketAddr],
    canary: &[SocketAddr],
    canary_version: &str,
    route_extra: &str,
    top_extra: &str,
) -> String {
    let list = |addrs: &[SocketAddr]| addrs.iter().map(|a| format!("\"{a}\"")).collect::<Vec<_>>().join(", ");
    let (stable, canary) = (list(stable), list(canary));
    format!(
        r#"
[listen]
addr = "127.0.0.1:0"
[admin]
addr = "127.0.0.1:0"
{top_extra}
[backends.stable]
addrs = [{stable}]
version = "v1"
[backends.canary]
addrs = [{canary}]
version = "{canary_version}"

[[routes]]
name = "web"
stable = "stable"
canary = "canary"
{route_extra}
"#
    )
}

/// Replaces `path`'s contents as editors do: writes a temp file next to it,
/// then renames it over `path`, so that a watcher sees one whole change.
pub fn write_atomically(path: &Path, text: &str) -> std::io::Result<()> {
    let tmp = path.with_extension("toml.swp");
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, path)
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
    /// The running proxy.
    pub weir: weir_proxy::Weir,
    /// The temp dir that holds its config.
    pub dir: tempfile::TempDir,
    /// Its config file.
    pub path: PathBuf,
}

impl InProcess {
    /// Writes `text` to a config file and starts weir on it.
    pub async fn start(text: &str) -> InProcess {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("weir.toml");
        std::fs::write(&path, text).unwrap();
        let cfg = weir_proxy::reload::read_config(&path).unwrap();
        let weir = weir_proxy::Weir::start(cfg, Some(path.clone())).await.unwrap();
        InProcess { weir, dir, path }
    }

    /// `http://` its data listener, then `path`.
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
            // target/<profile>/deps/weir_tests-HASH (a test) or
            // target/<profile>/NAME (a bench binary) → target/<profile>/weir
            let dir = exe.parent().unwrap();
            let profile_dir = if dir.ends_with("deps") { dir.parent().unwrap() } else { dir };
            let bin = profile_dir.join("weir");
            let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
            let mut cmd = Command::new(cargo);
            cmd.args(["build", "-q", "-p", "weir-proxy", "--bin", "weir"]).current_dir(workspace());
            if cfg!(feature = "fleet") {
                cmd.args(["--features", "fleet"]);
            }
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

/// What [`Process`] keeps of weir's log (its stderr).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Keep {
    /// Every line, in [`Process::log`] and queued for
    /// [`Process::wait_for_line`].
    All,
    /// Memory that stays flat over a long run: only the last this many WARN
    /// and ERROR lines in `log`, and at most [`QUEUED`] unread lines for
    /// `wait_for_line` (later ones are not queued).
    Warnings(usize),
}

/// How many unread lines [`Keep::Warnings`] queues for
/// [`Process::wait_for_line`].
pub const QUEUED: usize = 64;

/// How [`Process::start`] runs `weir run -c CONFIG`.
#[derive(Clone, Debug)]
pub struct Launch {
    /// The binary.
    pub bin: PathBuf,
    /// More arguments, after `run -c CONFIG`.
    pub args: Vec<String>,
    /// What to keep of its log.
    pub keep: Keep,
    /// How long it may take to log `weir listening`.
    pub startup: Duration,
    /// Extra environment variables.
    pub env: Vec<(String, String)>,
}

impl Launch {
    /// What [`Process::spawn`] runs: [`weir_bin`] with `--workers 2`, the
    /// whole log kept, 20 s to start.
    pub fn tests() -> Launch {
        Launch {
            bin: weir_bin(),
            args: vec!["--workers".into(), "2".into()],
            keep: Keep::All,
            startup: Duration::from_secs(20),
            env: Vec::new(),
        }
    }
}

/// `weir run` as a child process, with its addresses read from its log;
/// killed when dropped.
pub struct Process {
    /// The child.
    pub child: Child,
    /// Its data listener.
    pub data_addr: SocketAddr,
    /// Its admin listener.
    pub admin_addr: SocketAddr,
    /// Its log, as much of it as [`Launch::keep`] says.
    pub log: Arc<Mutex<Vec<String>>>,
    /// How many WARN and ERROR lines it has logged.
    pub warnings: Arc<AtomicU64>,
    lines: mpsc::Receiver<String>,
}

/// Where a [`Process`]'s log lines are queued for
/// [`Process::wait_for_line`].
enum Queue {
    All(mpsc::Sender<String>),
    Bounded(mpsc::SyncSender<String>),
}

impl Process {
    /// [`Process::start`] with [`Launch::tests`]; panics if it does not
    /// start.
    pub fn spawn(config: &Path) -> Process {
        Process::start(&Launch::tests(), config).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Starts `launch.bin run -c config` and waits for its listeners.
    pub fn start(launch: &Launch, config: &Path) -> Result<Process, String> {
        let child = Command::new(&launch.bin)
            .args(["run", "-c"])
            .arg(config)
            .args(&launch.args)
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .envs(launch.env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", launch.bin.display()))?;
        let (queue, rx) = match launch.keep {
            Keep::All => {
                let (tx, rx) = mpsc::channel();
                (Queue::All(tx), rx)
            }
            Keep::Warnings(_) => {
                let (tx, rx) = mpsc::sync_channel(QUEUED);
                (Queue::Bounded(tx), rx)
            }
        };
        let mut p = Process {
            child,
            data_addr: ([0, 0, 0, 0], 0).into(),
            admin_addr: ([0, 0, 0, 0], 0).into(),
            log: Arc::new(Mutex::new(Vec::new())),
            warnings: Arc::new(AtomicU64::new(0)),
            lines: rx,
        };
        let stderr = p.child.stderr.take().ok_or("weir's stderr is not piped")?;
        let (log, warnings, keep) = (p.log.clone(), p.warnings.clone(), launch.keep);
        // Drains stderr for the life of the child.
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let warning = line.contains(" WARN ") || line.contains(" ERROR ");
                if warning {
                    warnings.fetch_add(1, Ordering::Relaxed);
                }
                let mut log = log.lock().unwrap_or_else(PoisonError::into_inner);
                match keep {
                    Keep::All => log.push(line.clone()),
                    Keep::Warnings(n) if warning && n > 0 => {
                        if log.len() >= n {
                            log.remove(0);
                        }
                        log.push(line.clone());
                    }
                    Keep::Warnings(_) => {}
                }
                drop(log);
                match &queue {
                    Queue::All(tx) => {
                        let _ = tx.send(line);
                    }
                    Queue::Bounded(tx) => {
                        let _ = tx.try_send(line);
                    }
                }
            }
        });
        let line = p.next_line_with("weir listening", launch.startup)?;
        let field = |name: &str| -> Result<SocketAddr, String> {
            let start = line.find(&format!("{name}=")).ok_or_else(|| format!("no {name}= in {line:?}"))?;
            let value = line[start + name.len() + 1..].split_whitespace().next().unwrap_or_default();
            value.parse().map_err(|e| format!("{name}={value}: {e}"))
        };
        p.data_addr = field("data")?;
        p.admin_addr = field("admin")?;
        Ok(p)
    }

    /// Waits for a log line containing `needle` (lines since the last wait).
    pub fn wait_for_line(&mut self, needle: &str, timeout: Duration) -> String {
        self.next_line_with(needle, timeout).unwrap_or_else(|e| panic!("{e}"))
    }

    fn next_line_with(&mut self, needle: &str, timeout: Duration) -> Result<String, String> {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if line.contains(needle) => return Ok(line),
                Ok(_) => {}
                Err(_) => {
                    let log = self.log.lock().unwrap_or_else(PoisonError::into_inner).join("\n");
                    return Err(format!("no log line with {needle:?}; log:\n{log}"));
                }
            }
        }
    }

    /// Sends it a signal (`kill -SIG`).
    pub fn signal(&self, sig: &str) -> Result<(), String> {
        let pid = self.child.id();
        let status = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(pid.to_string())
            .status()
            .map_err(|e| format!("kill: {e}"))?;
        if status.success() {
            Ok(())
        } else {
            Err(format!("kill -{sig} {pid} failed"))
        }
    }

    /// Resident set size in KiB, from /proc (`None` once it is gone).
    pub fn rss_kib(&self) -> Option<u64> {
        proc_status_kib(self.child.id(), "VmRSS:")
    }

    /// Peak resident set size in KiB.
    pub fn peak_rss_kib(&self) -> Option<u64> {
        proc_status_kib(self.child.id(), "VmHWM:")
    }

    /// How many file descriptors it has open, from /proc.
    pub fn fds(&self) -> Option<usize> {
        std::fs::read_dir(format!("/proc/{}/fd", self.child.id())).ok().map(|d| d.count())
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn proc_status_kib(pid: u32, key: &str) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = s.lines().find(|l| l.starts_with(key))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Samples of a Prometheus exposition: (name, sorted labels) → value.
pub type Samples = std::collections::HashMap<(String, Vec<(String, String)>), f64>;

/// Parses a Prometheus text exposition into [`Samples`]; panics on a line
/// it cannot read.
pub fn parse_prometheus(text: &str) -> Samples {
    try_parse_prometheus(text).unwrap_or_else(|e| panic!("{e}"))
}

/// Parses a Prometheus text exposition into [`Samples`], or says which line
/// it cannot read.
pub fn try_parse_prometheus(text: &str) -> Result<Samples, String> {
    let mut out = std::collections::HashMap::new();
    for line in text.lines().filter(|l| !l.starts_with('#') && !l.trim().is_empty()) {
        let bad = || format!("not a Prometheus sample: {line:?}");
        let (series, value) = line.rsplit_once(' ').ok_or_else(bad)?;
        let (name, labels) = match series.split_once('{') {
            Some((n, rest)) => (n, rest.trim_end_matches('}')),
            None => (series, ""),
        };
        let mut pairs = labels
            .split("\",")
            .filter(|p| !p.is_empty())
            .map(|p| {
                let (k, v) = p.split_once('=').ok_or_else(bad)?;
                Ok((k.to_string(), v.trim_matches('"').to_string()))
            })
            .collect::<Result<Vec<(String, String)>, String>>()?;
        pairs.sort();
        out.insert((name.to_string(), pairs), value.parse().map_err(|_| bad())?);
    }
    Ok(out)
}

/// One sample's value (0 when absent) from [`parse_prometheus`]'s output.
pub fn sample(m: &Samples, name: &str, labels: &[(&str, &str)]) -> f64 {
    let mut key: Vec<(String, String)> = labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    key.sort();
    m.get(&(name.to_string(), key)).copied().unwrap_or(0.0)
}

/// The sum of the samples of `name` whose labels include `labels` (0 when
/// none): a counter over all its other labels.
pub fn sample_sum(m: &Samples, name: &str, labels: &[(&str, &str)]) -> f64 {
    m.iter()
        .filter(|((n, have), _)| {
            n == name && labels.iter().all(|(k, v)| have.iter().any(|(hk, hv)| hk == k && hv == v))
        })
        .map(|(_, v)| v)
        .sum()
}

/// Continuous traffic from `concurrency` clients until dropped or stopped.
pub struct Load {
    stop: Arc<std::sync::atomic::AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    /// Requests sent so far.
    pub sent: Arc<std::sync::atomic::AtomicU64>,
}

impl Load {
    /// `concurrency` clients GET `url` (sticky keys), pausing `pause`
    /// between requests.
    pub fn start(url: String, concurrency: usize, pause: Duration) -> Load {
        use std::sync::atomic::AtomicBool;
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

    /// Stops the clients and waits for them.
    pub async fn stop(self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        for t in self.tasks {
            let _ = t.await;
        }
    }
}

/// Polls `cond` every 10 ms until it holds; panics, naming `what`, if it
/// does not within `within`.
pub async fn until(within: Duration, what: &str, cond: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + within;
    while !cond() {
        assert!(tokio::time::Instant::now() < deadline, "{what}: not within {within:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
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

/// `url`'s body, if it answered 200.
pub async fn try_get(url: &str) -> Option<String> {
    let resp = client().request(http::Request::get(url).body(Full::new(Bytes::new())).ok()?).await.ok()?;
    if resp.status() != 200 {
        return None;
    }
    let body = resp.into_body().collect().await.ok()?.to_bytes();
    Some(String::from_utf8_lossy(&body).into_owned())
}

/// A Prometheus scraping `target` every second; stopped when dropped.
pub struct Prometheus {
    /// Its API's port on 127.0.0.1.
    pub port: u16,
    child: std::process::Child,
    _dir: tempfile::TempDir,
}

impl Prometheus {
    /// Started, scraping `target` (`host:port`) every second.
    pub async fn start(target: SocketAddr) -> Prometheus {
        Prometheus::start_with(target, None).await
    }

    /// With `tls`: its API over TLS with this certificate and key.
    pub async fn start_with(target: SocketAddr, tls: Option<(&std::path::Path, &std::path::Path)>) -> Prometheus {
        let dir = tempfile::tempdir().unwrap();
        let cfg = dir.path().join("prometheus.yml");
        let yml = format!(
            "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: shop\n    static_configs:\n      - targets: ['{target}']\n"
        );
        std::fs::write(&cfg, yml).unwrap();
        let port = TcpListener::bind("127.0.0.1:0").await.unwrap().local_addr().unwrap().port();
        let mut cmd = std::process::Command::new("prometheus");
        if let Some((cert, key)) = tls {
            let web = dir.path().join("web.yml");
            let yml = format!("tls_server_config:\n  cert_file: {}\n  key_file: {}\n", cert.display(), key.display());
            std::fs::write(&web, yml).unwrap();
            cmd.arg(format!("--web.config.file={}", web.display()));
        }
        let child = cmd
            .arg(format!("--config.file={}", cfg.display()))
            .arg(format!("--storage.tsdb.path={}", dir.path().join("data").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("prometheus (Debian package) is needed: .ci/run installs it");
        Prometheus { port, child, _dir: dir }
    }

    /// Waits until Prometheus answers `query` with a series (its first
    /// scrape done).
    pub async fn wait_for(&self, query: &str) {
        let url = format!("http://127.0.0.1:{}/api/v1/query?query={query}", self.port);
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        loop {
            let answer = tokio::time::timeout(Duration::from_secs(2), try_get(&url)).await;
            if let Ok(Some(body)) = answer {
                if body.contains("\"value\"") {
                    return;
                }
            }
            assert!(std::time::Instant::now() < deadline, "prometheus never had {query}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// A `[prometheus]` section pointing at it.
    pub fn section(&self) -> String {
        format!("[prometheus]\nurl = \"http://127.0.0.1:{}\"\ninterval = \"500ms\"\ntimeout = \"2s\"\n", self.port)
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
