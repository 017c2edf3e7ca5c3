//! Writing and deleting many elements of a hash map in few system calls
//! (`BPF_MAP_UPDATE_BATCH`, `BPF_MAP_DELETE_BATCH`): a pack's first
//! install writes hundreds of thousands of table entries, and one call
//! each was most of its time.

use std::os::fd::{AsFd as _, AsRawFd as _};

use aya::maps::MapData;

/// The `bpf(2)` commands.
const BPF_MAP_UPDATE_BATCH: libc::c_long = 26;
const BPF_MAP_DELETE_BATCH: libc::c_long = 27;
/// The kernel's own "not supported" (`ENOTSUPP`, not in libc).
const ENOTSUPP: i32 = 524;
/// Elements a call writes at most (the kernel copies keys and values in).
const CHUNK: usize = 4_096;

/// `union bpf_attr`'s `batch` member.
#[repr(C)]
#[derive(Default)]
struct BatchAttr {
    in_batch: u64,
    out_batch: u64,
    keys: u64,
    values: u64,
    count: u32,
    map_fd: u32,
    elem_flags: u64,
    flags: u64,
}

/// Writes `keys[i] → values[i]` into the hash map `map`. An error says
/// how many went in before it (the first `written`); a kernel without
/// batches for the map fails the first call with nothing written.
pub fn update<K: aya::Pod, V: aya::Pod>(
    map: &MapData,
    keys: &[K],
    values: &[V],
) -> Result<(), (usize, std::io::Error)> {
    let mut done = 0;
    for (k, v) in keys.chunks(CHUNK).zip(values.chunks(CHUNK)) {
        // SAFETY: `v` holds as many values as `k` keys, of the map's value size.
        done += unsafe { call(BPF_MAP_UPDATE_BATCH, map, k, v.as_ptr() as u64) }.map_err(|(n, e)| (done + n, e))?;
    }
    Ok(())
}

/// Deletes `keys` (all present) from the hash map `map`. An error says
/// how many went before it (the first `deleted`).
pub fn delete<K: aya::Pod>(map: &MapData, keys: &[K]) -> Result<(), (usize, std::io::Error)> {
    let mut done = 0;
    for k in keys.chunks(CHUNK) {
        // SAFETY: a delete reads no values.
        done += unsafe { call(BPF_MAP_DELETE_BATCH, map, k, 0) }.map_err(|(n, e)| (done + n, e))?;
    }
    Ok(())
}

/// One batch call of `cmd` over `keys` (and `values`, the address of as
/// many values, for an update). Returns how many it did; an error, how
/// many it did before failing.
///
/// # Safety
/// `values` is 0 or points at `keys.len()` values of the map's value size.
unsafe fn call<K: aya::Pod>(
    cmd: libc::c_long,
    map: &MapData,
    keys: &[K],
    values: u64,
) -> Result<usize, (usize, std::io::Error)> {
    let mut attr = BatchAttr {
        keys: keys.as_ptr() as u64,
        values,
        count: keys.len() as u32,
        map_fd: map.fd().as_fd().as_raw_fd() as u32,
        ..BatchAttr::default()
    };
    // SAFETY: `attr` points at `keys.len()` keys of the map's key size (a
    // Pod type of that size) and, by the caller, at as many values, alive
    // for the call; the kernel reads at most `size_of::<BatchAttr>()`.
    let r = unsafe { libc::syscall(libc::SYS_bpf, cmd, &raw mut attr, size_of::<BatchAttr>()) };
    if r < 0 {
        let e = std::io::Error::last_os_error();
        // Refused before any element (no batches for this map, bad
        // arguments): the kernel leaves `count` as it was given.
        let refused = matches!(e.raw_os_error(), Some(libc::EINVAL | libc::EOPNOTSUPP | libc::EPERM | ENOTSUPP));
        return Err((if refused { 0 } else { attr.count as usize }, e));
    }
    Ok(keys.len())
}
