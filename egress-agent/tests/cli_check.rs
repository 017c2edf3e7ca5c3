//! `egress-agent check` says what `run` would: a pack that validates but
//! cannot be installed fails `check` too, with `run`'s message.

use std::fmt::Write as _;
use std::process::{Command, Output};

fn check(pack: &str, tag: &str) -> Output {
    let path = std::env::temp_dir().join(format!("egress-check-{tag}-{}.yaml", std::process::id()));
    std::fs::write(&path, pack).expect("write the pack");
    let out = Command::new(env!("CARGO_BIN_EXE_egress-agent")).arg("check").arg(&path).output().expect("runs");
    let _ = std::fs::remove_file(&path);
    out
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

#[test]
fn a_pack_the_datapath_cannot_hold_fails_check() {
    // 65 webgroups, each a permit rule's destination: valid, one more than
    // the datapath's 64 learned-address bits (before, `check` said yes and
    // `run` refused it).
    let mut pack = String::from("version: 1\nsmartgroups:\n  run: { cidrs: [10.0.0.0/8] }\nwebgroups:\n");
    for i in 0..65 {
        let _ = writeln!(pack, "  w{i}: {{ domains: [\"h{i}.example.com\"] }}");
    }
    pack.push_str("rules:\n");
    for i in 0..65 {
        let _ = writeln!(
            pack,
            "  - {{ name: r{i}, priority: {i}, source: run, destination: {{ webgroup: w{i} }}, action: permit }}"
        );
    }
    let o = check(&pack, "big");
    let t = text(&o);
    assert!(!o.status.success(), "{t}");
    assert!(t.contains("the pack has 65 webgroups; the datapath holds at most 64"), "{t}");
    assert_eq!(t.matches("the datapath holds at most").count(), 1, "said once: {t}");

    // A pack that fits says what it installs.
    let o = check(
        "version: 1\nsmartgroups:\n  run: { cidrs: [10.0.0.0/8] }\nrules:\n  - { name: r, priority: 1, source: run, destination: any, action: deny }\n",
        "small",
    );
    let t = text(&o);
    assert!(o.status.success(), "{t}");
    assert!(t.contains("datapath tables (scheme source-port-defaults): 3 rules, 1 source prefixes"), "{t}");
    // One source prefix: a trie node of 24 + 4 + 4 bytes, as the kernel
    // will account it.
    assert!(t.contains("kernel memory of the pack's entries: 32 B a slot (src4 32 B)"), "{t}");
}
