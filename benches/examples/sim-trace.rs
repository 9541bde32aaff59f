//! One simulated rollout with its audit trail on stderr:
//! `WEIR_SIM_TRACE=1 cargo run --release -p weir-benches --example sim-trace -- "SCENARIO" SEED`

use weir_benches::sim::{run, scenarios, Weir, MAX_SECS, WARMUP_SECS};

fn main() {
    let mut args = std::env::args().skip(1);
    let name = args.next().unwrap_or_else(|| "healthy, 400 rps".into());
    let seed: u64 = args.next().and_then(|s| s.parse().ok()).unwrap_or(1);
    let Some((scenario, plan)) = scenarios().into_iter().find(|(s, _)| s.name == name) else {
        eprintln!("no scenario {name:?}; one of:");
        for (s, _) in scenarios() {
            eprintln!("  {}", s.name);
        }
        std::process::exit(2);
    };
    let start = 1_000_000_000 + WARMUP_SECS * 1000;
    let out = run(&scenario, seed, MAX_SECS, &mut Weir::new(&plan, start));
    println!("{out:?}");
}
