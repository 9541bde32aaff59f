//! TLS with rustls and its `ring` crypto provider (chosen because it builds
//! with a C compiler alone, no cmake or clang; rustls' safe defaults: TLS 1.2
//! and 1.3, forward-secret AEAD suites only).
//!
//! * **Downstream** ([`acceptor`]): one certificate per listener by default,
//!   more chosen by SNI (exact name, or `*.suffix` for one label); ALPN `h2`
//!   and `http/1.1`. The acceptor lives in the snapshot, so a reload (or a
//!   change of a certificate file, which triggers one) serves the new
//!   certificate to new connections while open ones keep their session. A
//!   certificate that does not load fails the reload and the old one stays.
//! * **Upstream** ([`client_config`]): verification against the system roots
//!   or a CA file, an SNI name, an optional client certificate (mTLS), ALPN
//!   `h2` when the backend asks for HTTP/2. No plaintext fallback: a backend
//!   with `tls` only ever gets `https` URIs.
//!
//! Relative file names are relative to the config file's directory.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;
use weir_control::config::{CertPair, Config, ServerTls, UpstreamTls};

/// The one crypto provider weir uses.
pub(crate) fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Resolves a config-relative file name.
fn file(base: Option<&Path>, p: &Path) -> PathBuf {
    crate::files::config_relative(p, base)
}

pub(crate) fn certs(base: Option<&Path>, path: &Path, key: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let full = file(base, path);
    let certs: Vec<_> = CertificateDer::pem_file_iter(&full)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("{key}: cannot read certificates from {}: {e}", full.display()))?;
    if certs.is_empty() {
        return Err(format!("{key}: no PEM certificate in {}", full.display()));
    }
    Ok(certs)
}

pub(crate) fn private_key(base: Option<&Path>, path: &Path, key: &str) -> Result<PrivateKeyDer<'static>, String> {
    let full = file(base, path);
    PrivateKeyDer::from_pem_file(&full)
        .map_err(|e| format!("{key}: cannot read a private key from {}: {e}", full.display()))
}

/// Loads a certificate chain and its key, checking that they belong together.
fn certified_key(base: Option<&Path>, pair: &CertPair, at: &str) -> Result<Arc<CertifiedKey>, String> {
    let chain = certs(base, &pair.cert, &format!("{at}.cert"))?;
    let key = private_key(base, &pair.key, &format!("{at}.key"))?;
    CertifiedKey::from_der(chain, key, &provider())
        .map(Arc::new)
        .map_err(|e| format!("{at}: {} and {} do not make a usable pair: {e}", pair.cert.display(), pair.key.display()))
}

/// Picks the certificate for a handshake from its SNI name.
#[derive(Debug)]
struct SniResolver {
    exact: HashMap<String, Arc<CertifiedKey>>,
    /// Keyed by the suffix after `*.`.
    wildcard: HashMap<String, Arc<CertifiedKey>>,
    default: Arc<CertifiedKey>,
}

impl SniResolver {
    fn pick(&self, name: Option<&str>) -> Arc<CertifiedKey> {
        let Some(name) = name else { return self.default.clone() };
        let lower;
        let name = if name.bytes().any(|b| b.is_ascii_uppercase()) {
            lower = name.to_ascii_lowercase();
            lower.as_str()
        } else {
            name
        };
        if let Some(k) = self.exact.get(name) {
            return k.clone();
        }
        if let Some((_, suffix)) = name.split_once('.') {
            if let Some(k) = self.wildcard.get(suffix) {
                return k.clone();
            }
        }
        self.default.clone()
    }
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.pick(hello.server_name()))
    }
}

/// Builds a listener's TLS acceptor (`at` is its config key, for errors).
pub(crate) fn acceptor(cfg: &ServerTls, base: Option<&Path>, at: &str) -> Result<TlsAcceptor, String> {
    let default = certified_key(base, &cfg.default, at)?;
    let mut resolver = SniResolver { exact: HashMap::new(), wildcard: HashMap::new(), default };
    for (i, entry) in cfg.sni.iter().enumerate() {
        let key = certified_key(base, &entry.pair, &format!("{at}.sni[{i}]"))?;
        for name in &entry.names {
            match name.strip_prefix("*.") {
                Some(suffix) => resolver.wildcard.insert(suffix.to_string(), key.clone()),
                None => resolver.exact.insert(name.clone(), key.clone()),
            };
        }
    }
    let mut sc = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("{at}: {e}"))?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(resolver));
    sc.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(sc)))
}

/// A pooled HTTP/1.1 client for weir's own outbound calls (webhooks,
/// PromQL, the OTLP collector, `weir ctl`): plain HTTP or TLS with `tls`
/// by the URL's scheme, `connect_timeout` per connection, idle connections
/// kept 30 s.
pub(crate) fn https_client<B>(
    tls: ClientConfig,
    connect_timeout: std::time::Duration,
) -> hyper_util::client::legacy::Client<
    hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>,
    B,
>
where
    B: http_body::Body + Send + 'static,
    B::Data: Send,
{
    let mut http = hyper_util::client::legacy::connect::HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    http.set_connect_timeout(Some(connect_timeout));
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .wrap_connector(http);
    hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .pool_idle_timeout(std::time::Duration::from_secs(30))
        .build(https)
}

/// A client config trusting the system roots plus the PEM bundle `ca`
/// (`at` names it in errors): webhook receivers, the OTLP collector and
/// `weir ctl`'s admin API, where a private CA's server and a public one may
/// both be reached. With no root at all it is an error only when `needed`
/// (some `https://` URL is configured): plain HTTP works without any.
pub(crate) fn client_with_extra_roots(
    ca: Option<&Path>,
    base: Option<&Path>,
    at: &str,
    needed: bool,
) -> Result<ClientConfig, String> {
    let mut roots = RootCertStore::empty();
    for c in rustls_native_certs::load_native_certs().certs {
        let _ = roots.add(c); // unparsable system certificates are skipped, as browsers do
    }
    if let Some(ca) = ca {
        for c in certs(base, ca, at)? {
            roots.add(c).map_err(|e| format!("{at}: {}: {e}", ca.display()))?;
        }
    }
    if roots.is_empty() && needed {
        return Err(format!("{at}: no system root certificates found; give a CA bundle"));
    }
    Ok(ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("{at}: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

/// Builds the client side of a backend's TLS (`at` is `backends.NAME.tls`).
pub(crate) fn client_config(
    cfg: &UpstreamTls,
    http2: bool,
    base: Option<&Path>,
    at: &str,
) -> Result<ClientConfig, String> {
    let mut roots = RootCertStore::empty();
    match &cfg.ca {
        Some(ca) => {
            for c in certs(base, ca, &format!("{at}.ca"))? {
                roots.add(c).map_err(|e| format!("{at}.ca: {}: {e}", ca.display()))?;
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            for c in found.certs {
                // Unparsable system certificates are skipped, as browsers do.
                let _ = roots.add(c);
            }
            if roots.is_empty() {
                return Err(format!("{at}: no system root certificates found; set {at}.ca"));
            }
        }
    }
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("{at}: {e}"))?
        .with_root_certificates(roots);
    let mut cc = match &cfg.client {
        Some(pair) => {
            let chain = certs(base, &pair.cert, &format!("{at}.cert"))?;
            let key = private_key(base, &pair.key, &format!("{at}.key"))?;
            builder.with_client_auth_cert(chain, key).map_err(|e| format!("{at}: client certificate: {e}"))?
        }
        None => builder.with_no_client_auth(),
    };
    cc.alpn_protocols = if http2 { vec![b"h2".to_vec(), b"http/1.1".to_vec()] } else { vec![b"http/1.1".to_vec()] };
    Ok(cc)
}

/// Every TLS file the config names (for watching and change detection).
pub(crate) fn files(cfg: &Config, base: Option<&Path>) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let pair = |out: &mut Vec<PathBuf>, p: &CertPair| {
        out.push(file(base, &p.cert));
        out.push(file(base, &p.key));
    };
    for s in [&cfg.listen.tls, &cfg.admin.tls].into_iter().flatten() {
        pair(&mut out, &s.default);
        for e in &s.sni {
            pair(&mut out, &e.pair);
        }
    }
    for t in cfg.backends.values().filter_map(|b| b.tls.as_ref()) {
        out.extend(backend_files(t, base));
    }
    out
}

/// The files of one backend's TLS settings.
pub(crate) fn backend_files(t: &UpstreamTls, base: Option<&Path>) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = t.ca.iter().map(|ca| file(base, ca)).collect();
    if let Some(c) = &t.client {
        out.push(file(base, &c.cert));
        out.push(file(base, &c.key));
    }
    out
}

/// A digest of the contents of `paths` (unreadable files count as absent),
/// so that a rotated certificate triggers a rebuild.
pub(crate) fn digest(paths: &[PathBuf]) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    for p in paths {
        p.hash(&mut h);
        std::fs::read(p).ok().hash(&mut h);
    }
    h.finish()
}

/// A listener's TLS: on or off is fixed when weir starts (a reload that adds
/// or removes `tls` is logged as needing a restart), the certificates follow
/// the current snapshot. If a reload removes `tls`, the last certificates
/// keep serving until restart: a TLS port never turns plaintext.
pub(crate) struct ListenerTls {
    last: Option<TlsAcceptor>,
}

impl ListenerTls {
    pub(crate) fn new(at_start: Option<&TlsAcceptor>) -> Self {
        ListenerTls { last: at_start.cloned() }
    }

    /// The acceptor for the next connection, `None` for plaintext.
    pub(crate) fn next(&mut self, current: Option<&TlsAcceptor>) -> Option<TlsAcceptor> {
        let last = self.last.as_mut()?;
        if let Some(c) = current {
            if !Arc::ptr_eq(c.config(), last.config()) {
                *last = c.clone();
            }
        }
        Some(last.clone())
    }
}

/// Runs the server side of a handshake within `timeout`; failures are
/// logged at debug level (scanners and plaintext clients are common).
pub(crate) async fn handshake(
    acceptor: &TlsAcceptor,
    tcp: tokio::net::TcpStream,
    timeout: std::time::Duration,
    peer: std::net::SocketAddr,
) -> Option<tokio_rustls::server::TlsStream<tokio::net::TcpStream>> {
    match tokio::time::timeout(timeout, acceptor.accept(tcp)).await {
        Ok(Ok(tls)) => Some(tls),
        Ok(Err(e)) => {
            tracing::debug!(%peer, "TLS handshake failed: {e}");
            None
        }
        Err(_) => {
            tracing::debug!(%peer, "TLS handshake not finished within timeouts.tls_handshake: closing");
            None
        }
    }
}
