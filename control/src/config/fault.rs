//! Fault injection as written, and the one place its rules live.
//!
//! A fault arrives two ways: as `backends.NAME.fault` in the config file and
//! as the admin API's JSON body. Each reader only turns its own types into a
//! [`FaultSpec`]; one set of rules (`FaultSpec::check`, and
//! [`FaultSpec::validate`] over it) then judges both the same way, so the two
//! can never disagree about what a valid fault is.

use std::fmt;
use std::time::Duration;

use crate::config::units::parse_duration;
use crate::config::Fault;
use crate::split::Weight;

/// Why an `abort_status` is refused (also what the JSON reader says of a
/// status that is not a whole number).
const STATUS_RANGE: &str = "expected a status between 200 and 599";

/// A fault as written, before validation.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct FaultSpec {
    /// Added delay before forwarding.
    pub delay: Option<Duration>,
    /// Share of requests delayed, percent (default 100 with a delay, else 0).
    pub delay_percent: Option<f64>,
    /// Status answered instead of forwarding (200 to 599).
    pub abort_status: Option<i64>,
    /// Share of requests aborted, percent (default 100 with a status, else 0).
    pub abort_percent: Option<f64>,
    /// The fault switches itself off this long after it was (re)loaded.
    pub duration: Option<Duration>,
}

/// A rule a fault breaks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FaultError {
    /// The key at fault (`abort_status`, …); `""` is the fault itself.
    pub key: &'static str,
    /// What is wrong.
    pub reason: String,
}

impl FaultError {
    fn new(key: &'static str, reason: impl Into<String>) -> Self {
        FaultError { key, reason: reason.into() }
    }
}

impl fmt::Display for FaultError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.key.is_empty() {
            f.write_str(&self.reason)
        } else {
            write!(f, "{}: {}", self.key, self.reason)
        }
    }
}

impl std::error::Error for FaultError {}

impl FaultSpec {
    /// The fault, or the first rule it breaks, checked in this order:
    /// `abort_status` in 200..=599, a delay or a status at all (key `""`),
    /// `delay_percent` and `abort_percent` each a percentage (default 100
    /// when its delay or status is set, else 0).
    pub fn validate(&self) -> Result<Fault, FaultError> {
        let mut first = None;
        let fault = self.check(&mut |e| {
            first.get_or_insert(e);
        });
        match first {
            Some(e) => Err(e),
            None => Ok(fault),
        }
    }

    /// Every rule, each broken one reported to `report`, in this order:
    /// `abort_status`, the fault itself, `delay_percent`, `abort_percent`.
    /// The fault returned is only valid when nothing was reported; the
    /// config reader wants every problem at once, the API the first.
    pub(crate) fn check(&self, report: &mut dyn FnMut(FaultError)) -> Fault {
        let abort_status =
            self.abort_status.map(u16::try_from).and_then(Result::ok).filter(|s| (200..=599).contains(s));
        if self.abort_status.is_some() && abort_status.is_none() {
            report(FaultError::new("abort_status", STATUS_RANGE));
        }
        if self.delay.is_none() && self.abort_status.is_none() {
            report(FaultError::new("", "needs delay or abort_status"));
        }
        // A share left out means all of the requests when its delay or
        // status is set: `abort_status = 503` alone aborts everything.
        let mut bp = |key: &'static str, percent: Option<f64>, set: bool| match percent {
            None if set => 10_000,
            None => 0,
            Some(p) => match Weight::from_percent(p) {
                Ok(w) => w.bp(),
                Err(e) => {
                    report(FaultError::new(key, e));
                    0
                }
            },
        };
        let delay_bp = bp("delay_percent", self.delay_percent, self.delay.is_some());
        let abort_bp = bp("abort_percent", self.abort_percent, self.abort_status.is_some());
        Fault { delay: self.delay, delay_bp, abort_status, abort_bp, duration: self.duration }
    }
}

/// A fault from the admin API's JSON body: `delay` and `duration` as
/// duration strings (`"200ms"`), `delay_percent` and `abort_percent` as
/// numbers, `abort_status` as a whole number; absent or `null` keys are
/// unset. Errors read `"{key}: {reason}"` (just the reason for the fault
/// itself), the first one as the API always reported it.
///
/// No default `duration` is applied: the API's caller adds its own
/// (`fault.duration.get_or_insert(…)`), the config file has none.
pub fn from_json(v: &serde_json::Value) -> Result<Fault, String> {
    let mut errors = Vec::new();
    let spec = FaultSpec {
        delay: read(json_duration(v, "delay"), &mut errors),
        delay_percent: read(json_percent(v, "delay_percent"), &mut errors),
        abort_status: read(json_status(v), &mut errors),
        abort_percent: read(json_percent(v, "abort_percent"), &mut errors),
        duration: read(json_duration(v, "duration"), &mut errors),
    };
    let fault = spec.check(&mut |e| errors.push(e));
    // The API checked key by key in this order and answered the first
    // problem: a type error and a broken rule rank by their key.
    const ORDER: [&str; 6] = ["delay", "abort_status", "", "delay_percent", "abort_percent", "duration"];
    let rank = |e: &FaultError| ORDER.iter().position(|k| *k == e.key).unwrap_or(ORDER.len());
    match errors.into_iter().min_by_key(rank) {
        Some(e) => Err(e.to_string()),
        None => Ok(fault),
    }
}

/// The value read, or `None` with its error kept.
fn read<T>(r: Result<Option<T>, FaultError>, errors: &mut Vec<FaultError>) -> Option<T> {
    r.unwrap_or_else(|e| {
        errors.push(e);
        None
    })
}

fn json_duration(v: &serde_json::Value, key: &'static str) -> Result<Option<Duration>, FaultError> {
    match &v[key] {
        serde_json::Value::Null => Ok(None),
        serde_json::Value::String(s) => parse_duration(s).map(Some).map_err(|e| FaultError::new(key, e)),
        _ => Err(FaultError::new(key, "expected a duration string such as \"200ms\"")),
    }
}

fn json_percent(v: &serde_json::Value, key: &'static str) -> Result<Option<f64>, FaultError> {
    match &v[key] {
        serde_json::Value::Null => Ok(None),
        x => x.as_f64().map(Some).ok_or_else(|| FaultError::new(key, "expected a number")),
    }
}

/// A status that is not a whole number (`503.0`, `"503"`) is refused like
/// one out of range; the range itself is [`FaultSpec::check`]'s rule.
fn json_status(v: &serde_json::Value) -> Result<Option<i64>, FaultError> {
    match &v["abort_status"] {
        serde_json::Value::Null => Ok(None),
        x => x.as_i64().map(Some).ok_or_else(|| FaultError::new("abort_status", STATUS_RANGE)),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::config::{parse, ConfigError};

    /// The fault as the config file reads it, from an inline table's body.
    fn from_toml(body: &str) -> Result<Fault, Vec<ConfigError>> {
        let src = format!(
            "[backends.b]\naddrs = [\"127.0.0.1:1\"]\nfault = {{ {body} }}\n[[routes]]\nname = \"r\"\nstable = \"b\"\n"
        );
        let config = parse(&src).map_err(|e| e.0)?;
        Ok(config.backends["b"].fault.clone().unwrap_or_else(|| panic!("no fault in {src}")))
    }

    fn ms(n: u64) -> Option<Duration> {
        Some(Duration::from_millis(n))
    }

    /// The same faults written both ways, and what both readers make of them.
    fn cases() -> Vec<(&'static str, serde_json::Value, Result<Fault, FaultError>)> {
        let fault = |delay, delay_bp, abort_status, abort_bp, duration| Fault {
            delay,
            delay_bp,
            abort_status,
            abort_bp,
            duration,
        };
        let err = |key, reason: &str| Err(FaultError::new(key, reason));
        vec![
            ("delay = \"200ms\"", json!({ "delay": "200ms" }), Ok(fault(ms(200), 10_000, None, 0, None))),
            (
                "abort_status = 503, abort_percent = 5",
                json!({ "abort_status": 503, "abort_percent": 5 }),
                Ok(fault(None, 0, Some(503), 500, None)),
            ),
            (
                "delay = \"1s\", delay_percent = 12.5, abort_status = 200, abort_percent = 0.25, duration = \"5m\"",
                json!({ "delay": "1s", "delay_percent": 12.5, "abort_status": 200, "abort_percent": 0.25, "duration": "5m" }),
                Ok(fault(ms(1000), 1250, Some(200), 25, ms(300_000))),
            ),
            (
                "delay = \"10ms\", delay_percent = 0, abort_status = 599",
                json!({ "delay": "10ms", "delay_percent": 0, "abort_status": 599 }),
                Ok(fault(ms(10), 0, Some(599), 10_000, None)),
            ),
            // A share without its delay or status is allowed, and shares nothing.
            (
                "abort_status = 500, delay_percent = 50",
                json!({ "abort_status": 500, "delay_percent": 50 }),
                Ok(fault(None, 5000, Some(500), 10_000, None)),
            ),
            ("", json!({}), err("", "needs delay or abort_status")),
            (
                "delay_percent = 10, duration = \"1m\"",
                json!({ "delay_percent": 10, "duration": "1m" }),
                err("", "needs delay or abort_status"),
            ),
            ("abort_status = 700", json!({ "abort_status": 700 }), err("abort_status", STATUS_RANGE)),
            ("abort_status = 199", json!({ "abort_status": 199 }), err("abort_status", STATUS_RANGE)),
            ("abort_status = -503", json!({ "abort_status": -503 }), err("abort_status", STATUS_RANGE)),
            (
                "delay = \"1s\", delay_percent = 101",
                json!({ "delay": "1s", "delay_percent": 101 }),
                err("delay_percent", "101 is not a percentage between 0 and 100"),
            ),
            (
                "abort_status = 503, abort_percent = 0.001",
                json!({ "abort_status": 503, "abort_percent": 0.001 }),
                err("abort_percent", "0.001 has more than two decimals (the resolution is 0.01 %)"),
            ),
        ]
    }

    #[test]
    fn both_readers_accept_and_reject_the_same_faults() {
        for (toml, json, want) in cases() {
            let spec_result = from_json(&json);
            match &want {
                Ok(f) => {
                    assert_eq!(from_toml(toml).as_ref(), Ok(f), "toml {toml}");
                    assert_eq!(spec_result.as_ref(), Ok(f), "json {json}");
                }
                Err(e) => {
                    let path = if e.key.is_empty() {
                        "backends.b.fault".to_string()
                    } else {
                        format!("backends.b.fault.{}", e.key)
                    };
                    let errors = from_toml(toml).err().unwrap_or_default();
                    assert!(
                        errors.iter().any(|c| c.path == path && c.message == e.reason),
                        "toml {toml}: want {path}: {} in {errors:?}",
                        e.reason
                    );
                    assert_eq!(errors.len(), 1, "toml {toml}: {errors:?}");
                    assert_eq!(spec_result, Err(e.to_string()), "json {json}");
                }
            }
        }
    }

    #[test]
    fn validate_reports_the_first_broken_rule() {
        assert_eq!(FaultSpec::default().validate(), Err(FaultError::new("", "needs delay or abort_status")));
        let spec = FaultSpec { abort_status: Some(1000), delay_percent: Some(200.0), ..FaultSpec::default() };
        assert_eq!(spec.validate(), Err(FaultError::new("abort_status", STATUS_RANGE)));
        let spec = FaultSpec { delay: ms(5), duration: ms(60_000), ..FaultSpec::default() };
        assert_eq!(
            spec.validate(),
            Ok(Fault { delay: ms(5), delay_bp: 10_000, abort_status: None, abort_bp: 0, duration: ms(60_000) })
        );
        assert_eq!(FaultError::new("", "x").to_string(), "x");
        assert_eq!(FaultError::new("delay", "x").to_string(), "delay: x");
    }

    #[test]
    fn types_each_reader_refuses() {
        // Durations are strings in both; the messages are each reader's own.
        let e = from_toml("delay = 200").unwrap_err();
        assert!(e
            .iter()
            .any(|c| c.path == "backends.b.fault.delay" && c.message == "expected a string, found integer"));
        assert_eq!(
            from_json(&json!({ "delay": 200 })),
            Err("delay: expected a duration string such as \"200ms\"".into())
        );
        assert!(from_toml("delay = \"5 parsecs\"").is_err());
        assert_eq!(
            from_json(&json!({ "delay": "5 parsecs" })),
            Err("delay: unknown duration unit \"parsecs\" (use ms, s, m or h)".into())
        );
        assert_eq!(
            from_json(&json!({ "abort_status": 503, "duration": true })),
            Err("duration: expected a duration string such as \"200ms\"".into())
        );
        // A status that is not a whole number.
        assert!(from_toml("abort_status = \"503\"").is_err());
        assert!(from_toml("abort_status = 503.0").is_err());
        for status in [json!("503"), json!(503.0), json!(1e20), json!(u64::MAX), json!(true)] {
            assert_eq!(
                from_json(&json!({ "abort_status": status })),
                Err("abort_status: expected a status between 200 and 599".into()),
                "{status}"
            );
        }
        assert!(from_toml("abort_status = 503, abort_percent = \"5\"").is_err());
        assert_eq!(
            from_json(&json!({ "abort_status": 503, "abort_percent": "5" })),
            Err("abort_percent: expected a number".into())
        );
        // Not an object: nothing is set.
        assert_eq!(from_json(&json!(5)), Err("needs delay or abort_status".into()));
        assert_eq!(from_json(&json!({ "delay": null, "abort_status": 503 })).map(|f| f.delay), Ok(None));
    }

    #[test]
    fn json_answers_the_first_problem_in_the_apis_order() {
        // delay, abort_status, the fault itself, delay_percent, abort_percent, duration.
        for (body, want) in [
            (json!({ "delay": 1, "abort_status": 700 }), "delay: expected a duration string such as \"200ms\""),
            (
                json!({ "abort_status": 700, "delay_percent": "x" }),
                "abort_status: expected a status between 200 and 599",
            ),
            (json!({ "abort_status": "x" }), "abort_status: expected a status between 200 and 599"),
            (json!({ "delay_percent": "x" }), "needs delay or abort_status"),
            (json!({ "delay_percent": 200 }), "needs delay or abort_status"),
            (
                json!({ "delay": "1s", "delay_percent": 200, "abort_percent": "x" }),
                "delay_percent: 200 is not a percentage between 0 and 100",
            ),
            (
                json!({ "delay": "1s", "abort_percent": 200, "duration": 5 }),
                "abort_percent: 200 is not a percentage between 0 and 100",
            ),
            (json!({ "delay": "1s", "duration": "soon" }), "duration: \"soon\" does not start with a number"),
        ] {
            assert_eq!(from_json(&body), Err(want.to_string()), "{body}");
        }
    }

    #[test]
    fn json_faults_get_no_default_duration() {
        let f = from_json(&json!({ "abort_status": 503 }));
        assert_eq!(f.map(|f| f.duration), Ok(None));
        let mut f = from_json(&json!({ "abort_status": 503 })).unwrap();
        f.duration.get_or_insert(Duration::from_secs(300));
        assert_eq!(f.duration, Some(Duration::from_secs(300)));
    }

    #[test]
    fn toml_reports_every_problem_at_once() {
        let e = from_toml("delay = 5, delay_percent = 101, abort_status = 700, abort_percent = \"x\"").unwrap_err();
        let got: Vec<(&str, &str)> = e.iter().map(|c| (c.path.as_str(), c.message.as_str())).collect();
        for want in [
            ("backends.b.fault.delay", "expected a string, found integer"),
            ("backends.b.fault.abort_percent", "expected a number, found string"),
            ("backends.b.fault.abort_status", STATUS_RANGE),
            ("backends.b.fault.delay_percent", "101 is not a percentage between 0 and 100"),
        ] {
            assert!(got.contains(&want), "missing {want:?} in {got:?}");
        }
    }
}
