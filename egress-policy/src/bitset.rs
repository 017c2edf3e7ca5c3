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

    /// The set of `rules`, with room for `len` (tests build sets so).
    #[cfg(test)]
    pub(crate) fn of(len: usize, rules: &[usize]) -> Self {
        let mut set = RuleSet::new(len);
        for &r in rules {
            set.insert(r);
        }
        set
    }

    /// The set whose 64-rule words are `words` (rule `i` is bit `i % 64`
    /// of word `i / 64`).
    pub fn from_words(words: &[u64]) -> Self {
        RuleSet(words.to_vec())
    }

    /// Its 64-rule words (see [`RuleSet::from_words`]).
    pub fn words(&self) -> &[u64] {
        &self.0
    }

    /// Adds rule `i`.
    pub fn insert(&mut self, i: usize) {
        self.0[i / 64] |= 1 << (i % 64);
    }

    /// Removes rule `i`.
    pub fn remove(&mut self, i: usize) {
        self.0[i / 64] &= !(1 << (i % 64));
    }

    /// Whether rule `i` is in the set.
    pub fn contains(&self, i: usize) -> bool {
        self.0.get(i / 64).is_some_and(|w| w & (1 << (i % 64)) != 0)
    }

    /// Adds every rule of `other`.
    pub fn union_with(&mut self, other: &RuleSet) {
        for (a, b) in self.0.iter_mut().zip(&other.0) {
            *a |= *b;
        }
    }

    /// The rules in both sets.
    #[must_use]
    pub fn intersection(&self, other: &RuleSet) -> RuleSet {
        RuleSet(self.0.iter().zip(&other.0).map(|(a, b)| a & b).collect())
    }

    /// The rules of `self` not in `other`.
    #[must_use]
    pub fn difference(&self, other: &RuleSet) -> RuleSet {
        RuleSet(self.0.iter().zip(&other.0).map(|(a, b)| a & !b).collect())
    }

    /// The lowest rule index in the set.
    pub fn first(&self) -> Option<usize> {
        self.0.iter().enumerate().find(|(_, w)| **w != 0).map(|(i, w)| i * 64 + w.trailing_zeros() as usize)
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

/// `splitmix64`'s finaliser: rule indices to well spread 64-bit values,
/// summed into a set's [`signature`] (in any order).
pub fn mix(r: u32) -> u64 {
    let mut z = u64::from(r).wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A set's signature: the sum of [`mix`] over its rules. Equal sets have
/// equal signatures; the compiler finds candidate equal sets by signature
/// and compares them before it treats two as one.
pub fn signature(set: &RuleSet) -> u64 {
    set.iter().fold(0, |s, r| s.wrapping_add(mix(r as u32)))
}

/// Numbered rule sets (combined or port classes) with each one's
/// [`signature`], so that the next compile finds a set among them without
/// hashing every set whole.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SignedSets {
    sets: Vec<RuleSet>,
    sigs: Vec<u64>,
}

impl SignedSets {
    /// `sets` with their signatures `sigs` (one each).
    pub fn new(sets: Vec<RuleSet>, sigs: Vec<u64>) -> Self {
        debug_assert_eq!(sets.len(), sigs.len());
        SignedSets { sets, sigs }
    }

    /// The sets and their signatures.
    pub fn into_parts(self) -> (Vec<RuleSet>, Vec<u64>) {
        (self.sets, self.sigs)
    }

    /// Each set's signature, by number.
    pub fn sigs(&self) -> &[u64] {
        &self.sigs
    }

    /// An index to find sets among these by signature.
    pub fn index(&self) -> SetIndex<'_> {
        let mut by_sig: FastMap<u64, Vec<u32>> = FastMap::default();
        for (i, sig) in self.sigs.iter().enumerate() {
            by_sig.entry(*sig).or_default().push(i as u32);
        }
        SetIndex { sets: self, by_sig }
    }
}

impl std::ops::Deref for SignedSets {
    type Target = [RuleSet];
    fn deref(&self) -> &[RuleSet] {
        &self.sets
    }
}

/// [`SignedSets`] by signature.
pub struct SetIndex<'a> {
    sets: &'a SignedSets,
    by_sig: FastMap<u64, Vec<u32>>,
}

impl SetIndex<'_> {
    /// The number of `set` (of signature `sig`), if it is one of them.
    pub fn find(&self, set: &RuleSet, sig: u64) -> Option<u32> {
        self.by_sig.get(&sig)?.iter().copied().find(|&i| self.sets.sets[i as usize] == *set)
    }
}

#[cfg(test)]
mod tests {
    use super::{RuleSet, SignedSets, signature};

    /// A signature only finds candidates: equal signatures of other sets
    /// (forced here) are not taken for the set.
    #[test]
    fn an_index_compares_what_the_signature_finds() {
        let set = |rules: &[usize]| RuleSet::of(100, rules);
        let (a, b) = (set(&[1, 70]), set(&[2]));
        assert_eq!(signature(&a), signature(&set(&[70, 1])));
        assert_ne!(signature(&a), signature(&b));
        let sets = SignedSets::new(vec![a.clone(), b.clone()], vec![5, 5]);
        let index = sets.index();
        assert_eq!(index.find(&b, 5), Some(1));
        assert_eq!(index.find(&a, 5), Some(0));
        assert_eq!(index.find(&set(&[3]), 5), None);
        assert_eq!(index.find(&a, 6), None);
    }

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

/// A fast, non-cryptographic hasher (the rustc "Fx" mix) for the
/// compiler's tables. Keys come from the operator's own policy, so hash
/// flooding is not a concern, and the default `SipHash` would cost the
/// compile far more than it protects.
#[derive(Clone, Copy, Default)]
pub struct FxHasher(u64);

impl FxHasher {
    #[inline]
    fn add(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
}

impl std::hash::Hasher for FxHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            self.add(u64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]));
        }
        for &b in chunks.remainder() {
            self.add(u64::from(b));
        }
    }
    #[inline]
    fn write_u8(&mut self, i: u8) {
        self.add(u64::from(i));
    }
    #[inline]
    fn write_u16(&mut self, i: u16) {
        self.add(u64::from(i));
    }
    #[inline]
    fn write_u32(&mut self, i: u32) {
        self.add(u64::from(i));
    }
    #[inline]
    fn write_u64(&mut self, i: u64) {
        self.add(i);
    }
    #[inline]
    fn write_usize(&mut self, i: usize) {
        self.add(i as u64);
    }
    #[inline]
    fn finish(&self) -> u64 {
        self.0
    }
}

/// A `HashMap` with [`FxHasher`].
pub type FastMap<K, V> = std::collections::HashMap<K, V, std::hash::BuildHasherDefault<FxHasher>>;
