//! Lists in files (`cidrs_file`, `domains_file`): a group's CIDRs or
//! domain patterns kept in a file of their own, one a line (`#` starts a
//! comment), beside or instead of the inline list. The path is relative
//! to the policy file that names it. A list of a million CIDRs (a threat
//! feed) is ordinary: lines are parsed once and duplicates dropped by
//! hashing. Errors name the list file and its line.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use ipnet::IpNet;

use super::domain::parse_pattern;
use super::error::PolicyError;
use super::fields::parse_cidr;
use super::model::{DomainPattern, Location};
use super::yaml::{Kind, Node};

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

/// A list file's entries, duplicates dropped, in the file's order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entries {
    Cidrs(Vec<IpNet>),
    Domains(Vec<DomainPattern>),
}

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
    for (i, line) in text.lines().enumerate() {
        let content = line.split_once('#').map_or(line, |(before, _)| before);
        let entry = content.trim();
        if entry.is_empty() {
            continue;
        }
        let column = content.len() - content.trim_start().len() + 1;
        let at = || Location { file: file.clone(), line: i + 1, column };
        match kind {
            ListKind::Cidrs => match parse_cidr(entry) {
                Ok(net) => {
                    if seen_cidrs.insert(net) {
                        cidrs.push(net);
                    }
                }
                Err(e) => errors.push(PolicyError::new(at(), e)),
            },
            ListKind::Domains => match parse_pattern(entry) {
                Ok(pattern) => {
                    if seen_domains.insert(pattern.clone()) {
                        domains.push(pattern);
                    }
                }
                Err(e) => errors.push(PolicyError::new(at(), e)),
            },
        }
    }
    let entries = match kind {
        ListKind::Cidrs => Entries::Cidrs(cidrs),
        ListKind::Domains => Entries::Domains(domains),
    };
    (entries, errors)
}

/// The list files a policy file's text names (resolved against
/// `policy_file`), for a watcher to watch: a quick look that parses the
/// YAML only when the text holds a list field at all. What it cannot read
/// names nothing (the load that follows reports it).
pub fn files_named(policy_file: &Path, text: &str) -> Vec<PathBuf> {
    let fields = [ListKind::Cidrs.field(), ListKind::Domains.field()];
    if !fields.iter().any(|f| text.contains(f)) {
        return Vec::new();
    }
    let Ok(root) = super::yaml::parse(text) else { return Vec::new() };
    let mut out = Vec::new();
    for groups in ["smartgroups", "webgroups"].iter().filter_map(|key| field(&root, key)) {
        let Kind::Map(groups) = &groups.kind else { continue };
        for (_, body) in groups {
            for value in fields.iter().filter_map(|f| field(body, f)) {
                if let Kind::Str(path) = &value.kind {
                    out.push(resolve(policy_file, path));
                }
            }
        }
    }
    out
}

/// The value of field `name` of a mapping node.
fn field<'n>(node: &'n Node, name: &str) -> Option<&'n Node> {
    let Kind::Map(pairs) = &node.kind else { return None };
    pairs.iter().find(|(k, _)| matches!(&k.kind, Kind::Str(s) if s == name)).map(|(_, v)| v)
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
                    webgroups:\n  ai:\n    domains: [a.example.com]\n    domains_file: ai.txt\n";
        let got = files_named(Path::new("/p/pack/main.yaml"), text);
        let want: Vec<PathBuf> =
            ["/p/pack/feeds/bad.txt", "/etc/egress/x.txt", "/p/pack/ai.txt"].iter().map(PathBuf::from).collect();
        assert_eq!(got, want);
        assert!(files_named(Path::new("/p/main.yaml"), "smartgroups: {}\n").is_empty());
    }
}
