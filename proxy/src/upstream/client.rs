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
    H2c(Pair<HttpConnector>),
    /// TLS; HTTP/2 when offered by ALPN and chosen by the upstream. Only
    /// `https` URIs are accepted: there is no plaintext fallback.
    Tls(Pair<HttpsConnector<HttpConnector>>),
}

/// The pooled client, and one that never reuses a connection: a request
/// an HTTP/2 upstream refused goes again on a new connection, as the one
/// that refused it may be draining or at its stream limit.
#[derive(Clone, Debug)]
pub(crate) struct Pair<C> {
    pooled: Client<C, UpstreamBody>,
    fresh: Client<C, UpstreamBody>,
}

impl<C: Clone> Pair<C> {
    fn new(s: ClientSettings, connector: C, h2_only: bool) -> Self
    where
        C: hyper_util::client::legacy::connect::Connect + Send + Sync + 'static,
    {
        let mut pooled = builder(s);
        let mut fresh = builder(s);
        fresh.pool_max_idle_per_host(0);
        if h2_only {
            pooled.http2_only(true);
            fresh.http2_only(true);
        }
        Pair { pooled: pooled.build(connector.clone()), fresh: fresh.build(connector) }
    }
}

impl Dedicated {
    /// Sends `req`, on a new connection if `fresh`.
    pub(crate) fn request(&self, req: http::Request<UpstreamBody>, fresh: bool) -> ResponseFuture {
        match (self, fresh) {
            (Dedicated::H2c(c), false) => c.pooled.request(req),
            (Dedicated::H2c(c), true) => c.fresh.request(req),
            (Dedicated::Tls(c), false) => c.pooled.request(req),
            (Dedicated::Tls(c), true) => c.fresh.request(req),
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
            Dedicated::Tls(Pair::new(s, https, false))
        }
        None => Dedicated::H2c(Pair::new(s, connector(s), true)),
    }
}
