//! Synthetic requests: rate, routing, separate counting, and the gate.

use std::time::{Duration, Instant};

use weir_control::rollout::EventKind;

use crate::*;

fn stage_with(synthetic: &str, gates: &str, stage_extra: &str, extra: &str) -> String {
    format!(
        "[routes.rollout]\ninterval = \"250ms\"\n{extra}\nstages = [{{ weight = 0, {stage_extra} synthetic = {{ {synthetic} }} }}, {{ weight = 100, bake = \"10m\", synthetic = {{ {synthetic} }} }}]\ngates = [{gates}]"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn synthetic_requests_reach_the_canary_at_their_rate_and_are_counted_apart() {
    let stable = Upstream::start("stable", Mode::Named).await;
    let canary = Upstream::start("canary", Mode::Named).await;
    let r = stage_with(
        "rps = 20, path = \"/synthetic-check\", expect_status = 200, headers = { x-probe = \"yes\" }",
        "{ metric = \"synthetic\", max = 0.0, min_samples = 5 }",
        "bake = \"10m\",",
        "",
    );
    let w = InProcess::start(&config_text(stable.addr, canary.addr, &r, "")).await;
    let t = Instant::now();
    // A user request still goes to stable (weight 0), and cannot forge the tag.
    let c = client();
    assert_eq!(get(&c, &w.url("/"), &[("x-weir-synthetic", "canary")]).await.1, "stable");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let elapsed = t.elapsed().as_secs_f64();
    let n = canary.count() as f64;
    assert!(n >= 20.0 * elapsed * 0.6 && n <= 20.0 * elapsed * 1.4 + 2.0, "{n} synthetic requests in {elapsed:.2}s");
    let seen = canary.seen.lock().unwrap()[0].clone();
    assert_eq!(seen.path, "/synthetic-check");
    assert_eq!(seen.headers["x-weir-synthetic"], "1");
    assert_eq!(seen.headers["x-probe"], "yes");
    // The forged tag never reached the upstream.
    assert!(!stable.seen.lock().unwrap()[0].headers.contains_key("x-weir-synthetic"));

    let m = parse_prometheus(&get(&c, &format!("http://{}/metrics", w.weir.admin_addr()), &[]).await.1);
    let synth =
        sample(&m, "weir_synthetic_requests_total", &[("route", "web"), ("backend", "canary"), ("code_class", "2xx")]);
    assert!(synth >= 10.0, "{synth}");
    assert_eq!(
        sample(&m, "weir_requests_total", &[("route", "web"), ("backend", "canary"), ("code_class", "2xx")]),
        0.0
    );
    let st = w.weir.rollout("web").unwrap();
    let v = st.verdicts.iter().find(|v| v.gate == "synthetic").unwrap();
    assert_eq!(v.verdict, weir_control::gate::Verdict::Pass, "{v:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_synthetic_check_holds_the_stage() {
    let stable = Upstream::start("stable", Mode::Named).await;
    let canary = Upstream::start("canary", Mode::Status(503)).await;
    let r = stage_with(
        "rps = 20, path = \"/health\", expect_status = 200",
        "{ metric = \"synthetic\", max = 0.0, min_samples = 5 }",
        "bake = \"500ms\",",
        "on_failure = \"pause\"",
    );
    let w = InProcess::start(&config_text(stable.addr, canary.addr, &r, "")).await;
    let mut rx = w.weir.subscribe();
    let ev = wait_event(&mut rx, Duration::from_secs(10), |e| e.kind != EventKind::Evaluated).await;
    assert_eq!(ev.kind, EventKind::Paused, "{ev:?}");
    assert!(ev.cause.contains("synthetic"), "{}", ev.cause);
    assert_eq!(w.weir.rollout("web").unwrap().stage, 0);
    assert_eq!(w.weir.route_weight_bp("web"), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn synthetic_traffic_lets_a_quiet_service_reach_min_requests() {
    let stable = Upstream::start("stable", Mode::Named).await;
    let canary = Upstream::start("canary", Mode::Named).await;
    let r = stage_with(
        "rps = 40, path = \"/\"",
        "{ metric = \"synthetic\", max = 0.0, min_samples = 10 }",
        "bake = \"500ms\", min_requests = 20,",
        "",
    );
    let w = InProcess::start(&config_text(stable.addr, canary.addr, &r, "")).await;
    let mut rx = w.weir.subscribe();
    // No user traffic at all.
    let ev = wait_event(&mut rx, Duration::from_secs(10), |e| e.kind != EventKind::Evaluated).await;
    assert_eq!((ev.kind, ev.stage), (EventKind::Advanced, 1), "{ev:?}");
    assert_eq!(stable.count(), 0);
}
