//! Rollout events fan out from here: metrics, the `notify` sinks (sent
//! from the daemon thread, whoever emits), and the audit trail.

use weir_control::config::{Notify, NotifyFormat};
use weir_control::rollout::{Event, EventKind};

use super::context::Daemon;
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
        super::recording::event(daemon, &ev);
        daemon.audit.record(ev);
    }
}

/// Sends events to the route's `notify` sinks, each in its format, from
/// the daemon thread (fleet mode: only the replica that committed them).
/// A delivery that fails after its retries is a dead letter: counted, and
/// logged with the sink and why.
pub(crate) fn notify(daemon: &Daemon, route: &Route, events: &[Event]) {
    if events.is_empty() {
        return;
    }
    let Some((sinks, timeout)) =
        route.state.engine().as_ref().map(|e| (e.plan().notify.clone(), e.plan().webhook_timeout))
    else {
        return;
    };
    if sinks.is_empty() {
        return;
    }
    let sender = daemon.webhooks.load_full();
    let source = daemon.replica.clone();
    for ev in events.iter().filter(|ev| ev.kind != EventKind::Evaluated) {
        for sink in &sinks {
            let (sender, sink, ev, source) = (sender.clone(), sink.clone(), ev.clone(), source.clone());
            let dp = daemon.dp.clone();
            let config_path = daemon.config_path.clone();
            daemon.runtime.spawn(async move {
                let telemetry = &dp.telemetry;
                let key = match &sink.routing_key_file {
                    Some(f) => {
                        let path = crate::files::config_relative(f, config_path.as_deref());
                        let read = tokio::task::spawn_blocking(move || {
                            crate::files::read_token(&path, "notify.routing_key_file")
                        })
                        .await;
                        match read {
                            Ok(Ok(k)) => Some(k),
                            Ok(Err(e)) => return dead_letter(telemetry, &ev.route, &sink, &e),
                            Err(e) => return dead_letter(telemetry, &ev.route, &sink, &e.to_string()),
                        }
                    }
                    None => None,
                };
                let Some(body) = weir_control::notify::payload(sink.format, &ev, key.as_deref(), &source) else {
                    return; // this format does not carry this event
                };
                let call = super::webhook::Call {
                    url: &sink.url,
                    body: body.to_string().into(),
                    sign: sink.format == NotifyFormat::Weir,
                    event: Some(ev.kind.as_str()),
                    timeout,
                    retry: true,
                };
                let outcome = sender.send(call).await;
                let retries = u64::from(outcome.attempts.saturating_sub(1));
                telemetry.notify_retries(&ev.route, sink.format.as_str()).increment(retries);
                if outcome.delivered() {
                    telemetry.notify_deliveries(&ev.route, sink.format.as_str(), "delivered").increment(1);
                } else {
                    let why = match &outcome.answer {
                        Ok(status) => format!("answered {status}"),
                        Err(e) => e.clone(),
                    };
                    let why = format!("{why} (after {} attempt(s))", outcome.attempts);
                    dead_letter(telemetry, &ev.route, &sink, &why);
                }
            });
        }
    }
}

fn dead_letter(telemetry: &crate::telemetry::Telemetry, route: &str, sink: &Notify, why: &str) {
    telemetry.notify_deliveries(route, sink.format.as_str(), "dead_letter").increment(1);
    tracing::warn!(route, format = sink.format.as_str(), "notify {}: not delivered: {why}", redact(&sink.url));
}

/// A webhook URL for a log line: scheme, host and port only (Slack's and
/// Teams' URLs carry their secret in the path).
pub(crate) fn redact(url: &str) -> String {
    match url.parse::<http::Uri>() {
        Ok(u) => format!("{}://{}/…", u.scheme_str().unwrap_or("http"), u.authority().map_or("", |a| a.as_str())),
        Err(_) => "(unparsable URL)".to_string(),
    }
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
