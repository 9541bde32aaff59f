//! The one place where a failure becomes an HTTP response.
//!
//! | failure | status |
//! | --- | --- |
//! | malformed request framing | 400, connection closed |
//! | no route matches | 404 |
//! | upstream connect refused, reset, invalid response | 502 |
//! | backend without a usable address | 503 |
//! | connect or response-header timeout | 504 |
//!
//! A gRPC caller gets the same failure as a gRPC status instead (HTTP 200,
//! `grpc-status` and `grpc-message` in a trailers-only response: see
//! `grpc.rs`).

use bytes::Bytes;
use http::{header, HeaderValue, Response};

use super::error::ProxyError;
use super::grpc;
use super::request::RequestGuard;
use super::response::ResponseBody;

/// Builds the response for `err`; for a gRPC call, a gRPC status (see
/// `grpc.rs`) with the same message.
pub(crate) fn rescue(err: ProxyError, guard: RequestGuard, is_grpc: bool) -> Response<ResponseBody> {
    if is_grpc {
        let mut resp = grpc::error_response(err, ResponseBody::full(Bytes::new(), guard));
        if matches!(err, ProxyError::BadRequest(_) | ProxyError::BodyTimeout) {
            resp.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        return resp;
    }
    let mut resp = Response::new(ResponseBody::full(Bytes::from_static(err.message().as_bytes()), guard));
    *resp.status_mut() = err.status();
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    match err {
        // The request (or its body) cannot be trusted to end where hyper
        // thinks: do not read another request from this connection.
        ProxyError::BadRequest(_) | ProxyError::BodyTimeout => {
            h.insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        ProxyError::Overloaded => {
            h.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        _ => {}
    }
    resp
}
