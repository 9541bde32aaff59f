//! A fleet of weir replicas for fleet-mode tests and the fleet benchmark:
//! a real 3-member etcd cluster (Debian's `etcd-server`), real weir
//! binaries as replicas, real upstreams, and readers of each replica's
//! admin API.

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::etcd::Etcd;
use crate::{client, config_text, get, parse_prometheus, Mode, Process, Upstream};

/// The rollout most tests run: two stages of 50 % then 100 %, judged on
/// the error rate, evaluated every 200 ms.
pub const ROLLOUT: &str = r#"
[routes.rollout]
interval = "200ms"
stages = [{ weight = 50, bake = "1s", min_requests = 60 }, { weight = 100, bake = "1s" }]
gates = [{ metric = "error_rate", max = 0.1 }]
"#;

/// The tests' short timings: a 2 s lease, 6 s staleness, reports every
/// 200 ms.
pub const SHORT: &str = "lease_ttl = \"2s\"\nstaleness = \"6s\"\nreport_interval = \"200ms\"\ntimeout = \"1s\"\n";

/// A `[fleet]` section with `timings` (TOML keys; empty for the defaults).
pub fn fleet_section(endpoints: &str, name: &str, replica: &str, timings: &str) -> String {
    format!("[fleet]\nendpoints = {endpoints}\nname = \"{name}\"\nreplica = \"{replica}\"\n{timings}")
}

/// A fleet of weir replicas in front of one stable and one canary.
pub struct Fleet {
    /// The etcd cluster.
    pub etcd: Etcd,
    /// The stable upstream.
    pub stable: Upstream,
    /// The canary upstream.
    pub canary: Upstream,
    /// Where the replicas' config files are.
    pub dir: tempfile::TempDir,
    /// The fleet's name.
    pub name: String,
    /// Replica `ri` at index i, `None` once stopped.
    pub replicas: Vec<Option<Process>>,
    /// The `[fleet]` timings replicas spawned from now on get ([`SHORT`]
    /// unless changed).
    pub timings: &'static str,
}

impl Fleet {
    /// Starts a 3-member etcd, a stable upstream and a canary answering as
    /// `canary` says; no replica yet ([`Fleet::spawn`]).
    pub async fn start(name: &str, canary: Mode) -> Fleet {
        let etcd = Etcd::start(3);
        let stable = Upstream::start("stable", Mode::Named).await;
        let canary = Upstream::start("canary", canary).await;
        Fleet {
            etcd,
            stable,
            canary,
            dir: tempfile::tempdir().unwrap(),
            name: name.into(),
            replicas: Vec::new(),
            timings: SHORT,
        }
    }

    /// [`Fleet::start`], then replicas r0, r1 and r2 on [`ROLLOUT`] with
    /// every etcd member, once all three serve its first stage (50 %).
    pub async fn three(name: &str, canary: Mode) -> Fleet {
        let mut f = Fleet::start(name, canary).await;
        for i in 0..3 {
            f.spawn(i, ROLLOUT, &[0, 1, 2]);
        }
        f.all_at("progressing", 50.0, Duration::from_secs(15)).await;
        f
    }

    /// Starts replica `r{i}` on `rollout` talking to the etcd members
    /// `members`.
    pub fn spawn(&mut self, i: usize, rollout: &str, members: &[usize]) {
        let id = format!("r{i}");
        let text = config_text(
            self.stable.addr,
            self.canary.addr,
            rollout,
            &fleet_section(&self.etcd.toml_endpoints(members), &self.name, &id, self.timings),
        );
        let path = self.dir.path().join(format!("{id}.toml"));
        std::fs::write(&path, text).unwrap();
        let p = Process::spawn(&path);
        while self.replicas.len() <= i {
            self.replicas.push(None);
        }
        self.replicas[i] = Some(p);
    }

    /// Replica `ri`, which must be running.
    pub fn replica(&self, i: usize) -> &Process {
        self.replicas[i].as_ref().expect("replica running")
    }

    /// The indexes of the running replicas.
    pub fn live(&self) -> Vec<usize> {
        (0..self.replicas.len()).filter(|&i| self.replicas[i].is_some()).collect()
    }

    /// Replica `ri`'s `GET /api/v1/fleet`.
    pub async fn view(&self, i: usize) -> Value {
        api(self.replica(i), "/api/v1/fleet").await
    }

    /// The index of the replica that says it leads, once exactly one live
    /// replica does.
    pub async fn leader(&self, timeout: Duration) -> usize {
        let deadline = Instant::now() + timeout;
        loop {
            let mut leaders = Vec::new();
            for i in self.live() {
                let v = self.view(i).await;
                if v["role"] == "leader" {
                    leaders.push(i);
                }
            }
            if let [one] = leaders[..] {
                return one;
            }
            assert!(Instant::now() < deadline, "no single leader within {timeout:?}: {leaders:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until every live replica serves `weight` in `phase`.
    pub async fn all_at(&self, phase: &str, weight: f64, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let mut seen = Vec::new();
            for i in self.live() {
                seen.push(route(self.replica(i)).await);
            }
            if seen.iter().all(|(p, w, _)| p == phase && *w == weight) {
                return;
            }
            assert!(Instant::now() < deadline, "not every replica at {phase} {weight}% within {timeout:?}: {seen:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits until every live replica serves the same committed revision
    /// and the same weight; returns them.
    pub async fn agree(&self, timeout: Duration) -> (i64, f64) {
        let deadline = Instant::now() + timeout;
        loop {
            let mut seen = Vec::new();
            for i in self.live() {
                let rev = self.view(i).await["applied_revision"].as_i64().unwrap();
                seen.push((rev, route(self.replica(i)).await.1));
            }
            if seen.iter().all(|s| *s == seen[0]) {
                return seen[0];
            }
            assert!(Instant::now() < deadline, "replicas disagree after {timeout:?}: {seen:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Sends `n` requests to replica `i`, with `headers`.
    pub async fn send(&self, i: usize, n: usize, headers: &[(&str, &str)]) {
        let c = client();
        let url = format!("http://{}/", self.replica(i).data_addr);
        for _ in 0..n {
            get(&c, &url, headers).await;
        }
    }
}

/// GET an admin path as JSON.
pub async fn api(p: &Process, path: &str) -> Value {
    let (status, body) = get(&client(), &format!("http://{}{path}", p.admin_addr), &[]).await;
    assert!(status.is_success(), "{path}: {status} {body}");
    serde_json::from_str(&body).unwrap()
}

/// Route `web` at a replica: (phase, weight, stage).
pub async fn route(p: &Process) -> (String, f64, u64) {
    let v = api(p, "/api/v1/routes").await;
    let r = &v["routes"][0];
    (
        r["rollout"]["state"].as_str().unwrap_or_default().to_string(),
        r["weight"].as_f64().unwrap(),
        r["rollout"]["stage"].as_u64().unwrap_or_default(),
    )
}

/// Requests this replica itself sent to `backend`.
pub async fn own_requests(p: &Process, backend: &str) -> f64 {
    let (_, text) = get(&client(), &format!("http://{}/metrics", p.admin_addr), &[]).await;
    crate::sample_sum(&parse_prometheus(&text), "weir_requests_total", &[("backend", backend)])
}

/// The (kind, revision) of every audit event of a replica.
pub async fn audit(p: &Process) -> Vec<(String, i64)> {
    let v = api(p, "/api/v1/events?route=web").await;
    v["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["kind"].as_str().unwrap().to_string(), e["fleet"]["revision"].as_i64().unwrap_or(-1)))
        .collect()
}
