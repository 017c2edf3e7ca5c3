//! Policy changes on disk are picked up and enforced; a bad pack is
//! rejected whole and the last good one keeps enforcing.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use egress_lab::agent::{AgentProcess, metric};
use egress_lab::lab::{Lab, web_pack};

const T: Duration = Duration::from_millis(1200);

fn sa(s: &str) -> SocketAddr {
    s.parse().expect("socket address")
}

fn lab() -> Lab {
    let lab = Lab::new(&["203.0.113.10", "203.0.113.20"]).expect("lab (run as root)");
    lab.tcp_echo(sa("203.0.113.10:443")).expect("server");
    lab.tcp_echo(sa("203.0.113.20:443")).expect("server");
    lab
}

/// Waits until `.20` is reachable (or not), up to 5 s.
fn wait_reachable(lab: &Lab, want: bool) -> bool {
    lab.exchange_becomes(sa("203.0.113.20:443"), want, Duration::from_secs(5)).unwrap()
}

fn write_and_rename(path: &Path, text: &str) {
    egress_lab::agent::write_and_rename(path, text).expect("write and rename");
}

fn temp_dir(tag: &str, lab: &Lab) -> PathBuf {
    let d = std::env::temp_dir().join(format!("egress-reload-{tag}-{}", lab.gateway.name));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("dir");
    d
}

#[test]
fn edits_are_enforced_and_bad_packs_rejected() {
    let lab = lab();
    let dir = temp_dir("file", &lab);
    let policy = dir.join("pack.yaml");
    std::fs::write(&policy, web_pack("")).expect("write");
    let agent = AgentProcess::start_at(&lab, &egress_lab::agent_binary(), &policy, &[]).expect("agent");
    assert!(!lab.tcp_exchange(None, sa("203.0.113.20:443"), T).unwrap(), "denied at first");

    write_and_rename(&policy, &web_pack(", 203.0.113.20/32"));
    assert!(wait_reachable(&lab, true), "the edited pack is enforced");

    // A bad pack: rejected whole, the last good one keeps enforcing.
    write_and_rename(&policy, &web_pack("").replace("action: deny", "action: deny\n    colour: red"));
    let deadline = Instant::now() + Duration::from_secs(5);
    while metric(&agent.metrics().expect("metrics"), "egress_policy_reloads_total{outcome=\"failure\"}") == 0
        && Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(lab.tcp_exchange(None, sa("203.0.113.20:443"), T).unwrap(), "last good pack still enforcing");
    let m = agent.metrics().expect("metrics");
    assert!(metric(&m, "egress_policy_reloads_total{outcome=\"failure\"}") >= 1, "{m}");
    assert!(metric(&m, "egress_policy_reloads_total{outcome=\"success\"}") >= 1, "{m}");

    // Fixed again: enforced again.
    write_and_rename(&policy, &web_pack(""));
    assert!(wait_reachable(&lab, false), "the fixed pack is enforced");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn configmap_symlink_swap_is_picked_up() {
    let lab = lab();
    let dir = temp_dir("configmap", &lab);
    // The layout of a Kubernetes ConfigMap volume.
    std::fs::create_dir_all(dir.join("..2026_a")).expect("dir");
    std::fs::write(dir.join("..2026_a/pack.yaml"), web_pack("")).expect("write");
    std::os::unix::fs::symlink("..2026_a", dir.join("..data")).expect("symlink");
    std::os::unix::fs::symlink("..data/pack.yaml", dir.join("pack.yaml")).expect("symlink");
    let agent = AgentProcess::start_at(&lab, &egress_lab::agent_binary(), &dir, &[]).expect("agent");
    assert!(!lab.tcp_exchange(None, sa("203.0.113.20:443"), T).unwrap(), "denied at first");

    // The atomic swap kubelet does: new directory, new link, renamed over.
    std::fs::create_dir_all(dir.join("..2026_b")).expect("dir");
    std::fs::write(dir.join("..2026_b/pack.yaml"), web_pack(", 203.0.113.20/32")).expect("write");
    std::os::unix::fs::symlink("..2026_b", dir.join("..data_tmp")).expect("symlink");
    std::fs::rename(dir.join("..data_tmp"), dir.join("..data")).expect("swap");
    assert!(wait_reachable(&lab, true), "the swapped pack is enforced");
    drop(agent);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A SmartGroup's `cidrs_file` in a directory of its own: a change to the
/// list alone (the pack untouched) is enforced; a bad line in it is
/// rejected whole and the last good list keeps enforcing.
#[test]
fn a_changed_list_file_is_enforced() {
    let lab = lab();
    let dir = temp_dir("list", &lab);
    std::fs::create_dir_all(dir.join("lists")).expect("dir");
    let policy = dir.join("pack.yaml");
    let feed = dir.join("lists/allowed.txt");
    std::fs::write(&feed, "# allowed hosts\n203.0.113.10\n").expect("write");
    std::fs::write(
        &policy,
        "version: 1
mode: enforce
smartgroups:
  runtime: { cidrs: [10.10.1.0/24] }
  allowed: { cidrs_file: lists/allowed.txt }
rules:
  - { name: allow-listed, priority: 10, source: runtime, destination: { smartgroup: allowed }, protocol: tcp, ports: [443], action: permit }
  - { name: default-deny, priority: 1000, source: runtime, destination: any, action: deny }
",
    )
    .expect("write");
    let agent = AgentProcess::start_at(&lab, &egress_lab::agent_binary(), &policy, &[]).expect("agent");
    assert!(lab.tcp_exchange(None, sa("203.0.113.10:443"), T).unwrap(), "listed");
    assert!(!lab.tcp_exchange(None, sa("203.0.113.20:443"), T).unwrap(), "not listed yet");

    write_and_rename(&feed, "# allowed hosts\n203.0.113.10\n203.0.113.20   # added\n");
    assert!(wait_reachable(&lab, true), "the list's new line is enforced");

    // An edit in place (no rename) is seen too; a bad line is rejected whole.
    std::fs::write(&feed, "203.0.113.10\n203.0.113.20\n203.0.113.300\n").expect("write");
    let deadline = Instant::now() + Duration::from_secs(5);
    while metric(&agent.metrics().expect("metrics"), "egress_policy_reloads_total{outcome=\"failure\"}") == 0
        && Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(50));
    }
    let m = agent.metrics().expect("metrics");
    assert!(metric(&m, "egress_policy_reloads_total{outcome=\"failure\"}") >= 1, "the bad list is rejected: {m}");
    assert!(lab.tcp_exchange(None, sa("203.0.113.20:443"), T).unwrap(), "the last good list keeps enforcing");

    std::fs::write(&feed, "203.0.113.10\n").expect("write");
    assert!(wait_reachable(&lab, false), "the fixed list is enforced");
    let _ = std::fs::remove_dir_all(&dir);
}
