//! A bpffs of a test's own: a `/sys/fs/bpf` would not survive `ip netns
//! exec` (it remounts /sys in a mount namespace that dies with the agent),
//! so tests that need pins to outlive an agent mount one on a directory of
//! their own, in the test's mount namespace, and unmount it on drop.

use std::ffi::CString;
use std::io;
use std::path::PathBuf;

/// A mounted bpffs, unmounted (lazily) on drop.
pub struct Bpffs(pub PathBuf);

impl Bpffs {
    /// Mounts a bpffs on a fresh directory named after `tag` and this
    /// process, private to its owner as the agent requires of a pin
    /// directory (a bpffs is mounted world-writable otherwise).
    pub fn new(tag: &str) -> io::Result<Bpffs> {
        let dir = std::env::temp_dir().join(format!("egress-pins-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let target = CString::new(dir.as_os_str().as_encoded_bytes()).map_err(io::Error::other)?;
        let opts = c"mode=0700";
        // SAFETY: mount(2) with NUL-terminated strings.
        let rc = unsafe { libc::mount(c"bpf".as_ptr(), target.as_ptr(), c"bpf".as_ptr(), 0, opts.as_ptr().cast()) };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Bpffs(dir))
    }

    /// The directory, as an argument.
    pub fn arg(&self) -> String {
        self.0.to_string_lossy().into_owned()
    }
}

impl Drop for Bpffs {
    fn drop(&mut self) {
        if let Ok(target) = CString::new(self.0.as_os_str().as_encoded_bytes()) {
            // SAFETY: umount2(2) of the mount made in `new`.
            unsafe { libc::umount2(target.as_ptr(), libc::MNT_DETACH) };
        }
        let _ = std::fs::remove_dir(&self.0);
    }
}
