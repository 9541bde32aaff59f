//! The gate engine end to end: real upstreams, real load, real decisions.

use std::time::Duration;

use weir_control::rollout::{EventKind, Phase};
use weir_proxy::ManualAction;

use crate::*;

fn rollout(stages: &str, gates: &str, extra: &str) -> String {
    format!("sticky = {{ header = \"x-user-id\" }}\n[routes.rollout]\ninterval = \"250ms\"\nstages = [{stages}]\ngates = [{gates}]\n{extra}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthy_canary_promotes_through_three_stages() {
    let stable = Upstream::start("stable", Mode::Named).await;
    let canary = Upstream::start("canary", Mode::Named).await;
    let r = rollout(
        "{ weight = 10, bake = \"2s\", min_requests = 10 }, { weight = 50, bake = \"2s\" }, { weight = 100, bake = \"2s\" }",
        "{ metric = \"error_rate\", max = 0.05, min_samples = 10 }, { metric = \"latency_p99\", max = \"1s\", min_samples = 10 }",
        "",
    );
    let w = InProcess::start(&config_text(stable.addr, canary.addr, &r, "")).await;
    let mut rx = w.weir.subscribe();
    assert_eq!(w.weir.route_weight_bp("web"), Some(1000));
    let load = Load::start(w.url("/"), 4, Duration::from_millis(5));
    let promoted = wait_event(&mut rx, Duration::from_secs(20), |e| e.kind == EventKind::Promoted).await;
    load.stop().await;
    assert_eq!(w.weir.route_weight_bp("web"), Some(10_000));
    let kinds: Vec<(EventKind, f64)> = w
        .weir
        .events(Some("web"))
        .iter()
        .filter(|e| e.kind != EventKind::Evaluated)
        .map(|e| (e.kind, e.weight))
        .collect();
    assert_eq!(
        kinds,
        vec![
            (EventKind::Started, 10.0),
            (EventKind::Advanced, 50.0),
            (EventKind::Advanced, 100.0),
            (EventKind::Promoted, 100.0)
        ]
    );
    // Every stage baked for its 2 s.
    let started = w.weir.events(Some("web"))[0].at_ms;
    assert!(promoted.at_ms - started >= 6000, "{}", promoted.at_ms - started);
    assert!(promoted.verdicts.iter().all(|v| v.verdict == weir_control::gate::Verdict::Pass), "{promoted:?}");
    assert!(canary.count() > 0 && stable.count() > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_canary_failing_30_percent_is_at_weight_zero_within_3_seconds() {
    let stable = Upstream::start("stable", Mode::Named).await;
    let canary = Upstream::start("canary", Mode::FailTenths(3)).await;
    let r = rollout(
        "{ weight = 20, bake = \"30s\" }, { weight = 100, bake = \"30s\" }",
        "{ metric = \"error_rate\", max = 0.05, min_samples = 20 }",
        "failure_threshold = 2",
    )
    .replace("interval = \"250ms\"", "interval = \"500ms\"");
    let w = InProcess::start(&config_text(stable.addr, canary.addr, &r, "")).await;
    let mut rx = w.weir.subscribe();
    // First exposure: when user traffic starts reaching the canary.
    let started = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64;
    let load = Load::start(w.url("/"), 8, Duration::ZERO);
    let rb = wait_event(&mut rx, Duration::from_secs(10), |e| e.kind == EventKind::RolledBack).await;
    assert_eq!(w.weir.route_weight_bp("web"), Some(0), "weight 0 in the same tick");
    let took = rb.at_ms - started;
    load.stop().await;
    assert!(took <= 3000, "rolled back after {took} ms");
    let v = &rb.verdicts[0];
    assert_eq!(v.verdict, weir_control::gate::Verdict::Fail);
    assert!(v.value.unwrap() > 0.2 && v.canary_samples >= 20, "{v:?}");
    // The rolled-back version is not retried by itself.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(w.weir.rollout("web").unwrap().phase, Phase::RolledBack);
    let m = parse_prometheus(&get(&client(), &format!("http://{}/metrics", w.weir.admin_addr()), &[]).await.1);
    assert_eq!(sample(&m, "weir_rollbacks_total", &[("route", "web")]), 1.0);
    assert_eq!(sample(&m, "weir_rollout_state", &[("route", "web"), ("state", "rolled_back")]), 1.0);
    assert_eq!(sample(&m, "weir_canary_weight", &[("route", "web")]), 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slower_canary_fails_the_latency_ratio_gate() {
    let stable = Upstream::start("stable", Mode::Named).await;
    let canary = Upstream::start("canary", Mode::Delay(Duration::from_millis(200))).await;
    let r = rollout(
        "{ weight = 50, bake = \"30s\" }, { weight = 100 }",
        "{ metric = \"latency_p99\", max_ratio_to_stable = 1.25, max_delta_to_stable = \"5ms\", min_samples = 10 }",
        "",
    );
    let w = InProcess::start(&config_text(stable.addr, canary.addr, &r, "")).await;
    let mut rx = w.weir.subscribe();
    let load = Load::start(w.url("/"), 8, Duration::ZERO);
    let rb = wait_event(&mut rx, Duration::from_secs(15), |e| e.kind == EventKind::RolledBack).await;
    load.stop().await;
    let v = &rb.verdicts[0];
    assert_eq!((v.gate.as_str(), v.verdict), ("latency_p99", weir_control::gate::Verdict::Fail));
    assert!(v.value.unwrap() >= 0.2 && v.stable_value.unwrap() < 0.05, "{v:?}");
    assert!(rb.cause.contains("latency_p99"), "{}", rb.cause);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn too_little_traffic_stays_inconclusive_and_never_promotes() {
    let stable = Upstream::start("stable", Mode::Named).await;
    let canary = Upstream::start("canary", Mode::Named).await;
    let r = rollout(
        "{ weight = 50, bake = \"1s\" }, { weight = 100 }",
        "{ metric = \"error_rate\", max = 0.05, min_samples = 50 }",
        "hold_timeout = \"3s\"",
    );
    let w = InProcess::start(&config_text(stable.addr, canary.addr, &r, "")).await;
    let mut rx = w.weir.subscribe();
    let c = client();
    for _ in 0..10 {
        assert_eq!(get(&c, &w.url("/"), &[]).await.0, 200);
    }
    let held = wait_event(&mut rx, Duration::from_secs(10), |e| e.kind != EventKind::Evaluated).await;
    assert_eq!(held.kind, EventKind::Paused, "{held:?}");
    assert!(held.cause.contains("no decision"), "{}", held.cause);
    assert_eq!(held.verdicts[0].verdict, weir_control::gate::Verdict::Inconclusive);
    assert!(w.weir.events(Some("web")).iter().all(|e| e.kind != EventKind::Advanced && e.kind != EventKind::Promoted));
    assert_eq!(w.weir.route_weight_bp("web"), Some(5000));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_mid_rollout_resumes_at_the_same_stage() {
    let stable = Upstream::start("stable", Mode::Named).await;
    let canary = Upstream::start("canary", Mode::Named).await;
    let r = rollout(
        "{ weight = 5, bake = \"10m\" }, { weight = 25, bake = \"10m\" }, { weight = 100 }",
        "{ metric = \"error_rate\", max = 0.05 }",
        "",
    );
    let text = config_text(
        stable.addr,
        canary.addr,
        &r,
        "[state]\nfile = \"weir-state.json\"\n[log]\naudit = \"audit.jsonl\"",
    );
    let first = InProcess::start(&text).await;
    let ev = first.weir.act("web", ManualAction::Promote).await.unwrap();
    assert_eq!((ev.kind, ev.stage, ev.actor), (EventKind::Advanced, 1, weir_control::rollout::Actor::Manual));
    let dir = first.dir;
    let path = first.path;
    assert!(dir.path().join("weir-state.json").exists());
    first.weir.shutdown().await;

    let cfg = weir_proxy::reload::read_config(&path).unwrap();
    let second = weir_proxy::Weir::start(cfg, Some(path.clone())).await.unwrap();
    let st = second.rollout("web").unwrap();
    assert_eq!((st.phase, st.stage), (Phase::Progressing, 1));
    assert_eq!(second.route_weight_bp("web"), Some(2500));
    assert_eq!(second.events(Some("web"))[0].kind, EventKind::Restored);
    // The audit file holds both lives as JSON lines.
    let audit = std::fs::read_to_string(dir.path().join("audit.jsonl")).unwrap();
    let kinds: Vec<String> = audit
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["kind"].as_str().unwrap().to_string())
        .filter(|k| k != "evaluated")
        .collect();
    assert_eq!(kinds, vec!["started", "advanced", "restored"]);

    // A new canary version restarts at stage 0 (logged as an event).
    std::fs::write(&path, std::fs::read_to_string(&path).unwrap().replace("version = \"v2\"", "version = \"v3\""))
        .unwrap();
    second.reload().await.unwrap();
    let st = second.rollout("web").unwrap();
    assert_eq!((st.phase, st.stage), (Phase::Progressing, 0));
    // The restart is audited (an evaluation may follow it at any moment).
    let events = second.events(Some("web"));
    let restart = events.iter().rev().find(|e| e.kind == EventKind::Started).unwrap();
    assert!(restart.cause.contains("restarting at stage 0"), "{restart:?}");
    second.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_pre_stage_webhook_holds_the_stage() {
    let stable = Upstream::start("stable", Mode::Named).await;
    let canary = Upstream::start("canary", Mode::Named).await;
    let hook = Upstream::start("hook", Mode::Status(503)).await;
    let notify = Upstream::start("notify", Mode::Named).await;
    let r = rollout(
        "{ weight = 20, bake = \"500ms\" }, { weight = 100 }",
        // A gate that passes on the load: a stage with no gate to pass is
        // never ready (no evidence), so the hook would not be asked.
        "{ metric = \"error_rate\", max = 0.05, min_samples = 10 }",
        &format!("pre_stage = \"http://{}/approve\"\nnotify = \"http://{}/events\"", hook.addr, notify.addr),
    );
    let w = InProcess::start(&config_text(stable.addr, canary.addr, &r, "")).await;
    let mut rx = w.weir.subscribe();
    let load = Load::start(w.url("/"), 2, Duration::from_millis(10));
    let held = wait_event(&mut rx, Duration::from_secs(10), |e| e.kind == EventKind::Held).await;
    assert!(held.cause.contains("503"), "{}", held.cause);
    // Asked again each interval, still held.
    wait_event(&mut rx, Duration::from_secs(5), |e| e.kind == EventKind::Held).await;
    load.stop().await;
    assert_eq!(w.weir.rollout("web").unwrap().stage, 0);
    assert_eq!(w.weir.route_weight_bp("web"), Some(2000));
    assert!(hook.count() >= 2);
    let seen = hook.seen.lock().unwrap()[0].clone();
    assert_eq!(seen.path, "/approve");
    // The notify webhook received the transitions (here: the start).
    assert!(notify.count() >= 1);
}

/// Issue 21, bug 10: the `pre_stage` webhook was awaited inside the loop
/// over routes, so a hook that does not answer held every other route's
/// gates (the severe rule too) for its whole timeout, tick after tick. It
/// runs in a task of its own now.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_pre_stage_webhook_does_not_hold_other_routes() {
    let stable = Upstream::start("stable", Mode::Named).await;
    let canary = Upstream::start("canary", Mode::Named).await;
    let broken = Upstream::start("broken", Mode::Status(500)).await;
    let hook = Upstream::start("hook", Mode::Hang).await;
    let text = format!(
        r#"
[listen]
addr = "127.0.0.1:0"
[admin]
addr = "127.0.0.1:0"
[backends.stable]
addrs = ["{stable}"]
[backends.canary]
addrs = ["{canary}"]
[backends.broken]
addrs = ["{broken}"]

[[routes]]
name = "bad"
match = {{ path_prefix = "/bad" }}
stable = "stable"
canary = "broken"
[routes.rollout]
interval = "250ms"
stages = [{{ weight = 50, bake = "10m" }}, {{ weight = 100 }}]
gates = [{{ metric = "error_rate", max = 0.05, min_samples = 10 }}]

[[routes]]
name = "web"
stable = "stable"
canary = "canary"
[routes.rollout]
interval = "250ms"
pre_stage = "http://{hook}/approve"
webhook_timeout = "20s"
stages = [{{ weight = 20, bake = "500ms" }}, {{ weight = 100 }}]
gates = [{{ metric = "error_rate", max = 0.05, min_samples = 10 }}]
"#,
        stable = stable.addr,
        canary = canary.addr,
        broken = broken.addr,
        hook = hook.addr,
    );
    let w = InProcess::start(&text).await;
    let mut rx = w.weir.subscribe();
    let load = Load::start(w.url("/"), 2, Duration::from_millis(10));
    // The web route's stage is ready: its hook is asked, and never answers.
    let asked = std::time::Instant::now();
    while hook.count() == 0 {
        assert!(asked.elapsed() < Duration::from_secs(10), "the pre_stage hook was never asked");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Meanwhile the bad route's canary fails every request: it is rolled
    // back at its own pace, not after the hook's 20 s.
    let bad = Load::start(w.url("/bad/x"), 2, Duration::from_millis(10));
    let ev = wait_event(&mut rx, Duration::from_secs(8), |e| e.route == "bad" && e.kind == EventKind::RolledBack).await;
    assert!(ev.cause.contains("severe"), "{}", ev.cause);
    bad.stop().await;
    load.stop().await;
    assert_eq!(w.weir.rollout("web").unwrap().stage, 0, "no answer, no advance");
}

/// Issue 21: a hung canary answers nothing, so its completed requests
/// never show it: the gates waited for `timeouts.upstream_response` (30 s)
/// to turn its requests into failures. Requests unanswered for ten times
/// stable's p99 (at least 1 s) count as failed now.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_canary_is_rolled_back_before_its_requests_time_out() {
    let stable = Upstream::start("stable", Mode::Named).await;
    let canary = Upstream::start("canary", Mode::Hang).await;
    let r = rollout(
        "{ weight = 50, bake = \"10m\" }, { weight = 100 }",
        "{ metric = \"error_rate\", max = 0.05, min_samples = 10 }",
        "",
    );
    // The canary's requests time out after 8 s: the rollback must come
    // well before (the clients then wait out that timeout, not 30 s).
    let top = "[timeouts]\nupstream_response = \"8s\"";
    let w = InProcess::start(&config_text(stable.addr, canary.addr, &r, top)).await;
    let mut rx = w.weir.subscribe();
    // Many clients: each one that lands on the canary waits there.
    let load = Load::start(w.url("/"), 64, Duration::from_millis(5));
    let started = std::time::Instant::now();
    let ev = wait_event(&mut rx, Duration::from_secs(6), |e| e.kind == EventKind::RolledBack).await;
    eprintln!("rolled back after {:?}: {}", started.elapsed(), ev.cause);
    assert!(ev.cause.contains("severe") || ev.cause.contains("error_rate"), "{}", ev.cause);
    assert_eq!(w.weir.route_weight_bp("web"), Some(0));
    load.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_route_that_counts_429_as_failures_rolls_a_rate_limiting_canary_back() {
    let stable = Upstream::start("stable", Mode::Named).await;
    let canary = Upstream::start("canary", Mode::Status(429)).await;
    let r = rollout(
        "{ weight = 50, bake = \"30s\" }, { weight = 100 }",
        "{ metric = \"error_rate\", max = 0.05, min_samples = 20 }",
        "",
    );
    let failures = "failures = { http = [\"5xx\", 429] }\n";
    let w = InProcess::start(&config_text(stable.addr, canary.addr, &format!("{failures}{r}"), "")).await;
    let mut rx = w.weir.subscribe();
    let load = Load::start(w.url("/"), 4, Duration::ZERO);
    let rb = wait_event(&mut rx, Duration::from_secs(10), |e| e.kind == EventKind::RolledBack).await;
    load.stop().await;
    assert!(rb.verdicts[0].value.unwrap() > 0.9, "every 429 counted: {:?}", rb.verdicts[0]);
}

/// Issue 21, bug 2: rollouts were scheduled on the wall clock. A step back
/// stopped every tick (gates, severe rule) for its length; a step forward
/// satisfied the bake at once. The real binary runs under libfaketime
/// (Debian `faketime`), its wall clock stepped through a file while its
/// monotonic clock runs true.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wall_clock_step_neither_stops_nor_hurries_a_rollout() {
    let lib = ["x86_64-linux-gnu", "aarch64-linux-gnu"]
        .map(|a| format!("/usr/lib/{a}/faketime/libfaketime.so.1"))
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
        .expect("libfaketime: install Debian's faketime (.ci/run does)");
    let stable = Upstream::start("stable", Mode::Named).await;
    let canary = Upstream::start("canary", Mode::Named).await;
    let r = rollout(
        "{ weight = 50, bake = \"2s\", min_requests = 20 }, { weight = 100, bake = \"30s\" }",
        "{ metric = \"error_rate\", max = 0.05, min_samples = 10 }",
        "",
    );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("weir.toml");
    std::fs::write(&path, config_text(stable.addr, canary.addr, &r, "")).unwrap();
    let offset = dir.path().join("faketime");
    std::fs::write(&offset, "+0\n").unwrap();
    let mut launch = Launch::tests();
    launch.env = vec![
        ("LD_PRELOAD".into(), lib),
        ("FAKETIME_TIMESTAMP_FILE".into(), offset.display().to_string()),
        ("FAKETIME_NO_CACHE".into(), "1".into()),
        ("FAKETIME_DONT_FAKE_MONOTONIC".into(), "1".into()),
    ];
    let p = Process::start(&launch, &path).unwrap();
    async fn stage(p: &Process) -> (u64, String) {
        let url = format!("http://{}/api/v1/routes", p.admin_addr);
        let v: serde_json::Value = serde_json::from_str(&get(&client(), &url, &[]).await.1).unwrap();
        let r = &v["routes"][0];
        (r["rollout"]["stage"].as_u64().unwrap(), r["rollout"]["state"].as_str().unwrap().to_string())
    }
    assert_eq!(stage(&p).await, (0, "progressing".to_string()));
    // An hour back, at once: the stage still advances on its bake and
    // traffic (the old driver waited for the wall clock to catch up).
    std::fs::write(&offset, "-1h\n").unwrap();
    let load = Load::start(format!("http://{}/", p.data_addr), 2, Duration::from_millis(10));
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while stage(&p).await.0 != 1 {
        assert!(std::time::Instant::now() < deadline, "no tick after the clock stepped back: {:?}", stage(&p).await);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Two hours forward, at once: the last stage's 30 s bake has not
    // passed (the old driver promoted on the next tick).
    std::fs::write(&offset, "+1h\n").unwrap();
    let watch = std::time::Instant::now() + Duration::from_secs(2);
    while std::time::Instant::now() < watch {
        assert_eq!(stage(&p).await, (1, "progressing".to_string()), "the bake was cut short by the clock");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    load.stop().await;
}

/// Issue 21, bug 3: the canary's numbers were kept by backend name, so a
/// new canary version (same backend, same address) started its rollout on
/// the old version's requests. Its window now starts at the transition.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_canary_version_is_judged_on_its_own_requests_only() {
    let stable = Upstream::start("stable", Mode::Named).await;
    let canary = Upstream::start("canary", Mode::FailWithHeader("x-fail")).await;
    // A gate that never fails and a severe rule that never acts: v2's
    // failures stay in the numbers, nothing rolls back.
    let r = format!(
        "force = {{ header = \"x-canary\" }}\n{}",
        rollout(
            "{ weight = 0, bake = \"10m\" }, { weight = 100 }",
            "{ metric = \"error_rate\", max = 1.0, min_samples = 1 }",
            "severe_error_rate = 1.0\nsevere_min_requests = 1000000",
        )
    );
    let w = InProcess::start(&config_text(stable.addr, canary.addr, &r, "")).await;
    let c = client();
    let samples = |w: &InProcess| {
        let st = w.weir.rollout("web").unwrap();
        st.verdicts.first().map(|v| (v.canary_samples, v.value))
    };
    // The first tick: the stage's window is open (it starts at the
    // transition, and a request before it is the stage before's).
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while samples(&w).is_none() {
        assert!(std::time::Instant::now() < deadline, "no tick");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for _ in 0..20 {
        get(&c, &w.url("/"), &[("x-canary", "always"), ("x-fail", "1")]).await;
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while samples(&w).is_none_or(|(n, _)| n < 20) {
        assert!(std::time::Instant::now() < deadline, "v2's requests never counted: {:?}", samples(&w));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(samples(&w), Some((20, Some(1.0))));

    // v3 behind the same backend and address: a new rollout, on its own
    // requests only.
    std::fs::write(&w.path, std::fs::read_to_string(&w.path).unwrap().replace("version = \"v2\"", "version = \"v3\""))
        .unwrap();
    w.weir.reload().await.unwrap();
    assert!(w
        .weir
        .events(Some("web"))
        .iter()
        .rev()
        .any(|e| e.kind == EventKind::Started && e.cause.contains("stage 0")));
    // Its first tick: a window of its own, empty (the old code showed v2's
    // 20 requests here).
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while samples(&w).is_none_or(|(n, _)| n == 20) {
        assert!(std::time::Instant::now() < deadline, "no tick of v3's rollout: {:?}", samples(&w));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(samples(&w).map(|(n, _)| n), Some(0), "v3's window holds v2's requests");
    for _ in 0..10 {
        get(&c, &w.url("/"), &[("x-canary", "always")]).await;
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while samples(&w).is_none_or(|(n, _)| n < 10) {
        assert!(
            std::time::Instant::now() < deadline,
            "v3's requests never counted: {:?} {:?}",
            samples(&w),
            w.weir.events(Some("web")).iter().map(|e| (e.kind, e.cause.clone())).collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(samples(&w), Some((10, Some(0.0))), "v3's window holds v2's requests");
}

/// Issue 21, warm-up: a build failing a third of its requests while it
/// warms up, then healthy, is promoted with `warmup` (without it, the same
/// traffic rolls it back: the second half of this test).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_canary_failing_while_it_warms_up_is_judged_after_its_warmup() {
    for warmup in [true, false] {
        let stable = Upstream::start("stable", Mode::Named).await;
        let canary = Upstream::start("canary", Mode::FailWithHeader("x-fail")).await;
        let extra = if warmup { "warmup = \"2s\"" } else { "" };
        let r = rollout(
            "{ weight = 50, bake = \"1s\" }, { weight = 100 }",
            "{ metric = \"error_rate\", max = 0.1, min_samples = 20 }",
            extra,
        );
        let w = InProcess::start(&config_text(stable.addr, canary.addr, &r, "")).await;
        let mut rx = w.weir.subscribe();
        // Warming: a third of the canary's requests fail (below the severe
        // rule's 50 %), for 2 s.
        let c = client();
        let warm_until = tokio::time::Instant::now() + Duration::from_secs(2);
        let mut i = 0;
        while tokio::time::Instant::now() < warm_until && w.weir.rollout("web").unwrap().phase == Phase::Progressing {
            let fail: &[(&str, &str)] = if i % 3 == 0 { &[("x-fail", "1")] } else { &[] };
            get(&c, &w.url("/"), fail).await;
            i += 1;
        }
        // Warm: healthy from now on.
        let load = Load::start(w.url("/"), 4, Duration::ZERO);
        let end = |e: &weir_control::rollout::Event| matches!(e.kind, EventKind::Promoted | EventKind::RolledBack);
        let ev = wait_event(&mut rx, Duration::from_secs(20), end).await;
        load.stop().await;
        let want = if warmup { EventKind::Promoted } else { EventKind::RolledBack };
        assert_eq!(ev.kind, want, "warmup {warmup}: {ev:?}");
        if warmup {
            assert!(w.weir.rollout("web").unwrap().warmed);
        }
    }
}
