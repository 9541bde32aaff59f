//! weir's pure, synchronous core.
//!
//! `weir-control` owns everything that can be decided without a socket or a
//! clock; the `proxy` crate is the async shell around it. What each module
//! owns:
//!
//! * [`config`]: the config file's schema, its parsing and validation
//!   (`config::parse`, every error with its key path and line), what a
//!   reload changes ([`config::diff`]: restart-only settings, which routes
//!   keep their rollout) and the fault rules shared with the admin API
//!   ([`config::fault`]);
//! * [`classify`]: which HTTP statuses and gRPC codes count as a
//!   backend's failures, per route;
//! * [`split`]: the routing arithmetic: weights in basis points, sticky
//!   buckets, the smooth split sequence;
//! * [`sample`]: what the proxy measures and the gates read: request
//!   outcomes and latency per backend, merged over a time window (a
//!   [`sample::Window`]), plus the synthetic and shadow probe counts;
//! * [`evidence`]: the always-valid tests and bounds the gates rest on, and
//!   the dispersion correction for bursty failures;
//! * [`gate`]: the gates: thresholds, ratios and the sequential tests that
//!   turn two windows into a verdict;
//! * [`recording`]: the format of a traffic recording, which `weir replay`
//!   re-judges under another plan;
//! * [`notify`]: what a `notify` webhook sends for an event: weir's JSON,
//!   Slack, Teams or PagerDuty;
//! * [`signal`]: outside signals (`promql` gates): the query template,
//!   Prometheus's answer, the reading the engine judges;
//! * [`rollout`]: the rollout state machine ([`rollout::Engine`]: stages,
//!   bake, failures, holds, manual actions, audit events) and the format of
//!   its persisted state ([`rollout::persisted`]);
//! * [`fleet`]: fleet mode's pure part: the replicas' reports, their exact
//!   merge, the committed state, and what a replica serves.
//!
//! ```text
//!  TOML text ──config::parse──▶ Config ──(proxy)──▶ runtime Snapshot
//!                  │
//!                  └── every error, with its key path and line
//!
//!  old Config, new Config ──config::diff──▶ restart-only keys, and per route:
//!                                           added, keeps its rollout, or reset
//!
//!  (proxy) requests ──▶ sample::Window, canary and stable
//!                           │
//!  now_ms ──▶ rollout::Engine::tick ──gate::evaluate_with──▶ verdicts
//!                           │
//!                           ├──▶ weight, stage, cohort ──(proxy)──▶ split, per request
//!                           ├──▶ audit events
//!                           └──▶ rollout::Persisted ──▶ state file (StateFile JSON)
//! ```
//!
//! Nothing here opens a socket, reads the clock or draws a random number:
//! time is always passed in, so every decision is testable with a simulated
//! clock.

pub mod classify;
pub mod config;
pub mod evidence;
pub mod fleet;
pub mod gate;
pub mod notify;
pub mod recording;
pub mod rollout;
pub mod sample;
pub mod signal;
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
