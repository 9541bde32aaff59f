//! The dashboard in a real headless Chromium.

use std::time::Duration;

use weir_control::rollout::Phase;

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
    b.navigate(&format!("http://{}/", w.weir.admin_addr())).await;
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
