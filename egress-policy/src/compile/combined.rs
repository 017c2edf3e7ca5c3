//! Source × port classes merged into combined classes `x`, with a default
//! per source class: the `(source class, port class)` table holds only the
//! port classes where a source's x differs from its default (the x most of
//! its port classes have), so a pack of many sources, each with rules on
//! ports of its own, needs entries for those ports only and not for every
//! port class of every source.

use egress_common::{NO_X, SourcePortKey};

use super::pack::{CompileError, Previous, check, check_why};
use super::pick_lists::{NO_PICKS, PickLists, XNumbering, signature};
use crate::bitset::{RuleSet, SignedSets};
use crate::classes::stable_x_ids;
use egress_common::{MAX_SP_ENTRIES, MAX_X_CLASSES};

/// Source × port classes merged into combined classes `x`.
pub(super) struct CombinedClasses {
    /// (source class, port class) → x (or [`NO_X`]), where it differs
    /// from the source's default (each key once, in no order).
    pub sp: Vec<(SourcePortKey, u32)>,
    /// Source class → its default x, or [`NO_X`].
    pub src_default: Vec<u32>,
    /// Port class → the x of the wild rules there, or [`NO_X`].
    pub wild: Vec<u32>,
    /// x → the rules its packets may match, numbered as close to
    /// `previous` as the sets allow.
    pub x_sets: SignedSets,
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
    let mut numbering = XNumbering::default();
    // Gathered, then built at its final size (no rehash as it grows).
    let mut entries: Vec<(SourcePortKey, u32)> = Vec::new();
    let mut src_default = vec![NO_X; source_sets.len()];
    let mut lists = PickLists::new(classes);
    // (entries, source class), for an error to name the largest.
    let mut sizes: Vec<(usize, u32)> = Vec::new();
    for (s, rules) in source_sets.iter().enumerate() {
        let before = entries.len();
        if s == 0 && !any_source {
            continue;
        }
        let base = numbering.base(lists.fill(rules, &classes_of, n));
        let default = lists.default_list();
        src_default[s] = numbering.number(base, default);
        // A port class's set is the base and its picks.
        for &p in &lists.touched {
            let list = lists.list(p);
            if list != default {
                let x = numbering.number(base, list);
                entries.push((SourcePortKey { src_class: s as u32, port_class: p }, x));
            }
        }
        if !default.1.is_empty() {
            // The port classes no rule of the source picks out: its base.
            let x = numbering.number(base, NO_PICKS);
            entries.extend(lists.untouched().map(|p| (SourcePortKey { src_class: s as u32, port_class: p }, x)));
        }
        sizes.push((entries.len() - before, s as u32));
        check_why("(source, port) class", entries.len(), MAX_SP_ENTRIES, || {
            drivers(&mut sizes, |s| picked_rules(&source_sets[s as usize], &classes_of, classes), describe)
        })?;
    }
    // The wild rules of a port class: those in every class (the same for
    // all), and those of the class's own.
    let mut everywhere = RuleSet::new(n);
    for r in wild.iter().filter(|&r| classes_of[r].len() == classes) {
        everywhere.insert(r);
    }
    let wild_base = numbering.base(everywhere);
    let wild_x: Vec<u32> = port_sets
        .iter()
        .map(|set| {
            let own: Vec<u32> =
                set.iter().filter(|&r| wild.contains(r) && classes_of[r].len() != classes).map(|r| r as u32).collect();
            numbering.number(wild_base, (signature(&own), &own))
        })
        .collect();
    let (ids, x_sets) = stable_x_ids(numbering.sets(), &previous.x_sets, n);
    let renumber = |x: u32| if x == NO_X { NO_X } else { ids[x as usize] };
    let sp = entries.into_iter().map(|(k, x)| (k, renumber(x))).collect();
    let src_default = src_default.into_iter().map(renumber).collect();
    let wild_x = wild_x.into_iter().map(renumber).collect();
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
    pub port_sets: &'a SignedSets,
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
fn drivers(sizes: &mut [(usize, u32)], picked: impl Fn(u32) -> Vec<u32>, describe: &Describe<'_>) -> String {
    sizes.sort_unstable_by(|a, b| b.cmp(a));
    let named: Vec<String> = sizes
        .iter()
        .take(3)
        .map(|&(entries, s)| {
            let mut rules = picked(s);
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

/// The rules of a source class's set that are not in every port class
/// (those that pick out the source's port classes), ascending.
fn picked_rules(rules: &RuleSet, classes_of: &[Vec<u32>], classes: usize) -> Vec<u32> {
    rules.iter().filter(|&r| !classes_of[r].is_empty() && classes_of[r].len() != classes).map(|r| r as u32).collect()
}
