//! weir's latency histograms in the Prometheus exposition, kept by weir.
//!
//! The recorder already counts every request's latency per bucket; once a
//! second it folds those counts into these cumulative-bucket counters with
//! one atomic add per non-empty bucket. The `metrics` exporter's histogram
//! stores every sample (`record_many(v, n)` pushes `v` n times) and sorts
//! them into buckets at upkeep: at 80 000 requests/s that was 80 000 pushes
//! a second and a pause in the event loop long enough to show in the p99.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

use super::names::DURATION_BUCKETS;

/// One histogram series (its labels are given at render time).
#[derive(Debug)]
pub(crate) struct PromHistogram {
    /// Samples per bucket of [`DURATION_BUCKETS`] (not cumulative); the
    /// last slot is above every bound.
    buckets: Box<[AtomicU64]>,
    sum_us: AtomicU64,
    count: AtomicU64,
}

/// [`DURATION_BUCKETS`] as rendered (`le` labels).
const LE: [&str; DURATION_BUCKETS.len()] = [
    "0.0005", "0.001", "0.0025", "0.005", "0.0075", "0.01", "0.015", "0.025", "0.05", "0.075", "0.1", "0.15", "0.25",
    "0.5", "0.75", "1", "1.5", "2.5", "5", "10",
];

/// The bounds in microseconds, to place a sample without floats.
fn bound_us(i: usize) -> u64 {
    (DURATION_BUCKETS[i] * 1e6).round() as u64
}

/// A series' labels in the exposition format, `{k="v",…` without the
/// closing brace (a family's own label, such as `le`, goes after), with
/// the values escaped. Formatted once, when the series is made.
pub(crate) fn series(labels: &[(&str, &str)]) -> Box<str> {
    let mut l = String::from("{");
    for (i, (k, v)) in labels.iter().enumerate() {
        if i > 0 {
            l.push(',');
        }
        let _ = write!(l, "{k}=\"{}\"", escape(v));
    }
    l.into()
}

impl Default for PromHistogram {
    fn default() -> Self {
        PromHistogram::new()
    }
}

impl PromHistogram {
    pub(crate) fn new() -> Self {
        PromHistogram {
            buckets: (0..=DURATION_BUCKETS.len()).map(|_| AtomicU64::new(0)).collect(),
            sum_us: AtomicU64::new(0),
            count: AtomicU64::new(0),
        }
    }

    /// Adds `n` samples of `value_us` microseconds.
    pub(crate) fn record_many(&self, value_us: u64, n: u64) {
        let i = (0..DURATION_BUCKETS.len()).find(|&i| value_us <= bound_us(i)).unwrap_or(DURATION_BUCKETS.len());
        self.buckets[i].fetch_add(n, Ordering::Relaxed);
        self.sum_us.fetch_add(value_us.saturating_mul(n), Ordering::Relaxed);
        self.count.fetch_add(n, Ordering::Relaxed);
    }

    /// Appends this series' `_bucket`, `_sum` and `_count` lines.
    /// Nothing for a series that has seen no sample (as Prometheus client
    /// libraries do for a label set never used): a route's synthetic or
    /// shadow traffic, or a backend no request reached, adds no lines.
    /// `labels` is the series' `{k="v",…` without its closing brace
    /// ([`series`]).
    pub(crate) fn render(&self, name: &str, labels: &str, out: &mut String) {
        if self.count.load(Ordering::Relaxed) == 0 {
            return;
        }
        let mut n = itoa::Buffer::new();
        let mut cumulative = 0;
        for (i, b) in self.buckets.iter().enumerate() {
            cumulative += b.load(Ordering::Relaxed);
            let le = LE.get(i).copied().unwrap_or("+Inf");
            out.push_str(name);
            out.push_str("_bucket");
            out.push_str(labels);
            out.push_str(",le=\"");
            out.push_str(le);
            out.push_str("\"} ");
            out.push_str(n.format(cumulative));
            out.push('\n');
        }
        let sum = self.sum_us.load(Ordering::Relaxed) as f64 / 1e6;
        let _ = writeln!(out, "{name}_sum{labels}}} {sum}");
        let _ = writeln!(out, "{name}_count{labels}}} {cumulative}");
    }
}

/// A label value in the exposition format (`\`, `"` and newlines escaped).
fn escape(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_le_labels_are_the_bounds() {
        for (le, b) in LE.iter().zip(DURATION_BUCKETS) {
            assert_eq!(*le, b.to_string());
        }
        let mut out = String::new();
        PromHistogram::new().render("x_seconds", &series(&[("route", "r"), ("backend", "b")]), &mut out);
        assert_eq!(out, "", "a series without samples is not rendered");
    }

    #[test]
    fn samples_land_in_cumulative_buckets() {
        let h = PromHistogram::new();
        h.record_many(400, 2); // ≤ 0.5 ms
        h.record_many(500, 1); // the bound itself is included
        h.record_many(3_000, 4); // ≤ 5 ms
        h.record_many(20_000_000, 1); // above every bound
        let mut out = String::new();
        h.render("x_seconds", &series(&[("route", "r\"1"), ("backend", "b")]), &mut out);
        assert!(out.contains("x_seconds_bucket{route=\"r\\\"1\",backend=\"b\",le=\"0.0005\"} 3\n"), "{out}");
        assert!(out.contains("le=\"0.0025\"} 3\n"), "{out}");
        assert!(out.contains("le=\"0.005\"} 7\n"), "{out}");
        assert!(out.contains("le=\"10\"} 7\n"), "{out}");
        assert!(out.contains("le=\"+Inf\"} 8\n"), "{out}");
        assert!(out.contains("x_seconds_count{route=\"r\\\"1\",backend=\"b\"} 8\n"), "{out}");
        assert!(out.contains("x_seconds_sum{route=\"r\\\"1\",backend=\"b\"} 20.0133\n"), "{out}");
    }
}
