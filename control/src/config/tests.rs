use super::*;

const MINIMAL: &str = r#"
[backends.stable]
addrs = ["127.0.0.1:9001"]
[backends.canary]
addrs = ["localhost:9002", "[::1]:9003"]
version = "v2"

[[routes]]
name = "web"
stable = "stable"
canary = "canary"
weight = 12.5
sticky = { cookie = "uid" }
force = { header = "X-Canary" }
"#;

fn errors(src: &str) -> Vec<String> {
    match parse(src) {
        Ok(_) => panic!("expected errors"),
        Err(e) => e.0.iter().map(ToString::to_string).collect(),
    }
}

#[test]
fn minimal_config_gets_defaults() {
    let c = parse(MINIMAL).unwrap();
    assert_eq!(c.listen.addr.to_string(), "127.0.0.1:8080");
    assert_eq!(c.admin.addr.to_string(), "127.0.0.1:9901");
    assert_eq!(c.timeouts.header_read, Duration::from_secs(10));
    assert_eq!(c.limits.max_headers, 100);
    let r = &c.routes[0];
    assert_eq!(r.path_prefix, "/");
    assert_eq!(r.weight.bp(), 1250);
    assert_eq!(r.salt, "web");
    assert_eq!(r.sticky, Some(KeySource::Cookie("uid".into())));
    assert_eq!(r.force, Some(KeySource::Header("x-canary".into())));
    let canary = &c.backends["canary"];
    assert_eq!(canary.addrs[0], Address { host: "localhost".into(), port: 9002 });
    assert_eq!(canary.addrs[1].to_string(), "[::1]:9003");
    assert_eq!(canary.version.as_deref(), Some("v2"));
}

#[test]
fn design_example_parses() {
    let src = r#"
[listen]
addr = "127.0.0.1:8080"
[admin]
addr = "127.0.0.1:9901"
[timeouts]
connect = "1s"
header_read = "10s"
upstream_response = "30s"
idle = "60s"
[limits]
max_header_bytes = 65536
max_headers = 100
max_connections = 10000
[backends.stable]
addrs = ["127.0.0.1:9001"]
version = "v1.4.2"
[backends.canary]
addrs = ["127.0.0.1:9002"]
version = "v1.5.0"
[[routes]]
name = "web"
match = { path_prefix = "/" }
stable = "stable"
canary = "canary"
sticky = { header = "x-user-id" }
force = { header = "x-canary" }
[routes.rollout]
interval = "1s"
on_failure = "rollback"
stages = [
  { weight = 0, cohort = { header = "x-user-group", values = ["internal"] }, bake = "30s", min_requests = 100 },
  { weight = 5,  bake = "1m", min_requests = 500 },
  { weight = 100, bake = "1m" },
]
gates = [
  { metric = "error_rate", max = 0.01 },
  { metric = "latency_p99", max = "250ms" },
  { metric = "latency_p99", max_ratio_to_stable = 1.25 },
]
"#;
    let c = parse(src).unwrap();
    let ro = c.routes[0].rollout.as_ref().unwrap();
    assert_eq!(ro.stages.len(), 3);
    assert_eq!(ro.stages[1].bake, Duration::from_secs(60));
    assert_eq!(ro.stages[0].cohort.as_ref().unwrap().values, vec!["internal".to_string()]);
    assert_eq!(ro.gates[1].max, Some(0.25));
    assert_eq!(ro.gates[2].metric, GateMetric::Latency(0.99));
}

#[test]
fn unknown_backend_is_named_with_its_path_and_line() {
    let src = MINIMAL.replace("canary = \"canary\"", "canary = \"canry\"");
    let e = errors(&src);
    assert_eq!(e, vec!["routes[0].canary: unknown backend \"canry\" (line 11)".to_string()]);
}

#[test]
fn all_errors_are_reported_at_once() {
    let src = r#"
[listen]
addr = "nowhere"
[timeouts]
connect = "5 parsecs"
idle = 30
[limits]
max_headers = 0
[backends.stable]
addrs = []
[backends."bad name"]
addrs = ["x:99999"]
[[routes]]
stable = "stable"
weight = 0.001
colour = "blue"
sticky = { header = "a", cookie = "b" }
"#;
    let e = errors(src);
    let joined = e.join("\n");
    for needle in [
        "listen.addr: \"nowhere\" is not an IP:port address (line 3)",
        "timeouts.connect: unknown duration unit \"parsecs\"",
        "timeouts.idle: expected a string, found integer",
        "limits.max_headers: 0 is out of range 1..=10000",
        "backends.stable.addrs: needs at least one address",
        "backends.bad name: \"bad name\" is not a valid name",
        "backends.bad name.addrs[0]: \"x:99999\" has an invalid port",
        "routes[0].name: is required",
        "routes[0].weight: 0.001 has more than two decimals",
        "routes[0].colour: unknown key",
        "routes[0].sticky: set either header or cookie, not both",
    ] {
        assert!(joined.contains(needle), "missing {needle:?} in\n{joined}");
    }
    // Sorted by line.
    let lines: Vec<u32> = parse(src).unwrap_err().0.iter().filter_map(|e| e.line).collect();
    assert!(lines.windows(2).all(|w| w[0] <= w[1]), "{lines:?}");
}

#[test]
fn syntax_errors_have_a_line() {
    let e = errors("[listen]\naddr = \n");
    assert_eq!(e.len(), 1);
    assert!(e[0].contains("(line 2)"), "{e:?}");
}

#[test]
fn route_rules() {
    let base = MINIMAL.to_string();
    let dup = format!("{base}\n[[routes]]\nname = \"web\"\nstable = \"stable\"\n");
    let e = errors(&dup).join("\n");
    assert!(e.contains("duplicate route name \"web\""), "{e}");
    assert!(e.contains("another route already matches"), "{e}");

    let same = base.replace("canary = \"canary\"", "canary = \"stable\"");
    assert!(errors(&same).join("\n").contains("is the same backend as stable"));

    let no_canary = base.replace("canary = \"canary\"\n", "");
    assert!(errors(&no_canary).join("\n").contains("routes[0].weight: needs a canary backend"));

    let both = base.replace("weight = 12.5", "weight = 5\n[routes.rollout]\nstages = [{ weight = 10 }]");
    assert!(errors(&both).join("\n").contains("routes[0].weight: a route with a rollout"));

    let down = base.replace(
        "weight = 12.5",
        "[routes.rollout]\nstages = [{ weight = 10 }, { weight = 5 }]\ngates = [{ metric = \"latency_p42\", max = \"1s\" }, { metric = \"error_rate\" }]",
    );
    let e = errors(&down).join("\n");
    assert!(e.contains("routes[0].rollout.stages[1].weight: 5% is lower than the previous stage's 10%"), "{e}");
    assert!(e.contains("routes[0].rollout.gates[0].metric: unknown metric \"latency_p42\""), "{e}");
    assert!(e.contains("routes[0].rollout.gates[1]: needs max"), "{e}");

    // A rollout without gates could only hold (issue 21: it used to
    // promote on nothing): the config says so.
    for gates in ["", "\ngates = []"] {
        let none = base.replace("weight = 12.5", &format!("[routes.rollout]\nstages = [{{ weight = 10 }}]{gates}"));
        let e = errors(&none).join("\n");
        assert!(e.contains("routes[0].rollout.gates: "), "{e}");
    }
}

#[test]
fn public_admin_needs_a_token() {
    let src = format!("[admin]\naddr = \"0.0.0.0:9901\"\n{MINIMAL}");
    assert!(errors(&src)[0].contains("admin.addr: 0.0.0.0:9901 is not a loopback address"));
    let ok = format!("[admin]\naddr = \"0.0.0.0:9901\"\ntoken_file = \"t\"\n{MINIMAL}");
    assert!(parse(&ok).is_ok());
}

#[test]
fn ofrep_listener() {
    assert_eq!(parse(MINIMAL).unwrap().ofrep, None);
    let on = parse(&format!("[ofrep]\naddr = \"0.0.0.0:9903\"\ntoken_file = \"ofrep.token\"\n{MINIMAL}")).unwrap();
    let ofrep = on.ofrep.unwrap();
    assert_eq!(ofrep.addr, "0.0.0.0:9903".parse().unwrap());
    assert_eq!(ofrep.token_file.as_deref(), Some(std::path::Path::new("ofrep.token")));
    let e = errors(&format!("[ofrep]\naddr = \"0.0.0.0:9903\"\n{MINIMAL}")).join("\n");
    assert!(e.contains("ofrep.addr: 0.0.0.0:9903 is not a loopback address"), "{e}");
    assert!(parse(&format!("[ofrep]\naddr = \"127.0.0.1:9903\"\n{MINIMAL}")).is_ok());
    let e = errors(&format!("[ofrep]\ntoken_file = \"t\"\n{MINIMAL}")).join("\n");
    assert!(e.contains("ofrep.addr: missing"), "{e}");
    let e = errors(&format!("[ofrep]\naddr = \"here\"\n{MINIMAL}")).join("\n");
    assert!(e.contains("ofrep.addr: \"here\" is not an IP:port address"), "{e}");
    let e = errors(&format!("[ofrep]\naddr = \"127.0.0.1:1\"\nport = 1\n{MINIMAL}")).join("\n");
    assert!(e.contains("ofrep.port"), "{e}");
}

#[test]
fn variant_header_forms() {
    let t = MINIMAL.replace("weight = 12.5", "weight = 12.5\nvariant_header = true");
    assert_eq!(parse(&t).unwrap().routes[0].variant_header.as_deref(), Some("x-weir-variant"));
    let s = MINIMAL.replace("weight = 12.5", "weight = 12.5\nvariant_header = \"X-Side\"");
    assert_eq!(parse(&s).unwrap().routes[0].variant_header.as_deref(), Some("x-side"));
    let bad = MINIMAL.replace("weight = 12.5", "weight = 12.5\nvariant_header = \"a b\"");
    assert!(errors(&bad)[0].contains("is not a valid header name"));
}

#[test]
fn tls_settings_parse_and_are_checked() {
    let src = r#"
[listen]
addr = "127.0.0.1:8443"
tls = { cert = "edge.pem", key = "edge.key", sni = [{ names = ["API.example.com", "*.internal"], cert = "api.pem", key = "api.key" }] }
[admin]
tls = { cert = "admin.pem", key = "admin.key" }
[timeouts]
tls_handshake = "3s"
[backends.stable]
addrs = ["127.0.0.1:9001"]
tls = true
http2 = true
[backends.canary]
addrs = ["127.0.0.1:9002"]
tls = { ca = "ca.pem", server_name = "canary.internal", cert = "client.pem", key = "client.key" }
[backends.plain]
addrs = ["127.0.0.1:9003"]
tls = false
[[routes]]
name = "web"
stable = "stable"
canary = "canary"
"#;
    let c = parse(src).unwrap();
    let tls = c.listen.tls.as_ref().unwrap();
    assert_eq!(tls.default.cert, PathBuf::from("edge.pem"));
    assert_eq!(tls.sni[0].names, ["api.example.com", "*.internal"]);
    assert_eq!(c.admin.tls.as_ref().unwrap().default.key, PathBuf::from("admin.key"));
    assert_eq!(c.timeouts.tls_handshake, Duration::from_secs(3));
    assert_eq!(c.backends["stable"].tls, Some(UpstreamTls::default()));
    assert!(c.backends["stable"].http2);
    let canary = c.backends["canary"].tls.as_ref().unwrap();
    assert_eq!(canary.server_name.as_deref(), Some("canary.internal"));
    assert_eq!(canary.client.as_ref().unwrap().cert, PathBuf::from("client.pem"));
    assert_eq!(c.backends["plain"].tls, None);
    assert!(!c.backends["plain"].http2);

    let bad = errors(
        r#"
[listen]
tls = { cert = "edge.pem", sni = [{ names = ["bad name"], cert = "a.pem", key = "a.key" }, { cert = "b.pem", key = "b.key" }] }
[backends.b]
addrs = ["127.0.0.1:9001"]
tls = { server_name = "no_underscores", cert = "c.pem", verify = false }
[[routes]]
name = "r"
stable = "b"
"#,
    );
    let all = bad.join("\n");
    for want in [
        "listen.tls.key: is required",
        "listen.tls.sni[0].names[0]: \"bad name\" is not a DNS name",
        "listen.tls.sni[1].names: is required",
        "backends.b.tls.server_name: \"no_underscores\" is not a DNS name",
        "backends.b.tls.key: is required",
        "backends.b.tls.verify: unknown key",
    ] {
        assert!(all.contains(want), "missing {want:?} in:\n{all}");
    }
}

#[test]
fn hardening_limits_outlier_and_health_parse_with_defaults_and_checks() {
    let c = parse(MINIMAL).unwrap();
    assert_eq!(c.limits.max_request_line, 8192);
    assert_eq!(c.limits.max_requests_in_flight, 10_000);
    assert_eq!(c.timeouts.body_read, Duration::from_secs(30));
    assert_eq!(c.timeouts.upstream_read, Duration::from_secs(60));
    assert_eq!(c.backends["stable"].outlier, Some(Outlier::default()));
    assert_eq!(c.backends["stable"].health, None);

    let src = MINIMAL.replace(
        "[backends.canary]",
        "outlier = false\n[backends.canary]\noutlier = { consecutive_failures = 3, base_ejection = \"10s\", max_ejection = \"1m\", max_ejection_percent = 50 }\nhealth = { path = \"/ready?deep=1\", interval = \"2s\", timeout = \"500ms\", healthy = 1, unhealthy = 2 }",
    ) + "[limits]\nmax_request_line = 4096\nmax_requests_in_flight = 500\n[timeouts]\nbody_read = \"5s\"\nupstream_read = \"2s\"\n";
    let c = parse(&src).unwrap();
    assert_eq!(c.backends["stable"].outlier, None);
    let o = c.backends["canary"].outlier.as_ref().unwrap();
    assert_eq!((o.consecutive_failures, o.max_ejection_percent), (3, 50));
    assert_eq!((o.base_ejection, o.max_ejection), (Duration::from_secs(10), Duration::from_secs(60)));
    let h = c.backends["canary"].health.as_ref().unwrap();
    assert_eq!(
        (h.path.as_str(), h.interval, h.timeout),
        ("/ready?deep=1", Duration::from_secs(2), Duration::from_millis(500))
    );
    assert_eq!((h.healthy, h.unhealthy), (1, 2));
    assert_eq!((c.limits.max_request_line, c.limits.max_requests_in_flight), (4096, 500));
    assert_eq!(c.timeouts.body_read, Duration::from_secs(5));
    assert_eq!(c.timeouts.upstream_read, Duration::from_secs(2));
    // Zero turns the upstream read limit off; zero elsewhere is an error.
    let c = parse(&(MINIMAL.to_string() + "[timeouts]\nupstream_read = \"0s\"\n")).unwrap();
    assert_eq!(c.timeouts.upstream_read, Duration::ZERO);
    let e = errors(&(MINIMAL.to_string() + "[timeouts]\nbody_read = \"0s\"\n"));
    assert!(e.iter().any(|e| e.starts_with("timeouts.body_read: must be greater than zero")), "{e:?}");

    let bad = errors(&MINIMAL.replace(
        "[backends.canary]",
        "outlier = { consecutive_failures = 0, base_ejection = \"2m\", max_ejection = \"1m\" }\nhealth = { path = \"healthz\", interval = \"1s\", timeout = \"2s\", checks = 1 }\n[backends.canary]",
    ))
    .join("\n");
    for want in [
        "backends.stable.outlier.consecutive_failures: 0 is out of range",
        "backends.stable.outlier.base_ejection: must be greater than zero and at most max_ejection",
        "backends.stable.health.path: \"healthz\" is not a path",
        "backends.stable.health.timeout: need interval >= 100ms",
        "backends.stable.health.checks: unknown key",
    ] {
        assert!(bad.contains(want), "missing {want:?} in:\n{bad}");
    }
}

#[test]
fn automatic_gate_names_never_collide() {
    let src = MINIMAL.replace("weight = 12.5\n", "")
        + "[routes.rollout]\nstages = [{ weight = 10, bake = \"1m\" }]\ngates = [\n  { metric = \"error_rate\", max = 0.01 },\n  { name = \"error_rate#2\", metric = \"latency_p99\", max = \"500ms\" },\n  { metric = \"error_rate\", max = 0.05 },\n  { metric = \"error_rate\", max = 0.07 },\n]\n";
    let c = parse(&src).unwrap();
    let names: Vec<_> = c.routes[0].rollout.as_ref().unwrap().gates.iter().map(|g| g.name.clone()).collect();
    assert_eq!(names, ["error_rate", "error_rate#2", "error_rate#3", "error_rate#4"]);
}

#[test]
fn telemetry_windows_are_clamped_to_what_is_kept() {
    let t = |window_max| Telemetry { record: true, window_max };
    let five_min = t(Duration::from_secs(300));
    assert_eq!(five_min.keep_secs(), 300);
    assert_eq!((five_min.span_secs(0), five_min.span_secs(10)), (1, 10));
    assert_eq!((five_min.span_secs(300), five_min.span_secs(301), five_min.span_secs(u64::MAX)), (300, 300, 300));
    // Whole seconds, and never less than one.
    assert_eq!(t(Duration::from_millis(1500)).keep_secs(), 1);
    let tiny = t(Duration::from_millis(200));
    assert_eq!((tiny.keep_secs(), tiny.span_secs(0), tiny.span_secs(60)), (1, 1, 1));
    // The parsed default.
    assert_eq!(parse(MINIMAL).unwrap().telemetry.keep_secs(), 300);
}

#[test]
fn warmup_is_read_and_bounded() {
    let rollout = |extra: &str| {
        format!("{MINIMAL}[routes.rollout]\n{extra}\nstages = [{{ weight = 10, bake = \"1m\" }}]\ngates = [{{ metric = \"error_rate\", max = 0.01 }}]\n")
            .replace("weight = 12.5\n", "")
    };
    let plan = |extra: &str| parse(&rollout(extra)).unwrap().routes[0].rollout.clone().unwrap();
    assert_eq!(plan("").warmup, Duration::ZERO);
    assert_eq!(plan("warmup = \"45s\"").warmup, Duration::from_secs(45));
    let e = errors(&rollout("warmup = \"2h\""));
    assert!(e.iter().any(|m| m.starts_with("routes[0].rollout.warmup: must be at most 1h")), "{e:?}");
}

/// Issue 21, bug 4: a stage longer than the telemetry kept slid its window
/// (the k8s example baked 10 min against a 5 min window), and nothing said
/// so. The window now grows to the longest stage deadline, and an explicit
/// shorter one is an error.
#[test]
fn a_stage_must_fit_in_the_window_the_telemetry_keeps() {
    let rollout = |stages: &str, extra: &str| {
        format!("{MINIMAL}[routes.rollout]\n{extra}\nstages = [{stages}]\ngates = [{{ metric = \"error_rate\", max = 0.01 }}]\n")
            .replace("weight = 12.5\n", "")
    };
    // No window_max: it grows to the longest deadline (hold_timeout 10 min).
    let c = parse(&rollout("{ weight = 10, bake = \"10m\" }, { weight = 100 }", "")).unwrap();
    assert_eq!(c.telemetry.window_max, Duration::from_secs(600));
    let c = parse(&rollout("{ weight = 10, bake = \"1m\", max_duration = \"20m\" }", "hold_timeout = \"1m\"")).unwrap();
    assert_eq!(c.telemetry.window_max, Duration::from_secs(1200));
    // An explicit window shorter than a deadline: the key, and why.
    let text = rollout("{ weight = 10, bake = \"1m\" }", "")
        .replace("[[routes]]", "[telemetry]\nwindow_max = \"5m\"\n[[routes]]");
    let e = errors(&text);
    assert!(e.iter().any(|e| e.contains("routes[0].rollout.hold_timeout") && e.contains("window_max")), "{e:?}");
    // A bake past its stage's deadline could never pass.
    let e = errors(&rollout("{ weight = 10, bake = \"2h\" }", ""));
    assert!(e.iter().any(|e| e.contains("routes[0].rollout.stages[0].bake") && e.contains("deadline")), "{e:?}");
    // A deadline past what telemetry can keep at all (1 h).
    let e = errors(&rollout("{ weight = 10, bake = \"1m\", max_duration = \"2h\" }", ""));
    assert!(e.iter().any(|e| e.contains("stages[0].max_duration")), "{e:?}");
    // The driver looks every 100 ms: a shorter interval is an error.
    let e = errors(&rollout("{ weight = 10 }", "interval = \"10ms\""));
    assert!(e.iter().any(|e| e.contains("routes[0].rollout.interval")), "{e:?}");
}

/// Issue 21 (validation): a gate on probes that no stage sends could never
/// be evaluated, so its stage would hold for ever.
#[test]
fn a_gate_on_probes_needs_the_probes() {
    let base = MINIMAL.replace("weight = 12.5\n", "");
    let e = errors(&format!(
        "{base}[routes.rollout]\nstages = [{{ weight = 10 }}]\ngates = [{{ metric = \"synthetic\" }}, {{ metric = \"shadow_mismatch\" }}]\n"
    ));
    assert!(e.iter().any(|e| e.contains("gates[0].metric") && e.contains("synthetic requests")), "{e:?}");
    assert!(e.iter().any(|e| e.contains("gates[1].metric") && e.contains("shadow")), "{e:?}");
    let ok = format!(
        "{base}shadow = {{ percent = 10 }}\n[routes.rollout]\nstages = [{{ weight = 10, synthetic = {{ rps = 1 }} }}]\ngates = [{{ metric = \"synthetic\" }}, {{ metric = \"shadow_mismatch\" }}]\n"
    );
    assert!(parse(&ok).is_ok(), "{:?}", parse(&ok).err());
}

#[test]
fn failures_replace_their_defaults_and_bad_entries_are_named() {
    let c = parse(&format!("{MINIMAL}failures = {{ http = [\"5xx\", 429], grpc = [\"unavailable\", 8] }}\n")).unwrap();
    let f = &c.routes[0].failures;
    assert!(f.http_failed(429) && f.http_failed(503) && !f.http_failed(404));
    assert_eq!(f.grpc_names(), ["RESOURCE_EXHAUSTED", "UNAVAILABLE"]);
    // Only http given: gRPC keeps its default (and the other way round).
    let c = parse(&format!("{MINIMAL}failures = {{ http = [\"4xx\"] }}\n")).unwrap();
    let f = &c.routes[0].failures;
    assert!(f.http_failed(404) && !f.http_failed(500));
    assert_eq!(f.grpc_names(), crate::classify::Classifier::default().grpc_names());
    assert_eq!(parse(MINIMAL).unwrap().routes[0].failures, crate::classify::Classifier::default());

    let e =
        errors(&format!("{MINIMAL}failures = {{ http = [\"6xx\", 700, true], grpc = [\"NOPE\", 17], code = 1 }}\n"));
    let has = |needle: &str| e.iter().any(|m| m.contains(needle));
    assert!(has("routes[0].failures.http[0]") && has("routes[0].failures.http[1]"), "{e:?}");
    assert!(has("routes[0].failures.http[2]"), "a boolean is named too: {e:?}");
    assert!(has("routes[0].failures.grpc[0]") && has("UNAVAILABLE"), "the known codes are listed: {e:?}");
    assert!(has("routes[0].failures.grpc[1]") && has("routes[0].failures.code"), "{e:?}");
}

/// Issue 21, item 8: a stage no gate can judge is a config error, not a
/// stage that holds until its deadline.
#[test]
fn a_stage_no_gate_can_judge_is_an_error() {
    let base = MINIMAL.replace("weight = 12.5\n", "");
    let plan = |stages: &str, gates: &str| format!("{base}[routes.rollout]\nstages = [{stages}]\ngates = [{gates}]\n");
    let synth = "synthetic = { rps = 5, path = \"/check\" }";
    let stages =
        format!("{{ weight = 0, bake = \"1m\", {synth} }}, {{ weight = 50, bake = \"1m\" }}, {{ weight = 100 }}");
    let e = errors(&plan(&stages, "{ metric = \"synthetic\", max = 0.0 }"));
    let named: Vec<&String> = e.iter().filter(|m| m.contains("no gate can judge this stage")).collect();
    assert_eq!(named.len(), 2, "{e:?}");
    assert!(
        named[0].starts_with("routes[0].rollout.stages[1]:") && named[1].starts_with("routes[0].rollout.stages[2]:")
    );
    // A gate on live traffic judges the stages without synthetic requests.
    let ok = plan(&stages, "{ metric = \"synthetic\", max = 0.0 }, { metric = \"error_rate\", max = 0.05 }");
    assert!(parse(&ok).is_ok(), "{:?}", parse(&ok).err());

    let compare = "{ metric = \"error_rate_vs_stable\" }, { metric = \"latency_p99\", max_ratio_to_stable = 1.5 }";
    let e = errors(&plan("{ weight = 100 }", compare));
    assert!(
        e.iter().any(|m| m.starts_with("routes[0].rollout.stages[0]: no gate can judge") && m.contains("all traffic")),
        "{e:?}"
    );
    // Shadow copies are of what stable serves: none at 100 %.
    let shadowed = format!(
        "{base}shadow = {{ percent = 10 }}\n[routes.rollout]\nstages = [{{ weight = 100 }}]\n\
         gates = [{{ metric = \"shadow_mismatch\", max = 0.01 }}]\n"
    );
    assert!(errors(&shadowed).iter().any(|m| m.starts_with("routes[0].rollout.stages[0]: no gate can judge")));
    // An absolute limit can judge it; a lower first stage gives a baseline.
    assert!(parse(&plan("{ weight = 100 }", "{ metric = \"error_rate\", max = 0.05 }")).is_ok());
    assert!(parse(&plan("{ weight = 10, bake = \"1m\" }, { weight = 100 }", compare)).is_ok());
}

/// Issue 22: shadow traffic and synthetic requests judge nothing on a gRPC
/// route: errors with `grpc = true`, warnings when a backend's health
/// check is gRPC, nothing on a plain HTTP route.
#[test]
fn shadow_and_synthetic_on_a_grpc_route_are_named() {
    let shadow = format!("{MINIMAL}shadow = {{ percent = 10 }}\n");
    let c = parse(&shadow).unwrap();
    assert!(!c.routes[0].grpc);
    assert_eq!(crate::config::warnings(&c), []);
    let e = errors(&format!("{shadow}grpc = true\n"));
    assert!(e.iter().any(|m| m.starts_with("routes[0].shadow: copies no gRPC call")), "{e:?}");
    let base = MINIMAL.replace("weight = 12.5\n", "");
    let synthetic = format!(
        "{base}grpc = true\n[routes.rollout]\nstages = [{{ weight = 0, bake = \"1m\", \
         synthetic = {{ rps = 5, path = \"/check\" }} }}, {{ weight = 100 }}]\ngates = [{{ metric = \"error_rate\", max = 0.05 }}]\n"
    );
    let e = errors(&synthetic);
    assert!(e.iter().any(|m| m.starts_with("routes[0].rollout.stages[0].synthetic: sends HTTP GETs")), "{e:?}");
    assert!(parse(&synthetic.replace("grpc = true\n", "")).is_ok());
    // Without the key, a backend's gRPC health check makes it a warning.
    let health = shadow.replacen(
        "version = \"v2\"",
        "version = \"v2\"\nhttp2 = true\nhealth = { grpc_service = \"pkg.Svc\", interval = \"1s\" }",
        1,
    );
    let w = crate::config::warnings(&parse(&health).unwrap());
    assert_eq!(w.len(), 1, "{w:?}");
    assert_eq!(w[0].0, "routes[0].shadow");
    assert!(w[0].1.contains("checks its health over gRPC"), "{w:?}");
}

/// Issue 21: relative limits pass when not breached; a rollout judged on
/// nothing else would promote on no evidence of safety.
#[test]
fn a_rollout_of_relative_limits_only_is_warned_about() {
    let base = MINIMAL.replace("weight = 12.5\n", "");
    let rollout = |gates: &str| {
        parse(&format!("{base}[routes.rollout]\nstages = [{{ weight = 10, bake = \"1m\" }}, {{ weight = 100 }}]\ngates = [{gates}]\n"))
            .map(|c| crate::config::warnings(&c))
    };
    let w = rollout("{ metric = \"error_rate\", max_ratio_to_stable = 2 }").unwrap();
    assert_eq!(w.len(), 1, "{w:?}");
    assert_eq!(w[0].0, "routes[0].rollout.gates");
    assert!(w[0].1.contains("none shows the canary within a bound"), "{w:?}");
    let with_max = "{ metric = \"error_rate\", max_ratio_to_stable = 2 }, { metric = \"error_rate\", max = 0.05 }";
    assert_eq!(rollout(with_max).unwrap(), []);
    assert_eq!(rollout("{ metric = \"error_rate_vs_stable\" }").unwrap(), []);
    // A relative latency limit passes only on its bound: no warning.
    let latency = "{ metric = \"error_rate\", max_ratio_to_stable = 2 }, { metric = \"latency_p99\", max_ratio_to_stable = 1.25 }";
    assert_eq!(rollout(latency).unwrap(), []);
}

#[test]
fn a_grpc_health_check_needs_http2_and_no_path() {
    let grpc = MINIMAL.replacen(
        "version = \"v2\"",
        "version = \"v2\"\nhttp2 = true\nhealth = { grpc_service = \"pkg.Svc\", interval = \"1s\" }",
        1,
    );
    let c = parse(&grpc).unwrap();
    assert_eq!(c.backends["canary"].health.as_ref().unwrap().grpc_service.as_deref(), Some("pkg.Svc"));
    let e = errors(&grpc.replace("http2 = true\n", ""));
    assert!(e.iter().any(|m| m.contains("backends.canary.health.grpc_service") && m.contains("http2 = true")), "{e:?}");
    let e = errors(&grpc.replace("interval = \"1s\"", "path = \"/x\""));
    assert!(e.iter().any(|m| m.contains("not both")), "{e:?}");
}

#[test]
fn fleet_section_defaults_and_errors() {
    assert_eq!(parse(MINIMAL).unwrap().fleet, None);
    let c = parse(&format!("[fleet]\nendpoints = [\"127.0.0.1:2379\", \"https://etcd-0:2379\"]\n{MINIMAL}")).unwrap();
    let f = c.fleet.unwrap();
    assert_eq!(f.endpoints.len(), 2);
    assert_eq!((f.name.as_str(), f.replica.as_deref()), ("default", None));
    assert_eq!((f.lease_ttl, f.staleness, f.min_reporters), (Duration::from_secs(5), Duration::from_secs(30), 1));
    assert!(f.tls.is_some(), "an https endpoint means TLS");
    let errs = errors(&format!(
        "[fleet]\nendpoints = [\"nohost\", \"h:1/x\"]\nname = \"a b\"\nlease_ttl = \"1500ms\"\nstaleness = \"1s\"\n\
         report_interval = \"10s\"\nmin_reporters = 0\nbogus = 1\n[fleet.tls]\ncert_file = \"c.pem\"\n{MINIMAL}"
    ));
    for needle in [
        "fleet.endpoints[0]: \"nohost\" is not an etcd endpoint",
        "fleet.endpoints[1]",
        "fleet.name",
        "fleet.lease_ttl: must be whole seconds",
        "fleet.staleness: must be at least lease_ttl",
        "fleet.report_interval: must be shorter than lease_ttl",
        "fleet.min_reporters: 0 is out of range",
        "fleet.bogus: unknown key",
        "fleet.tls: cert_file and key_file go together",
    ] {
        assert!(errs.iter().any(|e| e.starts_with(needle)), "no {needle:?} in {errs:#?}");
    }
    assert!(errors("[fleet]\nname = \"x\"\n").iter().any(|e| e.starts_with("fleet.endpoints: is required")));
    assert!(errors("[fleet]\nendpoints = [\"127.0.0.1:2379\"]\nlease_ttl = \"3s\"\ntimeout = \"2s\"\n")
        .iter()
        .any(|e| e.starts_with("fleet.timeout: must be at most half of lease_ttl")));
    // Unset, the timeout's default shrinks to fit a short lease.
    let c = parse(&format!("[fleet]\nendpoints = [\"127.0.0.1:2379\"]\nlease_ttl = \"3s\"\n{MINIMAL}")).unwrap();
    assert_eq!(c.fleet.unwrap().timeout, Duration::from_millis(1500));
    let pre_stage = format!(
        "[fleet]\nendpoints = [\"127.0.0.1:2379\"]\n{MINIMAL}[routes.rollout]\nstages = [{{ weight = 10 }}, {{ weight = 100 }}]\n\
         gates = [{{ metric = \"error_rate\", max = 0.01 }}]\npre_stage = \"http://127.0.0.1:1/hook\"\n"
    );
    assert!(errors(&pre_stage)
        .iter()
        .any(|e| e.starts_with("routes[0].rollout.pre_stage: is not supported in fleet mode")));
}

/// The fingerprint of a rollout is what a persisted or fleet-committed
/// state is matched with: a new key at its default must not change it, or
/// an upgrade restarts every rollout (a promoted one back at stage 0). The
/// value is this config's fingerprint before `warmup` existed.
#[test]
fn a_rollouts_fingerprint_survives_a_new_key_at_its_default() {
    let text = "[backends.s]\naddrs = [\"127.0.0.1:1\"]\n[backends.c]\naddrs = [\"127.0.0.1:2\"]\n[[routes]]\nname = \"web\"\nstable = \"s\"\ncanary = \"c\"\n[routes.rollout]\nstages = [{ weight = 10, bake = \"1m\" }, { weight = 100 }]\ngates = [{ metric = \"error_rate\", max = 0.05 }]\n";
    let plan = |t: &str| parse(t).unwrap().routes[0].rollout.clone().unwrap();
    assert_eq!(crate::fingerprint(&plan(text)), "6576a7d1379c0ef1");
    let warm = text.replace("[routes.rollout]\n", "[routes.rollout]\nwarmup = \"30s\"\n");
    assert_ne!(crate::fingerprint(&plan(&warm)), "6576a7d1379c0ef1");
}

/// Issue 24: `[prometheus]` and `promql` gates are read with their
/// defaults, and every way to get them wrong is named with its key.
#[test]
fn promql_gates_and_prometheus_are_checked() {
    let route = |gates: &str| {
        format!(
            "[backends.s]\naddrs = [\"127.0.0.1:1\"]\nversion = \"v1\"\n[backends.c]\naddrs = [\"127.0.0.1:2\"]\n\
             [[routes]]\nname = \"web\"\nstable = \"s\"\ncanary = \"c\"\n[routes.rollout]\n\
             stages = [{{ weight = 10 }}, {{ weight = 100 }}]\ngates = [{gates}]\n"
        )
    };
    let prom = "[prometheus]\nurl = \"http://127.0.0.1:9090/\"\n";
    let ok = format!(
        "{prom}{}",
        route(
            r#"{ metric = "error_rate", max = 0.05 }, { metric = "promql", name = "checkout", query = 'sum(rate(fail{backend="{{backend}}"}[{{window}}]))', max = 0.01, min = 0.0, max_ratio_to_stable = 2, dry_run = true }"#
        )
    );
    let c = parse(&ok).unwrap();
    let p = c.prometheus.unwrap();
    assert_eq!(
        (p.url.as_str(), p.timeout, p.interval),
        ("http://127.0.0.1:9090", Duration::from_secs(5), Duration::from_secs(5))
    );
    let g = &c.routes[0].rollout.as_ref().unwrap().gates[1];
    assert_eq!(
        (g.name.as_str(), g.metric, g.max, g.min, g.dry_run),
        ("checkout", GateMetric::Promql, Some(0.01), Some(0.0), true)
    );
    for (text, needle) in [
        (
            route(r#"{ metric = "promql", query = "up", max = 1 }"#),
            "routes[0].rollout.gates[0].metric: a promql gate needs a [prometheus] section",
        ),
        (
            format!("{prom}{}", route(r#"{ metric = "promql", max = 1 }"#)),
            "routes[0].rollout.gates[0].query: is required",
        ),
        (
            format!("{prom}{}", route(r#"{ metric = "promql", query = "up" }"#)),
            "routes[0].rollout.gates[0]: needs max, min",
        ),
        (
            format!("{prom}{}", route(r#"{ metric = "promql", query = "up{x='{{nope}}'}", max = 1 }"#)),
            "routes[0].rollout.gates[0].query: unknown variable {{nope}}",
        ),
        (
            format!("{prom}{}", route(r#"{ metric = "promql", query = "up", max_ratio_to_stable = 2 }"#)),
            "routes[0].rollout.gates[0].query: a relative limit compares",
        ),
        (
            format!("{prom}{}", route(r#"{ metric = "promql", query = "up{v='{{canary_version}}'}", max = 1 }"#)),
            "routes[0].rollout.gates[0].query: uses {{canary_version}} but backend \"c\" has no version label",
        ),
        (
            format!("{prom}{}", route(r#"{ metric = "promql", query = "up", max = 1, min_samples = 5 }"#)),
            "routes[0].rollout.gates[0].min_samples: a promql gate reads one value",
        ),
        (
            format!("{prom}{}", route(r#"{ metric = "promql", query = "up", max = 1, min = 2 }"#)),
            "routes[0].rollout.gates[0].min: 2 is above max",
        ),
        (
            format!("{prom}{}", route(r#"{ metric = "error_rate", max = 0.1, query = "up" }"#)),
            "routes[0].rollout.gates[0].query: only a promql gate takes this",
        ),
        (
            route(r#"{ metric = "error_rate", max = 0.1, dry_run = true }"#),
            "routes[0].rollout.gates: every gate is dry_run",
        ),
        (
            format!("[prometheus]\nurl = \"ftp://x\"\n{}", route(r#"{ metric = "error_rate", max = 0.1 }"#)),
            "prometheus.url: \"ftp://x\" is not a Prometheus base URL",
        ),
        (
            format!("[prometheus]\nurl = \"http://:9090\"\n{}", route(r#"{ metric = "error_rate", max = 0.1 }"#)),
            "prometheus.url: \"http://:9090\" is not",
        ),
        (
            format!("[prometheus]\nurl = \"http://x:99999\"\n{}", route(r#"{ metric = "error_rate", max = 0.1 }"#)),
            "prometheus.url: \"http://x:99999\" is not",
        ),
        (
            format!("[prometheus]\nurl = \"http://a b\"\n{}", route(r#"{ metric = "error_rate", max = 0.1 }"#)),
            "prometheus.url: \"http://a b\" is not",
        ),
        (
            format!(
                "[prometheus]\nurl = \"http://x\"\ninterval = \"10ms\"\n{}",
                route(r#"{ metric = "error_rate", max = 0.1 }"#)
            ),
            "prometheus.interval: must be between",
        ),
        (
            format!(
                "[fleet]\nendpoints = [\"127.0.0.1:2379\"]\n{prom}{}",
                route(r#"{ metric = "promql", query = "up", max = 1 }"#)
            ),
            "routes[0].rollout.gates[0].metric: promql gates are not supported in fleet mode",
        ),
    ] {
        let errs = errors(&text);
        assert!(errs.iter().any(|e| e.starts_with(needle)), "no {needle:?} in {errs:#?}");
    }
}

/// Issue 24: `backends.NAME.release` is read and checked; it does not
/// change what identifies the canary's build (the version label).
#[test]
fn release_metadata_is_read_and_checked() {
    let base =
        "[backends.s]\naddrs = [\"127.0.0.1:1\"]\nversion = \"v1\"\n[[routes]]\nname = \"web\"\nstable = \"s\"\n";
    let with = |release: &str| format!("{base}[backends.s.release]\n{release}\n");
    let c = parse(&with("commit = \"abc123\"\nnotes = \"https://git.example/r/v1\"\nticket = \"OPS-1\"")).unwrap();
    let r = c.release_of("s").unwrap();
    assert_eq!(
        (r.commit.as_deref(), r.notes.as_deref(), r.ticket.as_deref()),
        (Some("abc123"), Some("https://git.example/r/v1"), Some("OPS-1"))
    );
    for (text, needle) in [
        (
            with("notes = \"file:///etc/passwd\""),
            "backends.s.release.notes: \"file:///etc/passwd\" is not an http:// or https:// link",
        ),
        (with("commit = \"\""), "backends.s.release.commit: must be 1-256 printable characters"),
        (with("ticket = \"a\\u0007b\""), "backends.s.release.ticket: must be 1-256 printable characters"),
        (with("author = \"me\""), "backends.s.release.author: unknown key"),
    ] {
        let errs = errors(&text);
        assert!(errs.iter().any(|e| e.starts_with(needle)), "no {needle:?} in {errs:#?}");
    }
}

#[test]
fn dns_drain_and_log_format_settings() {
    let c = parse(MINIMAL).unwrap();
    assert_eq!(c.dns, Dns::default());
    assert_eq!((c.dns.min_ttl, c.dns.max_ttl), (Duration::from_secs(1), Duration::from_secs(30)));
    assert_eq!(c.timeouts.drain_delay, Duration::ZERO);
    assert_eq!(c.log.format, LogFormat::Text);

    let c = parse(&format!(
        "[dns]\nmin_ttl = \"2s\"\nmax_ttl = \"1m\"\nservers = [\"10.96.0.10\", \"127.0.0.1:5353\"]\n[timeouts]\ndrain_delay = \"5s\"\n[log]\nformat = \"json\"\n{MINIMAL}"
    ))
    .unwrap();
    assert_eq!((c.dns.min_ttl, c.dns.max_ttl), (Duration::from_secs(2), Duration::from_secs(60)));
    let servers: Vec<String> = c.dns.servers.iter().map(ToString::to_string).collect();
    assert_eq!(servers, ["10.96.0.10:53", "127.0.0.1:5353"]);
    assert_eq!(c.timeouts.drain_delay, Duration::from_secs(5));
    assert_eq!(c.log.format, LogFormat::Json);

    let errs = errors(&format!(
        "[dns]\nmin_ttl = \"1m\"\nmax_ttl = \"10s\"\nservers = [\"dns.local\"]\n[log]\nformat = \"xml\"\n{MINIMAL}"
    ));
    assert!(errs.iter().any(|e| e.starts_with("dns.min_ttl: 60s is above max_ttl (10s)")), "{errs:?}");
    assert!(errs.iter().any(|e| e.starts_with("dns.servers[0]: \"dns.local\" is not an IP address")), "{errs:?}");
    assert!(errs.iter().any(|e| e.starts_with("log.format: \"xml\" is not text or json")), "{errs:?}");
    let errs = errors(&format!("[dns]\nmin_ttl = \"10ms\"\n[timeouts]\ndrain_delay = \"2h\"\n{MINIMAL}"));
    assert!(errs.iter().any(|e| e.starts_with("dns.min_ttl: must be at least 100ms")), "{errs:?}");
    assert!(errs.iter().any(|e| e.starts_with("timeouts.drain_delay: must be at most 1h")), "{errs:?}");
}

#[test]
fn admin_hosts_are_names_wildcards_or_any() {
    let c = parse(&format!("[admin]\nhosts = [\"Weir-Admin.example.com\", \"*.svc.cluster.local\", \"*\"]\n{MINIMAL}"))
        .unwrap();
    assert_eq!(c.admin.hosts, ["weir-admin.example.com", "*.svc.cluster.local", "*"]);
    assert!(parse(MINIMAL).unwrap().admin.hosts.is_empty());
    let errs = errors(&format!("[admin]\nhosts = [\"evil.example/x\", \"*.\"]\n{MINIMAL}"));
    assert!(errs.iter().any(|e| e.starts_with("admin.hosts[0]: \"evil.example/x\" is not a host name")), "{errs:?}");
    assert!(errs.iter().any(|e| e.starts_with("admin.hosts[1]:")), "{errs:?}");
}

#[test]
fn notify_sinks_and_webhook_settings() {
    use crate::config::{Notify, NotifyFormat, Webhooks};
    let with = |notify: &str| {
        format!(
            "{}[routes.rollout]\nstages = [{{ weight = 10 }}]\ngates = [{{ metric = \"error_rate\", max = 0.01 }}]\n{notify}\n",
            MINIMAL.replace("weight = 12.5\n", "")
        )
    };
    let sinks = |notify: &str| parse(&with(notify)).unwrap().routes[0].rollout.clone().unwrap().notify;
    assert_eq!(sinks(""), vec![]);
    let one = sinks("notify = \"https://hooks.example/weir\"");
    assert_eq!(
        one,
        vec![Notify { url: "https://hooks.example/weir".into(), format: NotifyFormat::Weir, routing_key_file: None }]
    );
    let many = sinks(
        "notify = [\"http://a/x\", { url = \"https://hooks.slack.com/services/T/B/X\", format = \"slack\" }, \
         { url = \"https://events.pagerduty.com/v2/enqueue\", format = \"pagerduty\", routing_key_file = \"pd.key\" }]",
    );
    assert_eq!(
        many.iter().map(|n| n.format).collect::<Vec<_>>(),
        [NotifyFormat::Weir, NotifyFormat::Slack, NotifyFormat::PagerDuty]
    );
    assert_eq!(many[2].routing_key_file.as_deref(), Some(std::path::Path::new("pd.key")));
    // The rollout's fingerprint is unchanged for the old one-URL form.
    let plan = parse(&with("notify = \"http://a/x\"")).unwrap().routes[0].rollout.clone().unwrap();
    assert!(format!("{plan:?}").contains("notify: Some(\"http://a/x\")"), "{plan:?}");

    // A local relay may take plain HTTP.
    assert!(parse(&with("notify = [{ url = \"http://127.0.0.1:9/x\", format = \"teams\" }]")).is_ok());
    for (bad, want) in [
        ("notify = \"ftp://a/x\"", "notify: \"ftp://a…\" is not an http:// or https:// URL"),
        ("notify = \"https://h:abc/x\"", "notify: \"https://h:abc…\" is not"),
        ("notify = 5", "notify: expected a URL, a sink table"),
        (
            "notify = [{ url = \"http://hooks.slack.com/services/T/B/SECRET\", format = \"slack\" }]",
            "notify[0].url: slack needs an https:// URL",
        ),
        ("notify = [{ url = \"https://a/x\", format = \"email\" }]", "notify[0].format: \"email\" is not one of"),
        ("notify = [{ url = \"https://a/x\", format = \"pagerduty\" }]", "notify[0].routing_key_file: is required"),
        ("notify = [{ url = \"https://a/x\", routing_key_file = \"k\" }]", "notify[0].routing_key_file: is for format"),
        ("notify = [{ format = \"slack\" }]", "notify[0].url"),
        ("notify = []", "notify: needs at least one sink"),
        ("pre_stage = \"https:///x\"", "pre_stage: \"https://…\" is not an http:// or https:// URL"),
    ] {
        let e = errors(&with(bad)).join("\n");
        assert!(e.contains(want), "{bad}: {e}");
        assert!(!e.contains("SECRET"), "{e}");
    }

    assert_eq!(parse(MINIMAL).unwrap().webhooks, Webhooks::default());
    let w =
        parse(&format!("[webhooks]\nca = \"ca.pem\"\nsecret_file = \"s\"\nretries = 0\nmax_in_flight = 2\n{MINIMAL}"))
            .unwrap();
    assert_eq!((w.webhooks.retries, w.webhooks.max_in_flight), (0, 2));
    let e = errors(&format!("[webhooks]\nretries = 11\ncolour = 1\n{MINIMAL}")).join("\n");
    assert!(e.contains("webhooks.retries") && e.contains("webhooks.colour"), "{e}");
}

#[test]
fn tracing_section() {
    assert_eq!(parse(MINIMAL).unwrap().tracing, None);
    let on =
        parse(&format!("[tracing]\nendpoint = \"https://otel.example:4318/\"\n{MINIMAL}")).unwrap().tracing.unwrap();
    assert_eq!(on.endpoint, "https://otel.example:4318");
    assert_eq!((on.sample_ratio, on.follow_caller, on.canary_errors), (0.01, true, true));
    assert_eq!((on.service_name.as_str(), on.timeout), ("weir", std::time::Duration::from_secs(5)));
    for (bad, want) in [
        ("endpoint = \"otel:4318\"", "tracing.endpoint: \"otel:4318…\" is not an http:// or https:// URL"),
        ("endpoint = \"http://h:abc\"", "tracing.endpoint: \"http://h:abc…\" is not"),
        ("endpoint = \"http://u:SECRET@h\"", "tracing.endpoint: \"http://h…\": no credentials, query or fragment"),
        ("endpoint = \"http://h/p?x=1\"", "no credentials, query or fragment"),
        ("endpoint = \"http://h\"\nsample_ratio = 1.5", "tracing.sample_ratio: 1.5 is not between 0 and 1"),
        ("endpoint = \"http://h\"\ntimeout = \"10ms\"", "tracing.timeout: must be between 100ms and 1m"),
        ("endpoint = \"http://h\"\nservice_name = \"\"", "tracing.service_name: must not be empty"),
        ("sample_ratio = 0.1", "tracing.endpoint"),
        ("endpoint = \"http://h\"\nsampling = 1", "tracing.sampling"),
    ] {
        let e = errors(&format!("[tracing]\n{bad}\n{MINIMAL}")).join("\n");
        assert!(e.contains(want), "{bad}: {e}");
        assert!(!e.contains("SECRET"), "{e}");
    }
}
