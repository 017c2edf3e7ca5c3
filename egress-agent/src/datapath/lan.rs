//! The LAN interfaces, as the DNS learner knows them ([`maps::LAN_IFS`]): a
//! packet that came in on one is a workload's, so a "resolver answer"
//! arriving there is a forgery and teaches nothing. Except on a LAN
//! interface that the resolvers are also reached through (one interface
//! for both sides): there real answers arrive too, the interface tells
//! nothing, and it is left out (the agent warns).
//!
//! A packet's ingress interface is the device the kernel delivered it to
//! last: for a frame tagged 802.1Q that is the VLAN device (`lan.VID`), for
//! a macvlan's frame the macvlan, for a bridge or bond port the master. So
//! the upper devices of every `--lan` interface are marked too, as the
//! kernel lists them (`/sys/class/net/<dev>/upper_*`), recursively up to
//! [`UPPER_DEPTH`] levels. A LAN interface a resolver is reached through
//! is left out with all its uppers; an upper a resolver is reached through
//! (say `lan.100`) is left out with its own uppers.

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::path::Path;

use egress_common::maps;

use super::local::interface_addresses;

/// The LAN interfaces this datapath is attached to, and those of them a
/// resolver is reached through (answers coming in on those still teach).
#[derive(Default)]
pub struct LanMarks {
    attached: BTreeSet<String>,
    shared: BTreeSet<String>,
}
use super::{Datapath, DatapathError, map_mut, map_ref};

/// How many levels of upper devices above a `--lan` interface are marked:
/// the kernel's own limit on stacked devices (`MAX_NEST_DEV`).
pub const UPPER_DEPTH: usize = 8;

/// The upper devices of `iface` under `sysfs_net` (`/sys/class/net`), and
/// theirs, up to `depth` levels: the names behind its `upper_<name>`
/// entries. `iface` itself is not included.
fn uppers_in(sysfs_net: &Path, iface: &str, depth: usize) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    let mut level = vec![iface.to_string()];
    for _ in 0..depth {
        let mut next = Vec::new();
        for dev in &level {
            let Ok(entries) = std::fs::read_dir(sysfs_net.join(dev)) else { continue };
            for entry in entries.filter_map(Result::ok) {
                let name = entry.file_name();
                let Some(upper) = name.to_str().and_then(|n| n.strip_prefix("upper_")) else { continue };
                if upper != iface && found.insert(upper.to_string()) {
                    next.push(upper.to_string());
                }
            }
        }
        if next.is_empty() {
            break;
        }
        level = next;
    }
    found
}

/// [`uppers_in`] on this host's `/sys/class/net`.
fn uppers(iface: &str) -> BTreeSet<String> {
    uppers_in(Path::new("/sys/class/net"), iface, UPPER_DEPTH)
}

/// The interface traffic to `dst` leaves through, by the source address
/// the kernel picks for it (no packet is sent).
fn iface_towards(dst: IpAddr, addrs: &[(String, IpAddr)]) -> Option<String> {
    let any: SocketAddr = if dst.is_ipv4() { ([0u8; 4], 0).into() } else { ([0u16; 8], 0).into() };
    let sock = UdpSocket::bind(any).ok()?;
    sock.connect((dst, 53)).ok()?;
    let src = sock.local_addr().ok()?.ip();
    addrs.iter().find(|(_, a)| *a == src).map(|(n, _)| n.clone())
}

impl Datapath {
    /// Records `iface` as a LAN interface and updates [`maps::LAN_IFS`].
    pub fn mark_lan(&mut self, iface: &str) -> Result<(), DatapathError> {
        self.lan_marks.attached.insert(iface.to_string());
        self.sync_lan_marks()
    }

    /// LAN interfaces that a listed resolver is reached through, left out
    /// of [`maps::LAN_IFS`] (see the module comment).
    pub fn lans_shared_with_resolvers(&self) -> &BTreeSet<String> {
        &self.lan_marks.shared
    }

    /// The interface indexes in [`maps::LAN_IFS`] now.
    pub fn lan_ifindexes(&self) -> Result<BTreeSet<u32>, DatapathError> {
        let marks: aya::maps::HashMap<_, u32, u32> = map_ref(&self.ebpf, maps::LAN_IFS)?;
        Ok(marks.keys().filter_map(Result::ok).collect())
    }

    /// Writes [`maps::LAN_IFS`]: every LAN interface and its upper devices
    /// (see the module comment) but those the live pack's resolvers (not
    /// the gateway's own addresses, whose answers come from the gateway
    /// itself) are reached through, with their uppers. Called on attach,
    /// after every install (the resolvers may have changed) and on every
    /// upkeep (devices come and go: a VLAN created after start).
    pub fn sync_lan_marks(&mut self) -> Result<(), DatapathError> {
        // None recorded yet (an adopting agent installs before it attaches):
        // keep the marks the pinned datapath has.
        if self.lan_marks.attached.is_empty() {
            return Ok(());
        }
        let addrs = interface_addresses()?;
        let resolvers = match self.live_pack() {
            Some(p) => p.resolvers.clone(),
            None => self.live_slot_resolvers(),
        };
        let mut candidates = self.lan_marks.attached.clone();
        for lan in &self.lan_marks.attached {
            candidates.extend(uppers(lan));
        }
        self.lan_marks.shared = resolvers
            .iter()
            .filter(|r| !addrs.iter().any(|(_, a)| a == *r))
            .filter_map(|r| iface_towards(*r, &addrs))
            .filter(|i| candidates.contains(i))
            .collect();
        // A shared interface's uppers stay unmarked with it; a shared upper
        // leaves its lower (whose own frames still mark) alone.
        let mut trusted = self.lan_marks.shared.clone();
        for shared in &self.lan_marks.shared {
            trusted.extend(uppers(shared));
        }
        let mut want = BTreeSet::new();
        for lan in candidates.difference(&trusted) {
            if want.len() >= egress_common::MAX_LAN_IFACES as usize {
                break;
            }
            let name = std::ffi::CString::new(lan.as_str()).map_err(|e| DatapathError::Io(std::io::Error::other(e)))?;
            // SAFETY: if_nametoindex reads a NUL-terminated string we own.
            match unsafe { libc::if_nametoindex(name.as_ptr()) } {
                0 => {} // gone for now; the next sync finds it again
                ifindex => {
                    want.insert(ifindex);
                }
            }
        }
        let mut marks: aya::maps::HashMap<_, u32, u32> = map_mut(&mut self.ebpf, maps::LAN_IFS)?;
        let have: BTreeSet<u32> = marks.keys().filter_map(Result::ok).collect();
        for ifindex in want.difference(&have) {
            marks.insert(ifindex, 1, 0).map_err(|e| DatapathError::map(maps::LAN_IFS, e))?;
        }
        for ifindex in have.difference(&want) {
            let _ = marks.remove(ifindex);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uppers_are_followed_recursively_to_a_bounded_depth() {
        let root = std::env::temp_dir().join(format!("egress-uppers-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        // eth0 -> eth0.100 -> br0 -> br0m, and br0 -> eth0 (a cycle as a
        // malformed tree would have); eth1 unrelated.
        for (dev, ups) in [
            ("eth0", &["eth0.100"][..]),
            ("eth0.100", &["br0"]),
            ("br0", &["br0m", "eth0"]),
            ("br0m", &[]),
            ("eth1", &["eth1.7"]),
        ] {
            std::fs::create_dir_all(root.join(dev)).unwrap();
            for up in ups {
                std::os::unix::fs::symlink(format!("../{up}"), root.join(dev).join(format!("upper_{up}"))).unwrap();
            }
            std::fs::write(root.join(dev).join("lower_x"), "").unwrap();
        }
        let names = |s: BTreeSet<String>| s.into_iter().collect::<Vec<_>>();
        assert_eq!(names(uppers_in(&root, "eth0", UPPER_DEPTH)), ["br0", "br0m", "eth0.100"]);
        assert_eq!(names(uppers_in(&root, "eth0", 2)), ["br0", "eth0.100"]);
        assert_eq!(names(uppers_in(&root, "br0m", UPPER_DEPTH)), Vec::<String>::new());
        assert_eq!(names(uppers_in(&root, "gone", UPPER_DEPTH)), Vec::<String>::new());
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn loopback_is_reached_through_lo() {
        let addrs = interface_addresses().expect("getifaddrs");
        assert_eq!(iface_towards("127.0.0.1".parse().unwrap(), &addrs).as_deref(), Some("lo"));
    }
}
