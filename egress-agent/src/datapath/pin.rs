//! Pinning: every map and link of the datapath lives under
//! `DIR/v{LAYOUT_VERSION}/` on a bpffs, so that the datapath keeps enforcing
//! when the agent exits or crashes, and a new agent adopts it.
//!
//! ```text
//! DIR/v6/EGV6_LIVE, DIR/v6/EGV6_SRC4_0, ...   maps, by name
//! DIR/v6/links/tc_ingress@lan0, ...           links, by hook and interface
//! ```
//! A layout version in the path keeps an agent from reinterpreting maps of
//! another layout.

use std::ffi::CString;
use std::io;
use std::os::unix::fs::DirBuilderExt as _;
use std::path::{Path, PathBuf};

use egress_common::LAYOUT_VERSION;
use egress_common::maps;

/// `statfs` magic of a bpffs.
const BPF_FS_MAGIC: i64 = 0xcafe_4a11;

/// A prepared pin directory.
#[derive(Debug, Clone)]
pub struct PinDir {
    root: PathBuf,
    /// The directory held with an exclusive `flock` while this agent uses
    /// it (released when the process ends, however it ends).
    _lock: Option<std::sync::Arc<std::fs::File>>,
}

/// Takes an exclusive, non-blocking `flock` on the directory `root`.
fn lock(root: &Path) -> io::Result<std::fs::File> {
    use std::os::fd::AsRawFd as _;
    let dir = std::fs::File::open(root)?;
    // SAFETY: flock on a descriptor we own.
    if unsafe { libc::flock(dir.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        let e = io::Error::last_os_error();
        if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
            return Err(io::Error::other(format!(
                "another egress-agent is running with the pin directory {} (two would write each other's pack slots)",
                root.display()
            )));
        }
        return Err(e);
    }
    Ok(dir)
}

/// Which hook a link is.
#[derive(Debug, Clone, Copy)]
pub enum LinkKind {
    TcIngress,
    TcEgress,
    Xdp,
}

impl LinkKind {
    fn suffix(self) -> &'static str {
        match self {
            LinkKind::TcIngress => "tc_ingress",
            LinkKind::TcEgress => "tc_egress",
            LinkKind::Xdp => "xdp",
        }
    }
}

fn mkdir_private(path: &Path) -> io::Result<()> {
    std::fs::DirBuilder::new().recursive(true).mode(0o700).create(path)
}

fn is_bpffs(path: &Path) -> io::Result<bool> {
    let c = CString::new(path.as_os_str().as_encoded_bytes()).map_err(io::Error::other)?;
    // SAFETY: statfs fills the struct we own from a NUL-terminated path.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    if unsafe { libc::statfs(c.as_ptr(), &raw mut st) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(st.f_type as i64 == BPF_FS_MAGIC)
}

/// Refuses a directory the agent would trust pins from unless it is the
/// agent's own: a real directory (not a symlink), owned by the agent's
/// user, writable by no one else. Another user who could write there could
/// put maps or links of their own in place for the agent to adopt.
pub fn check_private(path: &Path) -> io::Result<()> {
    use std::os::unix::fs::MetadataExt as _;
    let meta = std::fs::symlink_metadata(path)?;
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    let mode = meta.mode() & 0o7777;
    let why = if meta.file_type().is_symlink() {
        "it is a symbolic link".to_string()
    } else if !meta.is_dir() {
        "it is not a directory".to_string()
    } else if meta.uid() != euid {
        format!("it is owned by uid {}, not the agent's uid {euid}", meta.uid())
    } else if mode & 0o022 != 0 {
        format!("its mode {mode:04o} lets others write to it")
    } else {
        return Ok(());
    };
    Err(io::Error::new(
        io::ErrorKind::PermissionDenied,
        format!(
            "refusing the pin directory {}: {why} (it must be the agent's own, writable by no one else, or \
             another user could plant the maps and links it adopts)",
            path.display()
        ),
    ))
}

/// Where systems mount the bpffs.
const SYSTEM_BPFFS: &str = "/sys/fs/bpf";

fn mount_bpffs(at: &Path, opts: &std::ffi::CStr) -> io::Result<()> {
    let target = CString::new(at.as_os_str().as_encoded_bytes()).map_err(io::Error::other)?;
    let fs = c"bpf";
    // SAFETY: mount(2) with NUL-terminated strings we own.
    if unsafe { libc::mount(fs.as_ptr(), target.as_ptr(), fs.as_ptr(), 0, opts.as_ptr().cast()) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

impl PinDir {
    /// Creates `root` (mode 0700) and mounts a bpffs on it unless it is on
    /// one already, and locks it: a second agent on the same directory is
    /// refused (it would write the first one's pack slots).
    pub fn prepare(root: &Path) -> io::Result<Self> {
        // The default lives under /sys/fs/bpf, which is a plain sysfs
        // directory until something mounts the bpffs there (systemd does;
        // `ip netns exec` remounts /sys without it).
        let system = Path::new(SYSTEM_BPFFS);
        if root.starts_with(system) && root != system && system.is_dir() && !is_bpffs(system)? {
            mount_bpffs(system, c"mode=0700")?;
        }
        mkdir_private(root)?;
        if !is_bpffs(root)? {
            mount_bpffs(root, c"mode=0700")?;
        }
        check_private(root)?;
        let held = lock(root)?;
        let dir = PinDir { root: root.to_path_buf(), _lock: Some(std::sync::Arc::new(held)) };
        // What is pinned already must be the agent's own too.
        for existing in [dir.layout(), dir.links()] {
            if existing.exists() {
                check_private(&existing)?;
            }
        }
        mkdir_private(&dir.links())?;
        Ok(dir)
    }

    /// An existing pin directory, for `detach` and `status` (nothing is
    /// created, nothing locked).
    pub fn existing(root: &Path) -> Self {
        PinDir { root: root.to_path_buf(), _lock: None }
    }

    /// The directory of this layout version.
    pub fn layout(&self) -> PathBuf {
        self.root.join(format!("v{LAYOUT_VERSION}"))
    }

    fn links(&self) -> PathBuf {
        self.layout().join("links")
    }

    /// The directory of pinned links (`hook@interface`).
    pub fn links_dir(&self) -> PathBuf {
        self.links()
    }

    /// Where map `name` is pinned.
    pub fn map(&self, name: &str) -> PathBuf {
        self.layout().join(name)
    }

    /// Where the link of `kind` on `iface` is pinned. bpffs reserves dots
    /// in names (EPERM), and interface names may have some (`eth0.100`).
    pub fn link(&self, iface: &str, kind: LinkKind) -> PathBuf {
        self.links().join(format!("{}@{}", kind.suffix(), iface.replace('.', "_")))
    }

    /// Whether a datapath of this layout is pinned here.
    pub fn has_datapath(&self) -> bool {
        self.map(maps::LIVE).exists()
    }

    /// Layout directories of other versions found here.
    pub fn other_layouts(&self) -> Vec<PathBuf> {
        let current = format!("v{LAYOUT_VERSION}");
        std::fs::read_dir(&self.root)
            .map(|d| {
                d.filter_map(Result::ok)
                    .map(|e| e.path())
                    .filter(|p| {
                        p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with('v') && n != current)
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Removes every pin of this layout: links first (which detaches the
    /// programs), then maps. Returns how many pins were removed.
    pub fn remove_all(&self) -> io::Result<usize> {
        remove_layout(&self.layout())
    }

    /// Removes the pins of another layout version found here (`layout` is
    /// one of [`PinDir::other_layouts`]): its links first, which detaches
    /// its programs, then its maps.
    pub fn remove_other(&self, layout: &Path) -> io::Result<usize> {
        if !layout.starts_with(&self.root) || layout == self.layout() {
            return Err(io::Error::other(format!("{} is not another layout here", layout.display())));
        }
        remove_layout(layout)
    }
}

fn remove_layout(layout: &Path) -> io::Result<usize> {
    {
        let links = layout.join("links");
        let mut removed = 0;
        for dir in [links.clone(), layout.to_path_buf()] {
            let Ok(entries) = std::fs::read_dir(&dir) else { continue };
            for e in entries.filter_map(Result::ok) {
                if e.file_type().is_ok_and(|t| !t.is_dir()) {
                    std::fs::remove_file(e.path())?;
                    removed += 1;
                }
            }
        }
        let _ = std::fs::remove_dir(&links);
        let _ = std::fs::remove_dir(layout);
        Ok(removed)
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use super::check_private;

    #[test]
    fn only_a_private_directory_of_the_agents_own_is_trusted() {
        let dir = std::env::temp_dir().join(format!("egress-pin-check-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir(&dir).expect("temp dir");
        let set = |mode| std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(mode)).expect("chmod");
        set(0o700);
        check_private(&dir).expect("0700 and ours");
        set(0o755);
        check_private(&dir).expect("readable by others is fine");
        set(0o777);
        let e = check_private(&dir).expect_err("world-writable").to_string();
        assert!(e.contains("mode 0777 lets others write"), "{e}");
        set(0o770);
        assert!(check_private(&dir).is_err(), "group-writable");
        set(0o700);
        let link = dir.with_extension("link");
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(&dir, &link).expect("symlink");
        let e = check_private(&link).expect_err("a symlink").to_string();
        assert!(e.contains("symbolic link"), "{e}");
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } == 0 {
            std::os::unix::fs::chown(&dir, Some(4242), None).expect("chown");
            let e = check_private(&dir).expect_err("another user's").to_string();
            assert!(e.contains("owned by uid 4242"), "{e}");
        }
        let _ = std::fs::remove_file(&link);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
