//! Loading a pack from a file, a directory of files, or in-memory sources.

use std::path::Path;

use super::error::{PolicyError, PolicyErrors};
use super::fields::Diag;
use super::merge::merge;
use super::model::{Location, Pack};
use super::{parse, yaml};

/// Loads, merges and validates the pack at `path`: one YAML file, or a
/// directory whose `*.yaml` / `*.yml` files are read in file-name order.
///
/// In a directory, hidden entries (leading `.`, which includes the `..data`
/// of a Kubernetes ConfigMap volume) and editor files (`*.swp`, `*~`, `#…#`)
/// are ignored; symlinks are followed, so a ConfigMap's top-level links into
/// `..data/` are read. A directory without any policy file is an error.
pub fn load(path: &Path) -> Result<Pack, PolicyErrors> {
    let shown = path.display().to_string();
    let meta = std::fs::metadata(path)
        .map_err(|e| one(PolicyError::whole_file(&shown, format!("cannot read: {e}"))))?;
    if !meta.is_dir() {
        let text = read(path, &shown).map_err(one)?;
        return load_sources(&[(shown, text)]);
    }
    let entries = std::fs::read_dir(path).map_err(|e| {
        one(PolicyError::whole_file(
            &shown,
            format!("cannot read directory: {e}"),
        ))
    })?;
    let mut names = Vec::new();
    let mut errors = Vec::new();
    for entry in entries {
        let entry = match entry {
            Ok(entry) => entry,
            Err(e) => {
                errors.push(PolicyError::whole_file(
                    &shown,
                    format!("cannot read directory: {e}"),
                ));
                continue;
            }
        };
        let name = entry.file_name().to_string_lossy().into_owned();
        // `metadata` follows symlinks: a dangling link or a directory is skipped.
        if is_policy_file_name(&name) && std::fs::metadata(entry.path()).is_ok_and(|m| m.is_file())
        {
            names.push(name);
        }
    }
    names.sort();
    if names.is_empty() {
        errors.push(PolicyError::whole_file(
            &shown,
            "no policy file: expected `*.yaml` or `*.yml` files in the directory",
        ));
        return Err(PolicyErrors(errors));
    }
    let mut sources = Vec::new();
    for name in names {
        let file = path.join(&name);
        let file_shown = file.display().to_string();
        match read(&file, &file_shown) {
            Ok(text) => sources.push((file_shown, text)),
            Err(e) => errors.push(e),
        }
    }
    match load_sources(&sources) {
        Ok(pack) if errors.is_empty() => Ok(pack),
        Ok(_) => Err(PolicyErrors(errors)),
        Err(PolicyErrors(more)) => {
            errors.extend(more);
            Err(PolicyErrors(errors))
        }
    }
}

/// Whether a directory entry named `name` is read as a policy file.
pub fn is_policy_file_name(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    let editor = name.ends_with('~')
        || lower.ends_with(".swp")
        || (name.starts_with('#') && name.ends_with('#'));
    !name.starts_with('.') && !editor && (lower.ends_with(".yaml") || lower.ends_with(".yml"))
}

/// Parses, merges and validates a pack from `(display name, text)` pairs,
/// in the given order (as `load` does for a directory's files). All errors
/// of all files are reported; a YAML syntax error stops only its own file.
pub fn load_sources(files: &[(String, String)]) -> Result<Pack, PolicyErrors> {
    let mut errors = Vec::new();
    let mut fragments = Vec::new();
    for (name, text) in files {
        let mut d = Diag::new(name);
        match yaml::parse(text) {
            Ok(root) => fragments.push(parse::fragment(&mut d, &root)),
            Err(e) => {
                fragments.push(parse::Fragment {
                    broken: true,
                    ..Default::default()
                });
                let at = Location {
                    file: name.clone(),
                    line: e.line,
                    column: e.column,
                };
                d.errors
                    .push(PolicyError::new(at, format!("invalid YAML: {}", e.message)));
            }
        }
        errors.extend(d.errors);
    }
    let Some((first, _)) = files.first() else {
        return Err(one(PolicyError::whole_file(
            "<policy>",
            "no policy file: expected at least one",
        )));
    };
    let pack = merge(first, fragments, &mut errors);
    // Merge adds its errors after the files'; present them in file order.
    let order = |file: &str| {
        files
            .iter()
            .position(|(n, _)| n == file)
            .unwrap_or(usize::MAX)
    };
    errors.sort_by(|a, b| {
        let key = |e: &PolicyError| (order(&e.location.file), e.location.line, e.location.column);
        key(a).cmp(&key(b))
    });
    match pack {
        Some(pack) if errors.is_empty() => Ok(pack),
        _ => Err(PolicyErrors(errors)),
    }
}

fn read(path: &Path, shown: &str) -> Result<String, PolicyError> {
    let bytes = std::fs::read(path)
        .map_err(|e| PolicyError::whole_file(shown, format!("cannot read: {e}")))?;
    String::from_utf8(bytes)
        .map_err(|_| PolicyError::whole_file(shown, "not UTF-8 text: expected a YAML file"))
}

fn one(e: PolicyError) -> PolicyErrors {
    PolicyErrors(vec![e])
}

#[cfg(test)]
mod timing_probe {
    #[test]
    #[ignore]
    fn where_load_time_goes() {
        use crate::testkit::{pack_yaml::to_yaml, synth};
        let pack = synth::with_webgroups(synth::realistic_pack(10_000, 1), 10_000, 1);
        let text = to_yaml(&pack);
        let t = std::time::Instant::now();
        let root = super::yaml::parse(&text).unwrap();
        let t1 = t.elapsed();
        let mut d = super::Diag::new("x");
        let frag = super::parse::fragment(&mut d, &root);
        let t2 = t.elapsed();
        let mut errors = Vec::new();
        let _ = super::merge("x", vec![frag], &mut errors);
        let t3 = t.elapsed();
        eprintln!("bytes {} yaml {t1:?} fragment {:?} merge {:?}", text.len(), t2 - t1, t3 - t2);
        use granit_parser::{Parser, ParserTrait};
        let t = std::time::Instant::now();
        let mut p = Parser::new_from_str(&text);
        let mut n = 0;
        while let Some(ev) = p.next_event() {
            ev.unwrap();
            n += 1;
        }
        eprintln!("granit events {n} in {:?}", t.elapsed());
    }
}
