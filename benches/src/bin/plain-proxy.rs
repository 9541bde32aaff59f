//! The reference for `benches/load.sh`: the plainest hyper 1.x reverse proxy
//! (one current-thread runtime, HTTP/1.1 server, hyper-util's pooled client,
//! 90/10 split by a counter, no routing, no header hygiene, no telemetry).
//! What weir costs beyond it is what weir's features cost.
//!
//!   plain-proxy LISTEN_ADDR STABLE_ADDR CANARY_ADDR

use std::cell::Cell;
use std::convert::Infallible;
use std::net::SocketAddr;

use http_body_util::combinators::BoxBody;
use http_body_util::BodyExt;
use hyper::body::{Bytes, Incoming};
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode, Uri};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};

thread_local! {
    static SEQ: Cell<u64> = const { Cell::new(0) };
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let parse = |i: usize| -> Option<SocketAddr> { args.get(i)?.parse().ok() };
    let (Some(listen), Some(stable), Some(canary)) = (parse(1), parse(2), parse(3)) else {
        eprintln!("usage: plain-proxy LISTEN_ADDR STABLE_ADDR CANARY_ADDR");
        std::process::exit(2);
    };
    let rt = weir_benches::current_thread_runtime();
    if let Err(e) = rt.block_on(serve(listen, stable, canary)) {
        eprintln!("plain-proxy: {e}");
        std::process::exit(1);
    }
}

async fn serve(listen: SocketAddr, stable: SocketAddr, canary: SocketAddr) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(listen).await?;
    let client: Client<HttpConnector, Incoming> = Client::builder(TokioExecutor::new()).build_http();
    loop {
        let (stream, _) = listener.accept().await?;
        let _ = stream.set_nodelay(true);
        let client = client.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req: Request<Incoming>| {
                let client = client.clone();
                async move {
                    let n = SEQ.with(|c| {
                        let n = c.get();
                        c.set(n + 1);
                        n
                    });
                    let to = if n % 10 == 9 { canary } else { stable };
                    let (mut parts, body) = req.into_parts();
                    let pq = parts.uri.path_and_query().map_or("/", |p| p.as_str());
                    parts.uri = match format!("http://{to}{pq}").parse::<Uri>() {
                        Ok(u) => u,
                        Err(_) => return Ok::<_, Infallible>(status(StatusCode::BAD_REQUEST)),
                    };
                    Ok(match client.request(Request::from_parts(parts, body)).await {
                        Ok(resp) => resp.map(|b| b.map_err(|e| Box::new(e) as _).boxed()),
                        Err(_) => status(StatusCode::BAD_GATEWAY),
                    })
                }
            });
            let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), svc).await;
        });
    }
}

type Body = BoxBody<Bytes, Box<dyn std::error::Error + Send + Sync>>;

fn status(s: StatusCode) -> Response<Body> {
    let mut r = Response::new(http_body_util::Empty::new().map_err(|never| match never {}).boxed());
    *r.status_mut() = s;
    r
}
