//! The proxy's error type: why a request was not proxied, and the status
//! and message each reason gets (see `rescue.rs` for the response).

use http::StatusCode;

use crate::upstream::body::ClientFault;
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
    /// Its name in the access log and in spans (`connect`, `no_route`...).
    pub(crate) fn kind(self) -> &'static str {
        match self {
            ProxyError::Upstream(k) => k.as_str(),
            ProxyError::BadRequest(_) => "bad_request",
            ProxyError::NoRoute => "no_route",
            ProxyError::Injected(_) => "injected",
            ProxyError::BodyTimeout => "body_timeout",
            ProxyError::Overloaded => "overloaded",
        }
    }

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
                | UpstreamErrorKind::Refused
                | UpstreamErrorKind::Protocol
                | UpstreamErrorKind::Tls => StatusCode::BAD_GATEWAY,
                UpstreamErrorKind::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
                UpstreamErrorKind::ConnectTimeout | UpstreamErrorKind::Timeout => StatusCode::GATEWAY_TIMEOUT,
            },
        }
    }

    pub(super) fn message(self) -> &'static str {
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
                UpstreamErrorKind::Refused => "weir: upstream refused the request (not processed)\n",
                UpstreamErrorKind::Protocol => "weir: invalid upstream response\n",
                UpstreamErrorKind::Unavailable => "weir: no upstream address available\n",
                UpstreamErrorKind::Tls => "weir: upstream TLS handshake failed\n",
            },
        }
    }
}

impl From<ClientFault> for ProxyError {
    fn from(f: ClientFault) -> Self {
        match f {
            ClientFault::BodyTimeout => ProxyError::BodyTimeout,
            ClientFault::BadBody(why) => ProxyError::BadRequest(why),
        }
    }
}
