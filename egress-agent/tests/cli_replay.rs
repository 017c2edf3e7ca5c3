//! `egress-agent replay`: a flow log judged by a candidate pack, the exit
//! status saying whether a flow that must stay allowed would be denied.

use std::process::Command;

const PACK: &str = "version: 1
mode: enforce
smartgroups:
  runtime: { cidrs: [10.10.1.0/24] }
webgroups:
  registries: { domains: [pypi.org] }
rules:
  - { name: allow-registries, priority: 20, source: runtime, destination: { webgroup: registries }, protocol: tcp, ports: [443], action: permit }
  - { name: default-deny, priority: 1000, source: runtime, destination: any, action: deny }
";

const LOG: &str = r#"{"ts":"2026-12-05T10:00:00.000Z","type":"flow","iface":"lan0","src":"10.10.1.10","sport":40000,"dst":"198.51.100.5","dport":443,"proto":"tcp","rule":"default-deny","priority":1000,"action":"deny","mode":"monitor","verdict":"would_deny","reason":"rule","pack":1,"fqdn":"pypi.org"}
{"ts":"2026-12-05T10:00:01.000Z","type":"flow","iface":"lan0","src":"10.10.1.10","sport":40001,"dst":"203.0.113.20","dport":443,"proto":"tcp","rule":"allow-tools","priority":30,"action":"permit","mode":"monitor","verdict":"allowed","reason":"rule","pack":1,"fqdn":null}
"#;

#[test]
fn replay_reports_changes_and_fails_on_an_expected_flow_denied() {
    let dir = std::env::temp_dir().join(format!("egress-replay-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let (pack, log, expect) = (dir.join("pack.yaml"), dir.join("flows.jsonl"), dir.join("expect.txt"));
    std::fs::write(&pack, PACK).expect("write");
    std::fs::write(&log, LOG).expect("write");
    std::fs::write(&expect, "203.0.113.20\n").expect("write");
    let run = |extra: &[&std::path::Path]| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_egress-agent"));
        cmd.arg("replay").arg("--policy").arg(&pack).arg("--flow-log").arg(&log);
        if let Some(e) = extra.first() {
            cmd.arg("--expect-allowed").arg(e);
        }
        cmd.output().expect("runs")
    };
    let out = run(&[]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(text.contains("2 recorded flows") && text.contains("1 newly denied, 1 newly permitted"), "{text}");
    let out = run(&[&expect]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(out.status.code(), Some(2), "an expected flow denied: {text}");
    assert!(text.contains("EXPECTED ALLOWED, newly denied: 10.10.1.10 -> 203.0.113.20:443/tcp"), "{text}");
    let _ = std::fs::remove_dir_all(&dir);
}
