//! Rollouts that are over but still in the config: what `weir check`
//! points out (warnings, never errors) so that finished releases are
//! cleaned up rather than left to surprise the next one.

use super::{Context, Phase, StateFile};
use crate::config::Config;
use crate::split::Weight;

/// A finished rollout older than this is worth a warning.
pub const STALE_MS: u64 = 24 * 3600 * 1000;

/// `(key, why)` for each finished-but-configured case of `cfg`, with the
/// rollouts' persisted state (`state.file`) if there is one, at `now_ms`.
pub fn warnings(cfg: &Config, state: Option<&StateFile>, now_ms: u64) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for (i, r) in cfg.routes.iter().enumerate() {
        let Some(canary) = r.canary.as_deref() else { continue };
        if let (Some(s), Some(c)) = (cfg.version_of(&r.stable), cfg.version_of(canary)) {
            if s == c {
                out.push((
                    format!("routes[{i}].canary"),
                    format!(
                        "stable and canary are the same release ({s}): nothing is being rolled out \
                         (point canary at the next release, or remove it)"
                    ),
                ));
            }
        }
        if r.rollout.is_none() && r.weight == Weight::FULL {
            out.push((
                format!("routes[{i}].weight"),
                "the canary takes all traffic: make it the stable backend and remove the canary".to_string(),
            ));
        }
        let (Some(plan), Some(file)) = (&r.rollout, state) else { continue };
        let Some(saved) = file.routes.get(&r.name) else { continue };
        if !saved.fits(plan, &Context::of(cfg, r, String::new())) {
            continue; // a new rollout starts on this config
        }
        let st = &saved.state;
        let days = now_ms.saturating_sub(st.since_ms) as f64 / (24.0 * 3600.0 * 1000.0);
        let old = now_ms.saturating_sub(st.since_ms) >= STALE_MS;
        match st.phase {
            Phase::Promoted if old => out.push((
                format!("routes[{i}].rollout"),
                format!(
                    "promoted {days:.1} days ago and still configured: make \"{canary}\" the stable backend \
                     and remove the canary and its rollout"
                ),
            )),
            Phase::RolledBack | Phase::Aborted if old => out.push((
                format!("routes[{i}].rollout"),
                format!(
                    "{} {days:.1} days ago and still configured: remove the canary, or ship a new version",
                    if st.phase == Phase::RolledBack { "rolled back" } else { "aborted" }
                ),
            )),
            _ => {}
        }
        if st.phase == Phase::Promoted && r.force.is_some() {
            out.push((
                format!("routes[{i}].force"),
                "the rollout is promoted: the rule's \"always\" changes nothing any more, and its \"never\" keeps \
                 opted-out users on the old release"
                    .to_string(),
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse;
    use crate::rollout::{Engine, Persisted};

    const DAY: u64 = 24 * 3600 * 1000;

    fn config(canary_version: &str, extra: &str) -> Config {
        parse(&format!(
            "[backends.s]\naddrs = [\"127.0.0.1:1\"]\nversion = \"v1\"\n[backends.c]\naddrs = [\"127.0.0.1:2\"]\nversion = \"{canary_version}\"\n\
             [[routes]]\nname = \"web\"\nstable = \"s\"\ncanary = \"c\"\n{extra}"
        ))
        .unwrap()
    }

    const ROLLOUT: &str = "force = { header = \"x-canary\" }\n[routes.rollout]\nstages = [{ weight = 10 }, { weight = 100 }]\ngates = [{ metric = \"error_rate\", max = 0.05 }]\n";

    /// The state file of `cfg`'s route, promoted (or left progressing) at `at`.
    fn saved(cfg: &Config, at: u64, promote: bool) -> StateFile {
        let r = &cfg.routes[0];
        let (mut e, _) = Engine::new(r.rollout.clone().unwrap(), Context::of(cfg, r, String::new()), at);
        if promote {
            e.promote(at, true).unwrap();
        }
        StateFile { routes: [(r.name.clone(), Persisted::of(&e))].into_iter().collect() }
    }

    #[test]
    fn finished_rollouts_left_in_the_config_are_named() {
        let cfg = config("v2", ROLLOUT);
        let keys = |w: Vec<(String, String)>| w.into_iter().map(|(k, _)| k).collect::<Vec<_>>();
        // Promoted two days ago: the rollout, and the force rule that routes nothing more.
        let w = warnings(&cfg, Some(&saved(&cfg, DAY, true)), 3 * DAY);
        assert_eq!(keys(w.clone()), ["routes[0].rollout", "routes[0].force"], "{w:?}");
        assert!(w[0].1.starts_with("promoted 2.0 days ago"), "{w:?}");
        // Promoted an hour ago: only the force rule; progressing: nothing.
        assert_eq!(keys(warnings(&cfg, Some(&saved(&cfg, DAY, true)), DAY + 3_600_000)), ["routes[0].force"]);
        assert!(warnings(&cfg, Some(&saved(&cfg, DAY, false)), 30 * DAY).is_empty());
        // A state of another canary build is a rollout about to start: nothing.
        let next = config("v3", ROLLOUT);
        assert!(warnings(&next, Some(&saved(&cfg, DAY, true)), 30 * DAY).is_empty());
        // Without a state file only what the config says.
        assert!(warnings(&cfg, None, 30 * DAY).is_empty());
        let same = config("v1", ROLLOUT);
        assert_eq!(keys(warnings(&same, None, 0)), ["routes[0].canary"]);
        let all = config("v2", "weight = 100\n");
        assert_eq!(keys(warnings(&all, None, 0)), ["routes[0].weight"]);
    }
}
