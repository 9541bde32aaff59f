//! The daemon thread: weir's work that is not serving requests.
//!
//! The admin API, the rollout engine, the synthetic checks, the
//! once-a-second ticker, the config watcher, SIGHUP reloads and the
//! rollout webhooks (`Daemon::runtime`, whoever emits the event) run on a
//! current-thread runtime of their own, on a thread named `weir-daemon` (as
//! linkerd2-proxy runs its admin server beside its data plane). The data
//! plane's runtime runs the connections, and the health checks, which share
//! the backends' connection pools with requests. So a slow daemon task
//! (rendering `/metrics`, building a reloaded config, a gate evaluation, a
//! dashboard stream) never holds a request up, and an idle data plane sleeps
//! until traffic comes, with no timer of weir's own due.
//!
//! I/O belongs to the runtime it was registered with: the admin listener is
//! registered here ([`DaemonThread::enter`]), and nothing made here is
//! handed to the data plane.

use std::future::Future;

use tokio::runtime::{EnterGuard, Handle};
use tokio::sync::oneshot;
use tokio_util::task::TaskTracker;

/// The daemon thread's runtime, and the tasks weir started on it.
pub(crate) struct DaemonThread {
    handle: Handle,
    tasks: TaskTracker,
    /// Fires when the thread has finished (its tasks done, its runtime dropped).
    finished: Option<oneshot::Receiver<()>>,
}

impl DaemonThread {
    /// Starts the thread. It runs until [`DaemonThread`] is dropped or
    /// [`DaemonThread::finished`] is awaited, and the tasks have ended (they end on
    /// weir's shutdown signal).
    pub(crate) fn start() -> std::io::Result<DaemonThread> {
        let tasks = TaskTracker::new();
        let (done, finished) = oneshot::channel();
        let (handle_tx, handle_rx) = std::sync::mpsc::sync_channel(1);
        let until = tasks.clone();
        // The runtime is built and dropped on its own thread: a runtime may
        // not be dropped from within another's tasks, where `start` runs.
        std::thread::Builder::new().name("weir-daemon".into()).spawn(move || {
            let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                Ok(rt) => rt,
                Err(e) => {
                    let _ = handle_tx.send(Err(e));
                    return;
                }
            };
            let _ = handle_tx.send(Ok(rt.handle().clone()));
            rt.block_on(until.wait());
            // Whatever the tasks left behind (a webhook being sent) goes
            // with the runtime.
            drop(rt);
            let _ = done.send(());
        })?;
        // A moment's wait, once, at start.
        let handle = handle_rx.recv().map_err(|_| std::io::Error::other("the daemon thread exited at start"))??;
        Ok(DaemonThread { handle, tasks, finished: Some(finished) })
    }

    /// Runs `task` on the daemon thread.
    pub(crate) fn spawn<F>(&self, task: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        self.tasks.spawn_on(task, &self.handle);
    }

    /// The daemon runtime.
    pub(crate) fn handle(&self) -> &Handle {
        &self.handle
    }

    /// Makes the daemon runtime the current one: I/O registered and tasks
    /// spawned (`tokio::spawn`) while the guard lives belong to it.
    pub(crate) fn enter(&self) -> EnterGuard<'_> {
        self.handle.enter()
    }

    /// Waits for the thread to finish, once weir's shutdown signal is sent.
    pub(crate) async fn finished(&mut self) {
        self.tasks.close();
        if let Some(finished) = self.finished.take() {
            let _ = finished.await;
        }
    }
}

impl Drop for DaemonThread {
    fn drop(&mut self) {
        // The thread ends when the tasks have (they stop when weir's
        // shutdown sender is sent to or dropped).
        self.tasks.close();
    }
}
