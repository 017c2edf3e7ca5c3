//! Shared mappings of `BPF_F_MMAPABLE` arrays: the installer writes a
//! slot's port, default and rule arrays with plain stores instead of one
//! syscall per element. Only the idle slot is ever written (no packet reads
//! it), so plain stores are safe.

use std::io;
use std::marker::PhantomData;
use std::os::fd::{AsRawFd, BorrowedFd};

/// An array map's values, mapped into this process.
pub struct MmapArray<V> {
    base: *mut u8,
    len: usize,
    /// Bytes from one element to the next (the kernel rounds to 8).
    stride: usize,
    entries: u32,
    _values: PhantomData<V>,
}

// SAFETY: the mapping is owned by this value and only accessed through &mut.
unsafe impl<V: Send> Send for MmapArray<V> {}

impl<V: aya::Pod> MmapArray<V> {
    /// Maps the `entries` values of the array map `fd`.
    pub fn new(fd: BorrowedFd<'_>, entries: u32) -> io::Result<Self> {
        let stride = std::mem::size_of::<V>().div_ceil(8) * 8;
        // SAFETY: sysconf has no preconditions.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(4096) as usize;
        let len = (stride * entries as usize).div_ceil(page) * page;
        // SAFETY: a fresh shared mapping of the map's value area; the kernel
        // checks the length against the map and the map's mmapable flag.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(MmapArray { base: base.cast(), len, stride, entries, _values: PhantomData })
    }

    /// Element `i`, or `None` past the end.
    pub fn get(&self, i: u32) -> Option<V> {
        (i < self.entries).then(|| {
            // SAFETY: in bounds of the mapping; V is plain data.
            unsafe { std::ptr::read_unaligned(self.base.add(i as usize * self.stride).cast::<V>()) }
        })
    }

    /// Sets element `i`; `false` past the end.
    pub fn set(&mut self, i: u32, v: V) -> bool {
        if i >= self.entries {
            return false;
        }
        // SAFETY: in bounds of the mapping; V is plain data.
        unsafe { std::ptr::write_unaligned(self.base.add(i as usize * self.stride).cast::<V>(), v) };
        true
    }
}

impl<V> Drop for MmapArray<V> {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the mapping made in `new`, once.
        unsafe { libc::munmap(self.base.cast(), self.len) };
    }
}
