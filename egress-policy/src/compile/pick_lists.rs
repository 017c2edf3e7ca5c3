//! How the combined classes of one source class are found without a set
//! per port class: the source's rules laid out by the port classes they
//! pick out ([`PickLists`]), each list with a signature summed as it is
//! laid out, and combined classes numbered by their parts ([`XNumbering`])
//! rather than by hashing whole rule sets. A signature only finds
//! candidates: lists are compared before a number is shared.
//!
//! A rule either is in every port class (its protocol and ports cover the
//! whole port array) or is not; that is the rule's, not the source's. So
//! a combined class, a source's rules in one port class, is exactly its
//! *base* (its rules of the first kind, the same in all the source's port
//! classes) and its *picks* (those of the second kind there), and two
//! classes are the same set if and only if their bases and picks are.

use egress_common::NO_X;

use crate::bitset::FastMap as HashMap;
use crate::bitset::RuleSet;
use crate::bitset::{SignedSets, mix};
use crate::classes::Numbering;

/// One source class's rules by port class, laid out for one source after
/// the other without allocating per class: the rules that pick out port
/// class `p` (those of the source not in every class) are
/// `rules[start[p]..start[p] + count[p]]`, ascending.
/// One source class's rules by port class, laid out for one source after
/// the other without allocating per class: the rules that pick out port
/// class `p` (those of the source not in every class) are
/// `rules[start[p]..start[p] + count[p]]`, ascending; `sig[p]` is the
/// [`signature`] of that list.
pub(super) struct PickLists {
    classes: usize,
    /// Port classes some pick reaches, ascending.
    pub(super) touched: Vec<u32>,
    count: Vec<u32>,
    start: Vec<u32>,
    sig: Vec<u64>,
    rules: Vec<u32>,
}

/// A pick list: its signature and its rules.
pub(super) type Picks<'a> = (u64, &'a [u32]);

/// The no-pick list.
pub(super) const NO_PICKS: Picks<'static> = (0, &[]);

/// The signature of a list of rules: the sum of a mix of each, so that
/// it is summed in any order as the list is laid out.
pub(super) fn signature(rules: &[u32]) -> u64 {
    rules.iter().fold(0, |s, &r| s.wrapping_add(mix(r)))
}

impl PickLists {
    pub(super) fn new(classes: usize) -> Self {
        PickLists {
            classes,
            touched: Vec::new(),
            count: vec![0; classes],
            start: vec![0; classes],
            sig: vec![0; classes],
            rules: Vec::new(),
        }
    }

    /// Lays out the picks of the source whose rules are `rules`; returns
    /// its base, the rules in every port class.
    pub(super) fn fill(&mut self, rules: &RuleSet, classes_of: &[Vec<u32>], n: usize) -> RuleSet {
        for &p in &self.touched {
            self.count[p as usize] = 0;
            self.sig[p as usize] = 0;
        }
        self.touched.clear();
        let mut base = RuleSet::new(n);
        let mut picks = 0;
        // Count each class's picks, then place them (rules ascending).
        for r in rules.iter() {
            let of = &classes_of[r];
            if of.len() == self.classes {
                base.insert(r);
                continue;
            }
            let m = mix(r as u32);
            for &p in of {
                let p = p as usize;
                if self.count[p] == 0 {
                    self.touched.push(p as u32);
                }
                self.count[p] += 1;
                self.sig[p] = self.sig[p].wrapping_add(m);
            }
            picks += of.len();
        }
        self.touched.sort_unstable();
        let mut at = 0;
        for &p in &self.touched {
            self.start[p as usize] = at;
            at += self.count[p as usize];
        }
        self.rules.resize(picks, 0);
        for r in rules.iter().filter(|&r| classes_of[r].len() != self.classes) {
            for &p in &classes_of[r] {
                let slot = &mut self.start[p as usize];
                self.rules[*slot as usize] = r as u32;
                *slot += 1;
            }
        }
        // `start` now points past each list: step it back.
        for &p in &self.touched {
            self.start[p as usize] -= self.count[p as usize];
        }
        base
    }

    /// The picks of port class `p` (none if no pick reaches it).
    pub(super) fn list(&self, p: u32) -> Picks<'_> {
        let (start, count) = (self.start[p as usize] as usize, self.count[p as usize] as usize);
        (self.sig[p as usize], &self.rules[start..start + count])
    }

    /// The port classes no pick reaches, ascending.
    pub(super) fn untouched(&self) -> impl Iterator<Item = u32> + '_ {
        (0..self.classes as u32).filter(|&p| self.count[p as usize] == 0)
    }

    /// The pick list most port classes have (none for those no pick
    /// reaches); on a tie the smallest, so that the same pack always
    /// compiles to the same tables.
    pub(super) fn default_list<'a>(&'a self) -> Picks<'a> {
        // By signature, each with the distinct lists of that signature.
        let mut counts: HashMap<u64, Vec<(Picks<'a>, usize)>> = HashMap::default();
        let mut add = |picks: Picks<'a>, n: usize| {
            let same = counts.entry(picks.0).or_default();
            match same.iter_mut().find(|(p, _)| p.1 == picks.1) {
                Some((_, c)) => *c += n,
                None => same.push((picks, n)),
            }
        };
        for &p in &self.touched {
            add(self.list(p), 1);
        }
        add(NO_PICKS, self.classes - self.touched.len());
        counts
            .into_values()
            .flatten()
            .max_by_key(|&((_, list), c)| (c, std::cmp::Reverse(list)))
            .map_or(NO_PICKS, |(picks, _)| picks)
    }
}

/// Combined classes numbered by (base, picks): a base set is hashed once
/// per source class, a class by its base's number and its picks'
/// signature, then its picks compared with those of the classes found.
#[derive(Default)]
pub(super) struct XNumbering {
    bases: Numbering<RuleSet>,
    /// Base number → its set's signature.
    base_sigs: Vec<u64>,
    /// (base number, signature) → the x of that base and signature.
    ids: HashMap<(u32, u64), Vec<u32>>,
    /// x → base number, picks and the picks' signature.
    keys: Vec<(u32, Vec<u32>, u64)>,
}

impl XNumbering {
    /// The number of a base set.
    pub(super) fn base(&mut self, set: RuleSet) -> u32 {
        let id = self.bases.number(set);
        if id as usize == self.base_sigs.len() {
            self.base_sigs.push(crate::bitset::signature(&self.bases.sets[id as usize]));
        }
        id
    }

    /// The x of `base`'s set with `picks` (ascending, with their
    /// signature), given it now if it is new; [`NO_X`] for the empty set
    /// (a packet with no rule to match: `implicit-deny`).
    pub(super) fn number(&mut self, base: u32, (sig, picks): Picks<'_>) -> u32 {
        if picks.is_empty() && self.bases.sets[base as usize].is_empty() {
            return NO_X;
        }
        let found = self.ids.entry((base, sig)).or_default();
        if let Some(&x) = found.iter().find(|&&x| self.keys[x as usize].1 == picks) {
            return x;
        }
        let x = self.keys.len() as u32;
        found.push(x);
        self.keys.push((base, picks.to_vec(), sig));
        x
    }

    /// The sets by x, with their signatures.
    pub(super) fn sets(self) -> SignedSets {
        let XNumbering { bases, base_sigs, keys, .. } = self;
        let (sets, sigs) = keys
            .iter()
            .map(|(base, picks, sig)| {
                let mut set = bases.sets[*base as usize].clone();
                for &r in picks {
                    set.insert(r as usize);
                }
                (set, base_sigs[*base as usize].wrapping_add(*sig))
            })
            .unzip();
        SignedSets::new(sets, sigs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Port classes of 8 rules over 5 classes: rule 0 everywhere (base),
    /// the others in some. Each class's list is what a plain filter gives.
    #[test]
    fn lists_hold_each_classes_picks_in_rule_order() {
        let classes_of: Vec<Vec<u32>> =
            vec![vec![0, 1, 2, 3, 4], vec![1, 3], vec![], vec![3], vec![0, 1], vec![1, 3], vec![4, 0], vec![2]];
        let source = RuleSet::of(8, &[0, 1, 2, 3, 4, 6]);
        let mut lists = PickLists::new(5);
        // A source laid out before leaves nothing behind.
        lists.fill(&RuleSet::of(8, &[7]), &classes_of, 8);
        let base = lists.fill(&source, &classes_of, 8);
        assert_eq!(base.iter().collect::<Vec<_>>(), vec![0]);
        for p in 0..5u32 {
            let want: Vec<u32> =
                [1u32, 2, 3, 4, 6].into_iter().filter(|&r| classes_of[r as usize].contains(&p)).collect();
            assert_eq!(lists.list(p), (signature(&want), want.as_slice()), "class {p}");
        }
        assert_eq!(lists.touched, vec![0, 1, 3, 4]);
        assert_eq!(lists.untouched().collect::<Vec<_>>(), vec![2]);
        // Every list once, as the untouched class's none: a tie, broken to
        // the smallest list.
        assert_eq!(lists.default_list(), NO_PICKS);
        // Rule 6 in class 1 too: classes 0 and 1 share [4, 6], the most common.
        let mut classes_of = classes_of;
        classes_of[1] = vec![3];
        classes_of[6] = vec![0, 1, 4];
        lists.fill(&source, &classes_of, 8);
        assert_eq!(lists.default_list().1, &[4, 6]);
    }

    /// Lists that share a signature (forced here) still get numbers of
    /// their own: a signature only finds candidates.
    #[test]
    fn a_shared_signature_does_not_merge_classes() {
        let mut numbering = XNumbering::default();
        let base = numbering.base(RuleSet::new(8));
        let a = numbering.number(base, (7, &[1, 2]));
        let b = numbering.number(base, (7, &[3]));
        assert_ne!(a, b);
        assert_eq!(numbering.number(base, (7, &[1, 2])), a);
        assert_eq!(numbering.number(base, NO_PICKS), NO_X, "the empty set");
        let sets = numbering.sets();
        assert_eq!(sets[a as usize].iter().collect::<Vec<_>>(), vec![1, 2]);
        assert_eq!(sets[b as usize].iter().collect::<Vec<_>>(), vec![3]);
    }
}
