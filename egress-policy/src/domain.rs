//! WebGroup domain patterns (contract section "Domains"): `name`, `*.name`
//! (exactly one label more) and `**.name` (one or more labels more).

use super::model::DomainPattern;
use super::public_suffix::is_public_suffix;

/// Longest domain name, in bytes, without the trailing dot.
const MAX_NAME: usize = 253;
/// Longest label, in bytes.
const MAX_LABEL: usize = 63;

/// Parses and normalises (lowercase, trailing dot removed) one domain pattern.
/// The error says what is wrong and what was expected.
pub fn parse_pattern(text: &str) -> Result<DomainPattern, String> {
    let lower = text.to_ascii_lowercase();
    let name = lower.strip_suffix('.').unwrap_or(&lower);
    if name.is_empty() {
        return Err(format!("empty domain name `{text}`: expected a name like `api.example.com`"));
    }
    if name.len() > MAX_NAME {
        return Err(format!("domain name is {} bytes long: at most {MAX_NAME} are allowed", name.len()));
    }
    let (first, rest) = match name.split_once('.') {
        Some((first, rest)) => (first, Some(rest)),
        None => (name, None),
    };
    let wildcard = match first {
        "*" | "**" => Some(first),
        _ => None,
    };
    let suffix = match (wildcard, rest) {
        (Some(w), None) => {
            return Err(format!(
                "a bare `{w}` admits every name: a wildcard needs a domain after it, like `{w}.example.com`"
            ));
        }
        (Some(_), Some(rest)) => rest,
        (None, _) => name,
    };
    for label in suffix.split('.') {
        check_label(label, text)?;
    }
    let Some(w) = wildcard else {
        return Ok(DomainPattern::Exact(name.to_owned()));
    };
    if is_public_suffix(suffix) {
        return Err(format!(
            "`{text}` admits the world: `{suffix}` is a public suffix where anyone can register names; \
             put the wildcard under a domain you trust, like `{w}.example.{suffix}`"
        ));
    }
    Ok(if w == "*" { DomainPattern::OneLabel(suffix.to_owned()) } else { DomainPattern::AnyDepth(suffix.to_owned()) })
}

/// Checks one label of a (lowercased) name; `text` is the whole pattern as written.
fn check_label(label: &str, text: &str) -> Result<(), String> {
    if label.is_empty() {
        return Err(format!("empty label in `{text}`: labels are separated by single dots"));
    }
    if label.contains('*') {
        return Err(format!(
            "misplaced wildcard in `{text}`: `*` and `**` are allowed only as the whole leftmost label"
        ));
    }
    if label.len() > MAX_LABEL {
        return Err(format!("label `{label}` is {} bytes long: at most {MAX_LABEL} are allowed", label.len()));
    }
    if let Some(c) = label.chars().find(|c| !(c.is_ascii_alphanumeric() || *c == '-' || *c == '_')) {
        return Err(format!(
            "invalid character {c:?} in `{text}`: expected letters, digits, `-` and `_` separated by dots"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use DomainPattern::*;

    fn ok(s: &str) -> DomainPattern {
        match parse_pattern(s) {
            Ok(p) => p,
            Err(e) => panic!("{s}: {e}"),
        }
    }

    fn err(s: &str) -> String {
        match parse_pattern(s) {
            Ok(p) => panic!("{s} parsed as {p:?}"),
            Err(e) => e,
        }
    }

    #[test]
    fn accepts_and_normalises() {
        assert_eq!(ok("Api.OpenAI.com."), Exact("api.openai.com".into()));
        assert_eq!(ok("*.dkr.ecr.us-east-1.amazonaws.com"), OneLabel("dkr.ecr.us-east-1.amazonaws.com".into()));
        assert_eq!(ok("**.openai.azure.com"), AnyDepth("openai.azure.com".into()));
        assert_eq!(ok("_dmarc.example.com"), Exact("_dmarc.example.com".into()));
        assert_eq!(ok("*.example.com"), OneLabel("example.com".into()));
        assert_eq!(ok("localhost"), Exact("localhost".into()));
        assert_eq!(ok("github.io"), Exact("github.io".into()));
    }

    #[test]
    fn rejects_bare_and_misplaced_wildcards() {
        assert!(err("*").contains("bare `*`"));
        assert!(err("**.").contains("bare `**`"));
        assert!(err("api.*.example.com").contains("leftmost label"));
        assert!(err("a*.example.com").contains("leftmost label"));
        assert!(err("***.example.com").contains("leftmost label"));
        assert!(err("example.*").contains("leftmost label"));
    }

    #[test]
    fn rejects_wildcards_over_public_suffixes() {
        for s in ["*.com", "**.co.uk", "*.github.io", "**.anything", "*.S3.amazonaws.com"] {
            assert!(err(s).contains("public suffix"), "{s}");
        }
    }

    #[test]
    fn rejects_bad_names() {
        assert!(err("").contains("empty domain"));
        assert!(err(".").contains("empty domain"));
        assert!(err("a..b").contains("empty label"));
        assert!(err(".a.com").contains("empty label"));
        assert!(err("a.com..").contains("empty label"));
        assert!(err(&format!("{}.com", "a".repeat(64))).contains("at most 63"));
        let long = vec!["abcdefghi"; 26].join(".");
        assert!(err(&long).contains("at most 253"));
        assert!(err("a b.com").contains("invalid character"));
        assert!(err("ex%ample.com").contains("invalid character"));
        assert!(err("bücher.de").contains("invalid character"));
    }
}

/// Whether the normalised name `name` (lowercase, no trailing dot) is one
/// that `pattern` admits.
pub fn pattern_matches(pattern: &DomainPattern, name: &str) -> bool {
    let under = |suffix: &str| name.strip_suffix(suffix).and_then(|p| p.strip_suffix('.')).filter(|p| !p.is_empty());
    match pattern {
        DomainPattern::Exact(n) => name == n,
        DomainPattern::OneLabel(s) => under(s).is_some_and(|p| !p.contains('.')),
        DomainPattern::AnyDepth(s) => under(s).is_some(),
    }
}

#[cfg(test)]
mod matching_tests {
    use super::*;

    #[test]
    fn wildcards_admit_their_depth_only() {
        let one = parse_pattern("*.example.com").unwrap();
        let any = parse_pattern("**.example.com").unwrap();
        let exact = parse_pattern("Example.com.").unwrap();
        assert!(pattern_matches(&one, "a.example.com"));
        assert!(!pattern_matches(&one, "a.b.example.com"));
        assert!(!pattern_matches(&one, "example.com"));
        assert!(!pattern_matches(&one, "aexample.com"));
        assert!(pattern_matches(&any, "a.b.example.com"));
        assert!(!pattern_matches(&any, "example.com"));
        assert!(pattern_matches(&exact, "example.com"));
        assert!(!pattern_matches(&exact, "a.example.com"));
    }
}
