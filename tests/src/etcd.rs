//! A real etcd cluster for fleet-mode tests: `etcd` processes (Debian's
//! `etcd-server`) on loopback ports, data in a temp dir, short heartbeat and
//! election timeouts, killed when dropped. Queried with the official v3 API
//! (the `etcd-client` crate), not through weir.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// One member.
pub struct Member {
    /// Its name (`m0`, `m1`, …).
    pub name: String,
    /// Its client URL (`http://127.0.0.1:PORT`).
    pub client_url: String,
    peer_url: String,
    child: Option<Child>,
    stopped: bool,
}

/// A cluster of `etcd` processes.
pub struct Etcd {
    /// The members, in order.
    pub members: Vec<Member>,
    _dir: tempfile::TempDir,
}

/// A free loopback port outside the ephemeral range (where tests bind
/// port 0), so that nothing takes it between the check and etcd's bind.
fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: std::sync::OnceLock<AtomicU32> = std::sync::OnceLock::new();
    let next = NEXT.get_or_init(|| AtomicU32::new(std::process::id() % 6_000 * 2));
    loop {
        let p = 20_000 + (next.fetch_add(1, Ordering::Relaxed) % 12_000) as u16;
        if TcpListener::bind(("127.0.0.1", p)).is_ok() {
            return p;
        }
    }
}

impl Etcd {
    /// Starts `n` members and waits until the cluster has a leader.
    pub fn start(n: usize) -> Etcd {
        let dir = tempfile::tempdir().unwrap();
        let mut members: Vec<Member> = (0..n)
            .map(|i| Member {
                name: format!("m{i}"),
                client_url: format!("http://127.0.0.1:{}", free_port()),
                peer_url: format!("http://127.0.0.1:{}", free_port()),
                child: None,
                stopped: false,
            })
            .collect();
        let initial: Vec<String> = members.iter().map(|m| format!("{}={}", m.name, m.peer_url)).collect();
        let token = format!("weir-test-{}-{}", std::process::id(), members[0].client_url.rsplit(':').next().unwrap());
        for m in &mut members {
            let data = dir.path().join(&m.name);
            let child = Command::new("etcd")
                .args(["--name", &m.name])
                .arg("--data-dir")
                .arg(&data)
                .args(["--listen-client-urls", &m.client_url, "--advertise-client-urls", &m.client_url])
                .args(["--listen-peer-urls", &m.peer_url, "--initial-advertise-peer-urls", &m.peer_url])
                .args(["--initial-cluster", &initial.join(","), "--initial-cluster-state", "new"])
                .args(["--initial-cluster-token", &token])
                .args(["--heartbeat-interval", "50", "--election-timeout", "500"])
                .args(["--logger", "zap", "--log-level", "error"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("etcd (Debian etcd-server) must be installed: .ci/run installs it");
            m.child = Some(child);
        }
        let etcd = Etcd { members, _dir: dir };
        etcd.wait_healthy(Duration::from_secs(30));
        etcd
    }

    /// Every member's client URL.
    pub fn endpoints(&self) -> Vec<String> {
        self.members.iter().map(|m| m.client_url.clone()).collect()
    }

    /// The endpoints as a TOML array.
    pub fn toml_endpoints(&self, which: &[usize]) -> String {
        let list: Vec<String> = which.iter().map(|&i| format!("\"{}\"", self.members[i].client_url)).collect();
        format!("[{}]", list.join(", "))
    }

    /// Waits until every running member answers and one leads.
    pub fn wait_healthy(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let up: Vec<&str> = self
                .members
                .iter()
                .filter(|m| m.child.is_some() && !m.stopped)
                .map(|m| m.client_url.as_str())
                .collect();
            let out = Command::new("etcdctl")
                .env("ETCDCTL_API", "3")
                .arg(format!("--endpoints={}", up.join(",")))
                .args(["endpoint", "health", "--command-timeout=1s"])
                .output();
            if out.as_ref().is_ok_and(|o| o.status.success()) && self.raft_leader().is_some() {
                return;
            }
            assert!(Instant::now() < deadline, "etcd did not become healthy: {out:?}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The index of the member that leads the raft group.
    pub fn raft_leader(&self) -> Option<usize> {
        for (i, m) in self.members.iter().enumerate() {
            if m.child.is_none() || m.stopped {
                continue;
            }
            // A member that does not answer is skipped, not the end.
            let Ok(out) = Command::new("etcdctl")
                .env("ETCDCTL_API", "3")
                .arg(format!("--endpoints={}", m.client_url))
                .args(["endpoint", "status", "-w", "json", "--command-timeout=1s"])
                .output()
            else {
                continue;
            };
            let Ok(v) = serde_json::from_slice::<serde_json::Value>(&out.stdout) else { continue };
            let s = &v[0]["Status"];
            if s["header"]["member_id"].as_u64().is_some() && s["header"]["member_id"] == s["leader"] {
                return Some(i);
            }
        }
        None
    }

    /// SIGKILLs member `i`.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut c) = self.members[i].child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGSTOPs member `i` (it keeps its sockets and answers nothing).
    pub fn stop(&mut self, i: usize) {
        self.signal(i, "STOP");
        self.members[i].stopped = true;
    }

    /// SIGCONTs member `i`.
    pub fn cont(&mut self, i: usize) {
        self.signal(i, "CONT");
        self.members[i].stopped = false;
    }

    fn signal(&self, i: usize, sig: &str) {
        let pid = self.members[i].child.as_ref().expect("member running").id();
        let ok = Command::new("kill").arg(format!("-{sig}")).arg(pid.to_string()).status().unwrap().success();
        assert!(ok, "kill -{sig} {pid}");
    }

    /// A client of the running members.
    pub async fn client(&self) -> etcd_client::Client {
        let up: Vec<String> =
            self.members.iter().filter(|m| m.child.is_some() && !m.stopped).map(|m| m.client_url.clone()).collect();
        etcd_client::Client::connect(up, None).await.unwrap()
    }

    /// Compacts the store at its current revision (what etcd's
    /// `--auto-compaction-*` does on its schedule); returns it.
    pub async fn compact(&self) -> i64 {
        let mut c = self.client().await;
        let rev = c.get("/", None).await.unwrap().header().unwrap().revision();
        c.compact(rev, Some(etcd_client::CompactionOptions::new().with_physical())).await.unwrap();
        rev
    }

    /// Every version `key` ever had, oldest first: (mod revision, value).
    pub async fn history(&self, key: &str) -> Vec<(i64, Vec<u8>)> {
        let mut c = self.client().await;
        let now = c.get(key, None).await.unwrap();
        let Some(last) = now.kvs().first().map(|kv| kv.mod_revision()) else { return Vec::new() };
        let opts = etcd_client::WatchOptions::new().with_start_revision(1);
        let mut stream = c.watch(key, Some(opts)).await.unwrap();
        let mut out = Vec::new();
        while out.last().is_none_or(|(rev, _)| *rev < last) {
            let msg = tokio::time::timeout(Duration::from_secs(5), stream.message()).await;
            let Ok(Ok(Some(resp))) = msg else { panic!("history of {key}: the watch ended: {msg:?}") };
            for ev in resp.events() {
                if let (etcd_client::EventType::Put, Some(kv)) = (ev.event_type(), ev.kv()) {
                    out.push((kv.mod_revision(), kv.value().to_vec()));
                }
            }
        }
        out
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        for i in 0..self.members.len() {
            if self.members[i].stopped {
                self.cont(i);
            }
            self.kill(i);
        }
    }
}
