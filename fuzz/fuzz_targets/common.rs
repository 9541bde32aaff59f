//! What the HTTP fuzz targets share: weir in process on its own runtime,
//! a short rendering of bytes, and the optional histogram of outcomes.

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

/// Starts, on a thread and runtime of their own for the life of the
/// process, whatever `setup` starts (an upstream) and weir on the config
/// text `setup` returns; weir's data address.
pub fn start_weir<F, Fut>(setup: F) -> SocketAddr
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = String>,
{
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        rt.block_on(async move {
            let text = setup().await;
            let cfg = weir_control::config::parse(&text).expect("fuzz config is valid");
            let weir = weir_proxy::Weir::start(cfg, None).await.expect("weir starts");
            tx.send(weir.data_addr()).unwrap();
            // Serve for the life of the process.
            std::future::pending::<()>().await;
            drop(weir);
        });
    });
    rx.recv_timeout(Duration::from_secs(30)).expect("weir started")
}

/// The first `max` bytes of `b`, as text.
pub fn show(b: &[u8], max: usize) -> String {
    String::from_utf8_lossy(&b[..b.len().min(max)]).into_owned()
}

/// With `WEIR_FUZZ_STATS=1`, counts `key` and prints the histogram (of
/// `what`) every 10 000 inputs, to see what the fuzzer reaches.
pub fn stats(what: &str, key: &str) {
    static ON: OnceLock<bool> = OnceLock::new();
    if !*ON.get_or_init(|| std::env::var_os("WEIR_FUZZ_STATS").is_some()) {
        return;
    }
    static SEEN: Mutex<BTreeMap<String, u64>> = Mutex::new(BTreeMap::new());
    let mut seen = SEEN.lock().unwrap();
    *seen.entry(key.to_string()).or_default() += 1;
    let total: u64 = seen.values().sum();
    if total % 10_000 == 0 {
        eprintln!("{what} after {total} inputs: {seen:?}");
    }
}
