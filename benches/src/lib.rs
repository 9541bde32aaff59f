//! weir's benchmarks.
//!
//! * `cargo bench -p weir-benches` runs the criterion micro-benchmarks
//!   (`benches/route_decision.rs`).
//! * `benches/load.sh` runs the end-to-end load benchmark: weir and nginx
//!   configured the same way (90/10 split, keep-alive both sides, one worker,
//!   pinned), driven by wrk, reporting req/s and CPU µs per request.
