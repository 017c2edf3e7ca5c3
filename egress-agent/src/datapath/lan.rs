//! The LAN interfaces, as the DNS learner knows them ([`maps::LAN_IFS`]): a
//! packet that came in on one is a workload's, so a "resolver answer"
//! arriving there is a forgery and teaches nothing. Except on a LAN
//! interface that the resolvers are also reached through (one interface
//! for both sides): there real answers arrive too, the interface tells
//! nothing, and it is left out (the agent warns).

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr, UdpSocket};

use egress_common::maps;

use super::local::interface_addresses;

/// The LAN interfaces this datapath is attached to, and those of them a
/// resolver is reached through (answers coming in on those still teach).
#[derive(Default)]
pub struct LanMarks {
    attached: BTreeSet<String>,
    shared: BTreeSet<String>,
}
use super::{Datapath, DatapathError, map_mut};

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

    /// Writes [`maps::LAN_IFS`]: every LAN interface but those the live
    /// pack's resolvers (not the gateway's own addresses, whose answers
    /// come from the gateway itself) are reached through. Called on
    /// attach and after every install (the resolvers may have changed).
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
        self.lan_marks.shared = resolvers
            .iter()
            .filter(|r| !addrs.iter().any(|(_, a)| a == *r))
            .filter_map(|r| iface_towards(*r, &addrs))
            .filter(|i| self.lan_marks.attached.contains(i))
            .collect();
        let mut want = BTreeSet::new();
        for lan in self.lan_marks.attached.difference(&self.lan_marks.shared) {
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
    fn loopback_is_reached_through_lo() {
        let addrs = interface_addresses().expect("getifaddrs");
        assert_eq!(iface_towards("127.0.0.1".parse().unwrap(), &addrs).as_deref(), Some("lo"));
    }
}
