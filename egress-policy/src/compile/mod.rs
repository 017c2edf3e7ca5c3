//! Compiles a validated pack into the datapath's tables (see
//! `egress_common::pack` for the lookup scheme).
//!
//! Each dimension is cut into equivalence classes, each class the set of
//! rules that match there: source prefixes (longest prefix wins, so a
//! prefix's set includes its ancestors'), destination prefixes, and
//! protocol/port intervals. Source × port classes are merged into combined
//! classes `x`; `(x, destination class)` entries are stored only where a
//! destination-specific rule comes before `x`'s first `any`-destination rule.
//! The cost of a lookup does not depend on the number of rules.

mod combined;
mod names;
mod names_decision;
mod pack;
mod pick_lists;
mod tables;

use egress_common::{NameEntry, NameKey};

pub use names_decision::{NO_RULE, NamesDecision};
pub use pack::{
    CompileError, CompiledPack, CompiledRule, Decision, IMPLICIT_DENY, Previous, UNCOVERED_SOURCE, port_index,
};

use crate::bitset::FastMap as HashMap;
use crate::model::Pack;

/// Packs with at least this many domain patterns have their name table
/// built alongside the rest of the compile (see [`compile_stable_with`]);
/// below it, the name table is too small to be worth a second thread.
pub const NAME_TABLE_ALONGSIDE_FROM: usize = 1_000;

/// The classifier's scheme, as `check`, `status` and the benches name it:
/// source and port classes combined into classes `x` with a default per
/// source class (the `(source, port)` table lists only where a source
/// differs), rules of any source combined with the port alone, then
/// `(x, destination)` and `(x, WebGroup)` (see `egress_common::pack`).
pub const SCHEME: &str = "source-port-defaults";

/// What the compiled pack installs, table by table: the line `check`
/// prints after the summary.
pub fn tables_summary(c: &CompiledPack) -> String {
    format!(
        "datapath tables (scheme {SCHEME}): {} rules, {} source prefixes, {} destination prefixes, {} (source, port) entries, \
         {} (class, destination) entries, {} (class, webgroup) entries, {} name entries, {} combined classes \
         ({} of them of rules of any source, by port alone)",
        c.rules.len(),
        c.src.len(),
        c.dst.len(),
        c.sp.len(),
        c.xd.len(),
        c.xw.len(),
        c.names.len(),
        c.x_sets.iter().filter(|s| !s.is_empty()).count(),
        c.wild.iter().filter(|x| **x != egress_common::NO_X).collect::<std::collections::BTreeSet<_>>().len()
    )
}

/// Compiles a validated pack, numbering its WebGroups afresh.
pub fn compile(pack: &Pack) -> Result<CompiledPack, CompileError> {
    compile_stable(pack, &Previous::default())
}

/// Compiles a validated pack, keeping what it can of `previous` (the live
/// pack's [`CompiledPack::previous`]). One step after the other; see
/// [`compile_stable_with`] to run the two independent halves side by side.
pub fn compile_stable(pack: &Pack, previous: &Previous) -> Result<CompiledPack, CompileError> {
    compile_stable_with(pack, previous, |names, tables| (names(), tables()))
}

/// One half of a compile, handed to the caller of [`compile_stable_with`]
/// to run (it may run on another thread: it is `Sync`).
pub type Step<'a, T> = dyn Fn() -> T + Sync + 'a;

/// The name table of a pack: one half of a compile.
pub struct NameTable(Result<HashMap<NameKey, NameEntry>, CompileError>);

/// Every other table of a pack: the other half of a compile.
pub struct ClassTables(Result<CompiledPack, CompileError>);

/// [`compile_stable`], where the caller decides how its two independent
/// halves run: `run_both` gets the step that builds the name table and the
/// step that builds every other table, runs each once (on two threads, say)
/// and returns both results. It is called only for packs with at least
/// [`NAME_TABLE_ALONGSIDE_FROM`] domain patterns; smaller ones are compiled
/// one step after the other.
pub fn compile_stable_with(
    pack: &Pack,
    previous: &Previous,
    run_both: impl FnOnce(&Step<'_, NameTable>, &Step<'_, ClassTables>) -> (NameTable, ClassTables),
) -> Result<CompiledPack, CompileError> {
    let webgroup_bits = names::assign_bits(pack, &previous.webgroup_bits)?;
    let names_step = || NameTable(names::name_table(pack, &webgroup_bits));
    let tables_step = || ClassTables(tables::classify(pack, previous, &webgroup_bits));
    let domains: usize = pack.webgroups.values().map(|g| g.domains.len()).sum();
    let (NameTable(names), ClassTables(tables)) = if domains < NAME_TABLE_ALONGSIDE_FROM {
        (names_step(), tables_step())
    } else {
        run_both(&names_step, &tables_step)
    };
    let mut compiled = tables?;
    compiled.names = names?;
    compiled.name_lengths = names::lengths(&compiled.names);
    compiled.zones = names::zones(pack);
    compiled.webgroup_bits = webgroup_bits;
    compiled.named = NamesDecision::build(pack, &compiled);
    Ok(compiled)
}
