//! The demo's containment lab, end to end: every card, in monitor and in
//! enforce mode, behaves as the `AgentCore` reference pack says, and the
//! HTML report lists every card with its verdict.

use std::path::Path;

use egress_lab::{containment, containment_report};

#[test]
fn every_card_behaves_as_the_pack_says_in_both_modes() {
    let pack = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../policies/agentcore"));
    let report = containment::run(&egress_lab::agent_binary(), pack, |_| {}).expect("lab (run as root)");
    let text = containment_report::text(&report);
    assert!(report.all_as_expected(), "{text}");
    assert_eq!(report.outcomes.len(), 2 * containment::CARDS.len());
    for o in &report.outcomes {
        // Every verdict is backed by what the agent reported.
        let (series, moved) =
            o.counter.clone().unwrap_or_else(|| panic!("no counter moved for {} ({})", o.card.id, o.mode));
        assert!(moved >= 1, "{series} did not move for {}", o.card.id);
        if o.card.rule != "dns.query_filter" && o.verdict != "refused" {
            let rec = o.record.as_ref().unwrap_or_else(|| panic!("no flow record for {} ({})", o.card.id, o.mode));
            if o.card.rule == "dns.tunnel_guard" {
                assert_eq!(rec["type"], "dns_tunnel_suspected", "{rec}");
                assert_eq!(rec["zone"], "**.openai.azure.com", "{rec}");
                assert_eq!(rec["action"], "reported", "{rec}");
            } else {
                assert_eq!(rec["verdict"], o.verdict.as_str());
            }
        }
    }
    let html = containment_report::html(&report);
    for card in containment::CARDS {
        assert_eq!(html.matches(&format!("<b>{}</b>", card.title)).count(), 2, "{} in both modes", card.id);
    }
    for v in ["allowed", "would_deny", "denied", "would_refuse", "refused"] {
        assert!(html.contains(&format!("class=\"v {v}\"")), "a {v} verdict in the report");
    }
    assert!(!html.contains("<script") && !html.contains("http://") && !html.contains("https://"), "self-contained");
}
