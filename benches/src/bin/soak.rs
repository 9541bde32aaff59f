//! Soak test: the real release binary under steady load while everything
//! around it moves, checking that it neither errs nor grows.
//!
//! `benches/soak.sh [SECONDS]`, or
//! `cargo run --release -p weir-benches --features soak --bin soak -- [SECONDS] [--clients N]
//! [--slowloris N] [--allow-flap-errors] [--crash-flaps]` (the binary is
//! `weir` next to the soak binary, e.g. `target/release/weir`, or `$WEIR`).
//!
//! For SECONDS (default 600):
//!
//! * three in-process upstreams on loopback: stable on two addresses (`a`,
//!   `b`), canary on one (`c`); `b` **flaps**: every 6 s its listener
//!   closes for 2 s, then it comes back on the same port. It goes down like
//!   a server being restarted (requests in flight finish, then its
//!   connections close); with `--crash-flaps` like a crashed one
//!   (connections reset with requests in flight);
//! * `--clients` (16) keep-alive clients send requests back to back (sticky
//!   keys, forced canary, and keyless ones);
//! * every second the config file is rewritten (temp file + rename, so
//!   weir's watcher sees one atomic change) with a new weight, and every
//!   other second a SIGHUP follows at once, racing the watcher;
//! * `--slowloris` (4) clients send a request head one byte every 300 ms and
//!   must be cut by `timeouts.header_read` (2 s) within 1.5× of it.
//!
//! It prints requests, non-2xx by status, transport errors, reloads, and
//! weir's RSS and open fds after warm-up and at the end, then stops weir
//! with SIGTERM. It exits 1 when:
//!
//! * any request failed outside a flap window (or with a status other than
//!   502/503/504 inside one), any transport error, a wrong body;
//! * any request failed inside a flap window (its start or end within
//!   250 ms of one), unless `--allow-flap-errors`;
//! * a slowloris connection outlived 1.5× `header_read` + 1 s;
//! * a reload was rejected, or weir exited early or not cleanly on SIGTERM;
//! * RSS grew by more than 50 % + 10 MiB between warm-up and end, open fds
//!   under load by more than `clients + slowloris + 8`, or the fds do not
//!   return to the idle baseline (+2) once the load stops.
//!
//! The upstreams, the weir child, its config and the reading of its
//! metrics are the tests crate's helpers (`weir_tests`).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinSet;
use weir_tests::{
    config_text_with, sample_sum, try_parse_prometheus, write_atomically, Keep, Launch, Mode, Process, Samples, Stop,
    Upstream,
};

type Error = Box<dyn std::error::Error + Send + Sync>;
type Res<T> = Result<T, Error>;

const HEADER_READ: Duration = Duration::from_secs(2);
const FLAP_UP: Duration = Duration::from_secs(4);
const FLAP_DOWN: Duration = Duration::from_secs(2);
/// A request touching a flap window widened by this much counts as flap-related.
const FLAP_MARGIN: Duration = Duration::from_millis(250);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
const SLOWLORIS_BYTE_EVERY: Duration = Duration::from_millis(300);
/// An ephemeral loopback port.
const LOOPBACK: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 0);

struct Args {
    seconds: u64,
    clients: usize,
    slowloris: usize,
    allow_flap_errors: bool,
    crash_flaps: bool,
    weir: PathBuf,
}

fn args() -> Res<Args> {
    let mut a = Args {
        seconds: 600,
        clients: 16,
        slowloris: 4,
        allow_flap_errors: false,
        crash_flaps: false,
        weir: std::env::var_os("WEIR").map(PathBuf::from).unwrap_or_else(default_weir),
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut number = |what: &str| -> Res<u64> {
            let v = it.next().ok_or_else(|| format!("{what} needs a number"))?;
            Ok(v.parse().map_err(|_| format!("{what}: \"{v}\" is not a number"))?)
        };
        match arg.as_str() {
            "--clients" => a.clients = number("--clients")? as usize,
            "--slowloris" => a.slowloris = number("--slowloris")? as usize,
            "--allow-flap-errors" => a.allow_flap_errors = true,
            "--crash-flaps" => a.crash_flaps = true,
            "-h" | "--help" => {
                println!(
                    "soak [SECONDS] [--clients N] [--slowloris N] [--allow-flap-errors] [--crash-flaps]   (WEIR=path/to/weir)"
                );
                std::process::exit(0);
            }
            s => a.seconds = s.parse().map_err(|_| format!("unknown argument \"{s}\""))?,
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

/// What the run saw; every field is bounded (counters and small maps).
#[derive(Default)]
struct Stats {
    ok: AtomicU64,
    by_body: Mutex<BTreeMap<String, u64>>,
    /// Non-2xx outside flap windows, by status.
    failed: Mutex<BTreeMap<u16, u64>>,
    /// Non-2xx touching a flap window, by status.
    flap_failed: Mutex<BTreeMap<u16, u64>>,
    /// When the first of them ended, in ms after the address went down.
    flap_when_ms: Mutex<Vec<i64>>,
    transport: Mutex<BTreeMap<String, u64>>,
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

    fn total(&self) -> u64 {
        let sum = |m: &Mutex<BTreeMap<_, u64>>| lock(m).values().sum::<u64>();
        self.ok.load(Ordering::Relaxed)
            + sum(&self.failed)
            + sum(&self.flap_failed)
            + lock(&self.transport).values().sum::<u64>()
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

// --------------------------------------------------------------------- weir

fn config_text(a: SocketAddr, b: SocketAddr, c: SocketAddr, weight: u32, version: &str) -> String {
    let timeouts = format!(
        r#"[timeouts]
connect = "500ms"
header_read = "{header_read}s"
upstream_response = "5s"
idle = "30s"
upstream_idle = "2s""#,
        header_read = HEADER_READ.as_secs()
    );
    let route = format!(
        r#"weight = {weight}
sticky = {{ header = "x-user-id" }}
force = {{ header = "x-canary" }}"#
    );
    config_text_with(&[a, b], &[c], version, &route, &timeouts)
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

async fn client_loop(id: usize, url: String, stats: Arc<Stats>, stop: Arc<AtomicBool>) {
    // One keep-alive connection per client.
    let client = Client::builder(TokioExecutor::new()).pool_max_idle_per_host(1).build_http::<Empty<Bytes>>();
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
        stats.max_latency_us.fetch_max(end.duration_since(start).as_micros() as u64, Ordering::Relaxed);
        match result {
            Ok(Ok((status, body))) if (200..300).contains(&status) => {
                stats.ok.fetch_add(1, Ordering::Relaxed);
                let name = match &body[..] {
                    b"stable-a" | b"stable-b" | b"canary" => String::from_utf8_lossy(&body).into_owned(),
                    _ => "unexpected body".to_string(),
                };
                bump(&stats.by_body, name);
            }
            Ok(Ok((status, _))) => {
                let flap = if matches!(status, 502..=504) { stats.in_flap(start, end) } else { None };
                if let Some(ms) = flap {
                    bump(&stats.flap_failed, status);
                    let mut when = lock(&stats.flap_when_ms);
                    if when.len() < 20 {
                        when.push(ms);
                    }
                } else {
                    bump(&stats.failed, status);
                }
            }
            Ok(Err(e)) => bump(&stats.transport, short_error(&*e)),
            Err(_) => bump(&stats.transport, "timeout".to_string()),
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
    let (a, c) = (stable_a.addr, canary.addr);

    let dir = tempfile::Builder::new().prefix("weir-soak-").tempdir()?;
    let path = dir.path().join("weir.toml");
    write_atomically(&path, &config_text(a, b, c, 10, "v2-a"))?;
    let launch = Launch {
        bin: args.weir.clone(),
        args: Vec::new(),
        keep: Keep::Warnings(10),
        startup: Duration::from_secs(30),
        env: Vec::new(),
    };
    let mut weir = Process::start(&launch, &path).map_err(|e| format!("weir did not start: {e}"))?;
    println!(
        "soak: weir {} (pid {}) data {} admin {}; upstreams a={a} b={b} (flapping) c={c}; {} s, {} clients, {} slowloris",
        args.weir.display(),
        weir.child.id(),
        weir.data_addr,
        weir.admin_addr,
        args.seconds,
        args.clients,
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
        tasks.spawn(client_loop(id, url.clone(), stats.clone(), stop_load.clone()));
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
        write_atomically(&path, &config_text(a, b, c, weight as u32, version))?;
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
    while tasks.join_next().await.is_some() {}
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
    let flaps = lock(&stats.flaps).len();
    let mib = |k: u64| k as f64 / 1024.0;
    println!("\n== weir soak: {:.0} s, {} clients, {} slowloris", elapsed.as_secs_f64(), args.clients, args.slowloris);
    println!(
        "requests            {n} ({:.0} req/s), 2xx {}",
        n as f64 / elapsed.as_secs_f64(),
        stats.ok.load(Ordering::Relaxed)
    );
    println!("served by           {:?}", lock(&stats.by_body));
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
    if let Some(bad) = lock(&stats.by_body).get("unexpected body") {
        failures.push(format!("{bad} responses with an unexpected body"));
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
    let fd_slack = args.clients + args.slowloris + 8;
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
