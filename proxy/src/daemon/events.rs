//! Rollout events fan out from here: metrics, the `notify` sinks (sent
//! from the daemon thread, whoever emits), and the audit trail.

use weir_control::config::{Notify, NotifyFormat};
use weir_control::rollout::{Event, EventKind};

use super::context::Daemon;
use super::webhook::Job;
use crate::route::Route;

/// Records events: metrics, the notify webhook, and the audit trail.
pub(crate) fn emit(daemon: &Daemon, route: &Route, events: Vec<Event>) {
    let events: Vec<Event> = events
        .into_iter()
        .map(|mut ev| {
            stamp(&mut ev);
            ev
        })
        .collect();
    notify(daemon, route, &events);
    record(daemon, events);
}

/// Records events decided and stamped already: metrics and the audit
/// trail (fleet mode: every replica records each commit's events).
pub(crate) fn record(daemon: &Daemon, events: Vec<Event>) {
    for ev in events {
        daemon.dp.telemetry.rollout_event(&ev);
        if ev.kind != weir_control::rollout::EventKind::Evaluated {
            // The verdicts that decided a transition: the stage's last
            // ones (the next stage starts without any).
            daemon.history.decided(&ev.route, &ev.verdicts);
        }
        super::recording::event(daemon, &ev);
        daemon.audit.record(ev);
    }
}

/// Sends events to the route's `notify` sinks, each in its format, from
/// the daemon thread (fleet mode: only the replica that committed them).
/// Each sink has one queue, sent in order by one task (a retried trigger
/// must not reach PagerDuty after the resolve that follows it), with its
/// own retry budget (a dead sink does not spend another's). A delivery that
/// fails after its retries is a dead letter: counted, and logged with the
/// sink (scheme and host) and why.
pub(crate) fn notify(daemon: &Daemon, route: &Route, events: &[Event]) {
    if events.is_empty() {
        return;
    }
    let Some((sinks, timeout)) =
        route.state.engine().as_ref().map(|e| (e.plan().notify.clone(), e.plan().webhook_timeout))
    else {
        return;
    };
    for ev in events.iter().filter(|ev| ev.kind != EventKind::Evaluated) {
        for sink in &sinks {
            let key = (ev.route.clone(), sink.url.clone(), sink.format);
            let job = Job { event: ev.clone(), sink: sink.clone(), timeout };
            let mut queues = daemon.notify_queues.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            let tx = queues.entry(key).or_insert_with(|| {
                let (tx, rx) = tokio::sync::mpsc::channel(QUEUE);
                let to = Sink {
                    dp: daemon.dp.clone(),
                    sender: daemon.webhooks.clone(),
                    replica: daemon.replica.clone(),
                    config_path: daemon.config_path.clone(),
                };
                daemon.runtime.spawn(deliver(to, rx));
                tx
            });
            if let Err(e) = tx.try_send(job) {
                let job = match e {
                    tokio::sync::mpsc::error::TrySendError::Full(j)
                    | tokio::sync::mpsc::error::TrySendError::Closed(j) => j,
                };
                dead_letter(
                    &daemon.dp.telemetry,
                    &job.event.route,
                    &job.sink,
                    "its queue is full (the receiver is far behind)",
                );
            }
        }
    }
}

/// What a sink's task needs of the daemon.
struct Sink {
    dp: std::sync::Arc<crate::dataplane::DataPlane>,
    sender: std::sync::Arc<arc_swap::ArcSwap<super::webhook::Sender>>,
    replica: std::sync::Arc<str>,
    config_path: Option<std::path::PathBuf>,
}

/// Events waiting for one sink, at most.
const QUEUE: usize = 256;

/// One sink's task: its events in order, each retried within the sink's
/// budget. A `held` event goes out once per stage (the driver asks the
/// pre_stage hook, and holds, every interval).
async fn deliver(to: Sink, mut rx: tokio::sync::mpsc::Receiver<Job>) {
    let Sink { dp, sender, replica, config_path } = to;
    let budget = super::webhook::budget();
    let mut last: Option<(EventKind, usize)> = None;
    while let Some(Job { event: ev, sink, timeout }) = rx.recv().await {
        let this = (ev.kind, ev.stage);
        if ev.kind == EventKind::Held && last == Some(this) {
            continue;
        }
        last = Some(this);
        let telemetry = &dp.telemetry;
        let key = match &sink.routing_key_file {
            Some(f) => {
                let path = crate::files::config_relative(f, config_path.as_deref());
                match tokio::task::spawn_blocking(move || crate::files::read_token(&path, "notify.routing_key_file"))
                    .await
                {
                    Ok(Ok(k)) => Some(k),
                    Ok(Err(e)) => {
                        dead_letter(telemetry, &ev.route, &sink, &e);
                        continue;
                    }
                    Err(e) => {
                        dead_letter(telemetry, &ev.route, &sink, &e.to_string());
                        continue;
                    }
                }
            }
            None => None,
        };
        let Some(body) = weir_control::notify::payload(sink.format, &ev, key.as_deref(), &replica) else {
            continue; // this format does not carry this event
        };
        let call = super::webhook::Call {
            url: &sink.url,
            body: body.to_string().into(),
            sign: sink.format == NotifyFormat::Weir,
            event: Some(ev.kind.as_str()),
            timeout,
            retry: Some(&budget),
        };
        let outcome = sender.load_full().send(call).await;
        let retries = u64::from(outcome.attempts.saturating_sub(1));
        telemetry.notify_retries(&ev.route, sink.format.as_str()).increment(retries);
        if outcome.delivered() {
            telemetry.notify_deliveries(&ev.route, sink.format.as_str(), "delivered").increment(1);
        } else {
            let why = match &outcome.answer {
                Ok((status, body)) if body.is_empty() => format!("answered {status}"),
                Ok((status, body)) => format!("answered {status}: {body}"),
                Err(e) => e.clone(),
            };
            dead_letter(telemetry, &ev.route, &sink, &format!("{why} (after {} attempt(s))", outcome.attempts));
        }
    }
}

fn dead_letter(telemetry: &crate::telemetry::Telemetry, route: &str, sink: &Notify, why: &str) {
    telemetry.notify_deliveries(route, sink.format.as_str(), "dead_letter").increment(1);
    tracing::warn!(
        route,
        format = sink.format.as_str(),
        "notify {}: not delivered: {why}",
        weir_control::config::shown_url(&sink.url)
    );
}

/// Gives an event the wall-clock time it happened at: the engine decides on
/// its own monotonic clock (`clock::engine_ms`), the audit trail tells time
/// as people read it.
pub(crate) fn stamp(ev: &mut Event) {
    ev.at_ms = crate::clock::now_ms();
}

/// Records the events of a snapshot build (rollouts started or restored).
pub(crate) fn emit_built(daemon: &Daemon, events: Vec<Event>) {
    let snap = daemon.dp.load_full();
    for ev in events {
        if let Some(route) = snap.routes.routes().iter().find(|r| *r.name == *ev.route) {
            if let Some(e) = route.state.engine().as_ref() {
                daemon.dp.telemetry.rollout_tick(&route.name, e, false);
            }
            emit(daemon, route, vec![ev]);
        }
    }
}
