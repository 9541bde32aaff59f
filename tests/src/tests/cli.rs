//! The real binary: `weir check`, signals, graceful shutdown.

use std::process::Command;
use std::time::{Duration, Instant};

use crate::*;

#[test]
fn check_accepts_the_shipped_configs() {
    for name in ["weir.toml", "full.toml", "replay-demo.toml", "grpc.toml"] {
        let path = workspace().join("config").join(name);
        let out = Command::new(weir_bin()).args(["check", "-c"]).arg(&path).output().unwrap();
        assert!(out.status.success(), "{name}: {}", String::from_utf8_lossy(&out.stderr));
        assert!(String::from_utf8_lossy(&out.stdout).contains("ok"));
    }
}

#[test]
fn check_prints_every_error_and_fails() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(
        &path,
        "[timeouts]\nconnect = \"soon\"\n[backends.stable]\naddrs = [\"127.0.0.1:1\"]\n[[routes]]\nname = \"web\"\nstable = \"stable\"\ncanary = \"canry\"\n",
    )
    .unwrap();
    let out = Command::new(weir_bin()).args(["check", "-c"]).arg(&path).output().unwrap();
    assert_eq!(out.status.code(), Some(78));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("timeouts.connect: unknown duration unit \"soon\" (line 2)") || err.contains("timeouts.connect:"),
        "{err}"
    );
    assert!(err.contains("routes[0].canary: unknown backend \"canry\" (line 8)"), "{err}");

    let missing = Command::new(weir_bin()).args(["check", "-c", "/nonexistent/weir.toml"]).output().unwrap();
    assert_eq!(missing.status.code(), Some(78));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("cannot read"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_in_flight_requests_and_exits_zero() {
    let stable = Upstream::start("stable", Mode::Delay(Duration::from_millis(700))).await;
    let canary = Upstream::start("canary", Mode::Named).await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("weir.toml");
    std::fs::write(&path, config_text(stable.addr, canary.addr, "", "")).unwrap();
    let mut p = Process::spawn(&path);
    let url = format!("http://{}/", p.data_addr);
    let inflight = tokio::spawn(async move { get(&client(), &url, &[]).await });
    while stable.count() == 0 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let t = Instant::now();
    p.signal("TERM").unwrap();
    assert_eq!(inflight.await.unwrap(), (StatusCode::OK, "stable".to_string()));
    let status = p.child.wait().unwrap();
    assert!(status.success(), "{status:?}");
    assert!(t.elapsed() < Duration::from_secs(10));
    // New connections are refused once draining has started.
    assert!(std::net::TcpStream::connect(p.data_addr).is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_and_a_bad_file_keeps_serving() {
    let stable = Upstream::start("stable", Mode::Named).await;
    let canary = Upstream::start("canary", Mode::Named).await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("weir.toml");
    let base = config_text(stable.addr, canary.addr, "weight = 0", "");
    std::fs::write(&path, &base).unwrap();
    let mut p = Process::spawn(&path);
    let url = format!("http://{}/", p.data_addr);
    let c = client();
    assert_eq!(get(&c, &url, &[]).await.1, "stable");

    p.signal("HUP").unwrap();
    p.wait_for_line("SIGHUP: reloading config", Duration::from_secs(5));
    p.wait_for_line("config unchanged", Duration::from_secs(5));

    std::fs::write(&path, base.replace("weight = 0", "weight = 100\nbogus = 1")).unwrap();
    p.wait_for_line("routes[0].bogus: unknown key", Duration::from_secs(5));
    assert_eq!(get(&c, &url, &[]).await.1, "stable");

    std::fs::write(&path, base.replace("weight = 0", "weight = 100")).unwrap();
    p.wait_for_line("config reloaded", Duration::from_secs(5));
    assert_eq!(get(&c, &url, &[]).await.1, "canary");
}

#[test]
fn demo_promotes_a_healthy_canary_and_rolls_back_a_bad_one() {
    let run = |extra: &[&str]| {
        let out = Command::new(weir_bin()).args(["demo", "--fast"]).args(extra).output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
        stdout
    };
    let dir = tempfile::tempdir().unwrap();
    let rec = dir.path().join("demo.rec");
    let good = run(&["--record", rec.to_str().unwrap()]);
    assert!(good.contains("dashboard  http://127.0.0.1:"), "{good}");
    for stage in ["stage 1 at 5%", "stage 2 at 25%", "stage 3 at 50%", "stage 4 at 100%"] {
        assert!(good.contains(stage), "missing {stage}: {good}");
    }
    let last = good.lines().rev().find(|l| l.starts_with("weir demo:")).unwrap();
    assert!(last.starts_with("weir demo: promoted v1.5.0 to 100%"), "{good}");
    // The shipped replay example over the recording: its p99 objective of
    // 5 ms fails the demo's service (2 to 6 ms by design) at the first
    // stage, whatever the machine, beside the recorded promotion.
    let example = std::fs::read_to_string(workspace().join("config/replay-demo.toml")).unwrap();
    let cand = dir.path().join("candidate.toml");
    std::fs::write(&cand, example.replace("bake = \"8s\"", "bake = \"500ms\"")).unwrap();
    let out =
        Command::new(weir_bin()).arg("replay").arg("--recording").arg(&rec).arg("-c").arg(&cand).output().unwrap();
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{table}{}", String::from_utf8_lossy(&out.stderr));
    assert!(table.contains("recorded: promoted at"), "{table}");
    assert!(table.contains("candidate: rolled_back at"), "{table}");
    assert!(table.contains("p99_objective = fail"), "{table}");

    let bad = run(&["--bad-canary"]);
    let last = bad.lines().rev().find(|l| l.starts_with("weir demo:")).unwrap();
    assert!(last.starts_with("weir demo: rolled back v1.5.0"), "{bad}");
    assert!(bad.contains("error_rate fail"), "{bad}");
}

/// Issue 24: `weir check` points out a finished rollout still in the
/// config (from the state file: promoted two days ago), exit 0, and says
/// nothing about a live one.
#[test]
fn check_warns_about_a_finished_rollout_left_in_the_config() {
    use weir_control::rollout::{Context, Engine, Persisted, StateFile};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("weir.toml");
    let text = "[state]\nfile = \"state.json\"\n[backends.s]\naddrs = [\"127.0.0.1:1\"]\nversion = \"v1\"\n[backends.c]\naddrs = [\"127.0.0.1:2\"]\nversion = \"v2\"\n[[routes]]\nname = \"web\"\nstable = \"s\"\ncanary = \"c\"\n[routes.rollout]\nstages = [{ weight = 10 }, { weight = 100 }]\ngates = [{ metric = \"error_rate\", max = 0.05 }]\n";
    std::fs::write(&path, text).unwrap();
    let cfg = weir_control::config::parse(text).unwrap();
    let r = &cfg.routes[0];
    let ctx = Context::of(&cfg, r, String::new());
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64;
    let check = |promoted_at: Option<u64>| {
        let (mut e, _) = Engine::new(r.rollout.clone().unwrap(), ctx.clone(), now - 3 * 86_400_000);
        if let Some(at) = promoted_at {
            e.promote(at, true).unwrap();
        }
        let state = StateFile { routes: [("web".to_string(), Persisted::of(&e))].into_iter().collect() };
        std::fs::write(dir.path().join("state.json"), state.to_json().unwrap()).unwrap();
        let out = Command::new(weir_bin()).args(["check", "-c"]).arg(&path).output().unwrap();
        assert!(out.status.success());
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let stale = check(Some(now - 2 * 86_400_000));
    assert!(stale.contains("warning: routes[0].rollout: promoted 2.0 days ago and still configured"), "{stale}");
    let live = check(None);
    assert!(!live.contains("warning"), "{live}");
}
