//! Prints the gate engine's simulation table: for each scenario, how weir
//! and three anchors (Flagger, Argo Rollouts, a Kayenta-style judgement)
//! decide on the same traffic and seeds: rolled back, promoted, still held,
//! and the time from the change's onset to the rollback.
//!
//! `cargo run --release -p weir-benches --bin gate-sim [RUNS] [ANCHOR_RUNS] [ROWS]`
//! (defaults 2000 and 300; healthy rows are false rollbacks per rollout;
//! `ROWS`: only the scenarios whose name contains it).

use weir_benches::sim::{many, scenarios, Summary, Who, MAX_SECS, WARMUP_SECS};

fn main() {
    let mut args = std::env::args().skip(1).map(|a| a.parse::<usize>().ok());
    let runs = args.next().flatten().unwrap_or(2000);
    let anchor_runs = args.next().flatten().unwrap_or(300);
    let only = std::env::args().nth(3).unwrap_or_default();
    println!(
        "seeded rollouts through the proxy's own recording and windows; stable serves alone for {WARMUP_SECS} s first"
    );
    println!("baseline: 1% errors, log-normal latency (median 20 ms, p99 64 ms); weights applied per request");
    println!("weir plan: 5/25/50/100 % x 60 s bake, ticks every 250 ms; error_rate_vs_stable + latency_shift (alpha 0.5% each: 1% per rollout) + error_rate <= 10%");
    println!("anchors: same steps; Flagger 1m checks, 5 failures; Argo 1m measurements, failureLimit 0, consecutiveErrorLimit 4; Kayenta-style MW at each step's end (p < 0.025)");
    println!("{weir} runs per weir row, {anchor_runs} per anchor row; at most {MAX_SECS} s per rollout", weir = runs);
    println!(
        "\n{:<36} {:<14} {:>9} {:>9} {:>7} {:>10} {:>9}",
        "scenario", "controller", "rollback", "promoted", "held", "median s", "p90 s"
    );
    for (scenario, plan) in scenarios().into_iter().filter(|(s, _)| s.name.contains(only.as_str())) {
        // Single-stage detection rows: long enough for Flagger's five checks.
        let max = if plan.stages.len() == 1 { 360 } else { MAX_SECS };
        // The detection bound where it applies: 5x errors, one stage.
        let oracle = plan.stages.len() == 1 && scenario.name.starts_with("5x errors");
        let whos = [Who::Weir, Who::Flagger, Who::Argo, Who::Kayenta, Who::Oracle];
        for who in whos.into_iter().filter(|w| *w != Who::Oracle || oracle) {
            let n = if matches!(who, Who::Weir | Who::Oracle) { runs } else { anchor_runs };
            let s = many(who, &plan, &scenario, n, 1, max);
            print_row(scenario.name, who.name(), &s);
        }
        println!();
    }
}

fn print_row(scenario: &str, who: &str, s: &Summary) {
    let show = |x: Option<f64>| x.map_or("-".to_string(), |v| format!("{v:.1}"));
    println!(
        "{:<36} {:<14} {:>8.2}% {:>8.2}% {:>6.1}% {:>10} {:>9}",
        scenario,
        who,
        100.0 * s.rolled_back,
        100.0 * s.promoted,
        100.0 * s.held,
        show(s.median_detect_secs),
        show(s.p90_detect_secs)
    );
}
