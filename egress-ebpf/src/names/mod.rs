//! Connection names (issue 13): the server name of a TLS ClientHello
//! ([`tls::client_hello_name`]) and the host of an HTTP/1.x request head
//! ([`http::http_host`]), read from the first bytes a client sent.
//!
//! Pure and `no_std`, shaped for the verifier so that the datapath can run
//! them as they are: the bytes lie in a fixed 16 KiB window and every index
//! into it is masked with [`MASK`]; every loop has a constant bound; the
//! state of each parser is a `#[repr(C)]` struct whose `step` does one
//! bounded piece of work (one field, one name byte, one request byte), so
//! that a `bpf_loop` callback can call `step` with the state in per-CPU
//! scratch. No allocation, recursion or panicking index.
//!
//! Both parsers read the bytes from the start each time they are called:
//! the caller calls again when more bytes arrived, until the answer is not
//! [`NameResult::NeedMore`]. An answer other than `NeedMore` stays the same
//! for every longer prefix of the same bytes.

pub mod http;
pub mod tls;

#[cfg(test)]
mod http_tests;
#[cfg(test)]
mod testkit;
#[cfg(test)]
mod tls_tests;

use egress_common::NAME_BUF;

/// The bytes a client sent that are read for its name at most (the
/// contract's 16 KiB).
pub const WINDOW: usize = 16384;
/// Mask of every index into the window.
pub const MASK: usize = WINDOW - 1;
/// Longest name (without its trailing dot).
pub const MAX_NAME: usize = 253;
/// Longest label.
pub const MAX_LABEL: u32 = 63;

/// The first bytes a client sent, in order.
pub type Window = [u8; WINDOW];

/// What a parser made of the bytes so far.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[repr(u32)]
pub enum NameResult {
    /// The message is complete and names exactly one host: it is in the
    /// [`Name`] (lower-case, no trailing dot, at most 253 bytes).
    Name = 1,
    /// The message is not complete yet: call again with more bytes.
    NeedMore = 2,
    /// A complete message without a name, or one that is contradictory or
    /// malformed, or that does not fit in the window: the flow has no name.
    NoName = 3,
    /// The bytes do not start a TLS handshake record.
    NotTls = 4,
    /// The bytes do not start an HTTP/1.x request line.
    NotHttp = 5,
}

/// A name read from a connection: `bytes[..len]`, lower-case, without a
/// trailing dot. The same buffer size as the DNS names (`NAME_BUF`), so that
/// the name table's lookups can take it as it is.
#[derive(Clone, Copy)]
#[repr(C)]
pub struct Name {
    pub bytes: [u8; NAME_BUF],
    pub len: usize,
}

impl Name {
    /// No name.
    pub const fn new() -> Self {
        Name { bytes: [0; NAME_BUF], len: 0 }
    }

    /// The name's text.
    pub fn as_bytes(&self) -> &[u8] {
        self.bytes.get(..self.len).unwrap_or(&[])
    }
}

impl Default for Name {
    fn default() -> Self {
        Self::new()
    }
}

/// Checks and lower-cases a name one byte at a time, writing it into a
/// name buffer: letters, digits, `-`, `_` and dots between non-empty labels
/// of at most 63 bytes, one trailing dot (dropped), at most 253 bytes, and
/// not an address (a last label of digits only, as in `10.0.0.1`).
#[derive(Clone, Copy)]
#[repr(C)]
pub struct NameBuilder {
    /// Bytes written (the trailing dot included until [`finish`](Self::finish)).
    pub len: u32,
    /// Bytes of the current label.
    pub label: u32,
    /// Whether the current label has digits only.
    pub numeric: u32,
    /// Whether the label before the last dot had digits only.
    pub prev_numeric: u32,
}

impl NameBuilder {
    pub const fn new() -> Self {
        NameBuilder { len: 0, label: 0, numeric: 1, prev_numeric: 0 }
    }

    /// Adds `c` to the name in `bytes`; false if it cannot be part of one.
    #[inline(always)]
    pub fn push(&mut self, c: u8, bytes: &mut [u8; NAME_BUF]) -> bool {
        if c == b'.' {
            if self.label == 0 {
                return false;
            }
            self.label = 0;
            self.prev_numeric = self.numeric;
            self.numeric = 1;
        } else if c.is_ascii_alphanumeric() || c == b'-' || c == b'_' {
            self.label += 1;
            if !c.is_ascii_digit() {
                self.numeric = 0;
            }
            if self.label > MAX_LABEL {
                return false;
            }
        } else {
            return false;
        }
        // One byte more than a name for its trailing dot.
        if self.len as usize > MAX_NAME {
            return false;
        }
        bytes[(self.len as usize) & (NAME_BUF - 1)] = c.to_ascii_lowercase();
        self.len += 1;
        true
    }

    /// The name's length once it is whole (trailing dot dropped), or `None`
    /// if it is empty, too long or an address.
    #[inline(always)]
    pub fn finish(&self) -> Option<usize> {
        let (len, numeric) = if self.label == 0 {
            // Empty, or ends with a dot: drop it (an empty name stays empty).
            (self.len.saturating_sub(1) as usize, self.prev_numeric)
        } else {
            (self.len as usize, self.numeric)
        };
        (len != 0 && len <= MAX_NAME && numeric == 0).then_some(len)
    }
}

impl Default for NameBuilder {
    fn default() -> Self {
        Self::new()
    }
}

/// Runs `step` (one call of a walk, as a `bpf_loop` callback would) on
/// `buf[..len]` at most `calls` times: the walk's answer, or `NoName` if it
/// has none by then. `out` holds a name only when the answer is `Name`.
fn drive(
    buf: &Window,
    len: usize,
    out: &mut Name,
    calls: usize,
    mut step: impl FnMut(&Window, usize, &mut Name) -> Option<NameResult>,
) -> NameResult {
    let len = len.min(WINDOW);
    out.len = 0;
    let answer = (0..calls).find_map(|_| step(buf, len, out)).unwrap_or(NameResult::NoName);
    if answer != NameResult::Name {
        out.len = 0;
    }
    answer
}
