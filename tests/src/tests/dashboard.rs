//! The dashboard in a real headless Chromium.

use std::time::Duration;

use weir_control::rollout::{EventKind, Phase};

use crate::browser::Browser;
use crate::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_shows_the_weight_and_pauses_a_rollout() {
    let stable = Upstream::start("stable", Mode::Named).await;
    let canary = Upstream::start("canary", Mode::Delay(Duration::from_millis(3))).await;
    let extra = "sticky = { header = \"x-user-id\" }\n[routes.rollout]\nstages = [{ weight = 0, bake = \"1m\" }, { weight = 12.5, bake = \"10m\" }, { weight = 50 }, { weight = 100 }]\ngates = [{ metric = \"error_rate\", max = 0.05, min_samples = 10 }, { metric = \"latency_p99\", max_ratio_to_stable = 1.5, max_delta_to_stable = \"250ms\", min_samples = 10 }]";
    // Release metadata, shown beside the version.
    let extra = format!("{extra}\n[backends.canary.release]\ncommit = \"0123456789abcdef\"\nnotes = \"https://git.example/r/v2\"\nticket = \"OPS-42\"\n");
    let w = InProcess::start(&config_text(stable.addr, canary.addr, &extra, "")).await;
    w.weir.act("web", weir_proxy::ManualAction::Promote).await.unwrap();
    let load = Load::start(w.url("/"), 2, Duration::from_millis(5));

    let mut b = Browser::launch().await;
    b.navigate(&format!("http://{}/#/route/web", w.weir.admin_addr())).await;
    let weight = b
        .wait_for(
            "document.querySelector('.route[data-route=web] [data-field=weight]')?.textContent",
            Duration::from_secs(15),
        )
        .await;
    assert_eq!(weight, "12.5%");
    let card = b.eval("document.querySelector('.route[data-route=web]').textContent").await;
    let card = card.as_str().unwrap();
    assert!(card.contains("0123456789ab") && card.contains("OPS-42"), "{card}");
    assert_eq!(
        b.eval("document.querySelector('.route[data-route=web] a[href]')?.getAttribute('href')").await,
        "https://git.example/r/v2"
    );
    // Without [fleet] the fleet card stays hidden.
    assert_eq!(b.eval("document.getElementById('fleet').hidden").await, true);
    assert_eq!(
        b.eval("document.querySelector('.route[data-route=web] [data-field=state]').textContent").await,
        "progressing"
    );
    // Live numbers and verdicts arrive with the next polls.
    b.wait_for("document.querySelectorAll('.route[data-route=web] td.pass').length >= 1", Duration::from_secs(15))
        .await;

    // The gates are loose (250 ms over stable) so that a loaded CI machine's
    // latency spikes cannot roll the canary back before the click.
    assert_eq!(w.weir.rollout("web").unwrap().phase, Phase::Progressing, "{:?}", w.weir.events(Some("web")));
    b.eval("document.querySelector('button[data-action=pause][data-route=web]').click()").await;
    // weir pauses at once (or says why not), then the page shows it.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while w.weir.rollout("web").unwrap().phase != Phase::Paused {
        assert!(std::time::Instant::now() < deadline, "not paused: {:?}", w.weir.events(Some("web")));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    b.wait_for(
        "document.querySelector('.route[data-route=web] [data-field=state]')?.textContent === 'paused'",
        Duration::from_secs(10),
    )
    .await;
    assert!(b.eval("document.getElementById('events').textContent").await.as_str().unwrap().contains("paused by hand"));

    let shot = workspace().join("target").join("test-artifacts").join("dashboard.png");
    b.screenshot(&shot).await;
    assert!(std::fs::metadata(&shot).unwrap().len() > 10_000);
    load.stop().await;
}

/// Polls `expr` (a number) until `done` holds of it, returning every
/// distinct value seen on the way.
async fn watch_numbers(b: &mut Browser, expr: &str, done: &str, timeout: Duration) -> Vec<f64> {
    let deadline = std::time::Instant::now() + timeout;
    let mut seen: Vec<f64> = Vec::new();
    loop {
        if let Some(v) = b.eval(expr).await.as_str().and_then(|s| s.parse::<f64>().ok()) {
            if seen.last() != Some(&v) {
                seen.push(v);
            }
        }
        if b.eval(done).await == true {
            return seen;
        }
        assert!(std::time::Instant::now() < deadline, "never {done}; {expr} went {seen:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Dashboard v2 in a real Chromium, through a real rollout whose canary
/// degrades (a fault injected through the admin API, as on a game day):
/// the overview lists every route; the route's page charts both backends
/// with the gate's limit, a marker per audit event and the stage's window;
/// the evidence view climbs towards the limit; the rollback shows, in the
/// sentence `weir ctl status` prints too. The poll stays small.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_charts_a_degrading_canary_to_its_rollback() {
    let stable = Upstream::start("stable", Mode::Named).await;
    let canary = Upstream::start("canary", Mode::Named).await;
    let extra = "[routes.rollout]\ninterval = \"250ms\"\nstages = [{ weight = 50, bake = \"10m\" }, { weight = 100 }]\n\
gates = [{ metric = \"error_rate\", max = 0.1, min_samples = 20 }]\n\
[[routes]]\nname = \"api\"\nmatch = { path_prefix = \"/api\" }\nstable = \"stable\"\ncanary = \"canary\"\n\
[routes.rollout]\nstages = [{ weight = 10, bake = \"10m\" }, { weight = 100 }]\ngates = [{ metric = \"error_rate\", max = 0.05 }]\n\
[[routes]]\nname = \"plain\"\nmatch = { path_prefix = \"/plain\" }\nstable = \"stable\"";
    let w = InProcess::start(&config_text(stable.addr, canary.addr, extra, "")).await;
    let admin = w.weir.admin_addr();
    let load = Load::start(w.url("/"), 4, Duration::from_millis(2));

    let mut b = Browser::launch().await;
    b.navigate(&format!("http://{admin}/")).await;
    // The overview: one row per route, each linking to its page.
    b.wait_for("document.querySelectorAll('#overview tr[data-route]').length === 3", Duration::from_secs(15)).await;
    let rows =
        b.eval("[...document.querySelectorAll('#overview tr[data-route]')].map(r => r.dataset.route).join(',')").await;
    assert_eq!(rows, "web,api,plain");
    assert_eq!(
        b.eval("document.querySelector('#overview tr[data-route=api] a').getAttribute('href')").await,
        "#/route/api"
    );
    // A second of history draws the overview's error-rate sparkline.
    b.wait_for("document.querySelector('#overview tr[data-route=web] polyline.s-canary')", Duration::from_secs(15))
        .await;

    b.eval("location.hash = '#/route/web'").await;
    let points = |chart: &str, series: &str| {
        format!("(document.querySelector('[data-chart={chart}] polyline.{series}')?.getAttribute('points') || '').split(' ').filter(Boolean).length")
    };
    // Five seconds of healthy traffic, charted for both backends.
    b.wait_for(
        &format!("{} >= 5 && {} >= 5", points("rps", "s-stable"), points("rps", "s-canary")),
        Duration::from_secs(20),
    )
    .await;
    assert!(b.eval("document.querySelector('[data-chart=err] polyline.limit')").await.is_object(), "no limit line");
    assert!(b.eval("document.querySelector('[data-chart=err] rect.stage-window')").await.is_object());
    let said = b.eval("document.querySelector('[data-field=summary]').textContent").await;
    assert!(
        said.as_str().unwrap().starts_with("Every gate passes at stage 1 of 2")
            || said.as_str().unwrap().starts_with("Gathering evidence"),
        "{said}"
    );

    // The canary degrades: 20 % of its requests fail from now (the
    // stage's rate reaches the limit of 10 % after about as long again).
    let fault = Request::post(format!("http://{admin}/api/v1/backends/canary/fault"))
        .body(Full::new(Bytes::from_static(br#"{"abort_status": 500, "abort_percent": 20, "duration": "60s"}"#)))
        .unwrap();
    assert_eq!(client().request(fault).await.unwrap().status(), 200);
    // The evidence view climbs towards the limit as the stage's error
    // rate does, until the rollback.
    let ratio = "document.querySelector('.evidence[data-gate=error_rate]')?.dataset.ratio";
    let done = "document.querySelector('.route [data-field=state]')?.textContent === 'rolled back'";
    let climb = watch_numbers(&mut b, ratio, done, Duration::from_secs(30)).await;
    assert!(climb.windows(2).filter(|w| w[1] > w[0]).count() >= 2, "the evidence never moved: {climb:?}");
    assert!(climb.iter().any(|&r| r > 0.0 && r < 1.0), "no step between healthy and failing: {climb:?}");
    load.stop().await;

    let events = w.weir.events(Some("web"));
    assert!(events.iter().any(|e| e.kind == EventKind::RolledBack), "{events:?}");
    // One marker per audit event of the rollout, with its text on hover.
    let markers = "document.querySelectorAll('[data-chart=err] g.marker').length";
    b.wait_for(&format!("{markers} === {}", events.len()), Duration::from_secs(10)).await;
    let text = b
        .eval("[...document.querySelectorAll('[data-chart=err] g.marker title')].map(t => t.textContent).join('\\n')")
        .await;
    assert!(text.as_str().unwrap().contains("rolled_back at 0%"), "{text}");
    let said = b.eval("document.querySelector('[data-field=summary]').textContent").await;
    assert!(said.as_str().unwrap().starts_with("Rolled back"), "{said}");
    assert_eq!(
        b.eval("document.querySelector('.evidence[data-gate=error_rate] [data-field=verdict]').textContent").await,
        "fail"
    );

    let dir = workspace().join("target").join("test-artifacts");
    b.screenshot_full(&dir.join("dashboard-route.png")).await;
    // On a phone's width: nothing wider than the screen (the tables
    // scroll inside their cards, the charts shrink).
    b.call(
        "Emulation.setDeviceMetricsOverride",
        serde_json::json!({ "width": 390, "height": 844, "deviceScaleFactor": 1, "mobile": true }),
    )
    .await;
    b.wait_for("document.documentElement.clientWidth === 390", Duration::from_secs(5)).await;
    assert_eq!(b.eval("document.documentElement.scrollWidth <= 390").await, true, "wider than a phone");
    b.screenshot_full(&dir.join("dashboard-phone.png")).await;
    b.call("Emulation.clearDeviceMetricsOverride", serde_json::json!({})).await;
    // The keyboard keeps its place while the page redraws every second.
    b.eval("document.querySelector('button[data-action=resume][data-route=web]').focus()").await;
    let redraws = "document.getElementById('updated').textContent";
    let before = b.eval(redraws).await;
    b.wait_for(&format!("{redraws} !== {before}"), Duration::from_secs(5)).await;
    let focus = "document.activeElement.dataset.action + '/' + document.activeElement.dataset.route";
    assert_eq!(b.eval(focus).await, "resume/web", "the focus was lost on a redraw");
    b.eval("location.hash = '#/'").await;
    b.wait_for("document.getElementById('overview')", Duration::from_secs(5)).await;
    b.screenshot_full(&dir.join("dashboard-overview.png")).await;
    assert!(std::fs::metadata(dir.join("dashboard-route.png")).unwrap().len() > 20_000);

    // The poll: everything at first, then only what changed.
    let poll = |q: String| {
        let url = format!("http://{admin}/api/v1/dashboard?{q}");
        async move { get(&client(), &url, &[]).await.1 }
    };
    let first = poll("since=0&events=0".into()).await;
    let json: serde_json::Value = serde_json::from_str(&first).unwrap();
    let next = format!("since={}&events={}", json["history"]["seq"], json["events"]["next"]);
    tokio::time::sleep(Duration::from_millis(1100)).await; // one more second recorded
    let then = poll(next).await;
    println!("dashboard poll: first {} bytes, then {} bytes", first.len(), then.len());
    let then: serde_json::Value = serde_json::from_str(&then).unwrap();
    assert_eq!(then["events"]["list"].as_array().unwrap().len(), 0, "{then}");
    for route in ["web", "api"] {
        let t = &then["history"]["tracks"][route];
        assert_eq!(t["full"], false, "{then}");
        assert!(t["points"].as_array().unwrap().len() <= 2, "{then}");
    }
}
