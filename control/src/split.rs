//! The routing arithmetic that decides stable or canary.
//!
//! Weights are integers in basis points (1 bp = 0.01 %, 10 000 bp = 100 %).
//!
//! * **Sticky requests** (a key from a header or cookie) are hashed with the
//!   route's salt into a bucket in `[0, 10 000)`; the request goes to the
//!   canary iff `bucket < weight`. Raising the weight therefore only *adds*
//!   buckets: a user who was on the canary at 10 % is still on it at 30 %.
//!   The hash is fixed (FNV-1a 64 over salt and key, finished with the
//!   MurmurHash3 `fmix64` avalanche), so assignments survive restarts and
//!   upgrades of weir.
//! * **Requests without a key** take the next number `n` of a per-route
//!   counter and go to the canary iff `⌊(n+1)·w/10⁴⌋ > ⌊n·w/10⁴⌋`. Over any
//!   10 000 consecutive requests exactly `w` go to the canary, spread evenly
//!   (a Bresenham line), so the delivered share is exact over short windows
//!   instead of drifting like a random draw.

/// Basis points in 100 %.
pub const FULL: u32 = 10_000;

/// A canary weight in basis points (0..=10 000).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Weight(u32);

impl Weight {
    /// No canary traffic.
    pub const ZERO: Weight = Weight(0);
    /// All traffic on the canary.
    pub const FULL: Weight = Weight(FULL);

    /// A weight from basis points, clamped to 10 000.
    pub fn from_bp(bp: u32) -> Weight {
        Weight(bp.min(FULL))
    }

    /// Parses a percentage with at most two decimals (`10`, `0.5`, `12.25`).
    pub fn from_percent(percent: f64) -> Result<Weight, String> {
        if !percent.is_finite() || !(0.0..=100.0).contains(&percent) {
            return Err(format!("{percent} is not a percentage between 0 and 100"));
        }
        let bp = (percent * 100.0).round();
        if (bp - percent * 100.0).abs() > 1e-6 {
            return Err(format!("{percent} has more than two decimals (the resolution is 0.01 %)"));
        }
        Ok(Weight(bp as u32))
    }

    /// The weight in basis points.
    pub fn bp(self) -> u32 {
        self.0
    }

    /// The weight as a percentage (0.0..=100.0).
    pub fn percent(self) -> f64 {
        f64::from(self.0) / 100.0
    }
}

impl std::fmt::Display for Weight {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.0.is_multiple_of(100) {
            write!(f, "{}%", self.0 / 100)
        } else {
            write!(f, "{:.2}%", self.percent())
        }
    }
}

/// Which release serves a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Side {
    /// The current release.
    Stable,
    /// The new release under evaluation.
    Canary,
}

impl Side {
    /// The lower-case name, as sent in `x-weir-variant` and used in logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Side::Stable => "stable",
            Side::Canary => "canary",
        }
    }
}

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

fn fnv1a(mut state: u64, bytes: &[u8]) -> u64 {
    for &b in bytes {
        state ^= u64::from(b);
        state = state.wrapping_mul(FNV_PRIME);
    }
    state
}

fn fmix64(mut k: u64) -> u64 {
    k ^= k >> 33;
    k = k.wrapping_mul(0xff51_afd7_ed55_8ccd);
    k ^= k >> 33;
    k = k.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    k ^= k >> 33;
    k
}

/// The hashing state of a route's salt, computed once per route.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Salt(u64);

impl Salt {
    /// Prepares the salt (the route's `sticky.salt`, by default its name).
    pub fn new(salt: &str) -> Salt {
        // A 0xff separator cannot occur in UTF-8, so ("ab","c") ≠ ("a","bc").
        Salt(fnv1a(fnv1a(FNV_OFFSET, salt.as_bytes()), &[0xff]))
    }

    /// The sticky bucket of `key` in `[0, 10 000)`.
    pub fn bucket(self, key: &[u8]) -> u32 {
        let h = fmix64(fnv1a(self.0, key));
        // Multiply-shift maps the 64-bit hash onto [0, FULL) without modulo bias.
        ((u128::from(h) * u128::from(FULL)) >> 64) as u32
    }
}

/// Sticky decision: canary iff the key's bucket is below the weight.
pub fn sticky_side(salt: Salt, key: &[u8], weight: Weight) -> Side {
    if salt.bucket(key) < weight.0 {
        Side::Canary
    } else {
        Side::Stable
    }
}

/// Keyless decision for the `n`-th request of a route (see the module doc).
pub fn sequence_side(n: u64, weight: Weight) -> Side {
    let w = u128::from(weight.0);
    let n = u128::from(n);
    let full = u128::from(FULL);
    if (n + 1) * w / full > n * w / full {
        Side::Canary
    } else {
        Side::Stable
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_parsing() {
        assert_eq!(Weight::from_percent(10.0), Ok(Weight(1000)));
        assert_eq!(Weight::from_percent(0.01), Ok(Weight(1)));
        assert_eq!(Weight::from_percent(12.25), Ok(Weight(1225)));
        assert!(Weight::from_percent(0.001).is_err());
        assert!(Weight::from_percent(100.5).is_err());
        assert!(Weight::from_percent(-1.0).is_err());
        assert_eq!(Weight(1225).to_string(), "12.25%");
        assert_eq!(Weight(500).to_string(), "5%");
    }

    #[test]
    fn sequence_is_exact_over_every_full_cycle() {
        for bp in [0, 1, 7, 500, 1000, 3333, 5000, 9999, 10_000] {
            let w = Weight(bp);
            for start in [0u64, 12_345, 1 << 40] {
                let canary = (start..start + u64::from(FULL)).filter(|&n| sequence_side(n, w) == Side::Canary).count();
                assert_eq!(canary, bp as usize, "bp={bp} start={start}");
            }
        }
    }

    #[test]
    fn sequence_is_smooth() {
        // At 10 %, every window of 100 consecutive requests holds exactly 10.
        let w = Weight(1000);
        for start in 0..500u64 {
            let c = (start..start + 100).filter(|&n| sequence_side(n, w) == Side::Canary).count();
            assert_eq!(c, 10);
        }
    }

    #[test]
    fn buckets_are_uniform_and_stable() {
        let salt = Salt::new("web");
        let mut hist = [0u32; 10];
        for i in 0..100_000u32 {
            let b = salt.bucket(format!("user-{i}").as_bytes());
            assert!(b < FULL);
            hist[(b / 1000) as usize] += 1;
        }
        for count in hist {
            assert!((9_500..=10_500).contains(&count), "{hist:?}");
        }
        // Fixed algorithm: pinned values guard against accidental changes,
        // which would reshuffle every user on upgrade.
        assert_eq!(salt.bucket(b"alice"), 6643);
        assert_eq!(salt.bucket(b"bob"), 478);
        assert_eq!(Salt::new("checkout").bucket(b"alice"), 8307);
        assert_ne!(Salt::new("ab").bucket(b"c"), Salt::new("a").bucket(b"bc"));
    }

    #[test]
    fn raising_weight_never_moves_canary_users_back() {
        let salt = Salt::new("r");
        for i in 0..20_000u32 {
            let key = i.to_be_bytes();
            let mut was_canary = false;
            for bp in (0..=FULL).step_by(250) {
                let side = sticky_side(salt, &key, Weight(bp));
                if was_canary {
                    assert_eq!(side, Side::Canary);
                }
                was_canary = side == Side::Canary;
            }
        }
    }
}
