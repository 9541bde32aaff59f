//! Gates: one measured value against its thresholds, giving **pass**,
//! **fail** or **inconclusive** (too few samples), with the numbers that
//! decided it.
//!
//! * `error_rate`, `latency_pNN`: the canary's value against `max`
//!   (absolute) and against stable's value in the same window:
//!   `threshold = max_ratio_to_stable × stable + max_delta_to_stable`
//!   (ratio 1 when only the delta is set, delta 0 when only the ratio is).
//!   Both limits must hold.
//! * `error_rate_vs_stable`: a mixture sequential probability ratio test
//!   (mSPRT, Johari et al., "Always Valid Inference", 2017) on the difference
//!   of error rates, with a normal mixing distribution of scale τ = 0.02. Its
//!   p-value is valid at every tick however often it is looked at, so the
//!   chance that a canary *as good as stable* ever fails this gate during a
//!   stage is at most `alpha` (default 1 %).
//! * `latency_shift`: Mann-Whitney U over the latency histogram buckets
//!   (ties handled per bucket) gives the probability of superiority
//!   A = P(canary slower) + ½ P(tie), 0.5 when the distributions match. The
//!   gate fails only when the shift is significant (one-sided p ≤ `alpha`)
//!   *and* large (A − 0.5 ≥ `min_effect`, default 0.1), so a tiny but
//!   significant shift on a large sample does not fail.
//!
//! When the canary takes all traffic, stable has no samples: comparisons are
//! skipped and only absolute limits apply.

use serde::{Deserialize, Serialize};

use crate::config::{Gate, GateMetric};
use crate::sample::{Probes, Window};

/// The outcome of one gate at one evaluation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// Within limits on enough samples.
    Pass,
    /// Out of limits on enough samples.
    Fail,
    /// Too few samples to decide.
    Inconclusive,
    /// Not applicable now (a comparison while stable has no traffic).
    Skipped,
}

impl Verdict {
    /// Lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Pass => "pass",
            Verdict::Fail => "fail",
            Verdict::Inconclusive => "inconclusive",
            Verdict::Skipped => "skipped",
        }
    }
}

/// A gate's verdict with the numbers behind it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GateResult {
    /// Gate name.
    pub gate: String,
    /// The verdict.
    pub verdict: Verdict,
    /// Measured canary value (fraction, seconds, rate difference, or A).
    pub value: Option<f64>,
    /// Stable's value in the same window, where compared.
    pub stable_value: Option<f64>,
    /// The limit the value was held to.
    pub threshold: Option<f64>,
    /// p-value of a statistical gate.
    pub p_value: Option<f64>,
    /// Canary samples in the window.
    pub canary_samples: u64,
    /// Stable samples in the window.
    pub stable_samples: u64,
}

/// Mixing scale of the mSPRT on error-rate differences.
const TAU: f64 = 0.02;

/// Evaluates `gate` on the canary and stable windows. `canary_only` is set
/// when the canary takes all traffic (comparisons are then skipped).
pub fn evaluate(gate: &Gate, canary: &Window, stable: &Window, canary_only: bool) -> GateResult {
    evaluate_with(gate, canary, stable, Probes::default(), canary_only)
}

/// [`evaluate`], with the stage's synthetic checks and shadow comparisons
/// for `synthetic` and `shadow_mismatch` gates.
pub fn evaluate_with(gate: &Gate, canary: &Window, stable: &Window, probes: Probes, canary_only: bool) -> GateResult {
    let mut r = GateResult {
        gate: gate.name.clone(),
        verdict: Verdict::Inconclusive,
        value: None,
        stable_value: None,
        threshold: None,
        p_value: None,
        canary_samples: canary.counts.total(),
        stable_samples: stable.counts.total(),
    };
    match gate.metric {
        GateMetric::Synthetic | GateMetric::ShadowMismatch => {
            let checks = if gate.metric == GateMetric::Synthetic { probes.synthetic } else { probes.shadow };
            r.canary_samples = checks.total();
            r.stable_samples = 0;
            if checks.total() >= gate.min_samples {
                let rate = checks.failed as f64 / checks.total() as f64;
                let max = gate.max.unwrap_or(0.0);
                r.value = Some(rate);
                r.threshold = Some(max);
                r.verdict = if rate > max { Verdict::Fail } else { Verdict::Pass };
            }
        }
        GateMetric::ErrorRate => {
            r.canary_samples = canary.counts.total();
            limits(gate, &mut r, canary.counts.error_rate(), stable.counts.error_rate(), canary_only);
        }
        GateMetric::Latency(q) => {
            r.canary_samples = canary.latency.count();
            r.stable_samples = stable.latency.count();
            let v = |w: &Window| w.latency.quantile(q).map(|d| d.as_secs_f64());
            limits(gate, &mut r, v(canary), v(stable), canary_only);
        }
        GateMetric::ErrorRateVsStable => {
            if canary_only {
                r.verdict = Verdict::Skipped;
            } else if r.canary_samples >= gate.min_samples && r.stable_samples >= gate.min_samples {
                let (c, s) = (&canary.counts, &stable.counts);
                let (diff, p) = msprt(c.failures(), c.total(), s.failures(), s.total());
                r.value = c.error_rate();
                r.stable_value = s.error_rate();
                r.threshold = Some(gate.alpha);
                r.p_value = Some(p);
                r.verdict = if p <= gate.alpha && diff > gate.min_effect { Verdict::Fail } else { Verdict::Pass };
            }
        }
        GateMetric::LatencyShift => {
            r.canary_samples = canary.latency.count();
            r.stable_samples = stable.latency.count();
            if canary_only {
                r.verdict = Verdict::Skipped;
            } else if r.canary_samples >= gate.min_samples && r.stable_samples >= gate.min_samples {
                let (a, p) = mann_whitney(canary, stable);
                r.value = Some(a);
                r.stable_value = Some(0.5);
                r.threshold = Some(0.5 + gate.min_effect);
                r.p_value = Some(p);
                r.verdict = if p <= gate.alpha && a - 0.5 >= gate.min_effect { Verdict::Fail } else { Verdict::Pass };
            }
        }
    }
    r
}

/// Absolute and relative limits of `error_rate` / `latency_pNN` gates.
fn limits(gate: &Gate, r: &mut GateResult, canary: Option<f64>, stable: Option<f64>, canary_only: bool) {
    let relative = gate.max_ratio_to_stable.is_some() || gate.max_delta_to_stable.is_some();
    if canary_only && gate.max.is_none() {
        r.verdict = Verdict::Skipped;
        return;
    }
    let Some(value) = canary.filter(|_| r.canary_samples >= gate.min_samples) else { return };
    r.value = Some(value);
    let mut threshold = gate.max;
    if relative && !canary_only {
        let Some(s) = stable.filter(|_| r.stable_samples >= gate.min_samples) else {
            // Stable too thin to compare with: the absolute limit alone
            // still judges a breach (a value within it is no pass yet).
            if let Some(max) = gate.max.filter(|&m| value > m) {
                r.threshold = Some(max);
                r.verdict = Verdict::Fail;
            }
            return;
        };
        r.stable_value = Some(s);
        let rel = gate.max_ratio_to_stable.unwrap_or(1.0) * s + gate.max_delta_to_stable.unwrap_or(0.0);
        threshold = Some(threshold.map_or(rel, |m| m.min(rel)));
    }
    r.threshold = threshold;
    r.verdict = match threshold {
        Some(t) if value > t => Verdict::Fail,
        _ => Verdict::Pass,
    };
}

/// One-sided mSPRT for "canary error rate > stable error rate".
/// Returns (observed difference, always-valid p-value).
pub fn msprt(canary_fail: u64, canary_n: u64, stable_fail: u64, stable_n: u64) -> (f64, f64) {
    if canary_n == 0 || stable_n == 0 {
        return (0.0, 1.0);
    }
    // Half-count smoothing keeps the variance positive at 0 % or 100 %.
    let rate = |x: u64, n: u64| (x as f64 + 0.5) / (n as f64 + 1.0);
    let (pc, ps) = (rate(canary_fail, canary_n), rate(stable_fail, stable_n));
    let diff = canary_fail as f64 / canary_n as f64 - stable_fail as f64 / stable_n as f64;
    if diff <= 0.0 {
        return (diff, 1.0);
    }
    let v = pc * (1.0 - pc) / canary_n as f64 + ps * (1.0 - ps) / stable_n as f64;
    let t2 = TAU * TAU;
    let log_lambda = 0.5 * (v / (v + t2)).ln() + t2 * diff * diff / (2.0 * v * (v + t2));
    (diff, (-log_lambda).exp().min(1.0))
}

/// Mann-Whitney U of canary against stable latency, over shared buckets.
/// Returns (A = P(canary > stable) + ½ P(tie), one-sided p for "canary slower").
pub fn mann_whitney(canary: &Window, stable: &Window) -> (f64, f64) {
    use std::collections::BTreeMap;
    let mut buckets: BTreeMap<u64, (f64, f64)> = BTreeMap::new();
    for v in canary.latency.histogram().iter_recorded() {
        buckets.entry(v.value_iterated_to()).or_default().0 += v.count_at_value() as f64;
    }
    for v in stable.latency.histogram().iter_recorded() {
        buckets.entry(v.value_iterated_to()).or_default().1 += v.count_at_value() as f64;
    }
    let (nc, ns) = (canary.latency.count() as f64, stable.latency.count() as f64);
    if nc == 0.0 || ns == 0.0 {
        return (0.5, 1.0);
    }
    let n = nc + ns;
    let (mut u, mut stable_below, mut ties) = (0.0, 0.0, 0.0);
    for &(c, s) in buckets.values() {
        u += c * (stable_below + 0.5 * s);
        stable_below += s;
        let t = c + s;
        ties += t * t * t - t;
    }
    let a = u / (nc * ns);
    let mean = nc * ns / 2.0;
    let var = nc * ns / 12.0 * ((n + 1.0) - ties / (n * (n - 1.0)));
    if var <= 0.0 {
        return (a, 1.0);
    }
    let z = (u - mean - 0.5) / var.sqrt();
    (a, 0.5 * erfc(z / std::f64::consts::SQRT_2))
}

/// Complementary error function (Numerical Recipes `erfcc`, |error| < 1.2e-7).
fn erfc(x: f64) -> f64 {
    let z = x.abs();
    let t = 1.0 / (1.0 + 0.5 * z);
    let r = t
        * (-z * z - 1.265_512_23
            + t * (1.000_023_68
                + t * (0.374_091_96
                    + t * (0.096_784_18
                        + t * (-0.186_288_06
                            + t * (0.278_868_07
                                + t * (-1.135_203_98
                                    + t * (1.488_515_87 + t * (-0.822_152_23 + t * 0.170_872_77)))))))))
            .exp();
    if x >= 0.0 {
        r
    } else {
        2.0 - r
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sample::{CodeClass, Counts, Latency};

    fn window(total: u64, failures: u64, latency_ms: &[(u64, u64)]) -> Window {
        let mut counts = Counts::default();
        counts.by_class[CodeClass::Success.index()] = total - failures;
        counts.by_class[CodeClass::ServerError.index()] = failures;
        let mut latency = Latency::new();
        for &(ms, n) in latency_ms {
            latency.record_n(ms * 1000, n);
        }
        Window { span: std::time::Duration::from_secs(10), counts, latency }
    }

    fn gate(metric: GateMetric) -> Gate {
        Gate {
            name: metric.name(),
            metric,
            min_samples: 50,
            alpha: 0.01,
            min_effect: if metric == GateMetric::LatencyShift { 0.1 } else { 0.0 },
            max: None,
            max_ratio_to_stable: None,
            max_delta_to_stable: None,
        }
    }

    #[test]
    fn absolute_and_relative_limits() {
        let mut g = gate(GateMetric::ErrorRate);
        g.max = Some(0.05);
        let stable = window(1000, 10, &[]);
        assert_eq!(evaluate(&g, &window(100, 4, &[]), &stable, false).verdict, Verdict::Pass);
        let r = evaluate(&g, &window(100, 6, &[]), &stable, false);
        assert_eq!((r.verdict, r.value, r.threshold), (Verdict::Fail, Some(0.06), Some(0.05)));
        assert_eq!(evaluate(&g, &window(10, 6, &[]), &stable, false).verdict, Verdict::Inconclusive);

        // p99 ≤ 1.25 × stable + 5 ms
        let mut g = gate(GateMetric::Latency(0.99));
        g.max_ratio_to_stable = Some(1.25);
        g.max_delta_to_stable = Some(0.005);
        let stable = window(1000, 0, &[(100, 1000)]);
        let ok = evaluate(&g, &window(100, 0, &[(129, 100)]), &stable, false);
        assert_eq!(ok.verdict, Verdict::Pass, "{ok:?}");
        let slow = evaluate(&g, &window(100, 0, &[(300, 100)]), &stable, false);
        assert_eq!(slow.verdict, Verdict::Fail);
        assert!((slow.threshold.unwrap() - 0.130).abs() < 0.003, "{slow:?}");
        // Canary alone: the comparison is skipped.
        assert_eq!(evaluate(&g, &window(100, 0, &[(300, 100)]), &window(0, 0, &[]), true).verdict, Verdict::Skipped);
    }

    /// Issue 21, bug 5: with stable too thin to compare with (the canary at
    /// 99 %), a breach of the absolute limit failed nothing: the gate read
    /// inconclusive.
    #[test]
    fn an_absolute_limit_fails_a_breach_even_when_stable_is_too_thin_to_compare() {
        let mut g = gate(GateMetric::ErrorRate);
        g.max = Some(0.05);
        g.max_ratio_to_stable = Some(2.0);
        let thin = window(10, 0, &[]);
        let r = evaluate(&g, &window(1000, 300, &[]), &thin, false);
        assert_eq!((r.verdict, r.threshold), (Verdict::Fail, Some(0.05)), "{r:?}");
        // Within the absolute limit, the comparison is still owed: no pass.
        let r = evaluate(&g, &window(1000, 10, &[]), &thin, false);
        assert_eq!(r.verdict, Verdict::Inconclusive, "{r:?}");
        // Latency too: p99 300 ms against `max = 250ms`.
        let mut g = gate(GateMetric::Latency(0.99));
        g.max = Some(0.25);
        g.max_ratio_to_stable = Some(1.25);
        let r = evaluate(&g, &window(1000, 0, &[(300, 1000)]), &window(5, 0, &[(100, 5)]), false);
        assert_eq!(r.verdict, Verdict::Fail, "{r:?}");
    }

    #[test]
    fn msprt_flags_real_differences_only() {
        // 5 % vs 1 % on 1000 each: strong evidence.
        let (_, p) = msprt(50, 1000, 10, 1000);
        assert!(p < 1e-4, "{p}");
        // Same rates: no evidence.
        let (_, p) = msprt(10, 1000, 10, 1000);
        assert_eq!(p, 1.0);
        let (_, p) = msprt(12, 1000, 10, 1000);
        assert!(p > 0.5, "{p}");
        // Canary better: never fails.
        assert_eq!(msprt(1, 1000, 30, 1000).1, 1.0);
    }

    #[test]
    fn mann_whitney_effect_floor() {
        let stable = window(1000, 0, &[(10, 500), (20, 500)]);
        let same = window(1000, 0, &[(10, 500), (20, 500)]);
        let (a, p) = mann_whitney(&same, &stable);
        assert!((a - 0.5).abs() < 1e-9 && p > 0.4, "{a} {p}");
        let slower = window(1000, 0, &[(20, 500), (40, 500)]);
        let (a, p) = mann_whitney(&slower, &stable);
        assert!(a > 0.7 && p < 1e-6, "{a} {p}");
        assert_eq!(evaluate(&gate(GateMetric::LatencyShift), &slower, &stable, false).verdict, Verdict::Fail);
        // Tiny but significant shift on a big sample: passes the floor.
        let big_stable = window(100_000, 0, &[(10, 50_000), (11, 50_000)]);
        let tiny = window(100_000, 0, &[(10, 48_000), (11, 52_000)]);
        let r = evaluate(&gate(GateMetric::LatencyShift), &tiny, &big_stable, false);
        assert!(r.p_value.unwrap() < 0.01, "{r:?}");
        assert_eq!(r.verdict, Verdict::Pass);
    }

    #[test]
    fn erfc_matches_known_values() {
        assert!((erfc(0.0) - 1.0).abs() < 1e-6);
        assert!((erfc(1.0) - 0.157_299_2).abs() < 1e-6);
        assert!((erfc(-1.0) - 1.842_700_8).abs() < 1e-6);
    }
}
