//! Notifications that reach people: a rollout's `notify` sinks over
//! `https://` to a receiver weir did not write (`tests/notify/receiver.py`:
//! Python's HTTP, TLS and HMAC), each payload checked with its receiver's
//! own validator (Slack's SDK, the Adaptive Card schema, PagerDuty's
//! documented fields), weir's JSON signed, failures retried with backoff
//! under one delivery id, and what never got through counted as a dead
//! letter.

use std::collections::HashMap;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use weir_proxy::ManualAction;

use crate::tls::Ca;
use crate::{client, config_text, get, parse_prometheus, sample, workspace, InProcess, Mode, Upstream};

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
    let route = format!(
        "[routes.rollout]\nstages = [{{ weight = 10, bake = \"10m\" }}, {{ weight = 100 }}]\n\
         gates = [{{ metric = \"error_rate\", max = 0.05 }}]\n{sinks}"
    );
    let top = format!(
        "[webhooks]\nca = \"{}\"\nsecret_file = \"{}\"\nretries = 2\n[admin]\naddr = \"127.0.0.1:0\"",
        ca_file.display(),
        secret.display()
    );
    let stable = Upstream::start("stable", Mode::Named).await;
    let canary = Upstream::start("canary", Mode::Named).await;
    let text = config_text(stable.addr, canary.addr, &route, "").replacen("[admin]\naddr = \"127.0.0.1:0\"", &top, 1);
    let w = InProcess::start(&text).await;

    // The start: /flaky answers 503 twice, then takes the third attempt,
    // all three with one delivery id.
    let flaky = rx.wait("/flaky", 3).await;
    assert_eq!(flaky.iter().map(|l| l["status"].as_u64().unwrap()).collect::<Vec<_>>(), [503, 503, 200]);
    assert!(flaky.iter().all(|l| l["delivery"] == flaky[0]["delivery"] && l["event"] == "started"), "{flaky:#?}");
    assert_eq!(flaky[0]["delivery"].as_str().unwrap().len(), 32);

    w.weir.act("web", ManualAction::Pause).await.unwrap();
    w.weir.act("web", ManualAction::PromoteFull).await.unwrap();
    // started, paused, promoted everywhere; PagerDuty only what opens or
    // closes an alert: the pause triggers, the promotion resolves.
    let weir_json = rx.wait("/weir", 3).await;
    let slack = rx.wait("/slack/T000/B000/XXXX", 3).await;
    let teams = rx.wait("/teams", 3).await;
    let pd = rx.wait("/pagerduty", 2).await;
    for l in weir_json.iter().chain(&slack).chain(&teams).chain(&pd) {
        assert_eq!(l["check"], "ok", "{l:#}");
    }
    let mut kinds: Vec<&str> = weir_json.iter().map(|l| l["payload"]["kind"].as_str().unwrap()).collect();
    kinds.sort();
    assert_eq!(kinds, ["paused", "promoted", "started"]);
    let pd_actions: HashMap<&str, &str> =
        pd.iter().map(|l| (l["event"].as_str().unwrap(), l["payload"]["event_action"].as_str().unwrap())).collect();
    assert_eq!(pd_actions, HashMap::from([("paused", "trigger"), ("promoted", "resolve")]));
    assert_eq!(pd[0]["payload"]["dedup_key"], pd[1]["payload"]["dedup_key"]);
    assert_eq!(pd[0]["payload"]["routing_key"], "0123456789abcdef0123456789abcdef");
    let paused = slack.iter().find(|l| l["event"] == "paused").unwrap();
    assert!(paused["payload"]["text"].as_str().unwrap().starts_with("weir web: rollout paused"), "{paused:#}");

    // Dead letters: /down (500) after 3 attempts per event, /refuse (400)
    // at once; 6 weir-format deliveries made it (/weir and /flaky).
    let down = rx.wait("/down", 9).await;
    assert!(down.iter().all(|l| l["check"] == "ok"), "{down:#?}");
    let refused = rx.wait("/refuse", 3).await;
    let mut ids: Vec<_> = refused.iter().map(|l| l["delivery"].as_str().unwrap()).collect();
    ids.dedup();
    assert_eq!(ids.len(), 3, "a 400 is not retried");
    let labels = |result| [("route", "web"), ("format", "weir"), ("result", result)];
    let m = metric_reaches(&w, "weir_notify_deliveries_total", &labels("dead_letter"), 6.0).await;
    assert_eq!(sample(&m, "weir_notify_deliveries_total", &labels("delivered")), 6.0);
    assert_eq!(
        sample(&m, "weir_notify_deliveries_total", &[("route", "web"), ("format", "slack"), ("result", "delivered")]),
        3.0
    );
    assert_eq!(
        sample(
            &m,
            "weir_notify_deliveries_total",
            &[("route", "web"), ("format", "pagerduty"), ("result", "delivered")]
        ),
        2.0
    );
    // /flaky's 2 and /down's 2 for each of 3 events.
    assert_eq!(sample(&m, "weir_notify_retries_total", &[("route", "web"), ("format", "weir")]), 8.0);
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
