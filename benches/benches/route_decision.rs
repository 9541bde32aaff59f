//! Cost of the routing decision: sticky bucket (hash of salt + key) and the
//! keyless exact sequence. Run with `cargo bench -p weir-benches`.

#![allow(missing_docs)] // criterion_group! generates undocumented items

use criterion::{criterion_group, criterion_main, Criterion};
use std::hint::black_box;
use weir_control::split::{sequence_side, sticky_side, Salt, Weight};

fn decisions(c: &mut Criterion) {
    let salt = Salt::new("web");
    let w = Weight::from_bp(1000);
    c.bench_function("sticky_side/16B key", |b| {
        b.iter(|| sticky_side(black_box(salt), black_box(b"user-1234567890ab"), black_box(w)))
    });
    let mut n = 0u64;
    c.bench_function("sequence_side", |b| {
        b.iter(|| {
            n += 1;
            sequence_side(black_box(n), black_box(w))
        })
    });
}

criterion_group!(benches, decisions);
criterion_main!(benches);
