//! gRPC on the request path: telling a gRPC call from other HTTP, judging
//! its outcome by `grpc-status` (see [`classify`]), and weir's own errors
//! written as gRPC statuses, which a gRPC client can read (an HTTP error
//! page it cannot).

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Response, StatusCode};
use weir_control::classify::{grpc, grpc_code_of_http, parse_grpc_status, Classifier, GrpcFailures};
use weir_control::sample::CodeClass;

use super::error::ProxyError;
use crate::telemetry::Recorded;
use crate::upstream::body::FromUpstream;
use crate::upstream::UpstreamErrorKind;

pub(crate) static GRPC_STATUS: HeaderName = HeaderName::from_static("grpc-status");
static GRPC_MESSAGE: HeaderName = HeaderName::from_static("grpc-message");
static APPLICATION_GRPC: HeaderValue = HeaderValue::from_static("application/grpc");

/// Whether a request is a gRPC call: `content-type: application/grpc`,
/// alone or with a `+format` or parameters. gRPC-Web (`application/grpc-web`)
/// is not: its status travels in the body.
pub(crate) fn is_grpc(headers: &HeaderMap) -> bool {
    content_type_is(headers, b"application/grpc")
}

/// Whether a request is a gRPC-Web call (`application/grpc-web` or
/// `application/grpc-web-text`, alone or with a `+format` or parameters).
pub(crate) fn is_grpc_web(headers: &HeaderMap) -> bool {
    content_type_is(headers, b"application/grpc-web") || content_type_is(headers, b"application/grpc-web-text")
}

/// Whether the media type is `media`, alone or with a `+format` suffix or
/// parameters (ASCII case-insensitive).
fn content_type_is(headers: &HeaderMap, media: &[u8]) -> bool {
    let Some(ct) = headers.get(header::CONTENT_TYPE) else { return false };
    let ct = ct.as_bytes();
    ct.len() >= media.len()
        && ct[..media.len()].eq_ignore_ascii_case(media)
        && matches!(ct.get(media.len()), None | Some(b'+' | b';'))
}

/// The `grpc-status` of a header or trailer block, if it has one.
pub(crate) fn status_in(headers: &HeaderMap) -> Option<u8> {
    headers.get(&GRPC_STATUS).map(|v| parse_grpc_status(v.as_bytes()))
}

/// The gRPC code weir answers for its own failure.
pub(crate) fn code_of(err: ProxyError) -> u8 {
    match err {
        ProxyError::Upstream(UpstreamErrorKind::Timeout) | ProxyError::BodyTimeout => grpc::DEADLINE_EXCEEDED,
        ProxyError::Upstream(_) | ProxyError::Overloaded => grpc::UNAVAILABLE,
        ProxyError::NoRoute => grpc::UNIMPLEMENTED,
        ProxyError::BadRequest(_) => grpc::INTERNAL,
        ProxyError::Injected(status) => grpc_code_of_http(status),
    }
}

/// weir's own failure as a gRPC answer: HTTP 200, a trailers-only response
/// (headers with END_STREAM) carrying `grpc-status` and `grpc-message`.
pub(crate) fn error_response<B>(err: ProxyError, body: B) -> Response<B> {
    let mut resp = Response::new(body);
    *resp.status_mut() = StatusCode::OK;
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, APPLICATION_GRPC.clone());
    h.insert(GRPC_STATUS.clone(), HeaderValue::from(u16::from(code_of(err))));
    // The messages are fixed printable ASCII without '%': valid as they are.
    if let Ok(m) = HeaderValue::from_str(err.message().trim_end()) {
        h.insert(GRPC_MESSAGE.clone(), m);
    }
    resp
}

/// The outcome of a finished request as the route's classifier sees it,
/// and, for a gRPC call whose status is still to come in the trailers,
/// which codes will fail it.
pub(crate) fn classify(
    result: &Result<Response<FromUpstream>, ProxyError>,
    is_grpc: bool,
    c: &Classifier,
) -> (Recorded, Option<GrpcFailures>) {
    let (status, error) = match result {
        Ok(resp) => (resp.status(), None),
        Err(ProxyError::Upstream(k)) => {
            let grpc = is_grpc.then(|| code_of(ProxyError::Upstream(*k)));
            return (Recorded { class: CodeClass::Error, error: Some(*k), failed: true, grpc }, None);
        }
        Err(e) => (e.status(), Some(*e)),
    };
    let class = CodeClass::of_status(status.as_u16());
    // weir's 400 and 408 are the client's doing, whatever the classifier
    // says of those statuses.
    let clients = matches!(error, Some(ProxyError::BadRequest(_) | ProxyError::BodyTimeout));
    let failed = !clients && c.http_failed(status.as_u16());
    let by_status = Recorded { class, error: None, failed, grpc: None };
    if !is_grpc {
        return (by_status, None);
    }
    match (error, result) {
        // weir's own answer: the code it wrote.
        (Some(e), _) => (Recorded { grpc: Some(code_of(e)), ..by_status }, None),
        (None, Ok(resp)) if status == StatusCode::OK => match status_in(resp.headers()) {
            // A trailers-only response.
            Some(code) => (Recorded { failed: c.grpc_failed(code), grpc: Some(code), ..by_status }, None),
            None => (Recorded { failed: false, ..by_status }, Some(c.grpc)),
        },
        // Not 200: the client reads the status as a code; the classifier
        // judges the status.
        _ => (Recorded { grpc: Some(grpc_code_of_http(status.as_u16())), ..by_status }, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(ct: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::CONTENT_TYPE, HeaderValue::from_str(ct).unwrap());
        h
    }

    #[test]
    fn grpc_by_content_type() {
        for (ct, yes) in [
            ("application/grpc", true),
            ("application/grpc+proto", true),
            ("Application/GRPC;charset=utf-8", true),
            ("application/grpc-web", false),
            ("application/grpc-web+proto", false),
            ("application/json", false),
        ] {
            assert_eq!(is_grpc(&headers(ct)), yes, "{ct}");
        }
        assert!(!is_grpc(&HeaderMap::new()));
    }

    #[test]
    fn grpc_web_by_content_type() {
        for (ct, yes) in [
            ("application/grpc-web", true),
            ("application/grpc-web+proto", true),
            ("application/grpc-web-text", true),
            ("Application/gRPC-Web-Text+proto; charset=utf-8", true),
            ("application/grpc", false),
            ("application/grpc+proto", false),
            ("application/grpc-webx", false),
            ("application/grpc-web-textual", false),
        ] {
            assert_eq!(is_grpc_web(&headers(ct)), yes, "{ct}");
        }
        assert!(!is_grpc_web(&HeaderMap::new()));
    }

    #[test]
    fn weirs_own_errors_are_grpc_codes() {
        let resp = error_response(ProxyError::Upstream(UpstreamErrorKind::Connect), ());
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.headers()["grpc-status"], "14");
        assert_eq!(resp.headers()["grpc-message"], "weir: upstream connect failed");
        assert_eq!(code_of(ProxyError::Upstream(UpstreamErrorKind::Timeout)), 4);
        assert_eq!(code_of(ProxyError::Injected(503)), 14);
        assert_eq!(code_of(ProxyError::NoRoute), 12);
    }

    #[test]
    fn classification_of_upstream_errors_and_weirs_answers() {
        let c = Classifier::default();
        let (r, wait) = classify(&Err(ProxyError::Upstream(UpstreamErrorKind::Reset)), true, &c);
        assert_eq!((r.failed, r.grpc, wait), (true, Some(14), None));
        let (r, _) = classify(&Err(ProxyError::Injected(503)), true, &c);
        assert_eq!((r.class, r.failed, r.grpc), (CodeClass::ServerError, true, Some(14)));
        let (r, _) = classify(&Err(ProxyError::Injected(404)), false, &c);
        assert_eq!((r.failed, r.grpc), (false, None));
        let mut all_4xx = Classifier::none();
        all_4xx.add_http_range(400, 499);
        let (r, _) = classify(&Err(ProxyError::BodyTimeout), false, &all_4xx);
        assert!(!r.failed, "a client that stops sending is not the backend's failure");
    }
}
