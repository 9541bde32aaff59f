//! Notifications that reach people: a rollout's `notify` sinks over
//! `https://` to a receiver weir did not write (`tests/notify/receiver.py`:
//! Python's HTTP, TLS and HMAC), each payload checked with its receiver's
//! own validator (Slack's SDK, the Adaptive Card schema, PagerDuty's
//! documented fields), weir's JSON signed, failures retried with backoff
//! under one delivery id, and what never got through counted as a dead
//! letter.

use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use weir_control::rollout::EventKind;
use weir_proxy::ManualAction;

use crate::tls::Ca;
use crate::{
    client, config_text, get, parse_prometheus, sample, wait_event, workspace, InProcess, Load, Mode, Upstream,
};

const SECRET: &str = "notify-test-secret-0123456789abcdef";

/// Requests the receiver saw, one JSON object each, as they arrive.
struct Receiver {
    port: u16,
    lines: tokio::sync::mpsc::UnboundedReceiver<serde_json::Value>,
    seen: Vec<serde_json::Value>,
    _child: tokio::process::Child,
}

impl Receiver {
    async fn start(cert: &std::path::Path, key: &std::path::Path, secret: &std::path::Path) -> Receiver {
        let mut child = tokio::process::Command::new("python3")
            .arg(workspace().join("tests/notify/receiver.py"))
            .args([cert, key, secret])
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("python3 is needed");
        let mut out = BufReader::new(child.stdout.take().unwrap()).lines();
        let first = tokio::time::timeout(Duration::from_secs(30), out.next_line()).await.unwrap().unwrap().unwrap();
        let port = first.strip_prefix("listening ").unwrap().parse().unwrap();
        let (tx, lines) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Ok(Some(line)) = out.next_line().await {
                let _ = tx.send(serde_json::from_str(&line).unwrap());
            }
        });
        Receiver { port, lines, seen: Vec::new(), _child: child }
    }

    /// Waits until `path` has had `n` requests; all of `path`'s so far.
    async fn wait(&mut self, path: &str, n: usize) -> Vec<serde_json::Value> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let got: Vec<_> = self.seen.iter().filter(|l| l["path"] == path).cloned().collect();
            if got.len() >= n {
                return got;
            }
            match tokio::time::timeout_at(deadline, self.lines.recv()).await {
                Ok(Some(l)) => self.seen.push(l),
                _ => panic!("{path}: {} of {n} requests within 30 s: {:#?}", got.len(), self.seen),
            }
        }
    }
}

/// Polls weir's `/metrics` until `name{labels}` is `want` (deliveries
/// finish in the background: the counter is the signal); the samples then.
async fn metric_reaches(w: &InProcess, name: &str, labels: &[(&str, &str)], want: f64) -> crate::Samples {
    let url = format!("http://{}/metrics", w.weir.admin_addr());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let m = parse_prometheus(&get(&client(), &url, &[]).await.1);
        let got = sample(&m, name, labels);
        if got == want {
            return m;
        }
        assert!(tokio::time::Instant::now() < deadline, "{name}{labels:?} is {got}, not {want}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notifications_reach_slack_teams_pagerduty_and_signed_receivers() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("webhook test CA");
    let ca_file = ca.write(dir.path(), "ca");
    let (cert, key) = ca.leaf(&["127.0.0.1"], false).write(dir.path(), "receiver");
    let secret = dir.path().join("webhook.secret");
    std::fs::write(&secret, format!("{SECRET}\n")).unwrap();
    let routing_key = dir.path().join("pagerduty.key");
    std::fs::write(&routing_key, "0123456789abcdef0123456789abcdef\n").unwrap();
    let mut rx = Receiver::start(&cert, &key, &secret).await;

    let base = format!("https://127.0.0.1:{}", rx.port);
    let sinks = format!(
        "notify = [\"{base}/weir\", {{ url = \"{base}/slack/T000/B000/XXXX\", format = \"slack\" }}, \
         {{ url = \"{base}/teams\", format = \"teams\" }}, \
         {{ url = \"{base}/pagerduty\", format = \"pagerduty\", routing_key_file = \"{}\" }}, \
         \"{base}/flaky\", \"{base}/down\", \"{base}/refuse\"]\nwebhook_timeout = \"2s\"",
        routing_key.display()
    );
    // The gates roll a failing canary back within a second or so.
    let route = format!(
        "[routes.rollout]\ninterval = \"200ms\"\nfailure_threshold = 1\n\
         stages = [{{ weight = 50, bake = \"10m\" }}, {{ weight = 100 }}]\n\
         gates = [{{ metric = \"error_rate\", max = 0.05, min_samples = 20 }}]\n{sinks}"
    );
    let top = format!(
        "[webhooks]\nca = \"{}\"\nsecret_file = \"{}\"\nretries = 2\n[admin]\naddr = \"127.0.0.1:0\"",
        ca_file.display(),
        secret.display()
    );
    let stable = Upstream::start("stable", Mode::Named).await;
    let canary = Upstream::start("canary", Mode::Status(500)).await;
    let text = config_text(stable.addr, canary.addr, &route, "").replacen("[admin]\naddr = \"127.0.0.1:0\"", &top, 1);
    let w = InProcess::start(&text).await;
    let mut events = w.weir.subscribe();

    // The start: /flaky answers 503 twice, then takes the third attempt,
    // all three with one delivery id.
    let flaky = rx.wait("/flaky", 3).await;
    assert_eq!(flaky.iter().map(|l| l["status"].as_u64().unwrap()).collect::<Vec<_>>(), [503, 503, 200]);
    assert!(flaky.iter().all(|l| l["delivery"] == flaky[0]["delivery"] && l["event"] == "started"), "{flaky:#?}");
    assert_eq!(flaky[0]["delivery"].as_str().unwrap().len(), 32);

    // The gates roll back; an operator resumes, then promotes.
    let load = Load::start(w.url("/"), 2, Duration::from_millis(5));
    wait_event(&mut events, Duration::from_secs(20), |e| e.kind == EventKind::RolledBack).await;
    load.stop().await;
    w.weir.act("web", ManualAction::Resume).await.unwrap();
    w.weir.act("web", ManualAction::PromoteFull).await.unwrap();
    let kinds: Vec<String> = w
        .weir
        .events(Some("web"))
        .iter()
        .filter(|e| e.kind != EventKind::Evaluated)
        .map(|e| e.kind.as_str().to_string())
        .collect();
    let n = kinds.len();
    assert!(n >= 4 && kinds[..2] == ["started", "rolled_back"], "{kinds:?}");

    // Every sink got every event, in the order they happened.
    let weir_json = rx.wait("/weir", n).await;
    let slack = rx.wait("/slack/T000/B000/XXXX", n).await;
    let teams = rx.wait("/teams", n).await;
    let order = |lines: &[serde_json::Value]| {
        lines.iter().map(|l| l["event"].as_str().unwrap().to_string()).collect::<Vec<_>>()
    };
    assert_eq!(order(&weir_json), kinds);
    assert_eq!(order(&slack), kinds);
    assert_eq!(order(&teams), kinds);
    // PagerDuty: the rollback triggers, what ends it resolves, in order.
    let pd_want: Vec<(String, &str)> = kinds
        .iter()
        .filter_map(|k| match k.as_str() {
            "rolled_back" | "held" => Some((k.clone(), "trigger")),
            "advanced" | "promoted" | "resumed" | "aborted" => Some((k.clone(), "resolve")),
            _ => None,
        })
        .collect();
    let pd = rx.wait("/pagerduty", pd_want.len()).await;
    let pd_got: Vec<(String, &str)> = pd
        .iter()
        .map(|l| (l["event"].as_str().unwrap().to_string(), l["payload"]["event_action"].as_str().unwrap()))
        .collect();
    assert_eq!(pd_got, pd_want);
    assert!(pd.iter().all(|l| l["payload"]["dedup_key"] == pd[0]["payload"]["dedup_key"]));
    assert_eq!(pd[0]["payload"]["routing_key"], "0123456789abcdef0123456789abcdef");
    for l in weir_json.iter().chain(&slack).chain(&teams).chain(&pd) {
        assert_eq!(l["check"], "ok", "{l:#}");
    }
    let rolled_back = slack.iter().find(|l| l["event"] == "rolled_back").unwrap();
    let text = rolled_back["payload"]["text"].as_str().unwrap();
    assert!(text.starts_with("weir web: canary rolled back"), "{text}");
    let gates = rolled_back["payload"]["blocks"][2]["text"]["text"].as_str().unwrap();
    assert!(gates.contains("error_rate: fail"), "{gates}");

    // Dead letters: /down (500) after 3 attempts per event, /refuse (400)
    // at once; /weir's and /flaky's deliveries made it.
    let down = rx.wait("/down", 3 * n).await;
    assert!(down.iter().all(|l| l["check"] == "ok"), "{down:#?}");
    let refused = rx.wait("/refuse", n).await;
    let mut ids: Vec<_> = refused.iter().map(|l| l["delivery"].as_str().unwrap()).collect();
    ids.dedup();
    assert_eq!(ids.len(), n, "a 400 is not retried");
    let labels = |result| [("route", "web"), ("format", "weir"), ("result", result)];
    let n = n as f64;
    metric_reaches(&w, "weir_notify_deliveries_total", &labels("dead_letter"), 2.0 * n).await;
    metric_reaches(&w, "weir_notify_deliveries_total", &labels("delivered"), 2.0 * n).await;
    let slack_ok = [("route", "web"), ("format", "slack"), ("result", "delivered")];
    metric_reaches(&w, "weir_notify_deliveries_total", &slack_ok, n).await;
    let pd_ok = [("route", "web"), ("format", "pagerduty"), ("result", "delivered")];
    metric_reaches(&w, "weir_notify_deliveries_total", &pd_ok, pd_want.len() as f64).await;
    // /flaky's 2, and /down's 2 for each event (each sink has its own
    // retry budget: 10 in 10 s at least, enough for /down's).
    metric_reaches(&w, "weir_notify_retries_total", &[("route", "web"), ("format", "weir")], 2.0 + 2.0 * n).await;
    w.weir.shutdown().await;
}

/// A receiver whose certificate weir cannot verify gets nothing: the
/// delivery is a dead letter, never sent in the clear.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unverifiable_receiver_is_a_dead_letter() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("unknown CA");
    let (cert, key) = ca.leaf(&["127.0.0.1"], false).write(dir.path(), "receiver");
    let secret = dir.path().join("webhook.secret");
    std::fs::write(&secret, format!("{SECRET}\n")).unwrap();
    let mut rx = Receiver::start(&cert, &key, &secret).await;
    let route = format!(
        "[routes.rollout]\nstages = [{{ weight = 10, bake = \"10m\" }}, {{ weight = 100 }}]\n\
         gates = [{{ metric = \"error_rate\", max = 0.05 }}]\nnotify = \"https://127.0.0.1:{}/weir\"",
        rx.port
    );
    let stable = Upstream::start("stable", Mode::Named).await;
    let canary = Upstream::start("canary", Mode::Named).await;
    let text = config_text(stable.addr, canary.addr, &route, "").replacen(
        "[admin]\naddr = \"127.0.0.1:0\"",
        "[webhooks]\nretries = 0\n[admin]\naddr = \"127.0.0.1:0\"",
        1,
    );
    let w = InProcess::start(&text).await;
    let dead = [("route", "web"), ("format", "weir"), ("result", "dead_letter")];
    metric_reaches(&w, "weir_notify_deliveries_total", &dead, 1.0).await;
    // Nothing reached the receiver as a request.
    assert!(tokio::time::timeout(Duration::from_millis(300), rx.lines.recv()).await.is_err());
    w.weir.shutdown().await;
}

/// A stage held by its pre_stage hook is held again every interval; its
/// sinks hear of it once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_stage_is_notified_once() {
    let stable = Upstream::start("stable", Mode::Named).await;
    let canary = Upstream::start("canary", Mode::Named).await;
    let hook = Upstream::start("hook", Mode::Status(503)).await;
    let sink = Upstream::start("sink", Mode::Named).await;
    let route = format!(
        "[routes.rollout]\ninterval = \"200ms\"\nstages = [{{ weight = 20, bake = \"200ms\" }}, {{ weight = 100 }}]\n\
         gates = [{{ metric = \"error_rate\", max = 0.05, min_samples = 10 }}]\n\
         pre_stage = \"http://{}/approve\"\nnotify = \"http://{}/events\"",
        hook.addr, sink.addr
    );
    let w = InProcess::start(&config_text(stable.addr, canary.addr, &route, "")).await;
    let mut events = w.weir.subscribe();
    let load = Load::start(w.url("/"), 2, Duration::from_millis(10));
    for _ in 0..3 {
        wait_event(&mut events, Duration::from_secs(10), |e| e.kind == EventKind::Held).await;
    }
    load.stop().await;
    // The start and the first hold reach the sink; not the repeats.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while sink.count() < 2 {
        assert!(tokio::time::Instant::now() < deadline, "the sink got {} events", sink.count());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    w.weir.shutdown().await;
    let seen = sink.seen.lock().unwrap().clone();
    let kinds: Vec<String> =
        seen.iter().map(|s| s.headers.get("x-weir-event").unwrap().to_str().unwrap().to_string()).collect();
    assert_eq!(kinds, ["started", "held"]);
}
