//! gRPC peers for the tests, from tonic (a gRPC implementation weir did not
//! write): a server with every call type and a client for it. Messages are
//! raw bytes (a codec that copies them), so no protobuf schema or `protoc`
//! is needed; what each call does is chosen by its request metadata.
//!
//! The service is `weir.test.Echo`:
//!
//! | method | does |
//! | --- | --- |
//! | `Unary` | answers the payload; `x-status: CODE` fails with that code instead |
//! | `ServerStream` | answers the payload `x-count` times (default 3), then `x-status` if set, with trailing metadata |
//! | `ClientStream` | answers every message received, concatenated |
//! | `Bidi` | answers each message as it arrives |
//! | `Hang` | never answers (counts its cancellation) |
//!
//! Every call answers with `x-served-by: NAME` in its headers; `x-delay-ms`
//! delays the answer. [`EchoState::fail`] makes a share of unary calls fail.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes};
use futures_util::{Stream, StreamExt};
use http::uri::PathAndQuery;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::metadata::{MetadataMap, MetadataValue};
use tonic::transport::{Channel, Server};
use tonic::{Code, Request, Response, Status, Streaming};

/// The service's name, and the path prefix of its methods.
pub const SERVICE: &str = "weir.test.Echo";

/// A codec for raw byte messages.
#[derive(Clone, Copy, Debug, Default)]
pub struct RawCodec;

/// Encodes raw bytes.
#[derive(Debug)]
pub struct RawEncoder;

/// Decodes raw bytes.
#[derive(Debug)]
pub struct RawDecoder;

impl Encoder for RawEncoder {
    type Item = Bytes;
    type Error = Status;
    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put(item);
        Ok(())
    }
}

impl Decoder for RawDecoder {
    type Item = Bytes;
    type Error = Status;
    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Bytes>, Status> {
        Ok(Some(src.copy_to_bytes(src.remaining())))
    }
}

impl Codec for RawCodec {
    type Encode = Bytes;
    type Decode = Bytes;
    type Encoder = RawEncoder;
    type Decoder = RawDecoder;
    fn encoder(&mut self) -> RawEncoder {
        RawEncoder
    }
    fn decoder(&mut self) -> RawDecoder {
        RawDecoder
    }
}

/// What a server saw, shared with the test.
#[derive(Debug, Default)]
pub struct EchoState {
    /// Calls received.
    pub calls: AtomicUsize,
    /// Calls being handled now, and the most at once.
    pub in_flight: AtomicUsize,
    pub peak_in_flight: AtomicUsize,
    /// Calls whose handler was dropped before it answered (the stream was
    /// reset: a client's cancellation, or weir's).
    pub cancelled: AtomicUsize,
    /// TCP connections accepted.
    pub conns: AtomicUsize,
    /// Request headers of the last call (only the last: a soak makes
    /// millions of calls).
    last: Mutex<http::HeaderMap>,
    /// Unary calls fail with this code, `per_mille` of them, spread evenly.
    pub fail: Mutex<Option<(Code, u64)>>,
    fail_counter: AtomicU64,
}

impl EchoState {
    /// Makes `per_mille` of the unary calls from now on fail with `code`.
    pub fn fail(&self, code: Code, per_mille: u64) {
        *self.fail.lock().unwrap() = Some((code, per_mille));
    }

    /// Request headers of the last call.
    pub fn last_seen(&self) -> http::HeaderMap {
        self.last.lock().unwrap().clone()
    }

    fn injected(&self) -> Option<Status> {
        let (code, per_mille) = (*self.fail.lock().unwrap())?;
        let n = self.fail_counter.fetch_add(1, Ordering::Relaxed);
        // Fails when n·p/1000 steps up: exactly p of every 1000, spread out.
        ((n + 1) * per_mille / 1000 != n * per_mille / 1000).then(|| Status::new(code, "injected by the test"))
    }
}

/// Counts a call in flight until dropped; if it was not marked answered,
/// it counts as cancelled.
struct Call {
    state: Arc<EchoState>,
    answered: bool,
}

impl Call {
    fn new(state: &Arc<EchoState>, headers: &http::HeaderMap) -> Call {
        state.calls.fetch_add(1, Ordering::SeqCst);
        *state.last.lock().unwrap() = headers.clone();
        let now = state.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        state.peak_in_flight.fetch_max(now, Ordering::SeqCst);
        Call { state: state.clone(), answered: false }
    }
}

impl Drop for Call {
    fn drop(&mut self) {
        self.state.in_flight.fetch_sub(1, Ordering::SeqCst);
        if !self.answered {
            self.state.cancelled.fetch_add(1, Ordering::SeqCst);
        }
    }
}

fn meta<'a>(md: &'a MetadataMap, key: &str) -> Option<&'a str> {
    md.get(key).and_then(|v| v.to_str().ok())
}

fn status_from(md: &MetadataMap) -> Option<Status> {
    let code: i32 = meta(md, "x-status")?.parse().ok()?;
    let mut trailing = MetadataMap::new();
    trailing.insert("x-trailing", MetadataValue::from_static("kept"));
    Some(Status::with_metadata(Code::from_i32(code), format!("asked for {code}"), trailing))
}

async fn delay(md: &MetadataMap) {
    if let Some(ms) = meta(md, "x-delay-ms").and_then(|v| v.parse().ok()) {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
}

fn answer<T>(name: &'static str, body: T) -> Response<T> {
    let mut r = Response::new(body);
    r.metadata_mut().insert("x-served-by", MetadataValue::from_static(name));
    r
}

type BoxStream = Pin<Box<dyn Stream<Item = Result<Bytes, Status>> + Send>>;
type BoxFuture<T> = Pin<Box<dyn std::future::Future<Output = T> + Send>>;

/// The `weir.test.Echo` service.
#[derive(Clone, Debug)]
pub struct Echo {
    pub name: &'static str,
    pub state: Arc<EchoState>,
}

impl tonic::server::NamedService for Echo {
    const NAME: &'static str = SERVICE;
}

impl<B> tower::Service<http::Request<B>> for Echo
where
    B: http_body::Body + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>> + Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let (name, state) = (self.name, self.state.clone());
        let mut grpc = tonic::server::Grpc::new(RawCodec).max_decoding_message_size(64 << 20);
        let method = req.uri().path().trim_start_matches(&format!("/{SERVICE}/")).to_string();
        Box::pin(async move {
            let mut call = Call::new(&state, req.headers());
            let resp = match method.as_str() {
                "Unary" => {
                    let st = state.clone();
                    let svc = tower::service_fn(move |r: Request<Bytes>| {
                        let st = st.clone();
                        async move {
                            delay(r.metadata()).await;
                            if let Some(s) = status_from(r.metadata()).or_else(|| st.injected()) {
                                return Err(s);
                            }
                            let mut resp = answer(name, r.get_ref().clone());
                            if let Some(v) = r.metadata().get("x-echo") {
                                resp.metadata_mut().insert("x-echo", v.clone());
                            }
                            Ok(resp)
                        }
                    });
                    grpc.unary(svc, req).await
                }
                "ServerStream" => {
                    let svc = tower::service_fn(move |r: Request<Bytes>| async move {
                        delay(r.metadata()).await;
                        let n: usize = meta(r.metadata(), "x-count").and_then(|v| v.parse().ok()).unwrap_or(3);
                        let end = status_from(r.metadata());
                        let payload = r.into_inner();
                        let items = (0..n).map(move |_| Ok(payload.clone())).chain(end.map(Err));
                        Ok::<_, Status>(answer(name, Box::pin(futures_util::stream::iter(items)) as BoxStream))
                    });
                    grpc.server_streaming(svc, req).await
                }
                "ClientStream" => {
                    let svc = tower::service_fn(move |r: Request<Streaming<Bytes>>| async move {
                        let mut all = Vec::new();
                        let mut s = r.into_inner();
                        while let Some(m) = s.next().await {
                            all.extend_from_slice(&m?);
                        }
                        Ok::<_, Status>(answer(name, Bytes::from(all)))
                    });
                    grpc.client_streaming(svc, req).await
                }
                "Bidi" => {
                    let svc = tower::service_fn(move |r: Request<Streaming<Bytes>>| async move {
                        Ok::<_, Status>(answer(name, Box::pin(r.into_inner()) as BoxStream))
                    });
                    grpc.streaming(svc, req).await
                }
                "Hang" => {
                    // Dropped by the server when the stream is reset.
                    std::future::pending::<()>().await;
                    unreachable!()
                }
                _ => {
                    let svc = tower::service_fn(|_: Request<Bytes>| async {
                        Err::<Response<Bytes>, _>(Status::unimplemented("no such method"))
                    });
                    grpc.unary(svc, req).await
                }
            };
            call.answered = true;
            Ok(resp)
        })
    }
}

/// How a test server is set up.
#[derive(Clone, Debug, Default)]
pub struct ServerOpts {
    /// `SETTINGS_MAX_CONCURRENT_STREAMS` the server announces.
    pub max_concurrent_streams: Option<u32>,
    /// TLS with this certificate and key (PEM); ALPN h2.
    pub tls: Option<(String, String)>,
}

/// A running tonic server with [`Echo`] and the standard health service.
pub struct GrpcServer {
    pub addr: SocketAddr,
    pub state: Arc<EchoState>,
    /// The health service's reporter (`grpc.health.v1.Health`).
    pub health: tonic_health::server::HealthReporter,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for GrpcServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl GrpcServer {
    /// Starts a plaintext (h2c) server answering as `name`.
    pub async fn start(name: &'static str) -> GrpcServer {
        Self::start_with(name, ServerOpts::default()).await
    }

    pub async fn start_with(name: &'static str, opts: ServerOpts) -> GrpcServer {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(EchoState::default());
        let (health, health_service) = tonic_health::server::health_reporter();
        let mut builder = Server::builder().max_concurrent_streams(opts.max_concurrent_streams);
        if let Some((cert, key)) = &opts.tls {
            let identity = tonic::transport::Identity::from_pem(cert, key);
            builder = builder.tls_config(tonic::transport::ServerTlsConfig::new().identity(identity)).unwrap();
        }
        let router = builder.add_service(health_service).add_service(Echo { name, state: state.clone() });
        let conns = state.clone();
        let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener).inspect(move |c| {
            if c.is_ok() {
                conns.conns.fetch_add(1, Ordering::SeqCst);
            }
        });
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let _ = router
                .serve_with_incoming_shutdown(incoming, async {
                    let _ = rx.await;
                })
                .await;
        });
        GrpcServer { addr, state, health, shutdown: Some(tx), task }
    }

    /// Starts a graceful shutdown (GOAWAY to every connection; calls in
    /// flight finish); returns when the server has stopped.
    pub async fn shut_down(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        let _ = (&mut self.task).await;
    }
}

/// A tonic client on one channel (one HTTP/2 connection).
#[derive(Clone, Debug)]
pub struct Caller {
    grpc: tonic::client::Grpc<Channel>,
}

fn path(method: &str) -> PathAndQuery {
    PathAndQuery::try_from(format!("/{SERVICE}/{method}")).unwrap()
}

fn request<T>(msg: T, md: &[(&'static str, &str)]) -> Request<T> {
    let mut r = Request::new(msg);
    for (k, v) in md {
        r.metadata_mut().insert(*k, v.parse().unwrap());
    }
    r
}

impl Caller {
    /// A plaintext (h2c, prior knowledge) channel to `addr`.
    pub async fn connect(addr: SocketAddr) -> Caller {
        Self::try_connect(addr).await.unwrap()
    }

    /// [`Caller::connect`], with its error (for the soak, which counts it).
    pub async fn try_connect(addr: SocketAddr) -> Result<Caller, tonic::transport::Error> {
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))?.connect().await?;
        Ok(Caller { grpc: tonic::client::Grpc::new(channel).max_decoding_message_size(64 << 20) })
    }

    /// A TLS channel to `addr`, verifying `domain` against `ca_pem`.
    pub async fn connect_tls(addr: SocketAddr, domain: &str, ca_pem: &str) -> Caller {
        let tls = tonic::transport::ClientTlsConfig::new()
            .ca_certificate(tonic::transport::Certificate::from_pem(ca_pem))
            .domain_name(domain);
        let channel = tonic::transport::Endpoint::from_shared(format!("https://{addr}"))
            .unwrap()
            .tls_config(tls)
            .unwrap()
            .connect()
            .await
            .unwrap();
        Caller { grpc: tonic::client::Grpc::new(channel).max_decoding_message_size(64 << 20) }
    }

    /// Waits until the channel can take a call; a broken channel is the
    /// call's `UNAVAILABLE`, as tonic's own generated clients answer.
    async fn ready(&mut self) -> Result<(), Status> {
        self.grpc.ready().await.map_err(|e| Status::unavailable(format!("channel not ready: {e}")))
    }

    /// A call to any path of the server (`/pkg.Service/Method`).
    pub async fn unary_to(
        &mut self,
        path: &str,
        payload: Bytes,
        md: &[(&'static str, &str)],
    ) -> Result<Response<Bytes>, Status> {
        self.ready().await?;
        self.grpc.unary(request(payload, md), PathAndQuery::try_from(path.to_string()).unwrap(), RawCodec).await
    }

    pub async fn unary(&mut self, payload: Bytes, md: &[(&'static str, &str)]) -> Result<Response<Bytes>, Status> {
        self.ready().await?;
        self.grpc.unary(request(payload, md), path("Unary"), RawCodec).await
    }

    /// `Unary` with a deadline (sent as `grpc-timeout`).
    pub async fn unary_within(&mut self, payload: Bytes, timeout: Duration) -> Result<Response<Bytes>, Status> {
        self.ready().await?;
        let mut r = request(payload, &[]);
        r.set_timeout(timeout);
        self.grpc.unary(r, path("Unary"), RawCodec).await
    }

    /// `Hang`, with a deadline if given.
    pub async fn hang(&mut self, timeout: Option<Duration>) -> Result<Response<Bytes>, Status> {
        self.ready().await?;
        let mut r = request(Bytes::new(), &[]);
        if let Some(t) = timeout {
            r.set_timeout(t);
        }
        self.grpc.unary(r, path("Hang"), RawCodec).await
    }

    /// `ServerStream`: every message received, then the call's end (its
    /// status, and the trailing metadata).
    pub async fn server_stream(
        &mut self,
        payload: Bytes,
        md: &[(&'static str, &str)],
    ) -> Result<(MetadataMap, Vec<Bytes>, Result<Option<MetadataMap>, Status>), Status> {
        self.ready().await?;
        let resp = self.grpc.server_streaming(request(payload, md), path("ServerStream"), RawCodec).await?;
        let headers = resp.metadata().clone();
        let mut s = resp.into_inner();
        let mut got = Vec::new();
        let end = loop {
            match s.message().await {
                Ok(Some(m)) => got.push(m),
                Ok(None) => break s.trailers().await,
                Err(e) => break Err(e),
            }
        };
        Ok((headers, got, end))
    }

    pub async fn client_stream(&mut self, msgs: Vec<Bytes>) -> Result<Response<Bytes>, Status> {
        self.ready().await?;
        let r = request(futures_util::stream::iter(msgs), &[]);
        self.grpc.client_streaming(r, path("ClientStream"), RawCodec).await
    }

    /// `Bidi`: sends the messages one at a time, each only once the answer
    /// to the previous one came back (so nothing can be buffered whole).
    pub async fn bidi_ping_pong(&mut self, msgs: Vec<Bytes>) -> Result<Vec<Bytes>, Status> {
        self.ready().await?;
        let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(1);
        let outgoing = tokio_stream::wrappers::ReceiverStream::new(rx);
        let mut first = msgs.into_iter();
        if let Some(m) = first.next() {
            tx.send(m).await.unwrap();
        }
        let resp = self.grpc.streaming(Request::new(outgoing), path("Bidi"), RawCodec).await?;
        let mut s = resp.into_inner();
        let mut got = Vec::new();
        let mut tx = Some(tx);
        while let Some(m) = s.message().await? {
            got.push(m);
            match first.next() {
                // A refused send means the call is over: its end says why.
                Some(next) => {
                    if let Some(t) = &tx {
                        if t.send(next).await.is_err() {
                            tx = None;
                        }
                    }
                }
                None => tx = None, // end of the request stream
            }
        }
        Ok(got)
    }

    /// `grpc.health.v1.Health/Check` for `service` ("" = the server).
    pub async fn health(&mut self, service: &str) -> Result<i32, Status> {
        use tonic_health::pb::{HealthCheckRequest, HealthCheckResponse};
        self.ready().await?;
        let codec = tonic_prost::ProstCodec::<HealthCheckRequest, HealthCheckResponse>::default();
        let r = Request::new(HealthCheckRequest { service: service.to_string() });
        let p = PathAndQuery::from_static("/grpc.health.v1.Health/Check");
        Ok(self.grpc.unary(r, p, codec).await?.into_inner().status)
    }
}
