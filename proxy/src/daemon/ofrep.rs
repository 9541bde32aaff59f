//! The OFREP listener (OpenFeature Remote Evaluation Protocol, `[ofrep]`):
//! an application asks which release a user is on, and gets the side the
//! proxy would route that user's request to at this instant, decided by
//! the same code (`Route::assign`: force key, cohort, sticky bucket against
//! the live weight). A flag is a route; its key is the route's name; its
//! value and variant are `"stable"` or `"canary"`.
//!
//! | endpoint | |
//! | --- | --- |
//! | `POST /ofrep/v1/evaluate/flags/{route}` | one flag |
//! | `POST /ofrep/v1/evaluate/flags` | every route (`ETag`, `If-None-Match` → 304) |
//!
//! The request body is `{"context": {"targetingKey": KEY, ATTR: VALUE...}}`.
//! `targetingKey` is the value of the route's sticky key (the header or
//! cookie the proxy reads); an attribute named like the route's force or
//! cohort key (a header name in any case, or a cookie name) stands for
//! that header or cookie.
//!
//! With `ofrep.token_file`, every call needs `Authorization: Bearer TOKEN`
//! (401 otherwise).

use std::sync::Arc;

use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioExecutor;
use hyper_util::server::conn::auto;
use serde_json::{json, Map, Value};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_util::task::TaskTracker;
use weir_control::split::{Side, Weight};

use super::admin::auth::bearer;
use super::admin::reply::{json as reply, json_text as reply_text};
use super::admin::serve_http;
use super::context::Daemon;
use crate::route::select::{Keys, Why};
use crate::route::{Key, Route};
use crate::server::listener::accept;

const FLAGS: &str = "/ofrep/v1/evaluate/flags";

/// Largest request body (an evaluation context).
const MAX_BODY: usize = 64 * 1024;

/// Serves the OFREP listener until shutdown.
pub(crate) async fn serve(
    daemon: Arc<Daemon>,
    listener: TcpListener,
    mut shutdown: watch::Receiver<bool>,
    tracker: TaskTracker,
) {
    let builder = Arc::new(auto::Builder::new(TokioExecutor::new()));
    loop {
        let (stream, _peer) = tokio::select! {
            _ = shutdown.changed() => return,
            pair = accept(&listener, "ofrep") => pair,
        };
        let (daemon, builder, shutdown) = (daemon.clone(), builder.clone(), shutdown.clone());
        tracker.spawn(async move {
            serve_http(&builder, stream, shutdown, move |req| {
                let daemon = daemon.clone();
                async move { handle(&daemon, req).await }
            })
            .await;
        });
    }
}

/// An error outside the protocol's flag errors: `{"errorDetails": ...}`.
fn failure(status: StatusCode, details: &str) -> Response<Full<Bytes>> {
    reply(status, &json!({ "errorDetails": details }))
}

async fn handle(daemon: &Daemon, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let path = req.uri().path().to_string();
    let key = match path.strip_prefix(FLAGS) {
        Some("") => None,
        Some(rest) => match rest.strip_prefix('/') {
            Some(key) if !key.is_empty() && !key.contains('/') => Some(key.to_string()),
            _ => return failure(StatusCode::NOT_FOUND, "no such OFREP endpoint"),
        },
        None => return failure(StatusCode::NOT_FOUND, "no such OFREP endpoint"),
    };
    if req.method() != Method::POST {
        let mut r = failure(StatusCode::METHOD_NOT_ALLOWED, "use POST");
        r.headers_mut().insert(header::ALLOW, HeaderValue::from_static("POST"));
        return r;
    }
    if let Err(why) = bearer(daemon.ofrep_token.load().as_deref().map(|t| t.as_str()), req.headers()) {
        let mut r = failure(StatusCode::UNAUTHORIZED, why);
        r.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        return r;
    }
    let if_none_match = req.headers().get(header::IF_NONE_MATCH).cloned();
    let body = match http_body_util::Limited::new(req.into_body(), MAX_BODY).collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => return failure(StatusCode::PAYLOAD_TOO_LARGE, "body too large or unreadable"),
    };
    let context = match Context::parse(&body) {
        Ok(c) => c,
        Err((code, why)) => {
            let mut body = json!({ "errorCode": code, "errorDetails": why });
            if let Some(key) = &key {
                body["key"] = key.as_str().into();
            }
            return reply(StatusCode::BAD_REQUEST, &body);
        }
    };
    let snap = daemon.dp.load();
    let routes = snap.routes.routes();
    match key {
        Some(key) => {
            let Some(route) = routes.iter().find(|r| *r.name == *key) else {
                let body = json!({ "key": key, "errorCode": "FLAG_NOT_FOUND", "errorDetails": format!("no route named \"{key}\"") });
                return reply(StatusCode::NOT_FOUND, &body);
            };
            let (status, body) = evaluate(route, &context, &snap.config);
            reply(status, &body)
        }
        None => {
            let flags: Vec<Value> = routes.iter().map(|r| evaluate(r, &context, &snap.config).1).collect();
            let text = json!({ "flags": flags }).to_string();
            let etag = format!("\"{:016x}\"", fnv64(text.as_bytes()));
            let mut r = if if_none_match.is_some_and(|v| v.as_bytes() == etag.as_bytes()) {
                let mut r = Response::new(Full::new(Bytes::new()));
                *r.status_mut() = StatusCode::NOT_MODIFIED;
                r
            } else {
                reply_text(StatusCode::OK, text)
            };
            if let Ok(v) = HeaderValue::from_str(&etag) {
                r.headers_mut().insert(header::ETAG, v);
            }
            r
        }
    }
}

/// One flag: the side, or why the proxy's own choice cannot be told (the
/// request would take the route's keyless sequence).
fn evaluate(route: &Route, ctx: &Context, cfg: &weir_control::config::Config) -> (StatusCode, Value) {
    let key = &*route.name;
    let assigned = match route.assign(&ForRoute { ctx, sticky: route.sticky.as_ref() }) {
        Ok((side, why)) => Ok((
            side,
            match why {
                Why::NoCanary | Why::NoWeight => "STATIC",
                Why::Forced | Why::Cohort => "TARGETING_MATCH",
                Why::Sticky => "SPLIT",
            },
        )),
        // Every keyless request goes to the canary at 100 %.
        Err(weight) if weight == Weight::FULL => Ok((Side::Canary, "STATIC")),
        Err(weight) => Err(weight),
    };
    match assigned {
        Ok((side, reason)) => {
            let backend = match side {
                Side::Stable => Some(&route.stable),
                Side::Canary => route.canary.as_ref(),
            };
            let mut metadata = Map::new();
            metadata.insert("weight".into(), json!(route.state.weight().percent()));
            if let Some(b) = backend {
                metadata.insert("backend".into(), json!(&*b.name));
                if let Some(v) = cfg.version_of(&b.name) {
                    metadata.insert("version".into(), json!(v));
                }
            }
            let side = side.as_str();
            (
                StatusCode::OK,
                json!({ "key": key, "value": side, "variant": side, "reason": reason, "metadata": metadata }),
            )
        }
        Err(_) if route.sticky.is_none() => (
            StatusCode::BAD_REQUEST,
            json!({
                "key": key,
                "errorCode": "GENERAL",
                "errorDetails": format!(
                    "route \"{key}\" has no sticky key: the proxy splits its requests one by one, not by user"
                ),
            }),
        ),
        Err(_) => (
            StatusCode::BAD_REQUEST,
            json!({
                "key": key,
                "errorCode": "TARGETING_KEY_MISSING",
                "errorDetails": "the context has no targetingKey (the value of the route's sticky key): \
                                 the proxy would split such a request by its place in the sequence",
            }),
        ),
    }
}

/// An evaluation context: its targeting key, and the attributes whose
/// values are strings, numbers or booleans (as text).
#[derive(Debug, Default)]
pub(crate) struct Context {
    targeting_key: Option<String>,
    attributes: Vec<(String, String)>,
}

impl Context {
    /// Reads `{"context": {...}}`; an empty body is an empty context.
    /// The error is an OFREP error code and details.
    fn parse(body: &[u8]) -> Result<Context, (&'static str, String)> {
        if body.iter().all(u8::is_ascii_whitespace) {
            return Ok(Context::default());
        }
        let v: Value =
            serde_json::from_slice(body).map_err(|e| ("PARSE_ERROR", format!("the body is not JSON: {e}")))?;
        let Value::Object(mut top) = v else {
            return Err(("PARSE_ERROR", "the body is not a JSON object".into()));
        };
        let attrs = match top.remove("context") {
            None | Some(Value::Null) => return Ok(Context::default()),
            Some(Value::Object(attrs)) => attrs,
            Some(_) => return Err(("INVALID_CONTEXT", "\"context\" is not an object".into())),
        };
        let mut ctx = Context::default();
        for (name, value) in attrs {
            let text = match value {
                // As an HTTP field value or a cookie's: without the
                // whitespace around it.
                Value::String(s) => s.trim().to_string(),
                Value::Number(n) => n.to_string(),
                Value::Bool(b) => b.to_string(),
                _ => continue,
            };
            if name == "targetingKey" {
                ctx.targeting_key = Some(text).filter(|t| !t.is_empty());
            } else {
                ctx.attributes.push((name, text));
            }
        }
        Ok(ctx)
    }
}

impl Context {
    /// A header key reads the attribute of that name in any case, a cookie
    /// key the attribute of exactly that name.
    fn attribute(&self, key: &Key) -> Option<&[u8]> {
        let found = self.attributes.iter().find(|(name, _)| match key {
            Key::Header(h) => name.eq_ignore_ascii_case(h.as_str()),
            Key::Cookie(c) => name == &**c,
        });
        found.map(|(_, v)| v.as_bytes()).filter(|v| !v.is_empty())
    }
}

/// A context as one route reads it: its sticky key is the `targetingKey`
/// (or, without one, the attribute of that name), wherever the route reads
/// it: a force or cohort key may be the sticky header too.
struct ForRoute<'a> {
    ctx: &'a Context,
    sticky: Option<&'a Key>,
}

impl Keys for ForRoute<'_> {
    fn value(&self, key: &Key) -> Option<&[u8]> {
        match &self.ctx.targeting_key {
            Some(t) if self.sticky == Some(key) => Some(t.as_bytes()),
            _ => self.ctx.attribute(key),
        }
    }
}

/// FNV-1a 64: the bulk answer's ETag.
fn fnv64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contexts() {
        let c = Context::parse(
            br#"{"context": {"targetingKey": "u1", "X-Canary": " always ", "n": 42, "b": true, "o": {}, "uid": "u2"}}"#,
        )
        .unwrap();
        assert_eq!(c.targeting_key.as_deref(), Some("u1"));
        let header = Key::Header(http::HeaderName::from_static("x-canary"));
        assert_eq!(c.attribute(&header), Some(&b"always"[..]));
        assert_eq!(c.attribute(&Key::Cookie("n".into())), Some(&b"42"[..]));
        assert_eq!(c.attribute(&Key::Cookie("N".into())), None);
        assert_eq!(c.attribute(&Key::Cookie("b".into())), Some(&b"true"[..]));
        assert_eq!(c.attribute(&Key::Cookie("o".into())), None);
        // The sticky key reads targetingKey, wherever the route uses it.
        let uid = Key::Cookie("uid".into());
        let route = ForRoute { ctx: &c, sticky: Some(&uid) };
        assert_eq!(route.value(&uid), Some(&b"u1"[..]));
        assert_eq!(route.sticky(&uid), Some(&b"u1"[..]));
        assert_eq!(route.value(&header), Some(&b"always"[..]));
        // Without a targetingKey, the attribute of the sticky key's name.
        let c = Context::parse(br#"{"context": {"uid": "u2"}}"#).unwrap();
        assert_eq!(ForRoute { ctx: &c, sticky: Some(&uid) }.sticky(&uid), Some(&b"u2"[..]));
        assert!(Context::parse(b"").unwrap().targeting_key.is_none());
        assert!(Context::parse(b"{}").unwrap().targeting_key.is_none());
        assert_eq!(Context::parse(b"{").unwrap_err().0, "PARSE_ERROR");
        assert_eq!(Context::parse(b"[]").unwrap_err().0, "PARSE_ERROR");
        assert_eq!(Context::parse(br#"{"context": 1}"#).unwrap_err().0, "INVALID_CONTEXT");
    }
}
