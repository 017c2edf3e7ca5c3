//! Watching `--policy` for changes: a fingerprint of everything the loader
//! would read (each policy file's resolved path, size, modification time
//! and inode, following symlinks), polled and debounced. It sees editors'
//! write-and-rename, files added and removed, and the atomic `..data`
//! symlink swap of a Kubernetes ConfigMap volume (the resolved paths change).

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use crate::policy::is_policy_file_name;

/// How often the policy path is looked at.
pub const POLL: Duration = Duration::from_millis(100);
/// How long the fingerprint must stay still before a reload.
pub const DEBOUNCE: Duration = Duration::from_millis(200);

/// What the loader would read, as it stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fingerprint(Vec<(PathBuf, u64, Option<SystemTime>, u64)>);

fn entry(path: &Path) -> Option<(PathBuf, u64, Option<SystemTime>, u64)> {
    use std::os::unix::fs::MetadataExt as _;
    let resolved = std::fs::canonicalize(path).ok()?;
    let meta = std::fs::metadata(&resolved).ok()?;
    Some((resolved, meta.len(), meta.modified().ok(), meta.ino()))
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

/// Polls `path` and calls `changed` once per settled change, until the
/// task is dropped.
pub async fn watch(path: PathBuf, mut changed: impl FnMut() -> tokio::task::JoinHandle<()>) {
    let mut seen = fingerprint(&path);
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
