//! Stable or canary for one request, in this order:
//! 1. the force key (`always` → canary, `never` → stable: the user's opt-out);
//! 2. the cohort of the current stage;
//! 3. the weight: by sticky bucket when the request has a sticky key,
//!    otherwise by the route's exact keyless sequence.
//!
//! Nothing here allocates: keys are read as borrowed bytes.

use http::header::COOKIE;
use http::HeaderMap;
use weir_control::split::{self, Side, Weight};

use super::{Key, Route};

impl Route {
    pub(crate) fn select(&self, headers: &HeaderMap) -> Side {
        if self.canary.is_none() {
            return Side::Stable;
        }
        if let Some(force) = &self.force {
            match read_key(force, headers) {
                Some(v) if v.eq_ignore_ascii_case(b"always") => return Side::Canary,
                Some(v) if v.eq_ignore_ascii_case(b"never") => return Side::Stable,
                _ => {}
            }
        }
        let stage = self.state.stage();
        let cohort =
            if self.state.cohort_active() { self.cohorts.get(stage).or_else(|| self.cohorts.last()) } else { None };
        if let Some(Some(cohort)) = cohort {
            if let Some(v) = read_key(&cohort.key, headers) {
                if cohort.values.iter().any(|c| c.as_bytes() == v) {
                    return Side::Canary;
                }
            }
        }
        let weight = self.state.weight();
        if let Some(sticky) = &self.sticky {
            if let Some(key) = read_key(sticky, headers) {
                return split::sticky_side(self.salt, key, weight);
            }
        }
        if weight == Weight::ZERO {
            return Side::Stable;
        }
        split::sequence_side(self.state.next_sequence(), weight)
    }
}

/// The key's value, borrowed from the headers; empty values count as absent.
fn read_key<'h>(key: &Key, headers: &'h HeaderMap) -> Option<&'h [u8]> {
    match key {
        Key::Header(name) => headers.get(name).map(|v| v.as_bytes()).filter(|v| !v.is_empty()),
        Key::Cookie(name) => headers.get_all(COOKIE).iter().find_map(|v| cookie_value(v.as_bytes(), name.as_bytes())),
    }
}

/// Finds `name` in a `Cookie` header value (`a=1; b=2`).
fn cookie_value<'h>(header: &'h [u8], name: &[u8]) -> Option<&'h [u8]> {
    header.split(|&b| b == b';').find_map(|pair| {
        let pair = pair.trim_ascii();
        let eq = pair.iter().position(|&b| b == b'=')?;
        let (k, v) = (&pair[..eq], &pair[eq + 1..]);
        let v = v.strip_prefix(b"\"").and_then(|v| v.strip_suffix(b"\"")).unwrap_or(v);
        (k == name && !v.is_empty()).then_some(v)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookie_parsing() {
        assert_eq!(cookie_value(b"a=1; uid=42; b=2", b"uid"), Some(&b"42"[..]));
        assert_eq!(cookie_value(b"uid=\"x y\"", b"uid"), Some(&b"x y"[..]));
        assert_eq!(cookie_value(b"xuid=1;uid=2", b"uid"), Some(&b"2"[..]));
        assert_eq!(cookie_value(b"uid=", b"uid"), None);
        assert_eq!(cookie_value(b"garbage", b"uid"), None);
    }
}
