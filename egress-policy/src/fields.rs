//! Reading single values out of the YAML tree: names, CIDRs, addresses,
//! ports and keywords. Every reader records what it expected when a value is
//! wrong and returns `None`, so that parsing carries on and finds the rest.

use std::net::IpAddr;

use ipnet::IpNet;

use super::error::PolicyError;
use super::model::{Location, Mode, PortRange};
use super::yaml::{Kind, Node};

/// Longest rule or group name.
pub const MAX_NAME: usize = 64;

/// Where the errors found in one file go: the file's display name (for
/// their locations) and the errors reported so far.
pub struct ErrorSink {
    pub file: std::sync::Arc<str>,
    pub errors: Vec<PolicyError>,
}

impl ErrorSink {
    /// Collects errors for `file`.
    pub fn new(file: &str) -> Self {
        Self { file: file.into(), errors: Vec::new() }
    }

    /// Where `node` was written.
    pub fn location_of(&self, node: &Node) -> Location {
        Location { file: self.file.clone(), line: node.line, column: node.column }
    }

    /// Records an error at `node`.
    pub fn report(&mut self, node: &Node, message: impl Into<String>) {
        let location = self.location_of(node);
        self.errors.push(PolicyError::new(location, message));
    }
}

/// A short description of what a node is, for "expected X, found Y".
pub fn describe(node: &Node) -> String {
    match &node.kind {
        Kind::Null => "nothing".to_owned(),
        Kind::Bool(_, raw) => format!("the boolean `{raw}`"),
        Kind::Int(_, raw) => format!("the integer `{raw}`"),
        Kind::Float(_, raw) => format!("the number `{raw}`"),
        Kind::Str(s) => format!("`{s}`"),
        Kind::Seq(_) => "a list".to_owned(),
        Kind::Map(_) => "a mapping".to_owned(),
    }
}

/// The text of a scalar as written (`1.5` stays `1.5`); `None` for
/// collections and null.
pub fn scalar_text(node: &Node) -> Option<&str> {
    match &node.kind {
        Kind::Str(s) => Some(s),
        Kind::Bool(_, raw) | Kind::Int(_, raw) | Kind::Float(_, raw) => Some(raw),
        _ => None,
    }
}

/// A string value; `what` describes what was expected.
pub fn string<'n>(sink: &mut ErrorSink, node: &'n Node, what: &str) -> Option<&'n str> {
    if let Kind::Str(s) = &node.kind {
        Some(s)
    } else {
        sink.report(node, format!("expected {what}, found {}", describe(node)));
        None
    }
}

/// A list value (a scalar is not silently taken as a one-element list).
pub fn list<'n>(sink: &mut ErrorSink, node: &'n Node, what: &str) -> Option<&'n [Node]> {
    if let Kind::Seq(items) = &node.kind {
        Some(items)
    } else {
        sink.report(node, format!("expected a list of {what}, found {}", describe(node)));
        None
    }
}

/// An integer in `lo..=hi`.
pub fn integer(sink: &mut ErrorSink, node: &Node, lo: i128, hi: i128, what: &str) -> Option<i128> {
    match &node.kind {
        Kind::Int(v, _) if (lo..=hi).contains(v) => Some(*v),
        Kind::Int(v, _) => {
            sink.report(node, format!("{what} {v} is out of range: expected an integer {lo}..={hi}"));
            None
        }
        _ => {
            let found = describe(node);
            sink.report(node, format!("expected {what} as an integer {lo}..={hi}, found {found}"));
            None
        }
    }
}

/// One of the `choices` keywords, e.g. `permit` | `deny`.
pub fn keyword<T: Copy>(sink: &mut ErrorSink, node: &Node, field: &str, choices: &[(&str, T)]) -> Option<T> {
    if let Kind::Str(s) = &node.kind
        && let Some((_, v)) = choices.iter().find(|(k, _)| k == s)
    {
        return Some(*v);
    }
    let names: Vec<String> = choices.iter().map(|(k, _)| format!("`{k}`")).collect();
    sink.report(node, format!("invalid `{field}` {}: expected {}", describe(node), names.join(" | ")));
    None
}

/// A `mode`: `monitor` | `enforce`.
pub fn mode(sink: &mut ErrorSink, node: &Node) -> Option<Mode> {
    keyword(sink, node, "mode", &[("monitor", Mode::Monitor), ("enforce", Mode::Enforce)])
}

/// A boolean `true` / `false`.
pub fn boolean(sink: &mut ErrorSink, node: &Node, field: &str) -> Option<bool> {
    if let Kind::Bool(b, _) = node.kind {
        Some(b)
    } else {
        sink.report(node, format!("invalid `{field}` {}: expected `true` or `false`", describe(node)));
        None
    }
}

/// Whether `name` is a valid rule name (`[a-z0-9][a-z0-9._-]*`, ≤ 64 chars)
/// or, with `upper`, a valid group name (letters of both cases).
pub fn check_name(name: &str, upper: bool) -> Result<(), String> {
    let pattern = if upper { "[A-Za-z0-9][A-Za-z0-9._-]*" } else { "[a-z0-9][a-z0-9._-]*" };
    let alnum = |c: char| c.is_ascii_digit() || c.is_ascii_lowercase() || (upper && c.is_ascii_uppercase());
    if name.len() > MAX_NAME {
        return Err(format!("name `{name}` is {} characters long: at most {MAX_NAME} are allowed", name.len()));
    }
    let mut chars = name.chars();
    let first_ok = chars.next().is_some_and(alnum);
    if !first_ok || !chars.all(|c| alnum(c) || matches!(c, '.' | '_' | '-')) {
        return Err(format!("invalid name `{name}`: expected {pattern}, at most {MAX_NAME} characters"));
    }
    Ok(())
}

/// A name, checked with [`check_name`]; numbers are taken as written.
pub fn name(sink: &mut ErrorSink, node: &Node, upper: bool) -> Option<String> {
    let Some(text) = scalar_text(node).filter(|_| !matches!(node.kind, Kind::Bool(..))) else {
        sink.report(node, format!("expected a name, found {}", describe(node)));
        return None;
    };
    match check_name(text, upper) {
        Ok(()) => Some(text.to_owned()),
        Err(e) => {
            sink.report(node, e);
            None
        }
    }
}

/// Parses a CIDR or a bare address (a host prefix); host bits must be clear.
pub fn parse_cidr(text: &str) -> Result<IpNet, String> {
    if let Ok(net) = text.parse::<IpNet>() {
        let network = net.trunc();
        if network != net {
            return Err(format!("`{text}` has host bits set: did you mean `{network}`?"));
        }
        return Ok(net);
    }
    if let Ok(addr) = text.parse::<IpAddr>() {
        return Ok(IpNet::from(addr));
    }
    Err(format!("invalid CIDR `{text}`: expected an IPv4/IPv6 CIDR like `10.0.0.0/24` or an address"))
}

/// A non-empty list of CIDRs, duplicates removed.
pub fn cidrs(sink: &mut ErrorSink, node: &Node) -> Option<Vec<IpNet>> {
    let items = list(sink, node, "CIDRs")?;
    if items.is_empty() {
        sink.report(node, "empty `cidrs`: expected at least one CIDR (an empty group never means any)");
        return None;
    }
    distinct(sink, items, "a CIDR like `10.0.0.0/24`", parse_cidr)
}

/// Every item of a list read as a string and parsed by `parse`, duplicates
/// dropped; `None` (each bad item reported) if any item is bad.
pub fn distinct<T: PartialEq>(
    sink: &mut ErrorSink,
    items: &[Node],
    expected: &str,
    parse: impl Fn(&str) -> Result<T, String>,
) -> Option<Vec<T>> {
    let mut out = Vec::new();
    let mut ok = true;
    for item in items {
        match string(sink, item, expected).map(&parse) {
            Some(Ok(value)) if !out.contains(&value) => out.push(value),
            Some(Ok(_)) => {}
            Some(Err(e)) => {
                sink.report(item, e);
                ok = false;
            }
            None => ok = false,
        }
    }
    ok.then_some(out)
}

/// An IP address (not a CIDR), e.g. a resolver.
pub fn ip_addr(sink: &mut ErrorSink, node: &Node) -> Option<IpAddr> {
    let text = string(sink, node, "an IP address")?;
    match text.parse::<IpAddr>() {
        Ok(addr) => Some(addr),
        Err(_) if text.contains('/') => {
            sink.report(node, format!("`{text}` is a CIDR: expected a single IP address"));
            None
        }
        Err(_) => {
            sink.report(node, format!("invalid IP address `{text}`: expected e.g. `10.0.0.2` or `fd00::53`"));
            None
        }
    }
}

/// Parses one port entry written as a string: `"443"` or `"lo-hi"`.
pub fn parse_port_text(text: &str) -> Result<PortRange, String> {
    let port = |s: &str| s.trim().parse::<u16>().ok();
    let range = match text.split_once('-') {
        Some((lo, hi)) => port(lo).zip(port(hi)),
        None => port(text).map(|p| (p, p)),
    };
    match range {
        Some((lo, hi)) if lo <= hi => Ok(PortRange { lo, hi }),
        Some((lo, hi)) => Err(format!("port range `{text}` is reversed: expected lo <= hi, e.g. `{hi}-{lo}`")),
        None => Err(format!("invalid port `{text}`: expected a port 0..=65535 or a range \"lo-hi\"")),
    }
}

/// A non-empty list of ports and ranges, sorted with overlaps merged.
pub fn ports(sink: &mut ErrorSink, node: &Node) -> Option<Vec<PortRange>> {
    let items = list(sink, node, "ports")?;
    if items.is_empty() {
        sink.report(node, "empty `ports` matches nothing: list at least one port, or omit `ports` for all ports");
        return None;
    }
    let mut ranges = Vec::new();
    let mut ok = true;
    for item in items {
        let parsed = match &item.kind {
            Kind::Int(v, _) => u16::try_from(*v)
                .map(|p| PortRange { lo: p, hi: p })
                .map_err(|_| format!("port {v} is out of range: expected 0..=65535")),
            Kind::Str(s) => parse_port_text(s),
            _ => Err(format!("expected a port 0..=65535 or a range \"lo-hi\", found {}", describe(item))),
        };
        match parsed {
            Ok(r) => ranges.push(r),
            Err(e) => {
                sink.report(item, e);
                ok = false;
            }
        }
    }
    ok.then(|| merge_ranges(ranges))
}

/// Sorts port ranges and merges overlapping or adjacent ones.
pub fn merge_ranges(mut ranges: Vec<PortRange>) -> Vec<PortRange> {
    ranges.sort();
    let mut out: Vec<PortRange> = Vec::with_capacity(ranges.len());
    for r in ranges {
        match out.last_mut() {
            Some(last) if u32::from(r.lo) <= u32::from(last.hi) + 1 => last.hi = last.hi.max(r.hi),
            _ => out.push(r),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pr(lo: u16, hi: u16) -> PortRange {
        PortRange { lo, hi }
    }

    #[test]
    fn names() {
        assert!(check_name("allow-dns.v2_x", false).is_ok());
        assert!(check_name("0", false).is_ok());
        assert!(check_name("Allow", false).is_err());
        assert!(check_name("Allow", true).is_ok());
        assert!(check_name("-x", true).is_err());
        assert!(check_name("", false).is_err());
        assert!(check_name("a b", false).is_err());
        assert!(check_name(&"a".repeat(64), false).is_ok());
        assert!(check_name(&"a".repeat(65), false).unwrap_err().contains("at most 64"));
    }

    #[test]
    fn cidr_parsing() {
        assert_eq!(parse_cidr("10.10.1.0/24").ok(), "10.10.1.0/24".parse().ok());
        assert_eq!(parse_cidr("10.0.0.7").ok(), "10.0.0.7/32".parse().ok());
        assert_eq!(parse_cidr("fd00::1").ok(), "fd00::1/128".parse().ok());
        assert!(parse_cidr("10.0.0.1/24").unwrap_err().contains("did you mean `10.0.0.0/24`"));
        assert!(parse_cidr("10.0.0.0/33").is_err());
        assert!(parse_cidr("example.com").is_err());
    }

    #[test]
    fn port_text() {
        assert_eq!(parse_port_text("443"), Ok(pr(443, 443)));
        assert_eq!(parse_port_text("1000-2000"), Ok(pr(1000, 2000)));
        assert_eq!(parse_port_text("0-65535"), Ok(pr(0, 65535)));
        assert!(parse_port_text("2000-1000").unwrap_err().contains("reversed"));
        assert!(parse_port_text("65536").is_err());
        assert!(parse_port_text("http").is_err());
        assert!(parse_port_text("1-2-3").is_err());
    }

    #[test]
    fn merging() {
        let merged =
            merge_ranges(vec![pr(443, 443), pr(80, 80), pr(8000, 8080), pr(8080, 9000), pr(81, 81), pr(443, 443)]);
        assert_eq!(merged, vec![pr(80, 81), pr(443, 443), pr(8000, 9000)]);
        assert_eq!(merge_ranges(vec![pr(0, 65535), pr(65535, 65535)]), vec![pr(0, 65535)]);
    }
}
