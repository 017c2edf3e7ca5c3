//! Lasting counter cells: every rule name gets one counter index for as
//! long as the agent runs, in both slots. Installing a pack then never
//! reads, moves or zeroes counters (that would be a few syscalls per rule
//! on every swap); a rule's totals are its cells in the two slots.
//!
//! Indexes run out only after tens of thousands of distinct rule names;
//! then those no installed pack uses are reclaimed: the caller folds their
//! counts into its retired totals and zeroes them before they are reused.

use std::collections::{HashMap, HashSet};

use super::RuleTotals;

/// A counter index taken back for reuse, with the rule name it counted
/// (none for indexes of a pack adopted from pins, whose names are unknown).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reclaimed {
    pub name: Option<String>,
    pub index: u32,
}

/// Which counter each rule name counts into, what each slot's pack counts
/// into, and the totals of names whose counter was reclaimed.
pub struct CounterBook {
    /// Counts of rule names whose counter was reclaimed.
    pub retired: RuleTotals,
    /// The lasting counter index of each rule name.
    pub ids: CounterIds,
    /// Counter indexes each slot's pack counts into.
    pub by_slot: [HashSet<u32>; 2],
}

impl Default for CounterBook {
    fn default() -> Self {
        CounterBook {
            retired: RuleTotals::new(),
            ids: CounterIds::new(egress_common::MAX_RULES),
            by_slot: [HashSet::new(), HashSet::new()],
        }
    }
}

/// The counter index of each rule name.
#[derive(Debug, Clone)]
pub struct CounterIds {
    by_name: HashMap<String, u32>,
    free: Vec<u32>,
    next: u32,
    capacity: u32,
}

/// More distinct rule names than counter cells, even after reclaiming.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("the pack needs {needed} rule counters but {available} are free")]
pub struct CountersFull {
    pub needed: usize,
    pub available: usize,
}

impl CounterIds {
    /// Indexes `0..capacity`, none assigned.
    pub fn new(capacity: u32) -> Self {
        CounterIds { by_name: HashMap::new(), free: Vec::new(), next: 0, capacity }
    }

    /// Leaves indexes below `next` unassigned and unused until reclaimed
    /// (they belong to an adopted pack whose rule names are unknown).
    pub fn skip_to(&mut self, next: u32) {
        self.next = self.next.max(next.min(self.capacity));
    }

    /// Every assigned name and its index.
    pub fn named(&self) -> impl Iterator<Item = (&str, u32)> {
        self.by_name.iter().map(|(n, &i)| (n.as_str(), i))
    }

    /// The index of every name of `names` (in order), assigning new ones.
    /// `in_use`: indexes a live pack still counts into; never reclaimed.
    pub fn assign(
        &mut self,
        names: &[&str],
        in_use: &HashSet<u32>,
    ) -> Result<(Vec<u32>, Vec<Reclaimed>), CountersFull> {
        let missing = names.iter().filter(|n| !self.by_name.contains_key(**n)).count();
        let mut reclaimed = Vec::new();
        if missing > self.available() {
            reclaimed = self.reclaim(names, in_use);
            if missing > self.available() {
                return Err(CountersFull { needed: missing, available: self.available() });
            }
        }
        let ids = names
            .iter()
            .map(|&name| {
                if let Some(&id) = self.by_name.get(name) {
                    return id;
                }
                let id = self.free.pop().unwrap_or_else(|| {
                    self.next += 1;
                    self.next - 1
                });
                self.by_name.insert(name.to_string(), id);
                id
            })
            .collect();
        Ok((ids, reclaimed))
    }

    fn available(&self) -> usize {
        self.free.len() + (self.capacity - self.next) as usize
    }

    /// Frees every index below `next` that neither `names` nor `in_use` holds.
    fn reclaim(&mut self, names: &[&str], in_use: &HashSet<u32>) -> Vec<Reclaimed> {
        let wanted: HashSet<&str> = names.iter().copied().collect();
        let mut keep: HashSet<u32> = in_use.clone();
        keep.extend(self.free.iter().copied());
        let mut owner: HashMap<u32, String> = HashMap::new();
        for (name, &id) in &self.by_name {
            if wanted.contains(name.as_str()) {
                keep.insert(id);
            } else {
                owner.insert(id, name.clone());
            }
        }
        let mut out = Vec::new();
        for index in (0..self.next).filter(|i| !keep.contains(i)) {
            let name = owner.remove(&index);
            if let Some(n) = &name {
                self.by_name.remove(n);
            }
            self.free.push(index);
            out.push(Reclaimed { name, index });
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_keep_their_index_across_packs() {
        let mut c = CounterIds::new(100);
        let (a, r) = c.assign(&["allow-web", "deny-all"], &HashSet::new()).unwrap();
        assert_eq!((a, r), (vec![0, 1], vec![]));
        let (b, _) = c.assign(&["new-rule", "deny-all", "allow-web"], &HashSet::from([0, 1])).unwrap();
        assert_eq!(b, vec![2, 1, 0]);
    }

    #[test]
    fn reclaims_only_what_no_installed_pack_uses() {
        let mut c = CounterIds::new(4);
        c.skip_to(1); // index 0 belongs to an adopted pack
        c.assign(&["a", "b"], &HashSet::from([0])).unwrap(); // 1, 2
        c.assign(&["c"], &HashSet::from([1, 2])).unwrap(); // 3
        // Live pack uses {c}; the new pack wants d and e: a, b and the
        // adopted index go back, c stays.
        let (ids, mut back) = c.assign(&["d", "e"], &HashSet::from([3])).unwrap();
        back.sort_by_key(|r| r.index);
        assert_eq!(
            back,
            vec![
                Reclaimed { name: None, index: 0 },
                Reclaimed { name: Some("a".into()), index: 1 },
                Reclaimed { name: Some("b".into()), index: 2 },
            ]
        );
        assert!(ids.iter().all(|i| [0, 1, 2].contains(i)) && ids[0] != ids[1]);
        assert_eq!(c.named().find(|(n, _)| *n == "c").map(|x| x.1), Some(3));
        let err = c.assign(&["f", "g", "h"], &HashSet::from([0, 1, 2, 3])).unwrap_err();
        assert_eq!(err, CountersFull { needed: 3, available: 1 });
    }
}
