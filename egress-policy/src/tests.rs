//! Loading as a whole: merging files, directories (`ConfigMap` layout), error
//! collection and the summary. Per-rule failures live in the corpus under
//! `tests/policy-corpus/` at the workspace root.

use std::path::{Path, PathBuf};

use super::model::*;
use super::{PolicyErrors, load, load_sources, summary};

fn src(files: &[(&str, &str)]) -> Vec<(String, String)> {
    files.iter().map(|(n, t)| (n.to_string(), t.to_string())).collect()
}

fn ok(files: &[(&str, &str)]) -> Pack {
    load_sources(&src(files)).unwrap_or_else(|e| panic!("should load:\n{e}"))
}

fn errs(files: &[(&str, &str)]) -> Vec<String> {
    match load_sources(&src(files)) {
        Ok(p) => panic!("should fail, got {p:?}"),
        Err(PolicyErrors(e)) => e.iter().map(ToString::to_string).collect(),
    }
}

const GROUPS: &str = "smartgroups:\n  run:\n    cidrs: [10.10.1.0/24]\n";

#[test]
fn merges_files_and_sorts_rules() {
    let pack = ok(&[
        ("a.yaml", "version: 1\nmode: enforce\ndns: {resolvers: [10.0.0.2], query_filter: false}\n"),
        ("b.yaml", GROUPS),
        (
            "c.yaml",
            "rules:\n  - {name: z, priority: 9, source: run, destination: resolvers, ports: [53, \"53\", 52], action: permit, mode: monitor}\n  - {name: a, priority: 2, source: [run], destination: [{cidrs: [\"fd00::/8\", 1.2.3.4]}], protocol: udp, action: deny, log: false}\n",
        ),
    ]);
    assert_eq!(pack.mode, Mode::Enforce);
    assert_eq!(pack.dns.query_filter, QueryFilter::Off);
    let names: Vec<&str> = pack.rules.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["a", "z"]);
    let (a, z) = (&pack.rules[0], &pack.rules[1]);
    assert_eq!((a.mode, z.mode), (Mode::Enforce, Mode::Monitor));
    assert_eq!(z.ports, Some(vec![PortRange { lo: 52, hi: 53 }]));
    assert_eq!(a.source, Source::Groups(vec!["run".into()]));
    let cidrs = vec!["fd00::/8".parse().expect("cidr"), "1.2.3.4/32".parse().expect("cidr")];
    assert_eq!(a.destinations, [Destination::Cidrs(cidrs)]);
    assert!(!a.log && z.log);
    assert_eq!(a.location, Location { file: "c.yaml".into(), line: 3, column: 5 });
}

#[test]
fn collects_errors_of_all_files_in_file_order() {
    let e = errs(&[
        ("a.yaml", "version: 1\nmode: strict\n"),
        ("b.yaml", "rules: [\n"),
        ("c.yaml", "smartgroups:\n  g:\n    cidrs: [10.0.0.1/8]\n    extra: 1\n"),
    ]);
    assert_eq!(e.len(), 4, "{e:#?}");
    assert!(e[0].starts_with("a.yaml:2:7: invalid `mode`"), "{}", e[0]);
    assert!(e[1].starts_with("b.yaml:1:8: invalid YAML"), "{}", e[1]);
    assert!(e[2].starts_with("c.yaml:3:13: `10.0.0.1/8` has host bits set"), "{}", e[2]);
    assert!(e[3].starts_with("c.yaml:4:5: unknown field `extra`"), "{}", e[3]);
}

#[test]
fn names_both_places() {
    let e = errs(&[("a.yaml", "version: 1\n"), ("b.yaml", "version: 1\n")]);
    assert_eq!(e, ["b.yaml:1:1: `version` already set at a.yaml:1:1: set it in one file only"]);
    let rule =
        |n: &str, p: u16| format!("  - {{name: {n}, priority: {p}, source: any, destination: any, action: deny}}\n");
    let e = errs(&[
        ("a.yaml", &format!("version: 1\nrules:\n{}", rule("x", 1))),
        ("b.yaml", &format!("rules:\n{}{}", rule("x", 2), rule("y", 1))),
    ]);
    assert_eq!(e.len(), 2, "{e:#?}");
    assert!(e[0].starts_with("b.yaml:2:12: rule name `x` already defined at a.yaml:3:12"), "{}", e[0]);
    assert!(e[1].starts_with("b.yaml:3:25: priority 1 already used by rule `x` at a.yaml:3:25"), "{}", e[1]);
}

#[test]
fn empty_files_and_sections_are_fine() {
    let pack = ok(&[("a.yaml", "version: 1\nsmartgroups:\nwebgroups:\nrules:\n"), ("b.yaml", "")]);
    assert!(pack.rules.is_empty() && pack.smartgroups.is_empty());
    assert_eq!(pack.dns, DnsSettings::default());
    assert!(load_sources(&[]).is_err());
}

#[test]
fn summary_lists_everything() {
    let pack = ok(&[(
        "a.yaml",
        &format!(
            "version: 1\ndns: {{resolvers: [10.0.0.2]}}\n{GROUPS}webgroups:\n  w:\n    domains: [\"**.example.com\", a.example.org]\nrules:\n  - {{name: web, priority: 5, source: run, destination: {{webgroup: w}}, protocol: tcp, ports: [443, 8000-8080], action: permit}}\n"
        ),
    )]);
    let s = summary(&pack);
    for want in [
        "version 1, default mode monitor",
        "resolvers [10.0.0.2], ttl 60..86400 s, query_filter off",
        "run (1 cidrs): 10.10.1.0/24",
        "w (2 domains): **.example.com, a.example.org",
        "5 web: run -> webgroup:w proto tcp ports 443,8000-8080 permit (monitor)",
        "implicit-deny: deny (monitor)",
        "totals: 1 smartgroups, 1 webgroups, 1 rules (1 permit, 0 deny; 0 enforce, 1 monitor)",
    ] {
        assert!(s.contains(want), "missing {want:?} in\n{s}");
    }
}

#[test]
fn verify_names_defaults_and_is_only_allowed_on_permit_webgroup_rules() {
    let webgroups = "webgroups:\n  w:\n    domains: [a.example.org]\n";
    let rule = |name: &str, p: u16, dest: &str, action: &str, extra: &str| {
        format!("  - {{name: {name}, priority: {p}, source: run, destination: {dest}, action: {action}{extra}}}\n")
    };
    let web = "{webgroup: w}";
    let rules = [
        rule("default-permit", 1, web, "permit", ""),
        rule("off", 2, &format!("[{{cidrs: [10.9.0.0/16]}}, {web}]"), "permit", ", verify_names: false"),
        rule("on", 3, web, "permit", ", verify_names: true"),
        rule("deny-web", 4, web, "deny", ""),
        rule("cidr", 5, "{cidrs: [10.9.0.0/16]}", "permit", ""),
    ]
    .concat();
    let pack = ok(&[("a.yaml", &format!("version: 1\n{GROUPS}{webgroups}rules:\n{rules}"))]);
    let verify: Vec<(&str, bool)> = pack.rules.iter().map(|r| (r.name.as_str(), r.verify_names)).collect();
    assert_eq!(verify, [("default-permit", true), ("off", false), ("on", true), ("deny-web", false), ("cidr", false)]);
    assert!(summary(&pack).contains(
        "2 off: run -> cidrs:[10.9.0.0/16], webgroup:w proto any ports all permit (monitor) names-unverified"
    ));

    let rules = [
        rule("deny-web", 1, web, "deny", ", verify_names: false"),
        rule("cidr", 2, "[{cidrs: [10.9.0.0/16]}, resolvers]", "permit", ", verify_names: true"),
        rule("bad-dest", 3, "[{cidrs: [10.9.0.0/16]}, any]", "permit", ", verify_names: true"),
        rule("bad-value", 4, web, "permit", ", verify_names: off"),
        rule("bad-action", 5, web, "allow", ", verify_names: true"),
    ]
    .concat();
    let e =
        errs(&[("a.yaml", &format!("version: 1\ndns: {{resolvers: [10.0.0.2]}}\n{GROUPS}{webgroups}rules:\n{rules}"))]);
    // Misplaced: at the key, saying why; where the action or destination
    // is wrong itself, only that is reported.
    assert_eq!(e.len(), 5, "{e:#?}");
    assert!(e[0].starts_with("a.yaml:10:90: `verify_names` is not allowed on a `deny` rule"), "{}", e[0]);
    assert!(
        e[1].starts_with("a.yaml:11:110: `verify_names` is only allowed on a `permit` rule with a `{webgroup: NAME}`"),
        "{}",
        e[1]
    );
    assert!(e[2].starts_with("a.yaml:12:86: `any` in a `destination` list"), "{}", e[2]);
    assert!(e[3].starts_with("a.yaml:13:107: invalid `verify_names` `off`"), "{}", e[3]);
    assert!(e[4].starts_with("a.yaml:14:86: invalid `action` `allow`"), "{}", e[4]);
}

/// A scratch directory under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> Self {
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
        let p = std::env::temp_dir().join(format!("egress-policy-{tag}-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&p).expect("temp dir");
        Self(p)
    }

    fn write(&self, rel: &str, text: &str) {
        std::fs::write(self.0.join(rel), text).expect("write");
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn directory_ignores_hidden_and_editor_files() {
    let d = TempDir::new("dir");
    d.write("10-b.yml", GROUPS);
    d.write("00-a.yaml", "version: 1\n");
    for junk in [".hidden.yaml", "a.yaml.swp", "a.yaml~", "#a.yaml#", "notes.txt"] {
        d.write(junk, "this: [is not valid\n");
    }
    std::fs::create_dir(d.0.join("sub.yaml")).expect("mkdir");
    let pack = load(&d.0).unwrap_or_else(|e| panic!("{e}"));
    assert!(pack.smartgroups.contains_key("run"));
    // File-name order: the file setting `version` first is `00-a.yaml`.
    d.write("20-c.yaml", "version: 1\n");
    let e = load(&d.0).expect_err("version twice").to_string();
    assert!(e.contains("20-c.yaml:1:1: `version` already set at ") && e.contains("00-a.yaml:1:1"), "{e}");
}

#[test]
#[cfg(unix)]
fn directory_follows_configmap_symlinks() {
    use std::os::unix::fs::symlink;
    let d = TempDir::new("configmap");
    let data = d.0.join("..2024_01_01_00_00_00.000000000");
    std::fs::create_dir(&data).expect("mkdir");
    std::fs::write(data.join("policy.yaml"), format!("version: 1\n{GROUPS}")).expect("write");
    symlink("..2024_01_01_00_00_00.000000000", d.0.join("..data")).expect("symlink");
    symlink("..data/policy.yaml", d.0.join("policy.yaml")).expect("symlink");
    let pack = load(&d.0).unwrap_or_else(|e| panic!("{e}"));
    assert!(pack.smartgroups.contains_key("run"));
    // The directory itself may be reached through a symlink.
    let link = TempDir::new("configmap-link");
    symlink(&d.0, link.0.join("policy")).expect("symlink");
    assert!(load(&link.0.join("policy")).is_ok());
}

#[test]
fn empty_or_missing_paths_are_errors() {
    let d = TempDir::new("empty");
    d.write(".only-hidden.yaml", "version: 1\n");
    let e = load(&d.0).expect_err("no policy file").to_string();
    assert!(e.ends_with("no policy file: expected `*.yaml` or `*.yml` files in the directory"), "{e}");
    let e = load(Path::new("/nonexistent/egress/policy.yaml")).expect_err("missing").to_string();
    assert!(e.starts_with("/nonexistent/egress/policy.yaml: cannot read"), "{e}");
}

#[test]
fn single_file_errors_name_the_path() {
    let d = TempDir::new("file");
    d.write("p.yaml", "version: 1\nmode: enforce\nmode: monitor\n");
    let e = load(&d.0.join("p.yaml")).expect_err("duplicate key").to_string();
    let want = format!("{}:3:1: field `mode` given twice in the policy file (first at ", d.0.join("p.yaml").display());
    assert!(e.starts_with(&want), "{e}");
}

/// An edit of one rule's ports keeps the combined classes of the sets it
/// does not change: installing it rewrites a few table entries, not all.
#[test]
fn an_edit_keeps_class_numbers() {
    use super::compile::{compile, compile_stable};
    use super::model::PortRange;
    let pack = crate::synth::realistic_pack(2_000, 11);
    let before = compile(&pack).expect("compiles");
    let mut edited = pack.clone();
    let rule = edited.rules.iter_mut().find(|r| r.ports.is_some()).expect("a rule with ports");
    rule.ports = Some(vec![PortRange { lo: 20_001, hi: 20_001 }]);
    let after = compile_stable(&edited, &before.previous()).expect("compiles");
    let changed = after.xd.iter().filter(|(k, v)| before.xd.get(k) != Some(v)).count()
        + before.xd.keys().filter(|k| !after.xd.contains_key(k)).count();
    assert!(before.xd.len() > 1_000, "a pack with many entries: {}", before.xd.len());
    assert!(changed * 20 < before.xd.len(), "{changed} of {} entries rewritten", before.xd.len());
    // The new port boundaries renumber only the port classes they cut:
    // the (source, port) table keeps the keys of every other class.
    let changed = after.sp.iter().filter(|(k, v)| before.sp.get(k) != Some(v)).count()
        + before.sp.keys().filter(|k| !after.sp.contains_key(k)).count();
    assert!(before.sp.len() > 100, "a pack with many entries: {}", before.sp.len());
    assert!(changed * 10 < before.sp.len(), "{changed} of {} (source, port) entries rewritten", before.sp.len());
    let moved = before.port_sets.iter().zip(after.port_sets.iter()).filter(|(a, b)| a != b).count();
    assert!(moved <= 4, "{moved} of {} port classes renumbered", before.port_sets.len());
}

/// WebGroup bits: a group keeps its bit across packs, and the bit of a
/// removed group goes to no other group while it is still taken (learned
/// addresses may carry it); once freed (left out of `previous`) it is
/// reused.
#[test]
fn a_removed_webgroups_bit_is_not_handed_on() {
    use super::compile::{compile, compile_stable};
    let pack_of = |groups: &[&str]| {
        let mut webgroups = String::new();
        let mut rules = String::new();
        for (i, g) in groups.iter().enumerate() {
            webgroups += &["  ", g, ":\n    domains: [", g, ".example.com]\n"].concat();
            let priority = (i + 1).to_string();
            rules += &[
                "  - {name: r",
                &i.to_string(),
                ", priority: ",
                &priority,
                ", source: run, destination: {webgroup: ",
                g,
                "}, action: permit}\n",
            ]
            .concat();
        }
        ok(&[(
            "p.yaml",
            &format!("version: 1\ndns: {{resolvers: [10.0.0.2]}}\n{GROUPS}webgroups:\n{webgroups}rules:\n{rules}"),
        )])
    };
    let first = compile(&pack_of(&["alpha", "beta"])).expect("compiles");
    let (alpha, beta) = (first.webgroup_bits["alpha"], first.webgroup_bits["beta"]);
    // alpha removed, gamma added: gamma gets neither alpha's bit nor beta's.
    let second = compile_stable(&pack_of(&["beta", "gamma"]), &first.previous()).expect("compiles");
    assert_eq!(second.webgroup_bits["beta"], beta, "kept");
    assert_ne!(second.webgroup_bits["gamma"], alpha, "a removed group's bit is not reused while taken");
    assert!(!second.webgroup_bits.contains_key("alpha"));
    // Every bit taken by retiring groups: a clear error, not a reuse.
    let mut all_taken = first.previous();
    all_taken.webgroup_bits = (0..egress_common::MAX_WEBGROUPS).map(|b| (format!("old{b}"), b)).collect();
    let e = compile_stable(&pack_of(&["gamma"]), &all_taken).expect_err("no free bit");
    assert!(e.to_string().contains("removed webgroups"), "{e}");
    // Freed (no longer in `previous`): reused.
    let mut freed = first.previous();
    freed.webgroup_bits.remove("alpha");
    let third = compile_stable(&pack_of(&["beta", "gamma"]), &freed).expect("compiles");
    assert_eq!(third.webgroup_bits["gamma"], alpha, "the lowest free bit");
}

#[test]
fn query_types_default_list_and_errors() {
    let base = "version: 1\nmode: enforce\n";
    let pack = ok(&[("a.yaml", &format!("{base}dns: {{resolvers: [10.0.0.2]}}\n"))]);
    assert_eq!(pack.dns.query_types, [1, 5, 28, 64, 65], "default: A, CNAME, AAAA, SVCB, HTTPS");
    let pack =
        ok(&[("a.yaml", &format!("{base}dns: {{resolvers: [10.0.0.2], query_types: [txt, AAAA, a, A, TYPE99]}}\n"))]);
    assert_eq!(pack.dns.query_types, [1, 16, 28, 99], "any case, sorted, once each");
    let e = errs(&[("a.yaml", &format!("{base}dns: {{resolvers: [10.0.0.2], query_types: [A, BOGUS, CAA]}}\n"))]);
    assert_eq!(e.len(), 2, "{e:?}");
    assert!(e[0].starts_with("a.yaml:3:") && e[0].contains("unknown DNS query type `BOGUS`"), "{e:?}");
    assert!(e[1].contains("`CAA` (257) cannot be checked"), "{e:?}");
}

#[test]
fn tunnel_guard_is_monitor_unless_set() {
    let dns = |guard: &str| ok(&[("a.yaml", &format!("version: 1\ndns: {{resolvers: [10.0.0.2]{guard}}}\n"))]).dns;
    assert_eq!(dns("").tunnel_guard, TunnelGuard::Monitor);
    assert_eq!(dns(", tunnel_guard: enforce").tunnel_guard, TunnelGuard::Enforce);
    assert_eq!(dns(", tunnel_guard: off").tunnel_guard, TunnelGuard::Off);
    assert_eq!(dns(", tunnel_guard: false").tunnel_guard, TunnelGuard::Off);
    let e = errs(&[("a.yaml", "version: 1\ndns: {resolvers: [10.0.0.2], tunnel_guard: strict}\n")]);
    assert!(e.len() == 1 && e[0].starts_with("a.yaml:2:"), "{e:#?}");
    assert!(e[0].contains("tunnel_guard"), "{}", e[0]);
}

#[test]
fn uncovered_is_deny_unless_set_and_set_once() {
    let rule = "rules:\n  - {name: r, priority: 1, source: run, destination: any, action: permit}\n";
    let pack = ok(&[("a.yaml", &format!("version: 1\n{GROUPS}{rule}"))]);
    assert_eq!(pack.uncovered, Uncovered::Deny);
    let pack = ok(&[("a.yaml", &format!("version: 1\nuncovered: pass\n{GROUPS}{rule}"))]);
    assert_eq!(pack.uncovered, Uncovered::Pass);
    let e = errs(&[("a.yaml", "version: 1\nuncovered: allow\n")]);
    assert!(e[0].starts_with("a.yaml:2:12:") && e[0].contains("expected `deny` | `pass`"), "{e:?}");
    let e = errs(&[("a.yaml", "version: 1\nuncovered: pass\n"), ("b.yaml", "uncovered: deny\n")]);
    assert!(e[0].starts_with("b.yaml:1:1:") && e[0].contains("`uncovered` already set at a.yaml:2:1"), "{e:?}");
    let e = errs(&[(
        "a.yaml",
        &format!(
            "version: 1\n{GROUPS}rules:\n  - {{name: uncovered-source, priority: 1, source: run, destination: any, action: deny}}\n"
        ),
    )]);
    assert!(e[0].contains("`uncovered-source` is reserved"), "{e:?}");
    // The summary says which.
    let s = summary(&ok(&[("a.yaml", &format!("version: 1\nmode: enforce\n{GROUPS}{rule}"))]));
    assert!(s.contains("uncovered-source: deny (enforce)"), "{s}");
}

#[test]
fn oversized_files_and_packs_are_refused_before_they_are_read() {
    let dir = std::env::temp_dir().join(format!("egress-big-pack-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    // Sparse files: sizes without the disk.
    let big = dir.join("big.yaml");
    std::fs::File::create(&big).unwrap().set_len(super::load::MAX_FILE_BYTES + 1).unwrap();
    let e = load(&big).expect_err("too big").to_string();
    assert!(e.contains("big.yaml") && e.contains("larger than 64 MiB"), "{e}");
    std::fs::remove_file(&big).unwrap();
    for i in 0..5 {
        std::fs::File::create(dir.join(format!("{i}.yaml"))).unwrap().set_len(60 << 20).unwrap();
    }
    let e = load(&dir).expect_err("too big together").to_string();
    assert!(e.contains("300 MiB together") && e.contains("at most 256 MiB"), "{e}");
    let _ = std::fs::remove_dir_all(&dir);
}
