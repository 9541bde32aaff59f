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
    /// TLS; HTTP/2 when offered by ALPN (`http2 = true`) and chosen by the
    /// upstream. Only `https` URIs are accepted: there is no plaintext
    /// fallback.
    Tls { clients: Pair<HttpsConnector<HttpConnector>>, h2: bool },
}

/// The pooled client, and a second one with its own pool for requests an
/// HTTP/2 upstream refused: they go again on another connection than the
/// one that refused them (it may be draining, or at its stream limit), and
/// share the connections they open.
#[derive(Clone, Debug)]
pub(crate) struct Pair<C> {
    pooled: Client<C, UpstreamBody>,
    retry: Client<C, UpstreamBody>,
}

impl<C: Clone> Pair<C> {
    fn new(s: ClientSettings, connector: C, h2_only: bool) -> Self
    where
        C: hyper_util::client::legacy::connect::Connect + Send + Sync + 'static,
    {
        let mut b = builder(s);
        if h2_only {
            b.http2_only(true);
        }
        Pair { pooled: b.build(connector.clone()), retry: b.build(connector) }
    }

    fn pick(&self, retry: bool) -> &Client<C, UpstreamBody> {
        if retry {
            &self.retry
        } else {
            &self.pooled
        }
    }
}

impl Dedicated {
    /// Sends `req`; through the pool of refused requests if `retry`.
    pub(crate) fn request(&self, req: http::Request<UpstreamBody>, retry: bool) -> ResponseFuture {
        match self {
            Dedicated::H2c(c) => c.pick(retry).request(req),
            Dedicated::Tls { clients, .. } => clients.pick(retry).request(req),
        }
    }

    /// Whether requests may go over HTTP/2, where an upstream can refuse a
    /// stream it did not process.
    pub(crate) fn may_refuse(&self) -> bool {
        match self {
            Dedicated::H2c(_) => true,
            Dedicated::Tls { h2, .. } => *h2,
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

/// A backend's own client: TLS with `server_name` in SNI and verified
/// (offering h2 by ALPN if `http2`), or (without TLS) prior-knowledge h2c.
pub(crate) fn build_dedicated(
    s: ClientSettings,
    tls: Option<(ClientConfig, ServerName<'static>)>,
    http2: bool,
) -> Dedicated {
    match tls {
        Some((cfg, name)) => {
            let mut http = connector(s);
            http.enforce_http(false);
            let https = HttpsConnector::new(http, cfg, true, Arc::new(FixedServerNameResolver::new(name)));
            Dedicated::Tls { clients: Pair::new(s, https, false), h2: http2 }
        }
        None => Dedicated::H2c(Pair::new(s, connector(s), true)),
    }
}
