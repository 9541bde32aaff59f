//! Fleet mode end to end: a real 3-member etcd cluster (Debian's
//! `etcd-server`), real weir binaries as replicas, real upstreams and
//! clients. Built with `--features fleet` (`.ci/run`).

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::etcd::Etcd;
use crate::{client, config_text, get, parse_prometheus, sample, Mode, Process, Upstream};

/// The rollout most tests run: two stages of 50 % then 100 %, judged on
/// the error rate, evaluated every 200 ms.
const ROLLOUT: &str = r#"
[routes.rollout]
interval = "200ms"
stages = [{ weight = 50, bake = "1s", min_requests = 60 }, { weight = 100, bake = "1s" }]
gates = [{ metric = "error_rate", max = 0.05 }]
"#;

/// Short timings: a 2 s lease, 6 s staleness, reports every 200 ms.
fn fleet_section(endpoints: &str, name: &str, replica: &str) -> String {
    format!(
        "[fleet]\nendpoints = {endpoints}\nname = \"{name}\"\nreplica = \"{replica}\"\nlease_ttl = \"2s\"\n\
         staleness = \"6s\"\nreport_interval = \"200ms\"\ntimeout = \"1s\"\n"
    )
}

/// A fleet of weir replicas in front of one stable and one canary.
struct Fleet {
    etcd: Etcd,
    stable: Upstream,
    canary: Upstream,
    dir: tempfile::TempDir,
    name: String,
    replicas: Vec<Option<Process>>,
}

impl Fleet {
    async fn start(name: &str, canary: Mode) -> Fleet {
        let etcd = Etcd::start(3);
        let stable = Upstream::start("stable", Mode::Named).await;
        let canary = Upstream::start("canary", canary).await;
        Fleet { etcd, stable, canary, dir: tempfile::tempdir().unwrap(), name: name.into(), replicas: Vec::new() }
    }

    /// Starts replica `r{i}` on `rollout` talking to the etcd members
    /// `members`.
    fn spawn(&mut self, i: usize, rollout: &str, members: &[usize]) {
        let id = format!("r{i}");
        let text = config_text(
            self.stable.addr,
            self.canary.addr,
            rollout,
            &fleet_section(&self.etcd.toml_endpoints(members), &self.name, &id),
        );
        let path = self.dir.path().join(format!("{id}.toml"));
        std::fs::write(&path, text).unwrap();
        let p = Process::spawn(&path);
        while self.replicas.len() <= i {
            self.replicas.push(None);
        }
        self.replicas[i] = Some(p);
    }

    fn replica(&self, i: usize) -> &Process {
        self.replicas[i].as_ref().expect("replica running")
    }

    fn live(&self) -> Vec<usize> {
        (0..self.replicas.len()).filter(|&i| self.replicas[i].is_some()).collect()
    }

    async fn view(&self, i: usize) -> Value {
        api(self.replica(i), "/api/v1/fleet").await
    }

    /// The index of the replica that says it leads, once one does and
    /// every other live replica agrees.
    async fn leader(&self, timeout: Duration) -> usize {
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
    async fn all_at(&self, phase: &str, weight: f64, timeout: Duration) {
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

    /// Sends `n` requests to replica `i`, with `headers`.
    async fn send(&self, i: usize, n: usize, headers: &[(&str, &str)]) {
        let c = client();
        let url = format!("http://{}/", self.replica(i).data_addr);
        for _ in 0..n {
            get(&c, &url, headers).await;
        }
    }
}

/// GET an admin path as JSON.
async fn api(p: &Process, path: &str) -> Value {
    let (status, body) = get(&client(), &format!("http://{}{path}", p.admin_addr), &[]).await;
    assert!(status.is_success(), "{path}: {status} {body}");
    serde_json::from_str(&body).unwrap()
}

/// Route `web` at a replica: (phase, weight, stage).
async fn route(p: &Process) -> (String, f64, u64) {
    let v = api(p, "/api/v1/routes").await;
    let r = &v["routes"][0];
    (
        r["rollout"]["state"].as_str().unwrap_or_default().to_string(),
        r["weight"].as_f64().unwrap(),
        r["rollout"]["stage"].as_u64().unwrap_or_default(),
    )
}

/// Requests this replica itself sent to `backend`.
async fn own_requests(p: &Process, backend: &str) -> f64 {
    let (_, text) = get(&client(), &format!("http://{}/metrics", p.admin_addr), &[]).await;
    crate::sample_sum(&parse_prometheus(&text), "weir_requests_total", &[("backend", backend)])
}

/// The (kind, revision) of every audit event of a replica.
async fn audit(p: &Process) -> Vec<(String, i64)> {
    let v = api(p, "/api/v1/events?route=web").await;
    v["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["kind"].as_str().unwrap().to_string(), e["fleet"]["revision"].as_i64().unwrap_or(-1)))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fleet_pools_its_evidence_and_every_replica_serves_each_commit() {
    let mut f = Fleet::start("pool", Mode::Named).await;
    for i in 0..3 {
        f.spawn(i, ROLLOUT, &[0, 1, 2]);
    }
    // Nothing of the canary before the fleet's first commit; then 50 % on
    // every replica.
    f.all_at("progressing", 50.0, Duration::from_secs(15)).await;
    let leader = f.leader(Duration::from_secs(5)).await;

    // 40 requests on each replica: 20 canary each at 50 %, 60 in all, the
    // stage's min_requests. No replica alone has reached it.
    for i in 0..3 {
        f.send(i, 40, &[]).await;
    }
    let mut revisions = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    // Every replica's applied revision and weight, every 10 ms, until all
    // serve stage 1.
    let mut first_seen: Vec<Option<Instant>> = vec![None; 3];
    let target = loop {
        let mut all = true;
        for i in 0..3 {
            let (_, w, stage) = route(f.replica(i)).await;
            if stage == 1 && w == 100.0 {
                first_seen[i].get_or_insert_with(Instant::now);
            } else {
                all = false;
            }
        }
        if all {
            let v: Vec<i64> = futures_util::future::join_all((0..3).map(|i| f.view(i)))
                .await
                .iter()
                .map(|v| v["applied_revision"].as_i64().unwrap())
                .collect();
            revisions.push(v.clone());
            if v.iter().all(|r| *r == v[0]) {
                break v[0];
            }
        }
        assert!(Instant::now() < deadline, "stage 1 not reached everywhere: {:?}", first_seen);
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert!(target > 0);
    for i in 0..3 {
        let own = own_requests(f.replica(i), "canary").await;
        assert!(own < 60.0, "replica {i} saw {own} canary requests itself: the stage needed the fleet's");
    }
    let seen: Vec<Instant> = first_seen.iter().map(|t| t.unwrap()).collect();
    let spread = seen.iter().max().unwrap().duration_since(*seen.iter().min().unwrap());
    eprintln!("stage 1: all replicas serve it within {spread:?} of each other (revision {target})");
    assert!(spread < Duration::from_secs(1), "replicas disagreed for {spread:?}");

    // The last stage: as much traffic again (the error-rate gate's bound
    // needs it), the bake, then promoted everywhere.
    for i in 0..3 {
        f.send(i, 40, &[]).await;
    }
    f.all_at("promoted", 100.0, Duration::from_secs(15)).await;
    // Every replica recorded the same decisions, once each, stamped with
    // the revision that committed them.
    let trails = futures_util::future::join_all((0..3).map(|i| audit(f.replica(i)))).await;
    let kinds: Vec<&str> = trails[leader].iter().map(|(k, _)| k.as_str()).filter(|k| *k != "evaluated").collect();
    assert_eq!(kinds, ["started", "advanced", "promoted"], "{:?}", trails[leader]);
    for t in &trails {
        assert_eq!(t, &trails[leader]);
        assert!(t.iter().all(|(_, rev)| *rev > 0));
    }
    // The apply lag every replica measured.
    for i in 0..3 {
        let (_, text) = get(&client(), &format!("http://{}/metrics", f.replica(i).admin_addr), &[]).await;
        let m = parse_prometheus(&text);
        assert!(sample(&m, "weir_fleet_apply_lag_seconds_count", &[]) >= 3.0);
        assert_eq!(sample(&m, "weir_fleet_leader", &[]), if i == leader { 1.0 } else { 0.0 });
        assert_eq!(sample(&m, "weir_fleet_members", &[]), 3.0);
    }
}
