//! Split routing: sticky buckets, keyless exactness, force, cohort.

use std::collections::HashMap;

use crate::*;

/// Sends one request per key (8 at a time); returns key → side.
async fn sides(w: &InProcess, header: &str, keys: impl Iterator<Item = String>) -> HashMap<String, String> {
    use futures_util::StreamExt;
    let c = client();
    let url = w.url("/");
    futures_util::stream::iter(keys)
        .map(|k| {
            let (c, url) = (c.clone(), url.clone());
            async move {
                let (status, body) = get(&c, &url, &[(header, &k)]).await;
                assert_eq!(status, 200);
                (k, body)
            }
        })
        .buffer_unordered(8)
        .collect()
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sticky_split_is_accurate_stable_and_monotonic() {
    let (_s, _c, w) = named_pair("weight = 10\nsticky = { header = \"x-user-id\" }", "").await;
    let keys = || (0..20_000).map(|i| format!("user-{i}"));
    let at10 = sides(&w, "x-user-id", keys()).await;
    let canary = at10.values().filter(|s| *s == "canary").count();
    let share = canary as f64 / at10.len() as f64;
    assert!((0.09..=0.11).contains(&share), "canary share {share}");

    // The same key lands on the same side 100 times in a row.
    let c = client();
    let probe = at10.iter().find(|(_, s)| *s == "canary").unwrap().0.clone();
    for _ in 0..100 {
        assert_eq!(get(&c, &w.url("/"), &[("x-user-id", &probe)]).await.1, "canary");
    }

    // 10 % → 30 %: every canary user stays on the canary.
    let text = std::fs::read_to_string(&w.path).unwrap().replace("weight = 10", "weight = 30");
    std::fs::write(&w.path, text).unwrap();
    w.weir.reload().await.unwrap();
    assert_eq!(w.weir.route_weight_bp("web"), Some(3000));
    let at30 = sides(&w, "x-user-id", keys()).await;
    for (k, side) in &at10 {
        if side == "canary" {
            assert_eq!(at30[k], "canary", "{k} moved back to stable");
        }
    }
    let share30 = at30.values().filter(|s| *s == "canary").count() as f64 / at30.len() as f64;
    assert!((0.29..=0.31).contains(&share30), "canary share {share30}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keyless_split_is_exact() {
    let (stable, canary, w) = named_pair("weight = 10", "").await;
    let c = client();
    for _ in 0..1000 {
        assert_eq!(get(&c, &w.url("/"), &[]).await.0, 200);
    }
    assert_eq!(canary.count(), 100);
    assert_eq!(stable.count(), 900);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn force_header_and_cookie_always_and_never() {
    let (_s, _c, w) =
        named_pair("weight = 50\nsticky = { header = \"x-user-id\" }\nforce = { header = \"x-canary\" }", "").await;
    let c = client();
    for i in 0..50 {
        let id = format!("u{i}");
        assert_eq!(get(&c, &w.url("/"), &[("x-user-id", &id), ("x-canary", "always")]).await.1, "canary");
        assert_eq!(get(&c, &w.url("/"), &[("x-user-id", &id), ("x-canary", "never")]).await.1, "stable");
    }
    // Cookie form, and an unknown value falls through to the weight.
    let text = std::fs::read_to_string(&w.path)
        .unwrap()
        .replace("force = { header = \"x-canary\" }", "force = { cookie = \"weir-canary\" }\nweight = 0")
        .replace("weight = 50\n", "");
    std::fs::write(&w.path, text).unwrap();
    w.weir.reload().await.unwrap();
    assert_eq!(get(&c, &w.url("/"), &[("cookie", "a=b; weir-canary=always")]).await.1, "canary");
    assert_eq!(get(&c, &w.url("/"), &[("cookie", "weir-canary=never")]).await.1, "stable");
    assert_eq!(get(&c, &w.url("/"), &[("cookie", "weir-canary=maybe")]).await.1, "stable");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cohort_goes_to_canary_and_opt_out_beats_it() {
    let (_s, _c, w) = named_pair(
        "force = { header = \"x-canary\" }\n[routes.rollout]\nstages = [{ weight = 0, bake = \"10m\", cohort = { header = \"x-user-group\", values = [\"internal\", \"staff\"] } }, { weight = 100 }]\ngates = [{ metric = \"error_rate\", max = 0.05 }]",
        "",
    )
    .await;
    let c = client();
    assert_eq!(get(&c, &w.url("/"), &[("x-user-group", "internal")]).await.1, "canary");
    assert_eq!(get(&c, &w.url("/"), &[("x-user-group", "staff")]).await.1, "canary");
    assert_eq!(get(&c, &w.url("/"), &[("x-user-group", "public")]).await.1, "stable");
    assert_eq!(get(&c, &w.url("/"), &[]).await.1, "stable");
    assert_eq!(get(&c, &w.url("/"), &[("x-user-group", "internal"), ("x-canary", "never")]).await.1, "stable");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_and_longest_prefix_match() {
    let a = Upstream::start("a", Mode::Named).await;
    let b = Upstream::start("b", Mode::Named).await;
    let text = format!(
        r#"
[listen]
addr = "127.0.0.1:0"
[admin]
addr = "127.0.0.1:0"
[backends.a]
addrs = ["{}"]
[backends.b]
addrs = ["{}"]
[[routes]]
name = "root"
stable = "a"
[[routes]]
name = "api"
match = {{ path_prefix = "/api" }}
stable = "b"
[[routes]]
name = "api-v1"
match = {{ path_prefix = "/api/v1" }}
stable = "a"
[[routes]]
name = "shop"
match = {{ host = "shop.example", path_prefix = "/" }}
stable = "b"
"#,
        a.addr, b.addr
    );
    let w = InProcess::start(&text).await;
    let c = client();
    assert_eq!(get(&c, &w.url("/x"), &[]).await.1, "a");
    assert_eq!(get(&c, &w.url("/api/x"), &[]).await.1, "b");
    assert_eq!(get(&c, &w.url("/api/v1/x"), &[]).await.1, "a");
    assert_eq!(get(&c, &w.url("/x"), &[("host", "SHOP.example:8080")]).await.1, "b");
    assert_eq!(get(&c, &w.url("/api/v1"), &[("host", "other.example")]).await.1, "a");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn variant_header_tells_the_upstream_its_side() {
    let (stable, canary, w) = named_pair("weight = 50\nvariant_header = true", "").await;
    let c = client();
    for _ in 0..4 {
        get(&c, &w.url("/"), &[]).await;
    }
    assert!(stable.seen.lock().unwrap().iter().all(|s| s.headers["x-weir-variant"] == "stable"));
    assert!(canary.seen.lock().unwrap().iter().all(|s| s.headers["x-weir-variant"] == "canary"));
    assert_eq!(canary.count(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_with_several_addresses_uses_them_all() {
    let a = Upstream::start("a", Mode::Named).await;
    let b = Upstream::start("b", Mode::Named).await;
    let text = format!(
        "[listen]\naddr = \"127.0.0.1:0\"\n[admin]\naddr = \"127.0.0.1:0\"\n[backends.app]\naddrs = [\"{}\", \"{}\"]\n[[routes]]\nname = \"r\"\nstable = \"app\"\n",
        a.addr, b.addr
    );
    let w = InProcess::start(&text).await;
    let c = client();
    for _ in 0..200 {
        assert_eq!(get(&c, &w.url("/"), &[]).await.0, 200);
    }
    // Sequential requests tie on in-flight counts, so P2C picks at random.
    assert!(a.count() > 50 && b.count() > 50, "a={} b={}", a.count(), b.count());
    assert_eq!(a.count() + b.count(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_log_writes_one_json_line_per_request() {
    let stable = Upstream::start("stable", Mode::Named).await;
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.log");
    let dead = TcpListener::bind("127.0.0.1:0").await.unwrap().local_addr().unwrap();
    let top = format!("[log]\naccess = \"{}\"", log.display());
    let w = InProcess::start(&config_text(stable.addr, dead, "force = { header = \"x-canary\" }", &top)).await;
    let c = client();
    assert_eq!(get(&c, &w.url("/a?q=1"), &[]).await.0, 200);
    assert_eq!(get(&c, &w.url("/b"), &[("x-canary", "always")]).await.0, 502);
    // The log is written by its own thread: wait for both lines.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    let lines = loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        let lines: Vec<serde_json::Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        if lines.len() >= 2 || std::time::Instant::now() > deadline {
            break lines;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert_eq!(lines[0]["path"], "/a");
    assert_eq!(lines[0]["status"], 200);
    assert_eq!(lines[0]["route"], "web");
    assert_eq!(lines[0]["backend"], "stable");
    // Joins with the audit trail and metrics on the release label.
    assert_eq!(lines[0]["version"], "v1");
    assert_eq!(lines[0]["side"], "stable");
    assert_eq!(lines[1]["status"], 502);
    assert_eq!(lines[1]["side"], "canary");
    assert_eq!(lines[1]["error"], "connect");
}
