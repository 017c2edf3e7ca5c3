//! The block reader against serde-saphyr: where it answers, it must give
//! serde-saphyr's tree, on real policies and on text mutated to be wrong.

use super::block::parse;
use super::saphyr::parse as parse_full;
use crate::synth::Rng;

/// Every policy text of the repository, a synthetic pack and odd samples.
fn texts() -> Vec<(String, String)> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut texts: Vec<(String, String)> = Vec::new();
    for dir in ["policies", "policies/agentcore", "tests/policy-corpus/invalid", "tests/policy-corpus/valid"] {
        let mut files: Vec<_> =
            std::fs::read_dir(root.join(dir)).into_iter().flatten().flatten().map(|e| e.path()).collect();
        files.sort();
        for f in files {
            if let Ok(t) = std::fs::read_to_string(&f) {
                texts.push((f.display().to_string(), t));
            }
        }
    }
    let pack = crate::synth::with_webgroups(crate::synth::realistic_pack(60, 5), 60, 5);
    texts.push(("synth".into(), crate::pack_yaml::to_yaml(&pack)));
    for (i, sample) in SAMPLES.iter().enumerate() {
        texts.push((format!("sample {i}"), sample.to_string()));
    }
    texts
}

/// Shapes the reader must get right (or leave to serde-saphyr).
const SAMPLES: &[&str] = &[
    "a: 1\nb:\nc: [x, 'y''s', \"z\", [1, 2], {k: v, \"q\": 'w'}]\nd: {}\ne: []\n",
    "- a\n- b: 1\n  c: 2\n-\n  - x\n- \n- # note\n  y\n",
    "k:\n- a\n- b\nj: 1\n",
    "- ports:\n  - 443\n  name: x\n",
    "rules:\n  - name: a # comment\n    ports: [443, 8000-8100] # more\n    destination: { webgroup: w }\n",
    "a: http://x.example.com:80/p\nb: a,b\nc: a]b\nd: x#y\ne: 'a # b'\nf: -1\ng: -x\nh: ::1\ni: [::1, fd00::/64, 2001:db8::1]\n",
    "---\na: 1\n",
    "  a: 1\n  b: 2\n",
    "a:\n  b:\n    c: d\n  e: f\ng: h\n",
    "a: b\n  c\n",
    "a:\n  - b\n   - c\n",
    "a: [1,\n  2]\n",
    "a: 'x\n  y'\n",
    "a: \"x\\ty\"\n",
    "a: b: c\n",
    "- - a\n",
    "a: &x 1\nb: *x\n",
    "? a\n: b\n",
    "a: |\n  x\n",
    "a: 1\na: 2\n",
    "a: [a: b]\n",
    "{a: 1}\n",
    "[a, b]\n",
    "x\n",
    "\"a\": 1\n'b': 2\n",
    "a: [x, ]\n",
    "a:  \n  b: c\n",
    "a: null\nb: ~\nc: true\nd: False\ne: 0x1F\nf: 1.5\ng: 012\nh: 1e3\n",
    "- a\nb: 1\n",
    "a: 1\n b: 2\n",
    "# only a comment\n",
    "",
    "---\n",
    "a: b\n---\nc: d\n",
];

fn agree(name: &str, text: &str) -> bool {
    match parse(text) {
        Some(tree) => {
            assert_eq!(Ok(tree), parse_full(text), "{name}:\n{text}");
            true
        }
        None => false,
    }
}

#[test]
fn agrees_with_serde_saphyr() {
    let texts = texts();
    let mut answered = 0;
    for (name, text) in &texts {
        answered += usize::from(agree(name, text));
    }
    assert!(answered * 3 > texts.len() * 2, "the reader answers for most files: {answered} of {}", texts.len());
    for must in ["policies/baseline.yaml", "policies/lab.yaml", "synth"] {
        let (_, text) = texts.iter().find(|(n, _)| n.ends_with(must)).expect("present");
        assert!(parse(text).is_some(), "the reader answers for {must}");
    }
}

/// `text` with one random edit of the kinds that change YAML's reading:
/// indentation, indicators, quotes, comments, joined and repeated lines.
fn mutate(text: &str, rng: &mut Rng) -> String {
    const BITS: &[&str] = &[
        " ", "  ", ":", ": ", "- ", "-", "#", " #", "'", "\"", "[", "]", "{", "}", ",", "\n", "\n  ", "? ", "&a ",
        "*a", "!", "|", ">", "~", "0", "1.", "x",
    ];
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    if lines.is_empty() {
        lines.push(String::new());
    }
    let at = rng.index(lines.len());
    match rng.index(6) {
        0 => {
            let l = &mut lines[at];
            let i = rng.index(l.len() + 1);
            if l.is_char_boundary(i) {
                l.insert_str(i, BITS[rng.index(BITS.len())]);
            }
        }
        1 => {
            let l = &mut lines[at];
            let i = rng.index(l.len());
            if l.is_char_boundary(i) && l.is_char_boundary(i + 1) && i < l.len() {
                l.remove(i);
            }
        }
        2 => lines[at].insert_str(0, &" ".repeat(1 + rng.index(3))),
        3 => {
            let l = &mut lines[at];
            let n = l.len() - l.trim_start().len();
            l.drain(..n.min(1 + rng.index(2)));
        }
        4 => {
            let copy = lines[at].clone();
            lines.insert(rng.index(lines.len() + 1), copy);
        }
        _ => {
            let other = rng.index(lines.len());
            lines.swap(at, other);
        }
    }
    lines.join("\n") + "\n"
}

#[test]
fn agrees_with_serde_saphyr_on_mutated_text() {
    let texts: Vec<_> = texts().into_iter().filter(|(_, t)| t.len() < 8_000).collect();
    let mut rng = Rng::new(0x9e37_79b9_7f4a_7c15);
    let (mut tried, mut answered) = (0, 0);
    for round in 0..100 {
        for (name, text) in &texts {
            let mut t = text.clone();
            for _ in 0..=round % 3 {
                t = mutate(&t, &mut rng);
            }
            tried += 1;
            answered += usize::from(agree(&format!("{name} (mutated, round {round})"), &t));
        }
    }
    eprintln!("the reader answered {answered} of {tried} mutated texts");
    assert!(answered * 5 > tried, "the reader answered {answered} of {tried} mutated texts");
}
