//! The format of a traffic recording (`[recording]`), which `weir replay`
//! re-judges under another rollout plan.
//!
//! A recording is JSON lines, each a [`Line`]: a `start` line when the file
//! is opened, one `second` line per route and second (what each backend of
//! the route served in that second: the same one-second slots the gates
//! read, counts by outcome and the latency histogram's buckets), and an
//! `event` line per rollout event as it happened. Seconds are on the
//! engine's clock (unix seconds, monotonic while weir runs), so a replay
//! ticks an engine on the very windows the recorded one saw.

use serde::{Deserialize, Serialize};

use crate::rollout::Event;
use crate::sample::Counts;

/// One line of a recording (short-lived: written or read one at a time,
/// so the size of its largest variant does not matter).
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Line {
    /// The file was opened (a start, or a rotation).
    Start {
        /// weir's version.
        weir: String,
        /// Engine clock, ms.
        at_ms: u64,
    },
    /// What a route's backends served in one second.
    Second {
        /// Route name.
        route: String,
        /// The second (engine clock, unix seconds).
        sec: u64,
        /// Stable's requests in it.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        stable: Option<SideSecond>,
        /// The canary's.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        canary: Option<SideSecond>,
    },
    /// A rollout event (transition, evaluation summary, manual action).
    Event {
        /// The event, as in the audit trail.
        event: Box<Event>,
    },
}

/// One backend's second: counts by outcome and latency buckets
/// (`crate::sample::bucket` indices, sparse).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SideSecond {
    /// Requests by outcome.
    pub counts: Counts,
    /// `(bucket index, requests)`, ascending.
    pub buckets: Vec<(u16, u32)>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_read_back_as_written() {
        let line = Line::Second {
            route: "web".into(),
            sec: 1_800_000_000,
            stable: Some(SideSecond { counts: Counts::of(10, 1), buckets: vec![(3, 10)] }),
            canary: None,
        };
        let text = serde_json::to_string(&line).unwrap();
        assert!(text.starts_with(r#"{"kind":"second","route":"web","sec":1800000000,"stable":{"#), "{text}");
        assert_eq!(serde_json::from_str::<Line>(&text).unwrap(), line);
    }
}
