//! `[recording]` and `weir replay` (issue 24): a real rollout is recorded,
//! and the real binary re-judges it under stricter and looser gates.

use std::time::{Duration, Instant};

use weir_control::recording::Line;
use weir_control::rollout::EventKind;

use crate::*;

/// The rollout: 50 % to a canary failing 20 % of its requests, judged by
/// an error-rate ceiling of `max`; `on_failure` as given.
fn rollout(max: f64, on_failure: &str) -> String {
    format!(
        "[routes.rollout]\ninterval = \"250ms\"\non_failure = \"{on_failure}\"\nfailure_threshold = 1\n\
         stages = [{{ weight = 50, bake = \"10m\" }}, {{ weight = 100 }}]\n\
         gates = [{{ metric = \"error_rate\", max = {max}, min_samples = 20 }}]\n"
    )
}

/// The first `kind` decision of a replay report's `side`, ms after the
/// rollout's start.
fn first(report: &serde_json::Value, side: &str, kind: &str) -> Option<i64> {
    report[side].as_array()?.iter().find(|d| d["kind"] == kind).and_then(|d| d["t_ms"].as_i64())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_under_stricter_gates_rolls_back_earlier_and_under_looser_later() {
    let stable = Upstream::start("stable", Mode::Named).await;
    let canary = Upstream::start("canary", Mode::FailTenths(2)).await;
    // Recorded: a ceiling of 14 % that pauses (the canary keeps its share,
    // so the recording goes on with its traffic). The canary fails 2 of
    // every 10 requests exactly, so each ceiling is crossed (by the
    // one-sided 95 % lower bound) at a set number of requests, whatever the
    // request rate: 2 % at min_samples (20), 14 % at about 120, 16.5 % at
    // about 350.
    let text = config_text(stable.addr, canary.addr, &rollout(0.14, "pause"), "[recording]\nfile = \"rec.jsonl\"\n");
    let w = InProcess::start(&text).await;
    let mut rx = w.weir.subscribe();
    let load = Load::start(w.url("/"), 1, Duration::from_millis(10));
    wait_event(&mut rx, Duration::from_secs(30), |e| e.kind == EventKind::Paused).await;
    // Enough traffic after it for a looser ceiling to be crossed too.
    let after = canary.count();
    let deadline = Instant::now() + Duration::from_secs(60);
    while canary.count() < after + 600 {
        assert!(Instant::now() < deadline, "the canary got {} requests", canary.count() - after);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    load.stop().await;
    // A shutdown writes the seconds not written yet and flushes.
    let InProcess { weir, dir, .. } = w;
    let served = canary.count() as u64;
    weir.shutdown().await;
    let rec = dir.path().join("rec.jsonl");
    let recorded = std::fs::read_to_string(&rec).unwrap();
    let canary_requests: u64 = recorded
        .lines()
        .filter_map(|l| match serde_json::from_str::<Line>(l) {
            Ok(Line::Second { canary: Some(c), .. }) => Some(c.counts.total()),
            _ => None,
        })
        .sum();
    assert_eq!(canary_requests, served, "every canary request is in the recording, once");
    assert!(recorded.starts_with("{\"kind\":\"start\""), "{}", &recorded[..recorded.len().min(200)]);
    assert!(recorded.contains("\"kind\":\"event\""), "events are recorded");

    let replay = |max: f64| {
        let cand = dir.path().join(format!("candidate-{max}.toml"));
        std::fs::write(&cand, config_text(stable.addr, canary.addr, &rollout(max, "rollback"), "")).unwrap();
        let out = std::process::Command::new(weir_bin())
            .args(["replay", "--json", "--recording"])
            .arg(&rec)
            .arg("-c")
            .arg(&cand)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(report["route"], "web");
        report
    };
    let strict = replay(0.02);
    let paused = first(&strict, "recorded", "paused").expect("the recorded pause");
    let strict_rb = first(&strict, "candidate", "rolled_back").expect("strict: rolled back");
    let loose = replay(0.165);
    let loose_rb = first(&loose, "candidate", "rolled_back").expect("loose: rolled back");
    assert!(
        strict_rb < paused && paused < loose_rb,
        "strict {strict_rb} ms, recorded {paused} ms, loose {loose_rb} ms: {strict:#}"
    );
    // Each candidate decision says why, with the gate's numbers.
    let rb = strict["candidate"].as_array().unwrap().iter().find(|d| d["kind"] == "rolled_back").unwrap();
    assert_eq!(rb["verdicts"][0]["verdict"], "fail", "{rb}");
    assert!(rb["verdicts"][0]["value"].as_f64().is_some_and(|v| v > 0.15), "{rb}");

    // The table a person reads names both decisions and their times.
    let cand = dir.path().join("candidate-0.02.toml");
    let out = std::process::Command::new(weir_bin())
        .arg("replay")
        .arg("--recording")
        .arg(&rec)
        .arg("-c")
        .arg(&cand)
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(table.contains("recorded: paused at") && table.contains("candidate: rolled_back at"), "{table}");
    // A recording that is not one is refused with the line that is wrong.
    let bad = dir.path().join("bad.jsonl");
    std::fs::write(&bad, "{\"kind\":\"start\",\"weir\":\"x\",\"at_ms\":1}\nnot json\n").unwrap();
    let out = std::process::Command::new(weir_bin())
        .arg("replay")
        .arg("--recording")
        .arg(&bad)
        .arg("-c")
        .arg(&cand)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(65));
    assert!(String::from_utf8_lossy(&out.stderr).contains("line 2"), "{}", String::from_utf8_lossy(&out.stderr));
}
