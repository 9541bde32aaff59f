//! The pooled HTTP/1.1 client that talks to upstreams.

use std::time::Duration;

use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use crate::body::UpstreamBody;

/// Client shared by all routes of a snapshot (the pool is keyed by address).
pub(crate) type HttpClient = Client<HttpConnector, UpstreamBody>;

/// Settings that, when changed by a reload, need a new client (and pool).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ClientSettings {
    pub(crate) connect_timeout: Duration,
    pub(crate) pool_idle: Duration,
}

pub(crate) fn build(s: ClientSettings) -> HttpClient {
    let mut connector = HttpConnector::new();
    connector.set_connect_timeout(Some(s.connect_timeout));
    connector.set_nodelay(true);
    connector.enforce_http(true);
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(s.pool_idle)
        .pool_timer(TokioTimer::new())
        .timer(TokioTimer::new())
        .build(connector)
}
