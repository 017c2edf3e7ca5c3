//! A large file read in pieces says exactly what it says read whole: the
//! same pack, or the same errors at the same places, also when pieces are
//! found again further up or down the file after an edit.

use super::ParseCache;
use crate::synth::Rng;
use crate::{pack_yaml::to_yaml, synth};

/// `text` read whole, afresh.
fn whole(text: &str) -> Result<crate::model::Pack, crate::PolicyErrors> {
    ParseCache::new().load_cut(&[("p.yaml".to_string(), text.to_string())], usize::MAX, (super::ListSource::Nowhere, 0))
}

/// `text` read in pieces, through `cache`.
fn cut(cache: &mut ParseCache, text: &str) -> Result<crate::model::Pack, crate::PolicyErrors> {
    cache.load_cut(&[("p.yaml".to_string(), text.to_string())], 0, (super::ListSource::Nowhere, 0))
}

/// The synthetic pack as written, and in the indentless style.
fn bases() -> Vec<String> {
    let text = to_yaml(&synth::with_webgroups(synth::realistic_pack(200, 3), 200, 3));
    let (head, rules) = text.split_at(text.find("rules:\n").expect("rules") + "rules:\n".len());
    let indentless: String = rules.lines().flat_map(|l| [&l[2..], "\n"]).collect();
    vec![text.clone(), format!("# a pack\n{head}{indentless}")]
}

/// One edit an operator (or a mistake) makes, by whole lines.
fn edit(text: &str, rng: &mut Rng) -> String {
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    let at = rng.index(lines.len());
    match rng.index(8) {
        0 => lines.insert(at, "# moved".into()),
        1 => lines.insert(at, String::new()),
        2 => {
            lines.remove(at);
        }
        3 => {
            let copy = lines[at].clone();
            lines.insert(rng.index(lines.len()), copy);
        }
        4 => {
            let other = rng.index(lines.len());
            lines.swap(at, other);
        }
        5 => lines[at] = lines[at].replacen(|c: char| c.is_ascii_digit(), "7", 1),
        6 => lines[at].insert(0, ' '),
        _ => {
            // A whole new rule before the first rule at or after `at`.
            if let Some(i) = (at..lines.len()).find(|&i| lines[i].trim_start().starts_with("- name:")) {
                let indent = lines[i].len() - lines[i].trim_start().len();
                let pad = " ".repeat(indent);
                for (k, l) in
                    ["- name: inserted", "  priority: 7", "  destination: any", "  action: deny"].iter().enumerate()
                {
                    lines.insert(i + k, format!("{pad}{l}"));
                }
            }
        }
    }
    lines.join("\n") + "\n"
}

#[test]
fn pieces_read_as_the_whole_file() {
    let mut rng = Rng::new(0x2545_f491_4f6c_dd1d);
    let (mut edits, mut were_cut, mut valid) = (0, 0, 0);
    let mut cache = ParseCache::new();
    for base in bases() {
        assert!(super::chunks::cut(&base, 0).is_some_and(|p| p.len() > 4), "the base is cut");
        assert_eq!(cut(&mut cache, &base), whole(&base));
        assert!(whole(&base).is_ok());
        for round in 0..40 {
            let mut text = base.clone();
            for _ in 0..=(round % 3) {
                text = edit(&text, &mut rng);
            }
            // Read after the base: unchanged pieces come from the cache.
            cut(&mut cache, &base).ok();
            let read = cut(&mut cache, &text);
            assert_eq!(read, whole(&text), "round {round}:\n{text}");
            edits += 1;
            were_cut += usize::from(super::chunks::cut(&text, 0).is_some());
            valid += usize::from(read.is_ok());
        }
    }
    eprintln!("{edits} edits: {were_cut} read in pieces, {valid} valid");
    assert!(were_cut * 2 > edits && valid * 10 > edits, "{edits} edits: {were_cut} read in pieces, {valid} valid");
}

#[test]
fn what_a_load_no_longer_needs_waits_for_its_owner() {
    let mut cache = ParseCache::new();
    let files = |text: &str| vec![("a.yaml".to_string(), text.to_string())];
    cache.load_sources(&files("version: 1\n")).ok();
    assert!(cache.take_retired().is_empty(), "the first load replaces nothing");
    cache.load_sources(&files("version: 1\n")).ok();
    assert!(cache.take_retired().is_empty(), "an unchanged file is reused");
    cache.load_sources(&files("version: 1\nmode: enforce\n")).ok();
    cache.load_sources(&files("version: 1\nmode: monitor\n")).ok();
    let retired = cache.take_retired();
    assert_eq!(retired.0.len(), 2, "both loads' leftovers are kept until taken");
    assert!(cache.take_retired().is_empty(), "and handed over once");
}
