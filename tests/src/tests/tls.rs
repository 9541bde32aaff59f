//! TLS: termination with SNI and ALPN (checked with curl), upstream TLS with
//! verification, SNI override, HTTP/2 and mTLS, and certificate rotation.

use std::path::Path;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::tls::{Ca, TlsConn, TlsUpstream};
use crate::*;

/// Runs curl against `https://NAME:PORT/PATH` resolved to `addr`, trusting
/// `ca`; returns (exit code, stdout).
async fn curl(addr: SocketAddr, name: &str, path: &str, ca: &Path, extra: &[&str]) -> (i32, String) {
    let port = addr.port();
    let out = tokio::process::Command::new("curl")
        .args(["-sS", "--max-time", "10", "--cacert"])
        .arg(ca)
        .args(["--resolve", &format!("{name}:{port}:127.0.0.1")])
        .args(extra)
        .arg(format!("https://{name}:{port}{path}"))
        .output()
        .await
        .expect("curl (Debian package curl) must be installed");
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stdout).into_owned())
}

fn tls_section(dir: &Path, ca: &Ca) -> String {
    let (c, k) = ca.leaf(&["weir.test"], false).write(dir, "default");
    let (ac, ak) = ca.leaf(&["api.test", "*.api.test"], false).write(dir, "api");
    format!(
        "tls = {{ cert = \"{}\", key = \"{}\", sni = [{{ names = [\"api.test\", \"*.api.test\"], cert = \"{}\", key = \"{}\" }}] }}",
        c.display(),
        k.display(),
        ac.display(),
        ak.display()
    )
}

/// A config whose `[listen]` has `listen_extra` (the TLS line).
fn tls_config(stable: SocketAddr, canary: SocketAddr, listen_extra: &str, top_extra: &str) -> String {
    config_text(stable, canary, "", top_extra).replacen(
        "[listen]\naddr = \"127.0.0.1:0\"",
        &format!("[listen]\naddr = \"127.0.0.1:0\"\n{listen_extra}"),
        1,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_gets_h2_or_http11_by_alpn_and_sni_picks_the_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("weir test CA");
    let ca_file = ca.write(dir.path(), "ca");
    let stable = Upstream::start("stable", Mode::Named).await;
    let canary = Upstream::start("canary", Mode::Named).await;
    let w = InProcess::start(&tls_config(stable.addr, canary.addr, &tls_section(dir.path(), &ca), "")).await;
    let addr = w.weir.data_addr();

    let (code, out) = curl(addr, "weir.test", "/", &ca_file, &["--http2", "-w", " %{http_version}"]).await;
    assert_eq!((code, out.as_str()), (0, "stable 2"));
    let (code, out) = curl(addr, "weir.test", "/", &ca_file, &["--http1.1", "-w", " %{http_version}"]).await;
    assert_eq!((code, out.as_str()), (0, "stable 1.1"));
    // curl verifies the name: success proves which certificate was served.
    assert_eq!(curl(addr, "api.test", "/", &ca_file, &[]).await, (0, "stable".to_string()));
    assert_eq!(curl(addr, "eu.api.test", "/", &ca_file, &[]).await, (0, "stable".to_string()));
    // An unknown name gets the default certificate, which is not valid for
    // it: curl refuses it (exit 60: peer certificate cannot be authenticated).
    assert_eq!(curl(addr, "other.test", "/", &ca_file, &[]).await.0, 60);
    let mut c = TlsConn::open(addr, "other.test", &ca).await;
    assert!(c.is_err(), "the default certificate is not valid for other.test");
    c = TlsConn::open(addr, "weir.test", &ca).await;
    assert_eq!(c.unwrap().get("weir.test", "/").await, 200);
    // The upstream learns the client came over TLS.
    let seen = stable.seen.lock().unwrap().clone();
    assert!(!seen.is_empty() && seen.iter().all(|s| s.headers["x-forwarded-proto"] == "https"), "{seen:?}");
}

/// HTTP/1.1 over TLS is served by weir's own loop, as plaintext is, and
/// handed to hyper at the first request that loop does not serve (one with
/// a body): on one TLS connection, GETs with a 3 MiB streamed answer, a
/// POST, and GETs after it all arrive whole, each once at the upstream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http11_over_tls_keeps_one_connection_through_weirs_loop_and_hypers() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("weir test CA");
    const SIZE: usize = 3 * 1024 * 1024;
    let stable = Upstream::start("stable", Mode::Stream(SIZE as u64)).await;
    let canary = Upstream::start("canary", Mode::Named).await;
    let w = InProcess::start(&tls_config(stable.addr, canary.addr, &tls_section(dir.path(), &ca), "")).await;
    let mut c = TlsConn::open(w.weir.data_addr(), "weir.test", &ca).await.unwrap();
    let get = || http::Request::get("/big").header("host", "weir.test").body(Full::new(Bytes::new())).unwrap();
    for _ in 0..3 {
        let (status, body) = c.send(get()).await;
        assert_eq!((status, body.len()), (200, SIZE));
    }
    let post =
        http::Request::post("/form").header("host", "weir.test").body(Full::new(Bytes::from_static(b"a=1"))).unwrap();
    let (status, body) = c.send(post).await;
    assert_eq!((status, body.len()), (200, SIZE));
    for _ in 0..2 {
        let (status, body) = c.send(get()).await;
        assert_eq!((status, body.len()), (200, SIZE));
    }
    assert_eq!(stable.count(), 6);
    let seen = stable.seen.lock().unwrap().clone();
    assert!(seen.iter().all(|s| s.headers["x-forwarded-proto"] == "https"), "{seen:?}");
    assert_eq!(seen.iter().filter(|s| s.path == "/form").count(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plaintext_on_a_tls_port_gets_no_http_answer() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("weir test CA");
    let stable = Upstream::start("stable", Mode::Named).await;
    let w = InProcess::start(&tls_config(stable.addr, stable.addr, &tls_section(dir.path(), &ca), "")).await;
    let mut s = TcpStream::connect(w.weir.data_addr()).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nhost: weir.test\r\n\r\n").await.unwrap();
    let mut got = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut got)).await.unwrap();
    assert!(!got.starts_with(b"HTTP/"), "plaintext was served: {:?}", String::from_utf8_lossy(&got));
    assert_eq!(stable.count(), 0);
    // The port still serves TLS clients.
    assert_eq!(TlsConn::open(w.weir.data_addr(), "weir.test", &ca).await.unwrap().get("weir.test", "/").await, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_tls_handshake_is_cut_at_the_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("weir test CA");
    let stable = Upstream::start("stable", Mode::Named).await;
    let w = InProcess::start(&tls_config(
        stable.addr,
        stable.addr,
        &tls_section(dir.path(), &ca),
        "[timeouts]\ntls_handshake = \"300ms\"",
    ))
    .await;
    let started = Instant::now();
    let mut s = TcpStream::connect(w.weir.data_addr()).await.unwrap();
    // Half a ClientHello record header, then nothing.
    s.write_all(&[0x16, 0x03, 0x01]).await.unwrap();
    let mut buf = [0u8; 64];
    let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await.unwrap();
    assert!(matches!(n, Ok(0) | Err(_)), "expected the connection to be closed, got {n:?}");
    assert!(started.elapsed() >= Duration::from_millis(250), "{:?}", started.elapsed());
}

/// A config whose backends speak TLS to upstreams (`stable_tls` and
/// `canary_tls` are the backends' `tls` values).
fn upstream_tls_config(stable: SocketAddr, canary: SocketAddr, stable_tls: &str, canary_tls: &str) -> String {
    config_text(stable, canary, "force = { header = \"x-canary\" }", "")
        .replacen("version = \"v1\"", &format!("version = \"v1\"\ntls = {stable_tls}\nhttp2 = true"), 1)
        .replacen("version = \"v2\"", &format!("version = \"v2\"\ntls = {canary_tls}"), 1)
}

async fn fetch(w: &InProcess, headers: &[(&str, &str)]) -> (u16, String, http::HeaderMap) {
    let mut b = Request::get(w.url("/"));
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    let resp = client().request(b.body(Full::new(Bytes::new())).unwrap()).await.unwrap();
    let (parts, body) = resp.into_parts();
    let body = body.collect().await.unwrap().to_bytes();
    (parts.status.as_u16(), String::from_utf8_lossy(&body).into_owned(), parts.headers)
}

async fn upstream_errors(w: &InProcess, backend: &str, kind: &str) -> f64 {
    let (_, text) = get(&client(), &format!("http://{}/metrics", w.weir.admin_addr()), &[]).await;
    sample(
        &parse_prometheus(&text),
        "weir_upstream_errors_total",
        &[("route", "web"), ("backend", backend), ("kind", kind)],
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_tls_verifies_with_a_ca_and_server_name_and_speaks_h2() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("upstream CA");
    let ca_file = ca.write(dir.path(), "ca");
    let up = TlsUpstream::start("secure", &ca.leaf(&["stable.internal"], false), None).await;
    let plain = Upstream::start("canary", Mode::Named).await;
    let tls = format!("{{ ca = \"{}\", server_name = \"stable.internal\" }}", ca_file.display());
    let w = InProcess::start(&upstream_tls_config(up.addr, plain.addr, &tls, "false")).await;
    let (status, body, headers) = fetch(&w, &[]).await;
    assert_eq!((status, body.as_str()), (200, "secure"));
    assert_eq!(headers["x-seen-version"], "HTTP/2.0", "http2 = true negotiates h2 by ALPN");
    assert_eq!(headers["x-client-cert"], "no");
    // The canary backend stays plaintext.
    assert_eq!(fetch(&w, &[("x-canary", "always")]).await.0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn untrusted_expired_or_misnamed_upstream_certificates_are_502_tls() {
    let dir = tempfile::tempdir().unwrap();
    let trusted = Ca::new("trusted CA");
    let ca_file = trusted.write(dir.path(), "ca");
    let rogue = Ca::new("rogue CA");
    let untrusted = TlsUpstream::start("untrusted", &rogue.leaf(&["stable.internal"], false), None).await;
    let expired = TlsUpstream::start("expired", &trusted.leaf(&["stable.internal"], true), None).await;
    for (up, name) in [(&untrusted, "stable.internal"), (&expired, "stable.internal"), (&expired, "other.internal")] {
        let tls = format!("{{ ca = \"{}\", server_name = \"{name}\" }}", ca_file.display());
        let w = InProcess::start(&upstream_tls_config(up.addr, up.addr, &tls, &tls)).await;
        let (status, body, _) = fetch(&w, &[]).await;
        assert_eq!(status, 502, "{body}");
        assert!(body.contains("TLS"), "{body}");
        assert_eq!(upstream_errors(&w, "stable", "tls").await, 1.0);
        assert_eq!(upstream_errors(&w, "stable", "connect").await, 0.0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mtls_upstream_accepts_the_client_certificate_and_refuses_without() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("mesh CA");
    let ca_file = ca.write(dir.path(), "ca");
    let (cc, ck) = ca.leaf(&["weir.client"], false).write(dir.path(), "client");
    let up = TlsUpstream::start("mtls", &ca.leaf(&["127.0.0.1"], false), Some(&ca)).await;
    // No server_name: the address's host (an IP) is verified.
    let with = format!("{{ ca = \"{}\", cert = \"{}\", key = \"{}\" }}", ca_file.display(), cc.display(), ck.display());
    let without = format!("{{ ca = \"{}\" }}", ca_file.display());
    let w = InProcess::start(&upstream_tls_config(up.addr, up.addr, &with, &without)).await;
    let (status, body, headers) = fetch(&w, &[]).await;
    assert_eq!((status, body.as_str()), (200, "mtls"));
    assert_eq!(headers["x-client-cert"], "yes");
    let (status, body, _) = fetch(&w, &[("x-canary", "always")]).await;
    assert_eq!(status, 502, "{body}");
    assert_eq!(upstream_errors(&w, "canary", "tls").await, 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotated_certificate_serves_new_connections_while_an_open_one_keeps_working() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("weir test CA");
    let first = ca.leaf(&["weir.test"], false);
    let (cert, key) = first.write(dir.path(), "edge");
    let stable = Upstream::start("stable", Mode::Named).await;
    let line = format!("tls = {{ cert = \"{}\", key = \"{}\" }}", cert.display(), key.display());
    let w = InProcess::start(&tls_config(stable.addr, stable.addr, &line, "")).await;
    let addr = w.weir.data_addr();
    let mut open = TlsConn::open(addr, "weir.test", &ca).await.unwrap();
    assert_eq!(open.served, first.der);
    assert_eq!(open.get("weir.test", "/").await, 200);

    // Rotate: both files replaced by rename, as cert-manager or an editor does.
    let second = ca.leaf(&["weir.test"], false);
    second.write(dir.path(), "next");
    std::fs::rename(dir.path().join("next.key"), &key).unwrap();
    std::fs::rename(dir.path().join("next.pem"), &cert).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let c = TlsConn::open(addr, "weir.test", &ca).await.unwrap();
        if c.served == second.der {
            break;
        }
        assert!(Instant::now() < deadline, "the rotated certificate was never served");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The connection opened before the rotation still works.
    assert_eq!(open.get("weir.test", "/").await, 200);

    // A broken certificate is rejected: the rotated one keeps serving.
    let reloads = w.weir.reload().await;
    assert!(reloads.is_ok());
    std::fs::write(&cert, "not a certificate").unwrap();
    let err = w.weir.reload().await.unwrap_err().to_string();
    assert!(err.contains("listen.tls.cert") && err.contains("no PEM certificate"), "{err}");
    let c = TlsConn::open(addr, "weir.test", &ca).await.unwrap();
    assert_eq!(c.served, second.der);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_api_over_tls() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("weir test CA");
    let ca_file = ca.write(dir.path(), "ca");
    let (c, k) = ca.leaf(&["admin.test", "127.0.0.1"], false).write(dir.path(), "admin");
    let stable = Upstream::start("stable", Mode::Named).await;
    let line = format!("tls = {{ cert = \"{}\", key = \"{}\" }}", c.display(), k.display());
    let text = config_text(stable.addr, stable.addr, "", "").replacen(
        "[admin]\naddr = \"127.0.0.1:0\"",
        &format!("[admin]\naddr = \"127.0.0.1:0\"\n{line}"),
        1,
    );
    let w = InProcess::start(&text).await;
    let (code, out) = curl(w.weir.admin_addr(), "admin.test", "/api/v1/routes", &ca_file, &[]).await;
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("\"web\""), "{out}");
    // weir ctl over TLS: trusting the CA with --ca; refused without it.
    let admin = format!("https://127.0.0.1:{}", w.weir.admin_addr().port());
    let ctl = |extra: Vec<String>| {
        let admin = admin.clone();
        async move {
            tokio::process::Command::new(crate::weir_bin())
                .args(["ctl", "status", "--admin", &admin])
                .args(extra)
                .env_remove("WEIR_ADMIN_CA")
                .output()
                .await
                .unwrap()
        }
    };
    let ok = ctl(vec!["--ca".into(), ca_file.display().to_string()]).await;
    assert!(ok.status.success(), "{}", String::from_utf8_lossy(&ok.stderr));
    assert!(String::from_utf8_lossy(&ok.stdout).contains("web"));
    let refused = ctl(vec![]).await;
    let err = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(refused.status.code(), Some(5), "{err}");
    assert!(err.contains("invalid peer certificate"), "{err}");
}

/// A reload rejected for its certificate changes nothing live: a route whose
/// rollout definition the same config also changed keeps its stage, weight
/// and engine. (The build used to reset the route's live state before it
/// reached the certificates, so the old config kept serving without its
/// rollout.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_rejected_for_its_certificate_leaves_the_rollouts_where_they_were() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("weir test CA");
    let (cert, key) = ca.leaf(&["weir.test"], false).write(dir.path(), "edge");
    let stable = Upstream::start("stable", Mode::Named).await;
    let canary = Upstream::start("canary", Mode::Named).await;
    let line = format!("tls = {{ cert = \"{}\", key = \"{}\" }}", cert.display(), key.display());
    let text = |max: &str| {
        let rollout = format!(
            "[routes.rollout]\nstages = [{{ weight = 10, bake = \"10m\" }}, {{ weight = 50, bake = \"10m\" }}, {{ weight = 100 }}]\ngates = [{{ metric = \"error_rate\", max = {max} }}]"
        );
        config_text(stable.addr, canary.addr, &rollout, "").replacen(
            "[listen]\naddr = \"127.0.0.1:0\"",
            &format!("[listen]\naddr = \"127.0.0.1:0\"\n{line}"),
            1,
        )
    };
    let w = InProcess::start(&text("0.05")).await;
    w.weir.act("web", weir_proxy::ManualAction::Promote).await.unwrap();
    assert_eq!(w.weir.route_weight_bp("web"), Some(5000));

    // A new rollout definition (it would restart at stage 0) and a broken
    // certificate, in one reload.
    std::fs::write(&cert, "not a certificate").unwrap();
    let next = dir.path().join("next.toml");
    std::fs::write(&next, text("0.10")).unwrap();
    let err = w.weir.apply(weir_proxy::reload::read_config(&next).unwrap()).await.unwrap_err().to_string();
    assert!(err.contains("listen.tls.cert"), "{err}");
    assert_eq!(w.weir.route_weight_bp("web"), Some(5000), "the weight is where it was");
    let state = w.weir.rollout("web").expect("the rollout engine is still there");
    assert_eq!(state.stage, 1);
    assert_eq!(state.phase, weir_control::rollout::Phase::Progressing);
}
