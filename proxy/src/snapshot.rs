//! One immutable snapshot per config generation, behind one `ArcSwap`.
//!
//! Everything a request needs is built here, off the hot path: the route
//! table, resolved upstream addresses, pre-parsed header names, the pooled
//! client and the server builder. A reload builds a complete new snapshot and
//! stores it once; in-flight requests finish on the snapshot they loaded.
//!
//! A reload is a diff keyed by route name (`weir_control::config::diff`): a
//! route that still exists keeps its [`RouteState`] (live weight, stage,
//! keyless sequence). Its weight is rewritten from the config only for
//! static routes, or when the rollout definition, the canary or its version
//! changed (then it restarts at stage 0).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use hyper_util::rt::{TokioExecutor, TokioTimer};
use hyper_util::server::conn::auto;
use tokio_rustls::TlsAcceptor;
use weir_control::config::{diff, Config, ServerTls, Timeouts};
use weir_control::rollout::{Context, Engine, Event, Persisted};
use weir_control::split::Weight;

use crate::clock::engine_ms;
use crate::route::table::RouteTable;
use crate::route::{Route, RouteState, RouteTelemetry};
use crate::telemetry::Telemetry;
use crate::upstream::client::{self, ClientSettings, HttpClient};
use crate::upstream::fault::Faults;
use crate::upstream::Backend;

/// Everything the data plane reads, for one config generation.
pub(crate) struct Snapshot {
    pub(crate) generation: u64,
    pub(crate) config: Arc<Config>,
    pub(crate) routes: RouteTable,
    pub(crate) client: HttpClient,
    client_settings: ClientSettings,
    /// Every backend of the config (health checks, reuse across reloads).
    pub(crate) backends: Vec<Arc<Backend>>,
    pub(crate) server: auto::Builder<TokioExecutor>,
    pub(crate) timeouts: Timeouts,
    /// TLS on the data listener (`listen.tls`).
    pub(crate) listen_tls: Option<TlsAcceptor>,
    /// TLS on the admin listener (`admin.tls`).
    pub(crate) admin_tls: Option<TlsAcceptor>,
    /// What the backends' host names resolved to (`dns.rs`).
    pub(crate) resolved: Arc<crate::dns::Resolved>,
    /// Every TLS file the config names, and a digest of their contents.
    pub(crate) tls_files: Vec<std::path::PathBuf>,
    pub(crate) tls_digest: u64,
}

impl std::fmt::Debug for Snapshot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Snapshot").field("generation", &self.generation).finish_non_exhaustive()
    }
}

/// Why a snapshot could not be built from a valid config.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// A backend address did not resolve.
    #[error("backends.{backend}.addrs: cannot resolve {addr}: {reason}")]
    Resolve {
        /// Backend name.
        backend: String,
        /// The address as written.
        addr: String,
        /// Resolver error.
        reason: String,
    },
    /// Anything else that the validator could not see.
    #[error("{0}")]
    Other(String),
}

impl From<crate::dns::Unresolved> for BuildError {
    fn from(u: crate::dns::Unresolved) -> Self {
        BuildError::Resolve { backend: u.backend, addr: u.addr, reason: u.reason }
    }
}

fn server_builder(cfg: &Config) -> auto::Builder<TokioExecutor> {
    let mut b = auto::Builder::new(TokioExecutor::new());
    // weir keeps the head and idle timers itself (server/conn.rs): hyper's
    // own header_read_timeout (30 s by default once a timer is set) would
    // also close idle keep-alive connections and cost a boxed timer each.
    b.http1()
        .timer(TokioTimer::new())
        .header_read_timeout(None)
        .max_buf_size(cfg.limits.max_header_bytes)
        .max_headers(cfg.limits.max_headers);
    // Envoy's edge recommendations: 100 streams, 64 KiB stream window,
    // 1 MiB connection window, bounded header list.
    b.http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(100)
        .initial_stream_window_size(64 * 1024)
        .initial_connection_window_size(1024 * 1024)
        .max_header_list_size(cfg.limits.max_header_bytes as u32);
    b
}

/// A listener's TLS acceptor (`at`: `listen.tls` or `admin.tls`): the
/// serving one from `old` when its settings are the same (and, the caller
/// checked, so are the certificate files), else built from the files.
fn listener_tls(
    tls: &Option<ServerTls>,
    old: Option<(&Option<ServerTls>, &Option<TlsAcceptor>)>,
    base: Option<&Path>,
    at: &str,
) -> Result<Option<TlsAcceptor>, BuildError> {
    match old {
        Some((old_tls, acceptor)) if old_tls == tls => Ok(acceptor.clone()),
        _ => tls.as_ref().map(|t| crate::tls::acceptor(t, base, at)).transpose().map_err(BuildError::Other),
    }
}

/// A backend's own client, reused from `old` (the same backend in the
/// previous snapshot) when its settings and TLS files are unchanged, so its
/// pool survives reloads.
fn dedicated_client(
    name: &str,
    b: &weir_control::config::Backend,
    settings: ClientSettings,
    base: Option<&Path>,
    old: Option<&Backend>,
) -> Result<Option<(client::Dedicated, u64)>, BuildError> {
    use std::hash::{Hash, Hasher};
    if b.tls.is_none() && !b.http2 {
        return Ok(None);
    }
    let mut h = std::collections::hash_map::DefaultHasher::new();
    (&b.tls, b.http2, settings).hash(&mut h);
    if let Some(t) = &b.tls {
        crate::tls::digest(&crate::tls::backend_files(t, base)).hash(&mut h);
    }
    let key = h.finish();
    if let Some(c) = old.filter(|o| o.client_key == key).and_then(|o| o.client.as_ref()) {
        return Ok(Some((c.clone(), key)));
    }
    let at = format!("backends.{name}.tls");
    let tls = match &b.tls {
        None => None,
        Some(t) => {
            let cc = crate::tls::client_config(t, b.http2, base, &at).map_err(BuildError::Other)?;
            let host = t.server_name.clone().or_else(|| b.addrs.first().map(|a| a.host.clone())).unwrap_or_default();
            let name = rustls_pki_types::ServerName::try_from(host.clone())
                .map_err(|e| BuildError::Other(format!("{at}.server_name: \"{host}\": {e}")))?;
            Some((cc, name))
        }
    };
    Ok(Some((client::build_dedicated(settings, tls, b.http2), key)))
}

/// Builds the snapshot for `cfg`, reusing what `prev` has for unchanged
/// parts, with the backends' host names as `resolved` says
/// ([`crate::dns::resolve_all`]). Relative file names (certificates) are
/// relative to `config_path`'s directory.
pub(crate) fn build(
    cfg: Arc<Config>,
    config_path: Option<&Path>,
    prev: Option<&Snapshot>,
    telemetry: &Telemetry,
    faults: &Faults,
    restored: Option<&Loaded>,
    resolved: crate::dns::Resolved,
) -> Result<(Snapshot, Vec<Event>), BuildError> {
    let config_hash = weir_control::fingerprint(&*cfg);
    let mut events = Vec::new();
    let mut backends: HashMap<&str, Arc<Backend>> = HashMap::new();
    let settings = ClientSettings { connect_timeout: cfg.timeouts.connect, pool_idle: cfg.timeouts.upstream_idle };
    // The snapshot serving now, by name: one lookup per backend and route
    // (a reload of ten thousand routes is not quadratic).
    let old_backends: HashMap<&str, &Backend> =
        prev.map(|p| p.backends.iter().map(|o| (&*o.name, &**o)).collect()).unwrap_or_default();
    let old_routes: HashMap<&str, (&Route, &weir_control::config::Route)> = prev
        .map(|p| p.routes.routes().iter().zip(&p.config.routes).map(|(rt, c)| (&*rt.name, (rt, c))).collect())
        .unwrap_or_default();
    for (name, b) in &cfg.backends {
        let addrs: Vec<SocketAddr> = b.addrs.iter().flat_map(|a| crate::dns::addrs_of(a, &resolved)).collect();
        let old_fault = prev.and_then(|p| p.config.backends.get(name)).and_then(|b| b.fault.as_ref());
        faults.configure(name, old_fault, b.fault.as_ref());
        let old = old_backends.get(name.as_str()).copied();
        let mut backend =
            Backend::new(name, &addrs, faults.slot(name), b.outlier.clone(), old).map_err(BuildError::Other)?;
        backend.version = b.version.as_deref().map(Arc::from);
        if let Some(hc) = &b.health {
            let host = b.tls.as_ref().and_then(|t| t.server_name.clone());
            let host = host.or_else(|| b.addrs.first().map(ToString::to_string)).unwrap_or_default();
            backend = backend.with_health(Some(hc.clone()), &host);
        }
        if let Some((c, key)) = dedicated_client(name, b, settings, config_path, old)? {
            backend = backend.with_client(c, key);
        }
        backends.insert(name.as_str(), Arc::new(backend));
    }

    // A listener's TLS is rebuilt only when its settings or a certificate
    // file changed: a rebuild for anything else (a route, a backend's new
    // DNS answer) keeps its session cache, so clients still resume.
    let tls_files = crate::tls::files(&cfg, config_path);
    let tls_digest = crate::tls::digest(&tls_files);
    let same_files = prev.is_some_and(|p| p.tls_digest == tls_digest);
    let old = |f: fn(&Snapshot) -> (&Option<ServerTls>, &Option<TlsAcceptor>)| prev.map(f).filter(|_| same_files);
    let listen_tls =
        listener_tls(&cfg.listen.tls, old(|p| (&p.config.listen.tls, &p.listen_tls)), config_path, "listen.tls")?;
    let admin_tls =
        listener_tls(&cfg.admin.tls, old(|p| (&p.config.admin.tls, &p.admin_tls)), config_path, "admin.tls")?;

    // A route's live state (weight, stage, rollout engine) is shared with
    // the snapshot serving now: it changes only once nothing else can fail,
    // so that a rejected reload leaves every rollout where it was.
    let mut routes = Vec::with_capacity(cfg.routes.len());
    let mut changes = Vec::with_capacity(cfg.routes.len());
    for r in &cfg.routes {
        let old = prev.and_then(|p| {
            let (old_rt, o) = old_routes.get(r.name.as_str())?;
            Some((old_rt.state.clone(), diff::keeps_route(&p.config, o, &cfg, r)))
        });
        let (state, kept) = old.unwrap_or_else(|| (Arc::new(RouteState::default()), false));
        let ctx = Context::of(&cfg, r, config_hash.clone());
        let change = if kept {
            StateChange::Keep(Box::new(ctx))
        } else {
            let engine = r.rollout.as_ref().map(|ro| {
                let saved = match restored {
                    Some(Loaded::Routes(m)) => Saved::State(m.get(&r.name)),
                    Some(Loaded::Unreadable(why)) => Saved::Unreadable(why),
                    None => Saved::State(None),
                };
                Box::new(start_engine(ro, ctx, saved, prev.is_some()))
            });
            StateChange::Reset(engine)
        };
        let stable = backends[r.stable.as_str()].clone();
        let canary = r.canary.as_deref().map(|c| backends[c].clone());
        let route_telemetry = RouteTelemetry {
            stable: telemetry.stats(&r.name, &r.stable),
            canary: r.canary.as_deref().map(|c| telemetry.stats(&r.name, c)),
            synthetic_stable: telemetry.synthetic_stats(&r.name, &r.stable),
            synthetic_canary: r.canary.as_deref().map(|c| telemetry.synthetic_stats(&r.name, c)),
            shadow_canary: r.canary.as_deref().map(|c| telemetry.shadow_stats(&r.name, c)),
            weight_gauge: telemetry.weight_gauge(&r.name),
        };
        let route = Route::build(r, stable, canary, state.clone(), route_telemetry)
            .map_err(|e| BuildError::Other(format!("routes.{}: {e}", r.name)))?;
        routes.push(route);
        changes.push((state, change));
    }

    // Nothing fails from here on.
    let mut in_use = Vec::new();
    for ((r, route), (state, change)) in cfg.routes.iter().zip(&routes).zip(changes) {
        match change {
            StateChange::Keep(ctx) => {
                if let Some(e) = state.engine().as_mut() {
                    e.relabel(*ctx);
                }
            }
            StateChange::Reset(engine) => {
                reset_state(&state, r);
                *state.engine() = None;
                if let Some(new) = engine {
                    let (engine, ev) = *new;
                    if cfg.fleet.is_some() {
                        // Fleet mode: nothing of the canary before the
                        // fleet's committed state says so, and the
                        // rollout's events are the fleet's.
                        state.serve_stable();
                    } else {
                        state.apply(&engine);
                        events.push(ev);
                    }
                    *state.engine() = Some(engine);
                }
            }
        }
        route.publish_weight();
        let side = |b: Option<&str>| {
            let commit = b.and_then(|b| cfg.release_of(b)).and_then(|r| r.commit.as_deref());
            (b.and_then(|b| cfg.version_of(b)), commit)
        };
        telemetry.set_versions(&r.name, side(Some(&r.stable)), side(r.canary.as_deref()));
        in_use.push((r.name.clone(), r.stable.clone()));
        if let Some(c) = &r.canary {
            in_use.push((r.name.clone(), c.clone()));
        }
    }
    telemetry.retain(&in_use);
    telemetry.set_keep(cfg.telemetry.keep_secs());

    let client = match prev {
        Some(p) if p.client_settings == settings => p.client.clone(),
        _ => client::build(settings),
    };
    let snapshot = Snapshot {
        generation: prev.map_or(1, |p| p.generation + 1),
        listen_tls,
        admin_tls,
        tls_digest,
        resolved: Arc::new(resolved),
        tls_files,
        server: server_builder(&cfg),
        timeouts: cfg.timeouts.clone(),
        routes: RouteTable::new(routes),
        backends: backends.into_values().collect(),
        client,
        client_settings: settings,
        config: cfg,
    };
    Ok((snapshot, events))
}

/// What the state file held at start (`daemon/persist.rs` reads it).
#[derive(Debug)]
pub(crate) enum Loaded {
    /// Each route's saved rollout (none: a first start).
    Routes(HashMap<String, Persisted>),
    /// The file is there but cannot be read or parsed (truncated, corrupt,
    /// empty, unreadable): the reason, with the path. Nobody knows where the
    /// rollouts were, so they start held with the canary at 0
    /// ([`start_engine`]) until an operator resumes them.
    Unreadable(String),
}

/// What the state file says of a route at start.
enum Saved<'a> {
    /// Its saved rollout, if it has one.
    State(Option<&'a Persisted>),
    /// The file could not be read (the reason).
    Unreadable(&'a str),
}

/// A route's new engine: restored from its saved state when that fits the
/// definition and canary version, else at stage 0 (logged when a saved
/// state did not fit, and said in the event after a reload). When the
/// state file could not be read, nobody knows where the rollout was: it
/// starts aborted (the canary at 0), never at a stage's weight, until an
/// operator resumes it.
fn start_engine(
    plan: &weir_control::config::Rollout,
    ctx: Context,
    saved: Saved<'_>,
    reloaded: bool,
) -> (Engine, Event) {
    let saved = match saved {
        Saved::State(saved) => saved,
        Saved::Unreadable(why) => {
            let now = engine_ms();
            let held = weir_control::rollout::State {
                phase: weir_control::rollout::Phase::Aborted,
                stage: 0,
                since_ms: now,
                consecutive_failures: 0,
                verdicts: vec![],
                warmed: false,
                started_ms: now,
            };
            if let Some((engine, mut ev)) = Engine::restore(plan.clone(), ctx.clone(), held, now) {
                ev.cause = format!("{why}: held with the canary at 0 until resumed (weir ctl resume)");
                return (engine, ev);
            }
            None
        }
    };
    let fitting = saved.filter(|p| p.fits(plan, &ctx));
    if saved.is_some() && fitting.is_none() {
        tracing::warn!(route = %ctx.route, "saved rollout state is for another definition or canary version: starting at stage 0");
    }
    let now = engine_ms();
    let (engine, mut ev) = match fitting.and_then(|p| Engine::restore(plan.clone(), ctx.clone(), p.state.clone(), now))
    {
        Some(restored) => restored,
        None => Engine::new(plan.clone(), ctx, now),
    };
    if reloaded {
        ev.cause = "rollout definition or canary version changed: restarting at stage 0".into();
    }
    (engine, ev)
}

/// What a reload does to a route's live state (applied once the build can
/// no longer fail).
enum StateChange {
    /// The same rollout: the engine carries on (under the new config hash,
    /// versions and release metadata).
    Keep(Box<Context>),
    /// Back to where the config says the route starts, with a new engine
    /// (and its first event) if the route has a rollout.
    Reset(Option<Box<(Engine, Event)>>),
}

/// Puts a route's live state where its config says it starts.
fn reset_state(state: &RouteState, r: &weir_control::config::Route) {
    match &r.rollout {
        Some(ro) => {
            state.set_stage(0);
            state.set_weight(ro.stages.first().map_or(Weight::ZERO, |s| s.weight));
        }
        None => {
            state.set_stage(0);
            state.set_weight(r.weight);
        }
    }
}
