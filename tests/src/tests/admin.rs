//! Admin API, authentication, and `weir ctl` against the real binary.

use std::process::Command;
use std::sync::{Arc, Mutex};

use weir_control::rollout::{Actor, EventKind, Phase};

use crate::*;

const TOKEN: &str = "s3cret-token";

fn rollout_route() -> String {
    "[routes.rollout]\nstages = [{ weight = 10, bake = \"10m\" }, { weight = 50, bake = \"10m\" }, { weight = 100 }]\ngates = [{ metric = \"error_rate\", max = 0.05 }]\n[[routes]]\nname = \"plain\"\nmatch = { path_prefix = \"/plain\" }\nstable = \"stable\"".to_string()
}

async fn post(url: &str, token: Option<&str>) -> (StatusCode, serde_json::Value) {
    let mut b = Request::post(url);
    if let Some(t) = token {
        b = b.header("authorization", format!("Bearer {t}"));
    }
    let resp = client().request(b.body(Full::new(Bytes::new())).unwrap()).await.unwrap();
    let status = resp.status();
    let auth = resp.headers().get("www-authenticate").cloned();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    if status == 401 {
        assert_eq!(auth.unwrap(), "Bearer realm=\"weir\"");
    }
    (status, serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_endpoints_and_token_auth() {
    let stable = Upstream::start("stable", Mode::Named).await;
    let canary = Upstream::start("canary", Mode::Named).await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("admin.token"), format!("{TOKEN}\n")).unwrap();
    // top_extra follows [admin], so token_file lands in that table.
    let text = config_text(stable.addr, canary.addr, &rollout_route(), "token_file = \"admin.token\"");
    let path = dir.path().join("weir.toml");
    std::fs::write(&path, &text).unwrap();
    let w = weir_proxy::Weir::start(weir_proxy::reload::read_config(&path).unwrap(), Some(path.clone())).await.unwrap();
    let admin = format!("http://{}", w.admin_addr());
    let c = client();

    // Reads need no token.
    let (status, body) = get(&c, &format!("{admin}/api/v1/routes"), &[]).await;
    assert_eq!(status, 200);
    let routes: serde_json::Value = serde_json::from_str(&body).unwrap();
    let web = &routes["routes"][0];
    assert_eq!(web["name"], "web");
    assert_eq!(web["weight"], 10.0);
    assert_eq!(web["stable"]["version"], "v1");
    assert_eq!(web["canary"]["version"], "v2");
    assert_eq!(web["rollout"]["state"], "progressing");
    assert_eq!(web["rollout"]["stages"], serde_json::json!([10.0, 50.0, 100.0]));
    assert!(routes["routes"][1]["rollout"].is_null());
    let (status, body) = get(&c, &format!("{admin}/api/v1/events?route=web"), &[]).await;
    assert_eq!(status, 200);
    assert_eq!(serde_json::from_str::<serde_json::Value>(&body).unwrap()["events"][0]["kind"], "started");

    // Writes need the token.
    let pause = format!("{admin}/api/v1/routes/web/pause");
    assert_eq!(post(&pause, None).await.0, 401);
    assert_eq!(post(&pause, Some("wrong")).await.0, 401);
    assert_eq!(w.rollout("web").unwrap().phase, Phase::Progressing);
    let (status, body) = post(&pause, Some(TOKEN)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["event"]["actor"], "manual");
    assert_eq!(w.rollout("web").unwrap().phase, Phase::Paused);
    let (status, body) = post(&pause, Some(TOKEN)).await;
    assert_eq!(status, 409);
    assert!(body["error"].as_str().unwrap().contains("paused"), "{body}");

    assert_eq!(post(&format!("{admin}/api/v1/routes/nope/pause"), Some(TOKEN)).await.0, 404);
    assert_eq!(post(&format!("{admin}/api/v1/routes/web/explode"), Some(TOKEN)).await.0, 404);
    assert_eq!(post(&format!("{admin}/api/v1/routes/plain/pause"), Some(TOKEN)).await.0, 409);
    assert_eq!(get(&c, &pause, &[]).await.0, 405);
    assert_eq!(get(&c, &format!("{admin}/api/v1/nothing"), &[]).await.0, 404);

    assert_eq!(post(&format!("{admin}/api/v1/routes/web/resume"), Some(TOKEN)).await.0, 200);
    assert_eq!(post(&format!("{admin}/api/v1/routes/web/promote"), Some(TOKEN)).await.0, 200);
    assert_eq!(w.route_weight_bp("web"), Some(5000));
    assert_eq!(post(&format!("{admin}/api/v1/routes/web/promote?full=true"), Some(TOKEN)).await.0, 200);
    assert_eq!(w.route_weight_bp("web"), Some(10_000));
    assert_eq!(get(&c, &w_url(&w, "/"), &[]).await.1, "canary");
    assert_eq!(post(&format!("{admin}/api/v1/routes/web/abort"), Some(TOKEN)).await.0, 200);
    assert_eq!(w.route_weight_bp("web"), Some(0));
    assert_eq!(get(&c, &w_url(&w, "/"), &[]).await.1, "stable");

    let manual: Vec<EventKind> =
        w.events(Some("web")).iter().filter(|e| e.actor == Actor::Manual).map(|e| e.kind).collect();
    assert_eq!(
        manual,
        vec![EventKind::Paused, EventKind::Resumed, EventKind::Advanced, EventKind::Promoted, EventKind::Aborted]
    );

    // The admin API is not on the data port: there it is an upstream path.
    assert_eq!(get(&c, &w_url(&w, "/api/v1/routes"), &[]).await.1, "stable");
    assert_eq!(post(&w_url(&w, "/api/v1/routes/web/resume"), Some(TOKEN)).await.0, 200);
    assert_eq!(w.rollout("web").unwrap().phase, Phase::Aborted, "the data port must not act on rollouts");
    assert_eq!(stable.seen.lock().unwrap().last().unwrap().path, "/api/v1/routes/web/resume");

    // The dashboard is served, self-contained.
    let (status, page) = get(&c, &format!("{admin}/"), &[]).await;
    assert_eq!(status, 200);
    assert!(page.contains("<title>weir</title>") && !page.contains("http://") && !page.contains("https://"));
}

fn w_url(w: &weir_proxy::Weir, path: &str) -> String {
    format!("http://{}{}", w.data_addr(), path)
}

fn ctl(admin: std::net::SocketAddr, args: &[&str], token_env: Option<&str>) -> (i32, String, String) {
    let mut cmd = Command::new(weir_bin());
    cmd.arg("ctl").args(args).args(["--admin", &format!("http://{admin}")]).env_remove("WEIR_ADMIN_TOKEN");
    if let Some(t) = token_env {
        cmd.env("WEIR_ADMIN_TOKEN", t);
    }
    let out = cmd.output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weir_ctl_drives_a_running_weir() {
    let stable = Upstream::start("stable", Mode::Named).await;
    let canary = Upstream::start("canary", Mode::Named).await;
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("admin.token");
    std::fs::write(&token_file, TOKEN).unwrap();
    let path = dir.path().join("weir.toml");
    std::fs::write(&path, config_text(stable.addr, canary.addr, &rollout_route(), "token_file = \"admin.token\""))
        .unwrap();
    let p = Process::spawn(&path);
    let admin = p.admin_addr;

    let (code, out, _) = ctl(admin, &["status"], None);
    assert_eq!(code, 0);
    let header = out.lines().next().unwrap();
    assert!(header.starts_with("ROUTE") && header.contains("STATE") && header.contains("WEIGHT"), "{out}");
    assert!(header.contains(" AGE "), "{out}");
    let web = out.lines().find(|l| l.starts_with("web ")).unwrap();
    assert!(
        web.contains("progressing") && web.contains("1/3") && web.contains("10%") && web.contains("canary v2"),
        "{out}"
    );
    // The rollout's age: seconds old.
    let cols: Vec<&str> = web.split_whitespace().collect();
    assert!(cols[3].ends_with('s') && cols[3].trim_end_matches('s').parse::<u64>().is_ok(), "{out}");
    assert!(out.lines().any(|l| l.starts_with("plain ") && l.contains("static")), "{out}");

    // No token → 4; unknown route → 3; missing ROUTE → 2.
    assert_eq!(ctl(admin, &["pause", "web"], None).0, 4);
    assert_eq!(ctl(admin, &["pause", "nope"], Some(TOKEN)).0, 3);
    assert_eq!(ctl(admin, &["pause"], Some(TOKEN)).0, 2);
    assert_eq!(ctl(admin, &["status", "nope"], None).0, 3);

    // Token from the environment, a flag, or a file.
    let (code, out, err) = ctl(admin, &["pause", "web"], Some(TOKEN));
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("progressing -> paused"), "{out}");
    // Under the table, the rollout in a sentence (the dashboard's too).
    let (_, out, _) = ctl(admin, &["status", "web"], None);
    let said = out.lines().find(|l| l.starts_with("web: ")).unwrap_or_else(|| panic!("{out}"));
    assert!(
        said.starts_with("web: Paused at stage 1 of 3, canary v2 at 10%") && said.contains("(paused by hand)"),
        "{out}"
    );
    assert!(said.contains("weir waits for a resume"), "{out}");
    assert_eq!(ctl(admin, &["pause", "web", "--token", TOKEN], None).0, 1, "already paused: refused");
    let file = token_file.to_str().unwrap();
    assert_eq!(ctl(admin, &["resume", "web", "--token-file", file], None).0, 0);
    assert_eq!(ctl(admin, &["promote", "web"], Some(TOKEN)).0, 0);
    let (_, out, _) = ctl(admin, &["status", "web", "--json"], None);
    let json: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert!(json["routes"].as_array().unwrap().iter().any(|r| r["name"] == "web" && r["weight"] == 50.0), "{json}");
    assert_eq!(ctl(admin, &["abort", "web"], Some(TOKEN)).0, 0);
    let (_, out, _) = ctl(admin, &["status", "web"], None);
    assert!(out.contains("aborted") && out.contains("\nweb: Aborted by hand"), "{out}");

    // The audit trail shows each manual action.
    let (_, events) = get(&client(), &format!("http://{admin}/api/v1/events?route=web"), &[]).await;
    let events: serde_json::Value = serde_json::from_str(&events).unwrap();
    let manual: Vec<&str> = events["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["actor"] == "manual")
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    assert_eq!(manual, vec!["paused", "resumed", "advanced", "aborted"]);

    // The admin API unreachable → 5.
    drop(p);
    assert_eq!(ctl(admin, &["status"], None).0, 5);
}

/// The admin API and the rollout engine run on weir's control thread, not on
/// the data plane's runtime: with that runtime stuck (here it is this test's
/// only thread, blocked in synchronous calls from the start of the checks),
/// `weir ctl` still reads and acts. Before they had a thread of their own,
/// this timed out (`weir ctl` exits 5 after 10 s without an answer).
#[tokio::test]
async fn the_admin_api_works_while_the_data_plane_is_stuck() {
    let stable = Upstream::start("stable", Mode::Named).await;
    let canary = Upstream::start("canary", Mode::Named).await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("admin.token"), TOKEN).unwrap();
    let path = dir.path().join("weir.toml");
    std::fs::write(&path, config_text(stable.addr, canary.addr, &rollout_route(), "token_file = \"admin.token\""))
        .unwrap();
    let w = weir_proxy::Weir::start(weir_proxy::reload::read_config(&path).unwrap(), Some(path.clone())).await.unwrap();
    // No await from here on: the runtime weir's data plane runs on is stuck.
    let admin = w.admin_addr();
    let (code, out, err) = ctl(admin, &["status", "web"], None);
    assert_eq!(code, 0, "{err}");
    assert!(out.lines().any(|l| l.starts_with("web ") && l.contains("progressing")), "{out}");
    let (code, out, err) = ctl(admin, &["pause", "web"], Some(TOKEN));
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("progressing -> paused"), "{out}");
    assert_eq!(w.rollout("web").unwrap().phase, Phase::Paused);
}

#[test]
fn a_public_admin_address_without_a_token_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("weir.toml");
    std::fs::write(
        &path,
        "[admin]\naddr = \"0.0.0.0:0\"\n[backends.s]\naddrs = [\"127.0.0.1:1\"]\n[[routes]]\nname = \"r\"\nstable = \"s\"\n",
    )
    .unwrap();
    let out = Command::new(weir_bin()).args(["run", "-c"]).arg(&path).output().unwrap();
    assert_eq!(out.status.code(), Some(78));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("admin.addr: 0.0.0.0:0 is not a loopback address"), "{err}");
}

const RELEASE: &str = "\n[backends.canary.release]\ncommit = \"0123456789abcdef0123\"\nnotes = \"https://git.example/shop/releases/v2\"\nticket = \"OPS-42\"\n[backends.stable.release]\ncommit = \"fedcba9876543210\"\n";

/// Issue 24: a backend's release metadata (commit, notes, ticket) is on
/// every surface that shows a decision or a release: the audit events
/// (the notify webhook sends the same JSON), the routes and backends API,
/// `weir ctl status`, and `weir_build_info`. A reload that changes only
/// the metadata keeps the rollout and relabels its next events.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn release_metadata_is_in_the_audit_the_api_the_status_and_the_metrics() {
    let stable = Upstream::start("stable", Mode::Named).await;
    let canary = Upstream::start("canary", Mode::Named).await;
    let (hook, bodies) = webhook_receiver().await;
    let route = rollout_route().replace("[[routes]]", &format!("notify = \"http://{hook}/events\"\n[[routes]]"));
    let text = config_text(stable.addr, canary.addr, &format!("{route}{RELEASE}"), "");
    let w = InProcess::start(&text).await;
    let admin = w.weir.admin_addr();
    let c = client();

    let started = &w.weir.events(Some("web"))[0];
    assert_eq!(started.kind, EventKind::Started);
    let r = started.canary_release.as_ref().unwrap();
    assert_eq!(
        (r.commit.as_deref(), r.notes.as_deref(), r.ticket.as_deref()),
        (Some("0123456789abcdef0123"), Some("https://git.example/shop/releases/v2"), Some("OPS-42"))
    );
    assert_eq!(started.stable_release.as_ref().and_then(|r| r.commit.as_deref()), Some("fedcba9876543210"));
    let (_, events) = get(&c, &format!("http://{admin}/api/v1/events?route=web"), &[]).await;
    assert!(events.contains("\"canary_release\":{\"commit\":\"0123456789abcdef0123\""), "{events}");

    let (_, routes) = get(&c, &format!("http://{admin}/api/v1/routes"), &[]).await;
    let routes: serde_json::Value = serde_json::from_str(&routes).unwrap();
    let web = routes["routes"].as_array().unwrap().iter().find(|r| r["name"] == "web").unwrap();
    assert_eq!(web["canary"]["release"]["ticket"], "OPS-42", "{web}");
    let (_, backends) = get(&c, &format!("http://{admin}/api/v1/backends"), &[]).await;
    assert!(backends.contains("https://git.example/shop/releases/v2"), "{backends}");

    let m = parse_prometheus(&get(&c, &format!("http://{admin}/metrics"), &[]).await.1);
    assert!(m
        .keys()
        .any(|(name, labels)| name == "weir_rollout_age_seconds"
            && labels.iter().any(|(k, v)| k == "route" && v == "web")));
    let labels = [("route", "web"), ("canary_version", "v2"), ("canary_commit", "0123456789abcdef0123")];
    assert_eq!(sample_sum(&m, "weir_build_info", &labels), 1.0);

    let (code, out, _) = ctl(admin, &["status"], None);
    assert_eq!(code, 0);
    let line = out.lines().find(|l| l.starts_with("web ")).unwrap();
    assert!(line.contains("canary v2@0123456789ab") && line.contains("stable v1@fedcba987654"), "{out}");

    // New release notes for the same build: the rollout carries on, and
    // what it says next names the new notes.
    std::fs::write(&w.path, text.replace("releases/v2", "releases/v2-fixed")).unwrap();
    w.weir.reload().await.unwrap();
    w.weir.act("web", weir_proxy::ManualAction::Pause).await.unwrap();
    let ev = w.weir.events(Some("web"));
    assert!(!ev.iter().any(|e| e.kind == EventKind::Started && e.at_ms > started.at_ms), "kept: {ev:?}");
    let paused = ev.iter().rev().find(|e| e.kind == EventKind::Paused).unwrap();
    let notes = paused.canary_release.as_ref().and_then(|r| r.notes.as_deref());
    assert_eq!(notes, Some("https://git.example/shop/releases/v2-fixed"));
    // The notify webhook got the same: the pause, with the new notes.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let got = bodies.lock().unwrap().clone();
        let pause = got.iter().find(|b| b.contains("\"kind\":\"paused\""));
        if let Some(b) = pause {
            assert!(b.contains("releases/v2-fixed") && b.contains("\"ticket\":\"OPS-42\""), "{b}");
            assert!(b.contains("\"stable_release\":{\"commit\":\"fedcba9876543210\"}"), "{b}");
            break;
        }
        assert!(std::time::Instant::now() < deadline, "no paused notification: {got:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A webhook receiver: answers 200 to every POST and keeps its body.
async fn webhook_receiver() -> (std::net::SocketAddr, Arc<Mutex<Vec<String>>>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let bodies = Arc::new(Mutex::new(Vec::new()));
    let keep = bodies.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            let keep = keep.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 8192];
                loop {
                    // The head, then as much body as Content-Length says.
                    if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
                        let len = head
                            .lines()
                            .find_map(|l| l.strip_prefix("content-length:"))
                            .and_then(|v| v.trim().parse::<usize>().ok())
                            .unwrap_or(0);
                        if buf.len() >= end + 4 + len {
                            let body = String::from_utf8_lossy(&buf[end + 4..end + 4 + len]).into_owned();
                            keep.lock().unwrap().push(body);
                            let _ =
                                s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n").await;
                            return;
                        }
                    }
                    match s.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
            });
        }
    });
    (addr, bodies)
}

/// `weir ctl wait` (real binary), as a CI step would run it.
async fn ctl_wait(admin: std::net::SocketAddr, args: &[&str]) -> (i32, String) {
    let out = tokio::process::Command::new(weir_bin())
        .args(["ctl", "wait"])
        .args(args)
        .args(["--admin", &format!("http://{admin}")])
        .output()
        .await
        .unwrap();
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Issue 25: `weir ctl wait ROUTE --for ...` exits 0 on the outcome it
/// waits for (a promotion once its bake is over), 6 when the rollout ends
/// the other way, 7 when it times out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weir_ctl_wait_gates_a_pipeline_on_the_rollouts_outcome() {
    // Built before the rollouts start, so that the waits see them live.
    weir_bin();
    let stable = Upstream::start("stable", Mode::Named).await;
    let good = Upstream::start("canary", Mode::Named).await;
    let bad = Upstream::start("canary", Mode::FailTenths(3)).await;
    let plan = |bake: &str, last: &str| {
        format!(
            "[routes.rollout]\ninterval = \"250ms\"\nstages = [{{ weight = 50, bake = \"{bake}\" }}, {{ weight = 100, bake = \"{last}\" }}]\n\
             gates = [{{ metric = \"error_rate\", max = 0.1, min_samples = 20 }}]\n"
        )
    };
    // Promoted after about a second, then a 4 s post-promotion bake.
    let healthy = InProcess::start(&config_text(stable.addr, good.addr, &plan("1s", "4s"), "")).await;
    let failing = InProcess::start(&config_text(stable.addr, bad.addr, &plan("10m", "10m"), "")).await;
    let slow = InProcess::start(&config_text(stable.addr, good.addr, &plan("10m", "10m"), "")).await;
    let loads =
        [healthy.url("/"), failing.url("/"), slow.url("/")].map(|u| Load::start(u, 2, Duration::from_millis(5)));

    let (code, out) = ctl_wait(healthy.weir.admin_addr(), &["web", "--for", "promoted", "--timeout", "60s"]).await;
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("promoted (baking)") && out.lines().last().is_some_and(|l| l.contains("promoted stage")),
        "{out}"
    );
    assert!(!healthy.weir.rollout("web").unwrap().verdicts.is_empty());

    let (code, out) = ctl_wait(failing.weir.admin_addr(), &["web", "--for", "promoted", "--timeout", "60s"]).await;
    assert_eq!(code, 6, "rolled back while waiting for a promotion: {out}");
    assert_eq!(ctl_wait(failing.weir.admin_addr(), &["web", "--for", "rolled-back", "--timeout", "5s"]).await.0, 0);

    let (code, out) = ctl_wait(slow.weir.admin_addr(), &["web", "--for", "promoted", "--timeout", "2s"]).await;
    assert_eq!(code, 7, "{out}");
    assert!(out.contains("progressing stage 0"), "{out}");
    assert_eq!(ctl_wait(slow.weir.admin_addr(), &["nope", "--timeout", "2s"]).await.0, 3);
    for l in loads {
        l.stop().await;
    }
}

/// A call to the admin listener with these headers: its status.
async fn call(method: http::Method, url: &str, headers: &[(&str, &str)]) -> StatusCode {
    let mut b = Request::builder().method(method).uri(url);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    client().request(b.body(Full::new(Bytes::new())).unwrap()).await.unwrap().status()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_listener_refuses_rebound_names_cross_site_calls_and_token_guessing() {
    use http::Method;
    // No token: mutating calls are open on loopback, to weir ctl and the
    // dashboard, not to another site's page.
    let (_s, _c, w) = named_pair(&rollout_route(), "hosts = [\"weir-admin.internal\"]").await;
    let admin = w.weir.admin_addr();
    let url = |path: &str| format!("http://{admin}{path}");
    // DNS rebinding: a page's own name pointed at 127.0.0.1.
    assert_eq!(call(Method::GET, &url("/api/v1/routes"), &[("host", "evil.example:9901")]).await, 403);
    assert_eq!(call(Method::POST, &url("/api/v1/routes/web/pause"), &[("host", "evil.example")]).await, 403);
    // The health probes answer whatever the name (a probe configured with one).
    assert_eq!(call(Method::GET, &url("/readyz"), &[("host", "weir.example")]).await, 200);
    for ok in ["localhost:9901", "weir-admin.internal:9901", &admin.to_string()] {
        assert_eq!(call(Method::GET, &url("/api/v1/routes"), &[("host", ok)]).await, 200, "{ok}");
    }
    // Another site's page posting to the admin port.
    let from_elsewhere = [("origin", "https://evil.example")];
    assert_eq!(call(Method::POST, &url("/api/v1/routes/web/pause"), &from_elsewhere).await, 403);
    assert_eq!(call(Method::POST, &url("/api/v1/routes/web/pause"), &[("sec-fetch-site", "cross-site")]).await, 403);
    assert_eq!(w.weir.rollout("web").unwrap().phase, Phase::Progressing, "a refused call changed the rollout");
    // The dashboard's own origin, and weir ctl (no Origin): allowed.
    let own = format!("http://{admin}");
    assert_eq!(call(Method::POST, &url("/api/v1/routes/web/pause"), &[("origin", &own)]).await, 200);
    assert_eq!(call(Method::POST, &url("/api/v1/routes/web/resume"), &[]).await, 200);

    // With a token: ten wrong ones from an address, and even the right one
    // is refused for a while (429 with Retry-After).
    let stable = Upstream::start("stable", Mode::Named).await;
    let canary = Upstream::start("canary", Mode::Named).await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("admin.token"), format!("{TOKEN}\n")).unwrap();
    let path = dir.path().join("weir.toml");
    std::fs::write(&path, config_text(stable.addr, canary.addr, &rollout_route(), "token_file = \"admin.token\""))
        .unwrap();
    let w = weir_proxy::Weir::start(weir_proxy::reload::read_config(&path).unwrap(), Some(path.clone())).await.unwrap();
    let pause = format!("http://{}/api/v1/routes/web/pause", w.admin_addr());
    for _ in 0..10 {
        assert_eq!(post(&pause, Some("guess")).await.0, 401);
    }
    let resp = client()
        .request(
            Request::post(&pause)
                .header("authorization", format!("Bearer {TOKEN}"))
                .body(Full::new(Bytes::new()))
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(resp.status(), 429);
    let retry: u64 = resp.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry), "{retry}");
    assert_eq!(w.rollout("web").unwrap().phase, Phase::Progressing);
    // A call without a token is no guess: told it needs one, as before.
    assert_eq!(post(&pause, None).await.0, 401);
    // Reads are not affected.
    assert_eq!(get(&client(), &format!("http://{}/api/v1/routes", w.admin_addr()), &[]).await.0, 200);
}
