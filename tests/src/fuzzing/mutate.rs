//! Mutations of a frame: bit flips, boundary values, truncation, bytes
//! inserted or removed, and with a structure-aware turn that rewrites the
//! IP and UDP length fields to fit, so that mutated payloads still reach
//! the readers behind the headers.

use egress_policy::synth::Rng;

/// Boundary values a mutated byte takes.
const INTERESTING: [u8; 9] = [0, 1, 0x3f, 0x40, 0x7f, 0x80, 0xc0, 0xfe, 0xff];

/// Up to four mutations of `seed`; a copy of it with the first one's
/// region weighted to bytes after `from` (the payload, for DNS seeds).
pub fn mutate(seed: &[u8], from: usize, rng: &mut Rng) -> Vec<u8> {
    let mut f = seed.to_vec();
    for _ in 0..=rng.below(4) {
        if f.is_empty() {
            break;
        }
        let at = if from < f.len() && rng.chance(75) { from + rng.index(f.len() - from) } else { rng.index(f.len()) };
        match rng.below(6) {
            0 => f[at] ^= 1 << rng.below(8),
            1 => f[at] = INTERESTING[rng.index(INTERESTING.len())],
            2 => f[at] = rng.next_u64() as u8,
            3 => f.truncate(at.max(14)),
            4 => f.insert(at, rng.next_u64() as u8),
            _ => {
                f.remove(at);
            }
        }
    }
    if rng.chance(50) {
        fit_lengths(&mut f);
    }
    f
}

/// Rewrites the IPv4 total length (and header checksum), the IPv6 payload
/// length and a UDP length right after a plain IP header to the frame's.
fn fit_lengths(f: &mut [u8]) {
    if f.len() < 14 {
        return;
    }
    let udp_at = match (u16::from_be_bytes([f[12], f[13]]), f.get(14).map(|b| b >> 4)) {
        (0x0800, Some(4)) if f.len() >= 34 => {
            let total = (f.len() - 14).min(0xffff) as u16;
            f[16..18].copy_from_slice(&total.to_be_bytes());
            f[24..26].copy_from_slice(&[0, 0]);
            let ihl = usize::from(f[14] & 0xf) * 4;
            let sum = checksum(&f[14..14 + ihl.clamp(20, 60).min(f.len() - 14)]);
            f[24..26].copy_from_slice(&sum.to_be_bytes());
            (f[23] == 17).then_some(14 + ihl)
        }
        (0x86dd, Some(6)) if f.len() >= 54 => {
            let payload = (f.len() - 54).min(0xffff) as u16;
            f[18..20].copy_from_slice(&payload.to_be_bytes());
            (f[20] == 17).then_some(54)
        }
        _ => return,
    };
    if let Some(at) = udp_at
        && f.len() >= at + 8
    {
        let len = (f.len() - at).min(0xffff) as u16;
        f[at + 4..at + 6].copy_from_slice(&len.to_be_bytes());
    }
}

/// The Internet checksum of `bytes`.
fn checksum(bytes: &[u8]) -> u16 {
    let mut acc: u32 = bytes.chunks(2).map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]))).sum();
    while acc > 0xffff {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    !(acc as u16)
}
