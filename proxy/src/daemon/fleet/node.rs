//! [`Node`]: this replica's place in the fleet, shared by the fleet's tasks
//! (session, watch, reports, leader) and the admin API. Its lock is held
//! for a few field reads or writes, never across an await.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use weir_control::config::Fleet as FleetConfig;
use weir_control::fleet::{may_lead, Committed, MemberReport, PastOverride};

use super::store::Store;
use crate::telemetry::FleetMetrics;

/// What the fleet's tasks know, under [`Node::lock`].
#[derive(Default)]
pub(crate) struct Known {
    /// The committed state this replica serves, and its revision.
    pub(crate) committed: Option<(Committed, i64)>,
    /// This replica's lease, while it has one.
    pub(crate) lease: Option<i64>,
    /// This replica's term while it leads.
    pub(crate) term: Option<i64>,
    /// The leader as last seen: id and term.
    pub(crate) leader: Option<(String, i64)>,
    /// When etcd last answered.
    pub(crate) contact: Option<Instant>,
    /// The members' latest reports (the leader reads them every tick,
    /// every replica every few seconds for the admin API).
    pub(crate) members: Vec<MemberReport>,
    /// The last reports of replicas that left (their lease expired) while
    /// the window they counted is still the committed one: what they saw
    /// happened, and still counts (not as a reporter).
    pub(crate) departed: BTreeMap<String, MemberReport>,
    /// Routes this replica serves stable on its own, and why.
    pub(crate) overrides: BTreeMap<String, String>,
    /// Since when (unix ms) it serves stable on each of those.
    pub(crate) override_since: BTreeMap<String, u64>,
    /// The last spell of serving stable on its own that ended, per route.
    pub(crate) past_overrides: BTreeMap<String, PastOverride>,
    /// Whether its config fits every committed rollout still running (see
    /// [`weir_control::fleet::may_lead`]).
    pub(crate) fits: bool,
    /// The committed state was read once: until then `fits` is a guess.
    pub(crate) state_read: bool,
    /// The members' reports were read once: until then nobody is known to
    /// fit better.
    pub(crate) members_read: bool,
    /// The spells of serving stable the leader has logged, by replica,
    /// route and start.
    pub(crate) logged_spells: std::collections::BTreeSet<(String, String, u64)>,
}

/// This replica in the fleet.
pub(crate) struct Node {
    pub(crate) cfg: FleetConfig,
    /// This replica's id (`fleet.replica`, else the host name).
    pub(crate) id: String,
    pub(crate) store: Store,
    pub(crate) metrics: FleetMetrics,
    /// When this replica started (out of touch since then until etcd first
    /// answers).
    pub(crate) started: Instant,
    #[allow(clippy::disallowed_types)] // short holds, never across an await, off the request path
    known: std::sync::Mutex<Known>,
}

impl Node {
    pub(crate) fn new(cfg: FleetConfig, id: String, store: Store, metrics: FleetMetrics) -> Node {
        let known = Known { fits: true, ..Known::default() };
        Node { cfg, id, store, metrics, started: Instant::now(), known: std::sync::Mutex::new(known) }
    }

    /// Locks what the tasks know.
    pub(crate) fn lock(&self) -> std::sync::MutexGuard<'_, Known> {
        self.known.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// etcd answered: this replica is in touch.
    pub(crate) fn heard(&self) {
        self.lock().contact = Some(Instant::now());
    }

    /// How long since etcd last answered.
    pub(crate) fn out_of_touch(&self) -> Duration {
        self.lock().contact.unwrap_or(self.started).elapsed()
    }

    /// This replica's term, while it leads.
    pub(crate) fn term(&self) -> Option<i64> {
        self.lock().term
    }

    /// The committed state's revision this replica serves (0: none).
    pub(crate) fn applied_revision(&self) -> i64 {
        self.lock().committed.as_ref().map_or(0, |(_, rev)| *rev)
    }

    /// The live members' reports as just read: those that are gone since
    /// the last read move to [`Known::departed`], kept while their window
    /// is the committed one.
    pub(crate) fn saw_members(&self, live: Vec<MemberReport>) {
        self.metrics.members.set(live.len() as f64);
        let mut k = self.lock();
        k.members_read = true;
        let before = std::mem::take(&mut k.members);
        for m in live.iter().filter(|m| m.id != self.id) {
            // What a replica did on its own (out of touch, say), said once
            // when it reports again.
            for (route, p) in &m.past_overrides {
                if k.logged_spells.insert((m.id.clone(), route.clone(), p.from_ms)) {
                    tracing::info!(
                        replica = %m.id,
                        route = %route,
                        seconds = p.until_ms.saturating_sub(p.from_ms) / 1000,
                        "fleet: the replica served stable on its own: {}",
                        p.reason
                    );
                }
            }
        }
        for m in before {
            k.departed.insert(m.id.clone(), m);
        }
        let windows: Vec<(String, u64)> = k
            .committed
            .iter()
            .flat_map(|(doc, _)| doc.routes.iter().map(|(n, p)| (n.clone(), p.state.since_ms)))
            .collect();
        let me = self.id.as_str();
        k.departed.retain(|id, m| {
            // This replica's own report is never a departed one: it counts
            // its traffic fresh (a lease that lapsed and came back would
            // otherwise count it twice).
            id != me
                && !live.iter().any(|l| &l.id == id)
                && m.routes.iter().any(|(n, r)| windows.iter().any(|(w, s)| w == n && *s == r.window_start_ms))
        });
        k.members = live;
    }

    /// Stops leading (lease lost, or a commit found another leader).
    pub(crate) fn step_down(&self, why: &str) {
        if let Some(term) = self.term() {
            self.step_down_from(term, why);
        }
    }

    /// Stops leading `term` only (a commit of that term was refused; a
    /// newer term won meanwhile stays).
    pub(crate) fn step_down_from(&self, term: i64, why: &str) {
        let mut k = self.lock();
        if k.term == Some(term) {
            k.term = None;
            drop(k);
            tracing::warn!(term, "fleet: no longer the leader ({why})");
            self.metrics.leader.set(0.0);
        }
    }

    /// Whether this replica may lead now: its config fits the committed
    /// state, or no other live member's does.
    pub(crate) fn may_lead(&self) -> bool {
        let k = self.lock();
        // Not before it knows the committed state and the others' reports:
        // a replica that has just started on a config that does not fit
        // would otherwise win an election only to resign.
        k.state_read && k.members_read && may_lead(&self.id, k.fits, &k.members)
    }
}

/// This replica's id: `fleet.replica`, else the host name.
pub(crate) fn replica_id(cfg: &FleetConfig) -> String {
    if let Some(id) = &cfg.replica {
        return id.clone();
    }
    crate::files::host_name()
}
