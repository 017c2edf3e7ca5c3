//! Cleans a lab up on Ctrl-C or SIGTERM: the namespaces and processes it
//! registered are removed before the process exits.
//!
//! [`on_interrupt`] blocks SIGINT and SIGTERM in the calling thread (and so
//! in every thread it starts later) and waits for them on a thread of its
//! own. Children started through [`unblocked`] get the default mask back.

use std::process::Command;
use std::sync::Mutex;

static NAMESPACES: Mutex<Vec<String>> = Mutex::new(Vec::new());
static PIDS: Mutex<Vec<u32>> = Mutex::new(Vec::new());

/// Remembers a namespace to delete on interrupt.
pub fn register_netns(name: &str) {
    if let Ok(mut v) = NAMESPACES.lock() {
        v.push(name.to_string());
    }
}

/// Forgets a namespace (it was deleted normally).
pub fn forget_netns(name: &str) {
    if let Ok(mut v) = NAMESPACES.lock() {
        v.retain(|n| n != name);
    }
}

/// Remembers a child to stop on interrupt.
pub fn register_pid(pid: u32) {
    if let Ok(mut v) = PIDS.lock() {
        v.push(pid);
    }
}

/// Forgets a child (it was stopped normally).
pub fn forget_pid(pid: u32) {
    if let Ok(mut v) = PIDS.lock() {
        v.retain(|p| *p != pid);
    }
}

fn signal_set() -> libc::sigset_t {
    // SAFETY: sigset_t is plain data, initialised by sigemptyset.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&raw mut set);
        libc::sigaddset(&raw mut set, libc::SIGINT);
        libc::sigaddset(&raw mut set, libc::SIGTERM);
        set
    }
}

/// Installs the interrupt handler. Call it first in `main`, before any
/// thread is started.
pub fn on_interrupt() {
    let set = signal_set();
    // SAFETY: changes this thread's signal mask only.
    unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &raw const set, std::ptr::null_mut()) };
    std::thread::spawn(move || {
        let mut sig = 0;
        // SAFETY: waits for a signal of the blocked set.
        unsafe { libc::sigwait(&raw const set, &raw mut sig) };
        eprintln!("\ninterrupted: cleaning up the lab");
        cleanup_now();
        std::process::exit(130);
    });
}

/// Stops registered children and deletes registered namespaces.
pub fn cleanup_now() {
    let pids: Vec<u32> = PIDS.lock().map(|v| v.clone()).unwrap_or_default();
    for pid in &pids {
        // SAFETY: kill(2) on a child we started.
        unsafe { libc::kill(*pid as i32, libc::SIGTERM) };
    }
    if !pids.is_empty() {
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
    let names: Vec<String> = NAMESPACES.lock().map(|v| v.clone()).unwrap_or_default();
    for n in names {
        let _ = Command::new("ip").args(["netns", "del", &n]).status();
    }
}

/// A command whose child starts with SIGINT and SIGTERM unblocked.
pub fn unblocked(program: &str) -> Command {
    use std::os::unix::process::CommandExt;
    let mut cmd = Command::new(program);
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            let set = signal_set();
            libc::pthread_sigmask(libc::SIG_UNBLOCK, &raw const set, std::ptr::null_mut());
            Ok(())
        });
    }
    cmd
}
