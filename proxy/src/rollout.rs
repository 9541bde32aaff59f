//! The rollout driver: the async shell around `weir_control::rollout`.
//!
//! Every 100 ms it looks for routes whose `interval` is due, reads the
//! canary and stable windows since the rollout's last transition, ticks the
//! engine, and applies the decided weight, stage and cohort to the route in
//! the same tick. Events go to the audit trail and the `notify` webhook; a
//! stage that is ready waits for the `pre_stage` webhook's 2xx (a failing or
//! slow webhook means "do not advance", never "pass"). State is persisted
//! after every change (temp file + fsync + rename) and restored at start.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::{header, Method, Request};
use http_body_util::Full;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use weir_control::config::Rollout;
use weir_control::rollout::{Event, State};
use weir_control::split::Side;

use crate::route::Route;
use crate::server::Shared;

/// Unix time in milliseconds (the engine's clock).
pub(crate) fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// A route's rollout as persisted in the state file.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct Persisted {
    /// Fingerprint of the rollout definition it belongs to.
    pub(crate) rollout: String,
    /// Canary version it was rolling out.
    pub(crate) canary_version: Option<String>,
    /// The engine state.
    pub(crate) state: State,
}

impl Persisted {
    pub(crate) fn fits(&self, rollout: &Rollout, canary_version: Option<&str>) -> bool {
        self.rollout == weir_control::fingerprint(rollout) && self.canary_version.as_deref() == canary_version
    }
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct StateFile {
    routes: HashMap<String, Persisted>,
}

/// Reads the state file; a missing file is empty, an unreadable one is
/// logged and treated as empty (rollouts then start at stage 0, logged).
pub(crate) fn load_state(path: &Path) -> HashMap<String, Persisted> {
    match std::fs::read(path) {
        Ok(bytes) => match serde_json::from_slice::<StateFile>(&bytes) {
            Ok(f) => f.routes,
            Err(e) => {
                tracing::error!("state file {} is not valid ({e}): rollouts start afresh", path.display());
                HashMap::new()
            }
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => HashMap::new(),
        Err(e) => {
            tracing::error!("cannot read state file {}: {e}", path.display());
            HashMap::new()
        }
    }
}

/// Writes the state file atomically: temp file, fsync, rename, fsync dir.
fn save_state(path: &Path, routes: HashMap<String, Persisted>) -> std::io::Result<()> {
    use std::io::Write;
    let bytes = serde_json::to_vec_pretty(&StateFile { routes }).map_err(std::io::Error::other)?;
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let tmp = dir.join(format!(".{}.tmp", path.file_name().and_then(|n| n.to_str()).unwrap_or("weir-state")));
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(&bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)?;
    std::fs::File::open(dir)?.sync_all()
}

fn persist(shared: &Shared) {
    let Some(path) = shared.state_file.as_ref() else { return };
    // One writer at a time (the engine's clock and a manual action or an
    // embedder's call may persist at once): two writers of the one temp
    // file would interleave their bytes. Held while the states are read, so
    // the last file written has the latest states.
    static WRITING: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one = WRITING.lock().unwrap_or_else(|p| p.into_inner());
    let snap = shared.snapshot.load();
    let mut routes = HashMap::new();
    for r in snap.routes.routes() {
        if let Some(e) = r.state.engine().as_ref() {
            routes.insert(
                r.name.to_string(),
                Persisted {
                    rollout: weir_control::fingerprint(e.plan()),
                    canary_version: e.context().canary_version.clone(),
                    state: e.state().clone(),
                },
            );
        }
    }
    if let Err(e) = save_state(path, routes) {
        tracing::error!("cannot write state file {}: {e}", path.display());
    }
}

type WebhookClient = Client<HttpConnector, Full<Bytes>>;

/// POSTs `body` to `url`; Ok(status) when it answered in time.
async fn webhook(client: &WebhookClient, url: &str, body: Vec<u8>, timeout: Duration) -> Result<u16, String> {
    let req = Request::builder()
        .method(Method::POST)
        .uri(url)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(body)))
        .map_err(|e| format!("bad request: {e}"))?;
    match tokio::time::timeout(timeout, client.request(req)).await {
        Err(_) => Err(format!("no answer within {timeout:?}")),
        Ok(Err(e)) => Err(format!("{e}")),
        Ok(Ok(resp)) => Ok(resp.status().as_u16()),
    }
}

/// Records events: audit trail, metrics, and the notify webhook.
pub(crate) fn emit(shared: &Arc<Shared>, route: &Route, events: Vec<Event>) {
    if events.is_empty() {
        return;
    }
    let notify =
        route.state.engine().as_ref().and_then(|e| e.plan().notify.clone().map(|u| (u, e.plan().webhook_timeout)));
    for ev in events {
        shared.telemetry.rollout_event(&ev);
        if let Some((url, timeout)) = &notify {
            if ev.kind != weir_control::rollout::EventKind::Evaluated {
                if let Ok(body) = serde_json::to_vec(&ev) {
                    let (client, url, timeout) = (shared.webhooks.clone(), url.clone(), *timeout);
                    // From the control thread, whoever emits (the webhook
                    // client's connections live there).
                    shared.control.spawn(async move {
                        if let Err(e) = webhook(&client, &url, body, timeout).await {
                            tracing::warn!("notify webhook {url}: {e}");
                        }
                    });
                }
            }
        }
        shared.audit.record(ev);
    }
}

pub(crate) fn webhook_client() -> WebhookClient {
    Client::builder(TokioExecutor::new()).build_http()
}

/// Runs until shutdown.
pub(crate) async fn drive(shared: Arc<Shared>, shutdown: watch::Receiver<bool>) {
    let mut due: HashMap<Arc<str>, u64> = HashMap::new();
    let mut clock = crate::server::Periodic::on_demand(Duration::from_millis(100), shutdown, &shared);
    let mut busy = true;
    while clock.tick_if(busy).await {
        let snap = shared.snapshot.load_full();
        let now = now_ms();
        let mut changed = false;
        busy = false;
        for route in snap.routes.routes() {
            let Some(interval) = route.state.engine().as_ref().map(|e| e.plan().interval) else { continue };
            busy = true;
            let next = due.entry(route.name.clone()).or_insert(now);
            if now < *next {
                continue;
            }
            *next = now + interval.as_millis() as u64;
            changed |= tick_route(&shared, route, now, snap.config.telemetry.window_max).await;
        }
        due.retain(|name, _| snap.routes.routes().iter().any(|r| r.name == *name));
        if changed {
            persist(&shared);
        }
    }
}

/// One evaluation of one route; returns whether the state changed.
async fn tick_route(shared: &Arc<Shared>, route: &Route, now: u64, window_max: Duration) -> bool {
    let keep = window_max.as_secs().max(1);
    let sec = shared.telemetry.now_sec();
    let (tick, before, plan_hook) = {
        let mut slot = route.state.engine();
        let Some(engine) = slot.as_mut() else { return false };
        // The window covers the time since the last transition, rounded up
        // to whole one-second slots.
        let span = engine.window_ms(now).div_ceil(1000).clamp(1, keep);
        let empty = weir_control::sample::Window::default();
        let canary = route.stats(Side::Canary).map(|s| s.window(sec, span, keep));
        let stable = route.stats(Side::Stable).map(|s| s.window(sec, span, keep));
        let before = engine.state().clone();
        let epoch = engine.state().since_ms;
        let probes = weir_control::sample::Probes {
            synthetic: shared.synthetic.checks(&route.name, epoch),
            shadow: shared.shadows.checks(&route.name, epoch),
        };
        let tick = engine.tick_with(now, canary.as_ref().unwrap_or(&empty), stable.as_ref().unwrap_or(&empty), probes);
        route.state.apply(engine);
        shared.telemetry.rollout_tick(&route.name, engine, true);
        (tick, before, engine.plan().pre_stage.clone().map(|u| (u, engine.plan().webhook_timeout)))
    };
    emit(shared, route, tick.events);
    if tick.needs_approval {
        if let Some((url, timeout)) = plan_hook {
            let body = serde_json::json!({
                "route": &*route.name,
                "stage": before.stage,
                "next_stage": before.stage + 1,
                "weight": route.state.weight().percent(),
            });
            let answer = webhook(&shared.webhooks, &url, body.to_string().into_bytes(), timeout).await;
            let (ok, detail) = match answer {
                Ok(code) if (200..300).contains(&code) => (true, format!("{url} answered {code}")),
                Ok(code) => (false, format!("{url} answered {code}: not advancing")),
                Err(e) => (false, format!("{url}: {e}: not advancing")),
            };
            let ev = {
                let mut slot = route.state.engine();
                let Some(engine) = slot.as_mut() else { return false };
                let ev = engine.approve(now_ms(), ok, detail);
                route.state.apply(engine);
                shared.telemetry.rollout_tick(&route.name, engine, false);
                ev
            };
            emit(shared, route, vec![ev]);
        }
    }
    let after = route.state.engine().as_ref().map(|e| e.state().clone());
    after.is_some_and(|a| a.phase != before.phase || a.stage != before.stage || a.since_ms != before.since_ms)
}

/// A path from the config: relative paths are relative to the config file.
pub(crate) fn config_relative(file: &Path, config_path: Option<&Path>) -> PathBuf {
    if file.is_absolute() {
        return file.to_path_buf();
    }
    let base = config_path.and_then(Path::parent).filter(|p| !p.as_os_str().is_empty());
    base.map_or_else(|| file.to_path_buf(), |b| b.join(file))
}

/// Persists now (after manual actions).
pub(crate) fn persist_now(shared: &Shared) {
    persist(shared);
}

/// Records the events of a snapshot build (rollouts started or restored).
pub(crate) fn emit_built(shared: &Arc<Shared>, events: Vec<Event>) {
    let snap = shared.snapshot.load_full();
    for ev in events {
        if let Some(route) = snap.routes.routes().iter().find(|r| *r.name == *ev.route) {
            if let Some(e) = route.state.engine().as_ref() {
                shared.telemetry.rollout_tick(&route.name, e, false);
            }
            emit(shared, route, vec![ev]);
        }
    }
}

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
}

pub(crate) fn manual(shared: &Arc<Shared>, route_name: &str, action: ManualAction) -> Result<Event, ActionFailed> {
    let snap = shared.snapshot.load_full();
    let route = snap
        .routes
        .routes()
        .iter()
        .find(|r| &*r.name == route_name)
        .ok_or_else(|| ActionFailed::NoRoute(route_name.to_string()))?;
    let ev = {
        let mut slot = route.state.engine();
        let engine = slot.as_mut().ok_or_else(|| ActionFailed::NoRollout(route_name.to_string()))?;
        let now = now_ms();
        let ev = match action {
            ManualAction::Pause => engine.pause(now),
            ManualAction::Resume => engine.resume(now),
            ManualAction::Promote => engine.promote(now, false),
            ManualAction::PromoteFull => engine.promote(now, true),
            ManualAction::Abort => engine.abort(now),
        }?;
        route.state.apply(engine);
        shared.telemetry.rollout_tick(&route.name, engine, false);
        ev
    };
    emit(shared, route, vec![ev.clone()]);
    persist(shared);
    Ok(ev)
}
