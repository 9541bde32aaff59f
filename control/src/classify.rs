//! Which outcomes of a request count as the backend's failures: one
//! classifier per route (`routes.failures`), read by telemetry and every
//! gate. An HTTP response fails by its status (by default 5xx); a gRPC
//! call by its `grpc-status` (by default the codes that mean the server
//! failed: UNKNOWN, DEADLINE_EXCEEDED, INTERNAL, UNAVAILABLE, DATA_LOSS;
//! codes such as NOT_FOUND or INVALID_ARGUMENT are the caller's problem).
//! A request that got no usable answer from the upstream always fails.

/// The gRPC status codes, by number (0..=16), as the gRPC spec names them.
pub const GRPC_CODES: [&str; 17] = [
    "OK",
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
];

/// gRPC codes weir uses itself.
pub mod grpc {
    /// The call succeeded.
    pub const OK: u8 = 0;
    /// The caller cancelled the call.
    pub const CANCELLED: u8 = 1;
    /// Unknown error (also: a response without a status).
    pub const UNKNOWN: u8 = 2;
    /// The deadline passed.
    pub const DEADLINE_EXCEEDED: u8 = 4;
    /// No such method at this address (no route).
    pub const UNIMPLEMENTED: u8 = 12;
    /// Internal error (a malformed request).
    pub const INTERNAL: u8 = 13;
    /// The service is unavailable (retryable).
    pub const UNAVAILABLE: u8 = 14;
}

/// The code with this name (any case) or number.
pub fn grpc_code(text: &str) -> Option<u8> {
    if let Ok(n) = text.parse::<u8>() {
        return (usize::from(n) < GRPC_CODES.len()).then_some(n);
    }
    GRPC_CODES.iter().position(|c| c.eq_ignore_ascii_case(text)).map(|i| i as u8)
}

/// The gRPC code a client reads from an HTTP status when a response has
/// no `grpc-status` (the table of gRPC's "HTTP to gRPC status code
/// mapping"): also what weir answers gRPC callers for its own errors.
pub fn grpc_code_of_http(status: u16) -> u8 {
    match status {
        200 => grpc::OK,
        400 => grpc::INTERNAL,
        401 => 16,
        403 => 7,
        404 => grpc::UNIMPLEMENTED,
        429 | 502 | 503 | 504 => grpc::UNAVAILABLE,
        _ => grpc::UNKNOWN,
    }
}

/// The `grpc-status` value of a header or trailer field: its code, or
/// UNKNOWN if it is not one (as gRPC clients read it).
pub fn parse_grpc_status(value: &[u8]) -> u8 {
    match std::str::from_utf8(value).ok().and_then(|s| s.trim().parse::<u8>().ok()) {
        Some(c) if usize::from(c) < GRPC_CODES.len() => c,
        _ => grpc::UNKNOWN,
    }
}

/// A `grpc-timeout` value: up to 8 digits and a unit (H, M, S, m, u, n).
pub fn parse_grpc_timeout(value: &[u8]) -> Option<std::time::Duration> {
    use std::time::Duration;
    let (unit, digits) = value.split_last()?;
    if digits.is_empty() || digits.len() > 8 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let n: u64 = std::str::from_utf8(digits).ok()?.parse().ok()?;
    Some(match unit {
        b'H' => Duration::from_secs(n * 3600),
        b'M' => Duration::from_secs(n * 60),
        b'S' => Duration::from_secs(n),
        b'm' => Duration::from_millis(n),
        b'u' => Duration::from_micros(n),
        b'n' => Duration::from_nanos(n),
        _ => return None,
    })
}

/// Which gRPC codes count as failures (a small copyable set).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct GrpcFailures(u32);

impl GrpcFailures {
    /// Whether a call ending with `code` failed (codes past 16 are UNKNOWN,
    /// as gRPC clients read them).
    pub fn failed(self, code: u8) -> bool {
        let code = if usize::from(code) < GRPC_CODES.len() { code } else { grpc::UNKNOWN };
        self.0 & (1 << code) != 0
    }
}

/// Which HTTP statuses and gRPC codes count as failures.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Classifier {
    /// Bit `s - 100` for each failing HTTP status `s` in 100..=611.
    http: [u64; 8],
    /// The failing gRPC codes.
    pub grpc: GrpcFailures,
}

impl Default for Classifier {
    fn default() -> Self {
        let mut c = Classifier::none();
        c.add_http_range(500, 599);
        for code in [grpc::UNKNOWN, grpc::DEADLINE_EXCEEDED, grpc::INTERNAL, grpc::UNAVAILABLE, 15] {
            c.add_grpc(code);
        }
        c
    }
}

impl Classifier {
    /// Fails nothing (a starting point to add to).
    pub fn none() -> Self {
        Classifier { http: [0; 8], grpc: GrpcFailures(0) }
    }

    /// No HTTP status fails (before adding some).
    pub fn clear_http(&mut self) {
        self.http = [0; 8];
    }

    /// No gRPC code fails (before adding some).
    pub fn clear_grpc(&mut self) {
        self.grpc = GrpcFailures(0);
    }

    /// Counts statuses `from..=to` (within 100..=599) as failures.
    pub fn add_http_range(&mut self, from: u16, to: u16) {
        for s in from.max(100)..=to.min(599) {
            let i = usize::from(s - 100);
            self.http[i / 64] |= 1 << (i % 64);
        }
    }

    /// Counts gRPC code `code` (0..=16) as a failure.
    pub fn add_grpc(&mut self, code: u8) {
        if usize::from(code) < GRPC_CODES.len() {
            self.grpc.0 |= 1 << code;
        }
    }

    /// Whether an HTTP response with this status failed.
    pub fn http_failed(&self, status: u16) -> bool {
        let Some(i) = status.checked_sub(100).map(usize::from) else { return false };
        i < 512 && self.http[i / 64] & (1 << (i % 64)) != 0
    }

    /// Whether a gRPC call with this code failed.
    pub fn grpc_failed(&self, code: u8) -> bool {
        self.grpc.failed(code)
    }

    /// The failing gRPC codes' names, for display.
    pub fn grpc_names(&self) -> Vec<&'static str> {
        (0..GRPC_CODES.len() as u8).filter(|&c| self.grpc.failed(c)).map(|c| GRPC_CODES[usize::from(c)]).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_fail_5xx_and_the_server_side_grpc_codes() {
        let c = Classifier::default();
        assert!(c.http_failed(500) && c.http_failed(503) && c.http_failed(599));
        assert!(!c.http_failed(200) && !c.http_failed(404) && !c.http_failed(429) && !c.http_failed(99));
        assert_eq!(c.grpc_names(), ["UNKNOWN", "DEADLINE_EXCEEDED", "INTERNAL", "UNAVAILABLE", "DATA_LOSS"]);
        assert!(!c.grpc_failed(grpc::OK) && !c.grpc_failed(5));
        assert!(c.grpc_failed(200), "an out-of-range code reads as UNKNOWN");
    }

    #[test]
    fn codes_by_name_or_number() {
        assert_eq!(grpc_code("unavailable"), Some(14));
        assert_eq!(grpc_code("NOT_FOUND"), Some(5));
        assert_eq!(grpc_code("16"), Some(16));
        assert_eq!(grpc_code("17"), None);
        assert_eq!(grpc_code("NOPE"), None);
        let mut c = Classifier::none();
        c.add_http_range(429, 429);
        c.add_grpc(8);
        assert!(c.http_failed(429) && !c.http_failed(500) && c.grpc_failed(8) && !c.grpc_failed(14));
    }

    #[test]
    fn grpc_timeouts() {
        use std::time::Duration;
        assert_eq!(parse_grpc_timeout(b"300000u"), Some(Duration::from_millis(300)));
        assert_eq!(parse_grpc_timeout(b"2S"), Some(Duration::from_secs(2)));
        assert_eq!(parse_grpc_timeout(b"1H"), Some(Duration::from_secs(3600)));
        for bad in [&b""[..], b"m", b"123456789m", b"12x", b"-1S", b"1.5S"] {
            assert_eq!(parse_grpc_timeout(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn grpc_status_values() {
        assert_eq!(parse_grpc_status(b"14"), 14);
        assert_eq!(parse_grpc_status(b"0"), 0);
        assert_eq!(parse_grpc_status(b"99"), grpc::UNKNOWN);
        assert_eq!(parse_grpc_status(b"x"), grpc::UNKNOWN);
    }

    #[test]
    fn http_to_grpc_follows_the_spec_table() {
        for (s, c) in [(400, 13), (401, 16), (403, 7), (404, 12), (429, 14), (502, 14), (503, 14), (504, 14), (500, 2)]
        {
            assert_eq!(grpc_code_of_http(s), c, "{s}");
        }
    }
}
