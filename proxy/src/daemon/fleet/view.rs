//! `GET /api/v1/fleet`: this replica's view of the fleet.

use weir_control::fleet::MemberReport;

use super::node::Node;

/// This replica, the leader, the committed revision and every member.
pub(crate) fn view(node: &Node) -> serde_json::Value {
    let k = node.lock();
    let now = crate::clock::now_ms();
    let member = |m: &MemberReport| {
        serde_json::json!({
            "id": m.id,
            "config_hash": m.config_hash,
            "applied_revision": m.applied_revision,
            "report_age_ms": now.saturating_sub(m.at_ms),
            "overrides": m.overrides,
            "past_overrides": m.past_overrides,
            "fits": m.fits,
            // The evidence it reported, per route: requests in the
            // committed window.
            "window": m.routes.iter().map(|(name, r)| (name.clone(), serde_json::json!({
                "canary": r.canary_window.counts.total(),
                "stable": r.stable_window.counts.total(),
            }))).collect::<serde_json::Map<_, _>>(),
        })
    };
    serde_json::json!({
        "id": node.id,
        "fleet": node.cfg.name,
        "role": if k.term.is_some() { "leader" } else { "follower" },
        "leader": k.leader.as_ref().map(|(id, term)| serde_json::json!({ "id": id, "term": term })),
        "applied_revision": k.committed.as_ref().map_or(0, |(_, rev)| *rev),
        "committed_by": k.committed.as_ref().map(|(doc, _)| doc.by.clone()),
        "out_of_touch_ms": k.contact.unwrap_or(node.started).elapsed().as_millis() as u64,
        "overrides": k.overrides,
        "past_overrides": k.past_overrides,
        "fits": k.fits,
        "members": k.members.iter().map(member).collect::<Vec<_>>(),
    })
}
