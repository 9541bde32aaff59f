//! `weir import ingress-nginx` on ingress-nginx's own documentation: the
//! canary example (`tests/ingress-nginx/docs-canary-example.yaml`, verbatim)
//! and each canary rule of its annotation reference
//! (`tests/ingress-nginx/annotations.yaml`, each host with its own main and
//! canary Services, and two hosts sharing one main Service). The configs it
//! writes pass `weir check`, and weir, run on them, routes every combination
//! of header and cookie as ingress-nginx's own decision
//! (`route_to_alternative_balancer` in its `balancer.lua`, transcribed below
//! as [`nginx`]) does, except where the import said, naming the Ingress, it
//! would not.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::{client, get, weir_bin, workspace, InProcess, Mode, Upstream};

fn fixture(name: &str) -> PathBuf {
    workspace().join("tests/ingress-nginx").join(name)
}

fn import(file: &Path, extra: &[&str]) -> Output {
    Command::new(weir_bin()).args(["import", "ingress-nginx"]).args(extra).arg(file).output().unwrap()
}

/// A canary Ingress's rules, as ingress-nginx reads its annotations.
#[derive(Clone, Copy)]
struct Canary {
    header: Option<&'static str>,
    value: Option<&'static str>,
    /// `canary-by-header-pattern`, as the regular expression matches.
    pattern: Option<fn(&str) -> bool>,
    cookie: Option<&'static str>,
    /// canary-weight / effective canary-weight-total.
    weight: f64,
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Side {
    Stable,
    Canary,
    /// Drawn by the weight.
    Weight,
}

/// ingress-nginx's `route_to_alternative_balancer` (controller v1.15.1),
/// without session affinity (which the fixtures do not use).
fn nginx(c: &Canary, header: Option<&str>, cookie: Option<&str>) -> Side {
    if let (Some(_), Some(h)) = (c.header, header) {
        if let Some(v) = c.value {
            if v == h {
                return Side::Canary;
            }
        } else if let Some(p) = c.pattern {
            if p(h) {
                return Side::Canary;
            }
        } else if h == "always" {
            return Side::Canary;
        } else if h == "never" {
            return Side::Stable;
        }
    }
    if let (Some(_), Some(v)) = (c.cookie, cookie) {
        if v == "always" {
            return Side::Canary;
        } else if v == "never" {
            return Side::Stable;
        }
    }
    match c.weight {
        w if w <= 0.0 => Side::Stable,
        w if w >= 1.0 => Side::Canary,
        _ => Side::Weight,
    }
}

/// One host of `annotations.yaml`: its canary rules, and where weir differs
/// (each difference is one the import reports, on a line naming `ingress`,
/// with this text).
struct Case {
    host: &'static str,
    canary: Canary,
    differs: fn(Option<&str>, Option<&str>) -> Option<Side>,
    ingress: &'static str,
    reported: &'static [&'static str],
}

/// weir reads `always` / `never` in any case; ingress-nginx only in lower case.
fn any_case(h: Option<&str>) -> Option<Side> {
    match h {
        Some("Always") => Some(Side::Canary),
        _ => None,
    }
}

fn cases() -> Vec<Case> {
    let none = Canary { header: None, value: None, pattern: None, cookie: None, weight: 0.0 };
    let shared = Canary { header: Some("x-group"), value: Some("gamma"), weight: 0.25, ..none };
    vec![
        Case {
            host: "header.example",
            canary: Canary { header: Some("x-canary"), weight: 0.2, ..none },
            differs: |h, _| any_case(h),
            ingress: "shop/header-canary",
            reported: &["any case"],
        },
        Case {
            host: "value.example",
            canary: Canary {
                header: Some("x-group"),
                value: Some("beta"),
                cookie: Some("canary"),
                weight: 0.1,
                ..none
            },
            differs: |h, c| match (h, c) {
                (Some("beta"), Some("never")) => Some(Side::Stable),
                (_, Some("Always")) => Some(Side::Canary),
                _ => None,
            },
            ingress: "shop/value-canary",
            reported: &["cookie canary=never goes to the main Service"],
        },
        Case {
            host: "pattern.example",
            canary: Canary {
                header: Some("x-group"),
                pattern: Some(|h| h == "beta" || h == "gamma"), // ^(beta|gamma)$
                ..none
            },
            differs: |_, _| None,
            ingress: "shop/pattern-canary",
            reported: &[],
        },
        Case {
            host: "regex.example",
            canary: Canary {
                header: Some("x-group"),
                pattern: Some(|h| h.starts_with("bet")), // ^bet
                ..none
            },
            // Not imported: those requests follow the weight, 0.
            differs: |h, _| h.is_some_and(|h| h.starts_with("bet")).then_some(Side::Stable),
            ingress: "shop/regex-canary",
            reported: &["\"^bet\" is a regular expression"],
        },
        Case {
            host: "cookie.example",
            // 30 of a total of 300.
            canary: Canary { cookie: Some("canary"), weight: 0.1, ..none },
            differs: |_, c| (c == Some("Always")).then_some(Side::Canary),
            ingress: "shop/cookie-canary",
            reported: &["any case"],
        },
        Case {
            host: "both.example",
            canary: Canary { header: Some("x-canary"), cookie: Some("canary"), weight: 0.4, ..none },
            differs: |h, c| match (h, c) {
                (Some("Always"), _) => Some(Side::Canary),
                (Some("always" | "never"), _) => None,
                (_, Some("never")) => Some(Side::Weight),
                _ => None,
            },
            ingress: "shop/both-canary",
            reported: &["cookie canary=never is not imported", "any case"],
        },
        // shared-a.example and shared-b.example route to one main Service;
        // the canary Ingress names shared-a only, ingress-nginx attaches it
        // to the Service: both hosts follow it.
        Case {
            host: "shared-a.example",
            canary: shared,
            differs: |_, _| None,
            ingress: "shop/shared-a-canary",
            reported: &["the weight is drawn per request"],
        },
        Case {
            host: "shared-b.example",
            canary: shared,
            differs: |_, _| None,
            ingress: "shop/shared-b",
            reported: &["gets the canary of Ingress shop/shared-a-canary"],
        },
        Case {
            host: "plain.example",
            canary: none,
            differs: |_, _| None,
            ingress: "shop/plain-api",
            reported: &["also matches /apix"],
        },
    ]
}

const HEADERS: [Option<&str>; 8] =
    [None, Some("always"), Some("never"), Some("Always"), Some("beta"), Some("gamma"), Some("betamax"), Some("other")];
const COOKIES: [Option<&str>; 5] = [None, Some("always"), Some("never"), Some("Always"), Some("other")];

/// Real upstreams, each answering its name, and the Services of a fixture
/// mapped to them.
struct Upstreams {
    _all: Vec<Upstream>,
    /// `--service NAME=ADDR` for each Service.
    args: Vec<String>,
}

impl Upstreams {
    /// `services`: (Service, name of the upstream that stands for it).
    async fn start(services: &[(String, &'static str)]) -> Upstreams {
        let mut all: Vec<Upstream> = Vec::new();
        let mut args = Vec::new();
        for (service, name) in services {
            let i = match all.iter().position(|u| u.name == *name) {
                Some(i) => i,
                None => {
                    all.push(Upstream::start(name, Mode::Named).await);
                    all.len() - 1
                }
            };
            args.push("--service".to_string());
            args.push(format!("{service}={}", all[i].addr));
        }
        Upstreams { _all: all, args }
    }
}

/// The Services of `annotations.yaml`: each main Service answers
/// "production", each canary Service "canary", plain.example's /api "api".
fn annotation_services() -> Vec<(String, &'static str)> {
    let mut services = Vec::new();
    for case in ["header", "value", "pattern", "regex", "cookie", "both", "shared", "plain"] {
        services.push((format!("{case}-main"), "production"));
        services.push((format!("{case}-canary"), "canary"));
    }
    services.push(("plain-api".to_string(), "api"));
    services
}

/// weir on the imported config, its Services mapped to real upstreams.
async fn run_imported(file: &Path, services: &[(String, &'static str)]) -> (String, InProcess, Upstreams) {
    let upstreams = Upstreams::start(services).await;
    let args: Vec<&str> = upstreams.args.iter().map(String::as_str).collect();
    let out = import(file, &args);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "import failed: {stderr}");
    let text = format!(
        "[listen]\naddr = \"127.0.0.1:0\"\n[admin]\naddr = \"127.0.0.1:0\"\n{}",
        String::from_utf8(out.stdout).unwrap()
    );
    (stderr, InProcess::start(&text).await, upstreams)
}

#[tokio::test]
async fn imported_annotations_route_as_ingress_nginx_does() {
    let (stderr, w, _upstreams) = run_imported(&fixture("annotations.yaml"), &annotation_services()).await;
    let c = client();
    let all = cases();
    for case in &all {
        for want in case.reported {
            assert!(
                stderr.lines().any(|l| l.contains(&format!("Ingress {}:", case.ingress)) && l.contains(want)),
                "{}: the import does not say \"{want}\" of Ingress {}:\n{stderr}",
                case.host,
                case.ingress
            );
        }
        let (mut weighted, mut to_canary) = (0u32, 0u32);
        for h in HEADERS {
            for k in COOKIES {
                let expected = (case.differs)(h, k).unwrap_or_else(|| nginx(&case.canary, h, k));
                let cookie = k.map(|v| format!("other=1; canary={v}"));
                let mut headers = vec![("host", case.host)];
                for name in ["x-canary", "x-group"] {
                    if let Some(v) = h {
                        headers.push((name, v));
                    }
                }
                if let Some(cookie) = &cookie {
                    headers.push(("cookie", cookie));
                }
                let tries = if expected == Side::Weight { 50 } else { 1 };
                for _ in 0..tries {
                    let (status, body) = get(&c, &w.url("/some/page"), &headers).await;
                    assert_eq!(status, 200, "{} {h:?} {k:?}", case.host);
                    match expected {
                        Side::Stable => assert_eq!(body, "production", "{} header {h:?} cookie {k:?}", case.host),
                        Side::Canary => assert_eq!(body, "canary", "{} header {h:?} cookie {k:?}", case.host),
                        Side::Weight => {
                            weighted += 1;
                            to_canary += u32::from(body == "canary");
                        }
                    }
                }
            }
        }
        if weighted > 0 {
            let share = f64::from(to_canary) / f64::from(weighted);
            assert!(
                (share - case.canary.weight).abs() < 0.05,
                "{}: {to_canary} of {weighted} weighted requests on the canary, want {}",
                case.host,
                case.canary.weight
            );
        } else {
            assert!(case.canary.weight == 0.0 || case.canary.weight == 1.0, "{}: no weighted request", case.host);
        }
    }
    // Paths and hosts: plain.example's /api path (ImplementationSpecific:
    // a Prefix to ingress-nginx, /api and /api/...) has its own Service, and
    // an unknown host has no route.
    for path in ["/api", "/api/orders"] {
        let (status, body) = get(&c, &w.url(path), &[("host", "plain.example")]).await;
        assert_eq!((status.as_u16(), body.as_str()), (200, "api"), "{path}");
    }
    let (status, body) = get(&c, &w.url("/ap"), &[("host", "plain.example")]).await;
    assert_eq!((status.as_u16(), body.as_str()), (200, "production"));
    let (status, _) = get(&c, &w.url("/"), &[("host", "elsewhere.example")]).await;
    assert_eq!(status, 404);
    w.weir.shutdown().await;
}

#[tokio::test]
async fn the_documentation_example_splits_half_and_half() {
    let services = [("production".to_string(), "production"), ("canary".to_string(), "canary")];
    let (stderr, w, _upstreams) = run_imported(&fixture("docs-canary-example.yaml"), &services).await;
    assert!(!stderr.contains("differs:"), "{stderr}");
    let c = client();
    let mut to_canary = 0;
    for _ in 0..200 {
        let (status, body) = get(&c, &w.url("/"), &[("host", "echo.prod.mydomain.com")]).await;
        assert_eq!(status, 200);
        to_canary += usize::from(body == "canary");
    }
    assert!((80..=120).contains(&to_canary), "{to_canary} of 200 on the canary at weight 50");
    let (status, _) = get(&c, &w.url("/"), &[("host", "other.example")]).await;
    assert_eq!(status, 404);
    w.weir.shutdown().await;
}

#[test]
fn imported_configs_pass_weir_check_and_strict_refuses_a_lossy_import() {
    let dir = tempfile::tempdir().unwrap();
    for (file, service, lossy) in [
        ("docs-canary-example.yaml", "\"production.default.svc.cluster.local:80\"", false),
        ("annotations.yaml", "\"header-main.shop.svc.cluster.local:80\"", true),
    ] {
        let path = dir.path().join(file.replace(".yaml", ".toml"));
        let out = import(&fixture(file), &["-o", path.to_str().unwrap()]);
        assert!(out.status.success(), "{file}: {}", String::from_utf8_lossy(&out.stderr));
        // Cluster DNS names (SERVICE.NAMESPACE.svc.cluster.local:80) do not
        // resolve here: checked without resolving.
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains(service), "{text}");
        let check = Command::new(weir_bin()).args(["check", "--no-resolve", "-c"]).arg(&path).output().unwrap();
        assert!(check.status.success(), "{file}: {}", String::from_utf8_lossy(&check.stderr));

        let strict = import(&fixture(file), &["--strict"]);
        assert_eq!(strict.status.code(), Some(if lossy { 1 } else { 0 }), "{file}");
        assert_eq!(strict.stdout.is_empty(), lossy, "{file}");
    }
    // Unusable input: a clear error naming the place, exit 65.
    let bad = dir.path().join("bad.yaml");
    std::fs::write(
        &bad,
        "kind: Ingress\nmetadata: {name: x}\nspec:\n  rules: [ {host: a.example, http: {paths: [ {backend: 7} ]}} ]\n",
    )
    .unwrap();
    let out = import(&bad, &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(65), "{stderr}");
    assert!(
        stderr.contains("bad.yaml: document 1: Ingress x: spec.rules[0].http.paths[0].backend: invalid type"),
        "{stderr}"
    );
    let out = import(&dir.path().join("missing.yaml"), &[]);
    assert_eq!(out.status.code(), Some(65));
}
