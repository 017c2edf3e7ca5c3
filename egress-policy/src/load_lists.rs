//! The list files of a load (`cidrs_file`, `domains_file`): read relative
//! to the policy file that names them, parsed (or taken from the last
//! load where the file is unchanged: a feed of a million lines is parsed
//! once, not at every reload), and their entries added to the groups.
//! Only a pack loaded from its files reads lists: in-memory sources name
//! no directory to read them from.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::error::PolicyError;
use super::lists::{self, Entries, ListKind, ListRef};
use super::parse::Fragment;

/// Where a load takes list files from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ListSource {
    /// The files beside the policy files (a pack loaded from disk).
    Disk,
    /// None: a list field is an error (in-memory sources).
    Nowhere,
}

/// One list file, parsed, with what it was parsed from.
pub(super) struct ParsedList {
    kind: ListKind,
    stat: Stat,
    text: String,
    entries: Arc<Entries>,
    errors: Vec<PolicyError>,
}

/// Size, modification and change times and inode: a file whose `Stat` is
/// unchanged is not read again (a write changes the change time).
type Stat = (u64, Option<std::time::SystemTime>, (i64, i64), u64);

fn stat(path: &Path) -> Option<Stat> {
    use std::os::unix::fs::MetadataExt as _;
    let m = std::fs::metadata(path).ok()?;
    Some((m.len(), m.modified().ok(), (m.ctime(), m.ctime_nsec()), m.ino()))
}

/// The list files of one load, by resolved path.
pub(super) type Lists = BTreeMap<PathBuf, ParsedList>;

/// Reads the list files the `fragments` name and adds their entries to
/// the groups that name them; a group whose list cannot be read, holds a
/// bad line, or leaves the group empty is reported and left out (as
/// invalid: rules that use it are not reported again). Each file is read
/// and its errors reported once, however many groups name it. `old`: the
/// last load's lists, taken from where unchanged (what is not taken stays
/// there, for the caller to retire). `budget`: bytes the lists may take
/// together. Returns this load's lists.
pub(super) fn add_lists(
    fragments: &mut [Fragment],
    source: ListSource,
    (old, budget): (&mut Lists, u64),
    errors: &mut Vec<PolicyError>,
) -> Lists {
    let mut kept = Lists::new();
    let mut failed: HashSet<PathBuf> = HashSet::new();
    let mut bytes = 0u64;
    for frag in fragments.iter_mut() {
        for list in frag.lists.clone() {
            if source == ListSource::Nowhere {
                let why = "list files are read only with a pack loaded from its files (`--policy`, `check PATH`)";
                errors.push(PolicyError::new(
                    list.location.clone(),
                    format!("{} `{}`: {why}", list.kind.field(), list.path),
                ));
                invalidate(frag, &list);
                continue;
            }
            let path = list.resolved();
            if failed.contains(&path) {
                invalidate(frag, &list);
                continue;
            }
            if let Some(known) = kept.get(&path).filter(|k| k.kind == list.kind) {
                add_entries(frag, &list, &known.entries.clone(), errors);
                continue;
            }
            match read_list(&list, &path, old, (&mut bytes, budget)) {
                Ok(parsed) if parsed.errors.is_empty() => {
                    add_entries(frag, &list, &parsed.entries.clone(), errors);
                    kept.insert(path, parsed);
                }
                Ok(parsed) => {
                    errors.extend(parsed.errors.iter().cloned());
                    failed.insert(path.clone());
                    invalidate(frag, &list);
                    kept.insert(path, parsed);
                }
                Err(e) => {
                    errors.push(e);
                    failed.insert(path);
                    invalidate(frag, &list);
                }
            }
        }
    }
    kept
}

/// A list file read and parsed, or taken from `old` (the last load's
/// lists) where it is unchanged (a changed one stays in `old`, to be
/// retired); `Err`: it could not be read, or the lists are past their
/// budget with it (the error at the place that names it). `bytes`: what
/// the load's lists took so far, of `budget`.
fn read_list(
    list: &ListRef,
    path: &Path,
    old: &mut Lists,
    (bytes, budget): (&mut u64, u64),
) -> Result<ParsedList, PolicyError> {
    let shown = path.display().to_string();
    let fail =
        |why: String| PolicyError::new(list.location.clone(), format!("{} `{}`: {why}", list.kind.field(), list.path));
    let now = stat(path).ok_or_else(|| fail(format!("cannot read {shown}: no such file")))?;
    *bytes += now.0;
    if *bytes > budget {
        let most = super::load::MAX_PACK_BYTES >> 20;
        return Err(fail(format!("the pack and its lists come to more than {most} MiB, the most a pack may be")));
    }
    if old.get(path).is_some_and(|k| k.kind == list.kind && k.stat == now)
        && let Some(known) = old.remove(path)
    {
        return Ok(known);
    }
    let text = super::load::read(path, &shown).map_err(|e| fail(format!("{shown}: {}", e.message)))?;
    let (entries, errors) = lists::parse(list.kind, &shown, &text);
    Ok(ParsedList { kind: list.kind, stat: now, text, entries: Arc::new(entries), errors })
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
        invalidate(frag, list);
    }
}

/// Leaves the group that names `list` out of the fragment, as invalid.
fn invalidate(frag: &mut Fragment, list: &ListRef) {
    match list.kind {
        ListKind::Cidrs => frag.smartgroups.retain(|g| g.name != list.group),
        ListKind::Domains => frag.webgroups.retain(|g| g.name != list.group),
    }
    if !frag.invalid_groups.contains(&list.group) {
        frag.invalid_groups.push(list.group.clone());
    }
}

/// The paths and texts of a load's lists, in path order, for the pack's hash.
pub(super) fn texts(lists: &Lists) -> impl Iterator<Item = &str> {
    lists.iter().flat_map(|(path, list)| [path.to_str().unwrap_or(""), list.text.as_str()])
}
