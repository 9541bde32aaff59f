//! Fleet mode end to end: a real 3-member etcd cluster (Debian's
//! `etcd-server`), real weir binaries as replicas, real upstreams and
//! clients. Built with `--features fleet` (`.ci/run`).

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::fleet::{audit, own_requests, route, Fleet, ROLLOUT};
use crate::{client, get, parse_prometheus, sample, Mode};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fleet_pools_its_evidence_and_every_replica_serves_each_commit() {
    // Nothing of the canary before the fleet's first commit; then 50 % on
    // every replica.
    let f = Fleet::three("pool", Mode::Named).await;
    let leader = f.leader(Duration::from_secs(5)).await;

    // 40 requests on each replica: 20 canary each at 50 %, 60 in all, the
    // stage's min_requests. No replica alone has reached it.
    for i in 0..3 {
        f.send(i, 40, &[]).await;
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    // Every replica's applied revision and weight, every 10 ms, until all
    // serve stage 1.
    let mut first_seen: Vec<Option<Instant>> = vec![None; 3];
    let target = loop {
        let mut all = true;
        for (i, seen) in first_seen.iter_mut().enumerate() {
            let (_, w, stage) = route(f.replica(i)).await;
            if stage == 1 && w == 100.0 {
                seen.get_or_insert_with(Instant::now);
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
    let f = Fleet::three("slice", Mode::FailWithHeader("x-fail")).await;
    // The failing slice is a follower's: the leader must see it in the
    // pooled reports, not in its own traffic.
    let leader = f.leader(Duration::from_secs(5)).await;
    let failing = (0..3).find(|&i| i != leader).unwrap();
    let healthy: Vec<usize> = (0..3).filter(|&i| i != failing).collect();
    for &i in &healthy {
        f.send(i, 40, &[]).await;
    }
    f.send(failing, 40, &[("x-fail", "1")]).await;
    f.all_at("rolled_back", 0.0, Duration::from_secs(15)).await;
    let (_, text) = get(&client(), &format!("http://{}/metrics", f.replica(leader).admin_addr), &[]).await;
    let m = parse_prometheus(&text);
    assert_eq!(
        crate::sample_sum(&m, "weir_requests_total", &[("backend", "canary"), ("code_class", "5xx")]),
        0.0,
        "the leader saw no failure itself: the fleet's evidence rolled it back"
    );
    let trail = audit(f.replica(healthy[1])).await;
    assert!(trail.iter().any(|(k, rev)| k == "rolled_back" && *rev > 0), "{trail:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_leader_is_replaced_within_the_ttl_and_the_stage_goes_on_with_its_evidence() {
    let mut f = Fleet::three("failover", Mode::Named).await;
    let old = f.leader(Duration::from_secs(5)).await;
    let old_term = f.view(old).await["leader"]["term"].as_i64().unwrap();
    // 10 canary requests on each replica: half of the stage's 60.
    for i in 0..3 {
        f.send(i, 20, &[]).await;
    }
    // Every request folded into the slots (once a second) and reported
    // (every 200 ms), as the leader reads the reports; then it dies.
    let mut sent = 0.0;
    for i in 0..3 {
        sent += own_requests(f.replica(i), "canary").await;
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let v = f.view(old).await;
        let canary: u64 =
            v["members"].as_array().unwrap().iter().filter_map(|m| m["window"]["web"]["canary"].as_u64()).sum();
        if canary as f64 == sent {
            break;
        }
        assert!(Instant::now() < deadline, "the reports never held the {sent} canary requests: {v}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
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
    let f = Fleet::three("fenced", Mode::Named).await;
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
    let terms: Vec<i64> =
        history.iter().map(|(_, v)| serde_json::from_slice::<Value>(v).unwrap()["term"].as_i64().unwrap()).collect();
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
    let mut f = Fleet::three("ctl", Mode::Named).await;
    let before = f.agree(Duration::from_secs(5)).await;
    let raft = f.etcd.raft_leader().expect("etcd has a leader");
    f.etcd.kill(raft);
    let leader = f.leader(Duration::from_secs(5)).await;
    // Nothing moved: same committed revision and weight everywhere, no
    // replica serving stable on its own.
    assert_eq!(f.agree(Duration::from_secs(5)).await, before);
    for i in 0..3 {
        assert_eq!(f.view(i).await["overrides"], serde_json::json!({}), "r{i}");
    }
    let follower = (0..3).find(|&i| i != leader).unwrap();
    ctl(&f, follower, "pause").await;
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
    // A staleness far beyond the test: only the local severe rule can take
    // the cut-off replica to stable in time.
    f.timings = "lease_ttl = \"2s\"\nstaleness = \"60s\"\nreport_interval = \"200ms\"\ntimeout = \"1s\"\n";
    f.spawn(0, ROLLOUT, &[0, 1]);
    f.spawn(1, ROLLOUT, &[0, 1]);
    // Replica 2 talks to etcd member 2 only.
    f.spawn(2, ROLLOUT, &[2]);
    f.all_at("progressing", 50.0, Duration::from_secs(15)).await;
    f.etcd.stop(2);
    let cut = Instant::now();
    // The canary now fails every request, on every replica.
    let loads: Vec<crate::Load> = (0..2)
        .map(|i| crate::Load::start(format!("http://{}/", f.replica(i).data_addr), 1, Duration::from_millis(10)))
        .collect();
    let fleet = &f;
    futures_util::future::join_all((0..3).map(|i| fleet.send(i, 60, &[("x-fail", "1")]))).await;
    // Replica 2's clients go on failing on the canary while they get it.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let failing = {
        let (stop, url) = (stop.clone(), format!("http://{}/", f.replica(2).data_addr));
        tokio::spawn(async move {
            let c = client();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                get(&c, &url, &[("x-fail", "1")]).await;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };
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
    // Replica 2 serves stable through its own severe rule, once out of
    // touch for the lease's TTL (2 s), long before the staleness (60 s).
    let deadline = cut + Duration::from_secs(2) + Duration::from_secs(8);
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
    assert!(view["overrides"]["web"].as_str().is_some_and(|r| r.contains("severe breach")), "{view}");
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    failing.await.unwrap();
    for l in loads {
        l.stop().await;
    }
    // Back in touch, it serves what the fleet committed, and tells the
    // fleet what it did meanwhile.
    f.etcd.cont(2);
    f.all_at("rolled_back", 0.0, Duration::from_secs(10)).await;
    let leader = f.leader(Duration::from_secs(5)).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let v = f.view(leader).await;
        let r2 = v["members"].as_array().unwrap().iter().find(|m| m["id"] == "r2").cloned().unwrap_or_default();
        let past = &r2["past_overrides"]["web"];
        if past["reason"].as_str().is_some_and(|r| r.contains("severe breach"))
            && r2["overrides"] == serde_json::json!({})
        {
            assert!(past["until_ms"].as_u64().unwrap() > past["from_ms"].as_u64().unwrap(), "{past}");
            break;
        }
        assert!(Instant::now() < deadline, "the leader never heard what r2 did: {v}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
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

    // What an operator sees on replica 2: `weir ctl fleet` and the
    // dashboard both name the leader, every member, and why replica 2
    // serves stable.
    let out = tokio::process::Command::new(crate::weir_bin())
        .args(["ctl", "fleet", "--admin"])
        .arg(format!("http://{}", f.replica(2).admin_addr))
        .output()
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}{}", String::from_utf8_lossy(&out.stderr));
    let role = if leader == 2 { "leader" } else { "follower" };
    assert!(text.starts_with(&format!("fleet configs: replica r2 ({role}), leader r{leader} (term ")), "{text}");
    assert!(text.contains("this replica serves stable on web: its rollout definition or canary differs"), "{text}");
    for i in 0..3 {
        let lead = if i == leader { " *" } else { "" };
        assert!(text.lines().any(|l| l.starts_with(&format!("r{i}{lead} "))), "member r{i} missing: {text}");
    }
    let mut b = crate::browser::Browser::launch().await;
    b.navigate(&format!("http://{}/", f.replica(2).admin_addr)).await;
    b.wait_for("document.querySelectorAll('#fleet tr[data-member]').length === 3", Duration::from_secs(15)).await;
    assert_eq!(b.eval("document.getElementById('fleet').hidden").await, false);
    // Each member's share of the requests it reported: all of them add up.
    let shares =
        b.eval("[...document.querySelectorAll('#fleet td[data-field=share]')].map(t => t.textContent).join(',')").await;
    let shares: Vec<&str> = shares.as_str().unwrap().split(',').collect();
    assert_eq!(shares.len(), 3, "{shares:?}");
    if shares.iter().all(|s| s.ends_with('%')) {
        let sum: f64 = shares.iter().map(|s| s.trim_end_matches('%').parse::<f64>().unwrap()).sum();
        assert!((98.0..=102.0).contains(&sum), "{shares:?}");
    } else {
        assert!(shares.iter().all(|s| *s == "–"), "no requests reported, no shares: {shares:?}");
    }
    let marked = b.eval("document.querySelector('#fleet td.leader')?.textContent").await;
    assert!(marked.as_str().is_some_and(|t| t.starts_with(&format!("r{leader} (leader)"))), "{marked}");
    let card = b.eval("document.getElementById('fleet').textContent").await;
    let card = card.as_str().unwrap();
    assert!(card.contains("fleet configs") && card.contains("replica r2"), "{card}");
    assert!(card.contains("this replica serves stable on web"), "{card}");
    // The decisions in the audit trail carry the term and revision.
    b.wait_for("document.getElementById('events').textContent.includes('revision')", Duration::from_secs(5)).await;
}

/// A replica that starts (or reconnects) after etcd compacted past the
/// committed state's own revision (an idle rollout, the members' reports
/// moving the store on) watches from the store's revision: its watch is
/// not cancelled, over and over, for a revision that is gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_starting_after_a_compaction_follows_the_state_with_one_watch() {
    let mut f = Fleet::start("compacted", Mode::Named).await;
    for i in 0..2 {
        f.spawn(i, ROLLOUT, &[0, 1, 2]);
    }
    f.all_at("progressing", 50.0, Duration::from_secs(15)).await;
    // Paused, the rollout commits nothing more: the state keeps its
    // revision while the members' reports move the store on.
    ctl(&f, 0, "pause").await;
    f.all_at("paused", 50.0, Duration::from_secs(5)).await;
    let state = format!("/weir/fleet/{}/state", f.name);
    let committed = mod_revision(&f, &state).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    let compacted = loop {
        let rev = f.etcd.compact().await;
        if rev > committed + 5 {
            break rev;
        }
        assert!(Instant::now() < deadline, "the store stays at {rev}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    f.spawn(2, ROLLOUT, &[0, 1, 2]);
    f.all_at("paused", 50.0, Duration::from_secs(10)).await;
    assert_eq!(mod_revision(&f, &state).await, committed, "the state moved: no compaction to test");
    // The next commit reaches it through its watch.
    ctl(&f, 0, "resume").await;
    f.all_at("progressing", 50.0, Duration::from_secs(5)).await;
    let log = f.replica(2).log.lock().unwrap().join("\n");
    let refused = log.lines().filter(|l| l.contains("the watch was cancelled") || l.contains("cannot watch")).count();
    assert_eq!(refused, 0, "compacted at {compacted}, state at {committed}:\n{log}");
}

/// The revision `key` was last written at.
async fn mod_revision(f: &Fleet, key: &str) -> i64 {
    f.etcd.client().await.get(key, None).await.unwrap().kvs()[0].mod_revision()
}

/// `weir ctl ACTION web` on replica `i`.
async fn ctl(f: &Fleet, i: usize, action: &str) {
    let out = tokio::process::Command::new(crate::weir_bin())
        .args(["ctl", action, "web", "--admin"])
        .arg(format!("http://{}", f.replica(i).admin_addr))
        .output()
        .await
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

/// A leader whose config stops fitting the committed rollout (it reloaded
/// first in a rolling config change) hands over to one that fits: it could
/// not tick the rollout, which would stay at its weight unwatched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_reloaded_onto_another_config_hands_over_and_the_rollout_goes_on() {
    let f = Fleet::three("handover", Mode::Named).await;
    let old = f.leader(Duration::from_secs(5)).await;
    let path = f.dir.path().join(format!("r{old}.toml"));
    let text = std::fs::read_to_string(&path).unwrap().replace("weight = 50", "weight = 20");
    crate::write_atomically(&path, &text).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let new = loop {
        let v = f.view(old).await;
        if v["role"] == "follower" && v["fits"] == false {
            if let Some(id) = v["leader"]["id"].as_str().filter(|id| *id != format!("r{old}")) {
                break id[1..].parse::<usize>().unwrap();
            }
        }
        assert!(Instant::now() < deadline, "r{old} still leads on another config: {v}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(f.leader(Duration::from_secs(5)).await, new);
    assert_eq!(route(f.replica(old)).await.1, 0.0, "r{old} serves stable");
    // The committed rollout goes on under the new leader: the two others'
    // traffic advances it.
    for i in (0..3).filter(|&i| i != old) {
        f.send(i, 70, &[]).await;
    }
    let deadline = Instant::now() + Duration::from_secs(15);
    while route(f.replica(new)).await.1 != 100.0 {
        assert!(Instant::now() < deadline, "the rollout did not go on: {:?}", route(f.replica(new)).await);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(f.view(old).await["role"], "follower", "the unfit replica did not lead again");
}

#[test]
fn the_kubernetes_fleet_example_passes_a_strict_schema_validator() {
    // The fleet overlay as `kubectl apply -k` would send it (kubectl's own
    // kustomize), less the Prometheus Operator kinds the validator has no
    // schema for (scripts/validate-k8s.sh checks those against their CRDs).
    let overlay = crate::workspace().join("config").join("k8s").join("overlays").join("fleet");
    let built = std::process::Command::new("kubectl")
        .arg("kustomize")
        .arg(&overlay)
        .output()
        .expect("kubectl (Debian package kubectl) must be installed: .ci/run installs it");
    assert!(built.status.success(), "kubectl kustomize: {}", String::from_utf8_lossy(&built.stderr));
    let yaml = String::from_utf8(built.stdout).unwrap();
    let core: Vec<&str> =
        yaml.split("\n---\n").filter(|doc| !doc.contains("apiVersion: monitoring.coreos.com/")).collect();
    let mut child = std::process::Command::new("kubernetes-validate")
        .args(["--strict", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("kubernetes-validate (PyPI) must be installed: .ci/run installs it");
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), core.join("\n---\n").as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{text}");
    assert!(!text.contains("WARN"), "{text}");
    for kind in ["deployment/web", "statefulset/etcd", "poddisruptionbudget/etcd", "service/etcd"] {
        assert!(text.contains(&format!("passed for resource {kind}")), "{kind} not validated: {text}");
    }
    // The sidecars run in fleet mode against that etcd.
    let cfg = weir_control::config::parse(&std::fs::read_to_string(overlay.join("weir.toml")).unwrap()).unwrap();
    let fleet = cfg.fleet.expect("config/k8s/overlays/fleet/weir.toml runs in fleet mode");
    assert!(fleet.endpoints.iter().all(|e| e.contains(".etcd:2379")), "{:?}", fleet.endpoints);
    assert!(yaml.contains("replicas: 3") && yaml.contains("serviceName: etcd"));
}
