//! [`Weir`]: a running weir. Start-up wiring (the first snapshot, the
//! listeners, the data plane and the daemon beside it) and the public API
//! that tests, the demo and embedders use.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};
use tokio_util::task::TaskTracker;
use weir_control::config::{self, Config};
use weir_control::rollout::{Event, State};
use weir_control::sample::Window;

use crate::daemon::actions::{self, ActionFailed, ManualAction};
use crate::daemon::audit::Audit;
use crate::daemon::reload::{self, ReloadError};
use crate::daemon::thread::DaemonThread;
use crate::daemon::{events, persist, webhook, Daemon};
use crate::dataplane::DataPlane;
use crate::files::{admin_token, config_relative, ofrep_token};
use crate::server::access_log::AccessLog;
use crate::snapshot::{self, BuildError};
use crate::telemetry::Telemetry;
use crate::upstream::fault::Faults;

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
    /// A file the config names could not be read or used (a token file,
    /// a webhook CA bundle or secret).
    #[error("{0}")]
    Token(String),
    /// The audit log could not be opened.
    #[error("log.audit: {0}")]
    AuditLog(std::io::Error),
    /// The daemon thread (admin API, rollouts, reloads) could not start.
    #[error("cannot start the daemon thread: {0}")]
    Daemon(std::io::Error),
    /// Fleet mode could not start (etcd).
    #[error("fleet: {0}")]
    Fleet(String),
    /// The config asks for fleet mode, which this build does not have.
    #[error("fleet: this weir was built without fleet mode: build with `--features fleet` (needs protoc)")]
    NoFleet,
}

/// A running weir instance (data and admin listeners).
pub struct Weir {
    daemon: Arc<Daemon>,
    data_addr: SocketAddr,
    admin_addr: SocketAddr,
    ofrep_addr: Option<SocketAddr>,
    shutdown: watch::Sender<bool>,
    tracker: TaskTracker,
    thread: DaemonThread,
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
        let relative = |p: &std::path::Path| config_relative(p, config_path.as_deref());
        let state_file = cfg.state.file.as_deref().map(relative);
        let in_config_dir = |d: &config::AccessLog| match d {
            config::AccessLog::File(p) => config::AccessLog::File(relative(p)),
            other => other.clone(),
        };
        // In fleet mode the state lives in etcd: the file is not read.
        let state_file = state_file.filter(|_| cfg.fleet.is_none());
        let restored = state_file.as_deref().map(persist::load);
        let unreadable_state = match &restored {
            Some(crate::snapshot::Loaded::Unreadable(why)) => Some(why.clone()),
            _ => None,
        };
        if cfg.fleet.is_some() && !cfg!(feature = "fleet") {
            return Err(StartError::NoFleet);
        }
        let faults = Faults::default();
        let resolved = crate::dns::resolve_all(&cfg, None).await.map_err(BuildError::from)?;
        let (snap, events) = snapshot::build(
            cfg.clone(),
            config_path.as_deref(),
            None,
            &telemetry,
            &faults,
            restored.as_ref(),
            resolved,
        )?;
        let audit_counters = crate::daemon::behind::Counters {
            failures: telemetry.write_failures("audit"),
            dropped: Some(telemetry.audit_dropped()),
        };
        let audit = Audit::open(&in_config_dir(&cfg.log.audit), audit_counters).map_err(StartError::AuditLog)?;
        let state_writer = match &state_file {
            Some(p) => Some(persist::writer(p.clone(), telemetry.write_failures("state")).map_err(StartError::Daemon)?),
            None => None,
        };
        let admin_token = admin_token(&cfg, config_path.as_deref()).map_err(StartError::Token)?;
        if let Some(why) = admin_token.as_deref().and_then(|t| crate::files::weak_token(t)) {
            tracing::warn!("admin.token_file: the token {why}");
        }
        let ofrep_token = ofrep_token(&cfg, config_path.as_deref()).map_err(StartError::Token)?;
        if let Some(why) = ofrep_token.as_deref().and_then(|t| crate::files::weak_token(t)) {
            tracing::warn!("ofrep.token_file: the token {why}");
        }
        let webhooks = webhook::Sender::new(&cfg.webhooks, config_path.as_deref(), webhook::any_https(&cfg))
            .map_err(StartError::Token)?;
        let replica: Arc<str> = match &cfg.fleet {
            Some(f) => f.replica.clone().unwrap_or_else(crate::files::host_name).into(),
            None => crate::files::host_name().into(),
        };
        let bind = |what, addr| async move {
            TcpListener::bind(addr).await.map_err(|source| StartError::Bind { what, addr, source })
        };
        let data = bind("listen.addr", cfg.listen.addr).await?;
        let admin = bind("admin.addr", cfg.admin.addr).await?;
        let ofrep = match &cfg.ofrep {
            Some(o) => Some(bind("ofrep.addr", o.addr).await?),
            None => None,
        };
        let thread = DaemonThread::start().map_err(StartError::Daemon)?;
        let bound =
            |l: &TcpListener, what, addr| l.local_addr().map_err(|source| StartError::Bind { what, addr, source });
        let data_addr = bound(&data, "listen.addr", cfg.listen.addr)?;
        let admin_addr = bound(&admin, "admin.addr", cfg.admin.addr)?;
        // The admin and OFREP listeners move to the daemon thread's runtime.
        let to_daemon = |l: TcpListener, what, addr| {
            let _daemon_runtime = thread.enter();
            l.into_std().and_then(TcpListener::from_std).map_err(|source| StartError::Bind { what, addr, source })
        };
        let admin = to_daemon(admin, "admin.addr", admin_addr)?;
        let (ofrep, ofrep_addr) = match (ofrep, &cfg.ofrep) {
            (Some(l), Some(o)) => {
                let addr = bound(&l, "ofrep.addr", o.addr)?;
                (Some(to_daemon(l, "ofrep.addr", addr)?), Some(addr))
            }
            _ => (None, None),
        };
        let access_log = AccessLog::open(&in_config_dir(&cfg.log.access), telemetry.access_log_dropped())
            .map_err(StartError::AccessLog)?;

        let otel = match &cfg.tracing {
            Some(t) => Some(
                crate::otel::Otel::new(t, config_path.as_deref(), thread.handle().clone(), otlp_exports(&telemetry))
                    .map_err(StartError::Token)?,
            ),
            None => None,
        };
        let dp = Arc::new(DataPlane::new(snap, access_log, telemetry, faults, otel));
        let daemon = Arc::new(Daemon {
            dp: dp.clone(),
            ready: AtomicBool::new(false),
            reload_lock: tokio::sync::Mutex::new(()),
            config_path,
            audit,
            state_writer,
            unreadable_state,
            webhooks: Arc::new(arc_swap::ArcSwap::from_pointee(webhooks)),
            notify_queues: Default::default(),
            replica,
            runtime: thread.handle().clone(),
            admin_token: arc_swap::ArcSwapOption::new(admin_token),
            ofrep_token: arc_swap::ArcSwapOption::new(ofrep_token),
            admin_failures: Default::default(),
            synthetic_checks: Default::default(),
            signals: Default::default(),
            history: Default::default(),
            recorder: crate::daemon::recorder::Recorder::start(),
            #[cfg(feature = "fleet")]
            fleet: std::sync::OnceLock::new(),
        });
        #[cfg(feature = "fleet")]
        if cfg.fleet.is_some() {
            let node = thread.handle().spawn({
                let daemon = daemon.clone();
                async move { crate::daemon::fleet::connect(&daemon).await }
            });
            let node = node.await.map_err(|e| StartError::Fleet(e.to_string()))?.map_err(StartError::Fleet)?;
            let _ = daemon.fleet.set(node);
        }
        let (shutdown, shutdown_rx) = watch::channel(false);
        let tracker = TaskTracker::new();
        let limit = Arc::new(Semaphore::new(cfg.limits.max_connections));
        // The data plane: connections, and the health checks (they share
        // the backends' connection pools with requests).
        tokio::spawn(crate::server::listener::accept_loop(
            dp.clone(),
            data,
            limit,
            shutdown_rx.clone(),
            tracker.clone(),
        ));
        tokio::spawn(crate::upstream::health::run(dp, shutdown_rx.clone()));
        // Everything else on the daemon thread, the first build's events
        // before the engine's.
        events::emit_built(&daemon, events);
        crate::daemon::start(&daemon, &thread, admin, ofrep, data_addr, shutdown_rx, tracker.clone());
        daemon.ready.store(true, Ordering::Relaxed);
        // `ofrep=` only when it listens.
        let ofrep = ofrep_addr.map(tracing::field::display);
        tracing::info!(data = %data_addr, admin = %admin_addr, ofrep, routes = cfg.routes.len(), "weir listening");
        Ok(Weir { daemon, data_addr, admin_addr, ofrep_addr, shutdown, tracker, thread })
    }

    /// The bound data-plane address (useful with port 0).
    pub fn data_addr(&self) -> SocketAddr {
        self.data_addr
    }

    /// The bound OFREP address, when `[ofrep]` is configured.
    pub fn ofrep_addr(&self) -> Option<SocketAddr> {
        self.ofrep_addr
    }

    /// The bound admin address.
    pub fn admin_addr(&self) -> SocketAddr {
        self.admin_addr
    }

    /// Re-reads the config file (as SIGHUP does). On error the old config
    /// keeps serving and the error says why.
    pub async fn reload(&self) -> Result<u64, ReloadError> {
        reload::reload_file(&self.daemon).await
    }

    /// Applies an in-memory config, through the same path as a file reload.
    pub async fn apply(&self, cfg: Config) -> Result<u64, ReloadError> {
        reload::apply(&self.daemon, cfg).await
    }

    /// The current canary weight of a route, in basis points.
    pub fn route_weight_bp(&self, route: &str) -> Option<u32> {
        let snap = self.daemon.dp.load();
        snap.routes.routes().iter().find(|r| &*r.name == route).map(|r| r.state.weight().bp())
    }

    /// The measurements of a route's stable or canary backend over the last
    /// `span` (whole seconds, at most `telemetry.window_max`).
    pub fn window(&self, route: &str, side: weir_control::split::Side, span: Duration) -> Option<Window> {
        let snap = self.daemon.dp.load();
        let r = snap.routes.routes().iter().find(|r| &*r.name == route)?;
        let stats = r.stats(side)?;
        let t = &snap.config.telemetry;
        Some(stats.window(self.daemon.dp.telemetry.now_sec(), t.span_secs(span.as_secs()), t.keep_secs()))
    }

    /// The audit trail kept in memory (optionally of one route).
    pub fn events(&self, route: Option<&str>) -> Vec<Event> {
        self.daemon.audit.events(route)
    }

    /// Audit events as they happen (for dashboards and tests).
    pub fn subscribe(&self) -> tokio::sync::broadcast::Receiver<Event> {
        self.daemon.audit.subscribe()
    }

    /// A route's rollout state, if it has a rollout.
    pub fn rollout(&self, route: &str) -> Option<State> {
        let snap = self.daemon.dp.load();
        let r = snap.routes.routes().iter().find(|r| &*r.name == route)?;
        let guard = r.state.engine();
        guard.as_ref().map(|e| e.state().clone())
    }

    /// A manual action on a route's rollout (actor `manual` in the audit).
    /// In fleet mode the action is the fleet's: a fenced commit to etcd,
    /// as through the admin API.
    pub async fn act(&self, route: &str, action: ManualAction) -> Result<Event, ActionFailed> {
        #[cfg(feature = "fleet")]
        if let Some(node) = self.daemon.fleet.get() {
            let (daemon, node, route) = (self.daemon.clone(), node.clone(), route.to_string());
            // On the daemon thread, where the etcd client lives.
            let task = self
                .thread
                .handle()
                .spawn(async move { crate::daemon::fleet::act(&daemon, &node, &route, action).await });
            return task.await.map_err(|e| ActionFailed::Fleet(e.to_string()))?;
        }
        actions::act(&self.daemon, route, action)
    }

    /// Fails readiness at once and, for `timeouts.drain_delay`, keeps
    /// accepting and serving (HTTP/1.1 responses with `Connection: close`,
    /// a GOAWAY on each HTTP/2 connection open), so that load balancers
    /// stop sending traffic before weir stops listening; then stops
    /// accepting, closes idle connections, lets in-flight requests finish
    /// for up to `timeouts.shutdown_grace`, and returns (whether or not all
    /// finished). Within the same grace, the daemon thread's tasks finish
    /// what they are doing (a rollout step being saved).
    pub async fn shutdown(self) -> bool {
        self.leave(std::future::pending()).await;
        self.stop().await
    }

    /// The drain delay: not ready, still serving, until it is over or
    /// `cut` (a second signal) ends it.
    async fn leave(&self, cut: impl std::future::Future<Output = ()>) {
        self.daemon.ready.store(false, Ordering::Relaxed);
        let delay = self.daemon.dp.load().timeouts.drain_delay;
        if delay.is_zero() {
            return;
        }
        self.daemon.dp.start_leaving();
        tracing::info!(?delay, "draining: not ready, still serving for timeouts.drain_delay (signal again to skip)");
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            () = cut => tracing::info!("second signal: ending the drain delay now"),
        }
    }

    /// Stops accepting and drains (see [`Weir::shutdown`]).
    async fn stop(mut self) -> bool {
        let grace = self.daemon.dp.load().timeouts.shutdown_grace;
        tracing::info!("no longer accepting: finishing in-flight requests");
        self.daemon.ready.store(false, Ordering::Relaxed);
        self.daemon.dp.draining.store(true, Ordering::Relaxed);
        self.daemon.dp.drain.notify_waiters();
        let _ = self.shutdown.send(true);
        self.tracker.close();
        let deadline = tokio::time::Instant::now() + grace;
        let drained = tokio::time::timeout_at(deadline, self.tracker.wait()).await.is_ok();
        if drained {
            tracing::info!("drained all connections");
        } else {
            tracing::warn!(?grace, "shutdown grace period over: closing remaining connections");
        }
        // The last spans, while the daemon runtime that sends them runs.
        if self.daemon.dp.otel.is_some() {
            let dp = self.daemon.dp.clone();
            // Within the grace left (5 s at most, 1 s at least).
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let within = left.clamp(Duration::from_secs(1), Duration::from_secs(5));
            let flush = tokio::task::spawn_blocking(move || dp.otel.as_ref().map(|o| o.shutdown(within)));
            let _ = tokio::time::timeout(within + Duration::from_secs(1), flush).await;
        }
        if tokio::time::timeout_at(deadline, self.thread.finished()).await.is_err() {
            tracing::warn!(
                ?grace,
                "shutdown grace period over: leaving the daemon thread's work (a webhook?) unfinished"
            );
        }
        // The recording's last seconds (the drain's included) and decisions
        // reach the file, unless the disk hangs.
        let daemon = self.daemon.clone();
        let flush = tokio::task::spawn_blocking(move || {
            crate::daemon::recording::record_last(&daemon);
            daemon.recorder.flush(Duration::from_secs(2));
            // What the state file and audit log still owe (one try each
            // when their disk is failing).
            if let Some(w) = &daemon.state_writer {
                w.close(Duration::from_millis(500));
            }
            daemon.audit.close(Duration::from_millis(500));
        });
        let _ = tokio::time::timeout(Duration::from_secs(4), flush).await;
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
                    // On the daemon thread, like the file watcher's: the
                    // outcome is logged there.
                    let daemon = self.daemon.clone();
                    self.thread.spawn(async move {
                        let _ = reload::reload_file(&daemon).await;
                    });
                }
            }
        }
        tracing::info!("shutting down: draining in-flight requests");
        let again = async {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        };
        self.leave(again).await;
        self.stop().await;
        Ok(())
    }
}

/// The OTLP exporter's counters.
fn otlp_exports(telemetry: &crate::telemetry::Telemetry) -> crate::otel::Exports {
    crate::otel::Exports {
        ok: telemetry.otlp_exports("ok"),
        failed: telemetry.otlp_exports("failed"),
        last_warned: Default::default(),
    }
}
