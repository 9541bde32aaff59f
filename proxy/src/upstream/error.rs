//! Upstream failure kinds: one bounded enum, used as the `kind` label in
//! metrics, in logs, and to choose the status in `rescue`.

use std::error::Error as StdError;
use std::io;

/// Why a request could not be served by its upstream.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum UpstreamErrorKind {
    /// TCP connect refused or failed.
    Connect,
    /// TCP connect did not finish within `timeouts.connect`.
    ConnectTimeout,
    /// No response headers within `timeouts.upstream_response`.
    Timeout,
    /// The connection was reset or closed before a complete response.
    Reset,
    /// The upstream sent something that is not valid HTTP.
    Protocol,
    /// The backend has no usable address.
    Unavailable,
}

impl UpstreamErrorKind {
    /// Label value.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            UpstreamErrorKind::Connect => "connect",
            UpstreamErrorKind::ConnectTimeout => "connect_timeout",
            UpstreamErrorKind::Timeout => "timeout",
            UpstreamErrorKind::Reset => "reset",
            UpstreamErrorKind::Protocol => "protocol",
            UpstreamErrorKind::Unavailable => "unavailable",
        }
    }

    /// Classifies an error of the pooled client.
    pub(crate) fn classify(err: &hyper_util::client::legacy::Error) -> Self {
        let io_kind = sources(err).find_map(|e| e.downcast_ref::<io::Error>().map(io::Error::kind));
        if err.is_connect() {
            return match io_kind {
                Some(io::ErrorKind::TimedOut) => UpstreamErrorKind::ConnectTimeout,
                _ => UpstreamErrorKind::Connect,
            };
        }
        if let Some(h) = sources(err).find_map(|e| e.downcast_ref::<hyper::Error>()) {
            if h.is_parse() || h.is_parse_status() {
                return UpstreamErrorKind::Protocol;
            }
            if h.is_timeout() {
                return UpstreamErrorKind::Timeout;
            }
        }
        UpstreamErrorKind::Reset
    }
}

fn sources<'a>(
    err: &'a (dyn StdError + 'static),
) -> impl Iterator<Item = &'a (dyn StdError + 'static)> {
    std::iter::successors(Some(err), |e: &&'a (dyn StdError + 'static)| (*e).source())
}
