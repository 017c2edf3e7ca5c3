//! Source × port classes merged into combined classes `x`, with a default
//! per source class: the `(source class, port class)` table holds only the
//! port classes where a source's x differs from its default (the x most of
//! its port classes have), so a pack of many sources, each with rules on
//! ports of its own, needs entries for those ports only and not for every
//! port class of every source.

use egress_common::{NO_X, SourcePortKey};

use super::pack::{CompileError, Previous, check, check_why};
use crate::bitset::FastMap as HashMap;
use crate::bitset::RuleSet;
use crate::classes::{Numbering, stable_x_ids};
use egress_common::{MAX_SP_ENTRIES, MAX_X_CLASSES};

/// Source × port classes merged into combined classes `x`.
pub(super) struct CombinedClasses {
    /// (source class, port class) → x (or [`NO_X`]), where it differs
    /// from the source's default.
    pub sp: HashMap<SourcePortKey, u32>,
    /// Source class → its default x, or [`NO_X`].
    pub src_default: Vec<u32>,
    /// Port class → the x of the wild rules there, or [`NO_X`].
    pub wild: Vec<u32>,
    /// x → the rules its packets may match, numbered as close to
    /// `previous` as the sets allow.
    pub x_sets: Vec<RuleSet>,
}

/// The combined classes of the source and port classes, over `n` rules
/// (see [`Dimensions`]); and of the wild rules by port class.
///
/// Per source class, only its rules are walked: a rule in every port class
/// is in each of the source's x; any other rule adds itself to the port
/// classes it is in. The port classes no such rule reaches share one x.
pub(super) fn combined_classes(
    dims: &Dimensions<'_>,
    previous: &Previous,
    n: usize,
    describe: &Describe<'_>,
) -> Result<CombinedClasses, CompileError> {
    let Dimensions { source_sets, any_source, port_sets, wild } = *dims;
    let classes = port_sets.len();
    let mut classes_of: Vec<Vec<u32>> = vec![Vec::new(); n];
    for (p, set) in port_sets.iter().enumerate() {
        for r in set.iter() {
            classes_of[r].push(p as u32);
        }
    }
    let mut numbering: Numbering<RuleSet> = Numbering::default();
    let mut sp = HashMap::default();
    let mut src_default = vec![NO_X; source_sets.len()];
    // (entries, source class), for an error to name the largest.
    let mut sizes: Vec<(usize, u32)> = Vec::new();
    for (s, rules) in source_sets.iter().enumerate() {
        let before = sp.len();
        if s == 0 && !any_source {
            continue;
        }
        let source = Source::of(rules, &classes_of, classes, n);
        let lists = source.lists();
        let default = default_list(&lists, classes);
        src_default[s] = number(&mut numbering, source.with(default));
        // A port class's set is the base and its picks: one set per
        // distinct pick list, numbered once.
        let mut x_of: HashMap<&[u32], u32> = HashMap::default();
        for (p, list) in &lists {
            if list.as_slice() != default {
                let x = *x_of.entry(list).or_insert_with(|| number(&mut numbering, source.with(list)));
                sp.insert(SourcePortKey { src_class: s as u32, port_class: *p }, x);
            }
        }
        if !default.is_empty() {
            // The port classes no rule of the source picks out: its base.
            let base = number(&mut numbering, source.base.clone());
            for p in source.untouched(classes) {
                sp.insert(SourcePortKey { src_class: s as u32, port_class: p }, base);
            }
        }
        sizes.push((sp.len() - before, s as u32));
        check_why("(source, port) class", sp.len(), MAX_SP_ENTRIES, || {
            drivers(&mut sizes, |s| Source::of(&source_sets[s as usize], &classes_of, classes, n), describe)
        })?;
    }
    let mut wild_x: Vec<u32> = port_sets.iter().map(|set| number(&mut numbering, set.intersection(wild))).collect();
    let (ids, x_sets) = stable_x_ids(numbering.sets, &previous.x_sets, n);
    for x in sp.values_mut().chain(src_default.iter_mut()).chain(wild_x.iter_mut()).filter(|x| **x != NO_X) {
        *x = ids[*x as usize];
    }
    check("combined class", x_sets.len(), MAX_X_CLASSES)?;
    Ok(CombinedClasses { sp, src_default, wild: wild_x, x_sets })
}

/// The dimensions combined: the source classes' rule sets (class 0 skipped
/// unless `any_source`: the datapath answers `uncovered` before it looks),
/// the port classes' and the wild rules (of any source, no WebGroup),
/// which are combined with the port classes alone.
#[derive(Clone, Copy)]
pub(super) struct Dimensions<'a> {
    pub source_sets: &'a [RuleSet],
    pub any_source: bool,
    pub port_sets: &'a [RuleSet],
    pub wild: &'a RuleSet,
}

/// How an error names what drives a table's size.
pub(super) struct Describe<'a> {
    /// A source class, as its prefix.
    pub source: &'a dyn Fn(u32) -> String,
    /// A rule, as its name.
    pub rule: &'a dyn Fn(u32) -> String,
    /// Whether a rule's source is `any`.
    pub any_source: &'a dyn Fn(u32) -> bool,
}

/// `; most come from ...`: the three sources with the most entries, each
/// with the rules that pick out its port classes.
fn drivers(sizes: &mut [(usize, u32)], source: impl Fn(u32) -> Source, describe: &Describe<'_>) -> String {
    sizes.sort_unstable_by(|a, b| b.cmp(a));
    let named: Vec<String> = sizes
        .iter()
        .take(3)
        .map(|&(entries, s)| {
            let mut rules: Vec<u32> = source(s).picks.iter().map(|&(_, r)| r).collect();
            rules.sort_unstable();
            rules.dedup();
            // Its own rules first: those of any source are in every source.
            rules.sort_by_key(|&r| (describe.any_source)(r));
            let wildcards = rules.iter().filter(|&&r| (describe.any_source)(r)).count();
            let shown: Vec<String> = rules.iter().take(3).map(|&r| (describe.rule)(r)).collect();
            let more = rules.len().saturating_sub(3);
            let more = if more > 0 { format!(" and {more} more") } else { String::new() };
            format!(
                "{} ({entries} entries: rules {}{more} on ports of their own, {wildcards} of them for any source)",
                (describe.source)(s),
                shown.join(", ")
            )
        })
        .collect();
    format!(
        "; most come from the sources {} (a source's rules on ports of their own, with those of every prefix that contains it)",
        named.join(", ")
    )
}

/// The number of a non-empty set; [`NO_X`] for the empty one (a packet
/// with no rule to match: `implicit-deny`).
fn number(numbering: &mut Numbering<RuleSet>, set: RuleSet) -> u32 {
    if set.is_empty() { NO_X } else { numbering.number(set) }
}

/// One source class's rules by port class.
struct Source {
    /// The rules that are in every port class.
    base: RuleSet,
    /// (port class, rule) for every other rule, sorted.
    picks: Vec<(u32, u32)>,
}

impl Source {
    fn of(rules: &RuleSet, classes_of: &[Vec<u32>], classes: usize, n: usize) -> Source {
        let mut base = RuleSet::new(n);
        let mut picks = Vec::new();
        for r in rules.iter() {
            if classes_of[r].len() == classes {
                base.insert(r);
            } else {
                picks.extend(classes_of[r].iter().map(|&p| (p, r as u32)));
            }
        }
        picks.sort_unstable();
        Source { base, picks }
    }

    /// Each port class a pick reaches, with its picks (ascending).
    fn lists(&self) -> Vec<(u32, Vec<u32>)> {
        self.picks.chunk_by(|a, b| a.0 == b.0).map(|c| (c[0].0, c.iter().map(|&(_, r)| r).collect())).collect()
    }

    /// The base with the rules of `picks`.
    fn with(&self, picks: &[u32]) -> RuleSet {
        let mut set = self.base.clone();
        for &r in picks {
            set.insert(r as usize);
        }
        set
    }

    /// The port classes no pick reaches, ascending.
    fn untouched(&self, classes: usize) -> impl Iterator<Item = u32> + '_ {
        let mut touched = self.picks.iter().map(|&(p, _)| p).peekable();
        (0..classes as u32).filter(move |&p| {
            while touched.peek().is_some_and(|&t| t < p) {
                touched.next();
            }
            touched.peek() != Some(&p)
        })
    }
}

/// The pick list most of a source's `classes` port classes have (`lists`
/// for those a pick reaches, none for the others); on a tie the smallest,
/// so that the same pack always compiles to the same tables.
fn default_list(lists: &[(u32, Vec<u32>)], classes: usize) -> &[u32] {
    let mut counts: HashMap<&[u32], usize> = HashMap::default();
    for (_, list) in lists {
        *counts.entry(list).or_default() += 1;
    }
    *counts.entry(&[]).or_default() += classes - lists.len();
    counts.into_iter().max_by_key(|&(list, c)| (c, std::cmp::Reverse(list))).map_or(&[], |(list, _)| list)
}
