//! Latency at concurrency 1, the contenders measured request by request in
//! turn, for `benches/load.sh`.
//!
//!   c1-paired SECONDS BLOCKS direct=ADDR NAME=ADDR...
//!
//! One keep-alive connection to each address; then, for SECONDS, cycles: in
//! each cycle every address gets one `GET /` in a freshly shuffled order, and
//! the time from the request's write to the answer's last byte is recorded.
//! wrk's c=1 tries measure one proxy for seconds, then the next: on a shared
//! VM the machine drifts between them by more than the proxies differ. Here
//! the contenders share every moment, so the comparison is paired.
//!
//! Prints, per NAME, the median minus the `direct` median (the added
//! latency), then the median of each cycle's NAME − NAME' differences against
//! the first NAME, over the whole run and per block (the run cut in BLOCKS
//! equal parts of time, to show whether it holds throughout).
//!
//! The client is a blocking socket per address (a thread waiting in
//! `recv`); it reads answers with a `Content-Length`, which is what the
//! upstreams in `load.sh` send.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

const REQUEST: &[u8] = b"GET / HTTP/1.1\r\nHost: bench\r\n\r\n";

struct Contender {
    name: String,
    conn: TcpStream,
    buf: Vec<u8>,
}

impl Contender {
    fn connect(name: &str, addr: SocketAddr) -> Result<Self, String> {
        let conn = TcpStream::connect(addr).map_err(|e| format!("{name} ({addr}): {e}"))?;
        conn.set_nodelay(true).map_err(|e| format!("{name}: {e}"))?;
        conn.set_read_timeout(Some(Duration::from_secs(5))).map_err(|e| format!("{name}: {e}"))?;
        Ok(Contender { name: name.to_owned(), conn, buf: Vec::with_capacity(4096) })
    }

    /// One request and its whole answer; the time it took.
    fn exchange(&mut self) -> Result<Duration, String> {
        let start = Instant::now();
        self.conn.write_all(REQUEST).map_err(|e| format!("{}: write: {e}", self.name))?;
        self.buf.clear();
        let mut chunk = [0u8; 4096];
        loop {
            let n = self.conn.read(&mut chunk).map_err(|e| format!("{}: read: {e}", self.name))?;
            if n == 0 {
                return Err(format!("{}: connection closed", self.name));
            }
            self.buf.extend_from_slice(&chunk[..n]);
            if let Some(total) = answer_len(&self.buf).map_err(|e| format!("{}: {e}", self.name))? {
                if self.buf.len() >= total {
                    break;
                }
            }
        }
        let elapsed = start.elapsed();
        if !self.buf.starts_with(b"HTTP/1.1 200") {
            let line = self.buf.split(|&b| b == b'\r').next().unwrap_or_default();
            return Err(format!("{}: answered {}", self.name, String::from_utf8_lossy(line)));
        }
        Ok(elapsed)
    }
}

/// The whole answer's length once its head is in `buf`.
fn answer_len(buf: &[u8]) -> Result<Option<usize>, String> {
    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
        return Ok(None);
    };
    let head = std::str::from_utf8(&buf[..end]).map_err(|_| "head is not UTF-8".to_owned())?;
    let length = head
        .split("\r\n")
        .skip(1)
        .filter_map(|line| line.split_once(':'))
        .find(|(name, _)| name.trim().eq_ignore_ascii_case("content-length"))
        .ok_or("answer without Content-Length")?
        .1
        .trim()
        .parse::<usize>()
        .map_err(|e| format!("Content-Length: {e}"))?;
    Ok(Some(end + 4 + length))
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// xorshift64: a shuffle per cycle needs no more than that.
struct Rng(u64);
impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n as u64) as usize
    }
}

fn run(args: &[String]) -> Result<(), String> {
    let usage = "usage: c1-paired SECONDS BLOCKS direct=ADDR NAME=ADDR...";
    let secs: u64 = args.first().and_then(|s| s.parse().ok()).ok_or(usage)?;
    let blocks: usize = args.get(1).and_then(|s| s.parse().ok()).filter(|&b| b > 0).ok_or(usage)?;
    let mut all = Vec::new();
    for spec in &args[2..] {
        let (name, addr) = spec.split_once('=').ok_or(usage)?;
        let addr: SocketAddr = addr.parse().map_err(|e| format!("{spec}: {e}"))?;
        all.push(Contender::connect(name, addr)?);
    }
    if all.len() < 2 || all[0].name != "direct" {
        return Err(usage.to_owned());
    }
    // Warm every connection (and the proxies' upstream connections).
    for c in all.iter_mut() {
        for _ in 0..200 {
            c.exchange()?;
        }
    }
    let n = all.len();
    // samples[i][cycle]: microseconds; block[cycle]: which block of time.
    let mut samples: Vec<Vec<f64>> = vec![Vec::new(); n];
    let mut block_of = Vec::new();
    let mut order: Vec<usize> = (0..n).collect();
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let start = Instant::now();
    let total = Duration::from_secs(secs);
    while start.elapsed() < total {
        for i in (1..n).rev() {
            order.swap(i, rng.below(i + 1));
        }
        for &i in &order {
            samples[i].push(all[i].exchange()?.as_secs_f64() * 1e6);
        }
        block_of.push(((start.elapsed().as_secs_f64() / total.as_secs_f64()) * blocks as f64) as usize);
    }
    let cycles = block_of.len();
    let direct = median(&mut samples[0].clone());
    println!("c=1 paired: {cycles} cycles in {secs} s, the order shuffled each cycle; direct p50 {direct:.1} us");
    for (i, c) in all.iter().enumerate().skip(1) {
        println!("c=1 paired added latency p50, {}: {:.1} us", c.name, median(&mut samples[i].clone()) - direct);
    }
    // Paired differences against the first named contender.
    let base = 1;
    for (i, c) in all.iter().enumerate().skip(2) {
        let diff: Vec<f64> = (0..cycles).map(|k| samples[base][k] - samples[i][k]).collect();
        let per_block: Vec<String> = (0..blocks)
            .map(|b| {
                let mut d: Vec<f64> =
                    (0..cycles).filter(|&k| block_of[k].min(blocks - 1) == b).map(|k| diff[k]).collect();
                format!("{:+.1}", median(&mut d))
            })
            .collect();
        println!(
            "c=1 paired {} minus {}: median of per-cycle differences {:+.1} us (per block {})",
            all[base].name,
            c.name,
            median(&mut diff.clone()),
            per_block.join(" ")
        );
    }
    Ok(())
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let Err(e) = run(&args) {
        eprintln!("c1-paired: {e}");
        std::process::exit(1);
    }
}
