//! Property tests for the routing arithmetic in `weir_control::split`.
//!
//! Each property restates a promise of the module's doc comments and checks
//! it against an independent computation (not a copy of the code under test):
//!
//! * sticky buckets lie in `[0, 10 000)`; raising the weight only adds keys to
//!   the canary, lowering it only moves keys back to stable; 0 % is always
//!   stable and 100 % always canary;
//! * the keyless sequence sends exactly `⌊n·w/10⁴⌋` of the first `n` requests
//!   to the canary, between `⌊k·w/10⁴⌋` and `⌈k·w/10⁴⌉` of any `k` consecutive
//!   ones, exactly `w` of any 10 000 consecutive ones, and spaces canary
//!   requests evenly (gaps of `⌊10⁴/w⌋` or `⌈10⁴/w⌉`);
//! * percentages parse in `[0, 100]` with at most two decimals; anything
//!   else, NaN and infinities included, is refused.

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use proptest::prelude::*;
use weir_control::split::{sequence_side, sticky_side, Salt, Side, Weight, FULL};

fn weight() -> impl Strategy<Value = Weight> {
    // Bias towards the edges, where off-by-one errors live.
    prop_oneof![
        1 => Just(0u32),
        1 => Just(1u32),
        1 => Just(FULL - 1),
        1 => Just(FULL),
        8 => 0..=FULL,
    ]
    .prop_map(Weight::from_bp)
}

fn key() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(any::<u8>(), 0..48)
}

/// Canary decisions among requests `start..start + len`, counted one by one.
fn canary_count(start: u64, len: u64, w: Weight) -> u64 {
    (start..start + len).filter(|&n| sequence_side(n, w) == Side::Canary).count() as u64
}

/// `⌊a·b/c⌋` without overflow.
fn mul_div_floor(a: u64, b: u64, c: u64) -> u64 {
    (u128::from(a) * u128::from(b) / u128::from(c)) as u64
}

/// `⌈a·b/c⌉` without overflow.
fn mul_div_ceil(a: u64, b: u64, c: u64) -> u64 {
    (u128::from(a) * u128::from(b)).div_ceil(u128::from(c)) as u64
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn bucket_is_below_full(salt in any::<String>(), key in key()) {
        prop_assert!(Salt::new(&salt).bucket(&key) < FULL);
    }

    #[test]
    fn sticky_side_is_monotonic_in_weight(salt in any::<String>(), key in key(), a in weight(), b in weight()) {
        let salt = Salt::new(&salt);
        let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
        if sticky_side(salt, &key, lo) == Side::Canary {
            prop_assert_eq!(sticky_side(salt, &key, hi), Side::Canary, "canary at {} but not at {}", lo, hi);
        }
        if sticky_side(salt, &key, hi) == Side::Stable {
            prop_assert_eq!(sticky_side(salt, &key, lo), Side::Stable, "stable at {} but not at {}", hi, lo);
        }
    }

    #[test]
    fn sticky_key_switches_to_canary_exactly_above_its_bucket(salt in any::<String>(), key in key()) {
        // The whole weight axis, every basis point in order: stable up to
        // the bucket, canary from bucket + 1 on.
        let salt = Salt::new(&salt);
        let bucket = salt.bucket(&key);
        for bp in 0..=FULL {
            let want = if bp > bucket { Side::Canary } else { Side::Stable };
            prop_assert_eq!(sticky_side(salt, &key, Weight::from_bp(bp)), want, "bucket {} at {} bp", bucket, bp);
        }
    }

    #[test]
    fn sticky_extremes(salt in any::<String>(), key in key()) {
        let salt = Salt::new(&salt);
        prop_assert_eq!(sticky_side(salt, &key, Weight::ZERO), Side::Stable);
        prop_assert_eq!(sticky_side(salt, &key, Weight::from_bp(0)), Side::Stable);
        prop_assert_eq!(sticky_side(salt, &key, Weight::FULL), Side::Canary);
        prop_assert_eq!(sticky_side(salt, &key, Weight::from_bp(FULL)), Side::Canary);
    }

    #[test]
    fn from_bp_clamps_to_full(bp in any::<u32>()) {
        let w = Weight::from_bp(bp);
        prop_assert_eq!(w.bp(), bp.min(FULL));
        prop_assert!(w <= Weight::FULL);
    }

    #[test]
    fn sequence_extremes(n in any::<u64>()) {
        prop_assert_eq!(sequence_side(n, Weight::ZERO), Side::Stable);
        prop_assert_eq!(sequence_side(n, Weight::FULL), Side::Canary);
    }

    #[test]
    fn sequence_prefix_is_exact(w in weight(), n in 0u64..30_000) {
        // Requests 0..n: the canary has had exactly ⌊n·w/10⁴⌋ of them.
        let got = canary_count(0, n, w);
        prop_assert_eq!(got, mul_div_floor(n, u64::from(w.bp()), u64::from(FULL)), "w={} n={}", w, n);
    }

    #[test]
    fn sequence_every_prefix_is_floor_or_ceil(w in weight(), n in 1u64..5_000) {
        // Walk the prefix once and check the running count after every request.
        let (bp, full) = (u64::from(w.bp()), u64::from(FULL));
        let mut canary = 0u64;
        for i in 0..n {
            canary += u64::from(sequence_side(i, w) == Side::Canary);
            let k = i + 1;
            prop_assert!(
                (mul_div_floor(k, bp, full)..=mul_div_ceil(k, bp, full)).contains(&canary),
                "w={} after {} requests: {} canary", w, k, canary
            );
        }
    }

    #[test]
    fn sequence_any_window_is_floor_or_ceil(
        w in weight(),
        start in prop_oneof![0u64..1_000_000, (u64::MAX - 1_000_000)..(u64::MAX - 20_000)],
        len in 0u64..20_000,
    ) {
        let (bp, full) = (u64::from(w.bp()), u64::from(FULL));
        let got = canary_count(start, len, w);
        let (lo, hi) = (mul_div_floor(len, bp, full), mul_div_ceil(len, bp, full));
        prop_assert!((lo..=hi).contains(&got), "w={} start={} len={}: {} not in {}..={}", w, start, len, got, lo, hi);
    }

    #[test]
    fn sequence_full_cycle_is_exact(w in weight(), start in any::<u64>()) {
        let start = start.min(u64::MAX - u64::from(FULL));
        prop_assert_eq!(canary_count(start, u64::from(FULL), w), u64::from(w.bp()));
    }

    #[test]
    fn sequence_spaces_canary_requests_evenly(bp in 1u32..=FULL, start in 0u64..1_000_000) {
        // Gaps between consecutive canary requests are ⌊10⁴/w⌋ or ⌈10⁴/w⌉.
        let w = Weight::from_bp(bp);
        let (lo, hi) = (FULL / bp, FULL.div_ceil(bp));
        let mut last = None;
        let mut gaps = 0;
        for n in start..start + 3 * u64::from(FULL / bp + 1) {
            if sequence_side(n, w) == Side::Canary {
                if let Some(prev) = last {
                    let gap = n - prev;
                    prop_assert!(gap >= u64::from(lo) && gap <= u64::from(hi), "w={} gap {} not in {}..={}", w, gap, lo, hi);
                    gaps += 1;
                }
                last = Some(n);
            }
        }
        prop_assert!(gaps >= 1, "w={}: fewer than two canary requests in three periods", w);
    }

    #[test]
    fn percent_with_two_decimals_is_accepted(w in weight()) {
        prop_assert_eq!(Weight::from_percent(f64::from(w.bp()) / 100.0), Ok(w));
    }

    #[test]
    fn percent_display_round_trips(w in weight()) {
        let text = w.to_string();
        let number: f64 = text.strip_suffix('%').expect("ends with %").parse().unwrap();
        prop_assert_eq!(Weight::from_percent(number), Ok(w), "{}", text);
    }

    #[test]
    fn percent_in_range_is_accepted_iff_two_decimals(x in 0.0f64..=100.0) {
        let hundredths = x * 100.0;
        let nearest = hundredths.round();
        match Weight::from_percent(x) {
            Ok(w) => {
                prop_assert!((f64::from(w.bp()) - hundredths).abs() <= 1e-6, "{} → {}", x, w);
                prop_assert!(w <= Weight::FULL);
            }
            Err(e) => prop_assert!((nearest - hundredths).abs() > 1e-9, "{} refused: {}", x, e),
        }
    }

    #[test]
    fn percent_with_a_third_decimal_is_refused(bp in 0u32..FULL, thousandth in 1u32..=9) {
        let x = f64::from(bp * 10 + thousandth) / 1000.0;
        prop_assert!(Weight::from_percent(x).is_err(), "{} accepted", x);
    }

    #[test]
    fn percent_out_of_range_is_refused(
        x in prop_oneof![
            -1e300f64..-1e-300,
            (100.0f64 + 1e-9)..1e300,
            Just(-0.01),
            Just(100.01),
            Just(f64::MIN),
            Just(f64::MAX),
            Just(-f64::MIN_POSITIVE),
        ],
    ) {
        prop_assert!(Weight::from_percent(x).is_err(), "{} accepted", x);
    }

    #[test]
    fn percent_non_finite_is_refused(x in prop_oneof![Just(f64::NAN), Just(-f64::NAN), Just(f64::INFINITY), Just(f64::NEG_INFINITY)]) {
        prop_assert!(Weight::from_percent(x).is_err(), "{} accepted", x);
    }

    #[test]
    fn percent_any_bits_never_exceeds_full(bits in any::<u64>()) {
        // Every f64 bit pattern, including NaN payloads and subnormals.
        let x = f64::from_bits(bits);
        if let Ok(w) = Weight::from_percent(x) {
            prop_assert!((0.0..=100.0).contains(&x), "{} accepted", x);
            prop_assert!(w <= Weight::FULL);
        }
    }
}
