//! Shadow traffic: copies reach the canary, never the client.

use std::time::{Duration, Instant};

use weir_control::rollout::EventKind;

use crate::*;

async fn metrics(w: &InProcess) -> Samples {
    parse_prometheus(&get(&client(), &format!("http://{}/metrics", w.weir.admin_addr()), &[]).await.1)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shadows_reach_the_canary_while_clients_get_stable_at_stables_speed() {
    let stable = Upstream::start("stable", Mode::Named).await;
    let canary = Upstream::start("canary", Mode::Delay(Duration::from_secs(1))).await;
    let w = InProcess::start(&config_text(stable.addr, canary.addr, "shadow = { percent = 100 }", "")).await;
    let c = client();
    for _ in 0..20 {
        let t = Instant::now();
        assert_eq!(get(&c, &w.url("/page?q=1"), &[]).await, (StatusCode::OK, "stable".to_string()));
        // The canary takes 1 s: a client that waited for the copy would show it.
        assert!(t.elapsed() < Duration::from_millis(500), "the client waited for the shadow: {:?}", t.elapsed());
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while canary.count() < 20 {
        assert!(Instant::now() < deadline, "only {} shadows arrived", canary.count());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let seen = canary.seen.lock().unwrap()[0].clone();
    assert_eq!(seen.path, "/page?q=1");
    assert_eq!(seen.headers["x-weir-shadow"], "1");
    assert_eq!(stable.count(), 20);
    // Recorded as shadow traffic of the canary, not as user traffic.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let m = metrics(&w).await;
        let shadows =
            sample(&m, "weir_shadow_requests_total", &[("route", "web"), ("backend", "canary"), ("code_class", "2xx")]);
        if shadows == 20.0 {
            assert_eq!(
                sample(&m, "weir_requests_total", &[("route", "web"), ("backend", "canary"), ("code_class", "2xx")]),
                0.0
            );
            break;
        }
        assert!(Instant::now() < deadline, "{shadows} shadows recorded");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_canary_that_answers_differently_raises_the_mismatch_gate() {
    let stable = Upstream::start("stable", Mode::Named).await;
    let canary = Upstream::start("canary", Mode::Status(500)).await;
    let r = "shadow = { percent = 100 }\n[routes.rollout]\ninterval = \"250ms\"\nstages = [{ weight = 0, bake = \"10m\" }, { weight = 100 }]\ngates = [{ metric = \"shadow_mismatch\", max = 0.05, min_samples = 10 }]";
    let w = InProcess::start(&config_text(stable.addr, canary.addr, r, "")).await;
    let mut rx = w.weir.subscribe();
    let load = Load::start(w.url("/"), 2, Duration::from_millis(10));
    let rb = wait_event(&mut rx, Duration::from_secs(10), |e| e.kind == EventKind::RolledBack).await;
    load.stop().await;
    let v = rb.verdicts.iter().find(|v| v.gate == "shadow_mismatch").unwrap();
    assert_eq!(v.verdict, weir_control::gate::Verdict::Fail);
    assert!(v.value.unwrap() > 0.9 && v.canary_samples >= 10, "{v:?}");
    assert!(sample(&metrics(&w).await, "weir_shadow_mismatches_total", &[("route", "web")]) >= 10.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compare_header_tells_apart_answers_with_the_same_status() {
    // Both answer 200 and differ, if at all, in `x-upstream`. Stable's
    // answer comes through weir's own client, whose header lines pass
    // through unparsed: the comparison must still find the field by name.
    for (canary_name, differs) in [("canary", true), ("stable", false)] {
        let stable = Upstream::start("stable", Mode::Named).await;
        let canary = Upstream::start(canary_name, Mode::Named).await;
        let r = "shadow = { percent = 100, compare_header = \"X-Upstream\" }\n[routes.rollout]\ninterval = \"250ms\"\nstages = [{ weight = 0, bake = \"1s\" }, { weight = 100 }]\ngates = [{ metric = \"shadow_mismatch\", max = 0.05, min_samples = 10 }]";
        let w = InProcess::start(&config_text(stable.addr, canary.addr, r, "")).await;
        let mut rx = w.weir.subscribe();
        let load = Load::start(w.url("/"), 2, Duration::from_millis(10));
        let decided = |e: &weir_control::rollout::Event| {
            matches!(e.kind, EventKind::RolledBack | EventKind::Advanced | EventKind::Promoted)
        };
        let e = wait_event(&mut rx, Duration::from_secs(10), decided).await;
        load.stop().await;
        let v = e.verdicts.iter().find(|v| v.gate == "shadow_mismatch").unwrap();
        if differs {
            assert_eq!(e.kind, EventKind::RolledBack, "{e:?}");
            assert!(v.value.unwrap() > 0.9 && v.canary_samples >= 10, "{v:?}");
        } else {
            assert_ne!(e.kind, EventKind::RolledBack, "{e:?}");
            assert_eq!(v.value, Some(0.0), "{v:?}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shadows_are_dropped_and_counted_under_load() {
    let stable = Upstream::start("stable", Mode::Named).await;
    let canary = Upstream::start("canary", Mode::Delay(Duration::from_millis(500))).await;
    let w =
        InProcess::start(&config_text(stable.addr, canary.addr, "shadow = { percent = 100, max_in_flight = 1 }", ""))
            .await;
    let url = w.url("/");
    let requests: Vec<_> = (0..10)
        .map(|_| {
            let url = url.clone();
            tokio::spawn(async move { get(&client(), &url, &[]).await })
        })
        .collect();
    for r in requests {
        assert_eq!(r.await.unwrap(), (StatusCode::OK, "stable".to_string()));
    }
    let dropped = sample(&metrics(&w).await, "weir_shadow_dropped_total", &[("route", "web")]);
    assert!(dropped >= 5.0, "{dropped}");
}

/// An HTTP/2 request may carry a body without Content-Length (every gRPC
/// call does). Such a request on a route that shadows POST kept its
/// headers but reached stable with an empty body (its missing length read
/// as 0). It is now sent on whole and not copied.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http2_body_without_content_length_reaches_stable_whole_and_is_not_copied() {
    use http_body_util::combinators::BoxBody;
    use hyper::body::Frame;
    type Body = BoxBody<Bytes, std::convert::Infallible>;

    let stable = Upstream::start("stable", Mode::CountBody).await;
    let canary = Upstream::start("canary", Mode::CountBody).await;
    let extra = "shadow = { percent = 100, methods = [\"GET\", \"POST\"] }";
    let w = InProcess::start(&config_text(stable.addr, canary.addr, extra, "")).await;
    let c: hyper_util::client::legacy::Client<_, Body> =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new()).http2_only(true).build_http();
    let post = |path: &str, body: Body| {
        let req = Request::post(w.url(path)).body(body).unwrap();
        let c = c.clone();
        async move {
            let resp = c.request(req).await.unwrap();
            assert_eq!(resp.status(), StatusCode::OK);
            String::from_utf8(resp.into_body().collect().await.unwrap().to_bytes().to_vec()).unwrap()
        }
    };
    // Streamed: no size hint, so no Content-Length on the wire.
    let frames = [b"hello ".as_slice(), b"world".as_slice()].map(|b| Ok(Frame::data(Bytes::from_static(b))));
    let streamed = http_body_util::StreamBody::new(futures_util::stream::iter(frames)).boxed();
    assert_eq!(post("/streamed", streamed).await, "11", "stable got the whole body");
    // A declared length is copied as before; once its copy arrived, the
    // streamed request's would have too.
    let declared = Full::new(Bytes::from_static(b"declared")).map_err(|e| match e {}).boxed();
    assert_eq!(post("/declared", declared).await, "8");
    let deadline = Instant::now() + Duration::from_secs(5);
    while canary.count() < 1 {
        assert!(Instant::now() < deadline, "the declared request was not copied");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let paths: Vec<String> = canary.seen.lock().unwrap().iter().map(|s| s.path.clone()).collect();
    assert_eq!(paths, ["/declared"]);
    assert_eq!(stable.count(), 2);
}
