//! A burst of connections against the release binary (`benches/burst.sh`):
//! N connections opened and held at once, one keep-alive request on each
//! (one at a time, so the upstream pool stays at one connection), then all
//! closed at once, half with FIN and half with RST; ROUNDS times. Prints
//! weir's file descriptors and RSS at each step, and fails when the fds are
//! not back within 5 of the baseline 5 s after a burst, or when RSS after
//! the last burst is more than 10 % above RSS after the first (growth from
//! burst to burst is a leak; the first burst's high-water mark is the
//! allocator keeping what it got).
//!
//!   burst [N] [ROUNDS]   (defaults 10000, 3; WEIR=path/to/weir)

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use weir_tests::{config_text_with, Keep, Launch, Mode, Process, Upstream};

type Res<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

/// Connections connecting at once.
const CONNECT_CHUNK: usize = 500;
/// How close to the baseline, and how soon.
const FD_SLACK: usize = 5;
const FD_WITHIN: Duration = Duration::from_secs(5);

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let n = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(10_000);
    let rounds: usize = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(3);
    if rounds < 2 || n == 0 {
        eprintln!("burst: at least 2 rounds of 1 connection (RSS is compared from the first burst to the last)");
        std::process::exit(2);
    }
    let weir = std::env::var_os("WEIR").map_or_else(
        || PathBuf::from(std::env::var("CARGO_TARGET_DIR").unwrap_or_else(|_| "target".into())).join("release/weir"),
        PathBuf::from,
    );
    let rt = weir_benches::current_thread_runtime();
    match rt.block_on(run(weir, n, rounds)) {
        Ok(true) => println!("PASS"),
        Ok(false) => {
            println!("FAIL");
            std::process::exit(1);
        }
        Err(e) => {
            eprintln!("burst: {e}");
            std::process::exit(1);
        }
    }
}

async fn request(s: &mut TcpStream) -> Res<()> {
    s.write_all(b"GET /burst HTTP/1.1\r\nhost: burst.test\r\n\r\n").await?;
    let mut buf = [0u8; 1024];
    let mut got = Vec::new();
    while !got.windows(6).any(|w| w == b"stable") {
        let k = tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf)).await??;
        if k == 0 {
            return Err("closed before the response".into());
        }
        got.extend_from_slice(&buf[..k]);
    }
    Ok(())
}

async fn run(bin: PathBuf, n: usize, rounds: usize) -> Res<bool> {
    let up = Upstream::start("stable", Mode::Named).await;
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("weir.toml");
    let top = format!("[limits]\nmax_connections = {}", n + 100);
    std::fs::write(&path, config_text_with(&[up.addr], &[up.addr], "v2", "weight = 0", &top))?;
    let launch = Launch {
        bin: bin.clone(),
        args: Vec::new(),
        keep: Keep::Warnings(10),
        startup: Duration::from_secs(30),
        env: vec![],
    };
    let weir = Process::start(&launch, &path).map_err(|e| format!("weir did not start: {e}"))?;
    let addr: SocketAddr = weir.data_addr;
    // Warm: the upstream pool holds its one connection.
    request(&mut TcpStream::connect(addr).await?).await?;
    tokio::time::sleep(Duration::from_millis(200)).await;
    // Not readable (weir gone, no /proc): an error, never a pass.
    let fds = || weir.fds().ok_or("cannot read weir's fds in /proc");
    let rss = || weir.rss_kib().ok_or("cannot read weir's RSS in /proc");
    let (base_fds, base_rss) = (fds()?, rss()?);
    println!("burst: {} (pid {}), {n} connections x {rounds} rounds", bin.display(), weir.child.id());
    println!("baseline            fds {base_fds:6}  rss {base_rss:7} KiB");
    let mut ok = true;
    let mut after = Vec::new();
    for round in 1..=rounds {
        let start = Instant::now();
        let mut conns = Vec::with_capacity(n);
        while conns.len() < n {
            let k = CONNECT_CHUNK.min(n - conns.len());
            for s in futures_util::future::join_all((0..k).map(|_| TcpStream::connect(addr))).await {
                conns.push(s?);
            }
        }
        for s in &mut conns {
            request(s).await?;
        }
        let (peak_fds, peak_rss) = (fds()?, rss()?);
        let opened = start.elapsed();
        if peak_fds < base_fds + n * 9 / 10 {
            return Err(format!("weir holds {peak_fds} fds with {n} connections open (baseline {base_fds})").into());
        }
        // All at once: half FIN, half RST.
        for (i, s) in conns.into_iter().enumerate() {
            if i % 2 == 1 {
                // A zero linger never blocks (the deprecation's concern):
                // the close sends RST.
                #[allow(deprecated)]
                let _ = s.set_linger(Some(Duration::ZERO));
            }
            drop(s);
        }
        let closed = Instant::now();
        let back = loop {
            if fds()? <= base_fds + FD_SLACK {
                break Some(closed.elapsed());
            }
            if closed.elapsed() > FD_WITHIN {
                break None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        tokio::time::sleep(FD_WITHIN.saturating_sub(closed.elapsed())).await;
        let (end_fds, end_rss) = (fds()?, rss()?);
        after.push(end_rss);
        let back_text = back.map_or_else(|| "NOT within 5 s".to_string(), |d| format!("in {:.2} s", d.as_secs_f64()));
        println!(
            "round {round}: opened + {n} requests in {:.1} s; peak fds {peak_fds:6} rss {peak_rss:7} KiB; \
5 s after the close fds {end_fds:6} rss {end_rss:7} KiB; fds back to baseline+{FD_SLACK} {back_text}",
            opened.as_secs_f64()
        );
        if back.is_none() {
            ok = false;
        }
    }
    if let (Some(first), Some(last)) = (after.first(), after.last()) {
        let growth = *last as f64 / *first as f64;
        println!("rss after the last burst / after the first: {growth:.3}");
        if growth > 1.10 {
            println!("rss grows from burst to burst");
            ok = false;
        }
    }
    // And it still serves.
    request(&mut TcpStream::connect(addr).await?).await?;
    Ok(ok)
}
