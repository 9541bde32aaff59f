//! Request tracing (`[tracing]`): W3C trace context and weir's own span per
//! request, exported over OTLP.
//!
//! On the request path ([`TraceCtx`]): the caller's `traceparent` is read
//! (its trace id, its span as weir's parent, its sampled flag), or a new
//! trace begins (also when the caller sent two, or a malformed one); weir's
//! span id is drawn, and the upstream gets `traceparent:
//! 00-TRACE-WEIRSPAN-FLAGS`. `tracestate` passes through with the caller's
//! trace, and is dropped with a new one (it belonged to another trace). The
//! sampled flag is the caller's when it sent one (`follow_caller`), else a
//! draw at `sample_ratio`. Ids come from a thread-local CSPRNG: an id an
//! upstream sees tells nothing of the next. Unsampled requests cost a few
//! random numbers and one header; nothing is kept.
//!
//! At the response ([`Otel::finish`]): a sampled request, or a canary
//! request that failed (`canary_errors`), becomes a span in OpenTelemetry's
//! SDK: its batch processor queues it (bounded, dropping when full) and
//! exports batches from a thread of its own, over OTLP/HTTP protobuf,
//! through [`Collector`]: weir's hyper + rustls client, run on the daemon
//! runtime. Off when `[tracing]` is absent: one branch per request.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Request, Response};
use http_body_util::{BodyExt, Full, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use opentelemetry::trace::{
    SpanBuilder, SpanContext, SpanId, SpanKind, Status, TraceContextExt, TraceFlags, TraceId, TraceState, Tracer,
};
use opentelemetry::{Context, KeyValue};
use opentelemetry_otlp::{WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::trace::{SdkTracer, SdkTracerProvider};
use weir_control::config::Tracing;
use weir_control::split::Side;

/// The W3C trace context header.
pub(crate) static TRACEPARENT: http::HeaderName = http::HeaderName::from_static("traceparent");
/// Its vendor companion.
pub(crate) const TRACESTATE: &str = "tracestate";

/// One request's trace context.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct TraceCtx {
    pub(crate) trace_id: u128,
    /// weir's span.
    pub(crate) span_id: u64,
    /// The caller's span, if it sent one.
    pub(crate) parent: Option<u64>,
    /// Exported, and told to the upstream as sampled.
    pub(crate) sampled: bool,
}

impl TraceCtx {
    /// The context of a request with these headers: the caller's trace
    /// (its sampled flag followed when `follow_caller`), or a new one; what
    /// the caller did not decide is drawn at `ratio`.
    pub(crate) fn start(headers: &HeaderMap, ratio: f64, follow_caller: bool) -> TraceCtx {
        let span_id = nonzero_u64();
        // A draw on 53 bits against the ratio.
        let draw = || ((rand::random::<u64>() >> 11) as f64) < ratio * (1u64 << 53) as f64;
        let mut all = headers.get_all(&TRACEPARENT).iter();
        // Two traceparent headers: neither is the caller's (W3C: restart).
        let one = match (all.next(), all.next()) {
            (Some(v), None) => parse_traceparent(v.as_bytes()),
            _ => None,
        };
        match one {
            Some((trace_id, parent, sampled)) => {
                let sampled = if follow_caller { sampled } else { draw() };
                TraceCtx { trace_id, span_id, parent: Some(parent), sampled }
            }
            None => {
                let trace_id = (u128::from(nonzero_u64()) << 64) | u128::from(rand::random::<u64>());
                TraceCtx { trace_id, span_id, parent: None, sampled: draw() }
            }
        }
    }

    /// `00-TRACE-SPAN-FLAGS` with weir's span as the upstream's parent.
    pub(crate) fn traceparent(&self) -> HeaderValue {
        let mut s = String::with_capacity(55);
        let _ = write!(s, "00-{:032x}-{:016x}-{}", self.trace_id, self.span_id, if self.sampled { "01" } else { "00" });
        // Only hex digits and dashes: always a valid header value.
        HeaderValue::from_str(&s).unwrap_or(HeaderValue::from_static(""))
    }

    /// The trace id as 32 hex digits (the access log's `trace_id`).
    pub(crate) fn trace_id_hex(&self) -> String {
        format!("{:032x}", self.trace_id)
    }
}

fn nonzero_u64() -> u64 {
    loop {
        let x = rand::random::<u64>();
        if x != 0 {
            return x;
        }
    }
}

/// `traceparent` as W3C Trace Context level 1 reads it: version 00 (or a
/// later one, read as 00), a non-zero trace id and parent id; `None` for
/// anything else (a new trace then begins).
fn parse_traceparent(v: &[u8]) -> Option<(u128, u64, bool)> {
    let s = std::str::from_utf8(v).ok()?.trim();
    let mut parts = s.splitn(5, '-');
    let (version, trace, parent, flags) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    let rest = parts.next();
    let lower_hex =
        |p: &str, n: usize| p.len() == n && p.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    if !lower_hex(version, 2)
        || version == "ff"
        || !lower_hex(trace, 32)
        || !lower_hex(parent, 16)
        || !lower_hex(flags, 2)
    {
        return None;
    }
    // Version 00 has exactly four fields; a later version may add some.
    if version == "00" && rest.is_some() {
        return None;
    }
    let trace_id = u128::from_str_radix(trace, 16).ok().filter(|t| *t != 0)?;
    let parent = u64::from_str_radix(parent, 16).ok().filter(|p| *p != 0)?;
    let flags = u8::from_str_radix(flags, 16).ok()?;
    Some((trace_id, parent, flags & 1 == 1))
}

/// What the response adds to a span.
pub(crate) struct Finished<'a> {
    pub(crate) method: &'a http::Method,
    pub(crate) path: &'a str,
    pub(crate) status: u16,
    pub(crate) route: Option<&'a str>,
    pub(crate) side: Option<Side>,
    pub(crate) backend: Option<&'a str>,
    pub(crate) release: Option<&'a str>,
    pub(crate) upstream: Option<SocketAddr>,
    /// The failure's kind (`connect`, `timeout`, `no_route`...), if any.
    pub(crate) error: Option<&'static str>,
    /// The request failed for its backend (an error, or a 5xx).
    pub(crate) failed: bool,
    pub(crate) retried: bool,
    pub(crate) shadowed: bool,
    pub(crate) synthetic: bool,
    pub(crate) grpc: bool,
}

/// The exporter of one running weir.
pub(crate) struct Otel {
    tracer: SdkTracer,
    provider: SdkTracerProvider,
    /// `[tracing]` as at start: what serves if a reload removes the section
    /// (turning tracing off needs a restart, as turning it on does).
    pub(crate) started: Tracing,
}

impl std::fmt::Debug for Otel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Otel").finish_non_exhaustive()
    }
}

impl Otel {
    /// The exporter for `cfg`; its HTTP requests run on `runtime` (the
    /// daemon's). `Err` names the key that is unusable.
    pub(crate) fn new(
        cfg: &Tracing,
        config_path: Option<&Path>,
        runtime: tokio::runtime::Handle,
        exports: Exports,
    ) -> Result<Otel, String> {
        let https = cfg.endpoint.starts_with("https://");
        let tls = crate::tls::client_with_extra_roots(cfg.ca.as_deref(), config_path, "tracing.ca", https)?;
        let client = crate::tls::https_client(tls, cfg.timeout);
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_http_client(Collector { client, runtime, timeout: cfg.timeout, exports })
            .with_endpoint(format!("{}/v1/traces", cfg.endpoint))
            .with_timeout(cfg.timeout)
            .build()
            .map_err(|e| format!("tracing: {e}"))?;
        let resource = opentelemetry_sdk::Resource::builder_empty()
            .with_service_name(cfg.service_name.clone())
            .with_attribute(KeyValue::new("service.version", env!("CARGO_PKG_VERSION")))
            .build();
        // weir decides which requests are traced; the SDK records them all.
        let provider = SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_sampler(opentelemetry_sdk::trace::Sampler::AlwaysOn)
            .with_resource(resource)
            .build();
        let tracer = opentelemetry::trace::TracerProvider::tracer(&provider, "weir");
        Ok(Otel { tracer, provider, started: cfg.clone() })
    }

    /// Hands a finished request's span to the batch processor, if it is
    /// sampled or a failed canary request (`canary_errors`).
    pub(crate) fn finish(&self, cfg: &Tracing, t: &TraceCtx, started: SystemTime, elapsed: Duration, f: &Finished<'_>) {
        let canary_failed = cfg.canary_errors && f.failed && f.side == Some(Side::Canary);
        if !t.sampled && !canary_failed {
            return;
        }
        let mut attrs = Vec::with_capacity(16);
        attrs.push(KeyValue::new("http.request.method", f.method.as_str().to_string()));
        attrs.push(KeyValue::new("url.path", f.path.to_string()));
        attrs.push(KeyValue::new("http.response.status_code", i64::from(f.status)));
        if let Some(r) = f.route {
            attrs.push(KeyValue::new("weir.route", r.to_string()));
        }
        if let Some(s) = f.side {
            attrs.push(KeyValue::new("weir.side", s.as_str()));
        }
        if let Some(b) = f.backend {
            attrs.push(KeyValue::new("weir.backend", b.to_string()));
        }
        if let Some(v) = f.release {
            attrs.push(KeyValue::new("weir.release", v.to_string()));
        }
        // The upstream that answered (server.* would name weir itself on
        // a server span).
        if let Some(a) = f.upstream {
            attrs.push(KeyValue::new("weir.upstream.address", a.ip().to_string()));
            attrs.push(KeyValue::new("weir.upstream.port", i64::from(a.port())));
        }
        attrs.push(KeyValue::new("weir.outcome", f.error.unwrap_or(if f.failed { "failure" } else { "ok" })));
        if let Some(e) = f.error {
            attrs.push(KeyValue::new("error.type", e));
        }
        for (flag, key) in [
            (f.retried, "weir.retried"),
            (f.shadowed, "weir.shadowed"),
            (f.synthetic, "weir.synthetic"),
            (f.grpc, "weir.grpc"),
        ] {
            if flag {
                attrs.push(KeyValue::new(key, true));
            }
        }
        if !t.sampled {
            attrs.push(KeyValue::new("weir.sampled_for", "canary_error"));
        }
        let name = match f.route {
            Some(r) => format!("{} {r}", f.method),
            None => f.method.to_string(),
        };
        let builder = SpanBuilder::from_name(name)
            .with_kind(SpanKind::Server)
            .with_trace_id(TraceId::from_bytes(t.trace_id.to_be_bytes()))
            .with_span_id(SpanId::from_bytes(t.span_id.to_be_bytes()))
            .with_start_time(started)
            .with_attributes(attrs)
            .with_status(if f.failed { Status::error(f.error.unwrap_or("failure")) } else { Status::Unset });
        let parent = match t.parent {
            Some(p) => Context::new().with_remote_span_context(SpanContext::new(
                TraceId::from_bytes(t.trace_id.to_be_bytes()),
                SpanId::from_bytes(p.to_be_bytes()),
                if t.sampled { TraceFlags::SAMPLED } else { TraceFlags::default() },
                true,
                TraceState::default(),
            )),
            None => Context::new(),
        };
        let mut span = self.tracer.build_with_context(builder, &parent);
        opentelemetry::trace::Span::end_with_timestamp(&mut span, started + elapsed);
    }

    /// Exports what is queued and stops (at shutdown; blocks `within` at
    /// most).
    pub(crate) fn shutdown(&self, within: Duration) {
        if let Err(e) = self.provider.shutdown_with_timeout(within) {
            tracing::warn!("tracing: the last spans were not exported: {e}");
        }
    }
}

/// The OTLP exporter's HTTP client: weir's hyper client with rustls, its
/// requests run on the daemon's runtime whatever thread asks (the SDK's
/// batch processor exports from a plain thread).
struct Collector {
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    runtime: tokio::runtime::Handle,
    timeout: Duration,
    exports: Exports,
}

/// Counts exports (`weir_otlp_exports_total{result}`) and logs failures,
/// once a minute at most: the SDK's own logs are compiled out, and a dead
/// collector must not look like a working one.
#[derive(Clone)]
pub(crate) struct Exports {
    pub(crate) ok: metrics::Counter,
    pub(crate) failed: metrics::Counter,
    pub(crate) last_warned: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl Exports {
    fn failed(&self, why: &str) {
        use std::sync::atomic::Ordering::Relaxed;
        self.failed.increment(1);
        let now = crate::clock::coarse_ms().max(1);
        let last = self.last_warned.load(Relaxed);
        let due = last == 0 || now.saturating_sub(last) >= 60_000;
        if due && self.last_warned.compare_exchange(last, now, Relaxed, Relaxed).is_ok() {
            tracing::warn!(
                "tracing: spans not exported: {why} (weir_otlp_exports_total{{result=\"failed\"}} counts them)"
            );
        }
    }
}

impl std::fmt::Debug for Collector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Collector").finish_non_exhaustive()
    }
}

/// The largest collector answer read (an OTLP answer is a few bytes).
const MAX_ANSWER: usize = 64 * 1024;

#[async_trait::async_trait]
impl opentelemetry_http::HttpClient for Collector {
    async fn send_bytes(&self, request: Request<Bytes>) -> Result<Response<Bytes>, opentelemetry_http::HttpError> {
        let (client, timeout) = (self.client.clone(), self.timeout);
        // One timeout for the whole export, the answer's body included.
        let call = self.runtime.spawn(async move {
            let exchange = async move {
                let req = request.map(Full::new);
                let resp = client.request(req).await.map_err(|e| crate::log::error_chain(&e))?;
                let (parts, body) = resp.into_parts();
                let body = Limited::new(body, MAX_ANSWER)
                    .collect()
                    .await
                    .map_err(|e| format!("reading the answer: {e}"))?
                    .to_bytes();
                Ok::<_, String>(Response::from_parts(parts, body))
            };
            tokio::time::timeout(timeout, exchange).await.map_err(|_| format!("no answer within {timeout:?}"))?
        });
        let result = match call.await {
            Ok(Ok(resp)) if resp.status().is_success() => Ok(resp),
            Ok(Ok(resp)) => Err(format!("the collector answered {}", resp.status())),
            Ok(Err(e)) => Err(e),
            Err(e) => Err(e.to_string()),
        };
        match result {
            Ok(resp) => {
                self.exports.ok.increment(1);
                Ok(resp)
            }
            Err(e) => {
                self.exports.failed(&e);
                Err(e.into())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traceparent_is_read_as_w3c_says() {
        let ok = b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        assert_eq!(parse_traceparent(ok), Some((0x4bf92f3577b34da6a3ce929d0e0e4736, 0x00f067aa0ba902b7, true)));
        let unsampled = b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00";
        assert_eq!(parse_traceparent(unsampled).map(|p| p.2), Some(false));
        // A later version may carry more fields.
        assert!(parse_traceparent(b"01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra").is_some());
        for bad in [
            &b"00-00000000000000000000000000000000-00f067aa0ba902b7-01"[..],
            b"00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            b"ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            b"00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            b"00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            b"garbage",
        ] {
            assert_eq!(parse_traceparent(bad), None, "{}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn a_caller_context_is_continued_and_a_new_one_sampled_at_the_ratio() {
        let mut h = HeaderMap::new();
        h.insert(&TRACEPARENT, HeaderValue::from_static("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"));
        let t = TraceCtx::start(&h, 0.0, true);
        // Not following the caller: its trace continues, the ratio decides.
        let t2 = TraceCtx::start(&h, 0.0, false);
        assert_eq!((t2.trace_id, t2.parent, t2.sampled), (t.trace_id, t.parent, false));
        // Two traceparent headers: a new trace.
        let mut two = h.clone();
        two.append(&TRACEPARENT, HeaderValue::from_static("00-4bf92f3577b34da6a3ce929d0e0e4737-00f067aa0ba902b7-01"));
        let t3 = TraceCtx::start(&two, 0.0, true);
        assert!(t3.parent.is_none() && t3.trace_id != t.trace_id && !t3.sampled);
        assert_eq!(
            (t.trace_id, t.parent, t.sampled),
            (0x4bf92f3577b34da6a3ce929d0e0e4736, Some(0x00f067aa0ba902b7), true)
        );
        let sent = t.traceparent();
        assert_eq!(sent.to_str().unwrap(), format!("00-4bf92f3577b34da6a3ce929d0e0e4736-{:016x}-01", t.span_id));
        let none = HeaderMap::new();
        assert!(!TraceCtx::start(&none, 0.0, true).sampled);
        assert!(TraceCtx::start(&none, 1.0, true).sampled);
        let n = (0..20_000).filter(|_| TraceCtx::start(&none, 0.1, true).sampled).count();
        assert!((1_600..2_400).contains(&n), "{n} of 20000 at 10 %");
    }
}
