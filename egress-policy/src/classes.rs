//! Cutting a pack's dimensions into equivalence classes for
//! [`super::compile`]: address prefixes (longest prefix wins), port-array
//! runs, and the numbering of combined classes across compiles.

use ipnet::IpNet;

use egress_common::{PORT_INDEX_ICMP, PORT_INDEX_OTHER, PORT_INDEX_SLOTS, PORT_INDEX_UDP};

use super::bitset::FastMap as HashMap;
use super::bitset::{RuleSet, SignedSets, mix};
use super::model::{Pack, Protocol};

/// Distinct sets numbered in order of first appearance, from 0.
pub(super) struct Numbering<S> {
    ids: HashMap<S, u32>,
    /// The sets by number.
    pub sets: Vec<S>,
}

impl<S> Default for Numbering<S> {
    fn default() -> Self {
        Numbering { ids: HashMap::default(), sets: Vec::new() }
    }
}

impl<S: std::hash::Hash + Eq + Clone> Numbering<S> {
    /// The number of `set`, given it now if it is new.
    pub fn number(&mut self, set: S) -> u32 {
        let next = self.sets.len() as u32;
        *self.ids.entry(set).or_insert_with_key(|set| {
            self.sets.push(set.clone());
            next
        })
    }
}

/// The union of two ascending lists of rule indices, ascending, without
/// repeats (`own` lists are built in rule order, so both always are).
pub(super) fn union_sorted(left: &[u32], right: &[u32]) -> Vec<u32> {
    let mut out = Vec::with_capacity(left.len() + right.len());
    let (mut in_left, mut in_right) = (0, 0);
    loop {
        let next = match (left.get(in_left), right.get(in_right)) {
            (Some(&l), Some(&r)) if l <= r => {
                in_left += 1;
                in_right += usize::from(l == r);
                l
            }
            (_, Some(&r)) => {
                in_right += 1;
                r
            }
            (Some(&l), None) => {
                in_left += 1;
                l
            }
            (None, None) => break,
        };
        if out.last() != Some(&next) {
            out.push(next);
        }
    }
    out
}

/// Cuts one address dimension into classes. `own` maps each prefix to the
/// rules that name it (ascending). Returns prefix → class, and each class's
/// rules besides those matching every address (ascending; class 0 is the
/// empty set: only the `any` rules). Sets are sparse lists: a prefix is
/// named by a few rules, so a list is far smaller than a bit per rule of
/// the pack.
pub(super) fn address_classes(own: &HashMap<IpNet, Vec<u32>>) -> (HashMap<IpNet, u32>, Vec<Vec<u32>>) {
    let mut prefixes: Vec<IpNet> = own.keys().copied().collect();
    prefixes.sort_by_key(|p| (p.prefix_len(), *p));
    // Only lengths some prefix has can hold a parent: probe those alone
    // (a handful, instead of up to 128).
    let mut lengths: [Vec<u8>; 2] = [Vec::new(), Vec::new()];
    for p in &prefixes {
        let family = &mut lengths[usize::from(p.addr().is_ipv6())];
        if family.last() != Some(&p.prefix_len()) {
            family.push(p.prefix_len());
        }
    }
    let mut full: HashMap<IpNet, Vec<u32>> =
        HashMap::with_capacity_and_hasher(prefixes.len(), std::hash::BuildHasherDefault::default());
    for p in &prefixes {
        let parent = lengths[usize::from(p.addr().is_ipv6())]
            .iter()
            .rev()
            .filter(|&&len| len < p.prefix_len())
            .filter_map(|&len| IpNet::new(p.addr(), len).ok().map(|n| n.trunc()))
            .find_map(|q| full.get(&q));
        full.insert(*p, union_sorted(parent.map_or(&[][..], |v| &v[..]), &own[p]));
    }
    let mut sets = Numbering::default();
    sets.number(Vec::new()); // class 0: no prefix
    let mut classes = HashMap::with_capacity_and_hasher(prefixes.len(), std::hash::BuildHasherDefault::default());
    for p in prefixes {
        classes.insert(p, sets.number(full.remove(&p).unwrap_or_default()));
    }
    (classes, sets.sets)
}

/// Whether a rule with this protocol and ports matches port-array slot
/// `idx`: the plain definition, which tests hold `port_classes` to.
#[cfg(test)]
fn rule_matches_slot(protocol: Protocol, ports: Option<&[super::model::PortRange]>, idx: u32) -> bool {
    let port_ok = |port: u32| match ports {
        None => true,
        Some(r) => r.iter().any(|r| (u32::from(r.lo)..=u32::from(r.hi)).contains(&port)),
    };
    match idx {
        i if i < PORT_INDEX_UDP => matches!(protocol, Protocol::Tcp | Protocol::Any) && port_ok(i),
        i if i < PORT_INDEX_ICMP => matches!(protocol, Protocol::Udp | Protocol::Any) && port_ok(i - PORT_INDEX_UDP),
        PORT_INDEX_ICMP => matches!(protocol, Protocol::Icmp | Protocol::Any) && ports.is_none(),
        _ => protocol == Protocol::Any && ports.is_none(),
    }
}

/// Cuts the port array into runs with constant rule sets; returns the runs
/// `(first, last, class)` and each class's rule set.
pub(super) fn port_classes(pack: &Pack, n: usize) -> (Vec<(u32, u32, u32)>, SignedSets) {
    let mut bounds = vec![0, PORT_INDEX_UDP, PORT_INDEX_ICMP, PORT_INDEX_OTHER, PORT_INDEX_SLOTS];
    for r in &pack.rules {
        for range in r.ports.iter().flatten() {
            for base in [0, PORT_INDEX_UDP] {
                bounds.push(base + u32::from(range.lo));
                bounds.push(base + u32::from(range.hi) + 1);
            }
        }
    }
    bounds.sort_unstable();
    bounds.dedup();
    // Window w covers slots bounds[w]..bounds[w + 1]. A sweep over the
    // windows: each rule span enters at its first window (found by binary
    // search) and leaves after its last, so the set in hand changes only
    // where some span starts or ends, and is numbered at each window.
    let windows = bounds.len() - 1;
    let window_of = |slot: u32| bounds.partition_point(|&b| b <= slot) - 1;
    // (window, rule, +1 entering / -1 leaving), in window order.
    let mut events: Vec<(usize, u32, i32)> = Vec::new();
    for (i, r) in pack.rules.iter().enumerate() {
        for (lo, hi) in slot_spans(r.protocol, r.ports.as_deref()) {
            events.push((window_of(lo), i as u32, 1));
            events.push((window_of(hi) + 1, i as u32, -1));
        }
    }
    events.sort_unstable_by_key(|e| e.0);
    let mut numbering = WindowNumbering::default();
    let mut set = RuleSet::new(n);
    // Spans of each rule over the window in hand (a rule's spans may overlap).
    let mut cover = vec![0i32; n];
    let mut sig = (0u64, 0u32);
    let mut next = events.iter().peekable();
    let ids: Vec<u32> = (0..windows)
        .map(|w| {
            while let Some(&(_, r, step)) = next.next_if(|e| e.0 == w) {
                let c = &mut cover[r as usize];
                *c += step;
                if (step, *c) == (1, 1) {
                    set.insert(r as usize);
                    sig = (sig.0.wrapping_add(mix(r)), sig.1 + 1);
                } else if (step, *c) == (-1, 0) {
                    set.remove(r as usize);
                    sig = (sig.0.wrapping_sub(mix(r)), sig.1 - 1);
                }
            }
            numbering.number(&set, sig)
        })
        .collect();
    let sets = numbering.sets();
    let mut runs: Vec<(u32, u32, u32)> = Vec::with_capacity(windows);
    for (w, &id) in ids.iter().enumerate() {
        let (lo, hi) = (bounds[w], bounds[w + 1] - 1);
        match runs.last_mut() {
            Some((_, last, class)) if *class == id && *last + 1 == lo => *last = hi,
            _ => runs.push((lo, hi, id)),
        }
    }
    (runs, sets)
}

/// The inclusive port-array slot spans a rule of `protocol` and `ports`
/// covers.
fn slot_spans(protocol: Protocol, ports: Option<&[super::model::PortRange]>) -> Vec<(u32, u32)> {
    let mut spans = Vec::new();
    let bases: &[u32] = match protocol {
        Protocol::Tcp => &[0],
        Protocol::Udp => &[PORT_INDEX_UDP],
        Protocol::Any => &[0, PORT_INDEX_UDP],
        Protocol::Icmp => &[],
    };
    for &base in bases {
        match ports {
            None => spans.push((base, base + 65_535)),
            Some(ranges) => spans.extend(ranges.iter().map(|p| (base + u32::from(p.lo), base + u32::from(p.hi)))),
        }
    }
    if ports.is_none() && matches!(protocol, Protocol::Icmp | Protocol::Any) {
        spans.push((PORT_INDEX_ICMP, PORT_INDEX_ICMP));
    }
    if ports.is_none() && protocol == Protocol::Any {
        spans.push((PORT_INDEX_OTHER, PORT_INDEX_OTHER));
    }
    spans
}

/// Port windows' sets numbered in order of first appearance: a set's
/// signature and size find the classes it may be, and it is compared with
/// theirs.
#[derive(Default)]
struct WindowNumbering {
    sets: Vec<RuleSet>,
    sigs: Vec<u64>,
    by_sig: HashMap<(u64, u32), Vec<u32>>,
}

impl WindowNumbering {
    /// The class of `set`, of signature and size `sig`.
    fn number(&mut self, set: &RuleSet, sig: (u64, u32)) -> u32 {
        let found = self.by_sig.entry(sig).or_default();
        if let Some(&id) = found.iter().find(|&&id| self.sets[id as usize] == *set) {
            return id;
        }
        let id = self.sets.len() as u32;
        self.sets.push(set.clone());
        self.sigs.push(sig.0);
        found.push(id);
        id
    }

    fn sets(self) -> SignedSets {
        SignedSets::new(self.sets, self.sigs)
    }
}

/// Renumbers port classes (`port_classes`' runs and sets) so that an edit
/// renumbers only the classes it changed, not every class above them
/// (each is a key of the `(source, port)` table in the kernel): a set the
/// previous pack's classes had keeps its number; a changed set takes the
/// number of the class that held its first port before, if that number
/// is free (so a source whose rules the edit did not touch keeps its
/// entries there); the others take the free numbers in order. Numbers
/// stay `0..sets.len()`. `previous`: the live pack's runs and sets.
pub(super) fn stable_port_classes(
    (runs, sets): (Vec<(u32, u32, u32)>, SignedSets),
    (previous_runs, previous): (&[(u32, u32, u32)], &SignedSets),
) -> (Vec<(u32, u32, u32)>, SignedSets) {
    let count = sets.len();
    // Each class's first run, in slot order.
    let mut first_slot: Vec<Option<u32>> = vec![None; count];
    for &(lo, _, class) in &runs {
        first_slot[class as usize].get_or_insert(lo);
    }
    let held_before = |slot: u32| {
        let at = previous_runs.partition_point(|r| r.1 < slot);
        previous_runs.get(at).filter(|r| r.0 <= slot).map(|r| r.2)
    };
    // Distinct sets, numbers below `count`: no number is left unused.
    let (ids, sets) = renumber(sets, previous, count, |class| first_slot[class].and_then(held_before), 0);
    let runs = runs.into_iter().map(|(lo, hi, class)| (lo, hi, ids[class as usize])).collect();
    (runs, sets)
}

/// Numbers combined classes: a set the previous pack had keeps its number,
/// new sets take the lowest free ones. Returns the new number of each of
/// `sets` and the sets by number (unused numbers hold empty sets).
pub(super) fn stable_x_ids(sets: SignedSets, previous: &SignedSets, n: usize) -> (Vec<u32>, SignedSets) {
    let limit = previous.len().max(sets.len());
    renumber(sets, previous, limit, |_| None, n)
}

/// Numbers distinct `sets` below `limit` (at least as many as sets): a
/// set `previous` has keeps its number there; one it has not takes
/// `prefer(i)` (`i` its index in `sets`) if that number is free, else the
/// lowest free number. Returns each set's number and the sets by number
/// (a number no set takes holds an empty set of `n` rules).
fn renumber(
    sets: SignedSets,
    previous: &SignedSets,
    limit: usize,
    prefer: impl Fn(usize) -> Option<u32>,
    n: usize,
) -> (Vec<u32>, SignedSets) {
    let before = previous.index();
    let mut ids: Vec<Option<u32>> = sets
        .iter()
        .zip(sets.sigs())
        .map(|(set, &sig)| before.find(set, sig).filter(|&id| (id as usize) < limit))
        .collect();
    let mut taken = vec![false; limit];
    for id in ids.iter().flatten() {
        taken[*id as usize] = true;
    }
    for (i, id) in ids.iter_mut().enumerate() {
        if id.is_none()
            && let Some(wanted) = prefer(i).filter(|&w| (w as usize) < limit && !taken[w as usize])
        {
            taken[wanted as usize] = true;
            *id = Some(wanted);
        }
    }
    let mut free = (0..limit).filter(|&i| !taken[i]);
    for id in ids.iter_mut().filter(|id| id.is_none()) {
        *id = free.next().map(|i| i as u32);
    }
    // Every set has a number: there are at least as many as sets.
    let ids: Vec<u32> = ids.into_iter().map(|id| id.unwrap_or(0)).collect();
    let len = ids.iter().map(|&i| i as usize + 1).max().unwrap_or(0);
    let mut by_id: Vec<Option<(RuleSet, u64)>> = vec![None; len];
    let (sets, sigs) = sets.into_parts();
    for ((set, sig), &id) in sets.into_iter().zip(sigs).zip(&ids) {
        by_id[id as usize] = Some((set, sig));
    }
    let (sets, sigs) = by_id.into_iter().map(|s| s.unwrap_or_else(|| (RuleSet::new(n), 0))).unzip();
    (ids, SignedSets::new(sets, sigs))
}

#[cfg(test)]
mod port_class_tests {
    use super::*;
    use crate::synth;

    /// An edit that adds a class and changes another: the changed one
    /// keeps the number of the class that held its ports, the new one
    /// takes a free number, the unchanged ones keep theirs.
    #[test]
    fn a_changed_port_class_keeps_the_number_of_its_ports() {
        let set = |rules: &[usize]| RuleSet::of(8, rules);
        let signed = |sets: Vec<RuleSet>| {
            let sigs = sets.iter().map(crate::bitset::signature).collect();
            SignedSets::new(sets, sigs)
        };
        let before_runs = vec![(0, 99, 0), (100, 199, 1), (200, 299, 2)];
        let before = signed(vec![set(&[0]), set(&[1]), set(&[2])]);
        // Slots 50-99 gain rule 3 (a new class), 100-199 lose rule 1 for 4.
        let runs = vec![(0, 49, 0), (50, 99, 1), (100, 199, 2), (200, 299, 3)];
        let now = signed(vec![set(&[0]), set(&[0, 3]), set(&[4]), set(&[2])]);
        let (runs, sets) = stable_port_classes((runs, now), (&before_runs, &before));
        assert_eq!(runs, vec![(0, 49, 0), (50, 99, 3), (100, 199, 1), (200, 299, 2)]);
        assert_eq!(sets[1], set(&[4]));
        assert_eq!(sets[3], set(&[0, 3]));
        assert_eq!(sets.sigs()[3], crate::bitset::signature(&set(&[0, 3])));
    }

    /// Windows whose signatures and sizes agree (forced here) but whose
    /// sets differ are classes of their own.
    #[test]
    fn windows_of_one_signature_but_other_sets_are_not_merged() {
        let mut numbering = WindowNumbering::default();
        let sigs = [(9, 2), (9, 2), (9, 2), (0, 0)];
        let ids: Vec<u32> = [0b0011u64, 0b0101, 0b0011, 0]
            .iter()
            .zip(sigs)
            .map(|(w, sig)| numbering.number(&RuleSet::from_words(&[*w]), sig))
            .collect();
        assert_eq!(ids, vec![0, 1, 0, 2]);
        let sets = numbering.sets();
        assert_eq!(sets.len(), 3);
        assert_eq!(sets[1].iter().collect::<Vec<_>>(), vec![0, 2]);
    }

    #[test]
    fn port_classes_agree_with_the_plain_definition() {
        for (rules, seed) in [(10, 1), (300, 2), (2000, 3)] {
            let pack = synth::realistic_pack(rules, seed);
            let (runs, sets) = port_classes(&pack, pack.rules.len());
            for &(lo, hi, class) in &runs {
                for slot in [lo, hi, lo + (hi - lo) / 2] {
                    for (i, r) in pack.rules.iter().enumerate() {
                        assert_eq!(
                            sets[class as usize].contains(i),
                            rule_matches_slot(r.protocol, r.ports.as_deref(), slot),
                            "rule {i} at slot {slot} ({rules} rules)"
                        );
                    }
                }
            }
        }
    }
}
