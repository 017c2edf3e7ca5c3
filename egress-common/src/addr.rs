//! Addresses as the datapath keys them: 16 bytes, IPv4 as IPv4-mapped IPv6
//! (`::ffff:a.b.c.d`), IPv6 as is.

use core::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::FAMILY_V4;

/// The 16-byte form of IPv4 address bytes: `::ffff:a.b.c.d`.
pub const fn ipv4_mapped(v4: [u8; 4]) -> [u8; 16] {
    [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, v4[0], v4[1], v4[2], v4[3]]
}

/// The 16-byte form of an address.
pub const fn addr_key(addr: IpAddr) -> [u8; 16] {
    match addr {
        IpAddr::V4(a) => ipv4_mapped(a.octets()),
        IpAddr::V6(a) => a.octets(),
    }
}

/// The address of a 16-byte form that has no family beside it: an
/// IPv4-mapped form is IPv4.
pub const fn key_addr(key: [u8; 16]) -> IpAddr {
    let v6 = Ipv6Addr::from_octets(key);
    match v6.to_ipv4_mapped() {
        Some(v4) => IpAddr::V4(v4),
        None => IpAddr::V6(v6),
    }
}

/// The address of a 16-byte form whose family is known (events carry it):
/// with [`FAMILY_V4`] the last four bytes, otherwise IPv6 (an IPv4-mapped
/// IPv6 address a workload sent over IPv6 stays IPv6).
pub const fn family_addr(family: u8, key: [u8; 16]) -> IpAddr {
    if family == FAMILY_V4 {
        IpAddr::V4(Ipv4Addr::new(key[12], key[13], key[14], key[15]))
    } else {
        IpAddr::V6(Ipv6Addr::from_octets(key))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        let v4 = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 7));
        let v6 = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1));
        assert_eq!(addr_key(v4), [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 192, 0, 2, 7]);
        assert_eq!(key_addr(addr_key(v4)), v4);
        assert_eq!(key_addr(addr_key(v6)), v6);
        assert_eq!(family_addr(FAMILY_V4, addr_key(v4)), v4);
        assert_eq!(
            family_addr(crate::FAMILY_V6, addr_key(v4)),
            IpAddr::V6(Ipv4Addr::new(192, 0, 2, 7).to_ipv6_mapped())
        );
    }
}
