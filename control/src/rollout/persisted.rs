//! The rollout state as persisted in `state.file`, so that a restart
//! resumes every rollout where it was.
//!
//! A saved state is only restored into the rollout it was saved from: the
//! same definition (by fingerprint) and the same canary version. Anything
//! else starts at stage 0, because a stage reached with one definition or
//! release proves nothing about another. Writing the file atomically is the
//! proxy's job; this module owns its format, which must stay readable
//! across versions (field names are the format: do not rename them).

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use super::{Engine, State};
use crate::config::Rollout;

/// A route's rollout as persisted in the state file.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Persisted {
    /// Fingerprint of the rollout definition it belongs to
    /// ([`crate::fingerprint`] of the route's [`Rollout`]).
    pub rollout: String,
    /// Canary version it was rolling out.
    pub canary_version: Option<String>,
    /// What identified the canary's build ([`super::Context::canary_build`];
    /// absent in files written before it was kept).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary: Option<String>,
    /// The engine state.
    pub state: State,
}

impl Persisted {
    /// The persisted form of a running rollout.
    pub fn of(engine: &Engine) -> Persisted {
        Persisted {
            rollout: crate::fingerprint(engine.plan()),
            canary_version: engine.context().canary_version.clone(),
            canary: engine.context().canary_build.clone(),
            state: engine.state().clone(),
        }
    }

    /// Whether this state belongs to `rollout` rolling out the canary of
    /// `ctx` (same version, same build) and may be restored into it.
    pub fn fits(&self, rollout: &Rollout, ctx: &super::Context) -> bool {
        self.rollout == crate::fingerprint(rollout)
            && self.canary_version == ctx.canary_version
            && self.canary.as_ref().is_none_or(|b| ctx.canary_build.as_ref() == Some(b))
    }
}

/// The whole state file: every route's persisted rollout, by route name.
#[derive(Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct StateFile {
    /// Persisted rollouts by route name.
    pub routes: HashMap<String, Persisted>,
}

impl StateFile {
    /// The file's bytes: pretty JSON, so that an operator can read it.
    pub fn to_json(&self) -> Result<Vec<u8>, serde_json::Error> {
        serde_json::to_vec_pretty(self)
    }

    /// Reads a file written by [`StateFile::to_json`] (by this or an earlier
    /// version).
    pub fn from_json(bytes: &[u8]) -> Result<StateFile, serde_json::Error> {
        serde_json::from_slice(bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gate::Verdict;
    use crate::rollout::{Context, Phase};

    /// A file as the proxy writes it today (one route, so the map's order
    /// is fixed).
    const TODAY: &str = r#"{
  "routes": {
    "web": {
      "rollout": "0123456789abcdef",
      "canary_version": "v2",
      "state": {
        "phase": "paused",
        "stage": 1,
        "since_ms": 1700000000000,
        "consecutive_failures": 0,
        "verdicts": [
          {
            "gate": "error_rate",
            "verdict": "pass",
            "value": 0.001,
            "stable_value": null,
            "threshold": 0.01,
            "p_value": null,
            "canary_samples": 120,
            "stable_samples": 900
          }
        ]
      }
    }
  }
}"#;

    fn rollout(bake: &str) -> Rollout {
        let src = format!(
            "[backends.s]\naddrs = [\"127.0.0.1:1\"]\n[backends.c]\naddrs = [\"127.0.0.1:2\"]\nversion = \"v2\"\n\
             [[routes]]\nname = \"web\"\nstable = \"s\"\ncanary = \"c\"\n\
             [routes.rollout]\nstages = [{{ weight = 10, bake = \"{bake}\" }}, {{ weight = 100 }}]\n\
             gates = [{{ metric = \"error_rate\", max = 0.01 }}]\n"
        );
        match crate::config::parse(&src).map(|mut c| c.routes.remove(0).rollout) {
            Ok(Some(r)) => r,
            other => panic!("test rollout: {other:?}"),
        }
    }

    fn engine(plan: Rollout) -> Engine {
        let ctx = Context {
            route: "web".into(),
            stable_version: None,
            canary_version: Some("v2".into()),
            canary_build: Some("v2".into()),
            config_hash: "h".into(),
            ..Default::default()
        };
        Engine::new(plan, ctx, 5_000).0
    }

    #[test]
    fn of_takes_the_fingerprint_version_and_state() {
        let e = engine(rollout("1m"));
        let p = Persisted::of(&e);
        assert_eq!(p.rollout, crate::fingerprint(e.plan()));
        assert_eq!(p.canary_version.as_deref(), Some("v2"));
        assert_eq!(&p.state, e.state());
        assert_eq!((p.state.phase, p.state.stage, p.state.since_ms), (Phase::Progressing, 0, 5_000));
    }

    #[test]
    fn fits_only_the_same_definition_and_canary_version() {
        let p = Persisted::of(&engine(rollout("1m")));
        let ctx = |version: Option<&str>, build: Option<&str>| Context {
            route: "web".into(),
            stable_version: None,
            canary_version: version.map(Into::into),
            canary_build: build.map(Into::into),
            config_hash: "h".into(),
            ..Default::default()
        };
        assert!(p.fits(&rollout("1m"), &ctx(Some("v2"), Some("v2"))));
        assert!(!p.fits(&rollout("2m"), &ctx(Some("v2"), Some("v2"))), "definition changed");
        assert!(!p.fits(&rollout("1m"), &ctx(Some("v3"), Some("v3"))), "canary version changed");
        assert!(!p.fits(&rollout("1m"), &ctx(None, None)), "canary version dropped");
        // Issue 21, bug 8: a build without a version label is known by its
        // addresses: new addresses are a new canary.
        let unlabelled = |build: &str| {
            let mut e = engine(rollout("1m"));
            e.ctx.canary_version = None;
            e.ctx.canary_build = Some(build.into());
            Persisted::of(&e)
        };
        assert!(unlabelled("addrs 1").fits(&rollout("1m"), &ctx(None, Some("addrs 1"))));
        assert!(!unlabelled("addrs 1").fits(&rollout("1m"), &ctx(None, Some("addrs 2"))));
        // A file from before builds were kept restores on the version alone.
        let mut old = p.clone();
        old.canary = None;
        assert!(old.fits(&rollout("1m"), &ctx(Some("v2"), Some("v2"))));
    }

    #[test]
    fn json_round_trip() {
        let mut file = StateFile::default();
        file.routes.insert("web".into(), Persisted::of(&engine(rollout("1m"))));
        let mut other = Persisted::of(&engine(rollout("2m")));
        other.canary_version = None;
        other.state.phase = Phase::RolledBack;
        file.routes.insert("api".into(), other);
        let bytes = file.to_json().unwrap();
        assert_eq!(StateFile::from_json(&bytes).unwrap(), file);
        assert_eq!(StateFile::from_json(&StateFile::default().to_json().unwrap()).unwrap(), StateFile::default());
        assert!(StateFile::from_json(b"{\"routes\": 5}").is_err());
        assert!(StateFile::from_json(b"not json").is_err());
    }

    #[test]
    fn a_file_in_todays_format_parses_and_is_written_the_same() {
        let file = StateFile::from_json(TODAY.as_bytes()).unwrap();
        let p = &file.routes["web"];
        assert_eq!((p.rollout.as_str(), p.canary_version.as_deref()), ("0123456789abcdef", Some("v2")));
        let s = &p.state;
        assert_eq!((s.phase, s.stage, s.since_ms, s.consecutive_failures), (Phase::Paused, 1, 1_700_000_000_000, 0));
        assert_eq!(s.verdicts.len(), 1);
        assert_eq!((s.verdicts[0].gate.as_str(), s.verdicts[0].verdict), ("error_rate", Verdict::Pass));
        assert_eq!((s.verdicts[0].value, s.verdicts[0].stable_value), (Some(0.001), None));
        assert_eq!((s.verdicts[0].canary_samples, s.verdicts[0].stable_samples), (120, 900));
        assert_eq!(String::from_utf8(file.to_json().unwrap()).unwrap(), TODAY);
    }
}
