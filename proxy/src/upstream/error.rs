//! Upstream failure kinds: one bounded enum, used as the `kind` label in
//! metrics, in logs, and to choose the status (`server/error.rs`).

use std::error::Error as StdError;
use std::io;

pub(crate) use weir_control::sample::UpstreamErrorKind;

/// Classifies an error of the pooled client.
pub(crate) fn classify(err: &hyper_util::client::legacy::Error) -> UpstreamErrorKind {
    let io_kind = sources(err).find_map(|e| e.downcast_ref::<io::Error>().map(io::Error::kind));
    if chain_has::<rustls::Error>(err) {
        return UpstreamErrorKind::Tls;
    }
    if err.is_connect() {
        return match io_kind {
            Some(io::ErrorKind::TimedOut) => UpstreamErrorKind::ConnectTimeout,
            _ => UpstreamErrorKind::Connect,
        };
    }
    if refusal(err).is_some() {
        return UpstreamErrorKind::Refused;
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

/// How an HTTP/2 upstream refused a stream (RFC 9113 §8.7).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// It reset the stream with `REFUSED_STREAM`: not processed.
    Stream,
    /// A graceful GOAWAY (`NO_ERROR`) ended it: h2 fails the streams above
    /// the GOAWAY's last stream id, and requests sent after the GOAWAY
    /// (never sent). One more case reads the same: a stream hyper opened
    /// in the instant the GOAWAY was read fails at its next readiness
    /// check although its HEADERS may have left; its body has not. A
    /// GOAWAY with an error code may also end processed streams, so only
    /// `NO_ERROR` counts.
    GoAway,
}

/// Whether, and how, the upstream refused the stream of `err`.
pub(crate) fn refusal(err: &(dyn StdError + 'static)) -> Option<Refusal> {
    sources(err).filter_map(|e| e.downcast_ref::<h2::Error>()).find_map(|e| {
        if !e.is_remote() {
            return None;
        }
        match e.reason() {
            Some(h2::Reason::REFUSED_STREAM) if e.is_reset() => Some(Refusal::Stream),
            Some(h2::Reason::NO_ERROR) if e.is_go_away() => Some(Refusal::GoAway),
            _ => None,
        }
    })
}

/// Whether `err`, or anything it wraps, is a `T` (looking inside
/// `io::Error`s too, whose `source` skips the error they wrap).
pub(crate) fn chain_has<T: StdError + 'static>(err: &(dyn StdError + 'static)) -> bool {
    sources(err).any(|e| {
        e.is::<T>()
            || e.downcast_ref::<io::Error>().and_then(|io| io.get_ref()).is_some_and(|inner| chain_has::<T>(inner))
    })
}

fn sources<'a>(err: &'a (dyn StdError + 'static)) -> impl Iterator<Item = &'a (dyn StdError + 'static)> {
    std::iter::successors(Some(err), |e: &&'a (dyn StdError + 'static)| (*e).source())
}
