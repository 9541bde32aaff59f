//! The audit trail: every rollout transition and evaluation summary, kept in
//! memory for `GET /api/v1/events`, appended as JSON lines to `log.audit`,
//! and logged.

use std::collections::VecDeque;
use std::io::Write;
use std::sync::Mutex;

use weir_control::config::AccessLog as Dest;
use weir_control::rollout::Event;

/// Events kept in memory.
const KEEP: usize = 2000;

/// Where audit events go. Locks here are taken once per event, never on
/// the request path.
pub(crate) struct Audit {
    ring: Mutex<VecDeque<Event>>,
    live: tokio::sync::broadcast::Sender<Event>,
    out: Option<Mutex<Box<dyn Write + Send>>>,
}

impl std::fmt::Debug for Audit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Audit").field("file", &self.out.is_some()).finish_non_exhaustive()
    }
}

impl Audit {
    pub(crate) fn open(dest: &Dest) -> std::io::Result<Audit> {
        let out: Option<Box<dyn Write + Send>> = match dest {
            Dest::Off => None,
            Dest::Stdout => Some(Box::new(std::io::stdout())),
            Dest::File(p) => Some(Box::new(std::fs::OpenOptions::new().create(true).append(true).open(p)?)),
        };
        let (live, _) = tokio::sync::broadcast::channel(1024);
        Ok(Audit { ring: Mutex::new(VecDeque::new()), live, out: out.map(Mutex::new) })
    }

    pub(crate) fn record(&self, ev: Event) {
        tracing::info!(
            route = %ev.route,
            event = ?ev.kind,
            actor = ?ev.actor,
            state = ev.to.as_str(),
            stage = ev.stage,
            weight = ev.weight,
            "rollout: {}",
            ev.cause
        );
        if let Some(out) = &self.out {
            if let Ok(line) = serde_json::to_string(&ev) {
                let mut w = out.lock().unwrap_or_else(|p| p.into_inner());
                let _ = writeln!(w, "{line}").and_then(|_| w.flush());
            }
        }
        let mut ring = self.ring.lock().unwrap_or_else(|p| p.into_inner());
        if ring.len() == KEEP {
            ring.pop_front();
        }
        ring.push_back(ev.clone());
        drop(ring);
        let _ = self.live.send(ev);
    }

    /// Events as they are recorded.
    pub(crate) fn subscribe(&self) -> tokio::sync::broadcast::Receiver<Event> {
        self.live.subscribe()
    }

    /// The events kept in memory, oldest first (optionally of one route).
    pub(crate) fn events(&self, route: Option<&str>) -> Vec<Event> {
        let ring = self.ring.lock().unwrap_or_else(|p| p.into_inner());
        ring.iter().filter(|e| route.is_none_or(|r| e.route == r)).cloned().collect()
    }
}
