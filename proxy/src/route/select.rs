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

/// Where a request's keys are read: its headers, or an OFREP evaluation
/// context (`daemon::ofrep`), so that both decide alike.
pub(crate) trait Keys {
    /// The value of `key`, if present and not empty.
    fn value(&self, key: &Key) -> Option<&[u8]>;

    /// The value of the route's sticky key `key`.
    fn sticky(&self, key: &Key) -> Option<&[u8]> {
        self.value(key)
    }
}

impl Keys for HeaderMap {
    fn value(&self, key: &Key) -> Option<&[u8]> {
        read_key(key, self)
    }
}

/// Why a request goes to its side.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Why {
    /// The route has no canary.
    NoCanary,
    /// The force key (`always` or `never`).
    Forced,
    /// The value is in the current stage's cohort.
    Cohort,
    /// The sticky key's bucket against the weight.
    Sticky,
    /// No sticky key and a weight of 0.
    NoWeight,
}

impl Route {
    pub(crate) fn select(&self, headers: &HeaderMap) -> Side {
        match self.assign(headers) {
            Ok((side, _)) => side,
            Err(weight) => split::sequence_side(self.state.next_sequence(), weight),
        }
    }

    /// The side for a request with these keys, and why; `Err(weight)` when
    /// only the route's keyless sequence can say.
    pub(crate) fn assign<K: Keys + ?Sized>(&self, keys: &K) -> Result<(Side, Why), Weight> {
        if self.canary.is_none() {
            return Ok((Side::Stable, Why::NoCanary));
        }
        if let Some(force) = &self.force {
            match keys.value(force) {
                Some(v) if v.eq_ignore_ascii_case(b"always") => return Ok((Side::Canary, Why::Forced)),
                Some(v) if v.eq_ignore_ascii_case(b"never") => return Ok((Side::Stable, Why::Forced)),
                _ => {}
            }
        }
        let stage = self.state.stage();
        let cohort =
            if self.state.cohort_active() { self.cohorts.get(stage).or_else(|| self.cohorts.last()) } else { None };
        if let Some(Some(cohort)) = cohort {
            if let Some(v) = keys.value(&cohort.key) {
                if cohort.values.iter().any(|c| c.as_bytes() == v) {
                    return Ok((Side::Canary, Why::Cohort));
                }
            }
        }
        let weight = self.state.weight();
        if let Some(key) = self.sticky.as_ref().and_then(|k| keys.sticky(k)) {
            return Ok((split::sticky_side(self.salt, key, weight), Why::Sticky));
        }
        if weight == Weight::ZERO {
            return Ok((Side::Stable, Why::NoWeight));
        }
        Err(weight)
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
