//! A fixed-size set of rule indices, hashable so that equal sets can be
//! merged into one equivalence class.

/// A set of rule indices `0..len`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct RuleSet(Vec<u64>);

impl RuleSet {
    /// The empty set with room for `len` rules.
    pub fn new(len: usize) -> Self {
        RuleSet(vec![0; len.div_ceil(64)])
    }

    /// Adds rule `i`.
    pub fn insert(&mut self, i: usize) {
        self.0[i / 64] |= 1 << (i % 64);
    }


    /// Adds every rule of `other`.
    pub fn union_with(&mut self, other: &RuleSet) {
        for (a, b) in self.0.iter_mut().zip(&other.0) {
            *a |= *b;
        }
    }

    /// The rules in both sets.
    pub fn intersection(&self, other: &RuleSet) -> RuleSet {
        RuleSet(self.0.iter().zip(&other.0).map(|(a, b)| a & b).collect())
    }

    /// The rules of `self` not in `other`.
    pub fn difference(&self, other: &RuleSet) -> RuleSet {
        RuleSet(self.0.iter().zip(&other.0).map(|(a, b)| a & !b).collect())
    }

    /// The lowest rule index in the set.
    pub fn first(&self) -> Option<usize> {
        self.0
            .iter()
            .enumerate()
            .find(|(_, w)| **w != 0)
            .map(|(i, w)| i * 64 + w.trailing_zeros() as usize)
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.0.iter().all(|w| *w == 0)
    }

    /// The rule indices in ascending order.
    pub fn iter(&self) -> impl Iterator<Item = usize> + '_ {
        self.0.iter().enumerate().flat_map(|(i, w)| {
            let mut w = *w;
            std::iter::from_fn(move || {
                if w == 0 {
                    return None;
                }
                let b = w.trailing_zeros() as usize;
                w &= w - 1;
                Some(i * 64 + b)
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::RuleSet;

    #[test]
    fn set_operations() {
        let mut a = RuleSet::new(130);
        a.insert(3);
        a.insert(64);
        a.insert(129);
        let mut b = RuleSet::new(130);
        b.insert(64);
        b.insert(100);
        assert_eq!(a.iter().collect::<Vec<_>>(), vec![3, 64, 129]);
        assert_eq!(a.intersection(&b).iter().collect::<Vec<_>>(), vec![64]);
        assert_eq!(a.difference(&b).first(), Some(3));

        assert!(RuleSet::new(10).is_empty());
        a.union_with(&b);
        assert_eq!(a.iter().count(), 4);
    }
}
