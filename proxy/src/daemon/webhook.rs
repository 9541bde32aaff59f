//! The rollout webhooks' client: `notify` (every transition, to each sink
//! in its format) and `pre_stage` (a stage waits for its 2xx). A failing
//! or slow webhook means "do not advance", never "pass".
//!
//! A tower stack per call: retry (notify only: `webhooks.retries` further
//! attempts on no answer, 429 or 5xx, exponential backoff with jitter from
//! 250 ms to 8 s, within a budget of 20 % of deliveries plus 1 a second)
//! → concurrency limit (`webhooks.max_in_flight`, shared) → timeout (the
//! rollout's `webhook_timeout`, per attempt) → a pooled hyper client, over
//! TLS (rustls: the system roots plus `webhooks.ca`) for `https://`.
//!
//! weir-format bodies and `pre_stage` calls are signed when
//! `webhooks.secret_file` is set: `X-Weir-Signature: t=UNIX,v1=HEX`, HEX
//! being HMAC-SHA256 over `UNIX.BODY`; the receiver recomputes it and
//! refuses a `t` far from its clock (a replayed request). Every attempt of
//! one delivery carries the same `X-Weir-Delivery` id.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{header, Method, Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
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
    budget: Arc<TpsBudget>,
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
    /// Retried (notify) or sent once (pre_stage, which asks again on the
    /// next tick).
    pub(crate) retry: bool,
}

/// How a call ended.
#[derive(Debug)]
pub(crate) struct Outcome {
    /// The last answer's status, or why there was none.
    pub(crate) answer: Result<u16, String>,
    /// Attempts made (1 + retries).
    pub(crate) attempts: u32,
}

impl Outcome {
    /// A 2xx answer.
    pub(crate) fn delivered(&self) -> bool {
        self.answer.as_ref().is_ok_and(|s| (200..300).contains(s))
    }
}

impl Sender {
    /// The sender for `settings` (`config_path` anchors relative file
    /// names); `Err` names the key whose file is unusable.
    pub(crate) fn new(settings: &Webhooks, config_path: Option<&Path>) -> Result<Sender, String> {
        let tls = crate::tls::client_with_extra_roots(settings.ca.as_deref(), config_path, "webhooks.ca")?;
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(Duration::from_secs(5)));
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        let client = Client::builder(TokioExecutor::new()).pool_idle_timeout(Duration::from_secs(30)).build(https);
        if let Some(f) = &settings.secret_file {
            secret(f, config_path)?;
        }
        Ok(Sender {
            settings: settings.clone(),
            config_path: config_path.map(Path::to_path_buf),
            client,
            in_flight: Arc::new(Semaphore::new(settings.max_in_flight)),
            budget: Arc::new(TpsBudget::new(Duration::from_secs(10), 1, 0.2)),
        })
    }

    /// POSTs `call.body` as JSON, with the retries `call.retry` allows.
    pub(crate) async fn send(&self, call: Call<'_>) -> Outcome {
        let req = match self.request(&call).await {
            Ok(r) => r,
            Err(e) => return Outcome { answer: Err(e), attempts: 0 },
        };
        let attempts = Arc::new(std::sync::atomic::AtomicU32::new(0));
        let policy = Attempts {
            left: if call.retry { self.settings.retries } else { 0 },
            backoff: backoff(),
            budget: self.budget.clone(),
        };
        let service =
            ConcurrencyLimit::with_semaphore(Timeout::new(self.client.clone(), call.timeout), self.in_flight.clone());
        let answer = Retry::new(policy, Counted(service, attempts.clone())).oneshot(req).await;
        let attempts = attempts.load(std::sync::atomic::Ordering::Relaxed);
        let answer = match answer {
            Ok(resp) => Ok(resp.status().as_u16()),
            Err(e) if e.is::<tower::timeout::error::Elapsed>() => Err(format!("no answer within {:?}", call.timeout)),
            Err(e) => Err(crate::log::error_chain(&*e)),
        };
        Outcome { answer, attempts }
    }

    async fn request(&self, call: &Call<'_>) -> Result<Request<Full<Bytes>>, String> {
        let mut req = Request::builder()
            .method(Method::POST)
            .uri(call.url)
            .header(header::CONTENT_TYPE, "application/json")
            .header(header::USER_AGENT, concat!("weir/", env!("CARGO_PKG_VERSION")))
            .header(DELIVERY, delivery_id());
        if let Some(kind) = call.event {
            req = req.header(EVENT, kind);
        }
        if let (true, Some(file)) = (call.sign, &self.settings.secret_file) {
            let (file, base) = (file.clone(), self.config_path.clone());
            let key = tokio::task::spawn_blocking(move || secret(&file, base.as_deref()))
                .await
                .map_err(|e| format!("webhooks.secret_file: {e}"))??;
            let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_secs();
            req = req.header(SIGNATURE, signature(key.as_bytes(), now, &call.body));
        }
        req.body(Full::new(call.body.clone())).map_err(|e| format!("bad request: {e}"))
    }
}

/// `t=UNIX,v1=HEX`: HMAC-SHA256 of `UNIX.BODY` under `key`.
pub(crate) fn signature(key: &[u8], unix: u64, body: &[u8]) -> String {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, key);
    let mut ctx = ring::hmac::Context::with_key(&key);
    ctx.update(unix.to_string().as_bytes());
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

/// Counts the attempts that reach the stack below the retry.
#[derive(Clone)]
struct Counted<S>(S, Arc<std::sync::atomic::AtomicU32>);

impl<S, R> tower::Service<R> for Counted<S>
where
    S: tower::Service<R>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), Self::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, req: R) -> Self::Future {
        self.1.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.0.call(req)
    }
}

/// Retries no answer, 429 and 5xx, `left` times, after a backoff, while
/// the budget allows.
#[derive(Clone)]
struct Attempts {
    left: u32,
    backoff: Option<ExponentialBackoff>,
    budget: Arc<TpsBudget>,
}

impl Policy<Request<Full<Bytes>>, Response<Incoming>, BoxError> for Attempts {
    type Future = tokio::time::Sleep;

    fn retry(
        &mut self,
        _req: &mut Request<Full<Bytes>>,
        result: &mut Result<Response<Incoming>, BoxError>,
    ) -> Option<Self::Future> {
        let again = match result {
            Ok(resp) => {
                let s = resp.status();
                s.is_server_error() || s == http::StatusCode::TOO_MANY_REQUESTS
            }
            Err(_) => true,
        };
        if !again {
            self.budget.deposit();
            return None;
        }
        if self.left == 0 || !self.budget.withdraw() {
            return None;
        }
        self.left -= 1;
        Some(match &mut self.backoff {
            Some(b) => b.next_backoff(),
            None => tokio::time::sleep(Duration::from_secs(1)),
        })
    }

    fn clone_request(&mut self, req: &Request<Full<Bytes>>) -> Option<Request<Full<Bytes>>> {
        let mut out = Request::new(req.body().clone());
        *out.method_mut() = req.method().clone();
        *out.uri_mut() = req.uri().clone();
        *out.headers_mut() = req.headers().clone();
        Some(out)
    }
}

#[cfg(test)]
mod tests {
    // The value itself is checked end to end by an independent HMAC
    // (Python's hmac module, tests/src/tests/notify.rs).
    #[test]
    fn signature_covers_the_time() {
        let a = super::signature(b"k", 1, b"{}");
        let b = super::signature(b"k", 2, b"{}");
        assert!(a.starts_with("t=1,v1=") && a.len() == "t=1,v1=".len() + 64, "{a}");
        assert_ne!(a[7..], b[7..]);
    }
}
