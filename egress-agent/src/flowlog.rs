//! Flow logs: one JSON line per new flow decided by a logging rule.
//!
//! Events come from the datapath's ring buffer; [`record`] turns one into
//! the JSON record (pure, tested), [`FlowLog`] writes lines to a file or
//! standard output.

use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::{Duration, SystemTime};

use egress_common::{ACTION_DENY, FAMILY_V4, FlowEvent, MODE_ENFORCE, Reason, Verdict};
use serde::Serialize;

use crate::policy::compile::CompiledRule;

/// One flow-log record.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct FlowRecord {
    /// RFC 3339, milliseconds, UTC.
    pub ts: String,
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
}

/// The address in an event field (IPv4-mapped for IPv4).
pub fn event_addr(family: u8, bytes: [u8; 16]) -> IpAddr {
    if family == FAMILY_V4 {
        IpAddr::V4(Ipv4Addr::new(bytes[12], bytes[13], bytes[14], bytes[15]))
    } else {
        IpAddr::V6(Ipv6Addr::from(bytes))
    }
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
pub fn record(ev: &FlowEvent, rule: Option<&CompiledRule>, iface: String, wall: SystemTime) -> FlowRecord {
    let verdict = Verdict::from_code(ev.verdict).map_or("unknown", Verdict::name);
    let (name, priority, action, mode) = match rule {
        Some(r) => (
            r.name.clone(),
            (r.priority != u32::MAX).then_some(r.priority),
            if r.info.action == ACTION_DENY { "deny" } else { "permit" },
            if r.info.mode == MODE_ENFORCE { "enforce" } else { "monitor" },
        ),
        None => (format!("#{}", ev.rule), None, "unknown", "unknown"),
    };
    FlowRecord {
        ts: humantime::format_rfc3339_millis(wall).to_string(),
        iface,
        src: event_addr(ev.family, ev.src),
        sport: u16::from_be(ev.sport_be),
        dst: event_addr(ev.family, ev.dst),
        dport: u16::from_be(ev.dport_be),
        proto: proto_name(ev.proto),
        rule: name,
        priority,
        action,
        mode,
        verdict,
        reason: Reason::from_code(ev.reason).map_or("unknown", Reason::name),
        pack: ev.generation,
    }
}

/// Converts `bpf_ktime_get_ns` (CLOCK_MONOTONIC) to wall-clock time.
pub fn ktime_to_wall(ktime_ns: u64) -> SystemTime {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes into the timespec we own.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    let mono_now = ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64;
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

/// Where flow-log lines go.
pub struct FlowLog {
    out: Box<dyn Write + Send>,
}

impl FlowLog {
    /// `-` is standard output; anything else a file opened for appending.
    pub fn open(target: &str) -> std::io::Result<Self> {
        let out: Box<dyn Write + Send> = if target == "-" {
            Box::new(std::io::stdout())
        } else {
            Box::new(std::fs::OpenOptions::new().create(true).append(true).open(target)?)
        };
        Ok(FlowLog { out })
    }

    /// Writes one record as a JSON line and flushes it.
    pub fn write(&mut self, rec: &FlowRecord) -> std::io::Result<()> {
        let line = serde_json::to_string(rec).map_err(std::io::Error::other)?;
        writeln!(self.out, "{line}")?;
        self.out.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use egress_common::{ACTION_PERMIT, RuleInfo};

    #[test]
    fn record_has_every_field() {
        let mut ev = FlowEvent { family: FAMILY_V4, proto: 6, verdict: 0, rule: 0, generation: 7, ..Default::default() };
        ev.src[10..16].copy_from_slice(&[0xff, 0xff, 10, 10, 1, 10]);
        ev.dst[10..16].copy_from_slice(&[0xff, 0xff, 203, 0, 113, 5]);
        ev.sport_be = 40000u16.to_be();
        ev.dport_be = 443u16.to_be();
        let rule = CompiledRule {
            name: "allow-web".into(),
            priority: 10,
            info: RuleInfo { action: ACTION_PERMIT, mode: MODE_ENFORCE, log: 1, _pad: 0, counter: 0 },
        };
        let rec = record(&ev, Some(&rule), "lan0".into(), SystemTime::UNIX_EPOCH);
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
    }
}
