//! An RCU grace-period barrier from userspace.
//!
//! Updating a map-in-map from userspace returns only after every BPF program
//! that was running when the update began has finished (the kernel's
//! `maybe_wait_bpf_programs`). After flipping the live slot, one such update
//! guarantees that no packet still reads the slot that just went idle, so
//! it can be refilled. aya 0.14 creates no standalone map-in-map, hence the
//! raw `bpf(2)` calls.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

const BPF_MAP_CREATE: libc::c_long = 0;
const BPF_MAP_UPDATE_ELEM: libc::c_long = 2;
const BPF_MAP_TYPE_ARRAY: u32 = 2;
const BPF_MAP_TYPE_ARRAY_OF_MAPS: u32 = 12;

/// `union bpf_attr` for `BPF_MAP_CREATE` (the fields used here).
#[repr(C)]
#[derive(Default)]
struct MapCreateAttr {
    map_type: u32,
    key_size: u32,
    value_size: u32,
    max_entries: u32,
    map_flags: u32,
    inner_map_fd: u32,
    _rest: [u64; 12],
}

/// `union bpf_attr` for `BPF_MAP_UPDATE_ELEM`.
#[repr(C)]
#[derive(Default)]
struct MapElemAttr {
    map_fd: u32,
    _pad: u32,
    key: u64,
    value: u64,
    flags: u64,
}

/// `bpf(2)` with `attr` (a `union bpf_attr` prefix) for `cmd`.
pub(super) fn bpf<T>(cmd: libc::c_long, attr: &mut T) -> io::Result<libc::c_long> {
    // SAFETY: `attr` is a valid, initialised bpf_attr prefix of the given size.
    let ret = unsafe {
        libc::syscall(libc::SYS_bpf, cmd, std::ptr::from_mut(attr).cast::<libc::c_void>(), std::mem::size_of::<T>())
    };
    if ret < 0 { Err(io::Error::last_os_error()) } else { Ok(ret) }
}

fn create(attr: &mut MapCreateAttr) -> io::Result<OwnedFd> {
    let fd = bpf(BPF_MAP_CREATE, attr)?;
    // SAFETY: the kernel returned a new file descriptor that we now own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// A one-slot array of maps and the inner map stored into it.
pub struct RcuBarrier {
    outer: OwnedFd,
    inner: OwnedFd,
}

impl RcuBarrier {
    /// Creates the two maps.
    pub fn new() -> io::Result<Self> {
        let inner = create(&mut MapCreateAttr {
            map_type: BPF_MAP_TYPE_ARRAY,
            key_size: 4,
            value_size: 4,
            max_entries: 1,
            ..Default::default()
        })?;
        let outer = create(&mut MapCreateAttr {
            map_type: BPF_MAP_TYPE_ARRAY_OF_MAPS,
            key_size: 4,
            value_size: 4,
            max_entries: 1,
            inner_map_fd: inner.as_raw_fd() as u32,
            ..Default::default()
        })?;
        Ok(RcuBarrier { outer, inner })
    }

    /// Returns after an RCU grace period: every BPF program run that started
    /// before this call has finished.
    pub fn wait(&self) -> io::Result<()> {
        let key: u32 = 0;
        let value: u32 = self.inner.as_raw_fd() as u32;
        bpf(
            BPF_MAP_UPDATE_ELEM,
            &mut MapElemAttr {
                map_fd: self.outer.as_raw_fd() as u32,
                key: (&raw const key) as u64,
                value: (&raw const value) as u64,
                ..Default::default()
            },
        )?;
        Ok(())
    }
}

/// A grace period being waited for on a thread of its own, so that a swap
/// returns as soon as the new pack is live; the next swap finishes it
/// before it writes the slot that went idle.
pub enum PendingBarrier {
    /// Being waited for on this thread.
    Waiting(std::thread::JoinHandle<io::Result<()>>),
    /// Not waited for at all yet (no thread could be started, or the wait
    /// failed): [`PendingBarrier::finish`] fails and the caller waits itself.
    Owed,
}

impl RcuBarrier {
    /// Starts waiting for a grace period in the background.
    pub fn start(self: &std::sync::Arc<Self>) -> io::Result<PendingBarrier> {
        let me = self.clone();
        std::thread::Builder::new()
            .name("egress-rcu-barrier".into())
            .spawn(move || me.wait())
            .map(PendingBarrier::Waiting)
    }
}

impl PendingBarrier {
    /// Returns once the grace period has passed.
    pub fn finish(self) -> io::Result<()> {
        match self {
            PendingBarrier::Waiting(t) => t.join().map_err(|_| io::Error::other("the barrier thread panicked"))?,
            PendingBarrier::Owed => Err(io::Error::other("no grace period was waited for yet")),
        }
    }
}
