//! Manual actions in fleet mode, from any replica: read the committed
//! state, run the action on it, and commit it on the revision it was read
//! at (a fenced write: a leader's decision on the old revision then fails,
//! and it decides again on the action's result). A few tries when the
//! leader commits in between.

use std::sync::Arc;

use weir_control::fleet::Committed;
use weir_control::rollout::{Event, Persisted};

use super::apply::committed;
use super::node::Node;
use crate::daemon::actions::{run, ActionFailed, ManualAction};
use crate::daemon::context::Daemon;

/// Runs `action` on the fleet's rollout of `route_name`.
pub(crate) async fn act(
    daemon: &Arc<Daemon>,
    node: &Node,
    route_name: &str,
    action: ManualAction,
) -> Result<Event, ActionFailed> {
    // etcd electing a new raft leader, or a member gone, refuses for a
    // moment: try again for a few seconds before giving up.
    let deadline = tokio::time::Instant::now() + 4 * node.cfg.timeout.max(std::time::Duration::from_secs(1));
    let mut last = String::from("no attempt");
    while tokio::time::Instant::now() < deadline {
        let (doc, rev) = match node.store.state().await {
            Ok(s) => s,
            Err(e) => {
                last = e.to_string();
                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                continue;
            }
        };
        node.heard();
        let doc = doc.unwrap_or_default();
        let snap = daemon.dp.load_full();
        let route = snap
            .routes
            .routes()
            .iter()
            .find(|r| &*r.name == route_name)
            .ok_or_else(|| ActionFailed::NoRoute(route_name.to_string()))?;
        let (next, ev) = {
            let slot = route.state.engine();
            let engine = slot.as_ref().ok_or_else(|| ActionFailed::NoRollout(route_name.to_string()))?;
            let p = doc.routes.get(route_name).filter(|p| p.fits(engine.plan(), engine.context())).ok_or_else(|| {
                ActionFailed::Fleet(format!(
                    "this replica's rollout of \"{route_name}\" is not the one the fleet runs (none committed yet, or another config)"
                ))
            })?;
            let mut next = engine.clone();
            next.adopt(p.state.clone());
            let ev = run(&mut next, action)?;
            (next, ev)
        };
        let mut new = Committed {
            term: 0,
            by: node.id.clone(),
            at_ms: crate::clock::now_ms(),
            routes: doc.routes,
            events: vec![ev.clone()],
        };
        new.routes.insert(route_name.to_string(), Persisted::of(&next));
        match node.store.commit(None, rev, &new).await {
            Ok(Ok(revision)) => {
                let stamped = committed(daemon, node, route, new, rev, revision);
                return Ok(stamped.into_iter().next().unwrap_or(ev));
            }
            Ok(Err(_)) => last = "the committed state kept changing".into(),
            Err(e) => {
                last = e.to_string();
                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            }
        }
    }
    Err(ActionFailed::Fleet(format!("{last}: try again")))
}
