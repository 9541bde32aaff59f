//! weir's benchmarks.
//!
//! * `cargo bench -p weir-benches` runs the criterion micro-benchmarks
//!   (`benches/route_decision.rs`).
//! * `cargo run --release -p weir-benches --bin gate-sim` prints the gate
//!   engine's simulation figures ([`sim`]).
//! * `benches/load.sh` runs the end-to-end load benchmark: weir and nginx
//!   configured the same way (90/10 split, keep-alive both sides, one worker,
//!   pinned), driven by wrk, reporting req/s and CPU µs per request.

pub mod sim;
