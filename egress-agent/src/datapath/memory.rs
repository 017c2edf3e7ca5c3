//! What a compiled pack's table entries cost in kernel memory, by the
//! kernel's own accounting (the `memlock` a map's fdinfo shows), so that
//! `check` says it before `run` installs anything. Only what grows with
//! the pack is counted: the hash tables allocated per entry
//! (`BPF_F_NO_PREALLOC`) and the prefix tries. A slot's arrays, its
//! preallocated tables and the hash tables' bucket arrays are the same
//! for every pack ([`FIXED_NOTE`]).

use egress_common::{ClassDestKey, ClassWebGroupKey, NameEntry, NameKey, NamedRules, ShortNameKey, SourcePortKey};
use egress_policy::compile::CompiledPack;

/// `struct htab_elem` up to its key (Linux 6.x, 64-bit).
const HTAB_ELEM: u64 = 48;
/// `LLIST_NODE_SZ`: what the kernel counts besides each element of a hash
/// table allocated per entry.
const LLIST_NODE: u64 = 8;
/// `struct lpm_trie_node` up to its prefix bytes.
const LPM_NODE: u64 = 24;

/// What the per-pack figure leaves out.
pub const FIXED_NOTE: &str = "besides the tables every pack has (port and class arrays, bucket arrays)";

fn round8(n: usize) -> u64 {
    (n as u64).div_ceil(8) * 8
}

/// Bytes of one entry of a hash table allocated per entry.
fn hash_entry<K, V>() -> u64 {
    HTAB_ELEM + round8(size_of::<K>()) + round8(size_of::<V>()) + LLIST_NODE
}

/// Bytes of one prefix of a trie of `data` address bytes and a `u32` value.
fn trie_entry(data: u64) -> u64 {
    LPM_NODE + data + 4
}

/// The kernel memory of `pack`'s entries, table by table (the names of
/// `Datapath::live_slot_memlock`), in bytes.
pub fn entry_bytes(pack: &CompiledPack) -> Vec<(&'static str, u64)> {
    let count = |n: usize| n as u64;
    let v4 =
        |t: &std::collections::HashMap<ipnet::IpNet, u32, _>| count(t.keys().filter(|n| n.addr().is_ipv4()).count());
    let (src4, dst4) = (v4(&pack.src), v4(&pack.dst));
    let (src6, dst6) = (count(pack.src.len()) - src4, count(pack.dst.len()) - dst4);
    let short = count(pack.names.keys().filter(|k| k.short().is_some()).count());
    let long = count(pack.names.len()) - short;
    vec![
        ("src4", src4 * trie_entry(4)),
        ("src6", src6 * trie_entry(16)),
        ("dst4", dst4 * trie_entry(4)),
        ("dst6", dst6 * trie_entry(16)),
        ("sp", count(pack.sp.len()) * hash_entry::<SourcePortKey, u32>()),
        ("xd", count(pack.xd.len()) * hash_entry::<ClassDestKey, u32>()),
        ("xw", count(pack.named.xw.len()) * hash_entry::<ClassWebGroupKey, NamedRules>()),
        ("names", long * hash_entry::<NameKey, NameEntry>()),
        ("short_names", short * hash_entry::<ShortNameKey, NameEntry>()),
        ("src_permit", count(pack.src_permit.len()) * hash_entry::<u32, u64>()),
    ]
}

/// `entry_bytes` in words: the total and the largest tables.
pub fn describe(pack: &CompiledPack) -> String {
    let (total, largest) = summed(&entry_bytes(pack));
    format!("kernel memory of the pack's entries: {total} a slot ({largest}), {FIXED_NOTE}")
}

/// Bytes by table in words: the total, and the three largest tables that
/// take any (`none` if no table does).
pub fn summed(by_table: &[(&str, u64)]) -> (String, String) {
    let total: u64 = by_table.iter().map(|t| t.1).sum();
    let mut sorted = by_table.to_vec();
    sorted.sort_by_key(|t| std::cmp::Reverse(t.1));
    let largest: Vec<String> =
        sorted.iter().take(3).filter(|t| t.1 > 0).map(|(n, b)| format!("{n} {}", in_units(*b))).collect();
    (in_units(total), if largest.is_empty() { "none".to_string() } else { largest.join(", ") })
}

/// Bytes in B, KiB or MiB, whichever reads best.
#[allow(clippy::cast_precision_loss, reason = "memory figures far below 2^52 bytes, shown to one decimal")]
pub fn in_units(bytes: u64) -> String {
    let b = bytes as f64;
    match bytes {
        0..1_024 => format!("{bytes} B"),
        1_024..1_048_576 => format!("{:.1} KiB", b / 1_024.0),
        _ => format!("{:.1} MiB", b / 1_048_576.0),
    }
}
