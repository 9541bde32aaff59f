//! weir's own files on a bad disk: a state file or audit log that cannot
//! be written (a full filesystem, a read-only one) never stops serving or
//! deciding; the failure is retried, counted, logged and shown in
//! `/readyz`'s body, and written once the disk is back. A state file that
//! cannot be read at start (truncated, corrupt) holds every rollout with
//! the canary at 0 until an operator resumes it.
//!
//! The full and read-only filesystems are a small tmpfs the test mounts
//! (as root, which CI is; elsewhere the test says it skipped).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use weir_control::rollout::{EventKind, Phase};
use weir_proxy::ManualAction;

use crate::*;

const ROLLOUT: &str = "[routes.rollout]\ninterval = \"250ms\"\nstages = [{ weight = 10, bake = \"10m\" }, { weight = 30, bake = \"10m\" }, { weight = 100 }]\ngates = [{ metric = \"error_rate\", max = 0.05 }]\n";

/// A tmpfs of `size` mounted on a new directory, unmounted when dropped.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(size: &str) -> Option<Tmpfs> {
        let dir = tempfile::tempdir().unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .output();
        match out {
            Ok(o) if o.status.success() => Some(Tmpfs { dir }),
            Ok(o) => {
                eprintln!("skipped: cannot mount a tmpfs (needs root): {}", String::from_utf8_lossy(&o.stderr));
                None
            }
            Err(e) => {
                eprintln!("skipped: no mount command: {e}");
                None
            }
        }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn remount(&self, opt: &str) {
        let st = Command::new("mount").args(["-o", &format!("remount,{opt}")]).arg(self.path()).status().unwrap();
        assert!(st.success(), "remount {opt}");
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.dir.path()).status();
    }
}

/// Fills the filesystem of `dir` (the write that does not fit fails).
fn fill(dir: &Path) -> PathBuf {
    let filler = dir.join("filler");
    let mut f = std::fs::File::create(&filler).unwrap();
    let chunk = vec![0u8; 4096];
    while std::io::Write::write_all(&mut f, &chunk).is_ok() {}
    filler
}

async fn readyz(w: &InProcess) -> (StatusCode, String) {
    get(&client(), &format!("http://{}/readyz", w.weir.admin_addr()), &[]).await
}

async fn failures(w: &InProcess, file: &str) -> f64 {
    let (_, text) = get(&client(), &format!("http://{}/metrics", w.weir.admin_addr()), &[]).await;
    sample(&parse_prometheus(&text), "weir_file_write_failures_total", &[("file", file)])
}

/// The stage the state file holds for route `web`, if it can be read.
fn saved_stage(path: &Path) -> Option<u64> {
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(path).ok()?).ok()?;
    v["routes"]["web"]["state"]["stage"].as_u64()
}

/// Waits (polling: the retry runs on its own clock) until `ok`.
async fn until(what: &str, timeout: Duration, mut ok: impl AsyncFnMut() -> bool) {
    let since = Instant::now();
    while !ok().await {
        assert!(since.elapsed() < timeout, "not within {timeout:?}: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Every line of the audit log is a whole JSON event; their kinds.
fn audit_kinds(path: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(path).unwrap();
    text.lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap_or_else(|e| panic!("torn audit line {l:?}: {e}")))
        .map(|v| v["kind"].as_str().unwrap().to_string())
        .filter(|k| k != "evaluated" && k != "padding")
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_or_read_only_disk_never_stops_serving_or_deciding_and_the_writes_catch_up() {
    // The state file on one filesystem (weir keeps no file open there, so
    // it can be remounted read-only), the audit log on another.
    let Some(fs) = Tmpfs::mount("256k") else { return };
    let Some(audit_fs) = Tmpfs::mount("64k") else { return };
    let stable = Upstream::start("stable", Mode::Named).await;
    let canary = Upstream::start("canary", Mode::Named).await;
    let (state, audit) = (fs.path().join("state.json"), audit_fs.path().join("audit.jsonl"));
    // The audit log's filesystem is full from the start, the file's last
    // page too (a tmpfs fills by pages: a line would fit in a page's slack).
    let pad = "{\"kind\":\"padding\",\"pad\":\"\"}\n";
    let pad = pad.replace("\"\"}", &format!("\"{}\"}}", "x".repeat(4096 - pad.len())));
    std::fs::write(&audit, &pad).unwrap();
    let audit_filler = fill(audit_fs.path());
    let top = format!("[state]\nfile = \"{}\"\n[log]\naudit = \"{}\"", state.display(), audit.display());
    let w = InProcess::start(&config_text(stable.addr, canary.addr, ROLLOUT, &top)).await;
    let c = client();

    // Full: the promotion happens at once all the same, and requests go on.
    let filler = fill(fs.path());
    let since = Instant::now();
    let ev = w.weir.act("web", ManualAction::Promote).await.unwrap();
    assert_eq!((ev.kind, ev.stage), (EventKind::Advanced, 1));
    assert!(since.elapsed() < Duration::from_secs(2), "the action waited on the disk: {:?}", since.elapsed());
    assert_eq!(w.weir.route_weight_bp("web"), Some(3000));
    for _ in 0..20 {
        assert_eq!(get(&c, &w.url("/"), &[]).await.0, 200);
    }
    until("both failures counted", Duration::from_secs(5), async || {
        failures(&w, "state").await >= 1.0 && failures(&w, "audit").await >= 1.0
    })
    .await;
    let (status, body) = readyz(&w).await;
    assert_eq!(status, 200, "still ready: {body}");
    assert!(body.starts_with("ready\n"), "{body}");
    for want in ["warning: state file", "warning: audit log", "No space left on device"] {
        assert!(body.contains(want), "/readyz lacks {want:?}: {body}");
    }
    assert_ne!(saved_stage(&state), Some(1), "a full disk took the state file");

    // Space again: the kept writes go out (the retry backs off from 1 s).
    std::fs::remove_file(&filler).unwrap();
    std::fs::remove_file(&audit_filler).unwrap();
    until("the state file holds stage 1", Duration::from_secs(10), async || saved_stage(&state) == Some(1)).await;
    until("/readyz is plain again", Duration::from_secs(10), async || readyz(&w).await.1 == "ready\n").await;
    // Every event, once, in order, in whole lines.
    until("the audit log holds the promotion", Duration::from_secs(10), async || {
        audit_kinds(&audit).last().map(String::as_str) == Some("advanced")
    })
    .await;
    assert_eq!(audit_kinds(&audit), ["started", "advanced"]);

    // Read-only: the same, then writable again.
    fs.remount("ro");
    let before = failures(&w, "state").await;
    let ev = w.weir.act("web", ManualAction::Pause).await.unwrap();
    assert_eq!(ev.kind, EventKind::Paused);
    assert_eq!(get(&c, &w.url("/"), &[]).await.0, 200);
    until("read-only failures counted", Duration::from_secs(5), async || failures(&w, "state").await > before).await;
    let body = readyz(&w).await.1;
    assert!(body.contains("Read-only file system"), "{body}");
    fs.remount("rw");
    until("the state file holds the pause", Duration::from_secs(10), async || {
        std::fs::read_to_string(&state).is_ok_and(|t| t.contains("\"paused\""))
    })
    .await;
    until("the audit log holds the pause", Duration::from_secs(10), async || {
        audit_kinds(&audit).last().map(String::as_str) == Some("paused")
    })
    .await;
    w.weir.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_truncated_state_file_holds_every_rollout_at_zero_until_resumed() {
    let stable = Upstream::start("stable", Mode::Named).await;
    let canary = Upstream::start("canary", Mode::Named).await;
    let text = config_text(stable.addr, canary.addr, ROLLOUT, "[state]\nfile = \"weir-state.json\"");
    // A real state file at stage 1 (30 %), cut in half as a crash might.
    let first = InProcess::start(&text).await;
    first.weir.act("web", ManualAction::Promote).await.unwrap();
    let (dir, path) = (first.dir, first.path);
    first.weir.shutdown().await;
    let state = dir.path().join("weir-state.json");
    assert_eq!(saved_stage(&state), Some(1));
    let whole = std::fs::read(&state).unwrap();
    // Cut in half, cut near its end, emptied, and whole JSON of the wrong
    // shape.
    for cut in [Some(0.5), Some(0.97), Some(0.0), None] {
        let broken = match cut {
            Some(f) => whole[..(whole.len() as f64 * f) as usize].to_vec(),
            None => b"{\"routes\": {\"web\": 42}}".to_vec(),
        };
        std::fs::write(&state, &broken).unwrap();

        let cfg = weir_proxy::reload::read_config(&path).unwrap();
        let w = weir_proxy::Weir::start(cfg, Some(path.clone())).await.expect("weir starts");
        // Held: the canary at 0, not stage 0's 10 % nor the lost 30 %.
        assert_eq!(w.route_weight_bp("web"), Some(0), "cut {cut:?}");
        assert_eq!(w.rollout("web").unwrap().phase, Phase::Aborted);
        let ev = &w.events(Some("web"))[0];
        assert!(ev.cause.contains("weir-state.json") && ev.cause.contains("held with the canary at 0"), "{}", ev.cause);
        let (status, body) = get(&client(), &format!("http://{}/readyz", w.admin_addr()), &[]).await;
        assert_eq!(status, 200);
        assert!(body.contains("weir-state.json") && body.contains("held with the canary at 0"), "{body}");
        // The unreadable bytes are kept for a post-mortem.
        assert_eq!(std::fs::read(dir.path().join("weir-state.json.unreadable")).unwrap(), broken);
        // An operator resumes: stage 0 again, and the file is whole again.
        let ev = w.act("web", ManualAction::Resume).await.unwrap();
        assert_eq!((ev.to, ev.stage), (Phase::Progressing, 0));
        assert_eq!(w.route_weight_bp("web"), Some(1000));
        until("the state file is whole again", Duration::from_secs(10), async || saved_stage(&state) == Some(0)).await;
        w.shutdown().await;
    }
}
