//! The gRPC peers of `benches/grpc.sh`, from tonic (the tests crate's
//! `weir.test.Echo` service and client):
//!
//!   grpc-peer server            serves on 127.0.0.1:0, prints the port,
//!                               serves until stdin closes
//!   grpc-peer latency ADDR N    N sequential unary calls through ADDR;
//!                               prints "p50_us p99_us"

use std::io::Read;
use std::time::Instant;

use bytes::Bytes;
use weir_tests::grpc::{Caller, GrpcServer};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let rt = weir_benches::current_thread_runtime();
    match args.get(1).map(String::as_str) {
        Some("server") => rt.block_on(async {
            let s = GrpcServer::start("bench").await;
            println!("{}", s.addr.port());
            // Until stdin closes (read on a blocking thread).
            let _ = tokio::task::spawn_blocking(|| std::io::stdin().read_to_end(&mut Vec::new())).await;
        }),
        Some("latency") => {
            let (Some(addr), Some(n)) =
                (args.get(2).and_then(|a| a.parse().ok()), args.get(3).and_then(|n| n.parse().ok()))
            else {
                eprintln!("usage: grpc-peer latency ADDR N");
                std::process::exit(2);
            };
            // On a thread of its own name, which `benches/c1trace.py` tells
            // from the server's.
            let calls = std::thread::Builder::new().name("grpc-client".into()).spawn(move || {
                rt.block_on(async {
                    let mut c = Caller::connect(addr).await;
                    let mut out = Vec::with_capacity(n);
                    for i in 0..n + n / 10 {
                        let t = Instant::now();
                        if c.unary(Bytes::from_static(b"hello"), &[]).await.is_err() {
                            eprintln!("grpc-peer: a call failed");
                            std::process::exit(1);
                        }
                        if i >= n / 10 {
                            out.push(t.elapsed().as_micros()); // after a 10 % warm-up
                        }
                    }
                    out
                })
            });
            let Ok(mut times) = calls.and_then(|t| t.join().map_err(|_| std::io::Error::other("panicked"))) else {
                eprintln!("grpc-peer: the client thread failed");
                std::process::exit(1);
            };
            times.sort_unstable();
            let q = |p: f64| times[((times.len() - 1) as f64 * p) as usize];
            println!("{} {}", q(0.5), q(0.99));
        }
        _ => {
            eprintln!("usage: grpc-peer server | grpc-peer latency ADDR N");
            std::process::exit(2);
        }
    }
}
