//! gRPC through weir, end to end with tonic on both sides (a server and a
//! client weir did not write): every call type, metadata and trailers,
//! deadlines and cancellation, large messages, many streams on one
//! connection, TLS, and gRPC outcomes in telemetry and gates.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use tonic::Code;

use crate::grpc::{Caller, GrpcServer};
use crate::*;

/// weir in front of two gRPC servers, both backends `http2 = true`.
fn grpc_config(stable: SocketAddr, canary: SocketAddr, route_extra: &str, top_extra: &str) -> String {
    config_text(stable, canary, route_extra, top_extra)
        .replacen("version = \"v1\"", "version = \"v1\"\nhttp2 = true", 1)
        .replacen("version = \"v2\"", "version = \"v2\"\nhttp2 = true", 1)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_call_type_passes_with_its_metadata_and_trailers() {
    let stable = GrpcServer::start("stable").await;
    let canary = GrpcServer::start("canary").await;
    let w = InProcess::start(&grpc_config(stable.addr, canary.addr, "", "")).await;
    let mut c = Caller::connect(w.weir.data_addr()).await;

    // Unary, with request and response metadata.
    let r = c.unary(Bytes::from_static(b"hello"), &[("x-echo", "back")]).await.unwrap();
    assert_eq!(r.metadata().get("x-served-by").unwrap(), "stable");
    assert_eq!(r.metadata().get("x-echo").unwrap(), "back");
    assert_eq!(r.get_ref().as_ref(), b"hello");
    let seen = stable.state.last_seen();
    assert_eq!(seen.get("te").map(|v| v.as_bytes()), Some(&b"trailers"[..]), "te: trailers reaches the upstream");
    assert!(seen.get("connection").is_none());

    // A failed unary call: a trailers-only response, its status, message
    // and trailing metadata.
    let e = c.unary(Bytes::new(), &[("x-status", "5")]).await.unwrap_err();
    assert_eq!((e.code(), e.message()), (Code::NotFound, "asked for 5"));
    assert_eq!(e.metadata().get("x-trailing").unwrap(), "kept");

    // Server streaming, ended by a status in real trailers (after data).
    let (headers, msgs, end) = c.server_stream(Bytes::from_static(b"m"), &[("x-count", "4")]).await.unwrap();
    assert_eq!(headers.get("x-served-by").unwrap(), "stable");
    assert_eq!(msgs, vec![Bytes::from_static(b"m"); 4]);
    assert!(end.is_ok(), "{end:?}");
    let (_, msgs, end) =
        c.server_stream(Bytes::from_static(b"m"), &[("x-count", "2"), ("x-status", "9")]).await.unwrap();
    assert_eq!(msgs.len(), 2);
    let e = end.unwrap_err();
    assert_eq!((e.code(), e.message()), (Code::FailedPrecondition, "asked for 9"));
    assert_eq!(e.metadata().get("x-trailing").unwrap(), "kept", "custom trailing metadata after data");

    // Client streaming.
    let parts: Vec<Bytes> = ["a", "bb", "ccc"].iter().map(|s| Bytes::from(s.to_string())).collect();
    let r = c.client_stream(parts).await.unwrap();
    assert_eq!(r.get_ref().as_ref(), b"abbccc");

    // Bidirectional, one message in flight at a time: weir must stream
    // both ways, not buffer either side.
    let msgs: Vec<Bytes> = (0..20).map(|i| Bytes::from(format!("ping {i}"))).collect();
    let got = tokio::time::timeout(Duration::from_secs(10), c.bidi_ping_pong(msgs.clone())).await.unwrap().unwrap();
    assert_eq!(got, msgs);
}

/// A `grpc-timeout` value (gRPC over HTTP/2: digits and a unit).
fn grpc_timeout(v: Option<&str>) -> Option<Duration> {
    let v = v?;
    let (n, unit) = v.split_at(v.len().checked_sub(1)?);
    let n: u64 = n.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n * 3600),
        "M" => Duration::from_secs(n * 60),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

/// Polls weir's metrics until every (backend, code) of `want` counted `n`
/// calls of route `web` (up to 5 s).
async fn grpc_codes_reach(w: &InProcess, want: &[(&str, &str)], n: f64) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let m = parse_prometheus(&get(&client(), &format!("http://{}/metrics", w.weir.admin_addr()), &[]).await.1);
        let seen: Vec<f64> = want
            .iter()
            .map(|(b, c)| {
                sample(&m, "weir_grpc_responses_total", &[("route", "web"), ("backend", b), ("grpc_code", c)])
            })
            .collect();
        if seen.iter().all(|&x| x == n) {
            return;
        }
        if tokio::time::Instant::now() >= deadline {
            let all: Vec<_> = m.iter().filter(|((name, _), _)| name.starts_with("weir_grpc")).collect();
            panic!("{want:?}: {seen:?}; all: {all:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deadlines_and_cancellations_reach_the_upstream() {
    use std::sync::atomic::Ordering::SeqCst;
    let stable = GrpcServer::start("stable").await;
    let w = InProcess::start(&grpc_config(stable.addr, stable.addr, "", "")).await;
    let mut c = Caller::connect(w.weir.data_addr()).await;

    // The deadline travels as grpc-timeout; the upstream enforces it too,
    // and its handler is dropped when the deadline passes.
    // (tonic's client enforces it too: whichever side is first, the call
    // ends as expired or cancelled.)
    let e = c.hang(Some(Duration::from_millis(300))).await.unwrap_err();
    assert!(matches!(e.code(), Code::DeadlineExceeded | Code::Cancelled), "{e:?}");
    let timeout = stable.state.last_seen().get("grpc-timeout").map(|v| v.to_str().unwrap().to_string());
    assert!(
        grpc_timeout(timeout.as_deref()).is_some_and(|t| t > Duration::ZERO && t <= Duration::from_millis(300)),
        "grpc-timeout forwarded: {timeout:?}"
    );
    until(Duration::from_secs(5), "the expired call ended upstream", || stable.state.cancelled.load(SeqCst) == 1).await;

    // A call the client abandons (RST_STREAM CANCEL) is cancelled upstream.
    let mut c2 = c.clone();
    let call = tokio::spawn(async move { c2.hang(None).await });
    until(Duration::from_secs(5), "the call reached the upstream", || stable.state.in_flight.load(SeqCst) == 1).await;
    call.abort();
    until(Duration::from_secs(5), "the cancellation reached the upstream", || {
        stable.state.cancelled.load(SeqCst) == 2 && stable.state.in_flight.load(SeqCst) == 0
    })
    .await;
    // The connection serves on.
    assert_eq!(c.unary(Bytes::from_static(b"x"), &[]).await.unwrap().get_ref().as_ref(), b"x");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_messages_and_800_concurrent_calls_share_one_upstream_connection() {
    use std::sync::atomic::Ordering::SeqCst;
    // The upstream allows 100 streams at once: weir must queue the rest.
    let opts = crate::grpc::ServerOpts { max_concurrent_streams: Some(100), ..Default::default() };
    let stable = GrpcServer::start_with("stable", opts).await;
    let w = InProcess::start(&grpc_config(stable.addr, stable.addr, "", "")).await;
    let mut c = Caller::connect(w.weir.data_addr()).await;

    // 3 MiB each way, unary and client-streamed.
    let big: Bytes = (0..3 << 20).map(|i| (i % 251) as u8).collect::<Vec<u8>>().into();
    assert_eq!(c.unary(big.clone(), &[]).await.unwrap().into_inner(), big);
    let halves = vec![big.slice(..big.len() / 2), big.slice(big.len() / 2..)];
    assert_eq!(c.client_stream(halves).await.unwrap().into_inner(), big);

    let calls: Vec<_> = (0..800)
        .map(|i| {
            let mut c = c.clone();
            tokio::spawn(async move {
                let msg = Bytes::from(format!("call {i}"));
                let r = c.unary(msg.clone(), &[("x-delay-ms", "50")]).await;
                r.map(|r| r.into_inner() == msg)
            })
        })
        .collect();
    for call in calls {
        assert_eq!(call.await.unwrap().map_err(|e| e.to_string()), Ok(true));
    }
    let peak = stable.state.peak_in_flight.load(SeqCst);
    assert!(peak <= 100, "the upstream's SETTINGS_MAX_CONCURRENT_STREAMS was exceeded: {peak}");
    assert!(peak >= 50, "calls were multiplexed, not serialised: peak {peak}");
    assert_eq!(stable.state.conns.load(SeqCst), 1, "one upstream connection carried every call");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_over_tls_on_both_sides() {
    use crate::tls::Ca;
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("grpc CA");
    let ca_file = ca.write(dir.path(), "ca");
    let leaf = ca.leaf(&["stable.internal"], false);
    let opts =
        crate::grpc::ServerOpts { tls: Some((leaf.cert_pem.clone(), leaf.key_pem.clone())), ..Default::default() };
    let stable = GrpcServer::start_with("secure", opts).await;
    let (c, k) = ca.leaf(&["weir.test"], false).write(dir.path(), "weir");
    let tls = format!("{{ ca = \"{}\", server_name = \"stable.internal\" }}", ca_file.display());
    let text = grpc_config(stable.addr, stable.addr, "", "")
        .replacen("version = \"v1\"", &format!("version = \"v1\"\ntls = {tls}"), 1)
        .replacen("version = \"v2\"", &format!("version = \"v2\"\ntls = {tls}"), 1)
        .replacen(
            "[listen]\naddr = \"127.0.0.1:0\"",
            &format!(
                "[listen]\naddr = \"127.0.0.1:0\"\ntls = {{ cert = \"{}\", key = \"{}\" }}",
                c.display(),
                k.display()
            ),
            1,
        );
    let w = InProcess::start(&text).await;
    let mut c = Caller::connect_tls(w.weir.data_addr(), "weir.test", &ca.pem()).await;
    let r = c.unary(Bytes::from_static(b"over tls"), &[]).await.unwrap();
    assert_eq!(
        (r.metadata().get("x-served-by").unwrap().to_str().unwrap(), r.get_ref().as_ref()),
        ("secure", &b"over tls"[..])
    );
    let (_, msgs, end) =
        c.server_stream(Bytes::from_static(b"s"), &[("x-count", "2"), ("x-status", "14")]).await.unwrap();
    assert_eq!(msgs.len(), 2);
    assert_eq!(end.unwrap_err().code(), Code::Unavailable);
    let got = c.bidi_ping_pong(vec![Bytes::from_static(b"1"), Bytes::from_static(b"2")]).await.unwrap();
    assert_eq!(got.len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_going_away_finishes_its_calls_in_flight() {
    use std::sync::atomic::Ordering::SeqCst;
    let a = GrpcServer::start("a").await;
    let w = InProcess::start(&grpc_config(a.addr, a.addr, "", "[timeouts]\nupstream_response = \"5s\"")).await;
    let c = Caller::connect(w.weir.data_addr()).await;
    let slow: Vec<_> = (0..20)
        .map(|_| {
            let mut c = c.clone();
            tokio::spawn(async move { c.unary(Bytes::from_static(b"x"), &[("x-delay-ms", "400")]).await.map(|_| ()) })
        })
        .collect();
    until(Duration::from_secs(5), "calls in flight on a", || a.state.in_flight.load(SeqCst) == 20).await;
    let a_state = a.state.clone();
    // a sends GOAWAY and finishes what it has.
    let stopping = tokio::spawn(a.shut_down());
    for (i, t) in slow.into_iter().enumerate() {
        assert_eq!(t.await.unwrap().map_err(|e| e.to_string()), Ok(()), "call {i}");
    }
    stopping.await.unwrap();
    assert_eq!(a_state.cancelled.load(SeqCst), 0, "a finished every call it took");
}

/// Unary calls on `concurrency` tasks until stopped; returns the codes seen.
struct GrpcLoad {
    stop: tokio::sync::watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<Vec<Code>>>,
}

impl GrpcLoad {
    fn start(c: &Caller, concurrency: usize) -> GrpcLoad {
        let (stop, rx) = tokio::sync::watch::channel(false);
        let tasks = (0..concurrency)
            .map(|i| {
                let (mut c, rx) = (c.clone(), rx.clone());
                tokio::spawn(async move {
                    let mut codes = Vec::new();
                    let user = format!("user-{i}");
                    while !*rx.borrow() {
                        let r = c.unary(Bytes::from_static(b"load"), &[("x-user-id", &user)]).await;
                        codes.push(r.map_or_else(|e| e.code(), |_| Code::Ok));
                    }
                    codes
                })
            })
            .collect();
        GrpcLoad { stop, tasks }
    }

    async fn stop(self) -> Vec<Code> {
        let _ = self.stop.send(true);
        let mut all = Vec::new();
        for t in self.tasks {
            all.extend(t.await.unwrap());
        }
        all
    }
}

fn grpc_rollout(stages: &str) -> String {
    format!(
        "sticky = {{ header = \"x-user-id\" }}\n[routes.rollout]\ninterval = \"250ms\"\nstages = [{stages}]\n\
         gates = [{{ metric = \"error_rate\", max = 0.05, min_samples = 20 }}]\nfailure_threshold = 2"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_canary_failing_30_percent_of_calls_with_unavailable_is_rolled_back() {
    use weir_control::rollout::EventKind;
    let stable = GrpcServer::start("stable").await;
    let canary = GrpcServer::start("canary").await;
    canary.state.fail(Code::Unavailable, 300);
    let r = grpc_rollout("{ weight = 50, bake = \"30s\" }, { weight = 100, bake = \"30s\" }");
    let w = InProcess::start(&grpc_config(stable.addr, canary.addr, &r, "")).await;
    let mut rx = w.weir.subscribe();
    let c = Caller::connect(w.weir.data_addr()).await;
    let load = GrpcLoad::start(&c, 8);
    let rb = wait_event(&mut rx, Duration::from_secs(10), |e| e.kind == EventKind::RolledBack).await;
    let codes = load.stop().await;
    assert!(codes.contains(&Code::Unavailable), "the canary's failures reached the client");
    let v = &rb.verdicts[0];
    assert!(v.value.unwrap() > 0.2, "the gate saw the calls' grpc-status: {v:?}");
    let m = parse_prometheus(&get(&client(), &format!("http://{}/metrics", w.weir.admin_addr()), &[]).await.1);
    let calls = |backend, code| {
        sample(&m, "weir_grpc_responses_total", &[("route", "web"), ("backend", backend), ("grpc_code", code)])
    };
    assert!(calls("canary", "UNAVAILABLE") > 0.0 && calls("canary", "OK") > 0.0 && calls("stable", "OK") > 0.0);
    // A failed gRPC call is still an HTTP 200: the class is the status's.
    assert_eq!(
        sample(&m, "weir_requests_total", &[("route", "web"), ("backend", "canary"), ("code_class", "5xx")]),
        0.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_canary_answering_not_found_is_the_callers_problem_and_promotes() {
    use weir_control::rollout::EventKind;
    let stable = GrpcServer::start("stable").await;
    let canary = GrpcServer::start("canary").await;
    canary.state.fail(Code::NotFound, 300);
    let r = grpc_rollout("{ weight = 50, bake = \"1s\", min_requests = 50 }, { weight = 100, bake = \"1s\" }");
    let w = InProcess::start(&grpc_config(stable.addr, canary.addr, &r, "")).await;
    let mut rx = w.weir.subscribe();
    let c = Caller::connect(w.weir.data_addr()).await;
    let load = GrpcLoad::start(&c, 4);
    let done = wait_event(&mut rx, Duration::from_secs(20), |e| {
        matches!(e.kind, EventKind::Promoted | EventKind::RolledBack | EventKind::Paused)
    })
    .await;
    let codes = load.stop().await;
    assert_eq!(done.kind, EventKind::Promoted, "{done:?}");
    assert!(codes.contains(&Code::NotFound));
    let m = parse_prometheus(&get(&client(), &format!("http://{}/metrics", w.weir.admin_addr()), &[]).await.1);
    let not_found =
        sample(&m, "weir_grpc_responses_total", &[("route", "web"), ("backend", "canary"), ("grpc_code", "NOT_FOUND")]);
    assert!(not_found > 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weirs_own_failures_reach_grpc_clients_as_statuses() {
    let stable = GrpcServer::start("stable").await;
    // Port 1: nothing listens there (and no test binds it).
    let dead: SocketAddr = ([127, 0, 0, 1], 1).into();
    let faults =
        "[backends.faulty]\naddrs = [\"ADDR\"]\nhttp2 = true\nfault = { abort_status = 503, abort_percent = 100 }\n"
            .replace("ADDR", &stable.addr.to_string());
    let extra = "force = { header = \"x-canary\" }\n\n[[routes]]\nname = \"faulty\"\nstable = \"faulty\"\nmatch = { path_prefix = \"/faulty.\" }";
    let text = grpc_config(stable.addr, dead, extra, &format!("[timeouts]\nupstream_response = \"300ms\"\n{faults}"));
    let w = InProcess::start(&text).await;
    let mut c = Caller::connect(w.weir.data_addr()).await;
    // Connect refused: UNAVAILABLE, with weir's message.
    let e = c.unary(Bytes::new(), &[("x-canary", "always")]).await.unwrap_err();
    assert_eq!((e.code(), e.message()), (Code::Unavailable, "weir: upstream connect failed"), "{e:?}");
    // No answer within upstream_response: DEADLINE_EXCEEDED.
    let e = c.unary(Bytes::new(), &[("x-delay-ms", "2000")]).await.unwrap_err();
    assert_eq!(e.code(), Code::DeadlineExceeded, "{e:?}");
    // An injected 503: UNAVAILABLE.
    let e = c.unary_to("/faulty.Svc/Call", Bytes::new(), &[]).await.unwrap_err();
    assert_eq!((e.code(), e.message()), (Code::Unavailable, "weir: injected fault"), "{e:?}");
    // The connection serves on.
    assert!(c.unary(Bytes::new(), &[]).await.is_ok());
    // Recorded when each call's stream ends, on whichever worker: polled.
    let want = [("canary", "UNAVAILABLE"), ("stable", "DEADLINE_EXCEEDED"), ("stable", "OK")];
    grpc_codes_reach(&w, &want, 1.0).await;
}

/// A grpcio peer (`tests/grpcio/peer.py`: gRPC's C core, from PyPI).
fn grpcio(args: &[&str]) -> std::process::Command {
    let mut cmd = std::process::Command::new("python3");
    cmd.arg(workspace().join("tests/grpcio/peer.py")).args(args);
    cmd
}

/// Runs the grpcio client's calls against `addr`; what came back.
async fn grpcio_calls(addr: SocketAddr) -> serde_json::Value {
    let out = tokio::process::Command::from(grpcio(&["client", &addr.to_string()]))
        .kill_on_drop(true)
        .output()
        .await
        .expect("python3 is needed");
    assert!(
        out.status.success(),
        "grpcio client failed (.ci/run installs grpcio from PyPI): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpcio_client_and_server_see_through_weir_what_they_see_directly() {
    use tokio::io::AsyncBufReadExt;
    // The issue's own reproduction: grpcio on both sides (its server
    // refuses a call without te: trailers). Killed on drop, also on a panic.
    let mut server = tokio::process::Command::from(grpcio(&["server", "grpcio"]))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("python3 is needed");
    let mut line = String::new();
    let mut out = tokio::io::BufReader::new(server.stdout.take().unwrap());
    let started = tokio::time::timeout(Duration::from_secs(30), out.read_line(&mut line)).await;
    assert!(started.is_ok(), "the grpcio server printed no port");
    let port: u16 = line.trim().parse().unwrap_or_else(|_| panic!("grpcio server did not start: {line:?}"));
    let up: SocketAddr = ([127, 0, 0, 1], port).into();
    let w = InProcess::start(&grpc_config(up, up, "", "")).await;
    let direct = grpcio_calls(up).await;
    let through = grpcio_calls(w.weir.data_addr()).await;
    // And tonic's client against grpcio's server, through weir.
    let mut c = Caller::connect(w.weir.data_addr()).await;
    let r = c.unary(Bytes::from_static(b"mixed"), &[]).await;
    let (_, msgs, end) =
        c.server_stream(Bytes::from_static(b"s"), &[("x-count", "2"), ("x-status", "14")]).await.unwrap();
    let _ = server.kill().await;
    assert_eq!(through["unary"]["code"], "OK", "{through}");
    assert_eq!(through, direct);
    let r = r.unwrap();
    assert_eq!(
        (r.metadata().get("x-served-by").unwrap().to_str().unwrap(), r.get_ref().as_ref()),
        ("grpcio", &b"mixed"[..])
    );
    assert_eq!((msgs.len(), end.unwrap_err().code()), (2, Code::Unavailable));
}

/// Whether weir's admin API shows `addr` of backend `stable` as down.
async fn is_down(w: &InProcess, addr: SocketAddr) -> bool {
    let (_, body) = get(&client(), &format!("http://{}/api/v1/backends", w.weir.admin_addr()), &[]).await;
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    let stable = v["backends"].as_array().unwrap().iter().find(|b| b["name"] == "stable").unwrap();
    stable["endpoints"].as_array().unwrap().iter().any(|e| e["addr"] == addr.to_string() && e["down"] == true)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_health_checks_take_a_not_serving_address_out() {
    use tonic_health::ServingStatus;
    let good = GrpcServer::start("good").await;
    let sick = GrpcServer::start("sick").await;
    sick.health.set_service_status("", ServingStatus::NotServing).await;
    let health =
        "health = { grpc_service = \"\", interval = \"500ms\", timeout = \"500ms\", unhealthy = 2, healthy = 1 }";
    let text = grpc_config(good.addr, good.addr, "", "").replacen(
        &format!("addrs = [\"{}\"]", good.addr),
        &format!("addrs = [\"{}\", \"{}\"]\n{health}", good.addr, sick.addr),
        1,
    );
    let w = InProcess::start(&text).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !is_down(&w, sick.addr).await {
        assert!(tokio::time::Instant::now() < deadline, "the NOT_SERVING address was never marked down");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(!is_down(&w, good.addr).await, "the SERVING address stays in");
    let checks = sick.state.calls.load(std::sync::atomic::Ordering::SeqCst);
    assert_eq!(checks, 0, "health checks go to the health service, not to Echo");
    let mut c = Caller::connect(w.weir.data_addr()).await;
    for _ in 0..20 {
        let r = c.unary(Bytes::new(), &[]).await.unwrap();
        assert_eq!(r.metadata().get("x-served-by").unwrap(), "good");
    }
    // Back to SERVING: back in.
    sick.health.set_service_status("", ServingStatus::Serving).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while is_down(&w, sick.addr).await {
        assert!(tokio::time::Instant::now() < deadline, "the address never came back");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_match_grpc_services_and_methods_and_metadata_forces_the_canary() {
    let other = GrpcServer::start("other").await;
    let stable = GrpcServer::start("stable").await;
    let canary = GrpcServer::start("canary").await;
    // Route `web` (every path) goes to `other`; a second route takes the
    // Unary method of weir.test.Echo, with a force key in the metadata.
    let text = grpc_config(other.addr, other.addr, "", "").replacen("[[routes]]", &format!(
        "[backends.unary-stable]\naddrs = [\"{}\"]\nhttp2 = true\n[backends.unary-canary]\naddrs = [\"{}\"]\nhttp2 = true\n\n\
         [[routes]]\nname = \"unary\"\nmatch = {{ path_prefix = \"/weir.test.Echo/Unary\" }}\nstable = \"unary-stable\"\n\
         canary = \"unary-canary\"\nforce = {{ header = \"x-canary\" }}\n\n[[routes]]",
        stable.addr, canary.addr
    ), 1);
    let w = InProcess::start(&text).await;
    let mut c = Caller::connect(w.weir.data_addr()).await;
    let served_by = |r: &tonic::Response<Bytes>| r.metadata().get("x-served-by").unwrap().to_str().unwrap().to_string();
    assert_eq!(served_by(&c.unary(Bytes::new(), &[]).await.unwrap()), "stable");
    assert_eq!(served_by(&c.unary(Bytes::new(), &[("x-canary", "always")]).await.unwrap()), "canary");
    let (headers, _, _) = c.server_stream(Bytes::new(), &[("x-canary", "always")]).await.unwrap();
    assert_eq!(headers.get("x-served-by").unwrap(), "other", "another method of the service: the other route");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_idle_past_body_read_lives_and_an_expired_call_is_recorded() {
    let stable = GrpcServer::start("stable").await;
    let w = InProcess::start(&grpc_config(stable.addr, stable.addr, "", "[timeouts]\nbody_read = \"200ms\"")).await;
    let c = Caller::connect(w.weir.data_addr()).await;
    // A bidi stream whose client pauses longer than body_read between
    // messages (a watch, a chat): gRPC bodies are not under body_read.
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(1);
    let mut grpc = tonic::client::Grpc::new(
        tonic::transport::Endpoint::from_shared(format!("http://{}", w.weir.data_addr()))
            .unwrap()
            .connect()
            .await
            .unwrap(),
    );
    grpc.ready().await.unwrap();
    tx.send(Bytes::from_static(b"one")).await.unwrap();
    let path = http::uri::PathAndQuery::from_static("/weir.test.Echo/Bidi");
    let outgoing = tonic::Request::new(tokio_stream::wrappers::ReceiverStream::new(rx));
    let mut s = grpc.streaming(outgoing, path, crate::grpc::RawCodec).await.unwrap().into_inner();
    assert_eq!(s.message().await.unwrap().unwrap(), "one");
    tokio::time::sleep(Duration::from_millis(600)).await; // the pause under test
    tx.send(Bytes::from_static(b"two")).await.unwrap();
    assert_eq!(s.message().await.unwrap().unwrap(), "two");
    drop(tx);
    assert!(s.message().await.unwrap().is_none());
    assert!(s.trailers().await.is_ok(), "the stream ended with OK");

    // A call reset by its client at its deadline, before any answer, is
    // recorded as DEADLINE_EXCEEDED (a failure): a canary slower than its
    // callers' deadlines is seen failing. The upstream (tonic) enforces the
    // same deadline and answers CANCELLED when its timer, started a moment
    // later, fires first (about one call in twelve here): then weir records
    // that answer. So: calls until one is reset by its client.
    let codes = |m: &Samples, c: &str| {
        sample(m, "weir_grpc_responses_total", &[("route", "web"), ("backend", "stable"), ("grpc_code", c)])
    };
    for calls in 1..=5 {
        let mut c2 = c.clone();
        // 800 ms: weir allows 10 % + 25 ms for the time before it saw the
        // call; a busy machine can delay it more than 200 ms's allowance.
        let e = c2.hang(Some(Duration::from_millis(800))).await.unwrap_err();
        assert!(matches!(e.code(), Code::DeadlineExceeded | Code::Cancelled), "{e:?}");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        let (expired, cancelled) = loop {
            let m = parse_prometheus(&get(&client(), &format!("http://{}/metrics", w.weir.admin_addr()), &[]).await.1);
            let seen = (codes(&m, "DEADLINE_EXCEEDED"), codes(&m, "CANCELLED"));
            if seen.0 + seen.1 == calls as f64 {
                break seen;
            }
            assert!(tokio::time::Instant::now() < deadline, "call {calls} not recorded: {seen:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        if expired == 1.0 {
            return;
        }
        assert_eq!(expired, 0.0, "{cancelled}");
    }
    panic!("no call reset by its client at its deadline was recorded as DEADLINE_EXCEEDED");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_whose_connect_failed_goes_with_its_body_to_another_address() {
    let live = GrpcServer::start("live").await;
    let dead: SocketAddr = ([127, 0, 0, 1], 1).into();
    let text = grpc_config(dead, live.addr, "", "").replacen(
        &format!("addrs = [\"{dead}\"]"),
        &format!("addrs = [\"{dead}\", \"{}\"]\noutlier = false", live.addr),
        1,
    );
    let w = InProcess::start(&text).await;
    let mut c = Caller::connect(w.weir.data_addr()).await;
    let body: Bytes = (0..100_000).map(|i| (i % 253) as u8).collect::<Vec<u8>>().into();
    for _ in 0..30 {
        assert_eq!(c.unary(body.clone(), &[]).await.unwrap().into_inner(), body, "the body arrived whole");
    }
    let m = parse_prometheus(&get(&client(), &format!("http://{}/metrics", w.weir.admin_addr()), &[]).await.1);
    let retries =
        sample(&m, "weir_upstream_retries_total", &[("route", "web"), ("backend", "stable"), ("kind", "connect")]);
    // Half the calls pick the dead address first (1 in 2^30 that none does).
    assert!(retries >= 1.0, "{retries}");
    assert_eq!(live.state.calls.load(std::sync::atomic::Ordering::SeqCst), 30, "each call reached the live one once");
}
