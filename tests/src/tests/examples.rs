//! The shipped examples: every config validates, the Kubernetes overlays
//! pass scripts/validate-k8s.sh (schemas, Pod Security, alerts in sync),
//! and the Grafana dashboard only queries metrics that weir exports.

use std::collections::BTreeSet;
use std::process::Command;
use std::time::Duration;

use weir_control::rollout::EventKind;

use crate::*;

fn toml_files(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let p = entry.unwrap().path();
        if p.is_dir() {
            toml_files(&p, out);
        } else if p.extension().is_some_and(|e| e == "toml") {
            out.push(p);
        }
    }
}

#[test]
fn every_config_example_passes_weir_check() {
    let mut files = Vec::new();
    toml_files(&workspace().join("config"), &mut files);
    assert!(files.len() >= 3, "{files:?}");
    // Every Kubernetes overlay's weir.toml (its configMapGenerator's file)
    // is among them.
    let overlays = workspace().join("config").join("k8s").join("overlays");
    for entry in std::fs::read_dir(&overlays).unwrap() {
        let toml = entry.unwrap().path().join("weir.toml");
        assert!(files.contains(&toml), "{} is missing", toml.display());
    }
    let k8s = workspace().join("config").join("k8s");
    for f in files {
        let mut cmd = Command::new(weir_bin());
        cmd.arg("check");
        // The Kubernetes configs name the pod's token file and the
        // cluster's DNS names, neither of which exists here: their text only.
        if f.starts_with(&k8s) {
            cmd.arg("--syntax-only");
        }
        let out = cmd.arg("-c").arg(&f).output().unwrap();
        assert!(out.status.success(), "{}: {}", f.display(), String::from_utf8_lossy(&out.stderr));
    }
}

/// Each overlay of config/k8s builds with kustomize, passes
/// kubernetes-validate --strict, its PodMonitor and PrometheusRule their CRD
/// schemas (the rule's groups equal config/alerts.yml's and pass promtool),
/// and every container of every pod the Pod Security "restricted" fields
/// and weir's own (probes, workers, drain timing, token): the script's
/// checks, each of which fails it.
#[test]
fn the_kubernetes_overlays_pass_validate_k8s() {
    let out = Command::new(workspace().join("scripts").join("validate-k8s.sh"))
        .output()
        .expect("scripts/validate-k8s.sh needs bash, kubectl, kubernetes-validate, promtool: .ci/run installs them");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{text}");
    for overlay in ["sidecar", "edge", "fleet"] {
        assert!(text.contains(&format!("\nok {overlay}\n")), "{overlay} not validated: {text}");
    }
    let kinds =
        ["deployment/weir", "deployment/web", "statefulset/etcd", "networkpolicy/weir", "poddisruptionbudget/weir"];
    for kind in kinds {
        assert!(text.contains(&format!("passed for resource {kind} ")), "{kind} not validated: {text}");
    }
    assert!(text.contains("PodMonitor/weir, PrometheusRule/weir valid against"), "{text}");
    assert!(text.contains("promtool check rules"), "{text}");
}

/// The metric names (`weir_...`) in `expr`.
fn metric_names(expr: &str, into: &mut BTreeSet<String>) {
    let mut rest = expr;
    while let Some(i) = rest.find("weir_") {
        let name: String = rest[i..].chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
        rest = &rest[i + name.len()..];
        into.insert(name);
    }
}

/// The alerting rules pass promtool's checks and their unit tests, and the
/// Prometheus config that loads them is valid.
#[test]
fn alerting_rules_pass_promtool_and_their_unit_tests() {
    let config = workspace().join("config");
    for args in [
        &["check", "rules", "alerts.yml"][..],
        &["test", "rules", "alerts.test.yml"],
        &["check", "config", "prometheus.yml"],
    ] {
        let out = std::process::Command::new("promtool")
            .args(args)
            .current_dir(&config)
            .output()
            .expect("promtool (Debian package prometheus) is needed: .ci/run installs it");
        assert!(
            out.status.success(),
            "promtool {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grafana_and_alerts_query_only_exported_metrics() {
    let text = std::fs::read_to_string(workspace().join("config").join("grafana-dashboard.json")).unwrap();
    let dash: serde_json::Value = serde_json::from_str(&text).unwrap();
    let mut queried = BTreeSet::new();
    for panel in dash["panels"].as_array().unwrap() {
        for t in panel["targets"].as_array().unwrap() {
            metric_names(t["expr"].as_str().unwrap(), &mut queried);
        }
    }
    assert!(queried.len() >= 8, "{queried:?}");
    let alerts = std::fs::read_to_string(workspace().join("config").join("alerts.yml")).unwrap();
    for line in alerts.lines().filter(|l| !l.trim_start().starts_with('#')) {
        metric_names(line, &mut queried);
    }

    // A weir that has evaluated gates and rolled back exports every family;
    // with synthetic requests (a series appears with its first sample),
    // shadow copies (mismatches are counted from the first copy) and a
    // dead first stable address (a request that tries it is retried on the
    // live one: weir_upstream_retries_total; under 1 in 2^100 that none does), the
    // dashboard's per-traffic-kind panels have their families too.
    let stable = Upstream::start("stable", Mode::Named).await;
    let canary = Upstream::start("canary", Mode::Named).await;
    let dead = std::net::SocketAddr::from(([127, 0, 0, 1], 1));
    let r = "shadow = { percent = 100 }\n[routes.rollout]\ninterval = \"200ms\"\nstages = [{ weight = 50, bake = \"10m\", synthetic = { rps = 50, path = \"/\" } }, { weight = 100 }]\ngates = [{ metric = \"error_rate\", max = 0.05, min_samples = 5 }]";
    let w = InProcess::start(&config_text_with(&[dead, stable.addr], &[canary.addr], "v2", r, "")).await;
    let mut rx = w.weir.subscribe();
    let c = client();
    // Enough for the gate to pass (an error-rate limit passes on evidence:
    // ~70 canary requests without a failure for max = 0.05).
    for _ in 0..300 {
        get(&c, &w.url("/"), &[]).await;
    }
    wait_event(&mut rx, Duration::from_secs(10), |e| {
        e.kind == EventKind::Evaluated && e.verdicts.iter().any(|v| v.value.is_some())
    })
    .await;
    w.weir.act("web", weir_proxy::ManualAction::Abort).await.unwrap();
    std::fs::write(&w.path, std::fs::read_to_string(&w.path).unwrap()).unwrap();
    w.weir.reload().await.unwrap();
    let (_, metrics) = get(&c, &format!("http://{}/metrics", w.weir.admin_addr()), &[]).await;
    let exported: BTreeSet<String> = parse_prometheus(&metrics).keys().map(|(name, _)| name.clone()).collect();
    for name in &queried {
        assert!(
            exported.contains(name),
            "the dashboard or an alert queries {name}, which weir does not export: {exported:?}"
        );
    }
}
