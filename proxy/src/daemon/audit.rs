//! The audit trail: every rollout transition and evaluation summary, kept in
//! memory for `GET /api/v1/events`, appended as JSON lines to `log.audit`
//! (by a write-behind thread, [`super::behind`]: a failed write is kept and
//! tried again, a full queue drops and counts), and logged.

use std::collections::VecDeque;
use std::io::Write;
use std::sync::Mutex;
use std::time::Duration;

use super::behind::{Behind, Counters, Mode, Problem};

use weir_control::config::AccessLog as Dest;
use weir_control::rollout::{Event, EventKind};

/// Events kept in memory.
const KEEP: usize = 2000;
/// Bytes of audit lines waiting for the disk at most (past it, lines are
/// dropped and counted in `weir_audit_dropped_total`).
const QUEUE: usize = 4 << 20;
/// How long an event waits for its line on a healthy disk (on a failing
/// one, not at all).
const WAIT: Duration = Duration::from_millis(100);

/// Where audit events go. Locks here are taken once per event, never on
/// the request path.
pub(crate) struct Audit {
    ring: Mutex<Ring>,
    live: tokio::sync::broadcast::Sender<Event>,
    out: Option<Behind>,
}

/// The events kept, and how many were ever recorded (the number of the
/// next one: a poll asks for those from a number on).
#[derive(Default)]
struct Ring {
    events: VecDeque<Event>,
    recorded: u64,
}

impl std::fmt::Debug for Audit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Audit").field("file", &self.out.is_some()).finish_non_exhaustive()
    }
}

impl Audit {
    /// Opens `dest` (its file created if missing): `counters` count failed
    /// writes and dropped lines.
    pub(crate) fn open(dest: &Dest, counters: Counters) -> std::io::Result<Audit> {
        let mode = Mode::Append(QUEUE);
        let out = match dest {
            Dest::Off => None,
            Dest::Stdout => Some(Behind::start("weir-audit", "audit log (stdout)".into(), mode, counters, |b| {
                let mut out = std::io::stdout().lock();
                out.write_all(b).and_then(|()| out.flush())
            })?),
            Dest::File(p) => {
                let mut f = std::fs::OpenOptions::new().create(true).append(true).open(p)?;
                let what = format!("audit log {}", p.display());
                Some(Behind::start("weir-audit", what, mode, counters, move |b| {
                    // A write cut short (a full disk) is undone: the retry
                    // writes whole lines, never a torn one.
                    let len = f.metadata()?.len();
                    f.write_all(b).inspect_err(|_| {
                        let _ = f.set_len(len);
                    })
                })?)
            }
        };
        let (live, _) = tokio::sync::broadcast::channel(1024);
        Ok(Audit { ring: Mutex::new(Ring::default()), live, out })
    }

    /// The audit file's current run of failed writes, if any, with the
    /// file's name.
    pub(crate) fn problem(&self) -> Option<(&str, Problem)> {
        self.out.as_ref().and_then(|o| Some((o.what(), o.problem()?)))
    }

    /// Writes what is queued, waiting up to `timeout` (at shutdown).
    pub(crate) fn close(&self, timeout: Duration) {
        if let Some(out) = &self.out {
            out.close(timeout);
        }
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
            if let Ok(mut line) = serde_json::to_string(&ev) {
                line.push('\n');
                if let Some(seq) = out.submit(line.as_bytes()) {
                    out.wait(seq, WAIT);
                }
            }
        }
        let mut ring = self.ring.lock().unwrap_or_else(|p| p.into_inner());
        if ring.events.len() == KEEP {
            ring.events.pop_front();
        }
        ring.events.push_back(ev.clone());
        ring.recorded += 1;
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
        ring.events.iter().filter(|e| route.is_none_or(|r| e.route == r)).cloned().collect()
    }

    /// The cause of route `route`'s latest pause or rollback.
    pub(crate) fn last_cause(&self, route: &str) -> Option<String> {
        let ring = self.ring.lock().unwrap_or_else(|p| p.into_inner());
        let held = |k: EventKind| matches!(k, EventKind::Paused | EventKind::RolledBack);
        let ev = ring.events.iter().rev().find(|e| e.route == route && held(e.kind))?;
        Some(ev.cause.clone())
    }

    /// The events numbered `from` on that are still kept (the first event
    /// recorded is number 0), and the number of the next one.
    pub(crate) fn events_from(&self, from: u64) -> (Vec<Event>, u64) {
        let ring = self.ring.lock().unwrap_or_else(|p| p.into_inner());
        let first = ring.recorded - ring.events.len() as u64;
        // Past the last number: a poll from before a restart (or from
        // another replica) gets every event kept.
        let from = if from > ring.recorded { 0 } else { from };
        let skip = from.saturating_sub(first).min(ring.events.len() as u64) as usize;
        (ring.events.iter().skip(skip).cloned().collect(), ring.recorded)
    }
}
