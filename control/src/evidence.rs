//! The statistics behind the gates, in one place: always-valid tests and
//! bounds that may be looked at every tick, and the dispersion correction
//! that keeps them honest when failures come in bursts.
//!
//! * [`RatioTest`]: is the canary's event rate (failures, or requests
//!   slower than a latency threshold) a multiple `θ` of stable's? Given the
//!   events of both sides, each event is the canary's with probability
//!   `p₀ = n_c / (n_c + n_s)` when the rates match, and
//!   `p_θ = θ n_c / (θ n_c + n_s)` when the canary's is `θ` times higher.
//!   The likelihood ratio of that conditional binomial is a test martingale
//!   under "the canary is no worse" (it does not depend on the shared base
//!   rate, so a busy hour or a quiet night changes nothing), and an equal
//!   mixture over a grid of `θ` is one too: by Ville's inequality, the
//!   chance it *ever* reaches `1/α` on a canary as good as stable is at most
//!   `α`, however often it is checked. The evidence of each stage is kept
//!   and added to the next one's, so one rollout spends one `α`.
//! * [`upper_bound`]: an always-valid upper confidence bound on a rate
//!   (Robbins' beta-binomial mixture): the canary's error rate is below it
//!   at every tick with probability at least `1 − α`. A stage passes on it
//!   (evidence of safety), not on the absence of a failure.
//! * [`dispersion`]: failures that arrive in bursts (a pod restart, a
//!   client's retries) are not independent; a burst of `k` carries the
//!   evidence of one event, not `k`. The index of dispersion `φ` (Pearson's
//!   χ² per degree of freedom over one-second counts) estimates `k`, and
//!   every log-likelihood ratio above is divided by it (quasi-likelihood):
//!   for bursts of a fixed size `k`, that is exactly the test on bursts.
//! * [`shift_upper_bound`]: an always-valid upper bound on a normally
//!   distributed estimate (the normal-mixture boundary of Johari et al.,
//!   "Always Valid Inference", 2017), for the Mann-Whitney effect size.

use serde::{Deserialize, Serialize};

use crate::sample::Second;

/// Alternatives of [`RatioTest`]: the canary's rate is `θ` × stable's.
/// Weighted equally; ratios below ~1.2 add no evidence against the canary
/// (they are nearer 1 than 1.5 is), which is the test's effect floor.
pub const RATIOS: [f64; 5] = [1.5, 2.0, 3.0, 5.0, 10.0];

/// Conditional binomial evidence that the canary's rate is higher than
/// stable's: the log-likelihood ratio for each of [`RATIOS`], summed over
/// stages.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RatioTest {
    /// Untempered log-likelihood ratios, one per [`RATIOS`] entry.
    pub log_lr: [f64; RATIOS.len()],
}

impl RatioTest {
    /// The evidence of one stage: `canary` of `canary_n` and `stable` of
    /// `stable_n` were events. Nothing when either side saw no request (the
    /// events then tell nothing about the ratio).
    pub fn of(canary: u64, canary_n: u64, stable: u64, stable_n: u64) -> RatioTest {
        let mut t = RatioTest::default();
        if canary_n == 0 || stable_n == 0 || canary + stable == 0 {
            return t;
        }
        let (nc, ns) = (canary_n as f64, stable_n as f64);
        let p0 = nc / (nc + ns);
        for (l, &theta) in t.log_lr.iter_mut().zip(&RATIOS) {
            let p = theta * nc / (theta * nc + ns);
            *l = canary as f64 * (p / p0).ln() + stable as f64 * ((1.0 - p) / (1.0 - p0)).ln();
        }
        t
    }

    /// The evidence of `events` of `n` canary requests when the rate they
    /// should be held to is known: `rate`, measured on stable before the
    /// canary took all traffic. Each request is then its own Bernoulli
    /// trial, `θ × rate` against `rate` (θ × rate capped below 1).
    pub fn against_rate(events: u64, n: u64, rate: f64) -> RatioTest {
        let mut t = RatioTest::default();
        if n == 0 || !(rate > 0.0 && rate < 1.0) {
            return t;
        }
        let (x, rest) = (events as f64, (n - events.min(n)) as f64);
        for (l, &theta) in t.log_lr.iter_mut().zip(&RATIOS) {
            let p = (theta * rate).min(0.999_999);
            *l = x * (p / rate).ln() + rest * ((1.0 - p) / (1.0 - rate)).ln();
        }
        t
    }

    /// This evidence and `other`'s (disjoint data: the martingales multiply).
    pub fn plus(&self, other: &RatioTest) -> RatioTest {
        let mut t = *self;
        for (a, b) in t.log_lr.iter_mut().zip(other.log_lr) {
            *a += b;
        }
        t
    }

    /// The mixture e-value, each ratio tempered by the dispersion `phi ≥ 1`.
    pub fn e_value(&self, phi: f64) -> f64 {
        let phi = phi.max(1.0);
        self.log_lr.iter().map(|l| (l / phi).min(700.0).exp()).sum::<f64>() / RATIOS.len() as f64
    }
}

/// Index of dispersion of one-second failure counts: Pearson's χ² of the
/// seconds of each series against their local rate (blocks of
/// [`DISPERSION_BLOCK`] seconds, so that a level shift, an outage or a
/// daily swing is not taken for burstiness), per degree of freedom, shrunk
/// towards a cautious prior of 3 (worth 10 seconds) while the data are
/// few, and never below 1 (Poisson).
pub fn dispersion(series: &[&[Second]]) -> f64 {
    const PRIOR: f64 = 3.0;
    const PRIOR_DF: f64 = 10.0;
    let (chi2, df, failures) = pearson(series);
    if !failures {
        // No failure anywhere: no burst to correct for.
        return 1.0;
    }
    ((chi2 + PRIOR * PRIOR_DF) / (df + PRIOR_DF)).clamp(1.0, DISPERSION_CAP)
}

/// The largest dispersion the tests correct for: a canary failing in long
/// stretches reads as very bursty, and must not dilute its own evidence
/// without bound.
pub const DISPERSION_CAP: f64 = 10.0;

/// [`dispersion`] as far as the data show it, without the prior: 1 until
/// there are 10 degrees of freedom. For the rules outside the budget (the
/// severe rule, absolute limits), whose counts it scales: they must not
/// wait for data that a service without failures never produces.
pub fn observed_dispersion(series: &[&[Second]]) -> f64 {
    let (chi2, df, _) = pearson(series);
    if df < 10.0 {
        1.0
    } else {
        (chi2 / df).clamp(1.0, DISPERSION_CAP)
    }
}

/// Pearson's χ², its degrees of freedom (see [`dispersion`]), and whether
/// any request failed.
fn pearson(series: &[&[Second]]) -> (f64, f64, bool) {
    let (mut chi2, mut df) = (0.0, 0.0);
    let failures = series.iter().any(|s| s.iter().any(|v| v.failures > 0));
    for s in series {
        for block in s.chunks(DISPERSION_BLOCK) {
            let (n, x) = block.iter().fold((0u64, 0u64), |(n, x), v| (n + v.total, x + v.failures));
            let seconds = block.iter().filter(|v| v.total > 0).count();
            if x == 0 || x == n || seconds < 2 {
                continue;
            }
            let r = x as f64 / n as f64;
            for v in block.iter().filter(|v| v.total > 0) {
                let mean = v.total as f64 * r;
                let d = v.failures as f64 - mean;
                chi2 += d * d / (mean * (1.0 - r));
            }
            df += (seconds - 1) as f64;
        }
    }
    (chi2, df, failures)
}

/// Seconds per block of [`dispersion`].
pub const DISPERSION_BLOCK: usize = 10;

/// Always-valid upper bound on a rate after `failures` of `n` (Robbins'
/// mixture over a Beta(½, 50) prior: error rates are mostly small, and a
/// prior that says so pays less for it), at level `alpha`, with counts
/// divided by the dispersion `phi`. `1` without data.
pub fn upper_bound(failures: u64, n: u64, alpha: f64, phi: f64) -> f64 {
    if n == 0 {
        return 1.0;
    }
    let phi = phi.max(1.0);
    let (x, m) = (failures as f64 / phi, n as f64 / phi);
    let (a, b) = (0.5, 50.0);
    let log_mix = ln_beta(a + x, b + m - x) - ln_beta(a, b);
    let target = (1.0 / alpha).ln();
    // ln M(p) = log_mix − x ln p − (m − x) ln(1 − p) rises from its minimum
    // at p̂ = x/m towards 1: bisect for where it crosses ln(1/α).
    let ln_m = |p: f64| log_mix - x * p.ln() - (m - x) * (1.0 - p).ln();
    let (mut lo, mut hi) = (x / m, 1.0 - 1e-12);
    if ln_m(hi) < target {
        return 1.0;
    }
    for _ in 0..60 {
        let mid = 0.5 * (lo + hi);
        if ln_m(mid) < target {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    hi
}

/// One-sided 95 % lower confidence bound on a rate after `failures` of `n`
/// (Wilson's score interval, counts divided by `phi`): for a single look,
/// where a limit is compared once per tick. `0` without data.
pub fn lower_bound(failures: u64, n: u64, phi: f64) -> f64 {
    if n == 0 || failures == 0 {
        return 0.0;
    }
    let phi = phi.max(1.0);
    let (x, m) = (failures as f64 / phi, n as f64 / phi);
    let p = x / m;
    let z: f64 = 1.645;
    let z2 = z * z;
    let centre = p + z2 / (2.0 * m);
    let spread = z * (p * (1.0 - p) / m + z2 / (4.0 * m * m)).sqrt();
    ((centre - spread) / (1.0 + z2 / m)).max(0.0)
}

/// Always-valid upper bound on a mean whose estimate is `estimate` with
/// variance `var`, at level `alpha`: the normal-mixture boundary with
/// mixing scale `tau` (Johari et al. 2017, eq. 11).
pub fn shift_upper_bound(estimate: f64, var: f64, alpha: f64, tau: f64) -> f64 {
    if var <= 0.0 {
        return estimate;
    }
    let t2 = tau * tau;
    let radius = ((var * (var + t2) / t2) * (((var + t2) / var).ln() - 2.0 * alpha.ln())).sqrt();
    estimate + radius
}

/// ln B(a, b) through [`ln_gamma`].
fn ln_beta(a: f64, b: f64) -> f64 {
    ln_gamma(a) + ln_gamma(b) - ln_gamma(a + b)
}

/// ln Γ(x) for x > 0 (Lanczos, g = 7, nine terms: ~1e-13 relative).
fn ln_gamma(x: f64) -> f64 {
    const G: f64 = 7.0;
    const C: [f64; 9] = [
        0.999_999_999_999_809_9,
        676.520_368_121_885_1,
        -1_259.139_216_722_402_8,
        771.323_428_777_653_1,
        -176.615_029_162_140_6,
        12.507_343_278_686_905,
        -0.138_571_095_265_720_12,
        9.984_369_578_019_572e-6,
        1.505_632_735_149_311_6e-7,
    ];
    if x < 0.5 {
        // Reflection: Γ(x) Γ(1 − x) = π / sin(πx).
        let pi = std::f64::consts::PI;
        return (pi / (pi * x).sin()).ln() - ln_gamma(1.0 - x);
    }
    let x = x - 1.0;
    let mut sum = C[0];
    for (i, c) in C.iter().enumerate().skip(1) {
        sum += c / (x + i as f64);
    }
    let t = x + G + 0.5;
    0.5 * (2.0 * std::f64::consts::PI).ln() + (x + 0.5) * t.ln() - t + sum.ln()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(counts: &[(u64, u64)]) -> Vec<Second> {
        counts.iter().enumerate().map(|(i, &(total, failures))| Second { sec: i as u64, total, failures }).collect()
    }

    #[test]
    fn ln_gamma_matches_factorials() {
        for (x, f) in [(1.0, 1.0f64), (2.0, 1.0), (5.0, 24.0), (10.0, 362_880.0)] {
            assert!((ln_gamma(x) - f.ln()).abs() < 1e-9, "{x}");
        }
        assert!((ln_gamma(0.5) - std::f64::consts::PI.sqrt().ln()).abs() < 1e-9);
    }

    #[test]
    fn ratio_test_grows_on_a_worse_canary_only() {
        // 5 % against 1 % on 1000 requests each: strong evidence.
        let bad = RatioTest::of(50, 1000, 10, 1000);
        assert!(bad.e_value(1.0) > 1e5, "{bad:?}");
        // The same rates: the mixture stays below 1 (no evidence).
        let same = RatioTest::of(10, 1000, 10, 1000);
        assert!(same.e_value(1.0) < 1.0, "{same:?}");
        // A better canary: evidence for the canary, none against it.
        assert!(RatioTest::of(2, 1000, 30, 1000).e_value(1.0) < 0.1);
        // Tempering by the dispersion divides the evidence.
        assert!(bad.e_value(5.0) < bad.e_value(1.0).powf(0.3));
        // Stages add up.
        let half = RatioTest::of(25, 500, 5, 500);
        assert!(half.plus(&half).e_value(1.0) > half.e_value(1.0));
        // Against a known rate: 5 % of 1000 where 1 % was expected.
        assert!(RatioTest::against_rate(50, 1000, 0.01).e_value(1.0) > 1e5);
        assert!(RatioTest::against_rate(10, 1000, 0.01).e_value(1.0) < 1.0);
        // No traffic on a side: nothing.
        assert_eq!(RatioTest::of(5, 100, 0, 0), RatioTest::default());
    }

    #[test]
    fn dispersion_sees_bursts_and_not_iid_counts() {
        // Poisson-like counts: about 1.
        let iid: Vec<(u64, u64)> = (0..200).map(|i| (1000, [9, 11, 10, 8, 12, 10, 7, 13][i % 8])).collect();
        let phi = dispersion(&[&secs(&iid)]);
        assert!((1.0..1.3).contains(&phi), "{phi}");
        // Counts in fives, same mean: variance 3.75 times the mean.
        let bursty: Vec<(u64, u64)> = (0..200).map(|i| (1000, [10, 5, 15, 10, 0, 20, 5, 15][i % 8])).collect();
        let phi = dispersion(&[&secs(&bursty)]);
        assert!((3.0..4.5).contains(&phi), "{phi}");
        assert!((observed_dispersion(&[&secs(&bursty)]) - phi).abs() < 0.2);
        // A level shift (an outage) is not burstiness.
        let shift: Vec<(u64, u64)> = (0..200).map(|i| (1000, if i < 100 { 10 } else { 300 })).collect();
        assert!(dispersion(&[&secs(&shift)]) < 1.5);
        // Failures, but too few seconds: the cautious prior; no failure at
        // all: nothing to correct for.
        assert_eq!(dispersion(&[&secs(&[(1000, 5)])]), 3.0);
        assert_eq!(dispersion(&[&secs(&[(1000, 0); 50])]), 1.0);
        assert_eq!(observed_dispersion(&[]), 1.0);
    }

    #[test]
    fn upper_bound_covers_and_tightens() {
        let b = upper_bound(10, 1000, 0.01, 1.0);
        assert!(b > 0.01 && b < 0.03, "{b}");
        assert!(upper_bound(100, 10_000, 0.01, 1.0) < b);
        // Zero failures still bound the rate.
        let z = upper_bound(0, 5000, 0.01, 1.0);
        assert!(z > 0.0 && z < 0.005, "{z}");
        // Bursts widen it.
        assert!(upper_bound(10, 1000, 0.01, 5.0) > b);
        assert_eq!(upper_bound(0, 0, 0.01, 1.0), 1.0);
    }

    #[test]
    fn lower_bound_is_below_the_rate_and_tightens() {
        let l = lower_bound(30, 1000, 1.0);
        assert!(l > 0.02 && l < 0.03, "{l}");
        assert!(lower_bound(1, 1000, 1.0) < 3e-4);
        assert!(lower_bound(300, 10_000, 1.0) > l);
        assert_eq!(lower_bound(0, 1000, 1.0), 0.0);
    }

    #[test]
    fn shift_bound_is_wider_than_the_estimate() {
        let b = shift_upper_bound(0.5, 1e-4, 0.01, 0.1);
        assert!(b > 0.5 && b < 0.6, "{b}");
        assert!(shift_upper_bound(0.5, 1e-6, 0.01, 0.1) < b);
    }
}
