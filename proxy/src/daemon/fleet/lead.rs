//! The leader's work: every route's `interval`, pool the evidence of every
//! replica that counts, tick the engine on it, and commit what it decided
//! in one fenced transaction (on the leader's term and on the revision the
//! decision was made from). Nothing is served, recorded or sent before the
//! commit: the committed revision is taken like any other (`apply.rs`), and
//! only then do the notify webhooks go out.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use weir_control::fleet::{all_run, may_commit, pool, same_position, Committed, MemberReport};
use weir_control::rollout::{Engine, Event, Observed, Persisted};

use super::super::context::Daemon;
use super::super::events::{notify, stamp};
use super::apply::take;
use super::node::Node;
use super::report::route_report;
use super::store::Refused;
use super::tasks::pause;
use crate::clock::engine_ms;
use crate::route::Route;

/// Runs until shutdown; idle while another replica leads.
pub(super) async fn lead(daemon: Arc<Daemon>, node: Arc<Node>, mut shutdown: watch::Receiver<bool>) {
    let mut due: HashMap<Arc<str>, u64> = HashMap::new();
    let mut waiting: HashMap<Arc<str>, u64> = HashMap::new();
    while pause(Duration::from_millis(100), &mut shutdown).await {
        let Some(term) = node.term() else {
            due.clear();
            continue;
        };
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
        let members = match node.store.members().await {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!("fleet: cannot read the members' reports: {e}");
                continue;
            }
        };
        node.heard();
        node.metrics.members.set(members.len() as f64);
        node.lock().members = members.clone();
        for route in ready {
            if node.term() != Some(term) {
                break;
            }
            lead_route(&daemon, &node, term, route, &members, &mut waiting).await;
        }
    }
}

/// One evaluation of one route by the leader of `term`.
async fn lead_route(
    daemon: &Arc<Daemon>,
    node: &Node,
    term: i64,
    route: &Route,
    members: &[MemberReport],
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
        let reports: Vec<&MemberReport> =
            members.iter().filter(|m| m.id != node.id).chain(std::iter::once(&own)).collect();
        match doc.routes.get(&name).filter(|p| p.fits(engine.plan(), engine.context())) {
            None => {
                // A route the fleet does not run yet, or runs another
                // definition or canary of: start it once every live member
                // runs this one.
                let fp = weir_control::fingerprint(engine.plan());
                if !all_run(&name, &fp, engine.context().canary_build.as_deref(), reports.iter().copied()) {
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
                };
                let tick = next.tick_with(now, &seen);
                if tick.events.is_empty() && same_position(next.state(), engine.state()) {
                    // Nothing to commit: the verdicts' latest values stay
                    // here (metrics, status) until the next commit.
                    *engine = next;
                    daemon.dp.telemetry.rollout_tick(&route.name, engine, true);
                    return;
                }
                if !may_commit(engine.state(), next.state(), pooled.reporters.len(), node.cfg.min_reporters) {
                    let since = engine.window_start_ms();
                    if waiting.insert(route.name.clone(), since) != Some(since) {
                        tracing::info!(
                            route = %name,
                            reporting = pooled.reporters.len(),
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
            let events = new.events.clone();
            take(daemon, node, new, revision);
            notify(daemon, route, &events);
        }
        Ok(Err(Refused::NotLeader)) => node.step_down("another replica leads"),
        Ok(Err(Refused::Moved)) => {
            // Someone (a manual action) committed first: catch up, and
            // decide again on what they committed.
            if let Ok((Some(doc), rev)) = node.store.state().await {
                take(daemon, node, doc, rev);
            }
        }
        Err(e) => tracing::warn!(route = %name, "fleet: commit failed: {e}"),
    }
}
