//! Watching `--policy` for changes and asking the reload task to reload.
//!
//! The kernel's file events (inotify, through `notify`) on the policy
//! directory, or the policy file's directory, non-recursive, plus the
//! directories the policy's symlinks resolve into. A file renamed into
//! place, a symlink made (the `..data` swap of a Kubernetes `ConfigMap`
//! volume) is a finished change, reloaded at once. A write closed is
//! finished too, after a short settle ([`SETTLE`] without an event) so that
//! a burst of files is read as one. Anything else (a write still open, a
//! file removed or renamed away, which editors and `rm && cp` do before
//! the new file is there) waits until [`QUIET`] passes without an event or
//! a finished change arrives: a half-written or missing file is never
//! read on the strength of one event.
//!
//! The list files the policy files name (`cidrs_file`, `domains_file`)
//! are part of what the loader reads: their directories are watched and
//! their events concern the policy as the policy files' do.
//!
//! A fingerprint of everything the loader would read (each policy and list
//! file's resolved path, size, modification and change times and inode,
//! following symlinks; a list file not there as missing) is the safety net: polled every [`POLL`], it catches a missed
//! event (a full event queue) and filesystems without events. The change
//! time catches a same-size write that keeps the modification time
//! (`cp -p`, `rsync -t --inplace`); resolved paths change on a `ConfigMap`
//! swap.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, RecvTimeoutError, TryRecvError};
use std::time::{Duration, Instant, SystemTime};

use egress_policy::is_policy_file_name;
use notify::event::{AccessKind, AccessMode, EventKind, ModifyKind, RenameMode};
use notify::{RecursiveMode, Watcher as _};

use super::reload_task::{ReloadRequests, Trigger};

/// How often the fingerprint is compared while file events arrive.
pub const POLL: Duration = Duration::from_secs(1);
/// ... and while they cannot be had (no inotify instance or watch left).
const POLL_WITHOUT_EVENTS: Duration = Duration::from_millis(200);
/// Quiet time after a write was closed before the reload.
pub const SETTLE: Duration = Duration::from_millis(8);
/// Quiet time after an unfinished change (a write not closed, a removal)
/// before the reload; also how long a change seen by polling must hold
/// still.
pub const QUIET: Duration = Duration::from_millis(200);

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

/// The fingerprint of a policy file or directory (empty if unreadable),
/// with the list files its policy files name (`cidrs_file`,
/// `domains_file`; a missing one as missing, so that its creation is a
/// change).
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
        out.extend(names.iter().filter_map(|p| entry(p).map(|e| (p.clone(), e))));
    } else if let Some(e) = entry(path) {
        out.push((path.to_path_buf(), e));
    }
    let lists: BTreeSet<PathBuf> = out.iter().flat_map(|(named, e)| lists_named(named, e)).collect();
    let mut entries: Vec<Entry> = out.into_iter().map(|(_, e)| e).collect();
    entries.extend(lists.iter().map(|l| entry(l).unwrap_or_else(|| missing(l))));
    Fingerprint(entries)
}

/// A file that is not there, by the path it would have.
fn missing(path: &Path) -> Entry {
    let absolute = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    let resolved = match (absolute.parent().and_then(|d| std::fs::canonicalize(d).ok()), absolute.file_name()) {
        (Some(dir), Some(name)) => dir.join(name),
        _ => absolute,
    };
    (resolved, 0, None, (0, 0), 0)
}

/// The list files the policy file at `path` (as it stands: `stat`) names,
/// read again only when the file changed.
fn lists_named(path: &Path, stat: &Entry) -> Vec<PathBuf> {
    use std::sync::{Mutex, PoisonError};
    static NAMED: Mutex<Vec<(Entry, Vec<PathBuf>)>> = Mutex::new(Vec::new());
    let known =
        NAMED.lock().unwrap_or_else(PoisonError::into_inner).iter().find(|(e, _)| e == stat).map(|k| k.1.clone());
    if let Some(lists) = known {
        return lists;
    }
    let lists = match egress_policy::read_policy_text(path) {
        Ok(text) => egress_policy::list_files_named(path, &text),
        Err(_) => Vec::new(),
    };
    let mut named = NAMED.lock().unwrap_or_else(PoisonError::into_inner);
    // Files come and go: keep the last few hundred looks.
    if named.len() >= 512 {
        named.clear();
    }
    named.push((stat.clone(), lists.clone()));
    lists
}

/// What wakes the watcher thread.
enum Wake {
    Fs(notify::Result<notify::Event>),
    Stop,
}

/// How soon an event asks for a reload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Urgency {
    /// Not about the policy (another file, a read of ours).
    Ignore,
    /// Unfinished: a write not yet closed, a file removed or renamed away,
    /// events lost. Wait for [`QUIET`].
    Unfinished,
    /// A write closed: wait for [`SETTLE`].
    Written,
    /// A finished change: a file renamed into place, a symlink made.
    Now,
}

impl Urgency {
    /// How long after this event, with none after it, the reload waits.
    fn wait(self) -> Duration {
        match self {
            Urgency::Now | Urgency::Ignore => Duration::ZERO,
            Urgency::Written => SETTLE,
            Urgency::Unfinished => QUIET,
        }
    }
}

/// The names whose events matter, from the last fingerprint.
struct Interest {
    /// `--policy` is a directory.
    is_dir: bool,
    /// The directory whose entries are the policy (itself, or the file's),
    /// resolved: events name paths under the directory watched.
    base: PathBuf,
    /// The policy file's name (a file policy).
    name: Option<std::ffi::OsString>,
    /// The files the loader reads, resolved.
    resolved: BTreeSet<PathBuf>,
    /// `--policy` itself when it is a symlink (a directory policy swapped
    /// with `ln -sfn`): its own directory is watched for it.
    link: Option<PathBuf>,
}

impl Interest {
    fn new(policy: &Path, seen: &Fingerprint) -> Self {
        let absolute = std::path::absolute(policy).unwrap_or_else(|_| policy.to_path_buf());
        let is_dir = absolute.is_dir();
        let base =
            if is_dir { absolute.clone() } else { absolute.parent().map_or(absolute.clone(), Path::to_path_buf) };
        let base = std::fs::canonicalize(&base).unwrap_or(base);
        let name = (!is_dir).then(|| absolute.file_name().map(std::ffi::OsStr::to_os_string)).flatten();
        let link = absolute.symlink_metadata().is_ok_and(|m| m.file_type().is_symlink()).then(|| {
            // The link's own directory, resolved, with the link's name: as events name it.
            let parent = absolute.parent().and_then(|p| std::fs::canonicalize(p).ok());
            match (parent, absolute.file_name()) {
                (Some(parent), Some(name)) => parent.join(name),
                _ => absolute.clone(),
            }
        });
        Interest { is_dir, base, name, resolved: seen.0.iter().map(|e| e.0.clone()).collect(), link }
    }

    /// The directories to watch: the base and those the files resolve into.
    fn dirs(&self) -> BTreeSet<PathBuf> {
        let mut dirs: BTreeSet<PathBuf> =
            self.resolved.iter().filter_map(|p| p.parent().map(Path::to_path_buf)).collect();
        dirs.insert(self.base.clone());
        dirs.extend(self.link.as_ref().and_then(|l| l.parent()).map(Path::to_path_buf));
        dirs
    }

    /// Whether an event on `path` may change what the loader reads.
    fn concerns(&self, path: &Path) -> bool {
        if self.resolved.contains(path) || path == self.base || self.link.as_deref() == Some(path) {
            return true;
        }
        if path.parent() != Some(self.base.as_path()) {
            return false;
        }
        let Some(name) = path.file_name() else { return false };
        name == "..data"
            || if self.is_dir {
                name.to_str().is_some_and(is_policy_file_name)
            } else {
                self.name.as_deref() == Some(name)
            }
    }

    fn urgency(&self, event: &notify::Result<notify::Event>) -> Urgency {
        let Ok(event) = event else { return Urgency::Unfinished };
        if event.need_rescan() {
            return Urgency::Unfinished;
        }
        if !event.paths.iter().any(|p| self.concerns(p)) {
            return Urgency::Ignore;
        }
        let is_symlink = |p: &PathBuf| p.symlink_metadata().is_ok_and(|m| m.file_type().is_symlink());
        match event.kind {
            // A rename's target is the new file, whole.
            EventKind::Modify(ModifyKind::Name(RenameMode::To)) => Urgency::Now,
            EventKind::Access(AccessKind::Close(AccessMode::Write)) => Urgency::Written,
            // `Both` pairs a `From` and a `To` reported already; reads and
            // opens (ours among them) change nothing.
            EventKind::Modify(ModifyKind::Name(RenameMode::Both)) | EventKind::Access(_) => Urgency::Ignore,
            // A symlink is made whole; a file is then written.
            EventKind::Create(_) if event.paths.iter().any(is_symlink) => Urgency::Now,
            _ => Urgency::Unfinished,
        }
    }
}

/// The running watcher; stopped (and its thread joined) on drop.
pub struct PolicyWatcher {
    wake: mpsc::Sender<Wake>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for PolicyWatcher {
    fn drop(&mut self) {
        let _ = self.wake.send(Wake::Stop);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Watches `policy` on a thread of its own and asks `requests` for a
/// reload on every change from `seen` (the fingerprint taken before the
/// files were last read, so that an edit made while they were being read
/// is not missed).
pub fn spawn(policy: PathBuf, seen: Fingerprint, requests: ReloadRequests) -> std::io::Result<PolicyWatcher> {
    let (tx, rx) = mpsc::channel();
    let events = tx.clone();
    let fs = match notify::recommended_watcher(move |ev| {
        let _ = events.send(Wake::Fs(ev));
    }) {
        Ok(w) => Some(w),
        Err(e) => {
            tracing::warn!("no file events for the policy ({e}): polling it every {POLL_WITHOUT_EVENTS:?}");
            None
        }
    };
    let interest = Interest::new(&policy, &seen);
    let mut state = State { policy, seen, requests, interest, fs, watched: BTreeSet::new() };
    state.rewatch();
    let thread = std::thread::Builder::new().name("egress-watch".into()).spawn(move || state.run(&rx))?;
    Ok(PolicyWatcher { wake: tx, thread: Some(thread) })
}

/// The watcher thread's state.
struct State {
    policy: PathBuf,
    seen: Fingerprint,
    requests: ReloadRequests,
    interest: Interest,
    fs: Option<notify::RecommendedWatcher>,
    watched: BTreeSet<PathBuf>,
}

impl State {
    fn poll_every(&self) -> Duration {
        if self.fs.is_some() && !self.watched.is_empty() { POLL } else { POLL_WITHOUT_EVENTS }
    }

    fn run(mut self, rx: &mpsc::Receiver<Wake>) {
        // First a look: an edit between the first install and now sent no event here.
        let mut next_poll = Instant::now();
        loop {
            let wake = match rx.recv_timeout(next_poll.saturating_duration_since(Instant::now())) {
                Ok(wake) => wake,
                Err(RecvTimeoutError::Timeout) => {
                    if fingerprint(&self.policy) != self.seen {
                        tracing::info!(policy = %self.policy.display(), "policy changed on disk (seen by polling)");
                        if !self.hold_still(rx) || !self.fire() {
                            return;
                        }
                    }
                    next_poll = Instant::now() + self.poll_every();
                    continue;
                }
                Err(RecvTimeoutError::Disconnected) => return,
            };
            let Wake::Fs(event) = wake else { return };
            self.forget_gone_dirs(&event);
            let urgency = self.interest.urgency(&event);
            if urgency == Urgency::Ignore {
                continue;
            }
            if !self.gather(rx, urgency) || !self.fire() {
                return;
            }
        }
    }

    /// After a first event: waits as long as the change needs, judged by
    /// the last event that concerns the policy (see [`Urgency::wait`]); a
    /// finished change waits only to take the events already queued.
    /// `false`: stop.
    fn gather(&mut self, rx: &mpsc::Receiver<Wake>, mut last: Urgency) -> bool {
        let mut at = Instant::now();
        loop {
            let wake = if last == Urgency::Now {
                match rx.try_recv() {
                    Ok(wake) => wake,
                    Err(TryRecvError::Empty) => return true,
                    Err(TryRecvError::Disconnected) => return false,
                }
            } else {
                match rx.recv_timeout((at + last.wait()).saturating_duration_since(Instant::now())) {
                    Ok(wake) => wake,
                    Err(RecvTimeoutError::Timeout) => return true,
                    Err(RecvTimeoutError::Disconnected) => return false,
                }
            };
            let Wake::Fs(event) = wake else { return false };
            self.forget_gone_dirs(&event);
            match self.interest.urgency(&event) {
                Urgency::Ignore => {}
                urgency => {
                    last = urgency;
                    at = Instant::now();
                }
            }
        }
    }

    /// A change seen by polling: waits until the fingerprint has held
    /// still for [`QUIET`] (a writer may be half-way). Events meanwhile are
    /// taken and dropped (the reload that follows reads everything).
    /// `false`: stop.
    fn hold_still(&mut self, rx: &mpsc::Receiver<Wake>) -> bool {
        let step = QUIET / 4;
        let mut last = fingerprint(&self.policy);
        let mut since = Instant::now();
        while since.elapsed() < QUIET {
            match rx.recv_timeout(step) {
                Ok(Wake::Fs(event)) => self.forget_gone_dirs(&event),
                Ok(Wake::Stop) | Err(RecvTimeoutError::Disconnected) => return false,
                Err(RecvTimeoutError::Timeout) => {}
            }
            let now = fingerprint(&self.policy);
            if now != last {
                last = now;
                since = Instant::now();
            }
        }
        true
    }

    /// A watched directory removed or moved: watched anew after the change.
    fn forget_gone_dirs(&mut self, event: &notify::Result<notify::Event>) {
        if let Ok(event) = event
            && matches!(event.kind, EventKind::Remove(_) | EventKind::Modify(ModifyKind::Name(_)))
        {
            for p in &event.paths {
                // The kernel may keep watching a directory moved away: let it go.
                if self.watched.remove(p)
                    && let Some(fs) = self.fs.as_mut()
                {
                    let _ = fs.unwatch(p);
                }
            }
        }
    }

    /// Asks for a reload; the fingerprint is taken first (the reload reads
    /// after it), and the directories watched follow the files. `false`
    /// when the reload task has ended.
    fn fire(&mut self) -> bool {
        self.seen = fingerprint(&self.policy);
        if !self.requests.request(Trigger::Files) {
            return false;
        }
        self.interest = Interest::new(&self.policy, &self.seen);
        self.rewatch();
        true
    }

    /// Watches the directories of [`Interest::dirs`], no others.
    fn rewatch(&mut self) {
        let Some(fs) = self.fs.as_mut() else { return };
        let wanted = self.interest.dirs();
        for gone in self.watched.difference(&wanted) {
            let _ = fs.unwatch(gone);
        }
        self.watched.retain(|d| wanted.contains(d));
        for dir in wanted.difference(&self.watched.clone()) {
            match fs.watch(dir, RecursiveMode::NonRecursive) {
                Ok(()) => {
                    self.watched.insert(dir.clone());
                }
                Err(e) => tracing::debug!(dir = %dir.display(), "watching: {e}"),
            }
        }
    }
}

#[cfg(test)]
#[path = "watch_tests.rs"]
mod tests;
