//! A rollout in one plain sentence: what is happening, what weir does next
//! and when. `weir ctl status` prints it and the dashboard shows it at the
//! top of a route (both read it from `GET /api/v1/routes`).

use super::{Engine, Phase};
use crate::config::OnFailure;
use crate::gate::Verdict;

/// Seconds as people say them: "45 s", "3 min 20 s", "2 h 5 min".
fn span(ms: u64) -> String {
    let s = ms.div_ceil(1000);
    match s {
        0..60 => format!("{s} s"),
        60..3600 if s.is_multiple_of(60) => format!("{} min", s / 60),
        60..3600 => format!("{} min {} s", s / 60, s % 60),
        _ => format!("{} h {} min", s / 3600, s % 3600 / 60),
    }
}

fn action(a: OnFailure) -> &'static str {
    match a {
        OnFailure::Rollback => "rolls back",
        OnFailure::Pause => "pauses",
    }
}

fn list(names: &[&str]) -> String {
    names.join(", ")
}

impl Engine {
    /// The rollout in one sentence at `now_ms` (engine clock), the cause of
    /// its latest transition given by the caller (the audit trail has it).
    pub fn summary(&self, now_ms: u64, last_cause: Option<&str>) -> String {
        let st = &self.state;
        let stages = self.plan.stages.len();
        let weight = self.weight();
        let canary = self.ctx.canary_version.as_deref().map_or(String::from("the canary"), |v| format!("canary {v}"));
        let at = format!("stage {} of {stages}, {canary} at {weight}", st.stage + 1);
        // Since the transition itself (a restart does not move it).
        let since = span(now_ms.saturating_sub(st.since_ms));
        let why = last_cause.map(|c| format!(" ({c})")).unwrap_or_default();
        match st.phase {
            Phase::Paused => format!(
                "Paused at {at} for {since}{why}: weir waits for a resume (`weir ctl resume`); \
                 a severe breach still rolls it back."
            ),
            Phase::RolledBack => format!(
                "Rolled back {since} ago{why}: stable serves every request; \
                 a new canary version or `weir ctl resume` starts again at stage 1."
            ),
            Phase::Aborted => format!(
                "Aborted by hand {since} ago: stable serves every request; \
                 `weir ctl resume` starts again at stage 1."
            ),
            Phase::Promoted => {
                let bake = self.plan.stages.last().map_or(0, |s| s.bake.as_millis() as u64);
                let left = bake.saturating_sub(self.window_ms(now_ms));
                if left > 0 {
                    format!(
                        "Promoted: {canary} serves every request; the gates watch it {} more \
                         (post-promotion bake) and any failure rolls it back at once.",
                        span(left)
                    )
                } else {
                    format!("Promoted {since} ago: {canary} serves every request; the rollout is over.")
                }
            }
            Phase::Progressing => self.progressing(now_ms, &at),
        }
    }

    fn progressing(&self, now_ms: u64, at: &str) -> String {
        if let Some(end) = self.warming_until() {
            return format!(
                "Warming up at {at}: only the severe rule judges it for {} more, then the gates do.",
                span(end.saturating_sub(now_ms))
            );
        }
        let acting: Vec<_> = self.acting().collect();
        let failing: Vec<&str> =
            acting.iter().filter(|v| v.verdict == Verdict::Fail).map(|v| v.gate.as_str()).collect();
        let waiting: Vec<&str> =
            acting.iter().filter(|v| v.verdict == Verdict::Inconclusive).map(|v| v.gate.as_str()).collect();
        let elapsed = self.window_ms(now_ms);
        let deadline_left = span(self.deadline_ms().saturating_sub(elapsed));
        let mut next = self
            .plan
            .stages
            .get(self.state.stage + 1)
            .map_or(String::from("promotes it"), |s| format!("moves to {}", s.weight));
        if self.plan.pre_stage.is_some() {
            next = format!("asks the pre_stage webhook and, if it approves, {next}");
        }
        if self.stable_degraded {
            return format!(
                "Holding at {at}: stable is failing too, so the canary is neither blamed nor passed; \
                 weir {} in {deadline_left} if that lasts.",
                action(self.plan.on_hold)
            );
        }
        if !failing.is_empty() {
            if self.weight() == crate::split::Weight::FULL {
                // No stable share to hold at: the engine falls back at once.
                return format!(
                    "Failing at {at}: {} failing; at full weight weir rolls back at the next failing check.",
                    list(&failing)
                );
            }
            // Failing verdicts not counted (yet) read 0 here: an outside
            // reading counts once, and a resume starts the count again.
            let k = self.state.consecutive_failures;
            let n = self.plan.failure_threshold;
            let then = action(self.plan.on_failure);
            return if k >= n {
                format!("Failing at {at}: {} failing; weir {then} now.", list(&failing))
            } else {
                format!(
                    "Trending to {} at {at}: {} failing, {k} of {n} checks in a row; \
                     weir {then} after {} more.",
                    if self.plan.on_failure == OnFailure::Rollback { "rollback" } else { "a pause" },
                    list(&failing),
                    n - k
                )
            };
        }
        let stage = &self.plan.stages[self.state.stage];
        // The gates' own count; the engine's also has the stage's synthetic
        // and shadow requests (an outside signal's gate counts none).
        let samples = acting.iter().map(|v| v.canary_samples).max().unwrap_or(0);
        let bake_left = (stage.bake.as_millis() as u64).saturating_sub(elapsed);
        let need = stage.min_requests.max(1).saturating_sub(samples);
        // At the canary's rate in this stage so far.
        let rate = samples as f64 * 1000.0 / elapsed.max(1) as f64;
        let requests_left = if need == 0 {
            Some(0)
        } else if rate > 0.0 {
            Some((need as f64 / rate * 1000.0).ceil() as u64)
        } else {
            None
        };
        if !waiting.is_empty() || acting.is_empty() || !self.decided() {
            let gates = if waiting.is_empty() { String::from("no gate has passed yet") } else { list(&waiting) };
            return format!(
                "Gathering evidence at {at}: {gates} inconclusive after {samples} canary requests; \
                 weir {next} once every gate passes, or {} in {deadline_left} without a decision.",
                action(self.plan.on_hold)
            );
        }
        match requests_left {
            Some(req) => {
                let left = bake_left.max(req);
                let deadline_ms = self.deadline_ms().saturating_sub(elapsed);
                if left > deadline_ms {
                    format!(
                        "Every gate passes at {at}, but at this traffic the stage needs about {} more and its \
                         deadline is in {deadline_left}: weir {} then unless it is ready.",
                        span(left),
                        action(self.plan.on_hold)
                    )
                } else if left == 0 {
                    format!("Every gate passes at {at}: weir {next} at the next check.")
                } else {
                    let bake = stage.bake.as_millis() as u64;
                    let mut waits = Vec::new();
                    if need > 0 {
                        waits.push(format!("{samples} of {} requests", stage.min_requests));
                    }
                    if bake_left > 0 {
                        waits.push(format!("{} of {} bake", span(elapsed), span(bake)));
                    }
                    format!(
                        "Every gate passes at {at}: weir {next} in about {} if they keep passing ({}).",
                        span(left),
                        waits.join(", ")
                    )
                }
            }
            None => format!(
                "Every gate passes at {at}: weir {next} once the stage has {} requests and its bake ({}) is over.",
                stage.min_requests.max(1),
                span(stage.bake.as_millis() as u64)
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_read_as_people_say_them() {
        assert_eq!(span(0), "0 s");
        assert_eq!(span(1), "1 s");
        assert_eq!(span(59_000), "59 s");
        assert_eq!(span(120_000), "2 min");
        assert_eq!(span(200_000), "3 min 20 s");
        assert_eq!(span(7_500_000), "2 h 5 min");
    }
}
