//! DNS query types by name, for `dns.query_types` (contract section DNS):
//! the mnemonics of the IANA registry a pack is likely to name, and the
//! generic `TYPEn` form of RFC 3597 for any other. The datapath checks a
//! query's type against a 256-bit set, so only types 0..=255 can be listed.

/// The types a query may have when `dns.query_types` is not given (sorted).
pub const DEFAULT_QUERY_TYPES: [u16; 5] = [A, CNAME, AAAA, SVCB, HTTPS];

const A: u16 = 1;
const CNAME: u16 = 5;
const AAAA: u16 = 28;
const SVCB: u16 = 64;
const HTTPS: u16 = 65;

/// Mnemonic → type number.
const NAMES: &[(&str, u16)] = &[
    ("A", A),
    ("NS", 2),
    ("CNAME", CNAME),
    ("SOA", 6),
    ("NULL", 10),
    ("PTR", 12),
    ("HINFO", 13),
    ("MX", 15),
    ("TXT", 16),
    ("AAAA", AAAA),
    ("SRV", 33),
    ("NAPTR", 35),
    ("DS", 43),
    ("SSHFP", 44),
    ("RRSIG", 46),
    ("NSEC", 47),
    ("DNSKEY", 48),
    ("TLSA", 52),
    ("SVCB", SVCB),
    ("HTTPS", HTTPS),
    ("ANY", 255),
];

/// Why a name is not a query type the datapath can check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TypeError {
    Unknown,
    /// `TYPEn` with n above 255 (or a mnemonic of one, such as `CAA`).
    OutOfRange(u32),
}

/// The type number of `name` (any case): a mnemonic or `TYPEn`.
pub fn query_type(name: &str) -> Result<u16, TypeError> {
    let upper = name.to_ascii_uppercase();
    if let Some((_, t)) = NAMES.iter().find(|(n, _)| *n == upper) {
        return Ok(*t);
    }
    if upper == "CAA" {
        return Err(TypeError::OutOfRange(257));
    }
    let n: u32 = upper.strip_prefix("TYPE").and_then(|d| d.parse().ok()).ok_or(TypeError::Unknown)?;
    u16::try_from(n).ok().filter(|t| *t <= 255).ok_or(TypeError::OutOfRange(n))
}

/// The known mnemonics, for error messages.
pub fn known() -> String {
    NAMES.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(", ")
}

/// The set of `types` as the datapath holds it: bit `t` of word `t / 64`.
pub fn type_set(types: &[u16]) -> [u64; 4] {
    let mut set = [0u64; 4];
    for t in types.iter().filter(|t| **t <= 255) {
        set[usize::from(*t) / 64] |= 1 << (t % 64);
    }
    set
}

/// The mnemonic of type `t`, or its `TYPEn` form.
pub fn type_name(t: u16) -> String {
    NAMES.iter().find(|(_, n)| *n == t).map_or_else(|| format!("TYPE{t}"), |(n, _)| (*n).to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_numbers_and_sets() {
        assert_eq!(query_type("aaaa"), Ok(28));
        assert_eq!(query_type("TYPE65"), Ok(65));
        assert_eq!(query_type("type16"), Ok(16));
        assert_eq!(query_type("CAA"), Err(TypeError::OutOfRange(257)));
        assert_eq!(query_type("TYPE300"), Err(TypeError::OutOfRange(300)));
        assert_eq!(query_type("BOGUS"), Err(TypeError::Unknown));
        let set = type_set(&DEFAULT_QUERY_TYPES);
        assert_eq!(set[0], 1 << 1 | 1 << 5 | 1 << 28);
        assert_eq!(set[1], 1 << 0 | 1 << 1);
        assert_eq!(type_name(16), "TXT");
        assert_eq!(type_name(99), "TYPE99");
    }
}
