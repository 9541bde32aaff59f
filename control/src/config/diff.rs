//! What a reload from one config to the next does: the settings it cannot
//! change (they need a restart and keep their running values), and, route
//! by route, whether the live rollout survives it.
//!
//! A route keeps its rollout (engine, stage, weight) only when nothing that
//! defines it changed: the same rollout, the same canary backend and the
//! same canary version. Anything else restarts it at stage 0, because
//! gates passed for one definition or release say nothing about another.

use std::collections::{HashMap, HashSet};

use crate::config::{Config, Route};

/// Settings a reload cannot change: the ones whose values differ between
/// `old` and `new`, as key paths.
pub fn restart_only(old: &Config, new: &Config) -> Vec<&'static str> {
    // The listeners, the connection limit and the log and state files are
    // set up once at start; a certificate reloads, TLS on or off does not.
    [
        ("listen.addr", old.listen.addr != new.listen.addr),
        ("admin.addr", old.admin.addr != new.admin.addr),
        ("ofrep.addr (or ofrep on or off)", old.ofrep.as_ref().map(|o| o.addr) != new.ofrep.as_ref().map(|o| o.addr)),
        ("listen.tls (on or off)", old.listen.tls.is_some() != new.listen.tls.is_some()),
        ("admin.tls (on or off)", old.admin.tls.is_some() != new.admin.tls.is_some()),
        ("limits.max_connections", old.limits.max_connections != new.limits.max_connections),
        ("log.access", old.log.access != new.log.access),
        ("log.audit", old.log.audit != new.log.audit),
        ("log.format", old.log.format != new.log.format),
        ("state.file", old.state.file != new.state.file),
        (
            "tracing (on or off, endpoint, service_name, ca, timeout)",
            old.tracing.as_ref().map(|t| (&t.endpoint, &t.service_name, &t.ca, t.timeout))
                != new.tracing.as_ref().map(|t| (&t.endpoint, &t.service_name, &t.ca, t.timeout)),
        ),
    ]
    .into_iter()
    .filter_map(|(key, changed)| changed.then_some(key))
    .collect()
}

/// What a reload changes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Diff {
    /// Settings that changed but need a restart (see [`restart_only`]).
    pub restart_only: Vec<&'static str>,
    /// One per route of the new config, in its order.
    pub routes: Vec<RouteDiff>,
    /// Routes of the old config that the new one no longer has, in the old
    /// config's order.
    pub removed: Vec<String>,
}

/// What a reload does to one route of the new config.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RouteDiff {
    /// Route name.
    pub name: String,
    /// What happens to its live state.
    pub change: RouteChange,
}

/// What happens to a route's live state across a reload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RouteChange {
    /// A route the old config did not have.
    Added,
    /// Same rollout, canary and canary version: the engine, stage and
    /// weight carry on.
    KeepsRollout,
    /// Anything else (including every route without a rollout): the route
    /// starts afresh from the new config.
    Reset,
}

/// What a reload from `old` to `new` does to each route's live state.
pub fn diff(old: &Config, new: &Config) -> Diff {
    // By name: ten thousand routes are not a quadratic search.
    let olds: HashMap<&str, &Route> = old.routes.iter().map(|r| (r.name.as_str(), r)).collect();
    let news: HashSet<&str> = new.routes.iter().map(|r| r.name.as_str()).collect();
    let routes = new
        .routes
        .iter()
        .map(|r| {
            let change = match olds.get(r.name.as_str()).copied() {
                None => RouteChange::Added,
                Some(o) if keeps_route(old, o, new, r) => RouteChange::KeepsRollout,
                Some(_) => RouteChange::Reset,
            };
            RouteDiff { name: r.name.clone(), change }
        })
        .collect();
    let removed = old.routes.iter().filter(|o| !news.contains(o.name.as_str())).map(|o| o.name.clone()).collect();
    Diff { restart_only: restart_only(old, new), routes, removed }
}

/// Whether route `name` keeps its live rollout (engine, stage, weight)
/// across the reload.
pub fn keeps_rollout(old: &Config, new: &Config, name: &str) -> bool {
    match (route(old, name), route(new, name)) {
        (Some(o), Some(n)) => keeps_route(old, o, new, n),
        _ => false,
    }
}

fn route<'c>(config: &'c Config, name: &str) -> Option<&'c Route> {
    config.routes.iter().find(|r| r.name == name)
}

/// [`keeps_rollout`], for route `o` of `old` and the route of the same
/// name `n` of `new` (found by the caller).
pub fn keeps_route(old: &Config, o: &Route, new: &Config, n: &Route) -> bool {
    n.rollout.is_some() && o.rollout == n.rollout && o.canary == n.canary && old.canary_build(o) == new.canary_build(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse;

    const BASE: &str = r#"
[backends.stable]
addrs = ["127.0.0.1:9001"]
version = "v1"
[backends.canary]
addrs = ["127.0.0.1:9002"]
version = "v2"
[backends.next]
addrs = ["127.0.0.1:9003"]
version = "v2"

[[routes]]
name = "web"
stable = "stable"
canary = "canary"
[routes.rollout]
stages = [{ weight = 10, bake = "1m" }, { weight = 100 }]
gates = [{ metric = "error_rate", max = 0.01 }]

[[routes]]
name = "static"
match = { path_prefix = "/static" }
stable = "stable"
canary = "canary"
weight = 5
"#;

    fn config(src: &str) -> Config {
        match parse(src) {
            Ok(c) => c,
            Err(e) => panic!("test config does not parse: {e}\n{src}"),
        }
    }

    /// BASE with `from` replaced by `to` (which must be there).
    fn edited(from: &str, to: &str) -> Config {
        assert!(BASE.contains(from), "{from:?} is not in BASE");
        config(&BASE.replacen(from, to, 1))
    }

    fn change(d: &Diff, name: &str) -> RouteChange {
        match d.routes.iter().find(|r| r.name == name) {
            Some(r) => r.change,
            None => panic!("no route {name} in {d:?}"),
        }
    }

    #[test]
    fn version_of_reads_the_backend_label() {
        let c = config(BASE);
        assert_eq!(c.version_of("canary"), Some("v2"));
        assert_eq!(c.version_of("nowhere"), None);
        let unlabelled = edited("version = \"v1\"\n", "");
        assert_eq!(unlabelled.version_of("stable"), None);
    }

    #[test]
    fn an_unchanged_rollout_is_kept_and_a_static_route_reset() {
        let old = config(BASE);
        // A change elsewhere (a timeout) does not touch the rollout.
        let new = config(&format!("{BASE}[timeouts]\nconnect = \"2s\"\n"));
        for new in [&old, &new] {
            let d = diff(&old, new);
            assert_eq!(
                d.routes,
                [
                    RouteDiff { name: "web".into(), change: RouteChange::KeepsRollout },
                    RouteDiff { name: "static".into(), change: RouteChange::Reset },
                ]
            );
            assert!(d.removed.is_empty() && d.restart_only.is_empty(), "{d:?}");
            assert!(keeps_rollout(&old, new, "web"));
            assert!(!keeps_rollout(&old, new, "static"));
        }
    }

    #[test]
    fn anything_that_defines_the_rollout_resets_it() {
        let old = config(BASE);
        for (what, new) in [
            ("rollout changed", edited("bake = \"1m\"", "bake = \"2m\"")),
            ("gates changed", edited("max = 0.01", "max = 0.02")),
            // Same version label, another backend: still another canary.
            ("canary renamed", edited("canary = \"canary\"\n[routes.rollout]", "canary = \"next\"\n[routes.rollout]")),
            ("canary version bumped", edited("version = \"v2\"", "version = \"v3\"")),
            ("canary version dropped", edited("version = \"v2\"\n", "")),
            (
                "rollout removed",
                edited(
                    "[routes.rollout]\nstages = [{ weight = 10, bake = \"1m\" }, { weight = 100 }]\ngates = [{ metric = \"error_rate\", max = 0.01 }]\n",
                    "",
                ),
            ),
        ] {
            assert_eq!(change(&diff(&old, &new), "web"), RouteChange::Reset, "{what}");
            assert!(!keeps_rollout(&old, &new, "web"), "{what}");
        }
        // Issue 21, bug 8: a canary without a version label is known by its
        // addresses: a new build there (new addresses) is a new canary, and
        // the same addresses keep the rollout.
        let unlabelled = edited("addrs = [\"127.0.0.1:9002\"]\nversion = \"v2\"\n", "addrs = [\"127.0.0.1:9002\"]\n");
        let moved = edited("addrs = [\"127.0.0.1:9002\"]\nversion = \"v2\"\n", "addrs = [\"127.0.0.1:9012\"]\n");
        assert!(!keeps_rollout(&unlabelled, &moved, "web"), "unlabelled canary at new addresses");
        assert!(keeps_rollout(&unlabelled, &unlabelled.clone(), "web"));
        assert_ne!(unlabelled.canary_build(&unlabelled.routes[0]), moved.canary_build(&moved.routes[0]));
        // A rollout added to a route that had none is a reset too.
        let new = config(BASE);
        let old = edited(
            "[routes.rollout]\nstages = [{ weight = 10, bake = \"1m\" }, { weight = 100 }]\ngates = [{ metric = \"error_rate\", max = 0.01 }]\n",
            "",
        );
        assert_eq!(change(&diff(&old, &new), "web"), RouteChange::Reset);
    }

    #[test]
    fn added_and_removed_routes() {
        let old = config(BASE);
        let new = edited("name = \"static\"", "name = \"assets\"");
        let d = diff(&old, &new);
        assert_eq!(
            d.routes,
            [
                RouteDiff { name: "web".into(), change: RouteChange::KeepsRollout },
                RouteDiff { name: "assets".into(), change: RouteChange::Added },
            ]
        );
        assert_eq!(d.removed, ["static"]);
        assert!(!keeps_rollout(&old, &new, "assets"));
        assert!(!keeps_rollout(&old, &new, "static"));
        assert!(!keeps_rollout(&old, &new, "nowhere"));
    }

    #[test]
    fn every_restart_only_key_is_detected() {
        let old = config(BASE);
        assert!(restart_only(&old, &old).is_empty());
        assert!(restart_only(&old, &config(BASE)).is_empty());
        let cases = [
            ("listen.addr", "[listen]\naddr = \"127.0.0.1:8081\"\n"),
            ("admin.addr", "[admin]\naddr = \"127.0.0.1:9902\"\n"),
            ("ofrep.addr (or ofrep on or off)", "[ofrep]\naddr = \"127.0.0.1:9903\"\n"),
            ("listen.tls (on or off)", "[listen]\ntls = { cert = \"a.pem\", key = \"a.key\" }\n"),
            ("admin.tls (on or off)", "[admin]\ntls = { cert = \"a.pem\", key = \"a.key\" }\n"),
            ("limits.max_connections", "[limits]\nmax_connections = 5\n"),
            ("log.access", "[log]\naccess = \"stdout\"\n"),
            ("log.audit", "[log]\naudit = \"stdout\"\n"),
            ("state.file", "[state]\nfile = \"state.json\"\n"),
            (
                "tracing (on or off, endpoint, service_name, ca, timeout)",
                "[tracing]\nendpoint = \"http://127.0.0.1:4318\"\n",
            ),
        ];
        for (key, extra) in cases {
            let new = config(&format!("{BASE}{extra}"));
            assert_eq!(restart_only(&old, &new), [key], "{extra}");
            assert_eq!(diff(&old, &new).restart_only, [key]);
            // Back again is a change too.
            assert_eq!(restart_only(&new, &old), [key]);
        }
        // All at once: every key, in the documented order.
        let all = config(&format!(
            "{BASE}{}",
            r#"
[listen]
addr = "127.0.0.1:8081"
tls = { cert = "a.pem", key = "a.key" }
[admin]
addr = "127.0.0.1:9902"
tls = { cert = "a.pem", key = "a.key" }
[limits]
max_connections = 5
[log]
access = "stdout"
audit = "stdout"
[state]
file = "state.json"
[ofrep]
addr = "127.0.0.1:9903"
[tracing]
endpoint = "http://127.0.0.1:4318"
"#
        ));
        assert_eq!(restart_only(&old, &all), cases.map(|(key, _)| key));
        // Other certificates while TLS stays on reload without a restart.
        let on = config(&format!("{BASE}[listen]\ntls = {{ cert = \"a.pem\", key = \"a.key\" }}\n"));
        let other = config(&format!("{BASE}[listen]\ntls = {{ cert = \"b.pem\", key = \"b.key\" }}\n"));
        assert!(restart_only(&on, &other).is_empty());
        // Settings that reload are not listed.
        let reloads = config(&format!("{BASE}[limits]\nmax_headers = 50\n[telemetry]\nwindow_max = \"10m\"\n"));
        assert!(restart_only(&old, &reloads).is_empty());
        // The sampling settings reload.
        let t = |extra: &str| config(&format!("{BASE}[tracing]\nendpoint = \"http://127.0.0.1:4318\"\n{extra}"));
        assert!(
            restart_only(&t(""), &t("sample_ratio = 0.5\ncanary_errors = false\nfollow_caller = false\n")).is_empty()
        );
    }
}
