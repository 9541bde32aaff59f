//! What a `notify` sink receives for a rollout event, per format: weir's
//! own JSON, a Slack message (Block Kit), a Microsoft Teams message (an
//! Adaptive Card, as Teams workflow webhooks take), or a PagerDuty Events
//! API v2 event. Pure: the proxy sends what this returns.

use serde_json::{json, Value};

use crate::config::NotifyFormat;
use crate::gate::Verdict;
use crate::rollout::{Event, EventKind};

/// The body to send for `ev` in `format`; `None` when the format does not
/// carry this kind of event (evaluations go nowhere; PagerDuty gets only
/// what opens or closes an alert). `routing_key` is PagerDuty's; `source`
/// names the sender (the replica).
pub fn payload(format: NotifyFormat, ev: &Event, routing_key: Option<&str>, source: &str) -> Option<Value> {
    if ev.kind == EventKind::Evaluated {
        return None;
    }
    match format {
        NotifyFormat::Weir => serde_json::to_value(ev).ok(),
        NotifyFormat::Slack => Some(slack(ev)),
        NotifyFormat::Teams => Some(teams(ev)),
        NotifyFormat::PagerDuty => pagerduty(ev, routing_key.unwrap_or_default(), source),
    }
}

/// What happened, in a few words: "rolled back", "advanced to stage 3".
pub fn headline(ev: &Event) -> String {
    match ev.kind {
        EventKind::Started => "rollout started".to_string(),
        EventKind::Restored => "rollout restored after a restart".to_string(),
        EventKind::Evaluated => "gates evaluated".to_string(),
        EventKind::Advanced => format!("advanced to stage {}", ev.stage + 1),
        EventKind::Promoted => "canary promoted".to_string(),
        EventKind::RolledBack => "canary rolled back".to_string(),
        EventKind::Paused => "rollout paused".to_string(),
        EventKind::Resumed => "rollout resumed".to_string(),
        EventKind::Aborted => "rollout aborted".to_string(),
        EventKind::Held => "stage held (pre_stage did not approve)".to_string(),
    }
}

/// One line a person reads first: route, what happened, the releases, the
/// weight, and why.
pub fn summary(ev: &Event) -> String {
    format!(
        "weir {}: {} (canary {}, stable {}, weight {} %): {}",
        ev.route,
        headline(ev),
        ev.canary_version.as_deref().unwrap_or("unlabelled"),
        ev.stable_version.as_deref().unwrap_or("unlabelled"),
        trim_float(ev.weight),
        ev.cause
    )
}

fn trim_float(x: f64) -> String {
    let s = format!("{x:.2}");
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

/// The gates that failed (or, if none, every gate), one line each:
/// `error_rate: fail, 0.081 against 0.05 (1200 requests)`.
fn verdict_lines(ev: &Event) -> Vec<String> {
    let failing: Vec<_> = ev.verdicts.iter().filter(|v| v.verdict == Verdict::Fail).collect();
    let shown: Vec<_> = if failing.is_empty() { ev.verdicts.iter().collect() } else { failing };
    shown
        .iter()
        .take(8)
        .map(|v| {
            let mut line = format!("{}: {}", v.gate, v.verdict.as_str());
            if let Some(x) = v.value {
                line.push_str(&format!(", {}", sig(x)));
                if let Some(t) = v.threshold {
                    line.push_str(&format!(" against {}", sig(t)));
                }
            }
            line.push_str(&format!(" ({} canary samples)", v.canary_samples));
            line
        })
        .collect()
}

/// Four significant digits.
fn sig(x: f64) -> String {
    if x == 0.0 || !x.is_finite() {
        return format!("{x}");
    }
    let digits = (3 - x.abs().log10().floor() as i32).clamp(0, 12) as usize;
    let s = format!("{x:.digits$}");
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    }
}

/// Text cut to `max` characters (on a character boundary), with an ellipsis.
fn cut(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_string();
    }
    let mut out: String = s.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

/// Slack's mrkdwn escapes (`&`, `<`, `>`), so that no text from a config
/// or cause becomes a link or a mention.
fn slack_escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

/// `s` escaped for Slack within `max` characters: cut before escaping, so
/// an escape is never cut in half.
fn slack_text(s: &str, max: usize) -> String {
    let all = slack_escape(s);
    if all.chars().count() <= max {
        return all;
    }
    let mut out = String::new();
    let mut n = 0;
    for c in s.chars() {
        let piece = slack_escape(c.encode_utf8(&mut [0; 4]));
        let len = piece.chars().count();
        if n + len > max.saturating_sub(1) {
            break;
        }
        out.push_str(&piece);
        n += len;
    }
    out.push('…');
    out
}

fn release_facts(ev: &Event) -> Vec<(&'static str, String)> {
    let mut facts = vec![
        ("Route", ev.route.clone()),
        ("Canary", ev.canary_version.clone().unwrap_or_else(|| "unlabelled".into())),
        ("Stable", ev.stable_version.clone().unwrap_or_else(|| "unlabelled".into())),
        ("Stage", format!("{} ({} → {})", ev.stage + 1, ev.from.as_str(), ev.to.as_str())),
        ("Weight", format!("{} %", trim_float(ev.weight))),
        ("By", if ev.actor == crate::rollout::Actor::Auto { "gate engine".into() } else { "operator".into() }),
    ];
    if let Some(r) = &ev.canary_release {
        if let Some(c) = &r.commit {
            facts.push(("Commit", c.clone()));
        }
        if let Some(t) = &r.ticket {
            facts.push(("Ticket", t.clone()));
        }
    }
    facts
}

fn notes_link(ev: &Event) -> Option<&str> {
    ev.canary_release.as_ref().and_then(|r| r.notes.as_deref())
}

/// A Slack incoming-webhook message: `text` (the notification's) and
/// blocks within Slack's limits (header 150, section 3000, field 2000).
fn slack(ev: &Event) -> Value {
    let fields: Vec<Value> = release_facts(ev)
        .into_iter()
        .map(|(k, v)| json!({"type": "mrkdwn", "text": format!("*{k}*\n{}", slack_text(&v, 1900))}))
        .collect();
    let mut blocks = vec![
        json!({"type": "header", "text": {"type": "plain_text", "text": cut(&format!("{}: {}", ev.route, headline(ev)), 150)}}),
        json!({"type": "section", "text": {"type": "mrkdwn", "text": slack_text(&ev.cause, 3000)}, "fields": fields}),
    ];
    let lines = verdict_lines(ev);
    if !lines.is_empty() {
        let text = lines.iter().map(|l| format!("• {l}")).collect::<Vec<_>>().join("\n");
        blocks.push(json!({"type": "section", "text": {"type": "mrkdwn", "text": slack_text(&text, 3000)}}));
    }
    let mut context = format!("config {}", ev.config_hash);
    if let Some(url) = notes_link(ev) {
        // A link only for a URL without Slack's own delimiters.
        if !url.contains(['<', '>', '|']) {
            context = format!("<{url}|release notes> · {context}");
        }
    }
    blocks.push(json!({"type": "context", "elements": [{"type": "mrkdwn", "text": cut(&context, 3000)}]}));
    json!({"text": slack_text(&summary(ev), 3000), "blocks": blocks})
}

/// A Teams workflow-webhook message: one Adaptive Card (1.4).
fn teams(ev: &Event) -> Value {
    let bad = matches!(ev.kind, EventKind::RolledBack | EventKind::Paused | EventKind::Held | EventKind::Aborted);
    let facts: Vec<Value> = release_facts(ev).into_iter().map(|(k, v)| json!({"title": k, "value": v})).collect();
    let mut body = vec![
        json!({"type": "TextBlock", "text": format!("{}: {}", ev.route, headline(ev)), "weight": "Bolder",
               "size": "Medium", "wrap": true, "color": if bad { "Attention" } else { "Good" }}),
        json!({"type": "TextBlock", "text": cut(&ev.cause, 2000), "wrap": true}),
        json!({"type": "FactSet", "facts": facts}),
    ];
    for line in verdict_lines(ev) {
        body.push(json!({"type": "TextBlock", "text": format!("- {line}"), "wrap": true, "spacing": "None"}));
    }
    let mut card = json!({
        "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
        "type": "AdaptiveCard",
        "version": "1.4",
        "body": body,
    });
    if let Some(url) = notes_link(ev) {
        card["actions"] = json!([{"type": "Action.OpenUrl", "title": "Release notes", "url": url}]);
    }
    json!({
        "type": "message",
        "attachments": [{"contentType": "application/vnd.microsoft.card.adaptive", "contentUrl": null, "content": card}],
    })
}

/// PagerDuty Events API v2: what needs a person triggers one alert per
/// route and canary build (`dedup_key`): a rollback (`error`), a pause by
/// the gates or a held stage (`warning`); what ends it resolves it: the
/// next stage, a promotion, a resume, an abort. An operator's own pause
/// pages no one; a start does not either.
fn pagerduty(ev: &Event, routing_key: &str, source: &str) -> Option<Value> {
    let (action, severity) = match (ev.kind, ev.actor) {
        (EventKind::RolledBack, _) => ("trigger", "error"),
        (EventKind::Paused, crate::rollout::Actor::Auto) | (EventKind::Held, _) => ("trigger", "warning"),
        (EventKind::Advanced | EventKind::Promoted | EventKind::Resumed | EventKind::Aborted, _) => ("resolve", "info"),
        _ => return None,
    };
    let dedup_key = cut(&format!("weir/{}/{}", ev.route, ev.canary_version.as_deref().unwrap_or("canary")), 255);
    let mut out = json!({
        "routing_key": routing_key,
        "event_action": action,
        "dedup_key": dedup_key,
        "client": "weir",
    });
    if action == "trigger" {
        out["payload"] = json!({
            "summary": cut(&summary(ev), 1024),
            "source": if source.is_empty() { "weir" } else { source },
            "severity": severity,
            "component": ev.route,
            "group": "weir",
            "class": ev.kind.as_str(),
            "custom_details": {
                "cause": ev.cause,
                "gates": verdict_lines(ev),
                "canary_version": ev.canary_version,
                "stable_version": ev.stable_version,
                "stage": ev.stage + 1,
                "weight_percent": ev.weight,
                "config_hash": ev.config_hash,
            },
        });
        if let Some(url) = notes_link(ev) {
            out["links"] = json!([{"href": url, "text": "Release notes"}]);
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Release;
    use crate::gate::GateResult;
    use crate::rollout::{Actor, Phase};

    fn event(kind: EventKind) -> Event {
        Event {
            at_ms: 1_800_000_000_000,
            route: "web".into(),
            kind,
            actor: Actor::Auto,
            from: Phase::Progressing,
            to: Phase::RolledBack,
            stage: 1,
            weight: 0.0,
            cause: "error_rate failed 2 evaluations in a row: <script> & more".into(),
            verdicts: vec![GateResult {
                gate: "error_rate".into(),
                verdict: Verdict::Fail,
                value: Some(0.0812345),
                stable_value: Some(0.01),
                threshold: Some(0.05),
                p_value: None,
                upper_bound: None,
                canary_samples: 1200,
                stable_samples: 10_000,
                query: None,
                evaluated_at_ms: None,
                note: None,
                dry_run: false,
            }],
            stable_version: Some("v1".into()),
            canary_version: Some("v2".into()),
            config_hash: "abc".into(),
            stable_release: None,
            canary_release: Some(Release {
                commit: Some("9f1c2e7".into()),
                notes: Some("https://git.example/v2".into()),
                ticket: None,
            }),
            fleet: None,
        }
    }

    #[test]
    fn slack_escapes_and_stays_within_limits() {
        let mut ev = event(EventKind::RolledBack);
        ev.route = "r".repeat(200);
        let p = payload(NotifyFormat::Slack, &ev, None, "pod-1").unwrap();
        let header = p["blocks"][0]["text"]["text"].as_str().unwrap();
        assert_eq!(header.chars().count(), 150);
        let cause = p["blocks"][1]["text"]["text"].as_str().unwrap();
        assert!(cause.contains("&lt;script&gt; &amp; more"), "{cause}");
        let gates = p["blocks"][2]["text"]["text"].as_str().unwrap();
        assert!(gates.contains("error_rate: fail, 0.08123 against 0.05 (1200 canary samples)"), "{gates}");
        assert!(p["blocks"][3]["elements"][0]["text"]
            .as_str()
            .unwrap()
            .starts_with("<https://git.example/v2|release notes>"));
    }

    #[test]
    fn pagerduty_triggers_and_resolves_one_alert_per_build() {
        let t = payload(NotifyFormat::PagerDuty, &event(EventKind::RolledBack), Some("k"), "pod-1").unwrap();
        assert_eq!(t["event_action"], "trigger");
        assert_eq!(t["payload"]["severity"], "error");
        assert_eq!(t["payload"]["source"], "pod-1");
        for ends in [EventKind::Promoted, EventKind::Advanced, EventKind::Resumed, EventKind::Aborted] {
            let r = payload(NotifyFormat::PagerDuty, &event(ends), Some("k"), "pod-1").unwrap();
            assert_eq!(r["event_action"], "resolve");
            assert_eq!(r["dedup_key"], t["dedup_key"]);
            assert!(r.get("payload").is_none());
        }
        assert!(payload(NotifyFormat::PagerDuty, &event(EventKind::Started), Some("k"), "p").is_none());
        let mut by_hand = event(EventKind::Paused);
        by_hand.actor = Actor::Manual;
        assert!(
            payload(NotifyFormat::PagerDuty, &by_hand, Some("k"), "p").is_none(),
            "an operator's pause pages no one"
        );
        assert_eq!(
            payload(NotifyFormat::PagerDuty, &event(EventKind::Paused), Some("k"), "p").unwrap()["event_action"],
            "trigger"
        );
        assert!(payload(NotifyFormat::Weir, &event(EventKind::Evaluated), None, "p").is_none());
    }

    #[test]
    fn teams_is_an_adaptive_card() {
        let p = payload(NotifyFormat::Teams, &event(EventKind::Paused), None, "p").unwrap();
        let card = &p["attachments"][0]["content"];
        assert_eq!(card["type"], "AdaptiveCard");
        assert_eq!(card["body"][0]["color"], "Attention");
        assert_eq!(card["actions"][0]["url"], "https://git.example/v2");
    }

    #[test]
    fn slack_escapes_are_never_cut_in_half() {
        let t = slack_text(&"&".repeat(10), 12);
        assert_eq!(t, "&amp;&amp;…");
        assert!(t.chars().count() <= 12);
    }

    #[test]
    fn significant_digits() {
        assert_eq!(sig(0.0812345), "0.08123");
        assert_eq!(sig(1234.6), "1235");
        assert_eq!(sig(0.05), "0.05");
        assert_eq!(trim_float(12.5), "12.5");
        assert_eq!(trim_float(100.0), "100");
    }
}
