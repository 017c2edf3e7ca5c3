//! Watching `--policy` for changes: a fingerprint of everything the loader
//! would read (each policy file's resolved path, size, modification and
//! change times and inode, following symlinks), polled and debounced. The
//! change time catches a same-size write that keeps the modification time
//! (`cp -p`, `rsync -t --inplace`). It sees editors'
//! write-and-rename, files added and removed, and the atomic `..data`
//! symlink swap of a Kubernetes ConfigMap volume (the resolved paths change).

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use egress_policy::is_policy_file_name;

/// How often the policy path is looked at.
pub const POLL: Duration = Duration::from_millis(100);
/// How long the fingerprint must stay still before a reload.
pub const DEBOUNCE: Duration = Duration::from_millis(200);

/// What the loader would read, as it stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fingerprint(Vec<Entry>);

/// One file: resolved path, size, modification time, change time (s, ns), inode.
type Entry = (PathBuf, u64, Option<SystemTime>, (i64, i64), u64);

fn entry(path: &Path) -> Option<Entry> {
    use std::os::unix::fs::MetadataExt as _;
    let resolved = std::fs::canonicalize(path).ok()?;
    let meta = std::fs::metadata(&resolved).ok()?;
    Some((resolved, meta.len(), meta.modified().ok(), (meta.ctime(), meta.ctime_nsec()), meta.ino()))
}

/// The fingerprint of a policy file or directory (empty if unreadable).
pub fn fingerprint(path: &Path) -> Fingerprint {
    let mut out = Vec::new();
    if path.is_dir() {
        let mut names: Vec<PathBuf> = std::fs::read_dir(path)
            .map(|d| {
                d.filter_map(Result::ok)
                    .filter(|e| e.file_name().to_str().is_some_and(is_policy_file_name))
                    .map(|e| e.path())
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        out.extend(names.iter().filter_map(|p| entry(p)));
    } else if let Some(e) = entry(path) {
        out.push(e);
    }
    Fingerprint(out)
}

/// Polls `path` and calls `changed` once per settled change from `seen`
/// (the fingerprint taken before the files were last read, so that an edit
/// made while they were being read is not missed), until the task is
/// dropped.
pub async fn watch(path: PathBuf, mut seen: Fingerprint, mut changed: impl FnMut() -> tokio::task::JoinHandle<()>) {
    loop {
        tokio::time::sleep(POLL).await;
        let now = fingerprint(&path);
        if now == seen {
            continue;
        }
        // Debounce: wait until it holds still.
        let mut settled = now;
        loop {
            tokio::time::sleep(DEBOUNCE).await;
            let again = fingerprint(&path);
            if again == settled {
                break;
            }
            settled = again;
        }
        seen = settled;
        let _ = changed().await;
    }
}

#[cfg(test)]
mod tests {
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
}
