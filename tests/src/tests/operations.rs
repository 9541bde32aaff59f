//! Running weir in production: `weir check` loading what the config names,
//! backends following DNS (a DNS server the test controls), a drain that
//! drops nothing through a restart, JSON process logs and `WEIR_CONFIG`.

use std::io::BufRead;
use std::net::{Ipv4Addr, SocketAddr};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::rdata::A;
use hickory_proto::rr::{RData, Record, RecordType};
use tokio::net::{TcpListener, TcpStream, UdpSocket};

use crate::*;

/// What the test's DNS server answers to every A query.
#[derive(Clone, Debug)]
enum Zone {
    /// These addresses, with a TTL of 1 s.
    Addrs(Vec<Ipv4Addr>),
    /// NXDOMAIN: no such name.
    NoSuchName,
    /// SERVFAIL: the server cannot answer now.
    Failing,
}

/// A DNS server on a loopback UDP port, answering every name as `zone`
/// says (AAAA queries get no records).
struct DnsServer {
    addr: SocketAddr,
    zone: Arc<Mutex<Zone>>,
    queries: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl DnsServer {
    async fn start(zone: Zone) -> DnsServer {
        let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = sock.local_addr().unwrap();
        let zone = Arc::new(Mutex::new(zone));
        let queries = Arc::new(AtomicU64::new(0));
        let (z, q) = (zone.clone(), queries.clone());
        let task = tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            loop {
                let Ok((n, peer)) = sock.recv_from(&mut buf).await else { return };
                let Ok(query) = Message::from_vec(&buf[..n]) else { continue };
                q.fetch_add(1, Ordering::Relaxed);
                let mut resp = Message::response(query.metadata.id, query.metadata.op_code);
                resp.metadata.recursion_desired = query.metadata.recursion_desired;
                resp.metadata.recursion_available = true;
                resp.add_queries(query.queries.clone());
                match z.lock().unwrap().clone() {
                    Zone::Addrs(ips) => {
                        for question in query.queries.iter().filter(|q| q.query_type() == RecordType::A) {
                            for ip in &ips {
                                resp.add_answer(Record::from_rdata(question.name().clone(), 1, RData::A(A(*ip))));
                            }
                        }
                    }
                    Zone::NoSuchName => resp.metadata.response_code = ResponseCode::NXDomain,
                    Zone::Failing => resp.metadata.response_code = ResponseCode::ServFail,
                }
                let _ = sock.send_to(&resp.to_vec().unwrap(), peer).await;
            }
        });
        DnsServer { addr, zone, queries, task }
    }

    fn set(&self, zone: Zone) {
        *self.zone.lock().unwrap() = zone;
    }
}

impl Drop for DnsServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn check(args: &[&str], config: &std::path::Path) -> (Option<i32>, String) {
    let out = Command::new(weir_bin()).arg("check").args(args).arg("-c").arg(config).output().unwrap();
    (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
}

// Multi-threaded: the DNS server answers while `weir check` blocks a thread.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_loads_every_file_and_resolves_every_name_the_config_names() {
    let dns = DnsServer::start(Zone::NoSuchName).await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("weir.toml");
    let text = |tls: &str| {
        format!(
            r#"
[listen]
addr = "127.0.0.1:0"
{tls}
[admin]
addr = "127.0.0.1:0"
token_file = "admin.token"
[dns]
servers = ["{}"]
[backends.stable]
addrs = ["127.0.0.1:9001"]
[backends.canary]
addrs = ["canary.weir.test:9002"]
[[routes]]
name = "web"
stable = "stable"
canary = "canary"
"#,
            dns.addr
        )
    };
    std::fs::write(&path, text(r#"tls = { cert = "edge.pem", key = "edge.key" }"#)).unwrap();

    // Every problem, each with its key; exit 78 as for a bad config.
    let (code, err) = check(&[], &path);
    assert_eq!(code, Some(78), "{err}");
    assert!(err.contains("admin.token_file"), "{err}");
    assert!(err.contains("listen.tls.cert"), "{err}");
    assert!(err.contains("backends.canary.addrs: cannot resolve canary.weir.test:9002"), "{err}");
    assert!(dns.queries.load(Ordering::Relaxed) > 0, "the name was not looked up");

    // Offline: the files still, not the names.
    let (code, err) = check(&["--no-resolve"], &path);
    assert_eq!(code, Some(78), "{err}");
    assert!(err.contains("admin.token_file") && !err.contains("cannot resolve"), "{err}");

    // The text alone passes.
    let (code, err) = check(&["--syntax-only"], &path);
    assert_eq!(code, Some(0), "{err}");

    // Everything there: a token, a certificate, a name that resolves.
    std::fs::write(dir.path().join("admin.token"), "s3cret\n").unwrap();
    let ca = crate::tls::Ca::new("check test");
    let (cert, key) = ca.leaf(&["localhost"], false).write(dir.path(), "edge");
    let pair = format!(r#"tls = {{ cert = "{}", key = "{}" }}"#, cert.display(), key.display());
    std::fs::write(&path, text(&pair)).unwrap();
    dns.set(Zone::Addrs(vec![Ipv4Addr::LOCALHOST]));
    let (code, err) = check(&[], &path);
    assert_eq!(code, Some(0), "{err}");
    // Valid, but a token that short is said to be guessable.
    assert!(err.contains("warning: admin.token_file: the token is 6 characters long"), "{err}");

    // An empty token file is as bad as none.
    std::fs::write(dir.path().join("admin.token"), "\n").unwrap();
    let (code, err) = check(&[], &path);
    assert_eq!(code, Some(78), "{err}");
    assert!(err.contains("admin.token_file") && err.contains("empty"), "{err}");
}

/// Requests sent and failed by a [`Clients`] run; the upstream that
/// answered each success is in its body.
#[derive(Default)]
struct Tally {
    ok: AtomicU64,
    failed: AtomicU64,
    errors: Mutex<Vec<String>>,
}

/// `n` keep-alive clients sending GETs to `url` back to back until stopped.
struct Clients {
    tally: Arc<Tally>,
    stop: Arc<std::sync::atomic::AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Clients {
    fn start(url: String, n: usize) -> Clients {
        let tally = Arc::new(Tally::default());
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let tasks = (0..n)
            .map(|_| {
                let (tally, stop, url) = (tally.clone(), stop.clone(), url.clone());
                tokio::spawn(async move {
                    let c = client();
                    while !stop.load(Ordering::Relaxed) {
                        let req =
                            http::Request::get(&url).body(http_body_util::Full::new(bytes::Bytes::new())).unwrap();
                        let exchange = async {
                            match c.request(req).await {
                                Ok(r) if r.status() == 200 => {
                                    r.into_body().collect().await.map(drop).map_err(|e| format!("body: {e}"))
                                }
                                Ok(r) => Err(format!("status {}", r.status())),
                                Err(e) => Err(format!("{e:?}")),
                            }
                        };
                        // A request that hangs is a failure, not a stuck test.
                        let outcome = tokio::time::timeout(Duration::from_secs(5), exchange)
                            .await
                            .unwrap_or_else(|_| Err("no answer within 5 s".into()));
                        match outcome {
                            Ok(()) => tally.ok.fetch_add(1, Ordering::Relaxed),
                            Err(e) => {
                                tally.errors.lock().unwrap().push(e);
                                tally.failed.fetch_add(1, Ordering::Relaxed)
                            }
                        };
                    }
                })
            })
            .collect();
        Clients { tally, stop, tasks }
    }

    async fn stop(self) -> Arc<Tally> {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.tasks {
            // Each request is bounded (5 s), so each client ends.
            tokio::time::timeout(Duration::from_secs(10), t).await.expect("a client did not stop").unwrap();
        }
        self.tally
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backends_follow_dns_without_dropping_requests_or_warm_connections() {
    // Two upstreams on one port, at two loopback addresses.
    let (a, b) = loop {
        let a = Upstream::bind(([127, 0, 0, 2], 0).into(), "a", Mode::Named, true).await.unwrap();
        match Upstream::bind(([127, 0, 0, 3], a.addr.port()).into(), "b", Mode::Named, true).await {
            Ok(b) => break (a, b),
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => continue, // taken on 127.0.0.3
            Err(e) => panic!("cannot listen on 127.0.0.3: {e}"),
        }
    };
    let port = a.addr.port();
    let ip = |last: u8| Ipv4Addr::new(127, 0, 0, last);
    let dns = DnsServer::start(Zone::Addrs(vec![ip(2)])).await;
    let w = InProcess::start(&format!(
        r#"
[listen]
addr = "127.0.0.1:0"
[admin]
addr = "127.0.0.1:0"
[dns]
servers = ["{}"]
min_ttl = "200ms"
max_ttl = "1s"
[backends.app]
addrs = ["app.weir.test:{port}"]
[[routes]]
name = "web"
stable = "app"
"#,
        dns.addr
    ))
    .await;
    let api = format!("http://{}/api/v1/backends", w.weir.admin_addr());
    let clients = Clients::start(w.url("/"), 2);
    let long = Duration::from_secs(15);
    until(long, "a serves", || a.count() >= 50).await;
    // Two clients back to back: weir holds two connections to a.
    until(long, "two warm connections to a", || a.accepted.load(Ordering::Relaxed) >= 2).await;
    let warm = a.accepted.load(Ordering::Relaxed);
    assert_eq!(warm, 2, "{warm} connections for 2 clients");

    // A second address: b takes traffic; a keeps its warm connections.
    dns.set(Zone::Addrs(vec![ip(2), ip(3)]));
    until(long, "b serves after the name gained its address", || b.count() >= 50).await;
    let a_before = a.count();
    until(long, "a still serves", || a.count() >= a_before + 50).await;
    assert_eq!(a.accepted.load(Ordering::Relaxed), warm, "a's pooled connections were dropped");

    // The name stops resolving: both addresses keep serving, the failure
    // is counted and shown.
    dns.set(Zone::Failing);
    let metrics = format!("http://{}/metrics", w.weir.admin_addr());
    let failures = || async {
        let text = try_get(&metrics).await.unwrap_or_default();
        sample(&parse_prometheus(&text), "weir_dns_failures_total", &[("backend", "app")])
    };
    let deadline = tokio::time::Instant::now() + long;
    while failures().await < 1.0 {
        assert!(tokio::time::Instant::now() < deadline, "no weir_dns_failures_total");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let shown: serde_json::Value = serde_json::from_str(&try_get(&api).await.unwrap()).unwrap();
    let name = &shown["backends"][0]["dns"][0];
    assert_eq!(name["name"], format!("app.weir.test:{port}"), "{shown}");
    assert!(name["error"].is_string(), "{shown}");
    assert_eq!(name["addrs"].as_array().map(Vec::len), Some(2), "the last addresses are kept: {shown}");
    let (a_now, b_now) = (a.count(), b.count());
    until(long, "both keep serving", || a.count() >= a_now + 20 && b.count() >= b_now + 20).await;

    // b only: a is dropped, the requests in flight to it finish.
    dns.set(Zone::Addrs(vec![ip(3)]));
    let want = serde_json::json!([format!("127.0.0.3:{port}")]);
    let deadline = tokio::time::Instant::now() + long;
    loop {
        let shown: serde_json::Value = serde_json::from_str(&try_get(&api).await.unwrap()).unwrap();
        let name = &shown["backends"][0]["dns"][0];
        if name["addrs"] == want && name["error"].is_null() {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "the new answer is not served: {shown}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (a_then, b_then) = (a.count(), b.count());
    until(long, "b serves alone", || b.count() >= b_then + 100).await;
    assert!(a.count() <= a_then + 2, "a still got requests: {} after {a_then}", a.count());

    let tally = clients.stop().await;
    assert_eq!(tally.failed.load(Ordering::Relaxed), 0, "{:?}", tally.errors.lock().unwrap());
    assert!(tally.ok.load(Ordering::Relaxed) > 300);
}

/// A Kubernetes Service in miniature: each new connection goes to the
/// endpoint of the moment, established ones stay where they are, and one
/// to an endpoint that refuses is closed unanswered.
struct Service {
    addr: SocketAddr,
    endpoint: Arc<Mutex<SocketAddr>>,
    task: tokio::task::JoinHandle<()>,
}

impl Service {
    async fn start(endpoint: SocketAddr) -> Service {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let endpoint = Arc::new(Mutex::new(endpoint));
        let to = endpoint.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut down, _)) = listener.accept().await else { return };
                let target = *to.lock().unwrap();
                tokio::spawn(async move {
                    if let Ok(mut up) = TcpStream::connect(target).await {
                        let _ = tokio::io::copy_bidirectional(&mut down, &mut up).await;
                    }
                });
            }
        });
        Service { addr, endpoint, task }
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A rolling update through a [`Service`]: the new replica is up, the old
/// one gets SIGTERM, and its endpoint is removed 300 ms later (as the
/// endpoints controller and kube-proxy take time to). Returns the tally
/// and the old replica's exit code.
async fn rolling_update(drain_delay: &str) -> (Arc<Tally>, Option<i32>, Vec<String>) {
    let up = Upstream::start("app", Mode::Named).await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("weir.toml");
    std::fs::write(
        &path,
        format!(
            "[listen]\naddr = \"127.0.0.1:0\"\n[admin]\naddr = \"127.0.0.1:0\"\n[timeouts]\ndrain_delay = \"{drain_delay}\"\nshutdown_grace = \"5s\"\n[backends.app]\naddrs = [\"{}\"]\n[[routes]]\nname = \"web\"\nstable = \"app\"\n",
            up.addr
        ),
    )
    .unwrap();
    let mut old = Process::spawn(&path);
    let new = Process::spawn(&path);
    let svc = Service::start(old.data_addr).await;
    let clients = Clients::start(format!("http://{}/", svc.addr), 4);
    let tally = clients.tally.clone();
    until(Duration::from_secs(10), "traffic through the old replica", || tally.ok.load(Ordering::Relaxed) >= 200).await;

    old.signal("TERM").unwrap();
    old.wait_for_line("shutting down", Duration::from_secs(5));
    tokio::time::sleep(Duration::from_millis(300)).await;
    *svc.endpoint.lock().unwrap() = new.data_addr;
    let code = tokio::task::spawn_blocking(move || {
        let code = old.child.wait().unwrap().code();
        let log = old.log.lock().unwrap().clone();
        (code, log)
    });
    let (code, log) = tokio::time::timeout(Duration::from_secs(20), code).await.unwrap().unwrap();
    let after = tally.ok.load(Ordering::Relaxed);
    until(Duration::from_secs(10), "traffic through the new replica", || {
        tally.ok.load(Ordering::Relaxed) >= after + 200
    })
    .await;
    (clients.stop().await, code, log)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drain_delay_loses_no_request_through_a_restart() {
    let (tally, code, log) = rolling_update("1500ms").await;
    eprintln!(
        "drain delay 1.5 s: {} requests, {} failed",
        tally.ok.load(Ordering::Relaxed) + tally.failed.load(Ordering::Relaxed),
        tally.failed.load(Ordering::Relaxed)
    );
    assert_eq!(code, Some(0), "{log:?}");
    assert_eq!(tally.failed.load(Ordering::Relaxed), 0, "{:?}", tally.errors.lock().unwrap());
    assert!(log.iter().any(|l| l.contains("draining: not ready")), "{log:?}");

    // The same restart without the delay loses requests: the harness sees
    // what the delay prevents.
    let (tally, code, _) = rolling_update("0s").await;
    eprintln!(
        "no drain delay: {} requests, {} failed",
        tally.ok.load(Ordering::Relaxed) + tally.failed.load(Ordering::Relaxed),
        tally.failed.load(Ordering::Relaxed)
    );
    assert_eq!(code, Some(0));
    assert!(tally.failed.load(Ordering::Relaxed) > 0, "no request failed without a drain delay");
}

#[tokio::test]
async fn readiness_fails_at_once_and_the_listener_stays_open_during_the_drain_delay() {
    let up = Upstream::start("app", Mode::Named).await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("weir.toml");
    std::fs::write(
        &path,
        format!(
            "[listen]\naddr = \"127.0.0.1:0\"\n[admin]\naddr = \"127.0.0.1:0\"\n[timeouts]\ndrain_delay = \"3s\"\n[backends.app]\naddrs = [\"{}\"]\n[[routes]]\nname = \"web\"\nstable = \"app\"\n",
            up.addr
        ),
    )
    .unwrap();
    let mut p = Process::spawn(&path);
    let url = format!("http://{}/", p.data_addr);
    let c = client();
    let (status, _) = get(&c, &url, &[]).await;
    assert_eq!(status, 200);
    // An HTTP/2 (h2c) connection, open before the signal.
    let h2_get = |send: h2::client::SendRequest<bytes::Bytes>| {
        let url = url.clone();
        async move {
            let req = http::Request::get(url).body(()).unwrap();
            let (resp, _) = send.ready().await.unwrap().send_request(req, true).unwrap();
            resp.await.unwrap().status()
        }
    };
    let (send, conn) = h2::client::handshake(TcpStream::connect(p.data_addr).await.unwrap()).await.unwrap();
    let h2_conn = tokio::spawn(conn);
    assert_eq!(h2_get(send.clone()).await, 200);

    p.signal("TERM").unwrap();
    p.wait_for_line("draining: not ready", Duration::from_secs(5));
    let ready = client().get(format!("http://{}/readyz", p.admin_addr).parse().unwrap()).await.unwrap();
    assert_eq!(ready.status(), 503);
    // The HTTP/2 connection open before gets a GOAWAY and ends, while the
    // listener still serves: a new connection, HTTP/1.1 or HTTP/2.
    let ended = tokio::time::timeout(Duration::from_secs(2), h2_conn).await;
    assert!(matches!(ended, Ok(Ok(Ok(())))), "the h2 connection did not end: {ended:?}");
    let (send, conn) = h2::client::handshake(TcpStream::connect(p.data_addr).await.unwrap()).await.unwrap();
    tokio::spawn(conn);
    assert_eq!(h2_get(send).await, 200);
    // HTTP/1.1 responses tell the client to close, on weir's own loop (a
    // GET) and on hyper's (a POST with a body).
    let fresh = client();
    let resp = fresh.get(url.parse().unwrap()).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers().get("connection").map(|v| v.as_bytes()), Some(&b"close"[..]));
    let post = http::Request::post(&url).body(http_body_util::Full::new(bytes::Bytes::from_static(b"x"))).unwrap();
    let resp = client().request(post).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers().get("connection").map(|v| v.as_bytes()), Some(&b"close"[..]));
}

#[test]
fn process_logs_can_be_json_and_weir_config_names_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("weir.toml");
    std::fs::write(
        &path,
        "[listen]\naddr = \"127.0.0.1:0\"\n[admin]\naddr = \"127.0.0.1:0\"\n[log]\nformat = \"json\"\n[backends.app]\naddrs = [\"127.0.0.1:9\"]\n[[routes]]\nname = \"web\"\nstable = \"app\"\n",
    )
    .unwrap();
    // No -c: WEIR_CONFIG says where the config is.
    let out = Command::new(weir_bin()).arg("check").env("WEIR_CONFIG", &path).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    let mut child = Command::new(weir_bin())
        .args(["run", "--workers", "1"])
        .env("WEIR_CONFIG", &path)
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = std::io::BufReader::new(child.stderr.take().unwrap());
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in stderr.lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let mut listening = None;
    while let Ok(line) = rx.recv_timeout(deadline.saturating_duration_since(std::time::Instant::now())) {
        let v: serde_json::Value =
            serde_json::from_str(&line).unwrap_or_else(|e| panic!("not a JSON log line ({e}): {line}"));
        assert!(v["timestamp"].is_string() && v["level"].is_string(), "{line}");
        if v["fields"]["message"] == "weir listening" {
            listening = Some(v);
            break;
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    let v = listening.expect("no `weir listening` line within 20 s");
    let data: SocketAddr = v["fields"]["data"].as_str().unwrap().parse().unwrap();
    assert_eq!(data.ip(), std::net::IpAddr::from([127, 0, 0, 1]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctl_status_watch_redraws_until_interrupted() {
    use tokio::io::AsyncBufReadExt;
    let stable = Upstream::start("stable", Mode::Named).await;
    let canary = Upstream::start("canary", Mode::Named).await;
    let text = |weight: u32| config_text(stable.addr, canary.addr, &format!("weight = {weight}"), "");
    let w = InProcess::start(&text(10)).await;
    let mut child = tokio::process::Command::new(weir_bin())
        .args(["ctl", "status", "--watch", "--interval", "100ms", "--admin"])
        .arg(format!("http://{}", w.weir.admin_addr()))
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    // Reads tables until one has a `web` row containing `want`.
    let mut tables = 0;
    let mut until_row = async |want: &str| {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let line = tokio::time::timeout_at(deadline, lines.next_line()).await.unwrap().unwrap().unwrap();
            if line.starts_with("every 100ms: ") {
                tables += 1;
            }
            if line.starts_with("web ") && line.contains(want) {
                return tables;
            }
        }
    };
    let first = until_row("10").await;
    // The next tables show a change made after the watch began.
    w.weir.apply(weir_control::config::parse(&text(30)).unwrap()).await.unwrap();
    let later = until_row("30").await;
    assert!(later > first, "{first} {later}");
    // Ctrl-C ends it, successfully.
    let pid = child.id().unwrap().to_string();
    assert!(Command::new("kill").args(["-INT", &pid]).status().unwrap().success());
    let status = tokio::time::timeout(Duration::from_secs(5), child.wait()).await.unwrap().unwrap();
    assert!(status.success(), "{status:?}");
}

#[test]
fn shell_completions_and_man_pages_come_from_the_command_line_definition() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(weir_bin()).args(["completions", "bash"]).output().unwrap();
    assert!(out.status.success());
    let script = String::from_utf8(out.stdout).unwrap();
    assert!(script.contains("--no-resolve") && script.contains("completions"), "{script}");
    let file = dir.path().join("weir.bash");
    std::fs::write(&file, &script).unwrap();
    let syntax = Command::new("bash").arg("-n").arg(&file).output().unwrap();
    assert!(syntax.status.success(), "{}", String::from_utf8_lossy(&syntax.stderr));

    let pages = dir.path().join("man");
    std::fs::create_dir(&pages).unwrap();
    let out = Command::new(weir_bin()).arg("man").arg("--dir").arg(&pages).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    for page in ["weir.1", "weir-run.1", "weir-check.1", "weir-ctl.1", "weir-replay.1"] {
        let path = pages.join(page);
        assert!(path.exists(), "{page}");
        // groff with every warning on: the page is well-formed roff.
        let lint = Command::new("groff").args(["-ww", "-man", "-z"]).arg(&path).output().unwrap();
        assert!(lint.status.success() && lint.stderr.is_empty(), "{page}: {}", String::from_utf8_lossy(&lint.stderr));
    }
    let check = std::fs::read_to_string(pages.join("weir-check.1")).unwrap();
    assert!(check.contains("no\\-resolve") && check.contains("WEIR_CONFIG"), "{check}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_access_log_nobody_reads_drops_lines_and_never_holds_a_request() {
    use std::os::unix::fs::OpenOptionsExt;
    let dir = tempfile::tempdir().unwrap();
    // A disk that stops: a pipe whose reader never reads. Once its 64 KiB
    // are full the log's writer thread blocks, and its queue fills.
    let pipe = dir.path().join("access.pipe");
    assert!(Command::new("mkfifo").arg(&pipe).status().unwrap().success());
    const O_NONBLOCK: i32 = 0o4000;
    let _reader = std::fs::OpenOptions::new().read(true).custom_flags(O_NONBLOCK).open(&pipe).unwrap();
    let up = Upstream::bind(([127, 0, 0, 1], 0).into(), "app", Mode::Named, false).await.unwrap();
    let w = InProcess::start(&format!(
        "[listen]\naddr = \"127.0.0.1:0\"\n[admin]\naddr = \"127.0.0.1:0\"\n[log]\naccess = \"{}\"\n[backends.app]\naddrs = [\"{}\"]\n[[routes]]\nname = \"web\"\nstable = \"app\"\n",
        pipe.display(),
        up.addr
    ))
    .await;
    let clients = Clients::start(w.url("/"), 8);
    let metrics = format!("http://{}/metrics", w.weir.admin_addr());
    let dropped = || async {
        let text = try_get(&metrics).await.unwrap_or_default();
        sample(&parse_prometheus(&text), "weir_access_log_dropped_total", &[])
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while dropped().await < 1.0 {
        assert!(tokio::time::Instant::now() < deadline, "no line dropped after {:?}", clients.tally.ok);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Requests went on while lines were dropped.
    let before = clients.tally.ok.load(Ordering::Relaxed);
    until(Duration::from_secs(10), "requests go on", || clients.tally.ok.load(Ordering::Relaxed) >= before + 500).await;
    let tally = clients.stop().await;
    assert_eq!(tally.failed.load(Ordering::Relaxed), 0, "{:?}", tally.errors.lock().unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_access_log_on_a_full_disk_counts_the_lines_it_loses() {
    // /dev/full: every write fails with ENOSPC, as on a full filesystem.
    let up = Upstream::start("app", Mode::Named).await;
    let w = InProcess::start(&format!(
        "[listen]\naddr = \"127.0.0.1:0\"\n[admin]\naddr = \"127.0.0.1:0\"\n[log]\naccess = \"/dev/full\"\n[backends.app]\naddrs = [\"{}\"]\n[[routes]]\nname = \"web\"\nstable = \"app\"\n",
        up.addr
    ))
    .await;
    let c = client();
    for _ in 0..20 {
        assert_eq!(get(&c, &w.url("/"), &[]).await.0, StatusCode::OK);
    }
    let metrics = format!("http://{}/metrics", w.weir.admin_addr());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let text = try_get(&metrics).await.unwrap_or_default();
        // Every line is lost, and counted (the writer may still hold the last).
        let lost = sample(&parse_prometheus(&text), "weir_access_log_dropped_total", &[]);
        if lost >= 20.0 {
            assert_eq!(lost, 20.0);
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{lost} of 20 lines counted as lost");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
