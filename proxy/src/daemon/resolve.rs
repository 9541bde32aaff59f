//! Following DNS: each backend host name is resolved again when its answer
//! runs out (`crate::dns`), and the snapshot is rebuilt when an address set
//! changed (`reload::follow_dns`): requests in flight finish on the
//! snapshot they loaded, and addresses that stay keep their endpoints
//! (pooled connections, in-flight counts, ejections, health).
//!
//! A name that stops resolving keeps its last addresses: it is logged once
//! (and when it resolves again), counted in `weir_dns_failures_total`, shown
//! by `GET /api/v1/backends`, and tried again every `dns.min_ttl`.

use std::collections::HashMap;
use std::sync::Arc;

use tokio::sync::watch;
use tokio::time::Instant;
use weir_control::config::Address;

use super::context::Daemon;
use super::reload::follow_dns;
use crate::dns::{self, Answer};
use crate::snapshot::Snapshot;

/// Re-resolves names as they run out, until shutdown.
pub(crate) async fn run(daemon: Arc<Daemon>, mut shutdown: watch::Receiver<bool>) {
    let mut generation = 0;
    // When each name is due, as this task knows it (a refresh that found
    // the same addresses moves it without a rebuild).
    let mut due: HashMap<Address, Instant> = HashMap::new();
    let mut reloads = daemon.dp.reloads();
    loop {
        let snap = daemon.dp.load_full();
        if snap.generation != generation {
            generation = snap.generation;
            due = snap.resolved.iter().map(|(a, ans)| (a.clone(), ans.valid_until)).collect();
            // The counter exists from the start, so that an alert on its
            // increase sees the first failure.
            for (backend, _) in dns::names(&snap.config) {
                let _ = daemon.dp.telemetry.dns_failures(backend);
            }
        }
        let first = due.values().copied().min();
        let wait = async {
            match first {
                Some(t) => tokio::time::sleep_until(t).await,
                // No names: nothing to do before a reload.
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = shutdown.changed() => return,
            // A reload resolved its names: start again from its answers.
            _ = reloads.changed() => continue,
            () = wait => {}
        }
        // A slow or silent name server does not hold a shutdown up.
        let next = tokio::select! {
            _ = shutdown.changed() => return,
            next = refresh(&daemon, &snap, &mut due) => next,
        };
        if let Some(next) = next {
            // A new generation: `due` is taken from it on the next turn.
            // (Not built: the next refresh of these names tries again.)
            let _ = follow_dns(&daemon, generation, next).await;
        }
    }
}

/// Resolves the names of `snap` that are due; the answers to serve if
/// addresses (or a name's error) changed.
async fn refresh(daemon: &Daemon, snap: &Snapshot, due: &mut HashMap<Address, Instant>) -> Option<dns::Resolved> {
    let now = Instant::now();
    let names: Vec<Address> = due.iter().filter(|(_, t)| **t <= now).map(|(a, _)| a.clone()).collect();
    if names.is_empty() {
        return None;
    }
    let cfg = &snap.config;
    let mut next = (*snap.resolved).clone();
    let mut changed = false;
    let resolver = dns::resolver(&cfg.dns);
    for a in names {
        let found = match &resolver {
            Ok(r) => dns::lookup(r, &cfg.dns, &a).await,
            Err(e) => Err(e.clone()),
        };
        let backends = || dns::names(cfg).filter(|(_, n)| **n == a).map(|(b, _)| b);
        let old = next.get(&a).cloned();
        let answer = match found {
            Ok((addrs, valid_until)) => {
                match &old {
                    Some(o) if o.addrs == addrs && o.error.is_none() => {}
                    Some(o) => {
                        changed = true;
                        for b in backends() {
                            if o.error.is_some() {
                                tracing::info!("backends.{b}.addrs: {a} resolves again: {addrs:?}");
                            } else {
                                tracing::info!("backends.{b}.addrs: {a} now resolves to {addrs:?} (was {:?})", o.addrs);
                            }
                        }
                    }
                    None => changed = true,
                }
                Answer { addrs, valid_until, error: None }
            }
            Err(e) => {
                let last = old.as_ref().map(|o| o.addrs.clone()).unwrap_or_default();
                let first = old.as_ref().is_none_or(|o| o.error.is_none());
                for b in backends() {
                    daemon.dp.telemetry.dns_failures(b).increment(1);
                    if first {
                        tracing::warn!(
                            "backends.{b}.addrs: cannot resolve {a}: {e}; keeping its last addresses {last:?}"
                        );
                    }
                }
                // The error shows in the API once; its repeats only count.
                changed |= first;
                Answer { addrs: last, valid_until: Instant::now() + dns::ttl_bounds(&cfg.dns).0, error: Some(e) }
            }
        };
        due.insert(a.clone(), answer.valid_until);
        next.insert(a, answer);
    }
    // The snapshot to come carries when each name is due as this task
    // knows it (not the stale times of answers refreshed unchanged).
    for (a, ans) in &mut next {
        if let Some(t) = due.get(a) {
            ans.valid_until = *t;
        }
    }
    changed.then_some(next)
}
