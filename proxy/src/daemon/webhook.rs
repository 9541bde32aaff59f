//! The rollout webhooks' client: `notify` (every transition, to each sink
//! in its format) and `pre_stage` (a stage waits for its 2xx). A failing
//! or slow webhook means "do not advance", never "pass".
//!
//! A tower stack per call: retry (notify only: `webhooks.retries` further
//! attempts on no answer, 429 or 5xx, exponential backoff with jitter from
//! 250 ms to 8 s, or a 429's `Retry-After` up to 30 s, within the sink's
//! budget of 20 % of its deliveries plus 1 a second; never after a
//! certificate the system could not verify) → signing (each attempt when
//! it is sent) → concurrency limit (`webhooks.max_in_flight`, shared) →
//! timeout (the rollout's `webhook_timeout`, per attempt) → a pooled hyper
//! client, over TLS (rustls: the system roots plus `webhooks.ca`) for
//! `https://`. Delivery is at least once: a receiver that took a request
//! but answered too late gets it again, with the same delivery id.
//!
//! weir-format bodies and `pre_stage` calls are signed when
//! `webhooks.secret_file` is set: `X-Weir-Signature: t=UNIX,v1=HEX`, HEX
//! being HMAC-SHA256 over `UNIX.DELIVERY.BODY`; the receiver recomputes
//! it, refuses a `t` far from its clock (a replayed request) and drops a
//! delivery id it has seen (a retry it already took).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{header, Method, Request, Response};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use tokio::sync::Semaphore;
use tower::limit::ConcurrencyLimit;
use tower::retry::backoff::{Backoff, ExponentialBackoff, ExponentialBackoffMaker, MakeBackoff};
use tower::retry::budget::{Budget, TpsBudget};
use tower::retry::{Policy, Retry};
use tower::timeout::Timeout;
use tower::util::rng::HasherRng;
use tower::ServiceExt;
use weir_control::config::Webhooks;

type HttpsClient = Client<HttpsConnector<HttpConnector>, Full<Bytes>>;

/// The header with a weir-format body's signature.
pub(crate) const SIGNATURE: &str = "x-weir-signature";
/// The header with a delivery's id (the same on every attempt).
pub(crate) const DELIVERY: &str = "x-weir-delivery";
/// The header with the event's kind (`rolled_back`...).
pub(crate) const EVENT: &str = "x-weir-event";

/// Sends the webhooks of one `[webhooks]` setting (rebuilt when it
/// changes).
pub(crate) struct Sender {
    pub(crate) settings: Webhooks,
    config_path: Option<PathBuf>,
    client: HttpsClient,
    in_flight: Arc<Semaphore>,
    /// The CA file's contents when read (a rotated one rebuilds the sender).
    pub(crate) ca_digest: u64,
    /// Built for `https://` webhooks (trusted roots required).
    pub(crate) https: bool,
}

/// A sink's retry budget: 20 % of its deliveries, plus 1 a second.
pub(crate) fn budget() -> Arc<TpsBudget> {
    Arc::new(TpsBudget::new(Duration::from_secs(10), 1, 0.2))
}

/// One webhook request.
pub(crate) struct Call<'a> {
    pub(crate) url: &'a str,
    pub(crate) body: Bytes,
    /// Signed when a secret is configured.
    pub(crate) sign: bool,
    /// `X-Weir-Event`, if any.
    pub(crate) event: Option<&'static str>,
    /// Per attempt.
    pub(crate) timeout: Duration,
    /// Retried within this budget (notify: the sink's), or sent once
    /// (pre_stage, which asks again on the next tick).
    pub(crate) retry: Option<&'a Arc<TpsBudget>>,
}

/// How a call ended.
#[derive(Debug)]
pub(crate) struct Outcome {
    /// The last answer's status and the start of its body, or why there
    /// was none.
    pub(crate) answer: Result<(u16, String), String>,
    /// Attempts made (1 + retries).
    pub(crate) attempts: u32,
}

impl Outcome {
    /// A 2xx answer.
    pub(crate) fn delivered(&self) -> bool {
        self.answer.as_ref().is_ok_and(|(s, _)| (200..300).contains(s))
    }
}

impl Sender {
    /// The sender for `settings` (`config_path` anchors relative file
    /// names; `https`: some webhook URL needs TLS, so trusted roots must
    /// exist); `Err` names the key whose file is unusable.
    pub(crate) fn new(settings: &Webhooks, config_path: Option<&Path>, https: bool) -> Result<Sender, String> {
        let tls = crate::tls::client_with_extra_roots(settings.ca.as_deref(), config_path, "webhooks.ca", https)?;
        let ca_digest = ca_digest(settings, config_path);
        let client = crate::tls::https_client(tls, Duration::from_secs(5));
        if let Some(f) = &settings.secret_file {
            secret(f, config_path)?;
        }
        Ok(Sender {
            settings: settings.clone(),
            config_path: config_path.map(Path::to_path_buf),
            client,
            in_flight: Arc::new(Semaphore::new(settings.max_in_flight)),
            ca_digest,
            https,
        })
    }

    /// POSTs `call.body` as JSON, with the retries `call.retry` allows;
    /// the whole call (waiting for a slot included) within `call.timeout`
    /// per attempt.
    pub(crate) async fn send(&self, call: Call<'_>) -> Outcome {
        let key = match (call.sign, &self.settings.secret_file) {
            (true, Some(file)) => {
                let (file, base) = (file.clone(), self.config_path.clone());
                match tokio::task::spawn_blocking(move || secret(&file, base.as_deref())).await {
                    Ok(Ok(k)) => Some(Arc::new(ring::hmac::Key::new(ring::hmac::HMAC_SHA256, k.as_bytes()))),
                    Ok(Err(e)) => return Outcome { answer: Err(e), attempts: 0 },
                    Err(e) => return Outcome { answer: Err(format!("webhooks.secret_file: {e}")), attempts: 0 },
                }
            }
            _ => None,
        };
        let mut req = Request::builder()
            .method(Method::POST)
            .uri(call.url)
            .header(header::CONTENT_TYPE, "application/json")
            .header(header::USER_AGENT, concat!("weir/", env!("CARGO_PKG_VERSION")))
            .header(DELIVERY, delivery_id());
        if let Some(kind) = call.event {
            req = req.header(EVENT, kind);
        }
        let req = match req.body(Full::new(call.body.clone())) {
            Ok(r) => r,
            Err(e) => return Outcome { answer: Err(format!("bad request: {e}")), attempts: 0 },
        };
        let attempts = Arc::new(std::sync::atomic::AtomicU32::new(0));
        let policy = Attempts {
            left: if call.retry.is_some() { self.settings.retries } else { 0 },
            backoff: backoff(),
            budget: call.retry.cloned(),
        };
        let limited =
            ConcurrencyLimit::with_semaphore(Timeout::new(self.client.clone(), call.timeout), self.in_flight.clone());
        let service = Signing { inner: limited, key, body: call.body.clone(), attempts: attempts.clone() };
        let one = Retry::new(policy, service).oneshot(req);
        // Sent once: a slot waited for counts in its timeout too.
        let answer = if call.retry.is_some() {
            one.await
        } else {
            tokio::time::timeout(call.timeout, one).await.unwrap_or_else(|e| Err(Box::new(e)))
        };
        let attempts = attempts.load(std::sync::atomic::Ordering::Relaxed);
        let answer = match answer {
            Ok(resp) => {
                let status = resp.status().as_u16();
                // Read (a little of) the answer: its connection goes back to
                // the pool, and a refusal says why (Slack's invalid_blocks).
                let body = Limited::new(resp.into_body(), ANSWER_SHOWN);
                let text = match tokio::time::timeout(call.timeout, body.collect()).await {
                    Ok(Ok(b)) => String::from_utf8_lossy(&b.to_bytes()).trim().chars().take(200).collect(),
                    _ => String::new(),
                };
                Ok((status, text))
            }
            Err(e) if e.is::<tower::timeout::error::Elapsed>() || e.is::<tokio::time::error::Elapsed>() => {
                Err(format!("no answer within {:?}", call.timeout))
            }
            Err(e) => Err(crate::log::error_chain(&*e)),
        };
        Outcome { answer, attempts }
    }
}

/// One event for one sink.
pub(crate) struct Job {
    pub(crate) event: weir_control::rollout::Event,
    pub(crate) sink: weir_control::config::Notify,
    pub(crate) timeout: Duration,
}

/// The queues of `notify` sinks: (route, URL, format) → its task's queue.
pub(crate) type NotifyQueues = std::sync::Mutex<
    std::collections::HashMap<(String, String, weir_control::config::NotifyFormat), tokio::sync::mpsc::Sender<Job>>,
>;

/// Whether any webhook of `cfg` is an `https://` URL.
pub(crate) fn any_https(cfg: &weir_control::config::Config) -> bool {
    cfg.routes
        .iter()
        .filter_map(|r| r.rollout.as_ref())
        .any(|ro| ro.pre_stage.iter().chain(ro.notify.iter().map(|n| &n.url)).any(|u| u.starts_with("https://")))
}

/// The most of an answer's body read.
const ANSWER_SHOWN: usize = 1024;

/// The digest of `webhooks.ca`'s contents (0 without one).
pub(crate) fn ca_digest(settings: &Webhooks, config_path: Option<&Path>) -> u64 {
    settings.ca.as_ref().map_or(0, |ca| crate::tls::digest(&[crate::files::config_relative(ca, config_path)]))
}

/// Signs each attempt as it is sent (a retry carries its own time) and
/// counts the attempts.
#[derive(Clone)]
struct Signing<S> {
    inner: S,
    key: Option<Arc<ring::hmac::Key>>,
    body: Bytes,
    attempts: Arc<std::sync::atomic::AtomicU32>,
}

impl<S> tower::Service<Request<Full<Bytes>>> for Signing<S>
where
    S: tower::Service<Request<Full<Bytes>>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<Full<Bytes>>) -> Self::Future {
        self.attempts.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if let Some(key) = &self.key {
            let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_secs();
            let delivery = req.headers().get(DELIVERY).map(|v| v.as_bytes().to_vec()).unwrap_or_default();
            let sig = signature(key, now, &delivery, &self.body);
            if let Ok(v) = http::HeaderValue::from_str(&sig) {
                req.headers_mut().insert(SIGNATURE, v);
            }
        }
        self.inner.call(req)
    }
}

/// `t=UNIX,v1=HEX`: HMAC-SHA256 of `UNIX.DELIVERY.BODY` under `key`.
pub(crate) fn signature(key: &ring::hmac::Key, unix: u64, delivery: &[u8], body: &[u8]) -> String {
    let mut ctx = ring::hmac::Context::with_key(key);
    ctx.update(unix.to_string().as_bytes());
    ctx.update(b".");
    ctx.update(delivery);
    ctx.update(b".");
    ctx.update(body);
    format!("t={unix},v1={}", hex(ctx.sign().as_ref()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// 128 random bits, hex.
fn delivery_id() -> String {
    let mut id = [0u8; 16];
    // The system's generator failing leaves a zero id: the delivery still
    // goes out (an id only helps the receiver drop duplicates).
    let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut id);
    hex(&id)
}

/// The HMAC key in `webhooks.secret_file`.
pub(crate) fn secret(file: &Path, config_path: Option<&Path>) -> Result<String, String> {
    crate::files::read_token(&crate::files::config_relative(file, config_path), "webhooks.secret_file")
}

/// 250 ms doubling to 8 s, with up to 50 % jitter (`None` cannot happen:
/// the bounds are valid; a fixed second stands in).
fn backoff() -> Option<ExponentialBackoff> {
    ExponentialBackoffMaker::new(Duration::from_millis(250), Duration::from_secs(8), 0.5, HasherRng::new())
        .ok()
        .map(|mut m| m.make_backoff())
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Retries no answer, 429 and 5xx, `left` times, after a backoff (or a
/// 429's `Retry-After`, up to 30 s), while the sink's budget allows; never
/// a certificate that could not be verified (trying again cannot help).
#[derive(Clone)]
struct Attempts {
    left: u32,
    backoff: Option<ExponentialBackoff>,
    budget: Option<Arc<TpsBudget>>,
}

impl Policy<Request<Full<Bytes>>, Response<Incoming>, BoxError> for Attempts {
    type Future = tokio::time::Sleep;

    fn retry(
        &mut self,
        _req: &mut Request<Full<Bytes>>,
        result: &mut Result<Response<Incoming>, BoxError>,
    ) -> Option<Self::Future> {
        let Some(budget) = &self.budget else { return None };
        let (again, asked) = match result {
            Ok(resp) => {
                let s = resp.status();
                let asked = (s == http::StatusCode::TOO_MANY_REQUESTS)
                    .then(|| resp.headers().get(header::RETRY_AFTER)?.to_str().ok()?.trim().parse::<u64>().ok())
                    .flatten()
                    .map(|secs| Duration::from_secs(secs.min(30)));
                (s.is_server_error() || s == http::StatusCode::TOO_MANY_REQUESTS, asked)
            }
            Err(e) => (!certificate_refused(&**e), None),
        };
        if !again {
            budget.deposit();
            return None;
        }
        if self.left == 0 || !budget.withdraw() {
            return None;
        }
        self.left -= 1;
        Some(match (asked, &mut self.backoff) {
            (Some(d), _) => tokio::time::sleep(d),
            (None, Some(b)) => b.next_backoff(),
            (None, None) => tokio::time::sleep(Duration::from_secs(1)),
        })
    }

    fn clone_request(&mut self, req: &Request<Full<Bytes>>) -> Option<Request<Full<Bytes>>> {
        self.budget.as_ref()?;
        let mut out = Request::new(req.body().clone());
        *out.method_mut() = req.method().clone();
        *out.uri_mut() = req.uri().clone();
        *out.headers_mut() = req.headers().clone();
        Some(out)
    }
}

/// Whether `e` (or its cause) is a TLS certificate that failed
/// verification.
fn certificate_refused(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur = Some(e);
    while let Some(err) = cur {
        if let Some(rustls::Error::InvalidCertificate(_)) = err.downcast_ref::<rustls::Error>() {
            return true;
        }
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            if let Some(rustls::Error::InvalidCertificate(_)) =
                io.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>())
            {
                return true;
            }
        }
        cur = err.source();
    }
    false
}

#[cfg(test)]
mod tests {
    // The value itself is checked end to end by an independent HMAC
    // (Python's hmac module, tests/src/tests/notify.rs).
    #[test]
    fn signature_covers_the_time_and_the_delivery() {
        let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, b"k");
        let a = super::signature(&key, 1, b"d1", b"{}");
        assert!(a.starts_with("t=1,v1=") && a.len() == "t=1,v1=".len() + 64, "{a}");
        assert_ne!(a[7..], super::signature(&key, 2, b"d1", b"{}")[7..]);
        assert_ne!(a[7..], super::signature(&key, 1, b"d2", b"{}")[7..]);
    }
}
