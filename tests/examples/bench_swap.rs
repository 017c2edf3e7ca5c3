//! `cargo xtask bench swap`: how long a policy change takes.
//!
//! Two measures per size (rules, domains) and layout:
//!
//! - swap (`p50_ms`, `p99_ms` and the steps): from the reload starting to
//!   read the files to the new pack enforced, through the agent's own
//!   reload path ([`Reloader::install`]: read, parse, validate, compile,
//!   fill the idle slot, flip), called directly.
//! - end to end (`e2e_p50_ms`, `e2e_p99_ms`): from the edited policy
//!   renamed into place to the new generation in the kernel's live slot
//!   (`EGV6_LIVE`, read from its pin), through the daemon's real watcher
//!   and reload task ([`watch::spawn`], [`reload_task::spawn`]) on a
//!   pinned datapath. In `file` the pack is written to a temporary file
//!   and renamed over the policy; in `dir` the whole set of files is
//!   pushed as a Kubernetes `ConfigMap` volume does (a new `..TIMESTAMP`
//!   directory, the `..data` symlink swapped by rename).
//!
//! For each size a realistic pack ([`synth::realistic_pack`] with
//! [`synth::with_webgroups`]), and for each shape a pack of that shape
//! (`shape` in the row), is written out and installed twice (not
//! measured: those installs fill empty slots). Layouts: `dir`, a directory
//! as large packs are kept (settings, one file per WebGroup, 100 rules per
//! file), and `file`, the whole pack in one file. Then each of `--swaps`
//! rounds edits the policy as an operator would (one rule's ports change,
//! one domain is swapped for another; in the swap measure of `dir` only
//! the files that changed are rewritten) and reloads it. Medians and p99
//! go to `target/bench/swap.json` as
//! `[{"shape": .., "rules": N, "domains": D, "p50_ms": x, "p99_ms": y, "e2e_p50_ms": .., "e2e_p99_ms": .., "layout": ..., ...}]`.
//!
//! Swaps are `--gap-ms` apart (default 50); a swap that comes sooner than
//! the previous swap's RCU grace period (5-20 ms here) waits for it.
//! Needs root.
//!
//! Options: `--quick` (fewer swaps, smaller sizes), `--swaps N`,
//! `--sizes 100:100,10000:10000`, `--shapes acl,fw,ipc,per-agent` (each
//! at `--shape-size N` rules, default 10,000: `egress_lab::shapes`, no
//! WebGroups), `--layouts dir,file`, `--gap-ms N`, `--out PATH`, `--trace`
//! (each swap's steps as it is made).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail, ensure};
use aya::maps::{Array, Map, MapData};
use egress_agent::daemon::reload::{Reloader, SwapTimings};
use egress_agent::daemon::{reload_task, watch};
use egress_agent::datapath::{Datapath, pin::PinDir};
use egress_agent::reporting::metrics::AgentStats;
use egress_common::LiveState;
use egress_lab::shapes::Shape;
use egress_policy::model::{DomainPattern, Pack, PortRange};
use egress_policy::pack_yaml::{to_yaml, to_yaml_files};
use egress_policy::synth;
use serde::Serialize;

struct Opts {
    sizes: Vec<(usize, usize)>,
    /// Shapes other than `synthetic`, each at `shape_size`.
    shapes: Vec<Shape>,
    /// Rules of each shape's pack (agents x 5 for `per-agent`).
    shape_size: usize,
    layouts: Vec<Layout>,
    swaps: usize,
    gap: Duration,
    out: PathBuf,
    /// Print each swap's steps as it is made.
    trace: bool,
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
        shapes: Shape::ALL.into_iter().filter(|&s| s != Shape::Synthetic).collect(),
        shape_size: 10_000,
        layouts: vec![Layout::Dir, Layout::File],
        swaps: 120,
        gap: Duration::from_millis(50),
        out: root.join("target/bench/swap.json"),
        trace: false,
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut val = || args.next().with_context(|| format!("{a} needs a value"));
        match a.as_str() {
            "--quick" => {
                o.sizes = vec![(100, 100), (1_000, 1_000)];
                o.shape_size = 1_000;
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
                    .collect::<Result<_>>()?;
            }
            "--sizes" => {
                o.sizes = val()?
                    .split(',')
                    .filter(|s| !s.is_empty())
                    .map(|s| {
                        let (r, d) = s.split_once(':').unwrap_or((s, "0"));
                        Ok((r.trim().parse()?, d.trim().parse()?))
                    })
                    .collect::<Result<_>>()?;
            }
            "--shapes" => {
                o.shapes = val()?.split(',').filter(|s| !s.is_empty()).map(Shape::parse).collect::<Result<_>>()?;
                o.shapes.retain(|&s| s != Shape::Synthetic);
            }
            "--shape-size" => o.shape_size = val()?.parse()?,
            "--out" => o.out = val()?.into(),
            "--trace" => o.trace = true,
            "-h" | "--help" => {
                println!(
                    "bench_swap [--quick] [--swaps N] [--sizes RULES:DOMAINS,...] [--shapes acl,fw,ipc,per-agent] [--shape-size RULES] [--layouts dir,file] [--gap-ms N] [--out PATH] [--trace]"
                );
                std::process::exit(0);
            }
            other => bail!("unknown argument `{other}` (try --help)"),
        }
    }
    ensure!(
        o.swaps >= 1 && o.shape_size >= 5 && o.sizes.iter().all(|&(r, _)| r >= 2),
        "need a swap and packs of 2+ rules (5+ for shapes)"
    );
    Ok(o)
}

/// One JSON row: the required keys first, then the steps.
#[derive(Serialize)]
struct Row {
    /// `synthetic`, or a shape of `egress_lab::shapes` (no WebGroups).
    shape: &'static str,
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
    /// From the rename of the edit into place to the new generation live.
    e2e_p50_ms: f64,
    e2e_p99_ms: f64,
    e2e_max_ms: f64,
    /// Reloads beyond one per push (0 when every push was read whole at once).
    e2e_extra_reloads: u32,
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// The `q` quantile (nearest rank) of `v`.
fn quantile(v: &[f64], q: f64) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let n = f64::from(u32::try_from(s.len()).unwrap_or(u32::MAX));
    let rank = ((q * n).ceil() as usize).clamp(1, s.len());
    s[rank - 1]
}

/// Round `i`'s edit of `base`: one rule's ports (of the first two rules
/// after the first that have ports) and one domain (if there are
/// WebGroups) change.
fn edited(base: &Pack, i: usize) -> Pack {
    let mut p = base.clone();
    if let Some(r) = p.rules.iter_mut().skip(1).filter(|r| r.ports.is_some()).nth(i % 2) {
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

/// The swap measure: `Reloader::install` called directly, `o.swaps` times.
fn swaps(
    dp: &Arc<Mutex<Datapath>>,
    base: &Pack,
    layout: Layout,
    o: &Opts,
    path: &Path,
) -> Result<(Vec<SwapTimings>, f64)> {
    let mut reloader = Reloader::new(dp.clone(), path.to_path_buf());
    let t = Instant::now();
    reloader.install().with_context(|| format!("first install of {}", path.display()))?;
    let first = t.elapsed();
    reloader.install().context("filling the second slot")?;
    let mut steps: Vec<SwapTimings> = Vec::with_capacity(o.swaps);
    let mut last_gen = 0;
    for i in 0..o.swaps {
        write_policy(&edited(base, i), layout, path)?;
        std::thread::sleep(o.gap);
        let done = reloader.install().with_context(|| format!("swap {i}"))?;
        ensure!(done.generation != last_gen, "swap {i} did not install a new generation");
        last_gen = done.generation;
        if o.trace {
            eprintln!("swap {i}: {:?}", done.timings);
        }
        steps.push(done.timings);
    }
    Ok((steps, ms(first)))
}

/// One row: `shape` at `size` (rules; agents for `per-agent`) with
/// `domains` spread over WebGroups (synthetic only), swapped in `layout`.
fn bench(shape: Shape, size: usize, domains: usize, layout: Layout, o: &Opts, dir: &Path) -> Result<Row> {
    let base = match shape {
        Shape::Synthetic => synth::with_webgroups(shape.pack(size, synth::DEFAULT_SEED)?, domains, synth::DEFAULT_SEED),
        other => other.pack(size, synth::DEFAULT_SEED)?,
    };
    let rules = base.rules.len();
    let path = dir.join(format!("pack-{}-{size}-{domains}-{layout:?}", shape.name()));
    let bytes = write_policy(&base, layout, &path)?;
    let pin_dir = PathBuf::from(format!("/sys/fs/bpf/egress-bench-swap-{}", std::process::id()));
    let pins = PinDir::prepare(&pin_dir).context("preparing a pin directory (run as root)")?;
    let live = pins.map(egress_common::maps::LIVE);
    let dp = Arc::new(Mutex::new(Datapath::load_pinned(pins).context("loading the datapath (run as root)")?));
    let measured = swaps(&dp, &base, layout, o, &path).and_then(|(steps, first)| {
        let e2e = end_to_end(&dp, &base, layout, o, &dir.join(format!("e2e-{size}-{domains}-{layout:?}")), &live)?;
        Ok((steps, first, e2e))
    });
    drop(dp);
    let _ = PinDir::existing(&pin_dir).remove_all();
    let _ = std::fs::remove_dir_all(&pin_dir);
    let (steps, first, (e2e, extra)) = measured?;
    let col = |f: fn(&SwapTimings) -> Duration| steps.iter().map(|s| ms(f(s))).collect::<Vec<f64>>();
    let total = col(SwapTimings::total);
    let install = col(|s| s.install);
    Ok(Row {
        shape: shape.name(),
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
        first_install_ms: first,
        yaml_bytes: bytes,
        e2e_p50_ms: quantile(&e2e, 0.5),
        e2e_p99_ms: quantile(&e2e, 0.99),
        e2e_max_ms: quantile(&e2e, 1.0),
        e2e_extra_reloads: extra,
    })
}

/// The kernel's live slot (`EGV6_LIVE`), opened from its pin.
fn open_live(pin: &Path) -> Result<Array<MapData, LiveState>> {
    let data = MapData::from_pin(pin).with_context(|| format!("opening {}", pin.display()))?;
    Ok(Array::try_from(Map::Array(data))?)
}

/// How often the live slot is read while waiting for a new generation.
const LIVE_POLL: Duration = Duration::from_micros(100);

/// The end-to-end measure: edits pushed by rename, picked up by the
/// daemon's watcher and reload task, timed to the new generation live.
/// Returns the times (ms) and the reloads beyond one per push.
fn end_to_end(
    dp: &Arc<Mutex<Datapath>>,
    base: &Pack,
    layout: Layout,
    o: &Opts,
    dir: &Path,
    live_pin: &Path,
) -> Result<(Vec<f64>, u32)> {
    let mut push = Push::new(layout, dir, base)?;
    let seen = watch::fingerprint(&push.policy);
    let mut reloader = Reloader::new(dp.clone(), push.policy.clone());
    reloader.install().context("installing the e2e layout's pack")?;
    let stats = Arc::new(AgentStats::default());
    let (requests, thread) = reload_task::spawn(reloader, stats.clone())?;
    let watcher = watch::spawn(push.policy.clone(), seen, requests)?;
    let live = open_live(live_pin)?;
    let generation = || live.get(&0, 0).map(|l| l.generation);
    let mut times = Vec::with_capacity(o.swaps);
    let mut extra = 0;
    let outcome = (|| -> Result<()> {
        // Whatever the watcher's first look brings, settled.
        std::thread::sleep(o.gap.max(Duration::from_millis(200)));
        for i in 0..o.swaps {
            let before = generation()?;
            push.prepare(&edited(base, i))?;
            std::thread::sleep(o.gap);
            let t0 = Instant::now();
            push.publish()?;
            let now = loop {
                let g = generation()?;
                if g != before {
                    break g;
                }
                ensure!(t0.elapsed() < Duration::from_secs(10), "push {i} was not enforced within 10 s");
                std::thread::sleep(LIVE_POLL);
            };
            times.push(ms(t0.elapsed()));
            push.clean()?;
            // A push read in two reloads shows as a second generation.
            std::thread::sleep(Duration::from_millis(5));
            extra += u32::from(generation()? != now);
        }
        Ok(())
    })();
    drop(watcher);
    let _ = thread.join();
    outcome?;
    let failed = stats.reloads_failed.load(std::sync::atomic::Ordering::Relaxed);
    ensure!(failed == 0, "{failed} reloads failed in the e2e measure");
    Ok((times, extra))
}

/// Pushing an edited policy in one atomic step.
struct Push {
    layout: Layout,
    /// What the agent is pointed at.
    policy: PathBuf,
    /// `dir`: the `ConfigMap` volume; versions pushed so far.
    root: PathBuf,
    version: usize,
}

impl Push {
    /// Writes `base` in the layout's push form.
    fn new(layout: Layout, root: &Path, base: &Pack) -> Result<Self> {
        std::fs::create_dir_all(root)?;
        let policy = match layout {
            Layout::File => root.join("pack.yaml"),
            Layout::Dir => root.to_path_buf(),
        };
        let mut push = Push { layout, policy, root: root.to_path_buf(), version: 0 };
        push.prepare(base)?;
        push.publish()?;
        if layout == Layout::Dir {
            // The ConfigMap's top-level links, made once.
            for (name, _) in to_yaml_files(base, RULES_PER_FILE) {
                std::os::unix::fs::symlink(format!("..data/{name}"), root.join(&name))?;
            }
        }
        Ok(push)
    }

    fn version_dir(&self, v: usize) -> PathBuf {
        self.root.join(format!("..v{v}"))
    }

    /// Everything but the atomic step: the new text or files written aside.
    fn prepare(&mut self, pack: &Pack) -> Result<()> {
        self.version += 1;
        match self.layout {
            Layout::File => std::fs::write(self.root.join("pack.yaml.tmp"), to_yaml(pack))?,
            Layout::Dir => {
                let dir = self.version_dir(self.version);
                std::fs::create_dir_all(&dir)?;
                for (name, text) in to_yaml_files(pack, RULES_PER_FILE) {
                    std::fs::write(dir.join(name), text)?;
                }
                let _ = std::fs::remove_file(self.root.join("..data_tmp"));
                std::os::unix::fs::symlink(format!("..v{}", self.version), self.root.join("..data_tmp"))?;
            }
        }
        Ok(())
    }

    /// The atomic step: a rename.
    fn publish(&self) -> Result<()> {
        match self.layout {
            Layout::File => std::fs::rename(self.root.join("pack.yaml.tmp"), &self.policy)?,
            Layout::Dir => std::fs::rename(self.root.join("..data_tmp"), self.root.join("..data"))?,
        }
        Ok(())
    }

    /// The version replaced, removed (as kubelet does).
    fn clean(&self) -> Result<()> {
        if self.layout == Layout::Dir && self.version > 1 {
            std::fs::remove_dir_all(self.version_dir(self.version - 1))?;
        }
        Ok(())
    }
}

fn main() -> Result<()> {
    let o = opts()?;
    let dir = tempdir()?;
    let mut rows = Vec::new();
    let shaped = o.shapes.iter().map(|&s| (s, if s == Shape::PerAgent { o.shape_size / 5 } else { o.shape_size }, 0));
    let runs: Vec<(Shape, usize, usize)> =
        o.sizes.iter().map(|&(r, d)| (Shape::Synthetic, r, d)).chain(shaped).collect();
    for &layout in &o.layouts {
        for &(shape, size, domains) in &runs {
            eprintln!("bench_swap: {} {size}, {domains} domains, {layout:?}, {} swaps ...", shape.name(), o.swaps);
            let row = bench(shape, size, domains, layout, &o, &dir);
            let _ = std::fs::remove_dir_all(&dir).and_then(|()| std::fs::create_dir_all(&dir));
            rows.push(row?);
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    print_rows(&rows, o.swaps);
    if let Some(parent) = o.out.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(&o.out, serde_json::to_string_pretty(&rows)?)?;
    println!("wrote {}", o.out.display());
    Ok(())
}

/// The table of rows and the targets met or missed.
fn print_rows(rows: &[Row], swaps: usize) {
    println!("\nPolicy swap: reading the files to the new pack enforced ({swaps} swaps per size)");
    println!(
        "{:>4} {:>9} {:>6} {:>7} | {:>8} {:>8} {:>8} | {:>8} {:>8} {:>8} {:>8} | {:>9} {:>8} | {:>8} {:>8} {:>8} {:>5}",
        "",
        "shape",
        "rules",
        "domains",
        "p50",
        "p99",
        "max",
        "load",
        "compile",
        "install",
        "inst p99",
        "first",
        "YAML KiB",
        "e2e p50",
        "e2e p99",
        "e2e max",
        "extra"
    );
    for r in rows {
        println!(
            "{:>4} {:>9} {:>6} {:>7} | {:>6.2}ms {:>6.2}ms {:>6.2}ms | {:>6.2}ms {:>6.2}ms {:>6.2}ms {:>6.2}ms | {:>7.1}ms {:>8} | {:>6.2}ms {:>6.2}ms {:>6.2}ms {:>5}",
            format!("{:?}", r.layout).to_lowercase(),
            r.shape,
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
            r.yaml_bytes / 1024,
            r.e2e_p50_ms,
            r.e2e_p99_ms,
            r.e2e_max_ms,
            r.e2e_extra_reloads
        );
    }
    println!("  load/compile/install: medians of each step; first: the first install into empty slots (not a swap).");
    println!("  e2e: the edit renamed into place to the new generation live, through the watcher and reload task;");
    println!("  extra: pushes that took more than one reload.");
    for (rules, limit, e2e_limit) in [(100, 10.0, 20.0), (10_000, 100.0, 120.0)] {
        for r in rows.iter().filter(|r| r.rules / 100 == rules / 100) {
            let verdict = |ok: bool| if ok { "meets" } else { "MISSES" };
            println!(
                "  target at {} {rules} rules ({:?}): swap p99 <= {limit} ms: {:.2} ms, {}; e2e p99 <= {e2e_limit} ms: {:.2} ms, {}",
                r.shape,
                r.layout,
                r.p99_ms,
                verdict(r.p99_ms <= limit),
                r.e2e_p99_ms,
                verdict(r.e2e_p99_ms <= e2e_limit)
            );
        }
    }
}

fn tempdir() -> Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("egress-bench-swap-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}
