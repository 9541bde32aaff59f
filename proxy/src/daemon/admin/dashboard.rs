//! The live dashboard: one self-contained page (HTML, CSS and JS embedded in
//! the binary, no CDN), polling the JSON API every second.

use bytes::Bytes;
use http::{header, HeaderValue, Response};
use http_body_util::Full;

static PAGE: &str = include_str!("dashboard.html");

pub(super) fn page() -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from_static(PAGE.as_bytes())));
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    // Everything is inline; nothing may be loaded from elsewhere.
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("default-src 'self'; script-src 'unsafe-inline'; style-src 'unsafe-inline'"),
    );
    r
}
