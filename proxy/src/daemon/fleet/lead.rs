//! The leader's work: every route's `interval`, pool the evidence of every
//! replica that counts, tick the engine on it, and commit what it decided
//! in one fenced transaction (on the leader's term and on the revision the
//! decision was made from). Followers tick the same way on the reports
//! they read, and keep the engine's evidence (never its moves), so that a
//! new leader goes on with the statistical gates' evidence of the earlier
//! stages. Nothing is served, recorded or sent before the
//! commit: the committed revision is taken like any other (`apply.rs`), and
//! only then do the notify webhooks go out.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use weir_control::fleet::{all_run, may_commit, pool, same_position, Committed, MemberReport};
use weir_control::rollout::{Engine, Event, Observed, Persisted};

use super::apply::committed;
use super::node::Node;
use super::report::route_report;
use super::store::Refused;
use super::tasks::pause;
use crate::clock::engine_ms;
use crate::daemon::context::Daemon;
use crate::daemon::events::stamp;
use crate::route::Route;

/// Runs until shutdown; idle while another replica leads.
pub(super) async fn lead(daemon: Arc<Daemon>, node: Arc<Node>, mut shutdown: watch::Receiver<bool>) {
    let mut due: HashMap<Arc<str>, u64> = HashMap::new();
    let mut waiting: HashMap<Arc<str>, u64> = HashMap::new();
    let mut complained = false;
    while pause(Duration::from_millis(100), &mut shutdown).await {
        let term = node.term();
        let snap = daemon.dp.load_full();
        let now = engine_ms();
        let mut ready = Vec::new();
        for route in snap.routes.routes() {
            let Some(interval) = route.state.engine().as_ref().map(|e| e.plan().interval) else { continue };
            let next = due.entry(route.name.clone()).or_insert(now);
            if now >= *next {
                *next = now + interval.as_millis() as u64;
                ready.push(route);
            }
        }
        if ready.is_empty() {
            continue;
        }
        let live = if term.is_some() {
            match node.store.members().await {
                Ok(m) => {
                    complained = false;
                    node.heard();
                    node.saw_members(m.clone());
                    m
                }
                Err(e) => {
                    // The session steps down if this lasts: said once.
                    if !std::mem::replace(&mut complained, true) {
                        tracing::warn!("fleet: cannot read the members' reports: {e}");
                    }
                    continue;
                }
            }
        } else {
            // A follower ticks too, on the reports the report task read:
            // its engine's evidence across stages stays warm for the day it
            // leads. It never commits.
            node.lock().members.clone()
        };
        let departed: Vec<MemberReport> = node.lock().departed.values().cloned().collect();
        let members = Members { live: &live, departed: departed.iter().collect() };
        for route in ready {
            if node.term() != term {
                break;
            }
            lead_route(&daemon, &node, term, route, &members, &mut waiting).await;
        }
    }
}

/// The reports the leader decides on.
struct Members<'a> {
    /// Of the replicas alive now (their lease holds).
    live: &'a [MemberReport],
    /// The last of those that left since.
    departed: Vec<&'a MemberReport>,
}

/// One evaluation of one route, committed if this replica leads `term`.
async fn lead_route(
    daemon: &Arc<Daemon>,
    node: &Node,
    term: Option<i64>,
    route: &Route,
    members: &Members<'_>,
    waiting: &mut HashMap<Arc<str>, u64>,
) {
    let name = route.name.to_string();
    let (doc, rev) = node.lock().committed.clone().unwrap_or_default();
    let now = engine_ms();
    let (next, events) = {
        let mut slot = route.state.engine();
        let Some(engine) = slot.as_mut() else { return };
        let mut own = MemberReport { id: node.id.clone(), ..MemberReport::default() };
        own.routes.insert(name.clone(), route_report(daemon, route, engine));
        let live: Vec<&MemberReport> =
            members.live.iter().filter(|m| m.id != node.id).chain(std::iter::once(&own)).collect();
        let reports: Vec<&MemberReport> = live.iter().copied().chain(members.departed.iter().copied()).collect();
        match doc.routes.get(&name).filter(|p| p.fits(engine.plan(), engine.context())) {
            None => {
                // A route the fleet does not run yet, or runs another
                // definition or canary of: start it once every live member
                // runs this one.
                let fp = weir_control::fingerprint(engine.plan());
                if term.is_none()
                    || !all_run(&name, &fp, engine.context().canary_build.as_deref(), live.iter().copied())
                {
                    return;
                }
                let (fresh, mut ev) = Engine::new(engine.plan().clone(), engine.context().clone(), now);
                stamp(&mut ev);
                (fresh, vec![ev])
            }
            Some(p) => {
                if !same_position(engine.state(), &p.state) {
                    engine.adopt(p.state.clone());
                }
                let pooled = pool(&name, p, p.state.since_ms, reports.iter().copied());
                let mut next = engine.clone();
                let seen = Observed {
                    canary: &pooled.canary,
                    stable: &pooled.stable,
                    stable_history: &pooled.stable_history,
                    probes: pooled.probes,
                    // Not in fleet mode yet (`weir check` refuses promql gates there).
                    signals: &[],
                };
                let tick = next.tick_with(now, &seen);
                let moved = !same_position(next.state(), engine.state());
                if (tick.events.is_empty() || term.is_none()) && !moved {
                    // Nothing to commit (or not ours to commit): the
                    // verdicts' latest values stay here (metrics, status)
                    // until the next commit.
                    *engine = next;
                    daemon.dp.telemetry.rollout_tick(&route.name, engine, true);
                    return;
                }
                if term.is_none() {
                    return; // a move only the leader may commit
                }
                let reporting = pooled.reporters.iter().filter(|id| live.iter().any(|m| &m.id == *id)).count();
                if !may_commit(engine.state(), next.state(), reporting, node.cfg.min_reporters) {
                    let since = engine.window_start_ms();
                    if waiting.insert(route.name.clone(), since) != Some(since) {
                        tracing::info!(
                            route = %name,
                            reporting,
                            needed = node.cfg.min_reporters,
                            "fleet: ready to advance, waiting for more replicas to report"
                        );
                    }
                    return;
                }
                let events: Vec<Event> = tick
                    .events
                    .into_iter()
                    .map(|mut ev| {
                        stamp(&mut ev);
                        ev
                    })
                    .collect();
                (next, events)
            }
        }
    };
    let Some(term) = term else { return };
    let mut new = Committed { term, by: node.id.clone(), at_ms: crate::clock::now_ms(), routes: doc.routes, events };
    new.routes.insert(name.clone(), Persisted::of(&next));
    match node.store.commit(Some(term), rev, &new).await {
        Ok(Ok(revision)) => {
            node.heard();
            {
                let mut slot = route.state.engine();
                // Unless a reload replaced the rollout meanwhile.
                if let Some(engine) = slot.as_mut().filter(|e| e.plan() == next.plan()) {
                    *engine = next;
                }
            }
            committed(daemon, node, route, new, rev, revision);
        }
        Ok(Err(Refused::NotLeader)) => node.step_down_from(term, "another replica leads"),
        Ok(Err(Refused::Moved)) => {
            // Someone (a manual action) committed first: the watch brings
            // it, and the next tick decides again on what they committed.
            tracing::debug!(route = %name, "fleet: the state moved on before this commit");
        }
        // A commit that timed out may still have landed: the watch will
        // tell, and its events are recorded then (its webhooks are not sent).
        Err(e) => tracing::warn!(route = %name, "fleet: commit failed: {e}"),
    }
}
