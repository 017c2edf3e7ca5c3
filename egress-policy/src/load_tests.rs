//! A large file read in pieces says exactly what it says read whole: the
//! same pack, or the same errors at the same places, also when pieces are
//! found again further up or down the file after an edit.

use super::load_cut;
use crate::synth::Rng;
use crate::{pack_yaml::to_yaml, synth};

fn whole(text: &str) -> Result<crate::model::Pack, crate::PolicyErrors> {
    load_cut(&[("p.yaml".to_string(), text.to_string())], usize::MAX)
}

fn cut(text: &str) -> Result<crate::model::Pack, crate::PolicyErrors> {
    load_cut(&[("p.yaml".to_string(), text.to_string())], 0)
}

/// The synthetic pack as written, and in the indentless style.
fn bases() -> Vec<String> {
    let text = to_yaml(&synth::with_webgroups(synth::realistic_pack(200, 3), 200, 3));
    let (head, rules) = text.split_at(text.find("rules:\n").expect("rules") + "rules:\n".len());
    let indentless: String = rules.lines().map(|l| format!("{}\n", &l[2..])).collect();
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
    for base in bases() {
        assert!(super::chunks::cut(&base, 0).is_some_and(|p| p.len() > 4), "the base is cut");
        assert_eq!(cut(&base), whole(&base));
        assert!(whole(&base).is_ok());
        for round in 0..40 {
            let mut text = base.clone();
            for _ in 0..1 + round % 3 {
                text = edit(&text, &mut rng);
            }
            // Read after the base: unchanged pieces come from the cache.
            cut(&base).ok();
            let read = cut(&text);
            assert_eq!(read, whole(&text), "round {round}:\n{text}");
            edits += 1;
            were_cut += usize::from(super::chunks::cut(&text, 0).is_some());
            valid += usize::from(read.is_ok());
        }
    }
    eprintln!("{edits} edits: {were_cut} read in pieces, {valid} valid");
    assert!(were_cut * 2 > edits && valid * 10 > edits, "{edits} edits: {were_cut} read in pieces, {valid} valid");
}
