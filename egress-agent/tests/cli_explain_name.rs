//! `egress-agent explain --name` from the command line, on the lab's pack:
//! a TCP flow's second decision, by address and connection name.

use std::process::{Command, Output};

fn explain(args: &[&str]) -> Output {
    let policy = concat!(env!("CARGO_MANIFEST_DIR"), "/../policies/lab.yaml");
    Command::new(env!("CARGO_BIN_EXE_egress-agent"))
        .args(["explain", "--policy", policy, "--src", "10.10.1.10"])
        .args(args)
        .output()
        .expect("runs")
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

/// Runs a question that must succeed, checked against the compiled tables
/// without a note, and returns its output.
fn ok(args: &[&str]) -> String {
    let o = explain(args);
    assert!(o.status.success(), "{args:?}: {}", text(&o));
    assert!(o.stderr.is_empty(), "{args:?}: {}", text(&o));
    text(&o)
}

#[test]
fn another_name_on_a_learned_address_changes_the_decision() {
    let t = ok(&["--dst", "api.openai.com", "--port", "443", "--name", "attacker.example"]);
    assert!(
        t.contains(
            "the name changes the decision: by address: allow-sanctioned-models; with name attacker.example: \
             default-deny (the name attacker.example is not one webgroup llm-providers covers)"
        ),
        "{t}"
    );
    assert!(t.contains("by address (first packet): allowed: permit by rule `allow-sanctioned-models`"), "{t}");
    assert!(t.contains("decision: with name attacker.example: denied: deny by rule `default-deny`"), "{t}");
}

#[test]
fn the_sanctioned_name_or_an_address_rule_keeps_the_decision() {
    let t = ok(&["--dst", "api.openai.com", "--port", "443", "--name", "East.OpenAI.Azure.com."]);
    assert!(t.contains("the name east.openai.azure.com is in webgroup(s): llm-providers"), "{t}");
    assert!(t.contains("the name does not change the decision (allow-sanctioned-models)"), "{t}");
    let t = ok(&["--dst", "203.0.113.20", "--port", "8443", "--name", "tools.example"]);
    assert!(t.contains("the name does not change the decision (allow-sanctioned-tools)"), "{t}");
    // A covered name on an address not learned for its WebGroup.
    let t = ok(&["--dst", "198.51.100.7", "--port", "443", "--name", "api.openai.com"]);
    assert!(t.contains("the name does not change the decision (default-deny)"), "{t}");
}

#[test]
fn a_name_needs_tcp_and_a_well_formed_name() {
    for (args, says) in [
        (
            &["--dst", "api.openai.com", "--proto", "udp", "--port", "443", "--name", "api.openai.com"][..],
            "TCP flows only",
        ),
        (
            &["--dst", "203.0.113.20", "--proto", "icmp", "--name", "a.example"][..],
            "a icmp flow is judged by address alone",
        ),
        (&["--dst", "api.openai.com", "--port", "443", "--name", "bad name.example"][..], "is not a connection name"),
        (&["--dst", "api.openai.com", "--port", "443", "--name", "*.openai.com"][..], "no wildcard"),
        (&["--dst", "api.openai.com", "--port", "443", "--name", "a..example"][..], "is not a connection name"),
    ] {
        let o = explain(args);
        assert!(!o.status.success() && text(&o).contains(says), "{args:?}: {}", text(&o));
    }
}
