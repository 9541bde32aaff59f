//! `weir_control::config::parse` on arbitrary text: it must never panic, it
//! must be deterministic, every error must name a line inside the file, and
//! a config it accepts must hold the invariants the proxy relies on.

#![no_main]

use libfuzzer_sys::fuzz_target;
use weir_control::config::{parse, Config};
use weir_control::split::Weight;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let result = parse(text);
    assert_eq!(result, parse(text), "parse is not deterministic");
    match result {
        Ok(cfg) => check(&cfg),
        Err(errors) => {
            assert!(!errors.0.is_empty(), "an error result without errors");
            // A line past the end is allowed for "end of file" spans.
            let lines = text.lines().count() as u32 + 1;
            for e in &errors.0 {
                if let Some(line) = e.line {
                    assert!((1..=lines).contains(&line), "error line {line} outside 1..={lines}: {e}");
                }
                assert!(!e.message.is_empty(), "empty error message at {:?}", e.path);
            }
            // Display must not panic either (weir check prints it).
            let _ = errors.to_string();
        }
    }
});

fn check(cfg: &Config) {
    assert!(!cfg.backends.is_empty(), "accepted without backends");
    for (name, b) in &cfg.backends {
        assert!(!b.addrs.is_empty(), "backend {name} without addresses");
        for a in &b.addrs {
            assert!(a.port != 0 || a.host.parse::<std::net::IpAddr>().is_ok(), "backend {name}: port 0 on {a:?}");
        }
        if let Some(f) = &b.fault {
            assert!(f.delay_bp <= 10_000 && f.abort_bp <= 10_000, "backend {name}: fault share above 100 %");
        }
    }
    assert!(!cfg.routes.is_empty(), "accepted without routes");
    let mut names = std::collections::HashSet::new();
    let mut matches = std::collections::HashSet::new();
    for r in &cfg.routes {
        assert!(names.insert(&r.name), "duplicate route name {}", r.name);
        assert!(matches.insert((&r.host, &r.path_prefix)), "duplicate match on route {}", r.name);
        assert!(
            !r.name.is_empty()
                && r.name.len() <= 64
                && r.name.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b)),
            "route name {:?}",
            r.name
        );
        assert!(r.path_prefix.starts_with('/'), "route {}: path_prefix {:?}", r.name, r.path_prefix);
        if let Some(h) = &r.host {
            assert!(!h.is_empty() && *h == h.to_ascii_lowercase(), "route {}: host {h:?}", r.name);
        }
        assert!(cfg.backends.contains_key(&r.stable), "route {}: stable {} is not a backend", r.name, r.stable);
        match &r.canary {
            Some(c) => {
                assert!(cfg.backends.contains_key(c), "route {}: canary {c} is not a backend", r.name);
                assert_ne!(c, &r.stable, "route {}: canary is stable", r.name);
            }
            None => {
                assert_eq!(r.weight, Weight::ZERO, "route {}: weight without a canary", r.name);
                assert!(r.rollout.is_none() && r.shadow.is_none(), "route {}: needs a canary", r.name);
            }
        }
        assert!(r.weight <= Weight::FULL, "route {}: weight {}", r.name, r.weight);
        if let Some(s) = &r.shadow {
            assert!(s.bp <= 10_000, "route {}: shadow share {}", r.name, s.bp);
        }
        if let Some(ro) = &r.rollout {
            assert!(!ro.stages.is_empty(), "route {}: rollout without stages", r.name);
            assert!(
                ro.stages.windows(2).all(|w| w[0].weight <= w[1].weight),
                "route {}: stage weights go down",
                r.name
            );
            assert!(ro.stages.iter().all(|s| s.weight <= Weight::FULL), "route {}: stage weight", r.name);
            assert!(ro.failure_threshold >= 1, "route {}: failure_threshold 0", r.name);
            let mut gates = std::collections::HashSet::new();
            for g in &ro.gates {
                assert!(gates.insert(&g.name), "route {}: duplicate gate {}", r.name, g.name);
            }
        }
    }
    let t = &cfg.timeouts;
    for (key, d) in [
        ("connect", t.connect),
        ("header_read", t.header_read),
        ("upstream_response", t.upstream_response),
        ("idle", t.idle),
        ("upstream_idle", t.upstream_idle),
    ] {
        assert!(!d.is_zero(), "timeouts.{key} is zero");
    }
    let l = &cfg.limits;
    assert!((8192..=16 << 20).contains(&l.max_header_bytes), "max_header_bytes {}", l.max_header_bytes);
    assert!(l.max_headers >= 1 && l.max_connections >= 1, "limits {l:?}");
    // The proxy fingerprints configs; Debug must not panic.
    let _ = weir_control::fingerprint(cfg);
}
