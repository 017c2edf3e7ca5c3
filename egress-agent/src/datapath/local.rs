//! The gateway's own addresses, read with `getifaddrs(3)`, and the cached
//! flows towards an address that becomes one of them.

use std::collections::BTreeSet;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use aya::maps::HashMap;
use egress_common::{FlowKey, FlowValue, FragKey};

use super::{Datapath, DatapathError};

/// Every IPv4 and IPv6 address configured on this host's interfaces.
pub fn local_addresses() -> io::Result<BTreeSet<IpAddr>> {
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills `head` with a list we free below.
    if unsafe { libc::getifaddrs(&mut head) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let mut out = BTreeSet::new();
    let mut cur = head;
    while !cur.is_null() {
        // SAFETY: `cur` is a node of the list getifaddrs returned.
        let ifa = unsafe { &*cur };
        if !ifa.ifa_addr.is_null() {
            // SAFETY: ifa_addr points to a sockaddr of the family it names.
            unsafe {
                match (*ifa.ifa_addr).sa_family as i32 {
                    libc::AF_INET => {
                        let sa = &*(ifa.ifa_addr as *const libc::sockaddr_in);
                        out.insert(IpAddr::V4(Ipv4Addr::from(u32::from_be(sa.sin_addr.s_addr))));
                    }
                    libc::AF_INET6 => {
                        let sa = &*(ifa.ifa_addr as *const libc::sockaddr_in6);
                        out.insert(IpAddr::V6(Ipv6Addr::from(sa.sin6_addr.s6_addr)));
                    }
                    _ => {}
                }
            }
        }
        cur = ifa.ifa_next;
    }
    // SAFETY: `head` came from getifaddrs and is freed once.
    unsafe { libc::freeifaddrs(head) };
    Ok(out)
}

/// An address as the datapath keys it: 16 bytes, IPv4-mapped for IPv4.
pub fn addr_key(addr: IpAddr) -> [u8; 16] {
    match addr {
        IpAddr::V4(a) => a.to_ipv6_mapped().octets(),
        IpAddr::V6(a) => a.octets(),
    }
}

impl Datapath {
    /// Drops cached flows and fragment verdicts whose destination is one of
    /// `addrs` (keyed as the datapath keys them), so that their next packet
    /// finds the address is the gateway's.
    pub(super) fn forget_flows_to(&mut self, addrs: &[[u8; 16]]) -> Result<usize, DatapathError> {
        Ok(forget::<FlowKey>(self, "EGV2_FLOWS", |k| k.dst, addrs)? + forget::<FragKey>(self, "EGV2_FRAGS", |k| k.dst, addrs)?)
    }
}

/// Removes the entries of the `K → FlowValue` map `name` whose destination
/// is one of `addrs`; returns how many.
fn forget<K: aya::Pod>(dp: &mut Datapath, name: &str, dst: fn(&K) -> [u8; 16], addrs: &[[u8; 16]]) -> Result<usize, DatapathError> {
    let map = dp.ebpf.map_mut(name).ok_or_else(|| DatapathError::MissingMap(name.into()))?;
    let mut cache: HashMap<_, K, FlowValue> = HashMap::try_from(map).map_err(|e| DatapathError::map(name, e))?;
    let gone: Vec<K> = cache.keys().filter_map(Result::ok).filter(|k| addrs.contains(&dst(k))).collect();
    Ok(gone.iter().filter(|k| cache.remove(k).is_ok()).count())
}
