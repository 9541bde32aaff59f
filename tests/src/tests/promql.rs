//! Gates on outside signals (issue 24): a real Prometheus (Debian
//! `prometheus`) scrapes an exporter whose values the test sets, and weir's
//! `promql` gates query it.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use weir_control::gate::Verdict;
use weir_control::rollout::{EventKind, Phase};

use crate::*;

/// A metrics endpoint answering every request with `text`.
async fn exporter(text: &'static str) -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                let head = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: text/plain; version=0.0.4\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                    text.len()
                );
                let _ = s.write_all(head.as_bytes()).await;
                let _ = s.write_all(text.as_bytes()).await;
            });
        }
    });
    addr
}

const SHOP: &str = "# TYPE checkout_failure_ratio gauge\n\
    checkout_failure_ratio{version=\"v1\"} 0.01\n\
    checkout_failure_ratio{version=\"v2\"} 0.3\n";

fn rollout(gates: &str) -> String {
    format!(
        "[routes.rollout]\ninterval = \"250ms\"\nhold_timeout = \"5m\"\n\
         stages = [{{ weight = 20, bake = \"1s\" }}, {{ weight = 100, bake = \"1s\" }}]\n\
         gates = [{{ metric = \"error_rate\", max = 0.2, min_samples = 5 }}, {gates}]\n"
    )
}

const CHECKOUT: &str = r#"{ metric = "promql", name = "checkout", query = 'max(checkout_failure_ratio{version="{{version}}"})', max = 0.05"#;

/// A canary whose checkouts fail 30 % of the time (by the shop's own
/// metric, in Prometheus) is rolled back by a promql gate, the query and
/// its value in the audit; the same gate as a dry run reports the failure
/// and lets the healthy-looking canary through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_promql_gate_rolls_back_and_its_dry_run_only_reports() {
    let prom = Prometheus::start(exporter(SHOP).await).await;
    // The dry run does not wait for a reading: have one before it starts.
    prom.wait_for("checkout_failure_ratio").await;
    let stable = Upstream::start("stable", Mode::Named).await;
    let canary = Upstream::start("canary", Mode::Named).await;
    let acting =
        InProcess::start(&config_text(stable.addr, canary.addr, &rollout(&format!("{CHECKOUT} }}")), &prom.section()))
            .await;
    let dry = InProcess::start(&config_text(
        stable.addr,
        canary.addr,
        &rollout(&format!("{CHECKOUT}, dry_run = true }}")),
        &prom.section(),
    ))
    .await;
    let (mut rx_acting, mut rx_dry) = (acting.weir.subscribe(), dry.weir.subscribe());
    let loads = [
        Load::start(acting.url("/"), 2, Duration::from_millis(5)),
        Load::start(dry.url("/"), 2, Duration::from_millis(5)),
    ];

    let rb = wait_event(&mut rx_acting, Duration::from_secs(60), |e| e.kind == EventKind::RolledBack).await;
    let v = rb.verdicts.iter().find(|v| v.gate == "checkout").unwrap();
    assert_eq!((v.verdict, v.value, v.threshold), (Verdict::Fail, Some(0.3), Some(0.05)), "{v:?}");
    assert_eq!(v.query.as_deref(), Some(r#"max(checkout_failure_ratio{version="v2"})"#));
    assert!(v.evaluated_at_ms.is_some_and(|t| t <= rb.at_ms), "{v:?}");
    assert!(rb.cause.contains("checkout"), "{}", rb.cause);
    assert_eq!(acting.weir.route_weight_bp("web"), Some(0));
    let m = parse_prometheus(&get(&client(), &format!("http://{}/metrics", acting.weir.admin_addr()), &[]).await.1);
    assert_eq!(sample(&m, "weir_gate_value", &[("route", "web"), ("gate", "checkout")]), 0.3);

    let promoted = wait_event(&mut rx_dry, Duration::from_secs(60), |e| e.kind == EventKind::Promoted).await;
    let v = promoted.verdicts.iter().find(|v| v.gate == "checkout").unwrap();
    assert!(v.dry_run, "{v:?}");
    // The dry run saw the failure: in the audit (the rollout's evaluated
    // events) and the metrics.
    let saw = dry.weir.events(Some("web")).iter().any(|e| {
        e.verdicts
            .iter()
            .any(|v| v.gate == "checkout" && v.dry_run && v.verdict == Verdict::Fail && v.value == Some(0.3))
    });
    assert!(saw, "{:#?}", dry.weir.events(Some("web")));
    let m = parse_prometheus(&get(&client(), &format!("http://{}/metrics", dry.weir.admin_addr()), &[]).await.1);
    let fails = sample(&m, "weir_gate_verdicts_total", &[("route", "web"), ("gate", "checkout"), ("verdict", "fail")]);
    assert!(fails >= 1.0, "{fails}");
    for l in loads {
        l.stop().await;
    }
}

/// The gate's reading for the current stage, once it has one with `note`
/// and the other gate passes past the bake: the moment the stage would
/// have advanced had the promql gate passed.
async fn wait_judged(w: &InProcess, note: &str) -> weir_control::gate::GateResult {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let st = w.weir.rollout("web").unwrap();
        let found =
            st.verdicts.iter().find(|v| v.gate == "checkout" && v.note.as_deref().is_some_and(|n| n.contains(note)));
        let others_pass = st.verdicts.iter().any(|v| v.gate == "error_rate" && v.verdict == Verdict::Pass);
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64;
        let baked = w.weir.events(Some("web")).first().is_some_and(|e| now >= e.at_ms + 2000);
        if let (Some(v), true, true) = (found, others_pass, baked) {
            return v.clone();
        }
        assert!(Instant::now() < deadline, "never judged with {note:?}: {:?}", st.verdicts);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// An empty result, a Prometheus that does not answer and one that refuses
/// connections are inconclusive: the
/// stage holds, its other gate passing and its bake over, and never
/// promotes on the missing signal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_promql_gate_without_a_reading_holds_the_stage() {
    let prom = Prometheus::start(exporter(SHOP).await).await;
    let stable = Upstream::start("stable", Mode::Named).await;
    let canary = Upstream::start("canary", Mode::Named).await;
    let nothing =
        r#"{ metric = "promql", name = "checkout", query = 'max(no_such_metric{version="{{version}}"})', max = 0.05 }"#;
    let empty = InProcess::start(&config_text(stable.addr, canary.addr, &rollout(nothing), &prom.section())).await;
    // A Prometheus that never answers: the listener is held (so no other
    // test can take its port) and never accepts.
    let hung = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let down = format!(
        "[prometheus]\nurl = \"http://{}\"\ninterval = \"500ms\"\ntimeout = \"1s\"\n",
        hung.local_addr().unwrap()
    );
    let unreachable =
        InProcess::start(&config_text(stable.addr, canary.addr, &rollout(&format!("{CHECKOUT} }}")), &down)).await;
    // And one that refuses connections (nothing listens on port 1).
    let refused = "[prometheus]\nurl = \"http://127.0.0.1:1\"\ninterval = \"500ms\"\ntimeout = \"1s\"\n";
    let refusing =
        InProcess::start(&config_text(stable.addr, canary.addr, &rollout(&format!("{CHECKOUT} }}")), refused)).await;
    let loads = [
        Load::start(empty.url("/"), 2, Duration::from_millis(5)),
        Load::start(unreachable.url("/"), 2, Duration::from_millis(5)),
        Load::start(refusing.url("/"), 2, Duration::from_millis(5)),
    ];
    for (w, note) in
        [(&empty, "empty result"), (&unreachable, "no answer within 1s"), (&refusing, "http://127.0.0.1:1: ")]
    {
        let v = wait_judged(w, note).await;
        assert_eq!(v.verdict, Verdict::Inconclusive, "{v:?}");
        let st = w.weir.rollout("web").unwrap();
        assert_eq!((st.stage, st.phase), (0, Phase::Progressing), "{:?}", st.verdicts);
        assert!(!w.weir.events(Some("web")).iter().any(|e| e.kind == EventKind::Advanced));
    }
    for l in loads {
        l.stop().await;
    }
}

/// An `https://` Prometheus, verified against the CA of `prometheus.ca`,
/// with a bearer token sent (Prometheus ignores it; the file must be read).
/// Both files are named relative to the config file (the CA used to be
/// looked for one directory too high).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_promql_gate_reads_prometheus_over_tls() {
    let certs = tempfile::tempdir().unwrap();
    let ca = crate::tls::Ca::new("prometheus test CA");
    let (cert, key) = ca.leaf(&["127.0.0.1"], false).write(certs.path(), "prometheus");
    let ca_file = ca.write(certs.path(), "ca");
    let token = certs.path().join("token");
    std::fs::write(&token, "s3cret\n").unwrap();
    let prom = Prometheus::start_with(exporter(SHOP).await, Some((&cert, &key))).await;
    let stable = Upstream::start("stable", Mode::Named).await;
    let canary = Upstream::start("canary", Mode::Named).await;
    let section = format!(
        "[prometheus]\nurl = \"https://127.0.0.1:{}\"\ninterval = \"500ms\"\ntimeout = \"2s\"\nca = \"{}\"\nbearer_token_file = \"{}\"\n",
        prom.port,
        ca_file.file_name().unwrap().to_str().unwrap(),
        token.file_name().unwrap().to_str().unwrap()
    );
    let path = certs.path().join("weir.toml");
    std::fs::write(&path, config_text(stable.addr, canary.addr, &rollout(&format!("{CHECKOUT} }}")), &section))
        .unwrap();
    let w = weir_proxy::Weir::start(weir_proxy::reload::read_config(&path).unwrap(), Some(path.clone())).await.unwrap();
    let mut rx = w.subscribe();
    let url = format!("http://{}/", w.data_addr());
    let load = Load::start(url, 2, Duration::from_millis(5));
    let rb = wait_event(&mut rx, Duration::from_secs(60), |e| e.kind == EventKind::RolledBack).await;
    let v = rb.verdicts.iter().find(|v| v.gate == "checkout").unwrap();
    assert_eq!((v.verdict, v.value), (Verdict::Fail, Some(0.3)), "{v:?}");
    load.stop().await;
    w.shutdown().await;
}
