//! 100 MB bodies stream through the real binary without being buffered.

use std::time::Duration;

use crate::*;

const SIZE: u64 = 100 * 1024 * 1024;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundred_megabyte_bodies_stream_both_ways_in_bounded_memory() {
    let sink = Upstream::start("sink", Mode::CountBody).await;
    let source = Upstream::start("source", Mode::Stream(SIZE)).await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("weir.toml");
    // stable counts request bodies; canary (forced) streams a response.
    std::fs::write(&path, config_text(sink.addr, source.addr, "force = { header = \"x-canary\" }", "")).unwrap();
    let p = Process::spawn(&path);
    let base = format!("http://{}/", p.data_addr);

    // Warm up, then take the baseline.
    assert_eq!(get(&client(), &base, &[]).await.0, 200);
    let baseline = p.rss_kib().unwrap();

    // Request body: 100 MB streamed up.
    let chunk = Bytes::from(vec![b'y'; 64 * 1024]);
    let n = SIZE / chunk.len() as u64;
    let stream = futures_util::stream::iter(
        (0..n).map(move |_| Ok::<_, std::io::Error>(hyper::body::Frame::data(chunk.clone()))),
    );
    let body = http_body_util::StreamBody::new(stream);
    let up: Client<HttpConnector, _> = Client::builder(TokioExecutor::new()).build_http();
    let resp = up.request(Request::post(&base).body(body).unwrap()).await.unwrap();
    assert_eq!(resp.status(), 200);
    let got = resp.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(got, SIZE.to_string());

    // Response body: 100 MB streamed down.
    let c = client();
    let req = Request::get(&base).header("x-canary", "always").body(Full::new(Bytes::new())).unwrap();
    let resp = c.request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    let mut body = resp.into_body();
    let mut total = 0u64;
    while let Some(frame) = body.frame().await {
        if let Ok(d) = frame.unwrap().into_data() {
            total += d.len() as u64;
        }
    }
    assert_eq!(total, SIZE);

    let peak = p.peak_rss_kib().unwrap();
    let grew = peak.saturating_sub(baseline);
    eprintln!("weir RSS: baseline {baseline} KiB, peak {peak} KiB, grew {grew} KiB");
    assert!(grew < 20 * 1024, "RSS grew by {grew} KiB");
    let _ = Duration::ZERO;
}
