//! The fleet's background tasks on every replica: the session (lease,
//! keep-alives, campaigning), the watch of the committed state (with a
//! periodic linearizable read that catches a silently stalled watch, and a
//! full read after every reconnect or compaction), and the reports.
//! Each reconnects on its own: the etcd client leaves that to its caller.

use std::sync::Arc;
use std::time::{Duration, Instant};

use etcd_client::EventType;
use tokio::sync::watch;

use super::apply::{reconcile, take};
use super::node::Node;
use super::report::member_report;
use super::store::{parse_state, StoreError};
use crate::daemon::context::Daemon;

/// How often a replica without a lease, or not leading, tries again.
const RETRY: Duration = Duration::from_millis(250);
/// How often the committed state is read even while the watch is quiet.
const READ_EVERY: Duration = Duration::from_secs(2);

/// Sleeps `d`; `false` if weir is shutting down.
pub(super) async fn pause(d: Duration, shutdown: &mut watch::Receiver<bool>) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(d) => !*shutdown.borrow(),
        _ = shutdown.changed() => false,
    }
}

/// Logs an etcd failure at most once per state change (every failure of a
/// long outage is the same news).
struct Complaints(Option<String>);

impl Complaints {
    fn failed(&mut self, what: &str, e: &StoreError) {
        if self.0.as_deref() != Some(what) {
            tracing::warn!("fleet: {what}: {e}");
            self.0 = Some(what.to_string());
        }
    }

    fn ok(&mut self, what: &str) {
        if self.0.take().is_some() {
            tracing::info!("fleet: {what}: etcd answers again");
        }
    }
}

/// The session: a lease kept alive every third of its TTL, and a campaign
/// for the leader key while another replica (or nobody) leads.
pub(super) async fn session(node: Arc<Node>, mut shutdown: watch::Receiver<bool>) {
    let ttl = node.cfg.lease_ttl;
    let mut log = Complaints(None);
    'grant: loop {
        if *shutdown.borrow() {
            return;
        }
        let lease = match node.store.grant(ttl).await {
            Ok(l) => l,
            Err(e) => {
                log.failed("cannot get a lease", &e);
                if !pause(RETRY, &mut shutdown).await {
                    return;
                }
                continue;
            }
        };
        log.ok("lease");
        node.heard();
        node.lock().lease = Some(lease);
        let mut alive_at = Instant::now();
        loop {
            // The keep-alive, when due, runs beside the campaign and the
            // leader read, not after them: a slow etcd call of the one
            // never delays the other past the lease's TTL.
            let due = alive_at.elapsed() >= ttl / 3;
            let keep = async {
                match due {
                    true => Some(node.store.keep_alive(lease).await),
                    false => None,
                }
            };
            let (kept, ()) = tokio::join!(keep, campaign(&node, lease, &mut log));
            match kept {
                Some(Ok(left)) if left > 0 => {
                    alive_at = Instant::now();
                    node.heard();
                    log.ok("keep-alive");
                }
                Some(Ok(_)) => {
                    tracing::warn!("fleet: the lease expired");
                    break;
                }
                Some(Err(e)) => {
                    log.failed("keep-alive", &e);
                    if alive_at.elapsed() >= ttl {
                        break;
                    }
                }
                None => {}
            }
            if !pause(RETRY.min(ttl / 3), &mut shutdown).await {
                break 'grant;
            }
        }
        node.lock().lease = None;
        node.step_down("the lease was lost");
    }
    // Shutting down: give the lease back, so that another replica leads
    // at once instead of after the TTL.
    let lease = node.lock().lease.take();
    node.step_down("shutting down");
    if let Some(lease) = lease {
        node.store.revoke(lease).await;
    }
}

/// One look at the leader key: resign if this replica leads but may not
/// (its config does not fit the committed rollout while another's does),
/// campaign if nobody leads and it may, and note who leads.
async fn campaign(node: &Node, lease: i64, log: &mut Complaints) {
    let may_lead = node.may_lead();
    if let (Some(term), false) = (node.term(), may_lead) {
        // A reload left this replica unable to run the committed rollout
        // while another can: hand over at once.
        match node.store.resign(term).await {
            Ok(()) => node.step_down_from(term, "its config does not fit the committed rollout"),
            Err(e) => log.failed("resign", &e),
        }
    }
    if node.term().is_none() && may_lead {
        match node.store.campaign(&node.id, lease).await {
            Ok(Some(term)) => {
                node.heard();
                node.lock().term = Some(term);
                node.metrics.leader.set(1.0);
                node.metrics.term.set(term as f64);
                tracing::info!(term, id = %node.id, "fleet: this replica leads");
            }
            Ok(None) => node.heard(),
            Err(e) => log.failed("campaign", &e),
        }
    }
    if let Ok(leader) = node.store.leader().await {
        node.lock().leader = leader;
    }
}

/// Follows the committed state from a watch, so that every replica takes
/// every committed revision, in order, and records each one's events:
///
/// * first (and after a compaction) a full read, then a watch from the
///   store's revision at that read;
/// * after a watch that failed or ended, a watch again from the revision
///   after the last one taken (etcd replays what was missed meanwhile);
/// * a linearizable read every few seconds: a newer revision there means
///   the watch stalled silently, and it is restarted (from the last one
///   taken, so nothing is skipped).
pub(super) async fn follow(daemon: Arc<Daemon>, node: Arc<Node>, mut shutdown: watch::Receiver<bool>) {
    let mut log = Complaints(None);
    let mut read_first = true;
    loop {
        let from = if read_first || node.applied_revision() == 0 {
            match node.store.read_state().await {
                Ok((doc, rev, at)) => {
                    node.heard();
                    node.lock().state_read = true;
                    log.ok("read");
                    if let Some(doc) = doc {
                        let missed = node.applied_revision();
                        if take(&daemon, &node, doc, rev) && missed > 0 {
                            tracing::warn!(
                                from = missed + 1,
                                to = rev,
                                "fleet: the watch could not resume (etcd compacted past it): decisions committed between, if any, are not in this replica's audit trail"
                            );
                        }
                    }
                    read_first = false;
                    at + 1
                }
                Err(e) => {
                    log.failed("cannot read the committed state", &e);
                    if !pause(RETRY, &mut shutdown).await {
                        return;
                    }
                    continue;
                }
            }
        } else {
            node.applied_revision() + 1
        };
        let mut stream = match node.store.watch_state(from).await {
            Ok(s) => s,
            Err(e) => {
                log.failed("cannot watch the committed state", &e);
                if !pause(RETRY, &mut shutdown).await {
                    return;
                }
                continue;
            }
        };
        let mut read_at = tokio::time::Instant::now() + READ_EVERY;
        loop {
            tokio::select! {
                msg = stream.message() => match msg {
                    Ok(Some(resp)) => {
                        node.heard();
                        if resp.canceled() {
                            // Compacted past the revision asked for (or the
                            // member lost its leader): read it all again.
                            tracing::info!(compact_revision = resp.compact_revision(), "fleet: the watch was cancelled: {}", resp.cancel_reason());
                            read_first = resp.compact_revision() > 0;
                            break;
                        }
                        for ev in resp.events() {
                            if ev.event_type() != EventType::Put {
                                continue;
                            }
                            let Some(kv) = ev.kv() else { continue };
                            match parse_state(kv.value()) {
                                Ok(doc) => {
                                    take(&daemon, &node, doc, kv.mod_revision());
                                }
                                Err(e) => tracing::error!("fleet: {e}"),
                            }
                        }
                    }
                    Ok(None) => break,
                    Err(e) => {
                        log.failed("the watch failed", &StoreError::Etcd(e));
                        break;
                    }
                },
                _ = tokio::time::sleep_until(read_at) => {
                    read_at = tokio::time::Instant::now() + READ_EVERY;
                    match node.store.state().await {
                        Ok((_, rev)) => {
                            node.heard();
                            if rev > node.applied_revision() {
                                tracing::warn!(rev, "fleet: the watch had not delivered this revision: watching again");
                                break;
                            }
                        }
                        Err(e) => {
                            log.failed("cannot read the committed state", &e);
                            break;
                        }
                    }
                }
                _ = shutdown.changed() => return,
            }
        }
        if !pause(RETRY, &mut shutdown).await {
            return;
        }
    }
}

/// Every `report_interval`: serve what this replica may (time passes out
/// of touch; a reload may have changed a route), publish its report under
/// its lease, and read the members' (for the admin API and the metrics).
pub(super) async fn report(daemon: Arc<Daemon>, node: Arc<Node>, mut shutdown: watch::Receiver<bool>) {
    let mut log = Complaints(None);
    let mut every = tokio::time::interval(node.cfg.report_interval);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = every.tick() => {}
            _ = shutdown.changed() => return,
        }
        reconcile(&daemon, &node);
        node.metrics.out_of_touch.set(node.out_of_touch().as_secs_f64());
        let Some(lease) = node.lock().lease else { continue };
        let mine = member_report(&daemon, &node);
        match node.store.report(lease, &mine).await {
            Ok(()) => {
                node.heard();
                log.ok("report");
            }
            Err(e) => log.failed("cannot publish this replica's report", &e),
        }
        if node.term().is_none() {
            if let Ok(members) = node.store.members().await {
                node.saw_members(members);
            }
        }
    }
}
