//! Backend host names: resolved with a stub resolver that reports TTLs
//! (hickory: `/etc/resolv.conf`, `/etc/hosts`, or `[dns] servers`), each
//! answer kept with the instant it stops being valid, its TTL held between
//! `dns.min_ttl` and `dns.max_ttl`.
//!
//! A config's names are resolved when it is loaded (an answer of the
//! serving snapshot that is still valid is reused); the daemon resolves
//! each name again when its answer runs out (`daemon/resolve.rs`) and
//! rebuilds the snapshot when addresses changed. A name that stops
//! resolving keeps its last addresses, with the error noted.
//!
//! A resolver is built for each round of look-ups and dropped after it, so
//! each answer comes from a query (not a cache) and a changed
//! `/etc/resolv.conf` is read.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use hickory_resolver::config::{ConnectionConfig, NameServerConfig, ResolverConfig, ResolverOpts};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::TokioResolver;
use tokio::time::Instant;
use weir_control::config::{Address, Config, Dns};

/// What a name resolved to.
#[derive(Clone, Debug)]
pub(crate) struct Answer {
    /// The addresses, sorted (the last good ones while `error` is set).
    pub(crate) addrs: Vec<SocketAddr>,
    /// When to resolve the name again.
    pub(crate) valid_until: Instant,
    /// Why the last attempt failed, if it did.
    pub(crate) error: Option<String>,
}

/// A backend's host name that did not resolve, with nothing to fall back on.
#[derive(Debug)]
pub(crate) struct Unresolved {
    /// The backend.
    pub(crate) backend: String,
    /// The address as written.
    pub(crate) addr: String,
    /// The resolver's error.
    pub(crate) reason: String,
}

/// Every host name of a config's backends (IP literals need no answer).
pub(crate) type Resolved = HashMap<Address, Answer>;

/// Whether `a` names a host (not an IP literal).
fn is_name(a: &Address) -> bool {
    a.host.parse::<IpAddr>().is_err()
}

/// The (backend, address) pairs of `cfg` that name hosts.
pub(crate) fn names(cfg: &Config) -> impl Iterator<Item = (&str, &Address)> {
    cfg.backends.iter().flat_map(|(name, b)| b.addrs.iter().filter(|a| is_name(a)).map(move |a| (name.as_str(), a)))
}

/// The addresses `a` stands for: itself, or its answer in `resolved`.
pub(crate) fn addrs_of(a: &Address, resolved: &Resolved) -> Vec<SocketAddr> {
    match a.host.parse::<IpAddr>() {
        Ok(ip) => vec![SocketAddr::new(ip, a.port)],
        Err(_) => resolved.get(a).map(|ans| ans.addrs.clone()).unwrap_or_default(),
    }
}

/// A resolver for one round of look-ups under `dns`.
pub(crate) fn resolver(dns: &Dns) -> Result<TokioResolver, String> {
    let (mut config, mut opts) = match hickory_resolver::system_conf::read_system_conf() {
        Ok(found) => found,
        // No readable /etc/resolv.conf: `servers`, or /etc/hosts alone.
        Err(e) if dns.servers.is_empty() => {
            tracing::debug!("cannot read the system's resolver config: {e}");
            (ResolverConfig::from_parts(None, vec![], vec![]), ResolverOpts::default())
        }
        Err(_) => (ResolverConfig::from_parts(None, vec![], vec![]), ResolverOpts::default()),
    };
    if !dns.servers.is_empty() {
        let on_port = |mut c: ConnectionConfig, port| {
            c.port = port;
            c
        };
        let servers = dns
            .servers
            .iter()
            .map(|s| {
                let both = vec![on_port(ConnectionConfig::udp(), s.port()), on_port(ConnectionConfig::tcp(), s.port())];
                NameServerConfig::new(s.ip(), true, both)
            })
            .collect();
        config = ResolverConfig::from_parts(config.domain.clone(), config.search.clone(), servers);
    }
    // /etc/hosts is read first, by `lookup`.
    opts.use_hosts_file = hickory_resolver::config::ResolveHosts::Never;
    opts.positive_min_ttl = Some(dns.min_ttl);
    opts.positive_max_ttl = Some(dns.max_ttl);
    // A start or a reload waits on the answers: fail within seconds.
    opts.timeout = opts.timeout.min(Duration::from_secs(2));
    opts.attempts = opts.attempts.min(2);
    let mut builder = TokioResolver::builder_with_config(config, TokioRuntimeProvider::default());
    *builder.options_mut() = opts;
    builder.build().map_err(|e| format!("cannot set up the resolver: {e}"))
}

/// `[dns]`'s TTL bounds, made safe for a config built in code (the parser
/// already holds 100 ms <= min_ttl <= max_ttl).
pub(crate) fn ttl_bounds(dns: &Dns) -> (Duration, Duration) {
    let floor = dns.min_ttl.max(Duration::from_millis(100));
    (floor, dns.max_ttl.max(floor))
}

/// What `/etc/hosts` says of `host` as written (its IPv4 and IPv6
/// lines): like getaddrinfo, a name the file knows is not asked of DNS.
fn from_hosts_file(host: &str) -> Vec<IpAddr> {
    use hickory_resolver::proto::op::Query;
    use hickory_resolver::proto::rr::{Name, RecordType};
    let (Ok(hosts), Ok(name)) = (hickory_resolver::Hosts::from_system(), Name::from_utf8(host)) else {
        return Vec::new();
    };
    [RecordType::A, RecordType::AAAA]
        .into_iter()
        .filter_map(|t| hosts.lookup_static_host(&Query::query(name.clone(), t)))
        .flat_map(|found| found.answers().iter().filter_map(|r| r.data.ip_addr()).collect::<Vec<_>>())
        .collect()
}

/// Resolves `a` now: its addresses (sorted) and until when they hold (a
/// name from `/etc/hosts` is read again after `max_ttl`).
pub(crate) async fn lookup(
    resolver: &TokioResolver,
    dns: &Dns,
    a: &Address,
) -> Result<(Vec<SocketAddr>, Instant), String> {
    let listed = from_hosts_file(&a.host);
    if !listed.is_empty() {
        let mut addrs: Vec<SocketAddr> = listed.into_iter().map(|ip| SocketAddr::new(ip, a.port)).collect();
        addrs.sort_unstable();
        addrs.dedup();
        return Ok((addrs, Instant::now() + ttl_bounds(dns).1));
    }
    let found = resolver.lookup_ip(a.host.as_str()).await.map_err(|e| {
        if e.is_nx_domain() {
            "no such name (NXDOMAIN)".to_string()
        } else if e.is_no_records_found() {
            "no address records".to_string()
        } else {
            e.to_string()
        }
    })?;
    let mut addrs: Vec<SocketAddr> = found.iter().map(|ip| SocketAddr::new(ip, a.port)).collect();
    if addrs.is_empty() {
        return Err("no addresses".into());
    }
    addrs.sort_unstable();
    addrs.dedup();
    let (floor, ceiling) = ttl_bounds(dns);
    let now = Instant::now();
    let until = Instant::from_std(found.valid_until()).clamp(now + floor, now + ceiling);
    Ok((addrs, until))
}

/// Resolves every host name of `cfg`'s backends. An answer of `prev` (the
/// serving config and its answers) that is still valid is reused, unless
/// `[dns]` changed; a name that fails keeps `prev`'s addresses, with the
/// error noted, and is an error only when there are none
/// (`backends.NAME.addrs: cannot resolve ...`).
pub(crate) async fn resolve_all(cfg: &Config, prev: Option<(&Config, &Resolved)>) -> Result<Resolved, Unresolved> {
    let mut out = Resolved::new();
    let mut one = None;
    let reuse = prev.is_some_and(|(old, _)| old.dns == cfg.dns);
    let prev = prev.map(|(_, r)| r);
    for (backend, a) in names(cfg) {
        if out.contains_key(a) {
            continue;
        }
        let old = prev.and_then(|p| p.get(a));
        if let Some(old) = old.filter(|o| reuse && o.error.is_none() && o.valid_until > Instant::now()) {
            out.insert(a.clone(), old.clone());
            continue;
        }
        let r = one.get_or_insert_with(|| resolver(&cfg.dns));
        let found = match r {
            Ok(r) => lookup(r, &cfg.dns, a).await,
            Err(e) => Err(e.clone()),
        };
        let answer = match found {
            Ok((addrs, valid_until)) => Answer { addrs, valid_until, error: None },
            Err(e) => match old {
                Some(o) if !o.addrs.is_empty() => {
                    tracing::warn!("backends.{backend}.addrs: cannot resolve {a}: {e}; keeping its last addresses");
                    Answer {
                        addrs: o.addrs.clone(),
                        valid_until: Instant::now() + ttl_bounds(&cfg.dns).0,
                        error: Some(e),
                    }
                }
                _ => return Err(Unresolved { backend: backend.to_string(), addr: a.to_string(), reason: e }),
            },
        };
        out.insert(a.clone(), answer);
    }
    Ok(out)
}
