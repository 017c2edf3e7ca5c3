//! `egress-agent explain` from the command line, on the lab's pack.

use std::process::{Command, Output};

fn explain(args: &[&str]) -> Output {
    let policy = concat!(env!("CARGO_MANIFEST_DIR"), "/../policies/lab.yaml");
    Command::new(env!("CARGO_BIN_EXE_egress-agent"))
        .args(["explain", "--policy", policy])
        .args(args)
        .output()
        .expect("runs")
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

#[test]
fn explains_names_addresses_and_bad_questions() {
    let o = explain(&["--src", "10.10.1.10", "--dst", "Api.OpenAI.com.", "--port", "443"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("allowed: permit by rule `allow-sanctioned-models`"), "{}", text(&o));

    let o = explain(&["--src", "10.10.1.10", "--dst", "198.51.100.99", "--proto", "udp", "--port", "53"]);
    assert!(text(&o).contains("denied: deny by rule `deny-dns-exfil`"), "{}", text(&o));

    let o = explain(&["--src", "fd00:10:1::5", "--dst", "2001:db8::1", "--proto", "icmpv6"]);
    assert!(text(&o).contains("denied: deny by rule `default-deny`"), "{}", text(&o));

    for (args, says) in [
        (&["--src", "10.10.1.10", "--dst", "api.openai.com"][..], "--port is needed"),
        (&["--src", "10.10.1.10", "--dst", "2001:db8::1", "--port", "443"][..], "same address family"),
        (&["--src", "10.10.1.10", "--dst", "*.openai.com", "--port", "443"][..], "not a wildcard"),
        (&["--src", "10.10.1.10", "--dst", "x.com", "--proto", "sctp", "--port", "1"][..], "unknown protocol"),
    ] {
        let o = explain(args);
        assert!(!o.status.success() && text(&o).contains(says), "{args:?}: {}", text(&o));
    }
}
