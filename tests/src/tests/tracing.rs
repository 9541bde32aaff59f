//! Tracing: W3C trace context through weir to an upstream that reads
//! `traceparent`, and weir's spans received by an OTLP/HTTP receiver that
//! decodes them with OpenTelemetry's official protobuf definitions
//! (`tests/otlp/receiver.py`, PyPI `opentelemetry-proto`): parent and
//! child ids end to end, head sampling, canary errors always exported, the
//! trace id in the access log.

use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};

use crate::{client, config_text, get, workspace, InProcess, Mode, Upstream};

struct Receiver {
    port: u16,
    lines: tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
    _child: tokio::process::Child,
}

impl Receiver {
    async fn start() -> Receiver {
        let mut child = tokio::process::Command::new("python3")
            .arg(workspace().join("tests/otlp/receiver.py"))
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("python3 is needed");
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let first = tokio::time::timeout(Duration::from_secs(30), lines.next_line()).await.unwrap().unwrap().unwrap();
        let port = first.strip_prefix("listening ").unwrap().parse().unwrap();
        Receiver { port, lines, _child: child }
    }

    /// The spans received within `wait` of the last one.
    async fn spans(&mut self, wait: Duration) -> Vec<serde_json::Value> {
        let mut out = Vec::new();
        while let Ok(Ok(Some(line))) = tokio::time::timeout(wait, self.lines.next_line()).await {
            let v: serde_json::Value = serde_json::from_str(&line).unwrap();
            assert!(v.get("error").is_none(), "the receiver could not decode an export: {v}");
            out.push(v);
        }
        out
    }
}

fn traceparent(seen: &crate::Seen) -> String {
    seen.headers.get("traceparent").expect("the upstream got a traceparent").to_str().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_reach_an_otlp_receiver_with_parent_and_child_ids_end_to_end() {
    let mut rx = Receiver::start().await;
    let stable = Upstream::start("stable", Mode::Named).await;
    let canary = Upstream::start("canary", Mode::Status(500)).await;
    let dir = tempfile::tempdir().unwrap();
    let access = dir.path().join("access.log");
    let top = format!(
        "[log]\naccess = \"{}\"\n[tracing]\nendpoint = \"http://127.0.0.1:{}\"\nsample_ratio = 0.0\nservice_name = \"edge\"",
        access.display(),
        rx.port
    );
    let w =
        InProcess::start(&config_text(stable.addr, canary.addr, "weight = 0\nforce = { header = \"x-canary\" }", &top))
            .await;
    let c = client();
    const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
    const PARENT: &str = "00f067aa0ba902b7";

    // 1. A caller's sampled context: continued, weir's span in between.
    let sampled = format!("00-{TRACE}-{PARENT}-01");
    let (status, _) = get(&c, &w.url("/orders/7"), &[("traceparent", &sampled), ("tracestate", "vendor=x")]).await;
    assert_eq!(status, 200);
    let seen = stable.seen.lock().unwrap()[0].clone();
    let sent = traceparent(&seen);
    let parts: Vec<&str> = sent.split('-').collect();
    assert_eq!((parts[0], parts[1], parts[3]), ("00", TRACE, "01"), "{sent}");
    let weir_span = parts[2].to_string();
    assert_ne!(weir_span, PARENT);
    assert_eq!(seen.headers.get("tracestate").unwrap(), "vendor=x");

    // 2. No context, ratio 0: a new trace, unsampled, nothing exported; a
    // tracestate without its traceparent belonged to another trace.
    get(&c, &w.url("/quiet"), &[("tracestate", "vendor=stale")]).await;
    let quiet_seen = stable.seen.lock().unwrap()[1].clone();
    let quiet = traceparent(&quiet_seen);
    assert!(quiet.starts_with("00-") && quiet.ends_with("-00") && !quiet.contains(TRACE), "{quiet}");
    assert!(quiet_seen.headers.get("tracestate").is_none());

    // 3. A caller's unsampled context: followed, nothing exported.
    let unsampled = format!("00-{TRACE}-{PARENT}-00");
    get(&c, &w.url("/also-quiet"), &[("traceparent", &unsampled)]).await;
    assert!(traceparent(&stable.seen.lock().unwrap()[2]).ends_with("-00"));

    // 4. A canary request that fails: exported although unsampled.
    let failing = format!("00-{}-{PARENT}-00", "a".repeat(32));
    let (status, _) = get(&c, &w.url("/checkout"), &[("traceparent", &failing), ("x-canary", "always")]).await;
    assert_eq!(status, 500);

    // Shutdown exports what is queued: every span is in after it.
    let log_path = access.clone();
    w.weir.shutdown().await;
    let spans = rx.spans(Duration::from_secs(3)).await;
    assert_eq!(spans.len(), 2, "{spans:#?}");
    let first = spans.iter().find(|s| s["trace_id"] == TRACE).expect("the sampled request's span");
    assert_eq!(first["span_id"], weir_span.as_str());
    assert_eq!(first["parent_span_id"], PARENT);
    assert_eq!(first["name"], "GET web");
    assert_eq!(first["kind"], 2, "SPAN_KIND_SERVER");
    assert_eq!(first["service"], "edge");
    assert_eq!(first["scope"], "weir");
    let a = &first["attributes"];
    assert_eq!(a["weir.route"], "web");
    assert_eq!(a["weir.side"], "stable");
    assert_eq!(a["weir.backend"], "stable");
    assert_eq!(a["weir.release"], "v1");
    assert_eq!(a["weir.upstream.address"], "127.0.0.1");
    assert_eq!(a["weir.upstream.port"], stable.addr.port());
    assert_eq!(a["http.response.status_code"], 200);
    assert_eq!(a["url.path"], "/orders/7");
    assert_eq!(a["weir.outcome"], "ok");
    assert!(first["duration_ns"].as_u64().unwrap() > 0);

    let failed = spans.iter().find(|s| s["trace_id"] == "a".repeat(32)).expect("the canary error's span");
    assert_eq!(failed["parent_span_id"], PARENT);
    assert_eq!(failed["status"], 2, "STATUS_CODE_ERROR");
    assert_eq!(failed["attributes"]["weir.side"], "canary");
    assert_eq!(failed["attributes"]["weir.sampled_for"], "canary_error");
    assert_eq!(failed["attributes"]["http.response.status_code"], 500);

    // The access log names each request's trace.
    let log = std::fs::read_to_string(&log_path).unwrap();
    let lines: Vec<serde_json::Value> = log.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 4);
    assert_eq!(lines[0]["trace_id"], TRACE);
    assert_eq!(lines[1]["trace_id"].as_str().unwrap(), quiet.split('-').nth(1).unwrap());
    assert_eq!(lines[2]["trace_id"], TRACE, "a continued trace, unsampled");
    assert_eq!(lines[3]["trace_id"], "a".repeat(32));
}

/// Without `[tracing]`, weir neither adds nor changes trace headers: the
/// caller's pass through untouched, and none is made up; access-log lines
/// carry no trace_id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_tracing_trace_headers_pass_through_untouched() {
    let stable = Upstream::start("stable", Mode::Named).await;
    let dir = tempfile::tempdir().unwrap();
    let access = dir.path().join("access.log");
    let top = format!("[log]\naccess = \"{}\"", access.display());
    let w = InProcess::start(&config_text(stable.addr, stable.addr, "weight = 0", &top)).await;
    let c = client();
    let theirs = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    get(&c, &w.url("/"), &[("traceparent", theirs)]).await;
    get(&c, &w.url("/"), &[]).await;
    let seen = stable.seen.lock().unwrap().clone();
    assert_eq!(seen[0].headers.get("traceparent").unwrap(), theirs);
    assert!(seen[1].headers.get("traceparent").is_none());
    w.weir.shutdown().await;
    let log = std::fs::read_to_string(&access).unwrap();
    assert_eq!(log.lines().count(), 2);
    assert!(!log.contains("trace_id"), "{log}");
}
