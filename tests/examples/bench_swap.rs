//! `cargo xtask bench swap`: how long a policy change takes, from the
//! reload starting to read the files to the new pack enforced, through the
//! agent's own reload path ([`egress_agent::reload::install_from`]: read,
//! parse, validate, compile, fill the idle slot, flip).
//!
//! For each size (rules, domains) a realistic pack ([`synth::realistic_pack`]
//! with [`synth::with_webgroups`]) is written out and installed twice (not
//! measured: those installs fill empty slots). Layouts: `dir`, a directory
//! as large packs are kept (settings, one file per WebGroup, 100 rules per
//! file), and `file`, the whole pack in one file. Then each of `--swaps`
//! rounds edits the policy as an operator would (one rule's ports change,
//! one domain is swapped for another; in `dir` only the files that changed
//! are rewritten) and reloads it. Medians and p99 of the whole reload, and
//! of each step, go to `target/bench/swap.json` as
//! `[{"rules": N, "domains": D, "p50_ms": x, "p99_ms": y, "layout": ..., ...}]`.
//!
//! Swaps are `--gap-ms` apart (default 50): the agent's watcher debounces
//! changes for 200 ms, so real reloads never come closer; a swap that comes
//! sooner than the previous swap's RCU grace period (5-20 ms here) waits
//! for it. The debounce itself comes before the reload and is not counted.
//! Needs root.
//!
//! Options: `--quick` (fewer swaps, smaller sizes), `--swaps N`,
//! `--sizes 100:100,10000:10000`, `--layouts dir,file`, `--gap-ms N`,
//! `--out PATH`.

use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail, ensure};
use egress_agent::datapath::Datapath;
use egress_agent::reload::{SwapTimings, install_from};
use egress_policy::model::{DomainPattern, Pack, PortRange};
use egress_policy::pack_yaml::{to_yaml, to_yaml_files};
use egress_policy::synth;
use serde::Serialize;

struct Opts {
    sizes: Vec<(usize, usize)>,
    layouts: Vec<Layout>,
    swaps: usize,
    gap: Duration,
    out: PathBuf,
}

#[derive(Clone, Copy, PartialEq, Debug, Serialize)]
#[serde(rename_all = "lowercase")]
enum Layout {
    Dir,
    File,
}

/// Rules per file in the `dir` layout.
const RULES_PER_FILE: usize = 100;

fn opts() -> Result<Opts> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).parent().context("workspace root")?.to_path_buf();
    let mut o = Opts {
        sizes: vec![(100, 100), (1_000, 1_000), (10_000, 10_000)],
        layouts: vec![Layout::Dir, Layout::File],
        swaps: 120,
        gap: Duration::from_millis(50),
        out: root.join("target/bench/swap.json"),
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut val = || args.next().with_context(|| format!("{a} needs a value"));
        match a.as_str() {
            "--quick" => {
                o.sizes = vec![(100, 100), (1_000, 1_000)];
                o.swaps = 20;
            }
            "--swaps" => o.swaps = val()?.parse()?,
            "--gap-ms" => o.gap = Duration::from_millis(val()?.parse()?),
            "--layouts" => {
                o.layouts = val()?
                    .split(',')
                    .map(|l| match l.trim() {
                        "dir" => Ok(Layout::Dir),
                        "file" => Ok(Layout::File),
                        other => bail!("unknown layout `{other}` (dir, file)"),
                    })
                    .collect::<Result<_>>()?
            }
            "--sizes" => {
                o.sizes = val()?
                    .split(',')
                    .map(|s| {
                        let (r, d) = s.split_once(':').unwrap_or((s, "0"));
                        Ok((r.trim().parse()?, d.trim().parse()?))
                    })
                    .collect::<Result<_>>()?
            }
            "--out" => o.out = val()?.into(),
            "-h" | "--help" => {
                println!(
                    "bench_swap [--quick] [--swaps N] [--sizes RULES:DOMAINS,...] [--layouts dir,file] [--gap-ms N] [--out PATH]"
                );
                std::process::exit(0);
            }
            other => bail!("unknown argument `{other}` (try --help)"),
        }
    }
    ensure!(o.swaps >= 1 && o.sizes.iter().all(|&(r, _)| r >= 2), "need a swap and packs of 2+ rules");
    Ok(o)
}

/// One JSON row: the required keys first, then the steps.
#[derive(Serialize)]
struct Row {
    rules: usize,
    domains: usize,
    p50_ms: f64,
    p99_ms: f64,
    layout: Layout,
    max_ms: f64,
    swaps: usize,
    load_p50_ms: f64,
    compile_p50_ms: f64,
    install_p50_ms: f64,
    install_p99_ms: f64,
    first_install_ms: f64,
    yaml_bytes: usize,
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// The `q` quantile (nearest rank) of `v`.
fn quantile(v: &[f64], q: f64) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let rank = ((q * s.len() as f64).ceil() as usize).clamp(1, s.len());
    s[rank - 1]
}

/// Round `i`'s edit of `base`: one rule's ports and one domain change.
fn edited(base: &Pack, i: usize) -> Pack {
    let mut p = base.clone();
    let rule = 1 + i % 2; // rules 1 and 2, never the default rule
    if let Some(r) = p.rules.get_mut(rule).filter(|r| r.ports.is_some()) {
        let port = 20_000 + i as u16;
        r.ports = Some(vec![PortRange { lo: port, hi: port }]);
    }
    let groups = p.webgroups.len();
    if let Some(g) = p.webgroups.values_mut().nth(i % groups.max(1)) {
        g.domains.pop();
        g.domains.push(DomainPattern::Exact(format!("swap-{i}.example.com")));
    }
    p
}

/// Writes `pack` at `path` in `layout`, rewriting only files whose text
/// changed. Returns the bytes of YAML in the policy.
fn write_policy(pack: &Pack, layout: Layout, path: &std::path::Path) -> Result<usize> {
    match layout {
        Layout::File => {
            let text = to_yaml(pack);
            std::fs::write(path, &text)?;
            Ok(text.len())
        }
        Layout::Dir => {
            std::fs::create_dir_all(path)?;
            let mut bytes = 0;
            for (name, text) in to_yaml_files(pack, RULES_PER_FILE) {
                let file = path.join(name);
                bytes += text.len();
                if std::fs::read_to_string(&file).ok().as_deref() != Some(text.as_str()) {
                    std::fs::write(&file, text)?;
                }
            }
            Ok(bytes)
        }
    }
}

fn bench(rules: usize, domains: usize, layout: Layout, o: &Opts, dir: &std::path::Path) -> Result<Row> {
    let base = synth::with_webgroups(synth::realistic_pack(rules, synth::DEFAULT_SEED), domains, synth::DEFAULT_SEED);
    let path = dir.join(format!("pack-{rules}-{domains}-{layout:?}"));
    let bytes = write_policy(&base, layout, &path)?;
    let dp = Mutex::new(Datapath::load().context("loading the datapath (run as root)")?);
    let t = Instant::now();
    install_from(&dp, &path).with_context(|| format!("first install of {}", path.display()))?;
    let first = t.elapsed();
    install_from(&dp, &path).context("filling the second slot")?;
    let mut steps: Vec<SwapTimings> = Vec::with_capacity(o.swaps);
    let mut last_gen = 0;
    for i in 0..o.swaps {
        write_policy(&edited(&base, i), layout, &path)?;
        std::thread::sleep(o.gap);
        let done = install_from(&dp, &path).with_context(|| format!("swap {i}"))?;
        ensure!(done.generation != last_gen, "swap {i} did not install a new generation");
        last_gen = done.generation;
        steps.push(done.timings);
    }
    let col = |f: fn(&SwapTimings) -> Duration| steps.iter().map(|s| ms(f(s))).collect::<Vec<f64>>();
    let total = col(SwapTimings::total);
    let install = col(|s| s.install);
    Ok(Row {
        rules,
        domains,
        p50_ms: quantile(&total, 0.5),
        p99_ms: quantile(&total, 0.99),
        layout,
        max_ms: quantile(&total, 1.0),
        swaps: o.swaps,
        load_p50_ms: quantile(&col(|s| s.load), 0.5),
        compile_p50_ms: quantile(&col(|s| s.compile), 0.5),
        install_p50_ms: quantile(&install, 0.5),
        install_p99_ms: quantile(&install, 0.99),
        first_install_ms: ms(first),
        yaml_bytes: bytes,
    })
}

fn main() -> Result<()> {
    let o = opts()?;
    let dir = tempdir()?;
    let mut rows = Vec::new();
    for &layout in &o.layouts {
        for &(rules, domains) in &o.sizes {
            eprintln!("bench_swap: {rules} rules, {domains} domains, {layout:?}, {} swaps ...", o.swaps);
            let row = bench(rules, domains, layout, &o, &dir);
            let _ = std::fs::remove_dir_all(&dir).and_then(|_| std::fs::create_dir_all(&dir));
            rows.push(row?);
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    println!("\nPolicy swap: reading the files to the new pack enforced ({} swaps per size)", o.swaps);
    println!(
        "{:>4} {:>6} {:>7} | {:>8} {:>8} {:>8} | {:>8} {:>8} {:>8} {:>8} | {:>9} {:>8}",
        "", "rules", "domains", "p50", "p99", "max", "load", "compile", "install", "inst p99", "first", "YAML KiB"
    );
    for r in &rows {
        println!(
            "{:>4} {:>6} {:>7} | {:>6.2}ms {:>6.2}ms {:>6.2}ms | {:>6.2}ms {:>6.2}ms {:>6.2}ms {:>6.2}ms | {:>7.1}ms {:>8}",
            format!("{:?}", r.layout).to_lowercase(),
            r.rules,
            r.domains,
            r.p50_ms,
            r.p99_ms,
            r.max_ms,
            r.load_p50_ms,
            r.compile_p50_ms,
            r.install_p50_ms,
            r.install_p99_ms,
            r.first_install_ms,
            r.yaml_bytes / 1024
        );
    }
    println!("  load/compile/install: medians of each step; first: the first install into empty slots (not a swap).");
    for (rules, limit) in [(100, 10.0), (10_000, 100.0)] {
        for r in rows.iter().filter(|r| r.rules == rules) {
            let verdict = if r.p99_ms <= limit { "meets" } else { "MISSES" };
            println!("  target at {rules} rules ({:?}): p99 <= {limit} ms: {:.2} ms, {verdict}", r.layout, r.p99_ms);
        }
    }
    if let Some(parent) = o.out.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(&o.out, serde_json::to_string_pretty(&rows)?)?;
    println!("wrote {}", o.out.display());
    Ok(())
}

fn tempdir() -> Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("egress-bench-swap-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}
