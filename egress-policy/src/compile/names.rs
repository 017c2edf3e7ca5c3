//! The WebGroup side of a compile: each WebGroup's bit, and the name table
//! (every domain pattern as the datapath looks it up, with the bits of
//! the groups that list it).

use std::collections::BTreeMap;

use egress_common::{
    MAX_NAMES, MAX_WEBGROUPS, NAME_ANY_DEPTH, NAME_EXACT, NAME_ONE_LABEL, NameEntry, NameKey, NameLengths,
};

use super::pack::{CompileError, check};
use crate::bitset::FastMap as HashMap;
use crate::model::{Destination, DomainPattern, Pack};

/// Gives each WebGroup a bit, keeping the bit it had in `previous` (so that
/// addresses learned under an earlier pack keep their meaning). A bit in
/// `previous` whose group is gone is not handed to another group: learned
/// addresses may still carry it (the datapath frees it once it has cleared
/// it from the learned table, and only then leaves it out of `previous`).
pub(super) fn assign_bits(
    pack: &Pack,
    previous: &BTreeMap<String, u32>,
) -> Result<BTreeMap<String, u32>, CompileError> {
    if pack.webgroups.len() > MAX_WEBGROUPS as usize {
        return Err(CompileError::TooManyWebGroups(pack.webgroups.len()));
    }
    let mut bits: BTreeMap<String, u32> =
        previous.iter().filter(|(n, _)| pack.webgroups.contains_key(*n)).map(|(n, b)| (n.clone(), *b)).collect();
    let taken: Vec<u32> = previous.values().copied().collect();
    let mut free = (0..MAX_WEBGROUPS).filter(|b| !taken.contains(b));
    for name in pack.webgroups.keys() {
        if !bits.contains_key(name) {
            let retiring = previous.keys().filter(|n| !pack.webgroups.contains_key(*n)).count();
            let bit =
                free.next().ok_or(CompileError::WebGroupBitsRetiring { groups: pack.webgroups.len(), retiring })?;
            bits.insert(name.clone(), bit);
        }
    }
    Ok(bits)
}

/// The name table: every domain pattern as the datapath looks it up, with
/// the groups that list it and, for a wildcard, its zone.
pub(super) fn name_table(
    pack: &Pack,
    bits: &BTreeMap<String, u32>,
) -> Result<HashMap<NameKey, NameEntry>, CompileError> {
    let mut names: HashMap<NameKey, NameEntry> = HashMap::default();
    for (name, group) in &pack.webgroups {
        let bit = 1u64 << bits[name];
        for d in &group.domains {
            let (kind, text) = match d {
                DomainPattern::Exact(t) => (NAME_EXACT, t),
                DomainPattern::OneLabel(t) => (NAME_ONE_LABEL, t),
                DomainPattern::AnyDepth(t) => (NAME_ANY_DEPTH, t),
            };
            // Validation bounds names to 253 bytes, so every pattern fits.
            if let Some(key) = NameKey::new(kind, text.as_bytes()) {
                let zone = NameEntry::zone_of(kind, text.as_bytes());
                names.entry(key).or_insert(NameEntry { groups: 0, zone, _pad: 0 }).groups |= bit;
            }
        }
    }
    check("domain name", names.len(), MAX_NAMES)?;
    Ok(names)
}

/// The zones of the wildcard patterns: id → the pattern as written.
pub(super) fn zones(pack: &Pack) -> BTreeMap<u32, String> {
    let mut zones = BTreeMap::new();
    for d in pack.webgroups.values().flat_map(|g| &g.domains) {
        let (kind, text) = match d {
            DomainPattern::Exact(_) => continue,
            DomainPattern::OneLabel(t) => (NAME_ONE_LABEL, t),
            DomainPattern::AnyDepth(t) => (NAME_ANY_DEPTH, t),
        };
        zones.insert(NameEntry::zone_of(kind, text.as_bytes()), d.to_string());
    }
    zones
}

/// The name lengths `names` holds, by kind.
pub(super) fn lengths(names: &HashMap<NameKey, NameEntry>) -> NameLengths {
    let mut lengths = NameLengths::default();
    for (kind, len) in names.keys().filter_map(NameKey::kind_and_len) {
        lengths.insert(kind, len);
    }
    lengths
}

/// The WebGroup bits a rule's destination names.
pub(super) fn rule_groups(dests: &[Destination], bits: &BTreeMap<String, u32>) -> u64 {
    dests
        .iter()
        .filter_map(|d| match d {
            Destination::WebGroup(g) => bits.get(g).map(|b| 1u64 << b),
            _ => None,
        })
        .fold(0, |a, b| a | b)
}
