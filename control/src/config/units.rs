//! Human units in config values: durations (`250ms`, `30s`, `2m`, `1h`) and
//! byte sizes (`64KiB`, `10MB`).

use std::time::Duration;

/// Parses a duration such as `250ms`, `30s`, `1.5s`, `2m` or `1h`.
///
/// A bare number is rejected on purpose: `timeout = 30` is ambiguous.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .ok_or_else(|| format!("\"{text}\" has no unit (use ms, s, m or h, e.g. \"250ms\")"))?;
    let (number, unit) = text.split_at(split);
    if number.is_empty() {
        return Err(format!("\"{text}\" does not start with a number"));
    }
    let value: f64 = number.parse().map_err(|_| format!("\"{number}\" is not a number"))?;
    let scale = match unit.trim() {
        "us" | "µs" => 1e-6,
        "ms" => 1e-3,
        "s" => 1.0,
        "m" => 60.0,
        "h" => 3600.0,
        other => return Err(format!("unknown duration unit \"{other}\" (use ms, s, m or h)")),
    };
    let secs = value * scale;
    if !secs.is_finite() || secs > 365.0 * 86400.0 {
        return Err(format!("\"{text}\" is too long"));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// Parses a byte size such as `512`, `64KiB`, `10MB` or `1GiB`.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: u64 = number.parse().map_err(|_| format!("\"{text}\" does not start with a whole number"))?;
    let scale: u64 = match unit.trim() {
        "" | "B" => 1,
        "KB" | "kB" => 1000,
        "KiB" => 1 << 10,
        "MB" => 1_000_000,
        "MiB" => 1 << 20,
        "GB" => 1_000_000_000,
        "GiB" => 1 << 30,
        other => return Err(format!("unknown size unit \"{other}\" (use B, KiB, MiB, GiB, KB, MB or GB)")),
    };
    value.checked_mul(scale).ok_or_else(|| format!("\"{text}\" is too large"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert!(parse_duration("30").unwrap_err().contains("no unit"));
        assert!(parse_duration("ms").is_err());
        assert!(parse_duration("5d").unwrap_err().contains("unknown duration unit"));
        assert!(parse_duration("1.2.3s").is_err());
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("64KiB"), Ok(65536));
        assert_eq!(parse_size("10MB"), Ok(10_000_000));
        assert_eq!(parse_size("512"), Ok(512));
        assert!(parse_size("1TB").is_err());
        assert!(parse_size("KiB").is_err());
        assert!(parse_size("99999999999999999999GiB").is_err());
    }
}
