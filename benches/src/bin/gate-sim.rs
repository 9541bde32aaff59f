//! Prints the gate engine's simulation figures: false rollbacks on healthy
//! canaries; detection rate and time for 2× and 5× error rates and +50 %
//! latency, at 100 canary requests per second.
//!
//! `cargo run --release -p weir-benches --bin gate-sim [RUNS]`

use weir_benches::sim::{baseline, many, reference_plan, Side, MAX_SECS};

fn main() {
    let runs: usize = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(2000);
    let stable = baseline(200);
    println!("canary 100 rps, stable 200 rps, baseline 1% errors and 20 ms median; {runs} seeded rollouts each");
    println!("plan: 4 stages x 60 s bake; gates error_rate_vs_stable (mSPRT) + latency_shift (Mann-Whitney), alpha 1%, error_rate <= 10%");
    for threshold in [1, 2] {
        let plan = reference_plan(threshold);
        println!("\nfailure_threshold = {threshold}");
        println!(
            "{:<22} {:>12} {:>10} {:>16} {:>14}",
            "scenario", "rolled back", "promoted", "median detect s", "p90 detect s"
        );
        for (name, canary) in [
            ("healthy (same as stable)", baseline(100)),
            ("2x error rate", Side { error_rate: 0.02, ..baseline(100) }),
            ("5x error rate", Side { error_rate: 0.05, ..baseline(100) }),
            ("+50% latency", Side { median_ms: 30.0, ..baseline(100) }),
        ] {
            let s = many(&plan, canary, stable, runs, 1, MAX_SECS);
            print_row(name, &s);
        }
        // The same 5x regression with five times the traffic on both sides.
        let s = many(&plan, Side { error_rate: 0.05, ..baseline(500) }, baseline(1000), runs / 4, 1, MAX_SECS);
        print_row("5x errors, 500 rps", &s);
        let s = many(&plan, baseline(500), baseline(1000), runs / 4, 1, MAX_SECS);
        print_row("healthy, 500 rps", &s);
    }
}

fn print_row(name: &str, s: &weir_benches::sim::Summary) {
    let show = |x: Option<u64>| x.map_or("-".to_string(), |v| v.to_string());
    println!(
        "{:<22} {:>11.2}% {:>9.2}% {:>16} {:>14}",
        name,
        100.0 * s.rolled_back,
        100.0 * s.promoted,
        show(s.median_detect_secs),
        show(s.p90_detect_secs)
    );
}
