//! weir's benchmarks.
//!
//! * `cargo bench -p weir-benches` runs the criterion micro-benchmarks
//!   (`benches/route_decision.rs`).
//! * `cargo run --release -p weir-benches --bin gate-sim` prints the gate
//!   engine's simulation figures ([`sim`]).
//! * `benches/load.sh` runs the end-to-end load benchmark: weir, nginx,
//!   HAProxy and a plain hyper proxy (`plain-proxy`)
//!   configured the same way (90/10 split, keep-alive both sides, one worker,
//!   pinned), driven by wrk, reporting req/s and CPU µs per request; its
//!   latency at concurrency 1 is measured both with wrk, one proxy at a time,
//!   and with `c1-paired`, the proxies in turn request by request.

pub mod sim;

/// The current-thread runtime the load helpers (`plain-proxy`,
/// `idle-conns`) run on; exits with status 1 if it cannot be built.
pub fn current_thread_runtime() -> tokio::runtime::Runtime {
    match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("runtime: {e}");
            std::process::exit(1);
        }
    }
}
