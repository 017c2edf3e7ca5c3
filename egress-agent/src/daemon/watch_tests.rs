//! Tests of the policy watcher: real files, real inotify events.

use super::*;

/// `mode: monitor` to `mode: enforce` is the same size; with the old
/// modification time put back (`cp -p`) only the change time tells.
#[test]
fn a_same_size_edit_with_the_old_mtime_is_seen() {
    let dir = std::env::temp_dir().join(format!("egress-watch-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("pack.yaml");
    std::fs::write(&path, "mode: monitor\n").unwrap();
    let mtime = std::fs::metadata(&path).unwrap().modified().unwrap();
    let before = fingerprint(&path);
    std::thread::sleep(Duration::from_millis(20));
    std::fs::write(&path, "mode: enforce\n").unwrap();
    std::fs::File::options().write(true).open(&path).unwrap().set_modified(mtime).unwrap();
    assert_eq!(std::fs::metadata(&path).unwrap().modified().unwrap(), mtime, "same mtime");
    assert_ne!(fingerprint(&path), before, "seen all the same");
    let _ = std::fs::remove_dir_all(&dir);
}

fn scratch(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("egress-watch-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A watcher on `policy` whose requests land in the returned channel.
fn watching(policy: &Path) -> (PolicyWatcher, mpsc::Receiver<Trigger>) {
    let (tx, rx) = mpsc::channel();
    let watcher = spawn(policy.to_path_buf(), fingerprint(policy), ReloadRequests::from_sender(tx)).unwrap();
    // Its first look, at the state it was given: nothing to ask.
    std::thread::sleep(Duration::from_millis(20));
    (watcher, rx)
}

/// Requests that arrive within `within`, counted after a quiet spell.
fn requests(rx: &mpsc::Receiver<Trigger>, within: Duration) -> usize {
    let mut n = 0;
    while rx.recv_timeout(if n == 0 { within } else { Duration::from_millis(50) }).is_ok() {
        n += 1;
    }
    n
}

/// Renamed into place: asked for at once, once; a temporary file and
/// our own reads are not changes.
#[test]
fn a_rename_is_one_request_without_delay() {
    let dir = scratch("rename");
    let policy = dir.join("pack.yaml");
    std::fs::write(&policy, "mode: monitor\n").unwrap();
    let (_watcher, rx) = watching(&policy);
    std::fs::write(dir.join("pack.yaml.tmp"), "mode: enforce\n").unwrap();
    let t = Instant::now();
    std::fs::rename(dir.join("pack.yaml.tmp"), &policy).unwrap();
    assert_eq!(rx.recv_timeout(Duration::from_millis(500)), Ok(Trigger::Files));
    assert!(t.elapsed() < POLL / 2, "by event, not by polling: {:?}", t.elapsed());
    let _ = std::fs::read_to_string(&policy).unwrap();
    std::fs::write(dir.join("notes.txt"), "not policy").unwrap();
    assert_eq!(requests(&rx, Duration::from_millis(100)), 0, "one request per change");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Several files written in place, one after the other, each within
/// [`SETTLE`] of the last: one request. On a busy machine the test's own
/// thread can be held off the CPU between writes for longer than that,
/// which makes two bursts: such a try is not a burst, and is made again.
#[test]
fn a_burst_of_writes_in_place_is_one_request() {
    let dir = scratch("burst");
    std::fs::write(dir.join("a.yaml"), "mode: monitor\n").unwrap();
    let (_watcher, rx) = watching(&dir);
    let mut judged = false;
    for attempt in 0..10 {
        let mut last = Instant::now();
        let mut widest = Duration::ZERO;
        for name in ["a.yaml", "b.yaml", "c.yaml"] {
            std::fs::write(dir.join(name), format!("rules: [] # {attempt}\n")).unwrap();
            widest = widest.max(last.elapsed());
            last = Instant::now();
            std::thread::sleep(Duration::from_millis(1));
        }
        let n = requests(&rx, Duration::from_millis(500));
        if widest < SETTLE / 2 {
            assert_eq!(n, 1, "writes at most {widest:?} apart");
            judged = true;
            break;
        }
    }
    assert!(judged, "the machine never let three writes happen within {:?}", SETTLE / 2);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A change that is not finished yet (a write still open, a file
/// removed or renamed away before its replacement is written, as
/// editors and `rm && cp` do) asks for nothing until it is: one
/// request, after the new file is closed.
#[test]
fn an_unfinished_change_waits_for_the_new_file() {
    use std::io::Write as _;
    let dir = scratch("unfinished");
    std::fs::write(dir.join("a.yaml"), "mode: monitor\n").unwrap();
    std::fs::write(dir.join("b.yaml"), "rules: []\n").unwrap();
    let (_watcher, rx) = watching(&dir);
    let pause = SETTLE * 6;
    // Removed, then written anew after a pause.
    std::fs::remove_file(dir.join("a.yaml")).unwrap();
    assert_eq!(requests(&rx, pause), 0, "a removal alone is not yet a change");
    std::fs::write(dir.join("a.yaml"), "mode: enforce\n").unwrap();
    assert_eq!(requests(&rx, QUIET * 2), 1, "removed then written");
    // Renamed away to a backup, as an editor does, then written.
    std::fs::rename(dir.join("a.yaml"), dir.join("a.yaml~")).unwrap();
    assert_eq!(requests(&rx, pause), 0, "renamed away");
    std::fs::write(dir.join("a.yaml"), "mode: monitor\n").unwrap();
    assert_eq!(requests(&rx, QUIET * 2), 1, "renamed away then written");
    // Written in two parts with a pause longer than the settle.
    let mut file = std::fs::File::create(dir.join("b.yaml")).unwrap();
    file.write_all(b"rules:").unwrap();
    assert_eq!(requests(&rx, pause), 0, "a write still open");
    file.write_all(b" []\n").unwrap();
    drop(file);
    assert_eq!(requests(&rx, QUIET * 2), 1, "the write closed");
    let _ = std::fs::remove_dir_all(&dir);
}

/// A directory policy that is itself a symlink, swapped to another
/// directory: seen by event, not by polling.
#[test]
fn a_policy_symlink_swapped_is_a_request() {
    let dir = scratch("link");
    for v in ["v1", "v2"] {
        std::fs::create_dir_all(dir.join(v)).unwrap();
        std::fs::write(dir.join(v).join("pack.yaml"), format!("# {v}\n")).unwrap();
    }
    std::os::unix::fs::symlink("v1", dir.join("policy")).unwrap();
    let (_watcher, rx) = watching(&dir.join("policy"));
    std::os::unix::fs::symlink("v2", dir.join("policy.new")).unwrap();
    let t = Instant::now();
    std::fs::rename(dir.join("policy.new"), dir.join("policy")).unwrap();
    assert_eq!(rx.recv_timeout(Duration::from_millis(500)), Ok(Trigger::Files));
    assert!(t.elapsed() < POLL / 2, "by event, not by polling: {:?}", t.elapsed());
    let _ = std::fs::remove_dir_all(&dir);
}

/// The `..data` swap of a `ConfigMap` volume, seen from the directory
/// and from a file linked into it.
#[test]
fn a_configmap_swap_is_a_request() {
    for file in [false, true] {
        let dir = scratch(if file { "cm-file" } else { "cm-dir" });
        std::fs::create_dir_all(dir.join("..a")).unwrap();
        std::fs::write(dir.join("..a/pack.yaml"), "mode: monitor\n").unwrap();
        std::os::unix::fs::symlink("..a", dir.join("..data")).unwrap();
        std::os::unix::fs::symlink("..data/pack.yaml", dir.join("pack.yaml")).unwrap();
        let (_watcher, rx) = watching(&if file { dir.join("pack.yaml") } else { dir.clone() });
        std::fs::create_dir_all(dir.join("..b")).unwrap();
        std::fs::write(dir.join("..b/pack.yaml"), "mode: enforce\n").unwrap();
        std::os::unix::fs::symlink("..b", dir.join("..data_tmp")).unwrap();
        std::fs::rename(dir.join("..data_tmp"), dir.join("..data")).unwrap();
        assert_eq!(requests(&rx, Duration::from_millis(500)), 1, "file: {file}");
        std::fs::remove_dir_all(dir.join("..a")).unwrap();
        assert_eq!(requests(&rx, Duration::from_millis(100)), 0, "the old version removed, file: {file}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}

/// A list file the policy names (`cidrs_file`), in a directory of its
/// own: renamed into place, and created where it was missing, each is a
/// request by event; a file beside it the policy does not name is not.
#[test]
fn a_list_file_the_policy_names_is_watched() {
    let dir = scratch("list");
    std::fs::create_dir_all(dir.join("lists")).unwrap();
    let policy = dir.join("pack.yaml");
    std::fs::write(
        &policy,
        "smartgroups:\n  feed: { cidrs_file: lists/feed.txt }\n  more: { cidrs_file: lists/more.txt }\n",
    )
    .unwrap();
    std::fs::write(dir.join("lists/feed.txt"), "10.0.0.0/8\n").unwrap();
    let before = fingerprint(&policy);
    assert_eq!(before.0.len(), 3, "the policy, its list and its missing list: {before:?}");
    let (_watcher, rx) = watching(&policy);
    std::fs::write(dir.join("lists/feed.txt.tmp"), "10.0.0.0/8\n192.0.2.0/24\n").unwrap();
    let t = Instant::now();
    std::fs::rename(dir.join("lists/feed.txt.tmp"), dir.join("lists/feed.txt")).unwrap();
    assert_eq!(rx.recv_timeout(Duration::from_millis(500)), Ok(Trigger::Files));
    assert!(t.elapsed() < POLL / 2, "by event, not by polling: {:?}", t.elapsed());
    std::fs::write(dir.join("lists/other.txt"), "not named").unwrap();
    assert_eq!(requests(&rx, Duration::from_millis(300)), 0, "a file the policy does not name");
    std::fs::write(dir.join("lists/more.tmp"), "192.0.2.0/24\n").unwrap();
    std::fs::rename(dir.join("lists/more.tmp"), dir.join("lists/more.txt")).unwrap();
    assert_eq!(rx.recv_timeout(Duration::from_millis(500)), Ok(Trigger::Files), "the missing list made");
    let _ = std::fs::remove_dir_all(&dir);
}
