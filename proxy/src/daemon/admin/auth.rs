//! Bearer-token check for mutating admin calls.
//!
//! The token comes from `admin.token_file` (read at start and on reload by
//! `crate::files::read_token`; surrounding whitespace trimmed). Without a
//! token file, mutating calls are open, which the config only allows on a
//! loopback admin address.

use http::{header, Request};

use crate::daemon::context::Daemon;

/// Ok when no token is configured or the request carries it.
pub(crate) fn check<B>(daemon: &Daemon, req: &Request<B>) -> Result<(), &'static str> {
    bearer(daemon.admin_token.load().as_deref().map(|t| t.as_str()), req.headers())
}

/// Ok when `expected` is `None` or the headers carry it as a bearer token
/// (`Authorization: Bearer TOKEN`); also the OFREP listener's check.
pub(crate) fn bearer(expected: Option<&str>, headers: &http::HeaderMap) -> Result<(), &'static str> {
    let Some(expected) = expected else { return Ok(()) };
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or("missing bearer token")?;
    if constant_time_eq(given.trim().as_bytes(), expected.as_bytes()) {
        Ok(())
    } else {
        Err("wrong bearer token")
    }
}

/// Compares without an early exit, so timing does not reveal how much of a
/// guess was right (only its length).
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::constant_time_eq;

    #[test]
    fn compares() {
        assert!(constant_time_eq(b"secret", b"secret"));
        assert!(!constant_time_eq(b"secret", b"secreT"));
        assert!(!constant_time_eq(b"secret", b"secret2"));
        assert!(constant_time_eq(b"", b""));
    }
}
