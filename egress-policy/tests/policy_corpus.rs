//! The policy corpus: every invalid case is rejected with the expected
//! message at the expected place, and every valid pack loads.
//!
//! An invalid case is a file `invalid/NAME.yaml` whose leading comment lines
//! say what to expect, or a directory `invalid/NAME/` with an `expect.txt`:
//!
//! ```text
//! # expect: substring of one error's message     (expect.txt: `expect: ...`)
//! # and: another substring of that same message  (optional, repeatable)
//! # at: LINE:COLUMN                               (expect.txt: `at: FILE:LINE:COLUMN`)
//! ```
//!
//! Several `expect` blocks may be given; each must match a different error.
//! Set `CORPUS_PRINT=1` to print every error of every case and the summary
//! of every valid pack.

use std::path::{Path, PathBuf};

use egress_policy::PolicyError;

fn corpus(kind: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/policy-corpus").join(kind)
}

fn entries(dir: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("directory entry").path())
        .filter(|p| {
            p.is_dir() || egress_policy::is_policy_file_name(&p.file_name().unwrap_or_default().to_string_lossy())
        })
        .collect();
    out.sort();
    out
}

#[derive(Debug, Default)]
struct Expect {
    substrings: Vec<String>,
    /// `LINE:COLUMN`, or `FILE:LINE:COLUMN` in a directory case.
    at: Option<String>,
}

/// The expectations of a case: `expect:`/`and:`/`at:` lines, with `prefix`
/// (`# ` in a YAML file) in front.
fn expectations(text: &str, prefix: &str) -> Vec<Expect> {
    let mut out: Vec<Expect> = Vec::new();
    for line in text.lines() {
        let Some(line) = line.strip_prefix(prefix) else {
            break;
        };
        if let Some(s) = line.strip_prefix("expect: ") {
            out.push(Expect { substrings: vec![s.trim().to_owned()], at: None });
        } else if let Some(s) = line.strip_prefix("and: ") {
            out.last_mut().expect("`and:` after `expect:`").substrings.push(s.trim().to_owned());
        } else if let Some(s) = line.strip_prefix("at: ") {
            out.last_mut().expect("`at:` after `expect:`").at = Some(s.trim().to_owned());
        }
    }
    out
}

fn matches(e: &PolicyError, x: &Expect, case: &Path) -> bool {
    if !x.substrings.iter().all(|s| e.message.contains(s.as_str())) {
        return false;
    }
    let Some(at) = &x.at else { return true };
    let l = &e.location;
    if case.is_dir() {
        let (file, pos) = at.split_once(':').expect("at: FILE:LINE:COLUMN");
        l.file.ends_with(&format!("/{file}")) && (pos.is_empty() || format!("{}:{}", l.line, l.column) == pos)
    } else {
        *l.file == *case.display().to_string() && format!("{}:{}", l.line, l.column) == *at
    }
}

#[test]
fn invalid_cases_fail_where_and_how_expected() {
    let cases = entries(&corpus("invalid"));
    assert!(cases.len() > 50, "the invalid corpus looks incomplete: {} cases", cases.len());
    let mut failures = Vec::new();
    for case in &cases {
        let name = case.file_name().unwrap_or_default().to_string_lossy().into_owned();
        let expects = if case.is_dir() {
            let text = std::fs::read_to_string(case.join("expect.txt")).expect("expect.txt");
            expectations(&text, "")
        } else {
            expectations(&std::fs::read_to_string(case).expect("case file"), "# ")
        };
        if expects.is_empty() {
            failures.push(format!("{name}: no expectation given"));
            continue;
        }
        let errors = match egress_policy::load(case) {
            Ok(pack) => {
                failures.push(format!("{name}: loaded, expected an error\n{}", egress_policy::summary(&pack)));
                continue;
            }
            Err(e) => e.0,
        };
        if std::env::var_os("CORPUS_PRINT").is_some() {
            for e in &errors {
                println!("{name}: {e}");
            }
        }
        for e in &errors {
            if !e.location.file.contains(&name) || !e.to_string().starts_with(&*e.location.file) {
                failures.push(format!("{name}: error does not name its file: {e}"));
            }
        }
        let mut used = vec![false; errors.len()];
        for x in &expects {
            if let Some(i) = (0..errors.len()).find(|&i| !used[i] && matches(&errors[i], x, case)) {
                used[i] = true;
            } else {
                let got: Vec<String> = errors.iter().map(ToString::to_string).collect();
                failures.push(format!("{name}: no error matches {x:?}; got:\n  {}", got.join("\n  ")));
            }
        }
    }
    assert!(failures.is_empty(), "{} of {} cases failed:\n{}", failures.len(), cases.len(), failures.join("\n"));
}

#[test]
fn valid_packs_load() {
    let mut cases = entries(&corpus("valid"));
    cases.push(Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies/baseline.yaml"));
    assert!(cases.len() >= 3);
    for case in cases {
        match egress_policy::load(&case) {
            Ok(pack) => {
                if std::env::var_os("CORPUS_PRINT").is_some() {
                    println!("{}:\n{}", case.display(), egress_policy::summary(&pack));
                }
                assert!(!pack.rules.is_empty(), "{}: no rules", case.display());
                assert!(pack.rules.windows(2).all(|w| w[0].priority < w[1].priority));
            }
            Err(e) => panic!("{} should load:\n{e}", case.display()),
        }
    }
}

#[test]
fn contract_example_means_what_the_contract_says() {
    use egress_policy::model::*;
    let pack = egress_policy::load(&corpus("valid").join("contract-example.yaml")).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!((pack.version, pack.mode), (1, Mode::Monitor));
    assert_eq!(pack.dns.resolvers.len(), 2);
    assert_eq!((pack.dns.min_ttl, pack.dns.max_ttl, pack.dns.query_filter), (60, 86400, QueryFilter::Off));
    assert_eq!(pack.smartgroups["agentcore-runtime-subnet"].cidrs.len(), 2);
    assert_eq!(pack.webgroups["llm-providers"].domains[2], DomainPattern::AnyDepth("openai.azure.com".into()));
    let names: Vec<(&str, u16, Mode)> = pack.rules.iter().map(|r| (r.name.as_str(), r.priority, r.mode)).collect();
    assert_eq!(
        names,
        [
            ("allow-sanctioned-models", 20, Mode::Enforce),
            ("allow-dns-to-resolvers", 39, Mode::Monitor),
            ("deny-dns-exfil", 40, Mode::Monitor),
            ("default-deny", 1000, Mode::Monitor),
        ]
    );
    let dns = &pack.rules[1];
    assert_eq!(dns.destinations, [Destination::Resolvers]);
    assert_eq!(dns.ports, Some(vec![PortRange { lo: 53, hi: 53 }]));
    assert_eq!(pack.rules[3].ports, None);
    assert!(pack.rules.iter().all(|r| r.log));
    assert_eq!(pack.rules[0].location.line, 26);
}
