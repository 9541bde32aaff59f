//! Outside signals: what a `promql` gate reads from Prometheus.
//!
//! The proxy sends the queries (off the tick loop, see
//! `proxy::daemon::promql`); this module owns the pure parts: the query
//! template and its variables, the reading of Prometheus's answer, and the
//! [`Signal`] the engine judges. A reading that is missing, empty, NaN,
//! an error, a timeout, stale, or taken for another stage's window is
//! **inconclusive**, never a pass: the absence of an outside signal is no
//! evidence that the canary is healthy.
//!
//! Template variables, written `{{name}}`:
//!
//! | variable | value |
//! | --- | --- |
//! | `route` | the route's name |
//! | `version` | the version label of the side queried (the canary's; stable's for the stable query of a relative limit) |
//! | `backend` | the backend name of the side queried |
//! | `canary_version`, `stable_version` | each side's version label |
//! | `canary_backend`, `stable_backend` | each side's backend name |
//! | `window` | the stage's window so far, as a PromQL duration (`95s`) |

use serde_json::Value;

/// The template variables a query may use.
pub const VARIABLES: [&str; 8] =
    ["route", "version", "backend", "canary_version", "stable_version", "canary_backend", "stable_backend", "window"];

/// The variables of one query.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Vars<'a> {
    /// Route name.
    pub route: &'a str,
    /// The side queried: canary (`false`) or stable (`true`).
    pub stable_side: bool,
    /// Canary backend name and version label.
    pub canary: (&'a str, Option<&'a str>),
    /// Stable backend name and version label.
    pub stable: (&'a str, Option<&'a str>),
    /// Seconds of the stage's window so far (at least 1 is rendered).
    pub window_secs: u64,
}

impl Vars<'_> {
    fn get(&self, name: &str) -> Option<String> {
        let side = if self.stable_side { self.stable } else { self.canary };
        Some(match name {
            "route" => self.route.to_string(),
            "version" => side.1?.to_string(),
            "backend" => side.0.to_string(),
            "canary_version" => self.canary.1?.to_string(),
            "stable_version" => self.stable.1?.to_string(),
            "canary_backend" => self.canary.0.to_string(),
            "stable_backend" => self.stable.0.to_string(),
            "window" => format!("{}s", self.window_secs.max(1)),
            _ => return None,
        })
    }
}

/// The `{{name}}` variables `template` uses, in order (repeats kept).
pub fn variables(template: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut rest = template;
    while let Some(i) = rest.find("{{") {
        let after = &rest[i + 2..];
        match after.find("}}") {
            Some(j) if is_ident(&after[..j]) => {
                out.push(&after[..j]);
                rest = &after[j + 2..];
            }
            _ => rest = &rest[i + 1..],
        }
    }
    out
}

fn is_ident(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// `template` with its variables replaced; `Err(name)` for a variable
/// with no value (unknown, or a version label the backend does not have).
pub fn render(template: &str, vars: &Vars<'_>) -> Result<String, String> {
    let mut out = String::with_capacity(template.len() + 32);
    let mut rest = template;
    while let Some(i) = rest.find("{{") {
        let after = &rest[i + 2..];
        match after.find("}}") {
            Some(j) if is_ident(&after[..j]) => {
                let name = &after[..j];
                out.push_str(&rest[..i]);
                out.push_str(&vars.get(name).ok_or_else(|| name.to_string())?);
                rest = &after[j + 2..];
            }
            _ => {
                out.push_str(&rest[..i + 1]);
                rest = &rest[i + 1..];
            }
        }
    }
    out.push_str(rest);
    Ok(out)
}

/// The value of Prometheus's answer to an instant query (`/api/v1/query`):
/// a scalar, or a vector of exactly one series. An error answer, an empty
/// vector, several series, a value that is not a finite number: `Err`
/// with the reason (the gate is inconclusive).
pub fn parse_answer(body: &[u8]) -> Result<f64, String> {
    let v: Value = serde_json::from_slice(body).map_err(|e| format!("not a Prometheus answer: {e}"))?;
    if v.get("status").and_then(Value::as_str) != Some("success") {
        let kind = v.get("errorType").and_then(Value::as_str).unwrap_or("error");
        let msg = v.get("error").and_then(Value::as_str).unwrap_or("no message");
        return Err(format!("Prometheus answered {kind}: {msg}"));
    }
    let data = v.get("data").ok_or("no data in the answer")?;
    let sample = match data.get("resultType").and_then(Value::as_str) {
        Some("scalar") => data.get("result"),
        Some("vector") => {
            let list = data.get("result").and_then(Value::as_array).ok_or("no result in the answer")?;
            match list.len() {
                0 => return Err("empty result (no series matched)".into()),
                1 => list[0].get("value"),
                n => return Err(format!("{n} series: aggregate the query to one (sum, max, ...)")),
            }
        }
        Some(other) => return Err(format!("a {other} result: the query must give a scalar or one series")),
        None => return Err("no resultType in the answer".into()),
    };
    let text = sample.and_then(Value::as_array).and_then(|p| p.get(1)).and_then(Value::as_str).ok_or("no value")?;
    match text.parse::<f64>() {
        Ok(x) if x.is_finite() => Ok(x),
        Ok(_) => Err(format!("{text}: not a finite number")),
        Err(_) => Err(format!("\"{text}\" is not a number")),
    }
}

/// One reading of a `promql` gate, as the engine receives it.
#[derive(Clone, Debug, PartialEq)]
pub struct Signal {
    /// The gate's name.
    pub gate: String,
    /// The window it was queried for ([`crate::rollout::Engine::window_start_ms`]):
    /// a reading of another window (the stage moved on) is not used.
    pub window_start_ms: u64,
    /// When the answers came (engine clock, ms).
    pub at_ms: u64,
    /// Not used after this (engine clock, ms): stale.
    pub fresh_until_ms: u64,
    /// The canary's query as sent.
    pub query: String,
    /// The canary's value, or why there is none.
    pub canary: Result<f64, String>,
    /// Stable's value for a relative limit, or why there is none.
    pub stable: Option<Result<f64, String>>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(stable_side: bool) -> Vars<'static> {
        Vars { route: "web", stable_side, canary: ("c", Some("v2")), stable: ("s", Some("v1")), window_secs: 95 }
    }

    #[test]
    fn templates_render_each_side_and_keep_promql_braces() {
        let t = r#"sum(rate(checkout_failed{version="{{version}}",route="{{route}}"}[{{window}}])) / {{x"#;
        assert_eq!(
            render(t, &vars(false)).unwrap(),
            r#"sum(rate(checkout_failed{version="v2",route="web"}[95s])) / {{x"#
        );
        assert!(render(t, &vars(true)).unwrap().contains(r#"version="v1""#));
        assert_eq!(variables(t), ["version", "route", "window"]);
        assert_eq!(render("a{{nope}}", &vars(false)), Err("nope".into()));
        let unlabeled = Vars { canary: ("c", None), ..vars(false) };
        assert_eq!(render("{{version}}", &unlabeled), Err("version".into()));
        assert_eq!(render("{{backend}}/{{stable_backend}}", &vars(false)).unwrap(), "c/s");
        assert_eq!(render("[{{window}}]", &Vars { window_secs: 0, ..vars(false) }).unwrap(), "[1s]");
    }

    #[test]
    fn answers_are_read_strictly() {
        let vector = |r: &str| format!(r#"{{"status":"success","data":{{"resultType":"vector","result":[{r}]}}}}"#);
        assert_eq!(parse_answer(vector(r#"{"metric":{},"value":[1.5,"0.25"]}"#).as_bytes()), Ok(0.25));
        assert!(parse_answer(vector("").as_bytes()).unwrap_err().contains("empty"));
        let two = vector(r#"{"metric":{"a":"1"},"value":[1,"1"]},{"metric":{"a":"2"},"value":[1,"2"]}"#);
        assert!(parse_answer(two.as_bytes()).unwrap_err().contains("2 series"));
        assert!(parse_answer(vector(r#"{"metric":{},"value":[1,"NaN"]}"#).as_bytes()).is_err());
        assert!(parse_answer(vector(r#"{"metric":{},"value":[1,"+Inf"]}"#).as_bytes()).is_err());
        let scalar = br#"{"status":"success","data":{"resultType":"scalar","result":[1,"3"]}}"#;
        assert_eq!(parse_answer(scalar), Ok(3.0));
        let err = br#"{"status":"error","errorType":"bad_data","error":"parse error at char 3"}"#;
        assert_eq!(parse_answer(err), Err("Prometheus answered bad_data: parse error at char 3".into()));
        let matrix = br#"{"status":"success","data":{"resultType":"matrix","result":[]}}"#;
        assert!(parse_answer(matrix).is_err());
        assert!(parse_answer(b"<html>").is_err());
    }
}
