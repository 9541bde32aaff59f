//! Headless Chromium driven over the DevTools protocol (a WebSocket), for
//! dashboard tests: navigate, evaluate JavaScript, click, screenshot.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// A running headless Chromium with one page.
pub struct Browser {
    child: Child,
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    next_id: u64,
    _profile: tempfile::TempDir,
}

impl Browser {
    /// Starts Chromium (Debian's `chromium`, installed by `.ci/run`).
    pub async fn launch() -> Browser {
        let profile = tempfile::tempdir().unwrap();
        let mut child = Command::new("chromium")
            .args([
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--remote-debugging-address=127.0.0.1",
                "--remote-debugging-port=0",
                "--window-size=1280,900",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("about:blank")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("chromium (Debian package) is needed: .ci/run installs it");
        // "DevTools listening on ws://127.0.0.1:PORT/devtools/browser/ID"
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(i) = line.find("ws://") {
                    let _ = tx.send(line[i..].trim().to_string());
                }
            }
        });
        let browser_ws = rx.recv_timeout(Duration::from_secs(30)).expect("chromium did not start");
        let port: u16 = browser_ws["ws://127.0.0.1:".len()..].split('/').next().unwrap().parse().unwrap();
        // The page target opened with about:blank.
        let (_, list) = crate::get(&crate::client(), &format!("http://127.0.0.1:{port}/json/list"), &[]).await;
        let targets: serde_json::Value = serde_json::from_str(&list).unwrap();
        let page = targets.as_array().unwrap().iter().find(|t| t["type"] == "page").expect("a page target");
        let url = page["webSocketDebuggerUrl"].as_str().unwrap().to_string();
        let (ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
        Browser { child, ws, next_id: 0, _profile: profile }
    }

    /// Calls a DevTools method and returns its result.
    pub async fn call(&mut self, method: &str, params: serde_json::Value) -> serde_json::Value {
        self.next_id += 1;
        let id = self.next_id;
        let msg = serde_json::json!({ "id": id, "method": method, "params": params });
        self.ws.send(Message::text(msg.to_string())).await.unwrap();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let msg =
                tokio::time::timeout_at(deadline, self.ws.next()).await.expect("devtools answer").unwrap().unwrap();
            let Ok(text) = msg.into_text() else { continue };
            let v: serde_json::Value = serde_json::from_str(text.as_str()).unwrap();
            if v["id"] == id {
                assert!(v["error"].is_null(), "{method}: {}", v["error"]);
                return v["result"].clone();
            }
        }
    }

    /// Evaluates JavaScript in the page and returns its value.
    pub async fn eval(&mut self, expr: &str) -> serde_json::Value {
        let r = self
            .call(
                "Runtime.evaluate",
                serde_json::json!({ "expression": expr, "returnByValue": true, "awaitPromise": true }),
            )
            .await;
        assert!(r["exceptionDetails"].is_null(), "{expr}: {}", r["exceptionDetails"]);
        r["result"]["value"].clone()
    }

    /// Evaluates `expr` until it is truthy (the page polls on its own
    /// schedule, so there is no event to wait on), up to `timeout`.
    pub async fn wait_for(&mut self, expr: &str, timeout: Duration) -> serde_json::Value {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let v = self.eval(expr).await;
            if !(v.is_null() || v == false || v == "") {
                return v;
            }
            assert!(tokio::time::Instant::now() < deadline, "page never satisfied {expr}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Opens `url` in the page.
    pub async fn navigate(&mut self, url: &str) {
        self.call("Page.navigate", serde_json::json!({ "url": url })).await;
    }

    /// Saves a PNG screenshot of the page (what the window shows).
    pub async fn screenshot(&mut self, path: &std::path::Path) {
        self.capture(path, serde_json::json!({ "format": "png" })).await;
    }

    /// Saves a PNG screenshot of the whole page, below the window too.
    pub async fn screenshot_full(&mut self, path: &std::path::Path) {
        let m = self.call("Page.getLayoutMetrics", serde_json::json!({})).await;
        let size = &m["cssContentSize"];
        let clip = serde_json::json!({ "x": 0, "y": 0, "width": size["width"], "height": size["height"], "scale": 1 });
        self.capture(path, serde_json::json!({ "format": "png", "captureBeyondViewport": true, "clip": clip })).await;
    }

    async fn capture(&mut self, path: &std::path::Path, params: serde_json::Value) {
        use base64::Engine;
        let r = self.call("Page.captureScreenshot", params).await;
        let png = base64::engine::general_purpose::STANDARD.decode(r["data"].as_str().unwrap()).unwrap();
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).unwrap();
        }
        std::fs::write(path, png).unwrap();
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
