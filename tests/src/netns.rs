//! Network namespaces for labs: create, run commands in, open sockets in,
//! delete. Sockets keep the namespace they were created in, so a thread
//! that enters a namespace can hand them back to any other thread.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::process::{Command, Output};

/// Runs `ip` with the arguments, failing on a non-zero exit.
pub fn ip(args: &[&str]) -> io::Result<()> {
    let out = Command::new("ip").args(args).output()?;
    if !out.status.success() {
        return Err(io::Error::other(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(())
}

/// Runs a command inside namespace `ns` and returns its output.
pub fn exec(ns: &str, cmd: &[&str]) -> io::Result<Output> {
    Command::new("ip").args(["netns", "exec", ns]).args(cmd).output()
}

/// Runs `f` on a thread that has entered namespace `ns`.
pub fn within<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> io::Result<T> {
    let path = format!("/var/run/netns/{ns}");
    std::thread::spawn(move || -> io::Result<T> {
        let file = File::open(&path)?;
        // SAFETY: setns on a namespace file we hold open; it affects this thread only.
        if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(f())
    })
    .join()
    .map_err(|_| io::Error::other("namespace thread panicked"))?
}

/// A network namespace, deleted on drop.
pub struct Netns {
    pub name: String,
}

impl Netns {
    /// Creates the namespace with its loopback up.
    pub fn new(name: &str) -> io::Result<Self> {
        let _ = ip(&["netns", "del", name]);
        ip(&["netns", "add", name])?;
        super::cleanup::register_netns(name);
        let ns = Netns { name: name.to_string() };
        ns.ip(&["link", "set", "lo", "up"])?;
        // No duplicate address detection: link-local addresses are usable at
        // once, so neighbour discovery works from the first packet.
        ns.sysctl("net.ipv6.conf.all.accept_dad", "0")?;
        ns.sysctl("net.ipv6.conf.default.accept_dad", "0")?;
        Ok(ns)
    }

    /// Runs `ip` inside the namespace.
    pub fn ip(&self, args: &[&str]) -> io::Result<()> {
        let mut full = vec!["-n", self.name.as_str()];
        full.extend_from_slice(args);
        ip(&full)
    }

    /// Sets a `net.*` sysctl inside the namespace (`/proc/sys/net` follows
    /// the network namespace of the thread that opens it).
    pub fn sysctl(&self, key: &str, value: &str) -> io::Result<()> {
        let path = format!("/proc/sys/{}", key.replace('.', "/"));
        let value = value.to_string();
        within(&self.name, move || std::fs::write(path, value))?
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = ip(&["netns", "del", &self.name]);
        super::cleanup::forget_netns(&self.name);
    }
}
