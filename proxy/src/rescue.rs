//! The one place where a failure becomes an HTTP response.
//!
//! | failure | status |
//! | --- | --- |
//! | malformed request framing | 400, connection closed |
//! | no route matches | 404 |
//! | upstream connect refused, reset, invalid response | 502 |
//! | backend without a usable address | 503 |
//! | connect or response-header timeout | 504 |

use bytes::Bytes;
use http::{header, HeaderValue, Response, StatusCode};

use crate::body::ResponseBody;
use crate::server::RequestGuard;
use crate::upstream::UpstreamErrorKind;

/// Why a request was not proxied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ProxyError {
    /// The request itself is malformed; the connection must close.
    BadRequest(&'static str),
    /// No route matches host and path.
    NoRoute,
    /// The upstream failed.
    Upstream(UpstreamErrorKind),
    /// Fault injection answered instead of the upstream.
    Injected(u16),
    /// The client stopped sending its request body for `timeouts.body_read`.
    BodyTimeout,
    /// `limits.max_requests_in_flight` reached.
    Overloaded,
}

impl ProxyError {
    pub(crate) fn status(self) -> StatusCode {
        match self {
            ProxyError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ProxyError::BodyTimeout => StatusCode::REQUEST_TIMEOUT,
            ProxyError::Overloaded => StatusCode::SERVICE_UNAVAILABLE,
            ProxyError::NoRoute => StatusCode::NOT_FOUND,
            ProxyError::Injected(code) => StatusCode::from_u16(code).unwrap_or(StatusCode::SERVICE_UNAVAILABLE),
            ProxyError::Upstream(k) => match k {
                UpstreamErrorKind::Connect
                | UpstreamErrorKind::Reset
                | UpstreamErrorKind::Protocol
                | UpstreamErrorKind::Tls => StatusCode::BAD_GATEWAY,
                UpstreamErrorKind::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
                UpstreamErrorKind::ConnectTimeout | UpstreamErrorKind::Timeout => StatusCode::GATEWAY_TIMEOUT,
            },
        }
    }

    fn message(self) -> &'static str {
        match self {
            ProxyError::BadRequest(why) => why,
            ProxyError::NoRoute => "weir: no route for this host and path\n",
            ProxyError::BodyTimeout => "weir: request body not received in time\n",
            ProxyError::Overloaded => "weir: too many requests in flight, retry later\n",
            ProxyError::Injected(_) => "weir: injected fault\n",
            ProxyError::Upstream(k) => match k {
                UpstreamErrorKind::Connect => "weir: upstream connect failed\n",
                UpstreamErrorKind::ConnectTimeout => "weir: upstream connect timed out\n",
                UpstreamErrorKind::Timeout => "weir: upstream response timed out\n",
                UpstreamErrorKind::Reset => "weir: upstream connection reset\n",
                UpstreamErrorKind::Protocol => "weir: invalid upstream response\n",
                UpstreamErrorKind::Unavailable => "weir: no upstream address available\n",
                UpstreamErrorKind::Tls => "weir: upstream TLS handshake failed\n",
            },
        }
    }
}

/// Builds the response for `err`.
pub(crate) fn rescue(err: ProxyError, guard: RequestGuard) -> Response<ResponseBody> {
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
