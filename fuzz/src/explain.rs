//! `explain`'s inputs: the command line's words (source, destination
//! address or name, protocol, port, connection name) against the reference
//! `AgentCore` pack. Words it takes must give a walk that renders and, with
//! a name, whose two decisions agree with the reference evaluator and the
//! compiled tables (the self-check `explain` runs); words it refuses must
//! say why. Nothing may panic.

use std::sync::OnceLock;

use egress_policy::explain::{Question, explain, render};
use egress_policy::explain_named::{Check, check, explain_named, render_named};
use egress_policy::model::Pack;

/// The pack every input is explained against.
fn pack() -> &'static Pack {
    static PACK: OnceLock<Pack> = OnceLock::new();
    PACK.get_or_init(|| {
        // Read from the checkout: its groups name list files beside it.
        let dir = std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../policies/agentcore"));
        let mut pack = egress_policy::load(dir).expect("the reference pack loads");
        pack.gateway = crate::policy::gateway().to_vec();
        pack
    })
}

/// One input: lines `SRC`, `DST`, `PROTO`, `PORT` (empty: none) and
/// optionally `NAME`.
pub fn run(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let mut words = text.split('\n');
    let (Some(src), Some(dst), Some(proto), Some(port)) = (words.next(), words.next(), words.next(), words.next())
    else {
        return;
    };
    let Ok(src) = src.parse() else { return };
    let port = if port.is_empty() {
        None
    } else {
        match port.parse() {
            Ok(p) => Some(p),
            Err(_) => return,
        }
    };
    let q = match Question::from_words(src, dst, proto, port) {
        Ok(q) => q,
        Err(why) => {
            assert!(!why.is_empty(), "a refusal says why");
            return;
        }
    };
    let pack = pack();
    assert!(!render(pack, &q, &explain(pack, &q)).is_empty(), "the walk renders");
    let Some(name) = words.next() else { return };
    let e = match explain_named(pack, &q, name) {
        Ok(e) => e,
        Err(why) => {
            assert!(!why.to_string().is_empty(), "a refusal says why");
            return;
        }
    };
    assert!(!render_named(pack, &q, &e).is_empty(), "the walk renders");
    if let Check::Disagrees(how) = check(pack, &q, &e) {
        panic!("explain disagrees with itself: {how}");
    }
}

#[cfg(test)]
mod tests {
    /// Every seed runs clean.
    #[test]
    fn seeds() {
        for (path, data) in crate::seeds("explain") {
            super::run(&data);
            eprintln!("{} ran", path.display());
        }
    }
}
