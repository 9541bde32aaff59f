//! Fault injection and the game day: injected faults are measured like real
//! ones, trigger the rollback, and switch themselves off.

use std::time::{Duration, Instant};

use weir_control::rollout::{Actor, EventKind};
use weir_control::split::Side;

use crate::*;

fn rollout() -> &'static str {
    "force = { header = \"x-canary\" }\n[routes.rollout]\ninterval = \"250ms\"\nstages = [{ weight = 50, bake = \"10m\" }, { weight = 100 }]\ngates = [{ metric = \"error_rate\", max = 0.05, min_samples = 20 }]"
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configured_aborts_are_measured_and_roll_back() {
    let stable = Upstream::start("stable", Mode::Named).await;
    let canary = Upstream::start("canary", Mode::Named).await;
    let text = config_text(stable.addr, canary.addr, rollout(), "")
        .replace("version = \"v2\"", "version = \"v2\"\nfault = { abort_status = 503, abort_percent = 50 }");
    let w = InProcess::start(&text).await;
    let mut rx = w.weir.subscribe();
    let load = Load::start(w.url("/"), 4, Duration::from_millis(2));
    let rb = wait_event(&mut rx, Duration::from_secs(10), |e| e.kind == EventKind::RolledBack).await;
    load.stop().await;
    // Either the error_rate gate twice, or the severe-breach rule (≥ 50 %).
    assert!(rb.cause.contains("error_rate") || rb.cause.contains("severe breach"), "{}", rb.cause);
    let win = w.weir.window("web", Side::Canary, Duration::from_secs(60)).unwrap();
    let injected = win.counts.class(weir_control::sample::CodeClass::ServerError);
    assert!(injected > 0);
    // Aborts never reached the canary: it served only the rest.
    assert_eq!(canary.count() as u64, win.counts.total() - injected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configured_delays_show_in_the_latency() {
    let stable = Upstream::start("stable", Mode::Named).await;
    let canary = Upstream::start("canary", Mode::Named).await;
    let text = config_text(stable.addr, canary.addr, "weight = 100", "")
        .replace("version = \"v2\"", "version = \"v2\"\nfault = { delay = \"100ms\", delay_percent = 100 }");
    let w = InProcess::start(&text).await;
    let c = client();
    for _ in 0..10 {
        assert_eq!(get(&c, &w.url("/"), &[]).await, (StatusCode::OK, "canary".to_string()));
    }
    let p50 = w.weir.window("web", Side::Canary, Duration::from_secs(60)).unwrap().latency.quantile(0.5).unwrap();
    assert!(p50 >= Duration::from_millis(100), "{p50:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn game_day_through_the_api_rolls_back_and_the_fault_switches_itself_off() {
    let stable = Upstream::start("stable", Mode::Named).await;
    let canary = Upstream::start("canary", Mode::Named).await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("t"), "tok").unwrap();
    let path = dir.path().join("weir.toml");
    std::fs::write(&path, config_text(stable.addr, canary.addr, rollout(), "token_file = \"t\"")).unwrap();
    let w = weir_proxy::Weir::start(weir_proxy::reload::read_config(&path).unwrap(), Some(path)).await.unwrap();
    let admin = format!("http://{}", w.admin_addr());
    let data = format!("http://{}/", w.data_addr());
    let fault_url = format!("{admin}/api/v1/backends/canary/fault");
    let send = |method: &'static str, url: String, body: &'static str, token: bool| async move {
        let mut b = Request::builder().method(method).uri(url);
        if token {
            b = b.header("authorization", "Bearer tok");
        }
        let r = client().request(b.body(Full::new(Bytes::from_static(body.as_bytes()))).unwrap()).await.unwrap();
        let status = r.status();
        (status, String::from_utf8_lossy(&r.into_body().collect().await.unwrap().to_bytes()).into_owned())
    };
    let abort = r#"{"abort_status": 503, "abort_percent": 100, "duration": "2s"}"#;
    assert_eq!(send("POST", fault_url.clone(), abort, false).await.0, 401);
    assert_eq!(send("POST", fault_url.clone(), "{}", true).await.0, 400);
    assert_eq!(send("POST", format!("{admin}/api/v1/backends/nope/fault"), abort, true).await.0, 404);

    let mut rx = w.subscribe();
    let load = Load::start(data.clone(), 4, Duration::from_millis(2));
    let (status, body) = send("POST", fault_url.clone(), abort, true).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"source\":\"api\""), "{body}");
    let switched_on = Instant::now();
    let rb = wait_event(&mut rx, Duration::from_secs(10), |e| e.kind == EventKind::RolledBack).await;
    load.stop().await;
    assert_eq!(rb.actor, Actor::Auto);
    assert!(rb.verdicts[0].value.unwrap() > 0.5, "{rb:?}");

    // The fault ends by itself at its time limit.
    let c = client();
    let forced = || get(&c, &data, &[("x-canary", "always")]);
    assert_eq!(forced().await.0, 503);
    loop {
        let (status, _) = forced().await;
        if status == 200 {
            break;
        }
        assert!(switched_on.elapsed() < Duration::from_secs(5), "fault still on after its 2 s limit");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(switched_on.elapsed() >= Duration::from_secs(2));
    let (_, list) = get(&c, &format!("{admin}/api/v1/backends"), &[]).await;
    let list: serde_json::Value = serde_json::from_str(&list).unwrap();
    assert!(list["backends"].as_array().unwrap().iter().all(|b| b["fault"].is_null()), "{list}");

    // DELETE switches a fault off at once.
    let delay = r#"{"delay": "1s"}"#;
    assert_eq!(send("POST", fault_url.clone(), delay, true).await.0, 200);
    assert_eq!(send("DELETE", fault_url.clone(), "", true).await.0, 200);
    let t = Instant::now();
    assert_eq!(forced().await.0, 200);
    assert!(t.elapsed() < Duration::from_millis(900));
}
