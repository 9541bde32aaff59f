//! Telemetry: exact counts on /metrics, windows for the gate engine,
//! promtool, and a real Prometheus server scraping weir.

use std::time::{Duration, Instant};

use weir_control::split::Side;

use crate::*;

async fn metrics_text(w: &InProcess) -> String {
    let (status, body) = get(&client(), &format!("http://{}/metrics", w.weir.admin_addr()), &[]).await;
    assert_eq!(status, 200);
    body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_exactly_what_was_sent() {
    let stable = Upstream::start("stable", Mode::Named).await;
    let canary = Upstream::start("canary", Mode::Status(503)).await;
    let dead = TcpListener::bind("127.0.0.1:0").await.unwrap().local_addr().unwrap();
    let extra = format!(
        "force = {{ header = \"x-canary\" }}\n[[routes]]\nname = \"api\"\nmatch = {{ path_prefix = \"/api\" }}\nstable = \"gone\"\n[backends.gone]\naddrs = [\"{dead}\"]"
    );
    let w = InProcess::start(&config_text(stable.addr, canary.addr, &extra, "")).await;
    let c = client();
    for _ in 0..30 {
        assert_eq!(get(&c, &w.url("/"), &[]).await.0, 200);
    }
    for _ in 0..20 {
        assert_eq!(get(&c, &w.url("/"), &[("x-canary", "always")]).await.0, 503);
    }
    for _ in 0..7 {
        assert_eq!(get(&c, &w.url("/api/x"), &[]).await.0, 502);
    }
    let m = parse_prometheus(&metrics_text(&w).await);
    let req = |route: &str, backend: &str, class: &str| {
        sample(&m, "weir_requests_total", &[("route", route), ("backend", backend), ("code_class", class)])
    };
    assert_eq!(req("web", "stable", "2xx"), 30.0);
    assert_eq!(req("web", "canary", "5xx"), 20.0);
    assert_eq!(req("web", "canary", "2xx"), 0.0);
    assert_eq!(req("api", "gone", "error"), 7.0);
    let errors =
        |kind: &str| sample(&m, "weir_upstream_errors_total", &[("route", "api"), ("backend", "gone"), ("kind", kind)]);
    assert_eq!(errors("connect"), 7.0);
    assert_eq!(errors("timeout"), 0.0);
    let hist_count = sample(&m, "weir_request_duration_seconds_count", &[("route", "web"), ("backend", "stable")]);
    assert_eq!(hist_count, 30.0);
    assert_eq!(sample(&m, "weir_canary_weight", &[("route", "web")]), 0.0);
    assert_eq!(
        sample(
            &m,
            "weir_build_info",
            &[
                ("version", env!("CARGO_PKG_VERSION")),
                ("route", "web"),
                ("stable_version", "v1"),
                ("canary_version", "v2"),
                // No release metadata: empty commits.
                ("stable_commit", ""),
                ("canary_commit", "")
            ]
        ),
        1.0
    );

    // The same numbers in the gate engine's window.
    let win = w.weir.window("web", Side::Canary, Duration::from_secs(60)).unwrap();
    assert_eq!(win.counts.total(), 20);
    assert_eq!(win.counts.error_rate(), Some(1.0));

    // A reload that keeps the route keeps its counters and windows.
    let text = std::fs::read_to_string(&w.path).unwrap().replace("force = {", "weight = 12.5\nforce = {");
    std::fs::write(&w.path, text).unwrap();
    w.weir.reload().await.unwrap();
    let m = parse_prometheus(&metrics_text(&w).await);
    assert_eq!(
        sample(&m, "weir_requests_total", &[("route", "web"), ("backend", "stable"), ("code_class", "2xx")]),
        30.0
    );
    assert_eq!(sample(&m, "weir_canary_weight", &[("route", "web")]), 12.5);
    assert_eq!(sample(&m, "weir_config_reloads_total", &[("result", "ok")]), 1.0);
    assert_eq!(w.weir.window("web", Side::Canary, Duration::from_secs(60)).unwrap().counts.total(), 20);

    // A rejected reload is counted too.
    std::fs::write(&w.path, "this is not toml").unwrap();
    assert!(w.weir.reload().await.is_err());
    let m = parse_prometheus(&metrics_text(&w).await);
    assert_eq!(sample(&m, "weir_config_reloads_total", &[("result", "error")]), 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn windows_measure_latency_and_forget_old_requests() {
    let stable = Upstream::start("stable", Mode::Named).await;
    let canary = Upstream::start("canary", Mode::Delay(Duration::from_millis(50))).await;
    let w = InProcess::start(&config_text(stable.addr, canary.addr, "weight = 50", "")).await;
    let c = client();
    for _ in 0..40 {
        assert_eq!(get(&c, &w.url("/"), &[]).await.0, 200);
    }
    let sent_at = Instant::now();
    let canary_w = w.weir.window("web", Side::Canary, Duration::from_secs(60)).unwrap();
    let stable_w = w.weir.window("web", Side::Stable, Duration::from_secs(60)).unwrap();
    assert_eq!((canary_w.counts.total(), stable_w.counts.total()), (20, 20));
    let p50 = canary_w.latency.quantile(0.5).unwrap();
    assert!(p50 >= Duration::from_millis(50) && p50 <= Duration::from_millis(60), "canary p50 {p50:?}");
    let p50 = stable_w.latency.quantile(0.5).unwrap();
    assert!(p50 < Duration::from_millis(5), "stable p50 {p50:?}");

    // Two seconds later a one-second window holds none of them; a longer
    // window still does. (Time passing is what is tested here.)
    tokio::time::sleep(Duration::from_secs(2).saturating_sub(sent_at.elapsed()) + Duration::from_millis(50)).await;
    assert_eq!(w.weir.window("web", Side::Canary, Duration::from_secs(1)).unwrap().counts.total(), 0);
    assert_eq!(w.weir.window("web", Side::Canary, Duration::from_secs(60)).unwrap().counts.total(), 20);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_pass_promtool_and_are_not_on_the_data_port() {
    let (_stable, _canary, w) = named_pair("weight = 50", "").await;
    let c = client();
    for _ in 0..10 {
        get(&c, &w.url("/"), &[]).await;
    }
    let text = metrics_text(&w).await;
    assert!(text.contains("weir_request_duration_seconds_bucket"), "{text}");
    assert!(text.contains("le=\"0.0005\"") && text.contains("le=\"10\""), "{text}");

    let mut child = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("promtool (Debian package prometheus) is needed: .ci/run installs it");
    use std::io::Write;
    child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool: {}{}\n{text}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    // On the data port, /metrics is just another path for the upstream.
    let (status, body) = get(&c, &w.url("/metrics"), &[]).await;
    assert_eq!(status, 200);
    assert!(body == "stable" || body == "canary", "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_prometheus_scrapes_the_request_count() {
    let (_stable, _canary, w) = named_pair("weight = 25", "").await;
    let c = client();
    for _ in 0..40 {
        assert_eq!(get(&c, &w.url("/"), &[]).await.0, 200);
    }
    let prom = Prometheus::start(w.weir.admin_addr()).await;
    let query =
        format!("http://127.0.0.1:{}/api/v1/query?query=sum(weir_requests_total%7Broute%3D%22web%22%7D)", prom.port);
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut last = String::new();
    let value = loop {
        if let Ok(Some(body)) = tokio::time::timeout(Duration::from_secs(2), try_get(&query)).await {
            last = body;
            if let Ok(v) = serde_json::from_str::<serde_json::Value>(&last) {
                if let Some(s) = v["data"]["result"][0]["value"][1].as_str() {
                    break s.to_string();
                }
            }
        }
        assert!(Instant::now() < deadline, "prometheus never returned the series: {last}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    assert_eq!(value, "40");
}

/// Issue 21, bug 13: `weir_canary_weight` was published by the
/// once-a-second ticker, so right after a manual action (or a rollback)
/// `/metrics` showed the rollout's new state with its old weight. Both
/// change in the same step now.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_weight_gauge_changes_with_the_rollout_state() {
    let stable = Upstream::start("stable", Mode::Named).await;
    let canary = Upstream::start("canary", Mode::Named).await;
    let r = "[routes.rollout]\nstages = [{ weight = 10, bake = \"10m\" }, { weight = 50, bake = \"10m\" }, { weight = 100 }]\ngates = [{ metric = \"error_rate\", max = 0.05 }]";
    let w = InProcess::start(&config_text(stable.addr, canary.addr, r, "")).await;
    for (action, state, weight) in
        [(weir_proxy::ManualAction::Promote, "progressing", 50.0), (weir_proxy::ManualAction::Abort, "aborted", 0.0)]
    {
        w.weir.act("web", action).await.unwrap();
        let m = parse_prometheus(&metrics_text(&w).await);
        assert_eq!(sample(&m, "weir_rollout_state", &[("route", "web"), ("state", state)]), 1.0, "{action:?}");
        assert_eq!(sample(&m, "weir_canary_weight", &[("route", "web")]), weight, "{action:?}");
    }
}
