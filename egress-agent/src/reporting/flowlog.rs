//! Flow logs: JSON lines, one per new flow decided by a logging rule and
//! one per denied or `would_deny` flow (`"type": "flow"`), plus a periodic
//! `"type": "summary"` line whenever the datapath held events back or lost
//! them.
//!
//! Events come from the datapath's ring buffer, rate-limited per source in
//! the kernel; [`record`] turns one into the JSON record (pure, tested),
//! [`FlowLog`] writes lines to standard output or to a file it rotates by
//! size, keeping N old files.

use std::io::Write;
use std::net::IpAddr;
use std::time::{Duration, SystemTime};

use egress_common::addr::{family_addr, key_addr};
use egress_common::{ACTION_DENY, FlowEvent, MODE_ENFORCE, Reason, Verdict};
use serde::Serialize;

use egress_policy::compile::CompiledRule;

/// One flow-log record.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct FlowRecord {
    /// RFC 3339, milliseconds, UTC.
    pub ts: String,
    /// `flow`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub iface: String,
    pub src: IpAddr,
    pub sport: u16,
    pub dst: IpAddr,
    pub dport: u16,
    pub proto: String,
    pub rule: String,
    pub priority: Option<u32>,
    pub action: &'static str,
    pub mode: &'static str,
    pub verdict: &'static str,
    pub reason: &'static str,
    /// Pack generation that decided.
    pub pack: u32,
    /// The name the workload resolved `dst` from, when it did.
    pub fqdn: Option<String>,
    /// A TCP flow's second decision: the name its first client message
    /// gave (absent without one; see `reason`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Where `name` came from: `sni` or `host`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name_source: Option<&'static str>,
}

/// The record of a TCP flow's second decision, by address and name.
pub fn named_record(ev: &egress_common::NamedFlowEvent, mut rec: FlowRecord) -> FlowRecord {
    let len = usize::from(ev.name_len).min(ev.name.len());
    if len > 0 {
        rec.name = Some(String::from_utf8_lossy(&ev.name[..len]).into_owned());
        rec.name_source = egress_common::name_source_word(ev.name_source);
    }
    rec
}

/// What a DNS answer taught a workload.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct DnsRecord {
    pub ts: String,
    /// `dns`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub workload: IpAddr,
    /// The question's name (as the workload asked it, lowercase).
    pub name: String,
    /// The addresses learned (at most 8 listed; `addresses_total` counts all).
    pub addresses: Vec<IpAddr>,
    pub addresses_total: u32,
    /// Seconds the addresses stay usable (the shortest, after clamping).
    pub ttl: u32,
    pub webgroups: Vec<String>,
}

/// The record of a learn event; `name` and `webgroups` come from the maps.
pub fn dns_record(ev: &egress_common::LearnEvent, name: String, webgroups: Vec<String>, wall: SystemTime) -> DnsRecord {
    let listed = (ev.count as usize).min(egress_common::LEARN_EVENT_ADDRS);
    DnsRecord {
        ts: humantime::format_rfc3339_millis(wall).to_string(),
        kind: "dns",
        workload: family_addr(ev.family, ev.workload),
        name,
        addresses: ev.addrs[..listed].iter().map(|a| key_addr(*a)).collect(),
        addresses_total: u32::from(ev.count),
        ttl: ev.ttl_s,
        webgroups,
    }
}

/// A workload suspected of tunnelling data through an allowed DNS zone.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct TunnelRecord {
    pub ts: String,
    /// `dns_tunnel_suspected`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub workload: IpAddr,
    /// The pattern that allows the zone (`**.example.com`), or the zone id
    /// when the pack that had it is gone.
    pub zone: String,
    /// Distinct names with a random-looking label seen in the window.
    pub distinct_names: u32,
    /// Names asked, as samples (the one that made the tunnel suspected;
    /// none when it was the first of two queries in one TCP segment).
    pub sample_names: Vec<String>,
    /// `reported` (monitor) or `refused` (enforce: the workload's queries
    /// into the zone are refused for a while).
    pub action: &'static str,
}

/// The record of a tunnel event; `zone` is its pattern, from the pack.
pub fn tunnel_record(ev: &egress_common::TunnelEvent, zone: Option<String>, wall: SystemTime) -> TunnelRecord {
    let len = usize::from(ev.name_len).min(ev.name.len());
    TunnelRecord {
        ts: humantime::format_rfc3339_millis(wall).to_string(),
        kind: "dns_tunnel_suspected",
        workload: family_addr(ev.family, ev.workload),
        zone: zone.unwrap_or_else(|| format!("zone#{:08x}", ev.zone)),
        distinct_names: ev.distinct,
        // None when the flagging query was the first of two in one TCP
        // segment (the datapath kept only the last one's name).
        sample_names: (len > 0).then(|| String::from_utf8_lossy(&ev.name[..len]).into_owned()).into_iter().collect(),
        action: if ev.mode == egress_common::TUNNEL_GUARD_ENFORCE { "refused" } else { "reported" },
    }
}

/// What became of flow events since the agent started, and since the last
/// summary: written when events were held back or lost.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct SummaryRecord {
    pub ts: String,
    /// `summary`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub events_sent: u64,
    pub events_lost: u64,
    pub events_suppressed: u64,
    pub lost_since_last: u64,
    pub suppressed_since_last: u64,
}

/// The protocol's name in records.
pub fn proto_name(proto: u8) -> String {
    match proto {
        6 => "tcp".into(),
        17 => "udp".into(),
        1 => "icmp".into(),
        58 => "icmpv6".into(),
        n => n.to_string(),
    }
}

/// Builds the record of an event. `rule` is the deciding rule when its pack
/// is still known; `wall` is the wall-clock time of the event.
pub fn record(
    ev: &FlowEvent,
    rule: Option<&CompiledRule>,
    iface: String,
    wall: SystemTime,
    fqdn: Option<String>,
) -> FlowRecord {
    let verdict = Verdict::from_code(ev.verdict).map_or("unknown", Verdict::name);
    let (name, priority, action, mode) = match rule {
        Some(r) => (
            r.name.clone(),
            (r.priority != u32::MAX).then_some(r.priority),
            if r.info.action == ACTION_DENY { "deny" } else { "permit" },
            if r.info.mode == MODE_ENFORCE { "enforce" } else { "monitor" },
        ),
        // Dropped (or passed in monitor mode) because it could not be judged.
        None if ev.rule == egress_common::NO_RULE => {
            ("(unjudgeable)".into(), None, "deny", if verdict == "denied" { "enforce" } else { "monitor" })
        }
        None => (format!("#{}", ev.rule), None, "unknown", "unknown"),
    };
    FlowRecord {
        ts: humantime::format_rfc3339_millis(wall).to_string(),
        kind: "flow",
        iface,
        src: family_addr(ev.family, ev.src),
        sport: u16::from_be(ev.sport_be),
        dst: family_addr(ev.family, ev.dst),
        dport: u16::from_be(ev.dport_be),
        proto: proto_name(ev.proto),
        rule: name,
        priority,
        action,
        mode,
        verdict,
        reason: Reason::from_code(ev.reason).map_or("unknown", Reason::name),
        pack: ev.generation,
        fqdn,
        name: None,
        name_source: None,
    }
}

/// Converts `bpf_ktime_get_ns` (`CLOCK_MONOTONIC`) to wall-clock time.
pub fn ktime_to_wall(ktime_ns: u64) -> SystemTime {
    let mono_now = crate::clock::monotonic_ns();
    let now = SystemTime::now();
    now.checked_sub(Duration::from_nanos(mono_now.saturating_sub(ktime_ns))).unwrap_or(now)
}

/// The name of an interface index, or the index itself.
pub fn iface_name(ifindex: u32) -> String {
    let mut buf = [0 as libc::c_char; libc::IF_NAMESIZE];
    // SAFETY: buf has IF_NAMESIZE bytes as if_indextoname requires.
    let p = unsafe { libc::if_indextoname(ifindex, buf.as_mut_ptr()) };
    if p.is_null() {
        return ifindex.to_string();
    }
    // SAFETY: on success buf holds a NUL-terminated name.
    unsafe { std::ffi::CStr::from_ptr(buf.as_ptr()) }.to_string_lossy().into_owned()
}

/// Where flow-log lines go: standard output, or a file rotated when it
/// would grow past `max_bytes` (`PATH` → `PATH.1` → ... → `PATH.KEEP`, the
/// oldest dropped).
pub struct FlowLog {
    out: Box<dyn Write + Send>,
    file: Option<Rotation>,
}

/// A rotated file's settings and state.
struct Rotation {
    path: std::path::PathBuf,
    max_bytes: u64,
    keep: u32,
    size: u64,
}

/// Rotation defaults: 100 MiB a file, 5 old files.
pub const DEFAULT_MAX_BYTES: u64 = 100 << 20;
pub const DEFAULT_KEEP: u32 = 5;

/// Opens the log for appending: created `0640` (the flow log names every
/// workload's destinations), and never through a symbolic link (a link
/// planted at the path would make the agent, as root, write elsewhere).
fn append(path: &std::path::Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt as _;
    std::fs::OpenOptions::new().create(true).append(true).mode(0o640).custom_flags(libc::O_NOFOLLOW).open(path).map_err(
        |e| {
            if e.raw_os_error() == Some(libc::ELOOP) {
                std::io::Error::other(format!("{} is a symbolic link: the flow log never follows one", path.display()))
            } else {
                e
            }
        },
    )
}

impl FlowLog {
    /// `-` is standard output; anything else a file opened for appending,
    /// rotated past `max_bytes`, keeping `keep` old files.
    pub fn open(target: &str, max_bytes: u64, keep: u32) -> std::io::Result<Self> {
        if target == "-" {
            return Ok(FlowLog { out: Box::new(std::io::stdout()), file: None });
        }
        let path = std::path::PathBuf::from(target);
        let file = append(&path)?;
        let size = file.metadata()?.len();
        Ok(FlowLog { out: Box::new(file), file: Some(Rotation { path, max_bytes: max_bytes.max(1), keep, size }) })
    }

    fn rotate(&mut self) -> std::io::Result<()> {
        let Some(r) = &mut self.file else { return Ok(()) };
        let numbered = |n: u32| {
            let mut p = r.path.clone().into_os_string();
            p.push(format!(".{n}"));
            std::path::PathBuf::from(p)
        };
        // Whatever happens below, the next attempt comes after another
        // `max_bytes`, not on every record (each would shift away one more
        // old file).
        r.size = 0;
        // Gone (an operator removed it to free space): nothing to shift,
        // the old files stay; start a new file.
        if r.path.exists() {
            if r.keep == 0 {
                std::fs::remove_file(&r.path)?;
            } else {
                let _ = std::fs::remove_file(numbered(r.keep));
                for n in (1..r.keep).rev() {
                    let _ = std::fs::rename(numbered(n), numbered(n + 1));
                }
                std::fs::rename(&r.path, numbered(1))?;
            }
        }
        self.out = Box::new(append(&r.path)?);
        Ok(())
    }

    fn line(&mut self, line: &str) -> std::io::Result<()> {
        let len = line.len() as u64 + 1;
        if let Some(r) = &self.file
            && r.size > 0
            && r.size + len > r.max_bytes
        {
            self.rotate()?;
        }
        // One write for the line and its newline: a failed write (disk
        // full) never leaves a line without its end for the next to join.
        let mut whole = String::with_capacity(line.len() + 1);
        whole.push_str(line);
        whole.push('\n');
        self.out.write_all(whole.as_bytes())?;
        self.out.flush()?;
        if let Some(r) = &mut self.file {
            r.size += len;
        }
        Ok(())
    }

    /// Writes one record as a JSON line and flushes it.
    pub fn write(&mut self, rec: &impl Serialize) -> std::io::Result<()> {
        let line = serde_json::to_string(rec).map_err(std::io::Error::other)?;
        self.line(&line)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use egress_common::{ACTION_PERMIT, FAMILY_V4, RuleInfo};

    #[test]
    fn a_tunnel_record_names_the_zone_and_a_sample() {
        let mut ev = egress_common::TunnelEvent {
            ktime_ns: 0,
            workload: egress_common::addr::addr_key("10.10.1.10".parse().unwrap()),
            zone: 9,
            distinct: 8,
            family: FAMILY_V4,
            mode: egress_common::TUNNEL_GUARD_ENFORCE,
            name_len: 11,
            _pad0: [0; 25],
            kind: egress_common::EVENT_KIND_TUNNEL,
            _pad1: [0; 3],
            name: [0; egress_common::NAME_BUF],
        };
        ev.name[..11].copy_from_slice(b"x.t.example");
        let rec = tunnel_record(&ev, Some("**.t.example".into()), SystemTime::UNIX_EPOCH);
        let json = serde_json::to_value(&rec).unwrap();
        assert_eq!(json["type"], "dns_tunnel_suspected");
        assert_eq!(json["workload"], "10.10.1.10");
        assert_eq!(json["zone"], "**.t.example");
        assert_eq!(json["distinct_names"], 8);
        assert_eq!(json["sample_names"][0], "x.t.example");
        assert_eq!(json["action"], "refused");
        let gone = tunnel_record(&ev, None, SystemTime::UNIX_EPOCH);
        assert_eq!(gone.zone, "zone#00000009");
    }

    #[test]
    fn record_has_every_field() {
        let mut ev =
            FlowEvent { family: FAMILY_V4, proto: 6, verdict: 0, rule: 0, generation: 7, ..Default::default() };
        ev.src[10..16].copy_from_slice(&[0xff, 0xff, 10, 10, 1, 10]);
        ev.dst[10..16].copy_from_slice(&[0xff, 0xff, 203, 0, 113, 5]);
        ev.sport_be = 40000u16.to_be();
        ev.dport_be = 443u16.to_be();
        let rule = CompiledRule {
            name: "allow-web".into(),
            priority: 10,
            info: RuleInfo { action: ACTION_PERMIT, mode: MODE_ENFORCE, log: 1, _pad: 0, counter: 0 },
        };
        let rec = record(&ev, Some(&rule), "lan0".into(), SystemTime::UNIX_EPOCH, Some("api.example.com".into()));
        let json: serde_json::Value = serde_json::to_value(&rec).expect("json");
        assert_eq!(json["ts"], "1970-01-01T00:00:00.000Z");
        assert_eq!(json["src"], "10.10.1.10");
        assert_eq!(json["dst"], "203.0.113.5");
        assert_eq!(json["sport"], 40000);
        assert_eq!(json["dport"], 443);
        assert_eq!(json["proto"], "tcp");
        assert_eq!(json["rule"], "allow-web");
        assert_eq!(json["action"], "permit");
        assert_eq!(json["mode"], "enforce");
        assert_eq!(json["verdict"], "allowed");
        assert_eq!(json["pack"], 7);
        assert_eq!(json["type"], "flow");
        assert_eq!(json["fqdn"], "api.example.com");
    }

    #[test]
    fn unjudgeable_drops_have_a_record_without_a_rule() {
        let ev = FlowEvent {
            family: FAMILY_V4,
            proto: 17,
            verdict: Verdict::Denied as u8,
            reason: Reason::FragmentUnseen as u8,
            rule: egress_common::NO_RULE,
            ..Default::default()
        };
        let json = serde_json::to_value(record(&ev, None, "lan0".into(), SystemTime::UNIX_EPOCH, None)).expect("json");
        assert_eq!(json["rule"], "(unjudgeable)");
        assert_eq!(json["action"], "deny");
        assert_eq!(json["mode"], "enforce");
        assert_eq!(json["verdict"], "denied");
        assert_eq!(json["reason"], Reason::FragmentUnseen.name());
        assert!(json["priority"].is_null());
    }

    #[test]
    fn the_log_is_created_0640_and_never_through_a_symlink() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = std::env::temp_dir().join(format!("egress-log-mode-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("flows.jsonl");
        let mut log = FlowLog::open(path.to_str().unwrap(), 1000, 2).unwrap();
        log.write(&serde_json::json!({ "n": 1 })).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o640);
        // A link planted where the log goes (to a file the agent, as root,
        // could write) is refused, and the target is left alone.
        let target = dir.join("elsewhere");
        std::fs::write(&target, "untouched\n").unwrap();
        let link = dir.join("linked.jsonl");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        let e = FlowLog::open(link.to_str().unwrap(), 1000, 2).err().expect("a symlink is refused").to_string();
        assert!(e.contains("symbolic link"), "{e}");
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "untouched\n");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn rotation_keeps_n_files() {
        let dir = std::env::temp_dir().join(format!("egress-rotate-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("flows.jsonl");
        let mut log = FlowLog::open(path.to_str().unwrap(), 1000, 3).unwrap();
        for i in 0..200 {
            log.write(&serde_json::json!({ "n": i, "pad": "x".repeat(40) })).unwrap();
        }
        let mut names: Vec<String> =
            std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
        names.sort();
        assert_eq!(names, ["flows.jsonl", "flows.jsonl.1", "flows.jsonl.2", "flows.jsonl.3"]);
        for n in &names {
            let len = std::fs::metadata(dir.join(n)).unwrap().len();
            assert!(len <= 1000, "{n} is {len} bytes");
        }
        // The newest lines are in the current file, in order, none torn.
        let last: Vec<serde_json::Value> =
            std::fs::read_to_string(&path).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        assert_eq!(last.last().unwrap()["n"], 199);
        let older = std::fs::read_to_string(dir.join("flows.jsonl.1")).unwrap();
        let first_here = last[0]["n"].as_u64().unwrap();
        let last_there: serde_json::Value = serde_json::from_str(older.lines().last().unwrap()).unwrap();
        assert_eq!(last_there["n"].as_u64().unwrap() + 1, first_here, "no line lost at the rotation");
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// The current file removed under the agent (to free space): the next
    /// rotation starts a new file and keeps the old ones, instead of
    /// failing on every record and shifting one old file away each time.
    #[test]
    fn a_removed_log_file_is_started_again() {
        let dir = std::env::temp_dir().join(format!("egress-rotate-gone-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("flows.jsonl");
        let mut log = FlowLog::open(path.to_str().unwrap(), 1000, 2).unwrap();
        let line = |n: i32| serde_json::json!({ "n": n, "pad": "x".repeat(40) });
        for i in 0..50 {
            log.write(&line(i)).unwrap();
        }
        let kept: Vec<String> =
            ["flows.jsonl.1", "flows.jsonl.2"].iter().map(|n| std::fs::read_to_string(dir.join(n)).unwrap()).collect();
        std::fs::remove_file(&path).unwrap();
        for i in 50..80 {
            log.write(&line(i)).expect("writing goes on");
        }
        let now = std::fs::read_to_string(&path).expect("a new current file");
        assert!(now.lines().last().is_some_and(|l| l.contains("\"n\":79")), "{now}");
        // One rotation at most happened since (30 lines of 61 bytes): the
        // older of the kept files may have shifted out, the newer remains.
        let older_now = std::fs::read_to_string(dir.join("flows.jsonl.2")).unwrap();
        assert!(older_now == kept[0] || older_now == kept[1], "old files kept, not shifted away record by record");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
