//! Some rows of the gate simulation, for weir only:
//! `cargo run --release -p weir-benches --example sim-rows -- RUNS "SCENARIO" ...`
//! (every scenario without names).

use weir_benches::sim::{many, scenarios, Who, MAX_SECS};

fn main() {
    let mut args = std::env::args().skip(1);
    let runs: usize = args.next().and_then(|s| s.parse().ok()).unwrap_or(200);
    let names: Vec<String> = args.collect();
    for (s, plan) in scenarios().into_iter().filter(|(s, _)| names.is_empty() || names.iter().any(|n| n == s.name)) {
        let max = if plan.stages.len() == 1 { 360 } else { MAX_SECS };
        let r = many(Who::Weir, &plan, &s, runs, 1, max);
        println!(
            "{:<36} rolled back {:>6.2}%  promoted {:>6.2}%  held {:>5.1}%  median {:?}  p90 {:?}",
            s.name,
            100.0 * r.rolled_back,
            100.0 * r.promoted,
            100.0 * r.held,
            r.median_detect_secs,
            r.p90_detect_secs
        );
    }
}
