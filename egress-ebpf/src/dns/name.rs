//! Names: reading one from the message (up to 8 characters a `bpf_loop` step,
//! following compression pointers), and the WebGroups whose patterns cover
//! it (a scan over its suffixes, up to 8 bytes a step). Both callbacks are
//! verified once, whatever calls them.

use core::ffi::c_void;
use core::ptr::{addr_of, addr_of_mut};

use aya_ebpf::helpers::bpf_loop;
use aya_ebpf::helpers::generated::bpf_probe_read_kernel;
use egress_common::{
    DnsStat, FNV_OFFSET, GUARD_LABEL_LONG, GUARD_LABEL_MIN, NAME_ANY_DEPTH, NAME_BUF, NAME_EXACT, NAME_ONE_LABEL,
    NAME_SHORT, NameKey, ShortNameKey, fnv1a_step,
};

use super::message::{byte, failed, scratch};
use crate::maps::{EGV6_SLOT_META, SLOT0, SLOT1, Slot};
use crate::scratch::{CLASS_DIGIT, CLASS_JOINER, CLASS_LETTER, DONE, FAILED, RUNNING, Scratch, Walk, vget, vset};

/// Iterations of the name loop: 253 characters, 127 length bytes, pointers.
const NAME_STEPS: usize = 400;
/// Characters of a label a name-walk step takes at most.
const LABEL_BYTES_PER_STEP: u32 = 8;
/// Compression pointers followed in one name at most.
const MAX_POINTERS: u32 = 16;

/// A name read from the message.
#[derive(Clone, Copy)]
pub struct Name {
    /// Text length (copied names only).
    pub len: usize,
    /// Offset just after the name where it started.
    pub next: usize,
    /// FNV-1a of the lowercase dotted name.
    pub hash: u64,
    /// Every byte of every label is a letter, a digit, `-` or `_`. Any
    /// other byte makes the name unreadable: a NUL vanishes into the zero
    /// padding of the right-aligned name key, a `.` reads as a separator.
    pub clean: bool,
}

/// One step of a name walk: one character, length byte or pointer.
extern "C" fn name_step(_index: u64, _ctx: *mut c_void) -> i64 {
    let Some(s) = scratch() else { return 1 };
    let w = &mut s.walk;
    let fail = |w: &mut Walk, e: DnsStat| {
        w.status = FAILED + e as u64;
        1
    };
    if w.pos >= w.len {
        // The name runs off the end: no root label.
        return fail(w, DnsStat::BadName);
    }
    if w.label_left > 0 {
        take_label(s);
        return 0;
    }
    let b = byte(&s.msg, w.pos as usize);
    if b == 0 {
        if w.jumped == 0 {
            w.next = w.pos + 1;
        }
        w.status = DONE;
        return 1;
    }
    if b & 0xc0 == 0xc0 {
        if w.pos + 1 >= w.len {
            return fail(w, DnsStat::BadPointer);
        }
        // Pointers must go strictly before everything read for this name:
        // no loops, no forward or self pointers, never past the end.
        let target = (u64::from(b & 0x3f) << 8) | u64::from(byte(&s.msg, w.pos as usize + 1));
        w.pointers += 1;
        if target >= w.lowest || w.pointers > u64::from(MAX_POINTERS) {
            return fail(w, DnsStat::BadPointer);
        }
        if w.jumped == 0 {
            w.next = w.pos + 2;
            w.jumped = 1;
        }
        w.lowest = target;
        w.pos = target;
        return 0;
    }
    if b & 0xc0 != 0 {
        // 64..=191: labels over 63 bytes and extended label types.
        return fail(w, DnsStat::BadName);
    }
    if w.olen != 0 {
        if w.copy != 0 {
            // SAFETY: masked index.
            unsafe { *s.name.get_unchecked_mut((w.olen as usize) & 0xff) = b'.' };
        }
        w.hash = fnv1a_step(w.hash, b'.');
        w.olen += 1;
    }
    if w.olen + u64::from(b) > (NAME_BUF - 3) as u64 {
        return fail(w, DnsStat::BadName);
    }
    w.label_left = u64::from(b);
    w.pos += 1;
    // The label's first characters in the same step.
    take_label(s);
    0
}

/// Up to [`LABEL_BYTES_PER_STEP`] characters of the label being read: the
/// callback's cost, not the byte's, is most of a step.
#[inline(always)]
fn take_label(s: &mut Scratch) {
    let w = &mut s.walk;
    let mut taken = 0;
    while taken < LABEL_BYTES_PER_STEP && w.label_left > 0 && w.pos < w.len {
        let b = byte(&s.msg, w.pos as usize);
        if !(b.is_ascii_alphanumeric() || b == b'-' || b == b'_') {
            w.bad = 1;
        }
        let c = if b.is_ascii_uppercase() { b + 32 } else { b };
        if w.copy != 0 {
            // SAFETY: masked index; olen stays below 253 (checked per label).
            unsafe { *s.name.get_unchecked_mut((w.olen as usize) & 0xff) = c };
        }
        w.hash = fnv1a_step(w.hash, c);
        w.olen += 1;
        w.label_left -= 1;
        w.pos += 1;
        taken += 1;
    }
}

/// Reads the name at `start`, following compression pointers. With `copy`,
/// writes the lowercase dotted name into `s.name`. Whether its bytes are
/// all readable is in [`Name::clean`]; what an unclean name means is the
/// caller's to decide.
#[inline(always)]
pub fn read_name(s: &mut Scratch, len: usize, start: usize, copy: bool) -> Result<Name, DnsStat> {
    let w = &raw mut s.walk;
    // SAFETY: `w` points into the per-CPU scratch; the callback only
    // touches the scratch (see `crate::scratch` on the hand-over).
    let (status, olen, next, hash) = unsafe {
        vset(addr_of_mut!((*w).len), len as u64);
        vset(addr_of_mut!((*w).pos), start as u64);
        vset(addr_of_mut!((*w).lowest), start as u64);
        vset(addr_of_mut!((*w).next), 0);
        vset(addr_of_mut!((*w).label_left), 0);
        vset(addr_of_mut!((*w).olen), 0);
        vset(addr_of_mut!((*w).hash), FNV_OFFSET);
        vset(addr_of_mut!((*w).pointers), 0);
        vset(addr_of_mut!((*w).jumped), 0);
        vset(addr_of_mut!((*w).copy), u64::from(copy));
        vset(addr_of_mut!((*w).bad), 0);
        vset(addr_of_mut!((*w).status), RUNNING);
        bpf_loop(NAME_STEPS as u32, name_step as *mut c_void, core::ptr::null_mut(), 0);
        (vget(addr_of!((*w).status)), vget(addr_of!((*w).olen)), vget(addr_of!((*w).next)), vget(addr_of!((*w).hash)))
    };
    // SAFETY: as above.
    let clean = unsafe { vget(addr_of!((*w).bad)) } == 0;
    match status {
        DONE => Ok(Name { len: olen as usize, next: next as usize, hash, clean }),
        code => Err(failed(code).unwrap_or(DnsStat::BadName)),
    }
}

/// One step of the suffix scan: zero up to [`LABEL_BYTES_PER_STEP`] bytes
/// of the key, a label's; at a dot, the key holds the next suffix: look it
/// up as `*.` (first only) and `**.`.
extern "C" fn scan_step(_index: u64, _ctx: *mut c_void) -> i64 {
    let Some(s) = scratch() else { return 1 };
    let mut c = 0;
    let mut taken = 0;
    while taken < LABEL_BYTES_PER_STEP {
        let i = s.scan.i as usize;
        if i >= NAME_BUF {
            return 1;
        }
        // SAFETY: masked index.
        c = unsafe { *s.key.get_unchecked(i & 0xff) };
        // SAFETY: masked index.
        unsafe { *s.key.get_unchecked_mut(i & 0xff) = 0 };
        s.scan.i += 1;
        if s.scan.zone == 0 {
            s.scan.keyed = fnv1a_step(s.scan.keyed, c);
        }
        if c == b'.' {
            break;
        }
        s.scan.label += 1;
        s.scan.classes |= match c {
            b'0'..=b'9' => CLASS_DIGIT,
            b'-' | b'_' => CLASS_JOINER,
            _ => CLASS_LETTER,
        };
        taken += 1;
    }
    if c != b'.' {
        return 0;
    }
    let i = s.scan.i as usize - 1;
    // A label ends: random-looking if long, of letters and digits only,
    // or very long.
    let mixed = s.scan.label >= u64::from(GUARD_LABEL_MIN) && s.scan.classes == CLASS_DIGIT | CLASS_LETTER;
    if s.scan.zone == 0 && (mixed || s.scan.label >= u64::from(GUARD_LABEL_LONG)) {
        s.scan.random = 1;
    }
    s.scan.label = 0;
    s.scan.classes = 0;
    let Some(meta) = EGV6_SLOT_META.get(s.scan.slot as u32) else { return 1 };
    let lengths = &meta.name_lengths;
    // The suffix after this dot: what the key holds now.
    let len = NAME_BUF - 1 - i;
    let slot = if s.scan.slot == 0 { &SLOT0 } else { &SLOT1 };
    s.scan.labels += 1;
    if s.scan.labels == 1 && lengths.contains(NAME_ONE_LABEL, len) {
        let (groups, zone) = lookup(slot, &mut s.key, NAME_ONE_LABEL, len);
        s.scan.groups |= groups;
        if s.scan.zone == 0 {
            s.scan.zone = u64::from(zone);
        }
    }
    if lengths.contains(NAME_ANY_DEPTH, len) {
        let (groups, zone) = lookup(slot, &mut s.key, NAME_ANY_DEPTH, len);
        s.scan.groups |= groups;
        if s.scan.zone == 0 {
            s.scan.zone = u64::from(zone);
        }
    }
    if !lengths.any_shorter(NAME_ANY_DEPTH, len) {
        return 1; // no pattern is as short as the suffixes left
    }
    0
}

/// The WebGroups whose patterns cover the name in `s.name[..len]`: the name
/// itself, its suffix after one label for `*.`, every suffix for `**.`.
/// Only the keys of a length the table holds ([`SlotMeta::name_lengths`])
/// are looked up, and the scan ends where no shorter pattern is left.
///
/// [`SlotMeta::name_lengths`]: egress_common::SlotMeta
#[inline(always)]
pub fn name_groups(slot_idx: u32, s: &mut Scratch, len: usize) -> u64 {
    // SAFETY: as below: volatile hand-over through the scratch.
    unsafe {
        let scan = &raw mut s.scan;
        vset(addr_of_mut!((*scan).zone), 0);
        vset(addr_of_mut!((*scan).random), 0);
    }
    if len == 0 || len > NAME_BUF - 3 {
        return 0;
    }
    let Some(meta) = EGV6_SLOT_META.get(slot_idx) else { return 0 };
    let lengths = &meta.name_lengths;
    let exact = lengths.contains(NAME_EXACT, len);
    // A suffix is at least two bytes shorter than the name (a label and a
    // dot): a pattern as long as the name covers none of them.
    let suffixes = lengths.any_shorter(NAME_ONE_LABEL, len) || lengths.any_shorter(NAME_ANY_DEPTH, len);
    if !exact && !suffixes {
        return 0; // no pattern of any length the name could match
    }
    // The scan callback reads the key: write it with volatile stores so
    // that none is deferred past the `bpf_loop` call.
    let key = s.key.as_mut_ptr();
    for i in 0..NAME_BUF / 8 {
        // SAFETY: i < 32, 8-byte words inside the 256-byte key (the
        // scratch is 8-aligned and the key at an offset of 8s).
        unsafe { core::ptr::write_volatile(key.add(i * 8).cast::<u64>(), 0) };
    }
    let first = NAME_BUF - len;
    let scan = &raw mut s.scan;
    // SAFETY: the name is right-aligned into the key by one copy of its
    // `len` bytes to the key's last `len` (the masks bound both for the
    // verifier: the scratch runs on past the key); the helper is opaque, so
    // the zeroing stores above stay before it.
    unsafe {
        let dst = key.add(first & 0xff).cast::<c_void>();
        bpf_probe_read_kernel(dst, (len & 0xff) as u32, s.name.as_ptr().cast::<c_void>());
    }
    let slot = if slot_idx == 0 { &SLOT0 } else { &SLOT1 };
    let exact = if exact { lookup(slot, &mut s.key, NAME_EXACT, len).0 } else { 0 };
    if !suffixes {
        return exact;
    }
    // SAFETY: as above.
    unsafe {
        vset(addr_of_mut!((*scan).i), first as u64);
        vset(addr_of_mut!((*scan).labels), 0);
        vset(addr_of_mut!((*scan).label), 0);
        vset(addr_of_mut!((*scan).classes), 0);
        vset(addr_of_mut!((*scan).groups), exact);
        vset(addr_of_mut!((*scan).slot), u64::from(slot_idx));
        vset(addr_of_mut!((*scan).keyed), super::guard::seed());
        bpf_loop(NAME_BUF as u32, scan_step as *mut c_void, core::ptr::null_mut(), 0);
        if exact != 0 {
            // Listed by its exact name: a fixed name carries no data, and
            // listing it is how a pack exempts it from the guard.
            vset(addr_of_mut!((*scan).zone), 0);
        }
        vget(addr_of!((*scan).groups))
    }
}

/// The WebGroup bits and zone of the name of `len` bytes right-aligned in
/// `key` under `kind` in `slot`, zeros if absent. A short name is looked up
/// in the short table by the key's last [`NAME_SHORT`] bytes with the kind
/// in their first (every byte between is zero: the suffixes that a scan
/// looks up only get shorter, so no kind written for a longer one is left
/// inside a shorter one's key); a long one by the whole key, the kind in
/// byte 0.
#[inline(always)]
fn lookup(slot: &Slot, key: &mut [u8; NAME_BUF], kind: u8, len: usize) -> (u64, u32) {
    let found = if len < NAME_SHORT {
        let at = NAME_BUF - NAME_SHORT;
        // SAFETY: a constant index inside the key; volatile so that it is
        // written before the lookup reads it.
        unsafe { core::ptr::write_volatile(key.as_mut_ptr().add(at), kind) };
        // SAFETY: ShortNameKey is a repr(C) wrapper of NAME_SHORT bytes,
        // the key's last.
        let short = unsafe { &*key.as_ptr().add(at).cast::<ShortNameKey>() };
        slot.short_names.get_ptr(short)
    } else {
        // SAFETY: as above, at byte 0.
        unsafe { core::ptr::write_volatile(key.as_mut_ptr(), kind) };
        // SAFETY: NameKey is a repr(C) wrapper of the same 256 bytes.
        let long = unsafe { &*core::ptr::from_ref(key).cast::<NameKey>() };
        slot.names.get_ptr(long)
    };
    match found {
        // SAFETY: value pointer from a successful lookup.
        Some(v) => unsafe { ((*v).groups, (*v).zone) },
        None => (0, 0),
    }
}

/// The WebGroups whose patterns cover a connection's name (`name[..len]`,
/// lower-case, no trailing dot): [`name_groups`] over a copy in the scratch.
#[inline(always)]
pub fn groups_of_name(slot_idx: u32, name: &[u8; NAME_BUF], len: u8) -> u64 {
    let Some(s) = super::message::scratch() else { return 0 };
    let to = s.name.as_mut_ptr().cast::<u64>();
    let from = name.as_ptr().cast::<u64>();
    for i in 0..NAME_BUF / 8 {
        // SAFETY: 8-byte words inside both 256-byte, 8-aligned buffers.
        unsafe { to.add(i).write_volatile(from.add(i).read_volatile()) };
    }
    name_groups(slot_idx, s, usize::from(len))
}
