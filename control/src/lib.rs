//! weir's pure, synchronous core.
//!
//! `weir-control` owns everything that can be decided without a socket or a
//! clock: the config schema and its validation, the routing arithmetic
//! (weights in basis points, sticky buckets, the smooth split sequence), and,
//! as the project grows, the rollout state machine and the gate statistics.
//!
//! ```text
//!  TOML text ──config::parse──▶ config::Config ──(proxy)──▶ runtime Snapshot
//!                  │
//!                  └── every error, with its key path and line
//! ```
//!
//! Nothing here opens a socket, reads the clock or draws a random number:
//! time is always passed in, so every decision is testable with a simulated
//! clock. The `proxy` crate is the async shell around it.

pub mod config;
pub mod gate;
pub mod rollout;
pub mod sample;
pub mod split;

/// A short, stable fingerprint of a value's `Debug` form (FNV-1a 64, hex):
/// used as the config hash in audit events and to tell whether a persisted
/// rollout still matches its definition.
pub fn fingerprint<T: std::fmt::Debug>(value: &T) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in format!("{value:?}").bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("{h:016x}")
}
