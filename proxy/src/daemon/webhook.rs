//! The rollout webhooks' HTTP client: `notify` (every transition) and
//! `pre_stage` (a stage waits for its 2xx). A failing or slow webhook means
//! "do not advance", never "pass".

use std::time::Duration;

use bytes::Bytes;
use http::{header, Method, Request};
use http_body_util::Full;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

/// The client the daemon sends webhooks with (its connections live on the
/// daemon thread).
pub(crate) type WebhookClient = Client<HttpConnector, Full<Bytes>>;

pub(crate) fn client() -> WebhookClient {
    Client::builder(TokioExecutor::new()).build_http()
}

/// POSTs `body` to `url`; Ok(status) when it answered in time.
pub(crate) async fn post(client: &WebhookClient, url: &str, body: Vec<u8>, timeout: Duration) -> Result<u16, String> {
    let req = Request::builder()
        .method(Method::POST)
        .uri(url)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(body)))
        .map_err(|e| format!("bad request: {e}"))?;
    match tokio::time::timeout(timeout, client.request(req)).await {
        Err(_) => Err(format!("no answer within {timeout:?}")),
        Ok(Err(e)) => Err(format!("{e}")),
        Ok(Ok(resp)) => Ok(resp.status().as_u16()),
    }
}
