//! A running weir: listeners, connection tasks, reload and shutdown.

mod conn;
mod control;
mod h1;
mod headers;
pub(crate) mod proxy;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};
use tokio_util::task::TaskTracker;
use weir_control::config::Config;
use weir_control::rollout::{Event, State};
use weir_control::sample::Window;

use crate::rollout::{ActionFailed, ManualAction};

pub(crate) use conn::{ConnCtx, RequestGuard};

use bytes::Bytes;
use http_body_util::Full;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;

use crate::access_log::AccessLog;
use crate::audit::Audit;
use crate::reload::{self, ReloadError};
use crate::snapshot::{self, BuildError, Snapshot};
use crate::telemetry::Telemetry;

/// State shared by every task of a running weir.
pub(crate) struct Shared {
    pub(crate) snapshot: ArcSwap<Snapshot>,
    pub(crate) access_log: Option<AccessLog>,
    pub(crate) ready: AtomicBool,
    /// Shutdown has begun: connections close after their current request.
    pub(crate) draining: AtomicBool,
    pub(crate) reload_lock: tokio::sync::Mutex<()>,
    pub(crate) telemetry: Telemetry,
    pub(crate) config_path: Option<PathBuf>,
    pub(crate) audit: Audit,
    pub(crate) state_file: Option<PathBuf>,
    pub(crate) webhooks: Client<HttpConnector, Full<Bytes>>,
    /// The control thread's runtime (see `control`).
    pub(crate) control: tokio::runtime::Handle,
    pub(crate) admin_token: arc_swap::ArcSwapOption<String>,
    pub(crate) faults: crate::upstream::fault::Faults,
    pub(crate) synthetic: crate::synthetic::Synthetics,
    pub(crate) shadows: crate::shadow::Shadows,
    /// Requests in flight on the data listener.
    pub(crate) in_flight: Arc<std::sync::atomic::AtomicUsize>,
    /// The generation of each snapshot swapped in: background loops with
    /// nothing to do in the current config sleep until it changes.
    pub(crate) reloads: watch::Sender<u64>,
}

/// Why weir could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The config is valid but could not be turned into a runtime snapshot.
    #[error(transparent)]
    Build(#[from] BuildError),
    /// A listener could not be bound.
    #[error("cannot listen on {addr} ({what}): {source}")]
    Bind {
        /// Which listener.
        what: &'static str,
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// The access log could not be opened.
    #[error("log.access: {0}")]
    AccessLog(std::io::Error),
    /// The admin token file could not be read.
    #[error("{0}")]
    Token(String),
    /// The audit log could not be opened.
    #[error("log.audit: {0}")]
    AuditLog(std::io::Error),
    /// The control thread (admin API, rollouts, reloads) could not start.
    #[error("cannot start the control thread: {0}")]
    Control(std::io::Error),
}

/// A running weir instance (data and admin listeners).
pub struct Weir {
    shared: Arc<Shared>,
    data_addr: SocketAddr,
    admin_addr: SocketAddr,
    shutdown: watch::Sender<bool>,
    tracker: TaskTracker,
    control: control::Control,
}

impl std::fmt::Debug for Weir {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Weir").field("data_addr", &self.data_addr).field("admin_addr", &self.admin_addr).finish()
    }
}

impl Weir {
    /// Builds the first snapshot, binds both listeners and starts serving.
    /// With `config_path`, the file is watched and reloaded on change.
    pub async fn start(cfg: Config, config_path: Option<PathBuf>) -> Result<Weir, StartError> {
        let cfg = Arc::new(cfg);
        let telemetry = Telemetry::new();
        let relative = |p: &std::path::Path| crate::rollout::config_relative(p, config_path.as_deref());
        let state_file = cfg.state.file.as_deref().map(relative);
        let in_config_dir = |d: &weir_control::config::AccessLog| match d {
            weir_control::config::AccessLog::File(p) => weir_control::config::AccessLog::File(relative(p)),
            other => other.clone(),
        };
        let restored = state_file.as_deref().map(crate::rollout::load_state);
        let faults = crate::upstream::fault::Faults::default();
        let (snap, events) =
            snapshot::build(cfg.clone(), config_path.as_deref(), None, &telemetry, &faults, restored.as_ref()).await?;
        let audit = Audit::open(&in_config_dir(&cfg.log.audit)).map_err(StartError::AuditLog)?;
        let admin_token = match &cfg.admin.token_file {
            Some(f) => Some(Arc::new(crate::admin::auth::read_token(&relative(f)).map_err(StartError::Token)?)),
            None => None,
        };
        let bind = |what, addr| async move {
            TcpListener::bind(addr).await.map_err(|source| StartError::Bind { what, addr, source })
        };
        let data = bind("listen.addr", cfg.listen.addr).await?;
        let admin = bind("admin.addr", cfg.admin.addr).await?;
        let control = control::Control::start().map_err(StartError::Control)?;
        let data_addr = data.local_addr().map_err(|source| StartError::Bind {
            what: "listen.addr",
            addr: cfg.listen.addr,
            source,
        })?;
        let admin_addr = admin.local_addr().map_err(|source| StartError::Bind {
            what: "admin.addr",
            addr: cfg.admin.addr,
            source,
        })?;
        // The admin listener moves to the control thread's runtime.
        let admin = {
            let _control = control.enter();
            admin.into_std().and_then(TcpListener::from_std)
        }
        .map_err(|source| StartError::Bind { what: "admin.addr", addr: admin_addr, source })?;
        let access_log = AccessLog::open(&in_config_dir(&cfg.log.access)).map_err(StartError::AccessLog)?;

        let generation = snap.generation;
        let shared = Arc::new(Shared {
            snapshot: ArcSwap::from_pointee(snap),
            access_log,
            ready: AtomicBool::new(false),
            draining: AtomicBool::new(false),
            reload_lock: tokio::sync::Mutex::new(()),
            telemetry,
            config_path: config_path.clone(),
            audit,
            state_file,
            webhooks: crate::rollout::webhook_client(),
            control: control.handle().clone(),
            admin_token: arc_swap::ArcSwapOption::new(admin_token),
            faults,
            synthetic: crate::synthetic::Synthetics::new(),
            shadows: Default::default(),
            in_flight: Default::default(),
            reloads: watch::Sender::new(generation),
        });
        let (shutdown, shutdown_rx) = watch::channel(false);
        let tracker = TaskTracker::new();
        let limit = Arc::new(Semaphore::new(cfg.limits.max_connections));
        // The data plane: connections, and the health checks (they share
        // the backends' connection pools with requests).
        tokio::spawn(accept_loop(shared.clone(), data, limit, shutdown_rx.clone(), tracker.clone()));
        tokio::spawn(crate::upstream::health::run(shared.clone(), shutdown_rx.clone()));
        // Everything else on the control thread (see `control`), the first
        // build's events before the engine's.
        crate::rollout::emit_built(&shared, events);
        control.spawn(crate::admin::serve(shared.clone(), admin, shutdown_rx.clone(), tracker.clone()));
        control.spawn(ticker(shared.clone(), shutdown_rx.clone()));
        control.spawn(crate::rollout::drive(shared.clone(), shutdown_rx.clone()));
        control.spawn(crate::synthetic::run(shared.clone(), data_addr, shutdown_rx.clone()));
        if let Some(path) = config_path {
            let _control = control.enter();
            reload::watch_file(shared.clone(), path, shutdown_rx);
        }
        shared.ready.store(true, Ordering::Relaxed);
        tracing::info!(data = %data_addr, admin = %admin_addr, routes = cfg.routes.len(), "weir listening");
        Ok(Weir { shared, data_addr, admin_addr, shutdown, tracker, control })
    }

    /// The bound data-plane address (useful with port 0).
    pub fn data_addr(&self) -> SocketAddr {
        self.data_addr
    }

    /// The bound admin address.
    pub fn admin_addr(&self) -> SocketAddr {
        self.admin_addr
    }

    /// Re-reads the config file (as SIGHUP does). On error the old config
    /// keeps serving and the error says why.
    pub async fn reload(&self) -> Result<u64, ReloadError> {
        reload::reload_file(&self.shared).await
    }

    /// Applies an in-memory config, through the same path as a file reload.
    pub async fn apply(&self, cfg: Config) -> Result<u64, ReloadError> {
        reload::apply(&self.shared, cfg).await
    }

    /// The current canary weight of a route, in basis points.
    pub fn route_weight_bp(&self, route: &str) -> Option<u32> {
        let snap = self.shared.snapshot.load();
        snap.routes.routes().iter().find(|r| &*r.name == route).map(|r| r.state.weight().bp())
    }

    /// The measurements of a route's stable or canary backend over the last
    /// `span` (whole seconds, at most `telemetry.window_max`).
    pub fn window(&self, route: &str, side: weir_control::split::Side, span: Duration) -> Option<Window> {
        let snap = self.shared.snapshot.load();
        let r = snap.routes.routes().iter().find(|r| &*r.name == route)?;
        let stats = r.stats(side)?;
        let keep = snap.config.telemetry.window_max.as_secs();
        let span = span.as_secs().clamp(1, keep);
        Some(stats.window(self.shared.telemetry.now_sec(), span, keep))
    }

    /// The audit trail kept in memory (optionally of one route).
    pub fn events(&self, route: Option<&str>) -> Vec<Event> {
        self.shared.audit.events(route)
    }

    /// Audit events as they happen (for dashboards and tests).
    pub fn subscribe(&self) -> tokio::sync::broadcast::Receiver<Event> {
        self.shared.audit.subscribe()
    }

    /// A route's rollout state, if it has a rollout.
    pub fn rollout(&self, route: &str) -> Option<State> {
        let snap = self.shared.snapshot.load();
        let r = snap.routes.routes().iter().find(|r| &*r.name == route)?;
        let guard = r.state.engine();
        guard.as_ref().map(|e| e.state().clone())
    }

    /// A manual action on a route's rollout (actor `manual` in the audit).
    pub fn act(&self, route: &str, action: ManualAction) -> Result<Event, ActionFailed> {
        crate::rollout::manual(&self.shared, route, action)
    }

    /// Stops accepting, lets in-flight requests finish for up to
    /// `timeouts.shutdown_grace`, then returns (whether or not all finished).
    /// Within the same grace, the control thread's tasks finish what they
    /// are doing (a rollout step being saved).
    pub async fn shutdown(mut self) -> bool {
        let grace = self.shared.snapshot.load().timeouts.shutdown_grace;
        self.shared.ready.store(false, Ordering::Relaxed);
        self.shared.draining.store(true, Ordering::Relaxed);
        let _ = self.shutdown.send(true);
        self.tracker.close();
        let deadline = tokio::time::Instant::now() + grace;
        let drained = tokio::time::timeout_at(deadline, self.tracker.wait()).await.is_ok();
        if drained {
            tracing::info!("drained all connections");
        } else {
            tracing::warn!(?grace, "shutdown grace period over: closing remaining connections");
        }
        if tokio::time::timeout_at(deadline, self.control.finished()).await.is_err() {
            tracing::warn!(
                ?grace,
                "shutdown grace period over: leaving the control thread's work (a webhook?) unfinished"
            );
        }
        drained
    }

    /// Serves until SIGTERM or SIGINT (SIGHUP reloads), then shuts down.
    pub async fn serve_until_signal(self) -> std::io::Result<()> {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        let mut hup = signal(SignalKind::hangup())?;
        loop {
            tokio::select! {
                _ = term.recv() => break,
                _ = int.recv() => break,
                _ = hup.recv() => {
                    tracing::info!("SIGHUP: reloading config");
                    // On the control thread, like the file watcher's: the
                    // outcome is logged there.
                    let shared = self.shared.clone();
                    self.control.spawn(async move {
                        let _ = reload::reload_file(&shared).await;
                    });
                }
            }
        }
        tracing::info!("shutting down: draining in-flight requests");
        self.shutdown().await;
        Ok(())
    }
}

/// The clock of a periodic background task: ticks every `period` (late
/// ticks are delayed, not bunched) until weir shuts down.
pub(crate) struct Periodic {
    every: tokio::time::Interval,
    shutdown: watch::Receiver<bool>,
    /// For [`Periodic::tick_if`]: config changes, and whether the clock was
    /// stopped for want of work.
    reloads: Option<watch::Receiver<u64>>,
    stopped: bool,
}

impl Periodic {
    pub(crate) fn new(period: Duration, shutdown: watch::Receiver<bool>) -> Self {
        let mut every = tokio::time::interval(period);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        Periodic { every, shutdown, reloads: None, stopped: false }
    }

    /// A clock for work that only some configs have (health checks, rollout
    /// engines): see [`Periodic::tick_if`].
    pub(crate) fn on_demand(period: Duration, shutdown: watch::Receiver<bool>, shared: &Shared) -> Self {
        Periodic { reloads: Some(shared.reloads.subscribe()), ..Periodic::new(period, shutdown) }
    }

    /// Waits for the next tick; `false` once weir is shutting down.
    pub(crate) async fn tick(&mut self) -> bool {
        tokio::select! {
            _ = self.shutdown.changed() => false,
            _ = self.every.tick() => true,
        }
    }

    /// Like [`Periodic::tick`] while `busy`; otherwise the clock stops (an
    /// idle weir does not wake for it) until the config is swapped, and
    /// ticks then at once. The first tick after a stop is a period later.
    pub(crate) async fn tick_if(&mut self, busy: bool) -> bool {
        match &mut self.reloads {
            Some(reloads) if !busy => {
                self.stopped = true;
                tokio::select! {
                    _ = self.shutdown.changed() => false,
                    changed = reloads.changed() => changed.is_ok(),
                }
            }
            _ => {
                if std::mem::take(&mut self.stopped) {
                    self.every.reset();
                }
                self.tick().await
            }
        }
    }
}

/// Once a second: fold recorded samples into the current slot, expire
/// faults, publish the routes' current weights, and close idle upstream
/// connections past `timeouts.upstream_idle`.
async fn ticker(shared: Arc<Shared>, shutdown: watch::Receiver<bool>) {
    let mut clock = Periodic::new(Duration::from_secs(1), shutdown);
    while clock.tick().await {
        let snap = shared.snapshot.load_full();
        shared.telemetry.rotate_all();
        shared.faults.expire();
        for r in snap.routes.routes() {
            r.publish_weight();
        }
        // Idle upstream connections of weir's own client past upstream_idle.
        for b in &snap.backends {
            for ep in b.endpoints() {
                ep.pool.sweep(snap.timeouts.upstream_idle);
            }
        }
    }
}

/// The next connection; on errors (EMFILE and friends) it backs off and
/// tries again instead of spinning.
pub(crate) async fn accept(listener: &TcpListener, what: &str) -> (TcpStream, std::net::SocketAddr) {
    loop {
        match listener.accept().await {
            Ok(pair) => return pair,
            Err(e) => {
                tracing::warn!("{what} accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

async fn accept_loop(
    shared: Arc<Shared>,
    listener: TcpListener,
    limit: Arc<Semaphore>,
    mut shutdown: watch::Receiver<bool>,
    tracker: TaskTracker,
) {
    let mut tls = crate::tls::ListenerTls::new(shared.snapshot.load().listen_tls.as_ref());
    loop {
        let (stream, peer) = tokio::select! {
            _ = shutdown.changed() => return,
            pair = accept(&listener, "data") => pair,
        };
        let _ = stream.set_nodelay(true);
        match limit.clone().try_acquire_owned() {
            Ok(permit) => {
                let acceptor = tls.next(shared.snapshot.load().listen_tls.as_ref());
                tracker.spawn(conn::serve(shared.clone(), stream, peer, permit, shutdown.clone(), acceptor));
            }
            Err(_) => {
                tracing::warn!(%peer, "limits.max_connections reached: refusing connection");
                tokio::spawn(refuse(stream));
            }
        }
    }
}

/// Past the connection limit: a short 503 and close, rather than a hang.
async fn refuse(mut stream: TcpStream) {
    let _ = stream
        .write_all(
            b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\nconnection: close\r\nretry-after: 1\r\n\r\n",
        )
        .await;
    let _ = stream.shutdown().await;
}
