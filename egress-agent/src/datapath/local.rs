//! The gateway's own addresses, read with `getifaddrs(3)`, and the cached
//! flows towards an address that becomes one of them.

use std::collections::BTreeSet;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use aya::maps::HashMap;
use egress_common::{FLOW_CACHE_ENTRIES, FlowKey, FlowSlot, FlowValue, FragKey, maps};

use super::mmap_array::MmapArray;
use super::{Datapath, DatapathError, map_mut};

/// Every IPv4 and IPv6 address configured on this host's interfaces.
pub fn local_addresses() -> io::Result<BTreeSet<IpAddr>> {
    Ok(interface_addresses()?.into_iter().map(|(_, a)| a).collect())
}

/// Every address configured on this host, with its interface's name.
pub fn interface_addresses() -> io::Result<Vec<(String, IpAddr)>> {
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills `head` with a list we free below.
    if unsafe { libc::getifaddrs(&raw mut head) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let mut out = Vec::new();
    let mut cur = head;
    while !cur.is_null() {
        // SAFETY: `cur` is a node of the list getifaddrs returned.
        let ifa = unsafe { &*cur };
        if !ifa.ifa_addr.is_null() && !ifa.ifa_name.is_null() {
            // SAFETY: ifa_name is a NUL-terminated string of the list.
            let name = unsafe { std::ffi::CStr::from_ptr(ifa.ifa_name) }.to_string_lossy().into_owned();
            // SAFETY: ifa_addr points to a sockaddr of the family it names.
            #[allow(clippy::cast_ptr_alignment, reason = "getifaddrs aligns each address for its family")]
            let addr = unsafe {
                match i32::from((*ifa.ifa_addr).sa_family) {
                    libc::AF_INET => {
                        let sa = &*(ifa.ifa_addr as *const libc::sockaddr_in);
                        Some(IpAddr::V4(Ipv4Addr::from(u32::from_be(sa.sin_addr.s_addr))))
                    }
                    libc::AF_INET6 => {
                        let sa = &*(ifa.ifa_addr as *const libc::sockaddr_in6);
                        Some(IpAddr::V6(Ipv6Addr::from(sa.sin6_addr.s6_addr)))
                    }
                    _ => None,
                }
            };
            if let Some(addr) = addr {
                out.push((name, addr));
            }
        }
        cur = ifa.ifa_next;
    }
    // SAFETY: `head` came from getifaddrs and is freed once.
    unsafe { libc::freeifaddrs(head) };
    Ok(out)
}

impl Datapath {
    /// Drops cached flows and fragment verdicts whose destination is one of
    /// `addrs` (keyed as the datapath keys them), so that their next packet
    /// finds the address is the gateway's.
    pub(super) fn forget_flows_to(&mut self, addrs: &[[u8; 16]]) -> Result<usize, DatapathError> {
        use std::os::fd::AsFd as _;
        let Some(aya::maps::Map::Array(flows)) = self.ebpf.map(maps::FLOWS) else {
            return Err(DatapathError::MissingMap(maps::FLOWS.into()));
        };
        // The flow cache is an mmapable array: scanned in memory, not with
        // a syscall per way.
        let mut ways = MmapArray::<FlowSlot>::new(flows.fd().as_fd(), FLOW_CACHE_ENTRIES)?;
        let mut forgotten = 0;
        for i in 0..FLOW_CACHE_ENTRIES {
            let hit =
                ways.get(i).is_some_and(|w| w.value.generation != 0 && addrs.contains(&FlowKey::from_words(w.key).dst));
            if hit && ways.set(i, FlowSlot::default()) {
                forgotten += 1;
            }
        }
        let mut frags: HashMap<_, FragKey, FlowValue> = map_mut(&mut self.ebpf, maps::FRAGS)?;
        let gone: Vec<FragKey> = frags.keys().filter_map(Result::ok).filter(|k| addrs.contains(&k.dst)).collect();
        Ok(forgotten + gone.iter().filter(|k| frags.remove(k).is_ok()).count())
    }
}
