//! The synthetic tag: a per-process secret in `x-weir-synthetic` that steers
//! weir's own synthetic requests (sent by the daemon, see
//! `daemon/synthetic.rs`) to the canary, or to stable with `target = "both"`,
//! and marks them so that they are recorded apart from user traffic. The
//! upstream sees `x-weir-synthetic: 1`; a client cannot forge the tag (any
//! other value of the header is dropped).

use http::{HeaderName, HeaderValue};
use weir_control::split::Side;

/// The request header carrying the tag.
pub(crate) static HEADER: HeaderName = HeaderName::from_static("x-weir-synthetic");

/// This process's tag values, one per side.
#[derive(Debug)]
pub(crate) struct SyntheticTag {
    canary: HeaderValue,
    stable: HeaderValue,
}

fn secret() -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut out = String::new();
    for i in 0..2u64 {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u64(i);
        out.push_str(&format!("{:016x}", h.finish()));
    }
    out
}

impl SyntheticTag {
    pub(crate) fn new() -> Self {
        let s = secret();
        let value = |side: &str| HeaderValue::from_str(&format!("{s}:{side}")).unwrap_or(HeaderValue::from_static("-"));
        SyntheticTag { canary: value("canary"), stable: value("stable") }
    }

    /// The side a tagged request must take, if the tag is genuine.
    pub(crate) fn side_of(&self, v: &HeaderValue) -> Option<Side> {
        if v == self.canary {
            Some(Side::Canary)
        } else if v == self.stable {
            Some(Side::Stable)
        } else {
            None
        }
    }

    /// The tag that steers a request to `side`.
    pub(crate) fn value(&self, side: Side) -> &HeaderValue {
        match side {
            Side::Canary => &self.canary,
            Side::Stable => &self.stable,
        }
    }
}
