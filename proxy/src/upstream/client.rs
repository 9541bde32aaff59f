//! The pooled clients that talk to upstreams: one shared HTTP/1.1 client for
//! plain backends, and a dedicated one (own pool, own TLS settings) for each
//! backend with `tls` or `http2`.

use std::sync::Arc;
use std::time::Duration;

use hyper_rustls::{FixedServerNameResolver, HttpsConnector};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::{Client, ResponseFuture};
use hyper_util::rt::{TokioExecutor, TokioTimer};
use rustls::ClientConfig;
use rustls_pki_types::ServerName;

use super::body::UpstreamBody;

/// Client shared by the plain HTTP/1.1 backends of a snapshot (the pool is
/// keyed by address).
pub(crate) type HttpClient = Client<HttpConnector, UpstreamBody>;

/// A backend's own client.
#[derive(Clone, Debug)]
pub(crate) enum Dedicated {
    /// Prior-knowledge HTTP/2 in cleartext (`http2 = true` without TLS).
    H2c(HttpClient),
    /// TLS; HTTP/2 when offered by ALPN and chosen by the upstream. Only
    /// `https` URIs are accepted: there is no plaintext fallback.
    Tls(Client<HttpsConnector<HttpConnector>, UpstreamBody>),
}

impl Dedicated {
    pub(crate) fn request(&self, req: http::Request<UpstreamBody>) -> ResponseFuture {
        match self {
            Dedicated::H2c(c) => c.request(req),
            Dedicated::Tls(c) => c.request(req),
        }
    }
}

/// Settings that, when changed by a reload, need a new client (and pool).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct ClientSettings {
    pub(crate) connect_timeout: Duration,
    pub(crate) pool_idle: Duration,
}

fn connector(s: ClientSettings) -> HttpConnector {
    let mut connector = HttpConnector::new();
    connector.set_connect_timeout(Some(s.connect_timeout));
    connector.set_nodelay(true);
    connector
}

fn builder(s: ClientSettings) -> hyper_util::client::legacy::Builder {
    let mut b = Client::builder(TokioExecutor::new());
    b.pool_idle_timeout(s.pool_idle).pool_timer(TokioTimer::new()).timer(TokioTimer::new());
    b
}

pub(crate) fn build(s: ClientSettings) -> HttpClient {
    builder(s).build(connector(s))
}

/// A backend's own client: TLS with `server_name` in SNI and verified, or
/// (without TLS) prior-knowledge h2c.
pub(crate) fn build_dedicated(s: ClientSettings, tls: Option<(ClientConfig, ServerName<'static>)>) -> Dedicated {
    match tls {
        Some((cfg, name)) => {
            let mut http = connector(s);
            http.enforce_http(false);
            let https = HttpsConnector::new(http, cfg, true, Arc::new(FixedServerNameResolver::new(name)));
            Dedicated::Tls(builder(s).build(https))
        }
        None => Dedicated::H2c(builder(s).http2_only(true).build(connector(s))),
    }
}
