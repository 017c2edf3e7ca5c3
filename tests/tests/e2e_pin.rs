//! Enforcement survives the agent: with `--pin-dir`, a crash (SIGKILL) or a
//! stop leaves the datapath enforcing, the next agent adopts it without
//! detaching (same program), and `egress-agent detach` removes it all.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use egress_agent::datapath::{Datapath, pin::PinDir};
use egress_common::maps;
use egress_lab::agent::AgentProcess;
use egress_lab::bpffs::Bpffs;
use egress_lab::lab::{Lab, web_pack};
use egress_lab::netns::within;

const T: Duration = Duration::from_millis(1200);

fn sa(s: &str) -> SocketAddr {
    s.parse().expect("socket address")
}

/// A pinned link's id and the id of the program behind it, from bpftool.
fn link_ids(link: &Path) -> (u64, u64) {
    let out = Command::new("bpftool").args(["-j", "link", "show", "pinned"]).arg(link).output().expect("bpftool");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|_| panic!("bpftool: {}", String::from_utf8_lossy(&out.stderr)));
    (v["id"].as_u64().expect("id"), v["prog_id"].as_u64().expect("prog_id"))
}

/// Whether the link `id` is gone from the kernel (polled: a link whose last
/// reference went is freed right after).
fn link_released(id: u64) -> bool {
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let out = Command::new("bpftool").args(["link", "show", "id", &id.to_string()]).output().expect("bpftool");
        if !out.status.success() {
            return true;
        }
        if std::time::Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The program id behind a pinned link.
fn prog_id(link: &Path) -> u64 {
    link_ids(link).1
}

#[test]
fn the_datapath_outlives_the_agent_and_is_adopted() {
    let pins = Bpffs::new("pin").expect("bpffs");
    let pin_dir = pins.arg();
    let lab = Lab::new(&["203.0.113.10", "203.0.113.20", "2001:db8:1::20"]).expect("lab (run as root)");
    for a in ["203.0.113.10:443", "203.0.113.20:443", "[2001:db8:1::20]:443"] {
        lab.tcp_echo(sa(a)).expect("server");
    }
    let bin = &egress_lab::agent_binary();

    let first = AgentProcess::start_with(&lab, bin, &web_pack(""), &["--pin-dir", &pin_dir]).expect("agent");
    assert!(lab.tcp_exchange(None, sa("203.0.113.10:443"), T).unwrap(), "permitted");
    assert!(!lab.tcp_exchange(None, sa("203.0.113.20:443"), T).unwrap(), "denied");
    let layout = pins.0.join(format!("v{}", egress_common::LAYOUT_VERSION));
    for name in maps::all() {
        assert!(layout.join(name).exists(), "map {name} pinned");
    }
    let ingress = layout.join("links/tc_ingress@lan0");
    assert!(ingress.exists() && layout.join("links/tc_egress@lan0").exists(), "links pinned");
    let program = prog_id(&ingress);

    // An established flow, then a crash.
    let target = sa("203.0.113.10:443");
    let mut held =
        within(&lab.workload.name, move || TcpStream::connect_timeout(&target, T)).expect("netns").expect("connects");
    held.set_read_timeout(Some(T)).expect("timeout");
    first.kill().expect("SIGKILL");
    held.write_all(b"after crash").expect("established flow keeps working");
    let mut buf = [0u8; 11];
    held.read_exact(&mut buf).expect("echo after the crash");
    assert!(!lab.tcp_exchange(None, sa("203.0.113.20:443"), T).unwrap(), "still denied with no agent");
    assert!(lab.tcp_exchange(None, sa("203.0.113.10:443"), T).unwrap(), "still permitted with no agent");

    // A new agent adopts the pinned datapath: same program, new pack.
    let second =
        AgentProcess::start_with(&lab, bin, &web_pack(", 203.0.113.20/32"), &["--pin-dir", &pin_dir]).expect("agent");
    assert!(second.banner().contains("adopted"), "says it adopted: {}", second.banner());
    assert_eq!(prog_id(&ingress), program, "no re-attach: the same program keeps running");
    assert!(lab.tcp_exchange(None, sa("203.0.113.20:443"), T).unwrap(), "the adopting agent's pack is in force");
    held.write_all(b"after adopt").expect("established flow survives the adoption");

    // A stop leaves it enforcing too.
    assert_eq!(second.stop().expect("stop"), Some(0));
    assert!(!lab.tcp_exchange(None, sa("[2001:db8:1::20]:443"), T).unwrap(), "still enforcing after a stop");

    // A bad policy on disk at start: the adopted pack keeps enforcing (the
    // agent does not go down over it), and a good one written later is
    // taken up.
    let third =
        AgentProcess::start_with(&lab, bin, "version: 1\nmode: enforce\nrules: [oops\n", &["--pin-dir", &pin_dir])
            .expect("starts on the adopted pack");
    assert!(third.banner().contains("was rejected") && third.banner().contains("adopted"), "{}", third.banner());
    assert!(lab.tcp_exchange(None, sa("203.0.113.20:443"), T).unwrap(), "the adopted pack still permits .20");
    assert!(!lab.tcp_exchange(None, sa("[2001:db8:1::20]:443"), T).unwrap(), "and still denies the rest");
    let policy = std::env::temp_dir().join(format!("egress-lab-{}", lab.gateway.name)).join("pack.yaml");
    egress_lab::agent::write_and_rename(&policy, &web_pack("")).expect("write");
    assert!(
        lab.exchange_becomes(sa("203.0.113.20:443"), false, Duration::from_secs(5)).unwrap(),
        "the good policy is enforced"
    );
    assert_eq!(third.stop().expect("stop"), Some(0));

    // detach removes everything: traffic is no longer judged.
    let out = Command::new(bin).args(["detach", "--pin-dir", &pin_dir]).output().expect("detach");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(!layout.exists(), "pins removed");
    assert!(
        lab.exchange_becomes(sa("[2001:db8:1::20]:443"), true, Duration::from_secs(5)).unwrap(),
        "detached: no longer judged"
    );
}

/// An agent upgrade: pinned links of this layout that run another build's
/// programs (the empty program stands in for them) are switched to this
/// build's programs in one link update each. The links stay (same link
/// ids, still pinned, never detached); the programs are this build's and
/// judge at once. A restart of the same build then keeps them as they are.
#[test]
fn pinned_links_of_another_build_are_upgraded_in_place() {
    let pins = Bpffs::new("upgrade").expect("bpffs");
    let pin_dir = pins.arg();
    let lab = Lab::new(&["203.0.113.10", "203.0.113.20"]).expect("lab (run as root)");
    for a in ["203.0.113.10:443", "203.0.113.20:443"] {
        lab.tcp_echo(sa(a)).expect("server");
    }
    let bin = &egress_lab::agent_binary();
    let root = pins.0.clone();
    within(&lab.gateway.name, move || {
        let mut other_build = Datapath::load_pinned(PinDir::prepare(&root).expect("pin dir")).expect("datapath");
        // A pack in force, as another build's agent would have left it.
        let pack = egress_policy::load_sources(&[("p.yaml".into(), web_pack(""))]).expect("pack");
        other_build.install(egress_policy::compile::compile(&pack).expect("compiles")).expect("installs");
        other_build.attach_empty("lan0").expect("stand-in links");
    })
    .expect("netns");
    assert!(lab.tcp_exchange(None, sa("203.0.113.20:443"), T).unwrap(), "the stand-in judges nothing");
    let layout = pins.0.join(format!("v{}", egress_common::LAYOUT_VERSION));
    let links = [layout.join("links/tc_ingress@lan0"), layout.join("links/tc_egress@lan0")];
    let before: Vec<(u64, u64)> = links.iter().map(|l| link_ids(l)).collect();

    let agent = AgentProcess::start_with(&lab, bin, &web_pack(""), &["--pin-dir", &pin_dir]).expect("agent");
    assert!(agent.banner().contains("upgraded 2 programs in place"), "says it upgraded: {}", agent.banner());
    let after: Vec<(u64, u64)> = links.iter().map(|l| link_ids(l)).collect();
    for ((link_before, prog_before), (link_after, prog_after)) in before.iter().zip(&after) {
        assert_eq!(link_before, link_after, "the same link, updated in place");
        assert_ne!(prog_before, prog_after, "another program behind it");
    }
    assert!(!lab.tcp_exchange(None, sa("203.0.113.20:443"), T).unwrap(), "this build's program judges: denied");
    assert!(lab.tcp_exchange(None, sa("203.0.113.10:443"), T).unwrap(), "permitted");

    // The same build again: nothing to upgrade, the programs are kept.
    agent.kill().expect("SIGKILL");
    let again = AgentProcess::start_with(&lab, bin, &web_pack(""), &["--pin-dir", &pin_dir]).expect("agent");
    assert!(again.banner().contains("adopted") && !again.banner().contains("upgraded"), "{}", again.banner());
    assert_eq!(links.iter().map(|l| link_ids(l)).collect::<Vec<_>>(), after, "same links, same programs");
    assert!(!lab.tcp_exchange(None, sa("203.0.113.20:443"), T).unwrap(), "denied");

    // Another hook: `--xdp` after TC. XDP judges, and the pinned TC judging
    // link is removed (not both judging); the learning link is kept.
    again.kill().expect("SIGKILL");
    let xdp = AgentProcess::start_with(&lab, bin, &web_pack(""), &["--pin-dir", &pin_dir, "--xdp"]).expect("agent");
    assert!(layout.join("links/xdp@lan0").exists(), "XDP link pinned");
    assert!(!links[0].exists(), "the TC judging link is gone");
    assert_eq!(link_ids(&links[1]), after[1], "the learning link is kept");
    assert!(!lab.tcp_exchange(None, sa("203.0.113.20:443"), T).unwrap(), "XDP judges: denied");
    assert!(lab.tcp_exchange(None, sa("203.0.113.10:443"), T).unwrap(), "permitted");
    assert!(link_released(after[0].0), "the TC judging link {} is detached, not only unpinned", after[0].0);
    drop(xdp);
    let out = Command::new(bin).args(["detach", "--pin-dir", &pin_dir]).output().expect("detach");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

/// Pins of another layout version are replaced: the new agent attaches its
/// own datapath first, then removes the other layout's pins (which
/// detaches its programs). `status` reads the pins, with or without agent.
#[test]
fn another_layout_is_replaced_and_status_reads_the_pins() {
    let pins = Bpffs::new("layout").expect("bpffs");
    let pin_dir = pins.arg();
    let lab = Lab::new(&["203.0.113.10", "203.0.113.20"]).expect("lab (run as root)");
    for a in ["203.0.113.10:443", "203.0.113.20:443"] {
        lab.tcp_echo(sa(a)).expect("server");
    }
    let bin = &egress_lab::agent_binary();
    let old = AgentProcess::start_with(&lab, bin, &web_pack(""), &["--pin-dir", &pin_dir]).expect("agent");
    old.kill().expect("SIGKILL");
    assert!(!lab.tcp_exchange(None, sa("203.0.113.20:443"), T).unwrap(), "the old datapath denies .20");
    // Make it look like the pins of another layout version.
    let ours = pins.0.join(format!("v{}", egress_common::LAYOUT_VERSION));
    let other = pins.0.join("v0");
    std::fs::rename(&ours, &other).expect("rename the layout directory");

    let new =
        AgentProcess::start_with(&lab, bin, &web_pack(", 203.0.113.20/32"), &["--pin-dir", &pin_dir]).expect("agent");
    assert!(!new.banner().contains("adopted"), "nothing of its layout to adopt: {}", new.banner());
    assert!(!other.exists(), "the other layout's pins are removed");
    assert!(ours.join("links/tc_ingress@lan0").exists(), "ours are pinned");
    assert!(
        lab.exchange_becomes(sa("203.0.113.20:443"), true, Duration::from_secs(5)).unwrap(),
        "the old programs no longer judge"
    );

    let status = |what: &str| {
        let out = Command::new(bin).args(["status", "--pin-dir", &pin_dir]).output().expect("status");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(out.status.success(), "status {what}: {text}{}", String::from_utf8_lossy(&out.stderr));
        text
    };
    let running = status("with the agent");
    for want in [
        "generation 1",
        "mode: enforce; hook: tc",
        "rules: 2; smartgroups: 1; webgroups: 0",
        "tc_egress@lan0, tc_ingress@lan0",
        "classifier: scheme source-port-defaults; live tables ",
    ] {
        assert!(running.contains(want), "`{want}` in:\n{running}");
    }
    assert!(running.contains(&format!("agent: up (pid {}", new.pid())), "{running}");
    let live = Command::new(bin).args(["status", "--live", "--pin-dir", &pin_dir]).output().expect("status");
    assert!(live.status.success(), "the liveness probe passes with the agent up");
    new.kill().expect("SIGKILL");
    // The same answer from the pins alone (the agent line aside: its lease
    // counts down).
    let pack_lines =
        |text: &str| text.lines().filter(|l| !l.starts_with("agent:")).map(str::to_string).collect::<Vec<_>>();
    assert_eq!(pack_lines(&status("with no agent")), pack_lines(&running));
    let out = Command::new(bin).args(["detach", "--pin-dir", &pin_dir]).output().expect("detach");
    assert!(out.status.success());
    let out = Command::new(bin).args(["status", "--pin-dir", &pin_dir]).output().expect("status");
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("no pinned datapath"));
}

/// Least privilege: with only `CAP_BPF`, `CAP_NET_ADMIN` and `CAP_PERFMON` (no
/// `CAP_SYS_ADMIN`: the bpffs is mounted already, as systemd does) the agent
/// loads, attaches, pins and enforces; its pins are not readable by others.
#[test]
fn runs_with_bpf_net_admin_and_perfmon_only() {
    use std::os::unix::fs::PermissionsExt as _;
    let pins = Bpffs::new("caps").expect("bpffs");
    let pin_dir = pins.arg();
    let lab = Lab::new(&["203.0.113.10", "203.0.113.20"]).expect("lab (run as root)");
    for a in ["203.0.113.10:443", "203.0.113.20:443"] {
        lab.tcp_echo(sa(a)).expect("server");
    }
    let policy = std::env::temp_dir().join(format!("egress-caps-{}.yaml", std::process::id()));
    std::fs::write(&policy, web_pack("")).expect("policy");
    let caps = "-all,+bpf,+net_admin,+perfmon";
    let wrapper = ["setpriv", "--bounding-set", caps, "--inh-caps", "-all"];
    let bin = &egress_lab::agent_binary();
    let agent = AgentProcess::start_wrapped(&lab, &wrapper, bin, &policy, &["--pin-dir", &pin_dir])
        .expect("agent with 3 capabilities");
    let status = std::fs::read_to_string(format!("/proc/{}/status", agent.pid())).expect("status");
    let eff = status.lines().find_map(|l| l.strip_prefix("CapEff:")).expect("CapEff").trim().to_string();
    // CAP_NET_ADMIN 12, CAP_PERFMON 38, CAP_BPF 39.
    assert_eq!(
        u64::from_str_radix(&eff, 16).expect("hex"),
        (1 << 12) | (1 << 38) | (1 << 39),
        "effective capabilities"
    );
    assert!(lab.tcp_exchange(None, sa("203.0.113.10:443"), T).unwrap(), "permitted");
    assert!(!lab.tcp_exchange(None, sa("203.0.113.20:443"), T).unwrap(), "denied");
    let layout = pins.0.join(format!("v{}", egress_common::LAYOUT_VERSION));
    for dir in [pins.0.clone(), layout.clone(), layout.join("links")] {
        for entry in std::fs::read_dir(&dir).expect("pins").filter_map(Result::ok) {
            let mode = entry.metadata().expect("metadata").permissions().mode();
            assert_eq!(mode & 0o077, 0, "{} is mode {mode:o}: readable by others", entry.path().display());
        }
    }
    drop(agent);
    let _ = std::fs::remove_file(&policy);
    let out = Command::new(bin).args(["detach", "--pin-dir", &pin_dir]).output().expect("detach");
    assert!(out.status.success());
}

/// Two agents on one pin directory would write each other's pack slots:
/// the directory is locked while an agent uses it, and the second is
/// refused with a reason; the lock goes with the first.
#[test]
fn a_second_agent_on_the_same_pin_dir_is_refused() {
    let pins = Bpffs::new("lock").expect("bpffs");
    let first = PinDir::prepare(&pins.0).expect("first");
    let e = PinDir::prepare(&pins.0).expect_err("a second is refused");
    assert!(e.to_string().contains("another egress-agent is running"), "{e}");
    drop(first);
    PinDir::prepare(&pins.0).expect("free again once the first is gone");
}

/// An interface deleted and created again (a NIC moved, a VLAN rebuilt):
/// the kernel detaches its links, their pins keep them looking attached.
/// The agent finds them stale by their interface index and attaches anew,
/// on its periodic check and when it adopts the pins.
#[test]
fn links_of_an_interface_created_again_are_attached_anew() {
    use egress_agent::datapath::Hook;
    use egress_lab::netns::Netns;
    let pins = Bpffs::new("recreate").expect("bpffs");
    let ns = Netns::new(&format!("egt-re-{}", std::process::id())).expect("netns");
    let dummy = |ns: &Netns| {
        // A veth pair (the kernel here has veth, not dummy).
        ns.ip(&["link", "add", "d0", "type", "veth", "peer", "name", "d0p"]).expect("veth");
        ns.ip(&["link", "set", "d0", "up"]).expect("up");
    };
    dummy(&ns);
    let root = pins.0.clone();
    let name = ns.name.clone();
    let pack = egress_policy::load_sources(&[("p.yaml".into(), web_pack(""))]).expect("pack");
    let ifindex = |ns: &str| {
        within(ns, || {
            let c = std::ffi::CString::new("d0").unwrap();
            // SAFETY: if_nametoindex on a NUL-terminated string we own.
            unsafe { libc::if_nametoindex(c.as_ptr()) }
        })
        .expect("netns")
    };
    let ingress = pins.0.join(format!("v{}/links/tc_ingress@d0", egress_common::LAYOUT_VERSION));
    // This bpftool does not decode tcx links; read bpf_link_info directly.
    let link_ifindex =
        |link: &Path| -> u64 { u64::from(egress_agent::datapath::pinned_link_ifindex(link).expect("link info")) };
    let first = ifindex(&name);
    let (dp, ns) = {
        let pack = pack.clone();
        let dp = within(&name, move || {
            let mut dp = Datapath::load_pinned(PinDir::prepare(&root).expect("pins")).expect("datapath");
            dp.install(egress_policy::compile::compile(&pack).expect("compiles")).expect("installs");
            assert_eq!(dp.attach("d0", Hook::Tc).expect("attach").new, 2);
            dp
        })
        .expect("netns");
        (dp, ns)
    };
    assert_eq!(link_ifindex(&ingress), u64::from(first), "attached to d0");
    ns.ip(&["link", "del", "d0"]).expect("delete");
    dummy(&ns);
    let second = ifindex(&name);
    assert_ne!(first, second, "a new interface");
    assert_eq!(link_ifindex(&ingress), 0, "detached by the kernel, still pinned");
    let dp = within(&name, move || {
        let mut dp = dp;
        assert_eq!(dp.repair_links("d0", Hook::Tc).expect("repair"), 2, "both links attached anew");
        assert_eq!(dp.repair_links("d0", Hook::Tc).expect("repair"), 0, "then nothing to do");
        dp
    })
    .expect("netns");
    assert_eq!(link_ifindex(&ingress), u64::from(second), "attached to the new d0");
    drop(dp);
    // An adopting agent does the same at attach.
    ns.ip(&["link", "del", "d0"]).expect("delete");
    dummy(&ns);
    let third = ifindex(&name);
    let root = pins.0.clone();
    within(&name, move || {
        let mut dp = Datapath::load_pinned(PinDir::prepare(&root).expect("pins")).expect("datapath");
        assert!(dp.adopted());
        dp.install(egress_policy::compile::compile(&pack).expect("compiles")).expect("installs");
        let done = dp.attach("d0", Hook::Tc).expect("attach");
        assert_eq!((done.stale, done.new), (2, 2), "stale pins replaced: {done:?}");
    })
    .expect("netns");
    assert_eq!(link_ifindex(&ingress), u64::from(third), "attached to the newest d0");
    let out =
        Command::new(egress_lab::agent_binary()).args(["detach", "--pin-dir", &pins.arg()]).output().expect("detach");
    assert!(out.status.success());
}

/// The programs judge Ethernet frames: an interface of another link type
/// (here loopback; in the field tun or `WireGuard`) is refused with the
/// reason, and nothing is attached to it.
#[test]
fn a_non_ethernet_interface_is_refused() {
    use egress_agent::datapath::Hook;
    let mut dp = Datapath::load().expect("datapath");
    let e = dp.attach("lo", Hook::Tc).expect_err("refused");
    assert!(e.to_string().contains("not an Ethernet interface"), "{e}");
}

/// A pin directory another user could write to is refused before anything
/// in it is adopted (a bpffs is world-writable unless mounted otherwise).
#[test]
fn a_pin_directory_others_can_write_is_refused() {
    use std::os::unix::fs::PermissionsExt as _;
    let pins = Bpffs::new("open").expect("bpffs");
    std::fs::set_permissions(&pins.0, std::fs::Permissions::from_mode(0o1777)).expect("chmod");
    let e = PinDir::prepare(&pins.0).expect_err("refused").to_string();
    assert!(e.contains("lets others write") && e.contains(&pins.arg()), "{e}");
    std::fs::set_permissions(&pins.0, std::fs::Permissions::from_mode(0o700)).expect("chmod");
    PinDir::prepare(&pins.0).expect("the agent's own directory is taken");
}
