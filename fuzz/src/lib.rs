//! Fuzz targets of the pure crates, each a function of the fuzzer's bytes
//! that panics on a broken invariant (libFuzzer reports the input). The
//! libFuzzer entry points in `fuzz_targets/` call them; `cargo xtask fuzz`
//! builds those with coverage instrumentation and runs them over the seed
//! corpora in `seeds/`, which this crate's tests also run every input of.

pub mod explain;
pub mod policy;
pub mod probes;

/// The seed inputs of `target` (`seeds/TARGET/`), with their paths.
#[cfg(test)]
fn seeds(target: &str) -> Vec<(std::path::PathBuf, Vec<u8>)> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("seeds").join(target);
    let mut out: Vec<_> = std::fs::read_dir(&dir)
        .expect("seed directory")
        .map(|e| e.expect("entry").path())
        .map(|p| {
            let data = std::fs::read(&p).expect("seed");
            (p, data)
        })
        .collect();
    out.sort();
    assert!(!out.is_empty(), "seeds in {}", dir.display());
    out
}
