//! Table-driven tests of the state machine on a simulated clock.

use std::time::Duration;

use super::*;
use crate::config::{Gate, GateMetric, Stage};
use crate::sample::{Counts, Latency};

const S: u64 = 1000; // one second in ms

fn stage(weight: u32, bake_s: u64, min_requests: u64) -> Stage {
    Stage {
        weight: Weight::from_bp(weight * 100),
        cohort: None,
        bake: Duration::from_secs(bake_s),
        min_requests,
        max_duration: None,
        synthetic: None,
    }
}

fn error_gate(max: f64) -> Gate {
    Gate {
        name: "error_rate".into(),
        metric: GateMetric::ErrorRate,
        min_samples: 20,
        alpha: 0.01,
        min_effect: 0.0,
        max: Some(max),
        max_ratio_to_stable: None,
        max_delta_to_stable: None,
        min: None,
        query: None,
        dry_run: false,
    }
}

fn plan(stages: Vec<Stage>, gates: Vec<Gate>) -> Rollout {
    Rollout {
        interval: Duration::from_secs(1),
        on_failure: OnFailure::Rollback,
        failure_threshold: 2,
        stages,
        warmup: Duration::ZERO,
        gates,
        hold_timeout: Duration::from_secs(60),
        on_hold: OnFailure::Pause,
        severe_error_rate: 0.5,
        severe_min_requests: 20,
        severe_window: Duration::from_secs(10),
        pre_stage: None,
        notify: Vec::new(),
        webhook_timeout: Duration::from_secs(1),
    }
}

fn ctx() -> Context {
    Context {
        route: "web".into(),
        stable_version: Some("v1".into()),
        canary_version: Some("v2".into()),
        canary_build: Some("v2".into()),
        config_hash: "h".into(),
        ..Default::default()
    }
}

fn win(total: u64, failures: u64) -> Window {
    let counts = Counts::of(total, failures);
    let mut latency = Latency::new();
    latency.record_n(10_000, total);
    Window {
        span: Duration::from_secs(1),
        counts,
        latency,
        seconds: vec![crate::sample::Second { sec: 0, total, failures }],
    }
}

fn three_stages() -> Engine {
    Engine::new(plan(vec![stage(5, 2, 10), stage(50, 2, 10), stage(100, 2, 10)], vec![error_gate(0.05)]), ctx(), 0).0
}

#[test]
fn healthy_canary_walks_every_stage_then_promotes() {
    let mut e = three_stages();
    let good = win(1000, 10);
    let mut kinds = vec![];
    for t in 1..=20 {
        kinds.extend(e.tick(t * S, &good, &good).events.into_iter().map(|ev| (t, ev.kind, ev.weight)));
    }
    let transitions: Vec<_> = kinds.iter().filter(|(_, k, _)| *k != EventKind::Evaluated).cloned().collect();
    assert_eq!(
        transitions,
        vec![(2, EventKind::Advanced, 50.0), (4, EventKind::Advanced, 100.0), (6, EventKind::Promoted, 100.0)],
        "{kinds:?}"
    );
    assert_eq!(e.state().phase, Phase::Promoted);
    assert_eq!(e.weight(), Weight::FULL);
}

#[test]
fn inconclusive_never_promotes_and_holds_at_the_deadline() {
    let mut e = three_stages();
    let thin = win(5, 0); // below min_samples: inconclusive
    for t in 1..60 {
        let tick = e.tick(t * S, &thin, &thin);
        assert!(tick.events.iter().all(|ev| ev.kind == EventKind::Evaluated), "{:?}", tick.events);
        assert_eq!(e.state().stage, 0);
    }
    let tick = e.tick(60 * S, &thin, &thin);
    assert_eq!(tick.events[0].kind, EventKind::Paused);
    assert!(tick.events[0].cause.contains("no decision"), "{}", tick.events[0].cause);
    assert_eq!(e.weight().bp(), 500, "pause keeps the weight");

    let mut p = plan(vec![stage(5, 2, 10)], vec![error_gate(0.05)]);
    p.on_hold = OnFailure::Rollback;
    p.stages[0].max_duration = Some(Duration::from_secs(5));
    let mut e = Engine::new(p, ctx(), 0).0;
    assert!(e.tick(4 * S, &thin, &thin).events.iter().all(|ev| ev.kind == EventKind::Evaluated));
    assert_eq!(e.tick(5 * S, &thin, &thin).events[0].kind, EventKind::RolledBack);
    assert_eq!(e.weight(), Weight::ZERO);
}

#[test]
fn min_requests_and_bake_both_gate_advancing() {
    // A gate that passes on 5 requests, bake done, but only 5 canary
    // requests (< min_requests 10): wait.
    let mut p = three_stages().plan().clone();
    // No failure allowed: passes on any count without one.
    p.gates[0].min_samples = 1;
    p.gates[0].max = Some(0.0);
    let mut e = Engine::new(p, ctx(), 0).0;
    assert!(e.tick(3 * S, &win(5, 0), &win(100, 0)).events.iter().all(|ev| ev.kind == EventKind::Evaluated));
    assert_eq!((e.state().stage, e.state().verdicts[0].verdict), (0, Verdict::Pass));
    // Enough requests but before the bake: wait.
    let mut e2 = three_stages();
    assert!(e2.tick(S, &win(100, 0), &win(100, 0)).events.iter().all(|ev| ev.kind == EventKind::Evaluated));
    assert_eq!(e2.state().stage, 0);
    assert_eq!(e.tick(4 * S, &win(10, 0), &win(100, 0)).events[0].kind, EventKind::Advanced);
}

#[test]
fn failures_must_repeat_and_a_pass_resets_the_count() {
    let mut e = three_stages();
    let bad = win(100, 10);
    let good = win(100, 0);
    let t1 = e.tick(S, &bad, &good);
    assert_eq!(t1.events[0].kind, EventKind::Evaluated);
    assert!(t1.events[0].cause.contains("1 of 2"), "{}", t1.events[0].cause);
    assert_eq!(e.state().phase, Phase::Progressing);
    e.tick(2 * S, &good, &good); // resets
    assert_eq!(e.state().consecutive_failures, 0);
    e.tick(3 * S, &bad, &good);
    let t4 = e.tick(4 * S, &bad, &good);
    let ev = &t4.events[0];
    assert_eq!(
        (ev.kind, ev.from, ev.to, ev.weight),
        (EventKind::RolledBack, Phase::Progressing, Phase::RolledBack, 0.0)
    );
    let v = &ev.verdicts[0];
    assert_eq!((v.verdict, v.value, v.threshold, v.canary_samples), (Verdict::Fail, Some(0.1), Some(0.05), 100));
    // A rolled-back rollout stays there: no automatic retry.
    assert!(e.tick(100 * S, &good, &good).events.is_empty());
    assert_eq!(e.weight(), Weight::ZERO);
}

#[test]
fn severe_breach_acts_in_the_same_tick() {
    let mut e = three_stages();
    let t = e.tick(S, &win(20, 10), &win(100, 0));
    assert_eq!(t.events[0].kind, EventKind::RolledBack);
    assert!(t.events[0].cause.contains("severe"), "{}", t.events[0].cause);
    // Below severe_min_requests it is an ordinary failure.
    let mut e = three_stages();
    let t = e.tick(S, &win(19, 19), &win(100, 0));
    assert!(t.events.iter().all(|ev| ev.kind == EventKind::Evaluated), "{:?}", t.events);
    assert_eq!(e.state().phase, Phase::Progressing);
}

/// A fleet replica cut off from etcd acts alone on the severe rule only:
/// an ordinary failing gate (which, repeated, would roll back) is not one.
#[test]
fn severe_breach_alone_is_the_severe_rule_and_nothing_else() {
    let e = three_stages();
    fn seen<'a>(c: &'a Window, s: &'a Window) -> Observed<'a> {
        Observed { canary: c, stable: s, stable_history: s, probes: Probes::default(), signals: &[] }
    }
    let (bad, ok, failing) = (win(20, 10), win(100, 0), win(100, 10));
    assert!(e.severe_breach(&seen(&bad, &ok)).is_some_and(|c| c.contains("severe")));
    assert_eq!(e.severe_breach(&seen(&failing, &ok)), None, "10 % fails the gate, it is not severe");
    assert_eq!(e.severe_breach(&seen(&win(19, 19), &ok)), None, "under severe_min_requests");
    // Stable failing as badly: a shared outage, not the canary's doing.
    assert_eq!(e.severe_breach(&seen(&bad, &win(100, 50))), None);
    // A rollout that is over watches nothing.
    let mut done = three_stages();
    done.tick(S, &bad, &ok);
    assert_eq!(done.state().phase, Phase::RolledBack);
    assert_eq!(done.severe_breach(&seen(&bad, &ok)), None);
}

/// A synthetic gate judges the stages that send synthetic requests; in the
/// others it does not apply, and the gates on live traffic decide.
#[test]
fn a_synthetic_gate_does_not_apply_to_a_stage_without_synthetic_requests() {
    let mut first = stage(0, 1, 0);
    first.synthetic = Some(crate::config::Synthetic {
        rps: 5.0,
        method: "GET".into(),
        path: "/check".into(),
        headers: vec![],
        body: None,
        expect_status: 200,
        also_stable: false,
    });
    let mut synthetic = error_gate(0.0);
    synthetic.name = "synthetic".into();
    synthetic.metric = GateMetric::Synthetic;
    synthetic.min_samples = 5;
    let mut e = Engine::new(plan(vec![first, stage(50, 1, 10)], vec![synthetic, error_gate(0.05)]), ctx(), 0).0;
    let probes = Probes { synthetic: crate::sample::Checks { passed: 10, failed: 0 }, ..Probes::default() };
    let (c, s) = (win(100, 0), win(100, 0));
    let seen = Observed { canary: &c, stable: &s, stable_history: &s, probes, signals: &[] };
    e.tick_with(2 * S, &seen);
    assert_eq!(e.state().stage, 1, "{:?}", e.state().verdicts);
    // Stage 1 sends none: the synthetic gate is skipped, not inconclusive.
    let none = Observed { probes: Probes::default(), ..seen };
    e.tick_with(4 * S, &none);
    assert_eq!(e.state().verdicts[0].verdict, Verdict::Skipped, "{:?}", e.state().verdicts);
    assert_eq!(e.state().phase, Phase::Promoted, "{:?}", e.state().verdicts);
}

#[test]
fn on_failure_pause_keeps_the_weight() {
    let mut p = three_stages().plan().clone();
    p.on_failure = OnFailure::Pause;
    let mut e = Engine::new(p, ctx(), 0).0;
    e.tick(S, &win(100, 10), &win(100, 0));
    let t = e.tick(2 * S, &win(100, 10), &win(100, 0));
    assert_eq!(t.events[0].kind, EventKind::Paused);
    assert_eq!(e.weight().bp(), 500);
    assert!(e.tick(3 * S, &win(100, 0), &win(100, 0)).events.is_empty(), "paused: only the severe rule runs");
}

/// Issue 21, bug 1: a severe breach ran `on_failure`, so with `pause` a
/// canary answering only errors kept its weight, and a paused rollout was
/// never evaluated again.
#[test]
fn a_severe_breach_rolls_back_whatever_on_failure_says_and_while_paused() {
    let mut p = three_stages().plan().clone();
    p.on_failure = OnFailure::Pause;
    let mut e = Engine::new(p.clone(), ctx(), 0).0;
    let t = e.tick(S, &win(100, 100), &win(100, 0));
    assert_eq!(t.events[0].kind, EventKind::RolledBack, "{:?}", t.events);
    assert!(t.events[0].cause.contains("severe"), "{}", t.events[0].cause);
    assert_eq!(e.weight(), Weight::ZERO);

    // Paused by hand, and paused by on_failure: the severe rule still acts.
    let mut e = Engine::new(p.clone(), ctx(), 0).0;
    e.pause(0).unwrap();
    assert!(e.tick(S, &win(100, 10), &win(100, 0)).events.is_empty(), "paused: ordinary failures wait");
    let t = e.tick(2 * S, &win(100, 100), &win(100, 0));
    assert_eq!((t.events[0].from, t.events[0].kind), (Phase::Paused, EventKind::RolledBack), "{:?}", t.events);
    assert_eq!(e.weight(), Weight::ZERO);
    let mut e = Engine::new(p, ctx(), 0).0;
    e.tick(S, &win(100, 10), &win(100, 0));
    assert_eq!(e.tick(2 * S, &win(100, 10), &win(100, 0)).events[0].kind, EventKind::Paused);
    assert_eq!(e.tick(3 * S, &win(40, 40), &win(100, 0)).events[0].kind, EventKind::RolledBack);
    // Rolled back, it stays there: nothing acts again.
    assert!(e.tick(4 * S, &win(40, 40), &win(100, 0)).events.is_empty());
    assert_eq!(e.state().phase, Phase::RolledBack);
}

/// A failing gate at a 100 % stage paused with `on_failure = "pause"`,
/// keeping the failing canary at full weight (the docs say it falls back
/// at once, as after promotion).
#[test]
fn a_failing_gate_at_full_weight_rolls_back_whatever_on_failure_says() {
    let mut p = plan(vec![stage(50, 0, 0), stage(100, 5, 0)], vec![error_gate(0.05)]);
    p.on_failure = OnFailure::Pause;
    let mut e = Engine::new(p, ctx(), 0).0;
    assert_eq!(e.tick(S, &win(100, 0), &win(100, 0)).events.last().map(|ev| ev.kind), Some(EventKind::Advanced));
    let t = e.tick(2 * S, &win(100, 10), &win(0, 0));
    assert_eq!(t.events[0].kind, EventKind::RolledBack, "{:?}", t.events);
    assert_eq!(e.weight(), Weight::ZERO);
}

fn vs_stable_gate() -> Gate {
    Gate {
        min: None,
        query: None,
        dry_run: false,
        name: "error_rate_vs_stable".into(),
        metric: GateMetric::ErrorRateVsStable,
        min_samples: 20,
        alpha: 0.01,
        min_effect: 0.0,
        max: None,
        max_ratio_to_stable: None,
        max_delta_to_stable: None,
    }
}

/// Issue 21, bug 7: a tick whose gates all skipped (or a plan with no
/// gates) counted as decided, and `min_requests` defaults to 0: a stage
/// promoted on no data.
#[test]
fn no_evidence_never_promotes() {
    let quiet = win(0, 0);
    // No gates at all, no traffic, no bake: it holds, then runs on_hold.
    let mut e = Engine::new(plan(vec![stage(50, 0, 0), stage(100, 0, 0)], vec![]), ctx(), 0).0;
    for t in 1..=70 {
        for ev in e.tick(t * S, &quiet, &quiet).events {
            assert!(!matches!(ev.kind, EventKind::Advanced | EventKind::Promoted), "{ev:?}");
        }
    }
    assert_eq!(e.state().phase, Phase::Paused, "held past hold_timeout");
    // A last stage at 100 % with only a comparison gate (skipped there):
    // traffic, but no gate that judged it.
    let mut e = Engine::new(plan(vec![stage(100, 0, 0)], vec![vs_stable_gate()]), ctx(), 0).0;
    for t in 1..=10 {
        let ev = e.tick(t * S, &win(100, 0), &quiet).events;
        assert!(ev.iter().all(|ev| ev.kind != EventKind::Promoted), "{ev:?}");
    }
    assert_eq!((e.state().phase, e.state().verdicts[0].verdict), (Phase::Progressing, Verdict::Skipped));
    // Past the hold deadline it says why nothing was decided.
    let held = e.tick(61 * S, &win(100, 0), &quiet).events;
    assert!(held[0].cause.contains("no gate judged this stage"), "{held:?}");
    // With a gate that passes on data, it promotes as before.
    let mut e = Engine::new(plan(vec![stage(100, 0, 0)], vec![vs_stable_gate(), error_gate(0.05)]), ctx(), 0).0;
    assert_eq!(e.tick(S, &win(100, 0), &quiet).events.last().map(|ev| ev.kind), Some(EventKind::Promoted));
}

#[test]
fn post_promotion_failure_falls_back_at_once() {
    let mut e = Engine::new(plan(vec![stage(50, 0, 0), stage(100, 5, 0)], vec![error_gate(0.05)]), ctx(), 0).0;
    let good = win(100, 0);
    assert_eq!(e.tick(S, &good, &good).events.last().map(|e| e.kind), Some(EventKind::Advanced));
    // At 100 % a failing absolute gate acts at once (no threshold).
    let t = e.tick(2 * S, &win(100, 10), &win(0, 0));
    assert_eq!(t.events[0].kind, EventKind::RolledBack);
    assert_eq!(e.weight(), Weight::ZERO);

    // And after promotion, during the last stage's bake.
    let mut e = Engine::new(plan(vec![stage(100, 2, 0)], vec![error_gate(0.05)]), ctx(), 0).0;
    e.promote(0, true).unwrap();
    let t = e.tick(S, &win(100, 10), &win(0, 0));
    assert_eq!(t.events[0].kind, EventKind::RolledBack);
    // Past the bake, nothing is evaluated any more.
    let mut e = Engine::new(plan(vec![stage(100, 2, 0)], vec![error_gate(0.05)]), ctx(), 0).0;
    e.promote(0, true).unwrap();
    assert!(e.tick(3 * S, &win(100, 10), &win(0, 0)).events.is_empty());
    assert_eq!(e.state().phase, Phase::Promoted);
}

#[test]
fn relative_gates_are_skipped_when_the_canary_takes_everything() {
    let mut g = error_gate(0.05);
    g.max = None;
    g.max_delta_to_stable = Some(0.01);
    let mut e = Engine::new(plan(vec![stage(100, 1, 0)], vec![g.clone()]), ctx(), 0).0;
    let t = e.tick(S, &win(1000, 3), &win(0, 0));
    assert_eq!(e.state().verdicts[0].verdict, Verdict::Skipped);
    // A skipped gate is no evidence (issue 21, bug 7): it does not promote
    // alone, and does with a gate that judged the canary.
    assert!(t.events.iter().all(|ev| ev.kind != EventKind::Promoted), "{:?}", t.events);
    let mut e = Engine::new(plan(vec![stage(100, 1, 0)], vec![g, error_gate(0.05)]), ctx(), 0).0;
    let t = e.tick(S, &win(1000, 3), &win(0, 0));
    assert_eq!(e.state().verdicts[0].verdict, Verdict::Skipped);
    assert_eq!(t.events.last().map(|e| e.kind), Some(EventKind::Promoted));
}

#[test]
fn pre_stage_webhook_must_approve() {
    let mut p = three_stages().plan().clone();
    p.pre_stage = Some("http://hook".into());
    let mut e = Engine::new(p, ctx(), 0).0;
    let t = e.tick(2 * S, &win(100, 0), &win(100, 0));
    assert!(t.needs_approval);
    assert_eq!(e.state().stage, 0);
    let asked = e.window_start_ms();
    let held = e.approve(2 * S, asked, false, "status 503".into()).unwrap();
    assert_eq!((held.kind, e.state().stage), (EventKind::Held, 0));
    // Issue 21, bug 10: the answer comes while the gates keep running; it
    // advances only on verdicts that still pass when it arrives.
    e.tick(3 * S, &win(100, 10), &win(100, 0));
    let late = e.approve(3 * S, asked, true, "status 200".into()).unwrap();
    assert_eq!((late.kind, e.state().stage), (EventKind::Held, 0), "{late:?}");
    assert!(late.cause.contains("no longer all pass"), "{}", late.cause);
    e.tick(4 * S, &win(100, 0), &win(100, 0));
    let ok = e.approve(4 * S, asked, true, "status 200".into()).unwrap();
    assert_eq!((ok.kind, e.state().stage), (EventKind::Advanced, 1));
    // An answer for a stage that is gone changes nothing.
    assert!(e.approve(5 * S, asked, true, "status 200".into()).is_none());
    assert_eq!(e.state().stage, 1);
}

#[test]
fn manual_actions_by_phase() {
    // (phase reached by, action, allowed)
    type Setup = fn(&mut Engine);
    let setups: [(Phase, Setup); 5] = [
        (Phase::Progressing, |_| {}),
        (Phase::Paused, |e| {
            e.pause(0).unwrap();
        }),
        (Phase::Promoted, |e| {
            e.promote(0, true).unwrap();
        }),
        (Phase::RolledBack, |e| {
            e.tick(S, &win(100, 60), &win(100, 0));
        }),
        (Phase::Aborted, |e| {
            e.abort(0).unwrap();
        }),
    ];
    for (phase, setup) in setups {
        let fresh = || {
            let mut e = three_stages();
            setup(&mut e);
            assert_eq!(e.state().phase, phase);
            e
        };
        let allowed = |r: Result<Event, ActionError>| r.is_ok();
        assert_eq!(allowed(fresh().pause(5 * S)), phase == Phase::Progressing, "pause from {phase:?}");
        assert_eq!(
            allowed(fresh().resume(5 * S)),
            matches!(phase, Phase::Paused | Phase::RolledBack | Phase::Aborted),
            "resume from {phase:?}"
        );
        assert_eq!(
            allowed(fresh().promote(5 * S, false)),
            matches!(phase, Phase::Progressing | Phase::Paused),
            "promote from {phase:?}"
        );
        assert_eq!(
            allowed(fresh().abort(5 * S)),
            matches!(phase, Phase::Progressing | Phase::Paused | Phase::Promoted),
            "abort from {phase:?}"
        );
    }
    // Resume after a rollback restarts at stage 0; after a pause, same stage.
    let mut e = three_stages();
    e.promote(0, false).unwrap();
    e.pause(0).unwrap();
    let ev = e.resume(S).unwrap();
    assert_eq!((ev.kind, ev.actor, e.state().stage), (EventKind::Resumed, Actor::Manual, 1));
    e.abort(2 * S).unwrap();
    assert_eq!(e.weight(), Weight::ZERO);
    e.resume(3 * S).unwrap();
    assert_eq!((e.state().stage, e.state().since_ms), (0, 3 * S));
}

#[test]
fn state_round_trips_and_restores() {
    let mut e = three_stages();
    e.tick(2 * S, &win(100, 0), &win(100, 0));
    let json = serde_json::to_string(e.state()).unwrap();
    let back: State = serde_json::from_str(&json).unwrap();
    let (r, ev) = Engine::restore(e.plan().clone(), ctx(), back.clone(), 10 * S).unwrap();
    assert_eq!(ev.kind, EventKind::Restored);
    assert_eq!(r.state(), e.state());
    assert_eq!(r.weight().bp(), 5000);
    let mut bad = back;
    bad.stage = 7;
    assert!(Engine::restore(e.plan().clone(), ctx(), bad, 0).is_none());
}

/// A window of one-second counts `(requests, failures)`, seconds from `start`.
fn seconds(start: u64, per_sec: &[(u64, u64)]) -> Window {
    let mut w = Window::default();
    for (i, &(total, failures)) in per_sec.iter().enumerate() {
        let c = Counts::of(total, failures);
        w.push_second(start + i as u64, &c);
        w.latency.record_n(10_000, total);
    }
    w
}

#[test]
fn the_first_event_states_the_false_rollback_budget() {
    let mut latency = vs_stable_gate();
    latency.name = "latency_shift".into();
    latency.metric = GateMetric::LatencyShift;
    let (_, ev) = Engine::new(plan(vec![stage(5, 1, 0)], vec![vs_stable_gate(), latency, error_gate(0.05)]), ctx(), 0);
    assert!(ev.cause.contains("false-rollback budget 2%"), "{}", ev.cause);
    assert!(ev.cause.contains("error_rate_vs_stable 1%, latency_shift 1%"), "{}", ev.cause);
}

/// The evidence of a stage counts in the next one: one rollout spends its
/// alpha once, and a canary a little worse is caught over two stages that
/// each alone would not have caught it.
#[test]
fn evidence_carries_across_stages() {
    // (The windows have one second each: dispersion is its cautious prior.)
    let (canary, stable) = (win(300, 15), win(3000, 30));
    let mut e =
        Engine::new(plan(vec![stage(5, 60, 0), stage(25, 60, 0), stage(50, 60, 0)], vec![vs_stable_gate()]), ctx(), 0)
            .0;
    e.tick(S, &canary, &stable);
    assert_ne!(e.state().verdicts[0].verdict, Verdict::Fail, "{:?}", e.state().verdicts);
    e.promote(2 * S, false).unwrap();
    e.tick(3 * S, &canary, &stable);
    assert_eq!(e.state().verdicts[0].verdict, Verdict::Fail, "{:?}", e.state().verdicts);
    // A rollback forgets it: the next attempt gathers its own.
    e.abort(4 * S).unwrap();
    e.resume(5 * S).unwrap();
    e.tick(6 * S, &canary, &stable);
    assert_ne!(e.state().verdicts[0].verdict, Verdict::Fail, "{:?}", e.state().verdicts);
}

/// Issue 21: a severe breach read the cumulative stage window, so after a
/// long healthy stage a canary failing every request went unseen for as long
/// again. It reads the last `severe_window` now.
#[test]
fn a_sudden_failure_late_in_a_long_stage_acts_at_once() {
    let mut p = plan(vec![stage(50, 600, 0), stage(100, 0, 0)], vec![error_gate(0.5)]);
    p.hold_timeout = Duration::from_secs(900);
    let mut e = Engine::new(p, ctx(), 0).0;
    let mut per_sec = vec![(1000, 10); 300];
    per_sec.extend([(1000, 1000); 3]);
    let canary = seconds(0, &per_sec);
    assert!(canary.counts.error_rate().unwrap() < 0.05);
    let stable = seconds(0, &vec![(1000, 10); 303]);
    let t = e.tick(303 * S, &canary, &stable);
    assert_eq!(t.events.first().map(|ev| ev.kind), Some(EventKind::RolledBack), "{:?}", t.events);
    assert!(t.events[0].cause.contains("severe breach"), "{}", t.events[0].cause);
}

/// Issue 21: a shared outage was blamed on the canary, and a stable worse
/// than usual made relative gates pass. Now the rollout holds and says so.
#[test]
fn a_shared_outage_holds_and_does_not_blame_the_canary() {
    let mut e = Engine::new(plan(vec![stage(50, 5, 0), stage(100, 0, 0)], vec![vs_stable_gate()]), ctx(), 0).0;
    let healthy = seconds(0, &[(1000, 10); 3]);
    e.tick(3 * S, &healthy, &healthy);
    // Both sides now fail 80 % of requests.
    let mut per_sec = vec![(1000, 10); 3];
    per_sec.extend([(1000, 800); 10]);
    let bad = seconds(0, &per_sec);
    let t = e.tick(13 * S, &bad, &bad);
    assert_eq!(e.state().phase, Phase::Progressing, "{:?}", t.events);
    assert!(t.events.iter().any(|ev| ev.cause.contains("stable is degraded")), "{:?}", t.events);
    // Said once, not every tick.
    assert!(e.tick(14 * S, &bad, &bad).events.is_empty());
    // A stable-only outage does not pass a bad canary: it holds too.
    let canary = seconds(0, &[(1000, 50); 13]);
    let mut per_sec = vec![(10_000, 100); 3];
    per_sec.extend([(10_000, 3000); 10]);
    let stable = seconds(0, &per_sec);
    for t in 15..30 {
        let ev = e.tick(t * S, &canary, &stable).events;
        assert!(ev.iter().all(|ev| !matches!(ev.kind, EventKind::Advanced | EventKind::Promoted)), "{ev:?}");
    }
    assert_eq!((e.state().phase, e.state().stage), (Phase::Progressing, 0));
    // A hold that lasts runs into the stage's deadline all the same.
    let t = e.tick(61 * S, &canary, &stable);
    assert_eq!(e.state().phase, Phase::Paused, "{:?}", t.events);
    assert!(t.events[0].cause.contains("stable is degraded"), "{}", t.events[0].cause);
}

/// Issue 21: at 100 % the comparisons skipped, so only absolute limits
/// watched the canary when it served everyone. It is now held to stable's
/// numbers from just before.
#[test]
fn at_full_weight_the_canary_is_held_to_stables_baseline() {
    let mut e = Engine::new(plan(vec![stage(50, 600, 0), stage(100, 600, 0)], vec![vs_stable_gate()]), ctx(), 0).0;
    let stable = seconds(0, &[(1000, 10); 60]);
    e.tick(60 * S, &seconds(0, &[(1000, 10); 60]), &stable);
    e.promote(61 * S, false).unwrap();
    assert_eq!(e.weight(), Weight::FULL);
    let canary = seconds(62, &[(1000, 50); 5]);
    let t = e.tick(67 * S, &canary, &Window::default());
    assert_eq!(e.state().phase, Phase::RolledBack, "{:?} {:?}", t.events, e.state().verdicts);
}

/// Issue 21, bug 9: after a restart the stage's start was restored but its
/// telemetry was not, so the stage decided on a second of data. Its window
/// and bake now count from the restart.
#[test]
fn after_a_restart_the_bake_counts_from_the_restart() {
    let mut e = three_stages();
    e.tick(S, &win(100, 0), &win(100, 0));
    let saved = e.state().clone();
    let (mut r, _) = Engine::restore(e.plan().clone(), ctx(), saved, 100 * S).unwrap();
    assert_eq!(r.window_ms(100 * S), 0);
    // The stage's bake (2 s) is not met by a tick right after the restart …
    assert!(r.tick(101 * S, &win(100, 0), &win(100, 0)).events.iter().all(|ev| ev.kind != EventKind::Advanced));
    // … and is two seconds later.
    let t = r.tick(102 * S, &win(100, 0), &win(100, 0));
    assert_eq!(t.events.last().map(|ev| ev.kind), Some(EventKind::Advanced), "{:?}", t.events);
}

/// Issue 21, warm-up: a build slow to warm (caches, JIT) failed its first
/// seconds and was rolled back every time. With `warmup`, the gates wait it
/// out (the severe rule does not), and the first stage's window, bake and
/// deadline start at its end.
#[test]
fn the_gates_wait_out_a_warm_up_and_the_severe_rule_does_not() {
    let mut p = plan(vec![stage(5, 2, 10), stage(100, 2, 10)], vec![error_gate(0.05)]);
    p.warmup = Duration::from_secs(10);
    let (mut e, started) = Engine::new(p.clone(), ctx(), 0);
    assert!(started.cause.contains("10s warm-up"), "{}", started.cause);
    // 20 % failures for the warm-up's ten seconds: nothing happens.
    for t in 1..10 {
        assert!(e.tick(t * S, &win(100, 20), &win(1000, 10)).events.is_empty(), "t = {t}");
        assert_eq!((e.state().phase, e.state().since_ms, e.state().warmed), (Phase::Progressing, 0, false));
    }
    // At its end the stage starts over from there, and says so.
    let t = e.tick(10 * S, &win(100, 20), &win(1000, 10));
    assert_eq!(t.events.len(), 1, "{:?}", t.events);
    assert!(t.events[0].cause.starts_with("warm-up over"), "{:?}", t.events);
    assert_eq!((e.state().since_ms, e.state().warmed), (10 * S, true));
    assert_eq!(e.window_start_ms(), 10 * S);
    // Then the gates judge: a canary still failing 20 % is rolled back.
    e.tick(11 * S, &win(100, 20), &win(1000, 10));
    let t = e.tick(12 * S, &win(100, 20), &win(1000, 10));
    assert_eq!(t.events.last().map(|ev| ev.kind), Some(EventKind::RolledBack), "{:?}", t.events);

    // Resumed from weight 0, the build is cold again: a new warm-up, and
    // the last attempt's verdicts are gone.
    e.resume(13 * S).unwrap();
    assert_eq!((e.state().stage, e.state().warmed, e.state().verdicts.len()), (0, false, 0));
    assert_eq!(e.warming_until(), Some(23 * S));

    // A severe breach during the warm-up acts at once.
    let (mut e, _) = Engine::new(p.clone(), ctx(), 0);
    let t = e.tick(2 * S, &win(100, 100), &win(1000, 10));
    assert_eq!(t.events.last().map(|ev| ev.kind), Some(EventKind::RolledBack), "{:?}", t.events);

    // Paused during the warm-up, the canary kept its weight: resumed, it is
    // judged at once.
    let (mut e, _) = Engine::new(p, ctx(), 0);
    e.pause(3 * S).unwrap();
    e.resume(5 * S).unwrap();
    assert_eq!((e.warming_until(), e.state().since_ms), (None, 5 * S));
}

fn promql_gate(max: f64) -> Gate {
    Gate {
        name: "checkout".into(),
        metric: GateMetric::Promql,
        min_samples: 0,
        max: Some(max),
        query: Some("checkout_failures{version=\"{{version}}\"}".into()),
        ..error_gate(max)
    }
}

fn reading(e: &Engine, at_ms: u64, canary: Result<f64, String>) -> Signal {
    Signal {
        gate: "checkout".into(),
        window_start_ms: e.window_start_ms(),
        at_ms,
        fresh_until_ms: at_ms + 10 * S,
        query: "checkout_failures{version=\"v2\"}".into(),
        canary,
        stable: None,
    }
}

fn tick_with_signal(e: &mut Engine, now: u64, w: &Window, signals: &[Signal]) -> Tick {
    e.tick_with(now, &Observed { canary: w, stable: w, stable_history: w, probes: Probes::default(), signals })
}

/// Issue 24: a promql gate fails on a breach, and is inconclusive (never a
/// pass) with no reading, an empty or failed one, a stale one, or one
/// taken for the previous stage's window.
#[test]
fn a_promql_gate_acts_on_its_reading_and_never_passes_without_one() {
    let gates = vec![promql_gate(0.05)];
    let (mut e, _) = Engine::new(plan(vec![stage(10, 2, 10), stage(100, 2, 10)], gates.clone()), ctx(), 0);
    let w = win(100, 1);
    // No reading, an empty result, a stale reading: held, whatever the time.
    for t in 1..=5 {
        tick_with_signal(&mut e, t * S, &w, &[]);
    }
    assert_eq!(e.state().verdicts[0].verdict, Verdict::Inconclusive);
    assert_eq!(e.state().verdicts[0].note.as_deref(), Some("no reading from Prometheus yet"));
    let empty = reading(&e, 5 * S, Err("empty result (no series matched)".into()));
    tick_with_signal(&mut e, 6 * S, &w, &[empty]);
    assert_eq!(e.state().verdicts[0].verdict, Verdict::Inconclusive);
    assert_eq!(e.state().verdicts[0].note.as_deref(), Some("empty result (no series matched)"));
    let old = reading(&e, 6 * S, Ok(0.01));
    tick_with_signal(&mut e, 17 * S, &w, std::slice::from_ref(&old));
    assert_eq!(e.state().verdicts[0].verdict, Verdict::Inconclusive, "stale");
    assert_eq!((e.state().stage, e.state().phase), (0, Phase::Progressing));
    // A fresh reading within the limit passes, with the query and its time
    // in the verdict.
    let good = reading(&e, 17 * S, Ok(0.01));
    tick_with_signal(&mut e, 18 * S, &w, std::slice::from_ref(&good));
    assert_eq!(e.state().stage, 1, "{:?}", e.state().verdicts);
    let v = &e.state().verdicts[0];
    assert_eq!((v.value, v.evaluated_at_ms), (Some(0.01), Some(17 * S)));
    assert!(v.query.as_deref().is_some_and(|q| q.contains("v2")));
    // The previous stage's reading does not judge the next one.
    tick_with_signal(&mut e, 19 * S, &w, std::slice::from_ref(&good));
    assert_eq!(e.state().verdicts[0].note.as_deref(), Some("no reading for this stage's window yet"));
    // A breach fails: at full weight, at once.
    let bad = reading(&e, 19 * S, Ok(0.3));
    let t = tick_with_signal(&mut e, 20 * S, &w, &[bad]);
    assert_eq!(e.state().phase, Phase::RolledBack, "{:?}", t.events);
}

/// Issue 24: a dry-run gate is evaluated and reported, never acted on: it
/// neither fails a stage nor holds it, and alone it could not pass one.
#[test]
fn a_dry_run_gate_reports_but_never_acts() {
    let dry = Gate { dry_run: true, ..promql_gate(0.05) };
    let (mut e, _) =
        Engine::new(plan(vec![stage(10, 2, 10), stage(100, 2, 10)], vec![error_gate(0.05), dry]), ctx(), 0);
    let w = win(100, 0);
    let mut events = Vec::new();
    for t in 1..=3 {
        let bad = reading(&e, t * S, Ok(0.9));
        events.extend(tick_with_signal(&mut e, t * S, &w, &[bad]).events);
    }
    assert_eq!(e.state().phase, Phase::Progressing);
    assert_eq!(e.state().stage, 1, "the failing dry-run gate did not hold the stage: {events:?}");
    let advanced = events.iter().find(|ev| ev.kind == EventKind::Advanced).map(|ev| &ev.verdicts);
    let dry = advanced.and_then(|v| v.iter().find(|r| r.gate == "checkout"));
    assert!(dry.is_some_and(|r| r.dry_run && r.verdict == Verdict::Fail), "audited with its verdict: {dry:?}");
    // A dry-run pass is no evidence: at full weight, where the acting gate
    // (a comparison with stable) does not apply, the stage holds on the
    // dry-run gate's pass alone.
    let dry = Gate { dry_run: true, ..promql_gate(0.05) };
    let (mut e, _) = Engine::new(plan(vec![stage(100, 1, 1)], vec![vs_stable_gate(), dry]), ctx(), 0);
    for t in 1..=8 {
        let good = reading(&e, t * S, Ok(0.0));
        tick_with_signal(&mut e, t * S, &w, &[good]);
    }
    let v = &e.state().verdicts;
    assert_eq!((v[0].verdict, v[1].verdict), (Verdict::Skipped, Verdict::Pass));
    assert_eq!(e.state().phase, Phase::Progressing, "promoted on a dry-run pass: {v:?}");
}

/// Issue 24: an outside reading is taken every few seconds and judged
/// every tick; one failing reading is one failure, not one per tick that
/// sees it (failure_threshold counts readings).
#[test]
fn one_failing_reading_counts_once() {
    let (mut e, _) = Engine::new(plan(vec![stage(10, 60, 10), stage(100, 2, 10)], vec![promql_gate(0.05)]), ctx(), 0);
    let w = win(100, 0);
    let bad = reading(&e, S, Ok(0.3));
    for t in 1..=8 {
        tick_with_signal(&mut e, t * S, &w, std::slice::from_ref(&bad));
    }
    assert_eq!((e.state().phase, e.state().consecutive_failures), (Phase::Progressing, 1));
    let again = reading(&e, 8 * S, Ok(0.3));
    tick_with_signal(&mut e, 9 * S, &w, &[again]);
    assert_eq!(e.state().phase, Phase::RolledBack, "two failing readings: failure_threshold = 2");
}

/// The sentence `weir ctl status` and the dashboard show, through a
/// rollout's life: what happens and what comes next, with its time.
#[test]
fn the_summary_says_what_happens_and_what_comes_next() {
    let mut e = Engine::new(plan(vec![stage(5, 60, 100), stage(100, 30, 10)], vec![error_gate(0.05)]), ctx(), 0).0;
    let say = |e: &Engine, now: u64| e.summary(now, None);
    // Inconclusive (below min_samples 20).
    e.tick(S, &win(5, 0), &win(5, 0));
    let s = say(&e, S);
    assert!(s.contains("Gathering evidence at stage 1 of 2, canary v2 at 5%"), "{s}");
    assert!(s.contains("error_rate inconclusive after 5 canary requests"), "{s}");
    assert!(s.contains("moves to 100%") && s.contains("pauses in 59 s"), "{s}");
    // Passing on 500 requests in 10 s: the bake (50 s more) is the wait.
    e.tick(10 * S, &win(500, 0), &win(500, 0));
    let s = say(&e, 10 * S);
    assert!(
        s.contains("Every gate passes") && s.contains("in about 50 s if they keep passing (10 s of 1 min bake)"),
        "{s}"
    );
    // One failing check of two: trending to rollback, one more to go.
    e.tick(11 * S, &win(100, 20), &win(100, 0));
    let s = say(&e, 11 * S);
    assert!(
        s.starts_with("Trending to rollback") && s.contains("1 of 2 checks in a row; weir rolls back after 1 more"),
        "{s}"
    );
    // Paused by hand.
    e.pause(12 * S).unwrap();
    let s = e.summary(15 * S, Some("paused by hand"));
    assert!(s.starts_with("Paused at stage 1 of 2") && s.contains("for 3 s (paused by hand)"), "{s}");
    // Resumed; passes on to 100 %, promotes after its bake.
    e.resume(20 * S).unwrap();
    e.tick(80 * S, &win(200, 0), &win(200, 0));
    e.tick(111 * S, &win(200, 0), &win(200, 0));
    assert_eq!(e.state().phase, Phase::Promoted, "{:?}", e.state());
    let s = say(&e, 121 * S);
    assert!(s.contains("Promoted: canary v2 serves every request; the gates watch it 20 s more"), "{s}");
    let s = say(&e, 200 * S);
    assert!(s.starts_with("Promoted 1 min 29 s ago") && s.contains("the rollout is over"), "{s}");
    // Aborted.
    e.abort(201 * S).unwrap();
    assert!(say(&e, 205 * S).starts_with("Aborted by hand 4 s ago"));
}

/// The summary's corner cases: a failing gate at full weight rolls back
/// at once whatever on_failure says; a restart does not move "ago".
#[test]
fn the_summary_at_full_weight_and_after_a_restart() {
    let mut p = plan(vec![stage(100, 10, 10)], vec![error_gate(0.05)]);
    p.on_failure = OnFailure::Pause;
    let mut e = Engine::new(p, ctx(), 0).0;
    e.tick(S, &win(5, 0), &win(5, 0));
    // An inconclusive first tick, then a failing one at 100 %: the engine
    // rolls back at once, so the summary never promises a pause.
    let mut probe = e.clone();
    probe.state.verdicts[0].verdict = Verdict::Fail;
    let s = probe.summary(2 * S, None);
    assert!(s.contains("at full weight weir rolls back at the next failing check"), "{s}");
    e.abort(3 * S).unwrap();
    let state = e.state().clone();
    let (restored, _) = Engine::restore(e.plan().clone(), ctx(), state, 100 * S).unwrap();
    let s = restored.summary(101 * S, None);
    assert!(s.starts_with("Aborted by hand 1 min 38 s ago"), "{s}");
}
