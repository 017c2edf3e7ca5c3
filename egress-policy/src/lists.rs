//! Lists in files (`cidrs_file`, `domains_file`): a group's CIDRs or
//! domain patterns kept in a file of their own, one a line (`#` starts a
//! comment), beside or instead of the inline list. The path is relative
//! to the directory of the policy file that names it and stays inside it
//! (no `..`, not absolute: a pack is a directory an operator can copy
//! whole, or a `ConfigMap`, and the agent, which runs as root, reads no
//! file its pack does not hold; a symlink an administrator puts there is
//! followed). Lines are parsed once and duplicates dropped by hashing.
//! Errors name the list file and its line.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use ipnet::IpNet;

use super::domain::parse_pattern;
use super::error::PolicyError;
use super::fields::parse_cidr;
use super::model::{DomainPattern, Location};

/// What a list file holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListKind {
    /// `cidrs_file` of a SmartGroup.
    Cidrs,
    /// `domains_file` of a WebGroup.
    Domains,
}

impl ListKind {
    /// The field that names such a file.
    pub fn field(self) -> &'static str {
        match self {
            ListKind::Cidrs => "cidrs_file",
            ListKind::Domains => "domains_file",
        }
    }
}

/// A group's list file, as a policy file names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListRef {
    /// The group that takes the list's entries.
    pub group: String,
    /// What the list holds (and so which kind of group takes it).
    pub kind: ListKind,
    /// The path as written.
    pub path: String,
    /// Where the path was written.
    pub location: Location,
}

impl ListRef {
    /// The file it names: `path` as written if absolute, else relative to
    /// the directory of the policy file that names it.
    pub fn resolved(&self) -> PathBuf {
        resolve(Path::new(&*self.location.file), &self.path)
    }
}

/// `path` as named in `policy_file`.
pub fn resolve(policy_file: &Path, path: &str) -> PathBuf {
    let path = Path::new(path);
    match policy_file.parent() {
        Some(dir) if path.is_relative() => dir.join(path),
        _ => path.to_path_buf(),
    }
}

/// Why a list file's path, as written, is not taken: it must be relative
/// and stay in the naming file's directory.
pub fn path_problem(path: &str) -> Option<String> {
    use std::path::Component;
    let p = Path::new(path);
    if path.is_empty() {
        return Some("an empty path".into());
    }
    if p.components().any(|c| !matches!(c, Component::Normal(_) | Component::CurDir)) {
        return Some(format!(
            "`{path}` leaves the policy's directory: name a list file by a path relative to the policy file, \
             without `..` (put the file, or a symlink to it, beside the pack)"
        ));
    }
    None
}

/// A list file's entries, duplicates dropped, in the file's order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entries {
    /// The CIDRs of a `cidrs_file`.
    Cidrs(Vec<IpNet>),
    /// The domain patterns of a `domains_file`.
    Domains(Vec<DomainPattern>),
}

/// Bad lines of one list reported at most (then one line says how many more).
pub const MAX_LIST_ERRORS: usize = 20;

/// Parses the text of a list file of `kind`, shown in errors as `shown`.
/// Every bad line is reported at its line and column; the entries of the
/// good ones are returned.
pub fn parse(kind: ListKind, shown: &str, text: &str) -> (Entries, Vec<PolicyError>) {
    let file: std::sync::Arc<str> = shown.into();
    let mut errors = Vec::new();
    let mut cidrs: Vec<IpNet> = Vec::new();
    let mut domains: Vec<DomainPattern> = Vec::new();
    let mut seen_cidrs: HashSet<IpNet> = HashSet::new();
    let mut seen_domains: HashSet<DomainPattern> = HashSet::new();
    let mut bad = 0usize;
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    for (i, line) in text.lines().enumerate() {
        let content = line.split_once('#').map_or(line, |(before, _)| before);
        let entry = content.trim();
        if entry.is_empty() {
            continue;
        }
        let column = content.len() - content.trim_start().len() + 1;
        let problem = match kind {
            ListKind::Cidrs => parse_cidr(entry).map(|net| {
                if seen_cidrs.insert(net) {
                    cidrs.push(net);
                }
            }),
            ListKind::Domains => parse_pattern(entry).map(|pattern| {
                if seen_domains.insert(pattern.clone()) {
                    domains.push(pattern);
                }
            }),
        };
        if let Err(e) = problem {
            bad += 1;
            if bad <= MAX_LIST_ERRORS {
                errors.push(PolicyError::new(Location { file: file.clone(), line: i + 1, column }, e));
            }
        }
    }
    if bad > MAX_LIST_ERRORS {
        let more = bad - MAX_LIST_ERRORS;
        errors.push(PolicyError::new(
            Location { file: file.clone(), line: 0, column: 0 },
            format!("and {more} more bad lines (the first {MAX_LIST_ERRORS} are shown)"),
        ));
    }
    let entries = match kind {
        ListKind::Cidrs => Entries::Cidrs(cidrs),
        ListKind::Domains => Entries::Domains(domains),
    };
    (entries, errors)
}

/// The list files a policy file's text names (resolved against
/// `policy_file`), for a watcher to watch: a scan of the text's lines for
/// the list fields, with no YAML parse (a reload's watcher takes it on
/// every change of a policy file). It may find more than the load reads
/// (a field in a comment or a block string): watching a file too many
/// costs nothing.
pub fn files_named(policy_file: &Path, text: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for field in [ListKind::Cidrs.field(), ListKind::Domains.field()] {
        for (at, _) in text.match_indices(field) {
            let rest = text[at + field.len()..].trim_start_matches([' ', '\t']);
            let Some(value) = rest.strip_prefix(':') else { continue };
            let value = value.split(['\n', ',', '}', '#']).next().unwrap_or("").trim();
            let value = value.trim_matches(|c| c == '"' || c == '\'').trim();
            if path_problem(value).is_none() {
                out.push(resolve(policy_file, value));
            }
        }
    }
    out.sort();
    out.dedup();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_comments_and_duplicates() {
        let text = "# a feed\n10.0.0.0/8\n\n  192.0.2.1   # one host\n10.0.0.0/8\nfd00::/8\n";
        let (entries, errors) = parse(ListKind::Cidrs, "feed.txt", text);
        assert!(errors.is_empty(), "{errors:?}");
        let want: Vec<IpNet> = ["10.0.0.0/8", "192.0.2.1/32", "fd00::/8"].iter().map(|s| s.parse().unwrap()).collect();
        assert_eq!(entries, Entries::Cidrs(want));
    }

    #[test]
    fn a_bad_line_is_named_by_file_line_and_column() {
        let (entries, errors) = parse(ListKind::Cidrs, "lists/feed.txt", "10.0.0.0/8\n   10.0.0.1/8\nnonsense\n");
        assert_eq!(entries, Entries::Cidrs(vec!["10.0.0.0/8".parse().unwrap()]));
        let shown: Vec<String> = errors.iter().map(ToString::to_string).collect();
        assert_eq!(shown.len(), 2, "{shown:?}");
        assert!(shown[0].starts_with("lists/feed.txt:2:4: `10.0.0.1/8` has host bits set"), "{shown:?}");
        assert!(shown[1].starts_with("lists/feed.txt:3:1: invalid CIDR `nonsense`"), "{shown:?}");
    }

    #[test]
    fn domain_lists_take_patterns() {
        let (entries, errors) = parse(ListKind::Domains, "ai.txt", "api.openai.com\n**.openai.azure.com # Azure\n");
        assert!(errors.is_empty(), "{errors:?}");
        assert!(matches!(entries, Entries::Domains(d) if d.len() == 2));
        let (_, errors) = parse(ListKind::Domains, "ai.txt", "api.openai.com\nnot a name\n");
        assert!(errors[0].to_string().starts_with("ai.txt:2:1: "), "{errors:?}");
    }

    #[test]
    fn files_named_are_resolved_against_the_policy_file() {
        let text = "smartgroups:\n  feed: { cidrs_file: feeds/bad.txt }\n  abs:\n    cidrs_file: /etc/egress/x.txt\n\
                    webgroups:\n  ai:\n    domains: [a.example.com]\n    domains_file: \"ai.txt\"  # AI\n";
        let got = files_named(Path::new("/p/pack/main.yaml"), text);
        let want: Vec<PathBuf> = ["/p/pack/ai.txt", "/p/pack/feeds/bad.txt"].iter().map(PathBuf::from).collect();
        assert_eq!(got, want, "an absolute path is not read, so not watched");
        assert!(files_named(Path::new("/p/main.yaml"), "smartgroups: {}\n").is_empty());
    }

    #[test]
    fn paths_stay_in_the_policys_directory() {
        assert_eq!(path_problem("feeds/a.txt"), None);
        assert_eq!(path_problem("./a.txt"), None);
        for bad in ["../lists/a.txt", "/etc/shadow", "feeds/../../a.txt", ""] {
            assert!(path_problem(bad).is_some(), "{bad}");
        }
    }

    #[test]
    fn bad_lines_are_reported_up_to_a_limit() {
        let text = "bad\n".repeat(100);
        let (_, errors) = parse(ListKind::Cidrs, "f.txt", &format!("\u{feff}10.0.0.0/8\n{text}"));
        assert_eq!(errors.len(), MAX_LIST_ERRORS + 1);
        assert!(errors[MAX_LIST_ERRORS].to_string().contains("and 80 more bad lines"), "{errors:?}");
    }
}
