//! The dispatcher's trees, and the event reader held to serde-saphyr's.

use super::{Kind, Node, events, parse, saphyr};

fn map(n: &Node) -> &[(Node, Node)] {
    match &n.kind {
        Kind::Map(m) => m,
        other => panic!("not a map: {other:?}"),
    }
}

#[test]
fn scalars_keep_types_text_and_positions() {
    let root = parse("a: 1\nb: off\nc: [10.10.1.0/24, \"fd00::/64\", 0x10, 1.5]\n").expect("parses");
    let m = map(&root);
    assert_eq!((m[0].1.line, m[0].1.column), (1, 4));
    assert_eq!(m[0].1.kind, Kind::Int(1, "1".into()));
    // Strict YAML 1.2 booleans: `off` stays a string.
    assert_eq!(m[1].1.kind, Kind::Str("off".into()));
    let Kind::Seq(items) = &m[2].1.kind else { panic!("not a list") };
    assert_eq!(items[0].kind, Kind::Str("10.10.1.0/24".into()));
    assert_eq!(items[1].kind, Kind::Str("fd00::/64".into()));
    assert_eq!((items[1].line, items[1].column), (3, 19));
    assert_eq!(items[2].kind, Kind::Int(16, "0x10".into()));
    assert_eq!(items[3].kind, Kind::Float(1.5, "1.5".into()));
}

#[test]
fn duplicate_keys_are_kept_for_the_caller() {
    let root = parse("a: 1\na: 2\n").expect("parses");
    assert_eq!(map(&root).len(), 2);
}

#[test]
fn empty_documents_are_null() {
    assert_eq!(parse("").expect("parses").kind, Kind::Null);
    assert_eq!(parse("# comment only\n").expect("parses").kind, Kind::Null);
}

#[test]
fn aliases_take_the_anchored_text() {
    let root = parse("x: &a 0x1\ny: *a\n").expect("parses");
    assert_eq!(map(&root)[1].1.kind, Kind::Int(1, "0x1".into()));
}

#[test]
fn syntax_errors_have_positions() {
    let e = parse("a: [1, 2\n").expect_err("unclosed");
    assert_eq!((e.line, e.column), (1, 4));
    assert!(e.message.contains("bracket"), "{}", e.message);
}

/// The event reader, where it answers, gives serde-saphyr's tree: on every
/// policy file of the repository (examples and the invalid corpus) and
/// on synthetic packs, and on scalars chosen to be awkward.
#[test]
fn event_reader_agrees_with_serde_saphyr() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut texts: Vec<(String, String)> = Vec::new();
    for dir in ["policies", "tests/policy-corpus", "tests/policy-corpus/invalid", "tests/policy-corpus/valid"] {
        for e in std::fs::read_dir(root.join(dir)).into_iter().flatten().flatten() {
            if let Ok(t) = std::fs::read_to_string(e.path()) {
                texts.push((e.path().display().to_string(), t));
            }
        }
    }
    let pack = crate::synth::with_webgroups(crate::synth::realistic_pack(300, 5), 300, 5);
    texts.push(("synth".into(), crate::pack_yaml::to_yaml(&pack)));
    let awkward = r#"a: [0, 00, 007, -0, 1.0, 01.5, .5, 1e3, 1e-3, 1_000, 0o17, 0b11, 0x1F, +1, -1, .inf, -.Inf, .NaN,                        8000-8100, "443", '1', 10.0.0.1, 10.0.0.0/8, "fd00::/64", yes, no, on, off, True, FALSE, ~, null,                        12abc, 1.2.3, -, '', x, 2001:db8::1]
b:
c: |
  text
"#;
    texts.push(("awkward".into(), awkward.into()));
    let plain = "a: [0, -12, 443, 1.5, -0.25, 0x1F, 8000-8100, \"443\", '1', 10.0.0.1, 10.0.0.0/8, fd00::/64, yes, no,\n  \
                 on, off, True, FALSE, ~, null, Null, '', x, \"2001:db8::1\", api.example.com, \"*.a.b\"]\nb:\nc: |\n  t\n";
    assert!(events::parse(plain).is_some(), "the event reader answers for plain policy text");
    texts.push(("plain".into(), plain.into()));
    let mut fast = 0;
    for (name, text) in &texts {
        let full = saphyr::parse(text);
        if let Some(tree) = events::parse(text) {
            fast += 1;
            assert_eq!(Ok(tree), full, "{name}");
        }
    }
    assert!(fast * 2 > texts.len(), "the event reader answers for most files: {fast} of {}", texts.len());
}
