//! Manual actions on a rollout (admin API, `weir ctl`, [`crate::Weir::act`]):
//! recorded with actor `manual`, persisted at once.

use weir_control::rollout::{Engine, Event};

use super::context::Daemon;
use super::events::emit;
use super::persist::persist;
use crate::clock::engine_ms;

/// A manual action on a rollout.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ManualAction {
    /// Hold at the current weight.
    Pause,
    /// Continue (a rolled-back or aborted rollout restarts at stage 0).
    Resume,
    /// Next stage.
    Promote,
    /// Straight to 100 %.
    PromoteFull,
    /// Weight 0 at once.
    Abort,
}

/// Why a manual action was refused.
#[derive(Debug, thiserror::Error)]
pub enum ActionFailed {
    /// No route of that name.
    #[error("no route named \"{0}\"")]
    NoRoute(String),
    /// The route has no rollout.
    #[error("route \"{0}\" has no rollout")]
    NoRollout(String),
    /// Not allowed in the current state.
    #[error(transparent)]
    State(#[from] weir_control::rollout::ActionError),
    /// Fleet mode: the fleet's state could not be read or written.
    #[error("fleet: {0}")]
    Fleet(String),
}

/// Runs `action` on `engine` (stamped with the wall-clock time).
pub(crate) fn run(engine: &mut Engine, action: ManualAction) -> Result<Event, ActionFailed> {
    let now = engine_ms();
    let mut ev = match action {
        ManualAction::Pause => engine.pause(now),
        ManualAction::Resume => engine.resume(now),
        ManualAction::Promote => engine.promote(now, false),
        ManualAction::PromoteFull => engine.promote(now, true),
        ManualAction::Abort => engine.abort(now),
    }?;
    super::events::stamp(&mut ev);
    Ok(ev)
}

/// Runs `action` on the rollout of `route_name`.
pub(crate) fn act(daemon: &Daemon, route_name: &str, action: ManualAction) -> Result<Event, ActionFailed> {
    let snap = daemon.dp.load_full();
    let route = snap
        .routes
        .routes()
        .iter()
        .find(|r| &*r.name == route_name)
        .ok_or_else(|| ActionFailed::NoRoute(route_name.to_string()))?;
    let ev = {
        let mut slot = route.state.engine();
        let engine = slot.as_mut().ok_or_else(|| ActionFailed::NoRollout(route_name.to_string()))?;
        let ev = run(engine, action)?;
        // The next stage's data start now, not at the driver's next tick.
        super::driver::publish(daemon, route, engine, snap.config.telemetry.keep_secs(), false);
        ev
    };
    emit(daemon, route, vec![ev.clone()]);
    persist(daemon);
    Ok(ev)
}
