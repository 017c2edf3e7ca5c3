//! The list files of a load (`cidrs_file`, `domains_file`): read relative
//! to the policy file that names them, parsed (or taken from the last
//! load where their text is unchanged: a feed of a million lines is parsed
//! once, not at every reload), and their entries added to the groups.

use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;

use super::error::PolicyError;
use super::lists::{self, Entries, ListKind, ListRef};
use super::parse::Fragment;

/// One list file, parsed.
pub(super) struct ParsedList {
    kind: ListKind,
    text: String,
    entries: Arc<Entries>,
    errors: Vec<PolicyError>,
}

/// The list files of one load, by resolved path.
pub(super) type Lists = BTreeMap<PathBuf, ParsedList>;

/// Reads the list files the `fragments` name and adds their entries to
/// the groups that name them; a group whose list cannot be read, holds a
/// bad line, or leaves the group empty is reported and left out (as
/// invalid: rules that use it are not reported again). `old`: the last
/// load's lists, taken from where unchanged. Returns this load's lists.
pub(super) fn add_lists(fragments: &mut [Fragment], old: &mut Lists, errors: &mut Vec<PolicyError>) -> Lists {
    let mut kept = Lists::new();
    for frag in fragments.iter_mut() {
        for list in frag.lists.clone() {
            let path = list.resolved();
            let known = kept.remove(&path).or_else(|| old.remove(&path));
            let parsed = read_list(&list, &path, known);
            match parsed {
                Ok(parsed) => {
                    errors.extend(parsed.errors.iter().cloned());
                    if parsed.errors.is_empty() {
                        add_entries(frag, &list, &parsed.entries, errors);
                    } else {
                        invalidate(frag, &list.group);
                    }
                    kept.insert(path, parsed);
                }
                Err(e) => {
                    errors.push(e);
                    invalidate(frag, &list.group);
                }
            }
        }
    }
    kept
}

/// A list file read and parsed, or `known` (the same file as a load read
/// it before) where its text is unchanged; `Err`: it could not be read
/// (the error at the place that names it).
fn read_list(list: &ListRef, path: &std::path::Path, known: Option<ParsedList>) -> Result<ParsedList, PolicyError> {
    let shown = path.display().to_string();
    let text = super::load::read(path, &shown).map_err(|e| {
        PolicyError::new(list.location.clone(), format!("{} `{}`: {}", list.kind.field(), list.path, e.message))
    })?;
    if let Some(known) = known.filter(|k| k.kind == list.kind && k.text == text) {
        return Ok(known);
    }
    let (entries, errors) = lists::parse(list.kind, &shown, &text);
    Ok(ParsedList { kind: list.kind, text, entries: Arc::new(entries), errors })
}

/// Adds a list's entries to its group (those the group lists already are
/// not added again); a group left without any is an error.
fn add_entries(frag: &mut Fragment, list: &ListRef, entries: &Entries, errors: &mut Vec<PolicyError>) {
    let empty = match entries {
        Entries::Cidrs(cidrs) => frag.smartgroups.iter_mut().find(|g| g.name == list.group).map(|g| {
            let inline: HashSet<_> = g.cidrs.iter().copied().collect();
            g.cidrs.extend(cidrs.iter().filter(|c| !inline.contains(c)));
            g.cidrs.is_empty()
        }),
        Entries::Domains(domains) => frag.webgroups.iter_mut().find(|g| g.name == list.group).map(|g| {
            let inline: HashSet<_> = g.domains.iter().cloned().collect();
            g.domains.extend(domains.iter().filter(|d| !inline.contains(d)).cloned());
            g.domains.is_empty()
        }),
    };
    if empty == Some(true) {
        let what = match list.kind {
            ListKind::Cidrs => "CIDR",
            ListKind::Domains => "domain name",
        };
        errors.push(PolicyError::new(
            list.location.clone(),
            format!(
                "{} `{}` holds no {what} and the group lists none: expected at least one (an empty group never means any)",
                list.kind.field(),
                list.path
            ),
        ));
        invalidate(frag, &list.group);
    }
}

/// Leaves group `name` out of the fragment, as invalid.
fn invalidate(frag: &mut Fragment, name: &str) {
    frag.smartgroups.retain(|g| g.name != name);
    frag.webgroups.retain(|g| g.name != name);
    if !frag.invalid_groups.iter().any(|g| g == name) {
        frag.invalid_groups.push(name.to_string());
    }
}

/// The texts of a load's lists, in path order, for the pack's hash.
pub(super) fn texts(lists: &Lists) -> impl Iterator<Item = &str> {
    lists.iter().flat_map(|(path, list)| [path.to_str().unwrap_or(""), list.text.as_str()])
}
