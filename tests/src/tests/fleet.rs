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

    /// Waits until every live replica serves the same committed revision
    /// and the same weight; returns them.
    async fn agree(&self, timeout: Duration) -> (i64, f64) {
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_canary_failing_only_on_one_replicas_slice_is_rolled_back_on_all() {
    // The canary fails the requests that carry x-fail: only replica 2's
    // clients send it. Replica 2 alone is a third of the evidence.
    let mut f = Fleet::start("slice", Mode::FailWithHeader("x-fail")).await;
    for i in 0..3 {
        f.spawn(i, ROLLOUT, &[0, 1, 2]);
    }
    f.all_at("progressing", 50.0, Duration::from_secs(15)).await;
    for i in 0..2 {
        f.send(i, 40, &[]).await;
    }
    f.send(2, 40, &[("x-fail", "1")]).await;
    f.all_at("rolled_back", 0.0, Duration::from_secs(15)).await;
    let (_, text) = get(&client(), &format!("http://{}/metrics", f.replica(0).admin_addr), &[]).await;
    let m = parse_prometheus(&text);
    assert_eq!(
        crate::sample_sum(&m, "weir_requests_total", &[("backend", "canary"), ("code_class", "5xx")]),
        0.0,
        "replica 0 saw no failure itself: the fleet's evidence rolled it back"
    );
    let trail = audit(f.replica(0)).await;
    assert!(trail.iter().any(|(k, rev)| k == "rolled_back" && *rev > 0), "{trail:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_leader_is_replaced_within_the_ttl_and_the_stage_goes_on_with_its_evidence() {
    let mut f = Fleet::start("failover", Mode::Named).await;
    for i in 0..3 {
        f.spawn(i, ROLLOUT, &[0, 1, 2]);
    }
    f.all_at("progressing", 50.0, Duration::from_secs(15)).await;
    let old = f.leader(Duration::from_secs(5)).await;
    let old_term = f.view(old).await["leader"]["term"].as_i64().unwrap();
    // 10 canary requests on each replica: half of the stage's 60.
    for i in 0..3 {
        f.send(i, 20, &[]).await;
    }
    // Every request folded into the slots (once a second) and reported
    // (every 200 ms), then the leader dies.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let killed = Instant::now();
    f.replica(old).signal("KILL").unwrap();
    f.replicas[old] = None;
    let new = f.leader(Duration::from_secs(10)).await;
    let failover = killed.elapsed();
    let view = f.view(new).await;
    let new_term = view["leader"]["term"].as_i64().unwrap();
    eprintln!("failover: replica r{new} leads (term {new_term}) {failover:?} after r{old} was killed");
    assert_ne!(new, old);
    assert!(new_term > old_term);
    // TTL 2 s + 1 s, with slack for a loaded machine.
    assert!(failover < Duration::from_secs(5), "failover took {failover:?}");
    // Same stage, same weight on the survivors.
    f.all_at("progressing", 50.0, Duration::from_secs(2)).await;
    // 15 more canary requests on each survivor: 50 canary requests
    // among the survivors, 60 with what the dead leader saw.
    for i in f.live() {
        f.send(i, 30, &[]).await;
    }
    f.all_at("progressing", 100.0, Duration::from_secs(15)).await;
    // No transition lost or doubled: one start, one advance, each at its
    // own revision, on every survivor.
    for i in f.live() {
        let trail = audit(f.replica(i)).await;
        let moves: Vec<&(String, i64)> = trail.iter().filter(|(k, _)| k != "evaluated").collect();
        let kinds: Vec<&str> = moves.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(kinds, ["started", "advanced"], "r{i}: {trail:?}");
        let mut revs: Vec<i64> = trail.iter().map(|(_, r)| *r).collect();
        revs.dedup();
        assert_eq!(revs.len(), trail.len(), "r{i}: a revision recorded twice: {trail:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_paused_past_its_ttl_never_writes_after_the_next_term() {
    let mut f = Fleet::start("fenced", Mode::Named).await;
    for i in 0..3 {
        f.spawn(i, ROLLOUT, &[0, 1, 2]);
    }
    f.all_at("progressing", 50.0, Duration::from_secs(15)).await;
    let old = f.leader(Duration::from_secs(5)).await;
    let old_term = f.view(old).await["leader"]["term"].as_i64().unwrap();
    // Evidence keeps coming, so that every leader has decisions to make.
    let loads: Vec<crate::Load> = (0..3)
        .map(|i| crate::Load::start(format!("http://{}/", f.replica(i).data_addr), 1, Duration::from_millis(20)))
        .collect();
    f.replica(old).signal("STOP").unwrap();
    let others: Vec<usize> = (0..3).filter(|&i| i != old).collect();
    let deadline = Instant::now() + Duration::from_secs(10);
    let new_term = loop {
        let v = f.view(others[0]).await;
        let term = v["leader"]["term"].as_i64().unwrap_or_default();
        if term > old_term && v["leader"]["id"] != format!("r{old}") {
            break term;
        }
        assert!(Instant::now() < deadline, "no new leader while r{old} is stopped: {v}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    // The new leader advances the rollout.
    let deadline = Instant::now() + Duration::from_secs(15);
    while route(f.replica(others[0])).await.1 != 100.0 {
        assert!(Instant::now() < deadline, "the new leader did not advance");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The old leader wakes up believing it leads, with decisions due.
    f.replica(old).signal("CONT").unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    for l in loads {
        l.stop().await;
    }
    assert_eq!(f.view(old).await["role"], "follower");
    let history = f.etcd.history("/weir/fleet/fenced/state").await;
    let terms: Vec<i64> = history
        .iter()
        .map(|(_, v)| serde_json::from_slice::<Value>(v).unwrap()["term"].as_i64().unwrap())
        .collect();
    let first_new = terms.iter().position(|t| *t == new_term).expect("the new term committed");
    assert!(
        terms[first_new..].iter().all(|t| *t != old_term),
        "a write of term {old_term} after term {new_term}'s first: {terms:?}"
    );
    // And every replica serves the same revision, the old leader too.
    f.agree(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_etcd_leader_changes_nothing_and_ctl_pause_on_a_follower_pauses_the_fleet() {
    let mut f = Fleet::start("ctl", Mode::Named).await;
    for i in 0..3 {
        f.spawn(i, ROLLOUT, &[0, 1, 2]);
    }
    f.all_at("progressing", 50.0, Duration::from_secs(15)).await;
    let raft = f.etcd.raft_leader().expect("etcd has a leader");
    f.etcd.kill(raft);
    let leader = f.leader(Duration::from_secs(5)).await;
    let follower = (0..3).find(|&i| i != leader).unwrap();
    let out = tokio::process::Command::new(crate::weir_bin())
        .args(["ctl", "pause", "web", "--admin"])
        .arg(format!("http://{}", f.replica(follower).admin_addr))
        .output()
        .await
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    f.all_at("paused", 50.0, Duration::from_secs(3)).await;
    // The pause holds: traffic enough for the stage does not advance it.
    for i in 0..3 {
        f.send(i, 40, &[]).await;
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    f.all_at("paused", 50.0, Duration::from_millis(100)).await;
    let trail = audit(f.replica(leader)).await;
    assert!(trail.iter().any(|(k, rev)| k == "paused" && *rev > 0), "{trail:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_cut_off_from_etcd_falls_to_stable_while_the_fleet_rolls_back() {
    let mut f = Fleet::start("cutoff", Mode::FailWithHeader("x-fail")).await;
    f.spawn(0, ROLLOUT, &[0, 1]);
    f.spawn(1, ROLLOUT, &[0, 1]);
    // Replica 2 talks to etcd member 2 only.
    f.spawn(2, ROLLOUT, &[2]);
    f.all_at("progressing", 50.0, Duration::from_secs(15)).await;
    f.etcd.stop(2);
    let cut = Instant::now();
    // The canary now fails every request, on every replica.
    let loads: Vec<crate::Load> = (0..3)
        .map(|i| crate::Load::start(format!("http://{}/", f.replica(i).data_addr), 1, Duration::from_millis(10)))
        .collect();
    let fleet = &f;
    futures_util::future::join_all((0..3).map(|i| fleet.send(i, 60, &[("x-fail", "1")]))).await;
    // Replicas 0 and 1 roll back as the fleet.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let a = route(f.replica(0)).await;
        let b = route(f.replica(1)).await;
        if a.0 == "rolled_back" && b.0 == "rolled_back" && a.1 == 0.0 && b.1 == 0.0 {
            break;
        }
        assert!(Instant::now() < deadline, "the fleet did not roll back: {a:?} {b:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Replica 2 serves stable within the staleness bound (6 s), sooner
    // through its own severe rule.
    let deadline = cut + Duration::from_secs(6) + Duration::from_secs(3);
    loop {
        let (_, w, _) = route(f.replica(2)).await;
        if w == 0.0 {
            break;
        }
        assert!(Instant::now() < deadline, "replica 2 still serves the canary {:?} after the cut", cut.elapsed());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    eprintln!("replica 2 fell to stable {:?} after losing etcd", cut.elapsed());
    let view = f.view(2).await;
    assert!(view["overrides"]["web"].is_string(), "{view}");
    for l in loads {
        l.stop().await;
    }
    // Back in touch, it serves what the fleet committed.
    f.etcd.cont(2);
    f.all_at("rolled_back", 0.0, Duration::from_secs(10)).await;
    let revs: Vec<i64> = futures_util::future::join_all((0..3).map(|i| f.view(i)))
        .await
        .iter()
        .map(|v| v["applied_revision"].as_i64().unwrap())
        .collect();
    assert!(revs.iter().all(|r| *r == revs[0]), "{revs:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_on_another_config_serves_stable_and_is_not_counted() {
    let mut f = Fleet::start("configs", Mode::Named).await;
    f.spawn(0, ROLLOUT, &[0, 1, 2]);
    f.spawn(1, ROLLOUT, &[0, 1, 2]);
    f.all_at("progressing", 50.0, Duration::from_secs(15)).await;
    // Another rollout definition (a 20 % first stage).
    f.spawn(2, &ROLLOUT.replace("weight = 50", "weight = 20"), &[0, 1, 2]);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let v = f.view(2).await;
        if v["overrides"]["web"].as_str().is_some_and(|r| r.contains("differs")) {
            break;
        }
        assert!(Instant::now() < deadline, "replica 2 does not say why it serves stable: {v}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(route(f.replica(2)).await.1, 0.0);
    // Its traffic all goes to stable, and the fleet advances on the
    // others' alone.
    for i in 0..3 {
        f.send(i, 60, &[]).await;
    }
    let deadline = Instant::now() + Duration::from_secs(15);
    while route(f.replica(0)).await.1 != 100.0 {
        assert!(Instant::now() < deadline, "the fleet did not advance");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(route(f.replica(2)).await.1, 0.0);
    assert_eq!(own_requests(f.replica(2), "canary").await, 0.0);
    let leader = f.leader(Duration::from_secs(2)).await;
    let members = f.view(leader).await["members"].as_array().unwrap().len();
    assert_eq!(members, 3, "replica 2 is a member, only not counted");
}
