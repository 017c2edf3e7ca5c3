//! Lists in files (`cidrs_file`, `domains_file`): read relative to the
//! policy file that names them, errors at the list file's line, a change
//! to a list seen by the next load.

use std::path::{Path, PathBuf};

use egress_policy::model::DomainPattern;
use egress_policy::{ParseCache, load, load_hashed};
use ipnet::IpNet;

/// A directory of its own, removed on drop.
struct Dir(PathBuf);

impl Dir {
    fn new(tag: &str) -> Self {
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
        let p = std::env::temp_dir().join(format!("egress-lists-{tag}-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(p.join("lists")).expect("temp dir");
        Dir(p)
    }

    fn write(&self, rel: &str, text: &str) -> PathBuf {
        let path = self.0.join(rel);
        std::fs::write(&path, text).expect("write");
        path
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

const PACK: &str = "version: 1
smartgroups:
  runtime: { cidrs: [10.10.1.0/24] }
  feed:
    cidrs: [198.51.100.0/24]
    cidrs_file: lists/feed.txt
webgroups:
  ai:
    domains_file: lists/ai.txt
rules:
  - { name: deny-feed, priority: 10, source: runtime, destination: { smartgroup: feed }, action: deny }
  - { name: allow-ai, priority: 20, source: runtime, destination: { webgroup: ai }, protocol: tcp, ports: [443], action: permit }
";

fn nets(list: &[&str]) -> Vec<IpNet> {
    list.iter().map(|s| s.parse().expect("net")).collect()
}

#[test]
fn lists_beside_and_instead_of_inline_entries() {
    let d = Dir::new("good");
    let policy = d.write("pack.yaml", PACK);
    d.write("lists/feed.txt", "# a feed\n203.0.113.0/24\n198.51.100.0/24   # also inline\n\n192.0.2.7\n");
    d.write("lists/ai.txt", "api.openai.com\n**.openai.azure.com\n");
    let pack = load(&policy).expect("the pack loads");
    assert_eq!(pack.smartgroups["feed"].cidrs, nets(&["198.51.100.0/24", "203.0.113.0/24", "192.0.2.7/32"]));
    let ai: Vec<String> = pack.webgroups["ai"].domains.iter().map(DomainPattern::to_string).collect();
    assert_eq!(ai, ["api.openai.com", "**.openai.azure.com"]);
}

#[test]
fn a_bad_line_is_reported_at_the_list_files_line() {
    let d = Dir::new("bad");
    let policy = d.write("pack.yaml", PACK);
    let feed = d.write("lists/feed.txt", "203.0.113.0/24\n  203.0.113.9/24\n");
    d.write("lists/ai.txt", "api.openai.com\n");
    let errors = load(&policy).expect_err("a bad line").to_string();
    let want = format!("{}:2:3: `203.0.113.9/24` has host bits set", feed.display());
    assert!(errors.contains(&want), "{errors}");
    // The rule that uses the group is not reported again.
    assert!(!errors.contains("undefined"), "{errors}");
}

#[test]
fn a_missing_or_empty_list_is_an_error_where_the_pack_names_it() {
    let d = Dir::new("missing");
    let policy = d.write("pack.yaml", PACK);
    d.write("lists/feed.txt", "203.0.113.0/24\n");
    let errors = load(&policy).expect_err("no list file").to_string();
    let want = format!("{}:9:19: domains_file `lists/ai.txt`: cannot read", policy.display());
    assert!(errors.contains(&want), "{errors}");
    d.write("lists/ai.txt", "# nothing yet\n");
    let errors = load(&policy).expect_err("an empty group").to_string();
    assert!(errors.contains("domains_file `lists/ai.txt` holds no domain name and the group lists none"), "{errors}");
    // Not a plain file (a FIFO would block the load): refused unopened.
    let fifo = d.0.join("lists/fifo.txt");
    let made = std::process::Command::new("mkfifo").arg(&fifo).status().expect("mkfifo");
    assert!(made.success());
    d.write("pack2.yaml", &PACK.replace("lists/ai.txt", "lists/fifo.txt"));
    let errors = load(&d.0.join("pack2.yaml")).expect_err("a FIFO").to_string();
    assert!(errors.contains("lists/fifo.txt: cannot read: not a regular file"), "{errors}");
    // A group needs one or the other.
    let none = d.write("none.yaml", "version: 1\nsmartgroups:\n  g: {}\n");
    let errors = load(&none).expect_err("no entries").to_string();
    assert!(errors.contains("missing field `cidrs`: expected a list of CIDRs (or `cidrs_file`, a file of them)"));
}

#[test]
fn a_changed_list_is_read_by_the_next_load_and_changes_the_hash() {
    let d = Dir::new("change");
    let policy = d.write("pack.yaml", PACK);
    d.write("lists/feed.txt", "203.0.113.0/24\n");
    d.write("lists/ai.txt", "api.openai.com\n");
    let mut cache = ParseCache::new();
    let (first, hash) = cache.load_hashed(&policy).expect("loads");
    let (same, same_hash) = cache.load_hashed(&policy).expect("loads");
    assert_eq!((&first, hash), (&same, same_hash), "nothing changed");
    d.write("lists/feed.txt", "203.0.113.0/24\n100.64.0.0/10\n");
    let (changed, changed_hash) = cache.load_hashed(&policy).expect("loads");
    assert_eq!(changed.smartgroups["feed"].cidrs, nets(&["198.51.100.0/24", "203.0.113.0/24", "100.64.0.0/10"]));
    assert_ne!(hash, changed_hash, "the pack's hash covers its lists");
    assert_eq!(load_hashed(&policy).expect("loads"), (changed, changed_hash), "the cache reads what a fresh load does");
}

/// A list file is named by a path inside the pack's directory; a pack
/// from in-memory texts names none.
#[test]
fn lists_stay_in_the_pack_and_in_memory_packs_have_none() {
    let d = Dir::new("confined");
    d.write("lists/feed.txt", "203.0.113.0/24\n");
    for (path, why) in [("../x.txt", "leaves the policy's directory"), ("/etc/hosts", "leaves the policy's directory")]
    {
        let policy = d.write("p.yaml", &format!("version: 1\nsmartgroups:\n  g: {{ cidrs_file: \"{path}\" }}\n"));
        let errors = load(&policy).expect_err("refused").to_string();
        assert!(errors.contains(&format!("{}:3:20: `cidrs_file`: `{path}` {why}", policy.display())), "{errors}");
    }
    let text = "version: 1\nsmartgroups:\n  g: { cidrs_file: lists/feed.txt }\n".to_string();
    let errors = egress_policy::load_sources(&[(d.0.join("p.yaml").display().to_string(), text)])
        .expect_err("in memory")
        .to_string();
    assert!(errors.contains("list files are read only with a pack loaded from its files"), "{errors}");
}

#[test]
fn the_list_files_a_policy_names_are_found_for_the_watcher() {
    let got = egress_policy::list_files_named(Path::new("/etc/egress/pack.yaml"), PACK);
    assert_eq!(got, [PathBuf::from("/etc/egress/lists/ai.txt"), PathBuf::from("/etc/egress/lists/feed.txt")]);
}

/// The curated lists shipped under `policies/lists/` parse (every line a
/// name the guard lets through), say what they cover and when they were
/// last reviewed, and the reference pack uses them.
#[test]
fn the_shipped_lists_load_and_the_reference_pack_uses_them() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies");
    let mut lists: Vec<PathBuf> =
        std::fs::read_dir(root.join("lists")).expect("policies/lists").map(|e| e.expect("entry").path()).collect();
    lists.sort();
    assert!(lists.len() >= 4, "{lists:?}");
    let d = Dir::new("shipped");
    for (i, list) in lists.iter().enumerate() {
        let text = std::fs::read_to_string(list).expect("read");
        assert!(text.starts_with("# ") && text.contains("Last reviewed: 20"), "{}: a header", list.display());
        // Named through a symlink beside the pack, as the reference pack does.
        std::os::unix::fs::symlink(list, d.0.join(format!("list{i}.txt"))).expect("symlink");
        let pack = format!("version: 1\nwebgroups:\n  g:\n    domains_file: list{i}.txt\n");
        let pack = load(&d.write("pack.yaml", &pack)).unwrap_or_else(|e| panic!("{}: {e}", list.display()));
        assert!(pack.webgroups["g"].domains.len() >= 4, "{}", list.display());
    }
    let reference = load(&root.join("agentcore")).expect("the reference pack loads");
    let names = |g: &str| -> Vec<String> { reference.webgroups[g].domains.iter().map(ToString::to_string).collect() };
    assert!(names("llm-providers").contains(&"api.openai.com".to_string()));
    assert!(names("aws-control-plane").contains(&"sts.amazonaws.com".to_string()));
}
