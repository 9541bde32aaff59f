//! Fleet mode's pure part: what each replica publishes, how the leader pools
//! it, the committed state every replica applies, and the rules of what a
//! replica serves. The etcd side (leases, the fenced transactions, watches)
//! is the proxy's (`proxy/src/daemon/fleet/`).
//!
//! ```text
//!  replica i: its windows since the committed window start ──▶ MemberReport (under its lease)
//!  leader:    pool(own + every fitting report) ──▶ one Window per side, as one process seeing all traffic
//!             Engine::tick_with(pooled) ──▶ Committed (fenced txn) ──▶ watch ──▶ every replica adopts
//! ```
//!
//! The merge is exact: counts add, per-second counts add second by second,
//! and latency histograms add bucket by bucket (a report carries the
//! buckets, not quantiles), so a fleet's pooled window is the window one
//! process would have cut from all the requests.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::rollout::{Event, Persisted, Phase, State};
use crate::sample::{Checks, Counts, Latency, Probes, Second, Window};

/// One backend's window as a replica publishes it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct WindowReport {
    /// The span the window covers, ms.
    pub span_ms: u64,
    /// Requests by outcome.
    pub counts: Counts,
    /// Latency histogram: (µs, count) per non-empty bucket, ascending.
    pub latency: Vec<(u64, u64)>,
    /// Per-second requests and failures, oldest first.
    pub seconds: Vec<Second>,
}

impl WindowReport {
    /// The report of `w`.
    pub fn of(w: &Window) -> WindowReport {
        WindowReport {
            span_ms: w.span.as_millis() as u64,
            counts: w.counts,
            // Each recorded bucket by its highest equivalent value: recorded
            // again, it lands in the same bucket.
            latency: w
                .latency
                .histogram()
                .iter_recorded()
                .map(|v| (v.value_iterated_to(), v.count_at_value()))
                .collect(),
            seconds: w.seconds.clone(),
        }
    }

    /// The window it reports.
    pub fn window(&self) -> Window {
        let mut latency = Latency::new();
        for &(micros, n) in &self.latency {
            latency.record_n(micros, n);
        }
        Window {
            span: Duration::from_millis(self.span_ms),
            counts: self.counts,
            latency,
            seconds: self.seconds.clone(),
        }
    }
}

/// The windows of several replicas as one: what one process that saw all
/// their requests would have recorded.
pub fn merge<'a>(parts: impl IntoIterator<Item = &'a Window>) -> Window {
    let mut out = Window::default();
    let mut seconds: BTreeMap<u64, (u64, u64)> = BTreeMap::new();
    for w in parts {
        out.span = out.span.max(w.span);
        out.counts.add(&w.counts);
        out.latency.add(&w.latency);
        for s in &w.seconds {
            let e = seconds.entry(s.sec).or_default();
            e.0 += s.total;
            e.1 += s.failures;
        }
    }
    out.seconds = seconds.into_iter().map(|(sec, (total, failures))| Second { sec, total, failures }).collect();
    out
}

/// One route's evidence at one replica, since the committed window start.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RouteReport {
    /// Fingerprint of the replica's own rollout definition for the route.
    pub rollout: String,
    /// The replica's canary build ([`crate::config::Config::canary_build`]).
    pub canary: Option<String>,
    /// The window start (unix ms) the windows count from: the committed
    /// state's, once the replica applied it.
    pub window_start_ms: u64,
    /// The canary's requests since then.
    pub canary_window: WindowReport,
    /// Stable's requests since then.
    pub stable_window: WindowReport,
    /// Stable's kept history.
    pub stable_history: WindowReport,
    /// Synthetic checks and shadow comparisons since then.
    pub probes: Probes,
}

/// What a replica publishes under its own lease, every report interval.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct MemberReport {
    /// The replica's id.
    pub id: String,
    /// Hash of its config.
    pub config_hash: String,
    /// The revision of the committed state it serves.
    pub applied_revision: i64,
    /// When it published this, unix ms.
    pub at_ms: u64,
    /// Its evidence, by route.
    pub routes: BTreeMap<String, RouteReport>,
    /// Routes where it serves stable on its own, and why (a config that
    /// does not fit the committed state, or etcd out of reach).
    #[serde(default)]
    pub overrides: BTreeMap<String, String>,
    /// The last time it served stable on its own, per route, once that
    /// ended: a replica cut off from etcd says so when it is back.
    #[serde(default)]
    pub past_overrides: BTreeMap<String, PastOverride>,
    /// Whether its config fits every rollout the fleet has committed (it
    /// can tick them all): only such a replica leads while one is alive.
    #[serde(default = "yes")]
    pub fits: bool,
}

fn yes() -> bool {
    true
}

/// A spell during which a replica served stable on its own.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PastOverride {
    /// Why.
    pub reason: String,
    /// From when, unix ms.
    pub from_ms: u64,
    /// Until when, unix ms.
    pub until_ms: u64,
}

/// Whether a replica may lead (campaign, or stay the leader): when its
/// config fits the committed state (`fits`), or when no other live member's
/// does (a whole fleet moving to a new config still needs a leader to start
/// the new rollout). A leader that cannot tick a committed rollout would
/// leave it unwatched at its weight.
pub fn may_lead<'a>(me: &str, fits: bool, live: impl IntoIterator<Item = &'a MemberReport>) -> bool {
    fits || !live.into_iter().any(|m| m.id != me && m.fits)
}

/// The committed fleet state: what every replica serves.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Committed {
    /// The term of the leader that wrote it (0 for a manual action).
    pub term: i64,
    /// Who wrote it.
    pub by: String,
    /// When, unix ms (the apply lag is measured from it).
    pub at_ms: u64,
    /// Every route's rollout.
    pub routes: BTreeMap<String, Persisted>,
    /// The audit events this commit decided (every replica records them
    /// once, stamped with the term and the commit's revision).
    #[serde(default)]
    pub events: Vec<Event>,
}

impl Committed {
    /// The document's bytes.
    pub fn to_json(&self) -> Result<Vec<u8>, serde_json::Error> {
        serde_json::to_vec(self)
    }

    /// Reads a document written by [`Committed::to_json`].
    pub fn from_json(bytes: &[u8]) -> Result<Committed, serde_json::Error> {
        serde_json::from_slice(bytes)
    }
}

/// The pooled evidence of one route.
#[derive(Debug, Default)]
pub struct Pooled {
    /// The canary over every counted replica.
    pub canary: Window,
    /// Stable over every counted replica.
    pub stable: Window,
    /// Stable's history over every counted replica.
    pub stable_history: Window,
    /// Probes over every counted replica.
    pub probes: Probes,
    /// The replicas counted.
    pub reporters: Vec<String>,
    /// Replicas left out, and why.
    pub ignored: Vec<(String, &'static str)>,
}

/// Pools the reports of route `route` that belong to the committed
/// rollout `committed` and its window starting at `window_start_ms`: a
/// report from another definition or canary (a replica on another config),
/// or still counting from an earlier window (it has not applied the
/// transition yet), is left out.
pub fn pool<'a>(
    route: &str,
    committed: &Persisted,
    window_start_ms: u64,
    reports: impl IntoIterator<Item = &'a MemberReport>,
) -> Pooled {
    let mut out = Pooled::default();
    let (mut canary, mut stable, mut history) = (Vec::new(), Vec::new(), Vec::new());
    for m in reports {
        let Some(r) = m.routes.get(route) else { continue };
        let why = if out.reporters.contains(&m.id) {
            // A replica's evidence counts once: its newest report comes
            // first, an older one (kept from before a lease lapsed) is the
            // same traffic again.
            Some("already counted")
        } else if r.rollout != committed.rollout || r.canary != committed.canary {
            Some("another rollout definition or canary")
        } else if r.window_start_ms != window_start_ms {
            Some("counting another window")
        } else if m.overrides.contains_key(route) {
            Some("serving stable on its own")
        } else {
            None
        };
        if let Some(why) = why {
            out.ignored.push((m.id.clone(), why));
            continue;
        }
        canary.push(r.canary_window.window());
        stable.push(r.stable_window.window());
        history.push(r.stable_history.window());
        out.probes = add_probes(out.probes, r.probes);
        out.reporters.push(m.id.clone());
    }
    out.canary = merge(&canary);
    out.stable = merge(&stable);
    out.stable_history = merge(&history);
    out
}

fn add_probes(a: Probes, b: Probes) -> Probes {
    let add = |x: Checks, y: Checks| Checks { passed: x.passed + y.passed, failed: x.failed + y.failed };
    Probes { synthetic: add(a.synthetic, b.synthetic), shadow: add(a.shadow, b.shadow) }
}

/// Whether the leader may commit the move from `before` to `after` with
/// `reporters` replicas counted: an advance (a higher stage, or promotion)
/// needs at least `min_reporters`; holding, pausing and rolling back never
/// wait for anyone.
pub fn may_commit(before: &State, after: &State, reporters: usize, min_reporters: usize) -> bool {
    let advances = after.stage > before.stage || (after.phase == Phase::Promoted && before.phase != Phase::Promoted);
    !advances || reporters >= min_reporters
}

/// The part of a state that a commit must carry: where the rollout stands
/// (not the verdicts' latest values, which every tick refreshes).
pub fn same_position(a: &State, b: &State) -> bool {
    (a.phase, a.stage, a.since_ms, a.consecutive_failures) == (b.phase, b.stage, b.since_ms, b.consecutive_failures)
}

/// Whether every live member runs the rollout definition `rollout` with the
/// canary `canary` on `route`: only then does the leader start a new
/// rollout (a new config, a new canary) for the fleet.
pub fn all_run<'a>(
    route: &str,
    rollout: &str,
    canary: Option<&str>,
    members: impl IntoIterator<Item = &'a MemberReport>,
) -> bool {
    members
        .into_iter()
        .all(|m| m.routes.get(route).is_some_and(|r| r.rollout == rollout && r.canary.as_deref() == canary))
}

/// What a replica out of touch with etcd for `out_of_touch` serves: the
/// last committed weight, until `staleness` has passed; then stable,
/// unless the rollout was promoted (then the canary is the release).
pub fn stale(phase: Phase, out_of_touch: Duration, staleness: Duration) -> bool {
    phase != Phase::Promoted && out_of_touch >= staleness
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::sample::CodeClass;

    /// A request: (second, latency µs, failed).
    type Req = (u64, u64, bool);

    fn window_of(reqs: &[Req]) -> Window {
        let mut w = Window::default();
        let mut sorted = reqs.to_vec();
        sorted.sort_by_key(|r| r.0);
        for &(sec, micros, failed) in &sorted {
            let c = Counts::of(1, u64::from(failed));
            w.push_second(sec, &c);
            w.latency.record_n(micros, 1);
        }
        w.span = Duration::from_secs(sorted.last().map_or(0, |r| r.0 + 1));
        w
    }

    fn report(id: &str, window_start_ms: u64, canary: &Window) -> MemberReport {
        let mut routes = BTreeMap::new();
        routes.insert(
            "web".to_string(),
            RouteReport {
                rollout: "r1".into(),
                canary: Some("v2".into()),
                window_start_ms,
                canary_window: WindowReport::of(canary),
                stable_window: WindowReport::of(canary),
                stable_history: WindowReport::of(canary),
                probes: Probes::default(),
            },
        );
        MemberReport { id: id.into(), routes, fits: true, ..MemberReport::default() }
    }

    fn persisted() -> Persisted {
        Persisted {
            rollout: "r1".into(),
            canary_version: Some("v2".into()),
            canary: Some("v2".into()),
            state: State {
                phase: Phase::Progressing,
                stage: 0,
                since_ms: 1000,
                consecutive_failures: 0,
                verdicts: vec![],
                warmed: false,
                started_ms: 0,
            },
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

        /// The merge of the replicas' reports is the window of all their
        /// requests, whatever the split.
        #[test]
        fn merging_the_parts_equals_the_whole(
            reqs in prop::collection::vec((0u64..40, 1u64..5_000_000, any::<bool>()), 0..400),
            owners in prop::collection::vec(0usize..3, 400),
        ) {
            let mut parts: Vec<Vec<Req>> = vec![Vec::new(); 3];
            for (i, r) in reqs.iter().enumerate() {
                parts[owners[i]].push(*r);
            }
            let whole = window_of(&reqs);
            let sent: Vec<Window> = parts.iter().map(|p| WindowReport::of(&window_of(p)).window()).collect();
            let merged = merge(&sent);
            prop_assert_eq!(merged.counts, whole.counts);
            prop_assert_eq!(&merged.seconds, &whole.seconds);
            prop_assert_eq!(merged.span, whole.span);
            prop_assert_eq!(merged.latency.count(), whole.latency.count());
            for q in [0.0, 0.5, 0.9, 0.99, 1.0] {
                prop_assert_eq!(merged.latency.quantile(q), whole.latency.quantile(q));
            }
            prop_assert!(merged.latency == whole.latency);
            // And the report survives its JSON.
            let json = serde_json::to_vec(&WindowReport::of(&whole)).unwrap();
            let back: WindowReport = serde_json::from_slice(&json).unwrap();
            prop_assert!(back.window() == whole);
        }
    }

    #[test]
    fn pool_counts_only_reports_of_the_committed_rollout_and_window() {
        let w = window_of(&[(1, 1000, false), (1, 2000, true), (2, 1500, false)]);
        let good = report("a", 1000, &w);
        let also = report("b", 1000, &w);
        let late = report("c", 500, &w);
        let mut other = report("d", 1000, &w);
        other.routes.get_mut("web").unwrap().rollout = "r2".into();
        let mut overridden = report("e", 1000, &w);
        overridden.overrides.insert("web".into(), "etcd out of reach".into());
        let p = pool("web", &persisted(), 1000, [&good, &also, &late, &other, &overridden]);
        assert_eq!(p.reporters, ["a", "b"]);
        assert_eq!(p.ignored.iter().map(|(id, _)| id.as_str()).collect::<Vec<_>>(), ["c", "d", "e"]);
        assert_eq!(p.canary.counts.total(), 6);
        assert_eq!(p.canary.counts.failures(), 2);
        assert_eq!(p.canary.counts.class(CodeClass::ServerError), 2);
        assert_eq!(
            p.canary.seconds,
            vec![Second { sec: 1, total: 4, failures: 2 }, Second { sec: 2, total: 2, failures: 0 }]
        );
        assert_eq!(pool("api", &persisted(), 1000, [&good]).reporters.len(), 0);
    }

    #[test]
    fn a_replica_counts_once_its_newest_report_first() {
        let w = window_of(&[(1, 1000, false), (1, 2000, true)]);
        let fresh = report("a", 1000, &w);
        let kept = report("a", 1000, &w);
        let other = report("b", 1000, &w);
        let p = pool("web", &persisted(), 1000, [&fresh, &other, &kept]);
        assert_eq!(p.reporters, ["a", "b"]);
        assert_eq!(p.ignored, [("a".to_string(), "already counted")]);
        assert_eq!(p.canary.counts.total(), 4);
    }

    #[test]
    fn only_a_fitting_replica_leads_while_one_is_alive() {
        let w = Window::default();
        let mut a = report("a", 0, &w);
        let mut b = report("b", 0, &w);
        b.fits = false;
        // b, on another config, does not lead while a (fitting) is alive.
        assert!(!may_lead("b", false, [&a, &b]));
        assert!(may_lead("a", true, [&a, &b]));
        // Nobody fits (the whole fleet on a new config): anyone may.
        a.fits = false;
        assert!(may_lead("b", false, [&a, &b]));
        assert!(may_lead("b", false, []));
        // A report without the field (an older weir) fits.
        let old: MemberReport =
            serde_json::from_str(r#"{"id":"c","config_hash":"h","applied_revision":1,"at_ms":1,"routes":{}}"#).unwrap();
        assert!(old.fits);
        assert!(!may_lead("b", false, [&old]));
    }

    #[test]
    fn advances_wait_for_reporters_and_nothing_else_does() {
        let before = persisted().state;
        let mut advanced = before.clone();
        advanced.stage = 1;
        let mut promoted = before.clone();
        promoted.phase = Phase::Promoted;
        let mut rolled_back = before.clone();
        rolled_back.phase = Phase::RolledBack;
        let mut verdicts_only = before.clone();
        verdicts_only.consecutive_failures = 1;
        assert!(!may_commit(&before, &advanced, 1, 2));
        assert!(!may_commit(&before, &promoted, 1, 2));
        assert!(may_commit(&before, &advanced, 2, 2));
        assert!(may_commit(&before, &rolled_back, 0, 2));
        assert!(may_commit(&before, &verdicts_only, 0, 2));
    }

    #[test]
    fn a_new_rollout_waits_for_every_member() {
        let w = Window::default();
        let a = report("a", 0, &w);
        let mut b = report("b", 0, &w);
        assert!(all_run("web", "r1", Some("v2"), [&a, &b]));
        b.routes.get_mut("web").unwrap().canary = Some("v3".into());
        assert!(!all_run("web", "r1", Some("v2"), [&a, &b]));
        assert!(!all_run("api", "r1", Some("v2"), [&a]));
    }

    #[test]
    fn out_of_touch_serves_stable_after_the_staleness_unless_promoted() {
        let s = Duration::from_secs(30);
        assert!(!stale(Phase::Progressing, Duration::from_secs(29), s));
        assert!(stale(Phase::Progressing, s, s));
        assert!(stale(Phase::Paused, Duration::from_secs(60), s));
        assert!(!stale(Phase::Promoted, Duration::from_secs(600), s));
    }

    #[test]
    fn committed_round_trips() {
        let mut c = Committed { term: 7, by: "a".into(), at_ms: 5, ..Committed::default() };
        c.routes.insert("web".into(), persisted());
        assert_eq!(Committed::from_json(&c.to_json().unwrap()).unwrap(), c);
        assert!(Committed::from_json(b"{").is_err());
    }
}
