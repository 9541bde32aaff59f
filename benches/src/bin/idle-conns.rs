//! Holds many idle keep-alive connections to a proxy, for the memory
//! measurement in `benches/load.sh`: opens N connections, sends one GET on
//! each and reads its answer, prints `ready N` and then holds them all until
//! its standard input closes.
//!
//!   idle-conns ADDR N

use std::net::SocketAddr;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (Some(addr), Some(n)) =
        (args.get(1).and_then(|a| a.parse::<SocketAddr>().ok()), args.get(2).and_then(|n| n.parse::<usize>().ok()))
    else {
        eprintln!("usage: idle-conns ADDR N");
        std::process::exit(2);
    };
    let rt = weir_benches::current_thread_runtime();
    rt.block_on(async move {
        let mut held = Vec::with_capacity(n);
        let mut buf = vec![0u8; 4096];
        for i in 0..n {
            let mut s = match TcpStream::connect(addr).await {
                Ok(s) => s,
                Err(e) => {
                    eprintln!("connection {i}: {e}");
                    std::process::exit(1);
                }
            };
            let ok = s.write_all(b"GET / HTTP/1.1\r\nHost: bench\r\n\r\n").await.is_ok()
                && matches!(s.read(&mut buf).await, Ok(k) if k > 0);
            if !ok {
                eprintln!("connection {i}: no answer");
                std::process::exit(1);
            }
            held.push(s);
        }
        println!("ready {}", held.len());
        let mut line = String::new();
        let _ = tokio::io::BufReader::new(tokio::io::stdin()).read_line(&mut line).await;
        drop(held);
    });
}
