//! Writing many elements of a hash map in few system calls
//! (`BPF_MAP_UPDATE_BATCH`): a pack's first install writes hundreds of
//! thousands of table entries, and one call each was most of its time.

use std::os::fd::{AsFd as _, AsRawFd as _};

use aya::maps::MapData;

/// The `bpf(2)` command.
const BPF_MAP_UPDATE_BATCH: libc::c_long = 26;
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
    let fd = map.fd().as_fd().as_raw_fd();
    let mut written = 0;
    for (k, v) in keys.chunks(CHUNK).zip(values.chunks(CHUNK)) {
        let mut attr = BatchAttr {
            keys: k.as_ptr() as u64,
            values: v.as_ptr() as u64,
            count: k.len() as u32,
            map_fd: fd as u32,
            ..BatchAttr::default()
        };
        // SAFETY: `attr` points at `k.len()` keys and as many values of the
        // map's key and value sizes (Pod types of those sizes), alive for
        // the call; the kernel reads at most `size_of::<BatchAttr>()`.
        let r = unsafe { libc::syscall(libc::SYS_bpf, BPF_MAP_UPDATE_BATCH, &raw mut attr, size_of::<BatchAttr>()) };
        if r < 0 {
            return Err((written + attr.count as usize, std::io::Error::last_os_error()));
        }
        written += k.len();
    }
    Ok(())
}
