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
    if sources(err).filter_map(|e| e.downcast_ref::<h2::Error>()).any(refused) {
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

/// Whether the upstream refused the stream without processing it
/// (RFC 9113 §8.7): it reset it with `REFUSED_STREAM`, or it sent a
/// graceful GOAWAY whose last stream id is below the stream's (h2 fails
/// exactly those streams with the GOAWAY's code; a GOAWAY with an error
/// code may also end processed streams, so only `NO_ERROR` counts).
fn refused(e: &h2::Error) -> bool {
    e.is_remote()
        && match e.reason() {
            Some(h2::Reason::REFUSED_STREAM) => e.is_reset(),
            Some(h2::Reason::NO_ERROR) => e.is_go_away(),
            _ => false,
        }
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
