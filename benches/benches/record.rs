//! Cost of recording one finished request (outcome counter, latency bucket,
//! and the Prometheus counter and histogram), on one thread and on two
//! threads recording into the same (route, backend) at once.
//! Run with `cargo bench -p weir-benches --bench record`.
#![allow(missing_docs)] // criterion_group! generates undocumented items

use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use weir_control::sample::CodeClass;
use weir_proxy::telemetry::Telemetry;

fn record(c: &mut Criterion) {
    let telemetry = Telemetry::new();
    let stats = telemetry.stats("web", "canary");
    let latency = Duration::from_micros(1234);

    c.bench_function("record/1 thread", |b| b.iter(|| stats.record(CodeClass::Success, None, latency)));
    c.bench_function("record/2 threads contending (per record)", |b| {
        b.iter_custom(|iters| {
            let barrier = Arc::new(Barrier::new(2));
            let threads: Vec<_> = (0..2)
                .map(|_| {
                    let (stats, barrier) = (stats.clone(), barrier.clone());
                    std::thread::spawn(move || {
                        barrier.wait();
                        let t = Instant::now();
                        for _ in 0..iters {
                            stats.record(CodeClass::Success, None, latency);
                        }
                        t.elapsed()
                    })
                })
                .collect();
            // Wall time per record on each thread while both run at once.
            threads.into_iter().map(|t| t.join().unwrap_or_default()).max().unwrap_or_default()
        })
    });
    // Keep the exporter's sample buffer bounded between runs.
    let _ = telemetry.render();
}

criterion_group!(benches, record);
criterion_main!(benches);
