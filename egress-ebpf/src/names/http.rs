//! The host of an HTTP/1.x request head (RFC 9112 3, 5; RFC 9110 7.2).
//!
//! One request byte a [`HttpWalk::step`]. The request line is
//! `METHOD SP target SP HTTP/1.d CRLF`, the method upper-case letters (and
//! `-`, `_`); then header lines up to an empty line, every line ending in
//! CRLF. The name is the `Host` header's (port, whitespace and a trailing
//! dot removed, lower-case); with an absolute-form target
//! (`http://host:port/path`, `https://`) or a `CONNECT` authority, the
//! target's, and a `Host` header must then name the same host.
//!
//! A head that is not complete gives [`NameResult::NeedMore`] (unless the
//! window is full: `NoName`); bytes that do not start an HTTP/1.x request
//! line give `NotHttp`; anything a server might read otherwise than this
//! walk does (no `Host`, several, an IPv6 literal, bare LF, folded or
//! malformed header lines, more than [`MAX_HEADERS`] headers) gives
//! `NoName`.

use core::cmp::Ordering;

use egress_common::NAME_BUF;

use super::{MASK, Name, NameBuilder, NameResult, WINDOW, Window};

/// Header lines read at most.
pub const MAX_HEADERS: u32 = 64;
/// Longest method.
const MAX_METHOD: u32 = 16;
/// Longest port.
const MAX_PORT: u32 = 5;
/// Steps of a walk at most: one a byte of the window, and the answer.
pub const HTTP_STEPS: usize = WINDOW + 1;
/// Steps a [`HttpWalk::steps`] takes at most: a `bpf_loop` callback that
/// took one byte would spend most of its time being called.
pub const HTTP_BATCH: usize = 32;
/// Calls of [`HttpWalk::steps`] that a walk takes at most.
pub const HTTP_BATCHES: usize = HTTP_STEPS.div_ceil(HTTP_BATCH);

// `CONNECT`, `HTTP/1.` and `host` as words, read a byte at a time by
// shifts ([`nth`]): the verifier refused `get(k)` into a constant array
// (LLVM checked the bound on a copy of `k` and indexed with the original).
const CONNECT: u64 = u64::from_le_bytes(*b"CONNECT\0");
const CONNECT_LEN: u32 = 7;
const VERSION: u64 = u64::from_le_bytes(*b"HTTP/1.\0");
const VERSION_LEN: u32 = 7;
const HOST: u64 = u64::from_le_bytes(*b"host\0\0\0\0");
const HOST_LEN: u32 = 4;

/// Phases of the walk (`HttpWalk::phase`).
const P_METHOD: u32 = 0;
const P_TARGET: u32 = 1;
const P_SCHEME: u32 = 2;
const P_AUTHORITY: u32 = 3;
const P_TARGET_PORT: u32 = 4;
const P_PATH: u32 = 5;
const P_VERSION: u32 = 6;
const P_LINE_LF: u32 = 7;
const P_LINE: u32 = 8;
const P_FIELD: u32 = 9;
const P_VALUE: u32 = 10;
const P_HOST_OWS: u32 = 11;
const P_HOST: u32 = 12;
const P_HOST_PORT: u32 = 13;
const P_HOST_TRAIL: u32 = 14;
const P_END_LF: u32 = 15;

/// The state of a request-head walk.
#[derive(Clone, Copy)]
#[repr(C)]
pub struct HttpWalk {
    /// Window offset of the next byte.
    pub pos: u32,
    pub phase: u32,
    /// Bytes of the method, and how much of it spells `CONNECT`.
    pub method: u32,
    pub connect: u32,
    /// Progress through a literal (`http://`, `HTTP/1.`, `host`), or a
    /// port's digits.
    pub k: u32,
    /// Whether the target named the host (absolute-form or `CONNECT`).
    pub absolute: u32,
    /// Header lines, and `Host` headers among them.
    pub headers: u32,
    pub hosts: u32,
    /// Length of the `Host` header's name in `host`.
    pub host_len: u32,
    /// The name being read.
    pub name: NameBuilder,
    /// The `Host` header's name.
    pub host: [u8; NAME_BUF],
}

/// A request byte that ends the walk, with its answer.
type Stop = NameResult;

/// Byte `i` (below 8) of a word of text.
#[inline(always)]
const fn nth(word: u64, i: u32) -> u8 {
    (word >> ((i & 7) * 8)) as u8
}

#[inline(always)]
fn ows(c: u8) -> bool {
    c == b' ' || c == b'\t'
}

/// A `tchar` of RFC 9110 5.6.2 (header names).
#[inline(always)]
fn token(c: u8) -> bool {
    c.is_ascii_alphanumeric()
        || matches!(
            c,
            b'!' | b'#' | b'$' | b'%' | b'&' | b'\'' | b'*' | b'+' | b'-' | b'.' | b'^' | b'_' | b'`' | b'|' | b'~'
        )
}

impl HttpWalk {
    pub const fn new() -> Self {
        HttpWalk {
            pos: 0,
            phase: P_METHOD,
            method: 0,
            connect: 0,
            k: 0,
            absolute: 0,
            headers: 0,
            hosts: 0,
            host_len: 0,
            name: NameBuilder::new(),
            host: [0; NAME_BUF],
        }
    }

    /// Starts the walk again, in place: field by field, so that no
    /// walk-sized temporary lands on the datapath's 512-byte stack.
    #[inline(always)]
    pub fn reset(&mut self) {
        self.pos = 0;
        self.phase = P_METHOD;
        self.method = 0;
        self.connect = 0;
        self.k = 0;
        self.absolute = 0;
        self.headers = 0;
        self.hosts = 0;
        self.host_len = 0;
        self.name = NameBuilder::new();
        self.host = [0; NAME_BUF];
    }

    /// One step: reads one byte of `buf[..len]` (`len <= WINDOW`). `None` to
    /// go on, or the answer (with the name in `out` for `Name`).
    #[inline(always)]
    pub fn step(&mut self, buf: &Window, len: usize, out: &mut Name) -> Option<NameResult> {
        let pos = self.pos as usize;
        if pos >= len {
            // A head that fills the window without ending never fits.
            return Some(if len >= WINDOW { NameResult::NoName } else { NameResult::NeedMore });
        }
        let c = buf[pos & MASK];
        self.pos += 1;
        let r = match self.phase {
            P_METHOD => self.method(c),
            P_TARGET => self.target(c),
            P_SCHEME => self.scheme(c),
            P_AUTHORITY => self.authority(c, out),
            P_TARGET_PORT => self.target_port(c),
            P_PATH => self.path(c),
            P_VERSION => self.version(c),
            P_LINE_LF => self.line_lf(c),
            P_LINE => self.line(c),
            P_FIELD => self.field(c),
            P_VALUE => self.value(c),
            P_HOST_OWS => self.host_ows(c),
            P_HOST => self.host_byte(c),
            P_HOST_PORT => self.host_port(c),
            P_HOST_TRAIL => self.host_trail(c),
            P_END_LF => Err(self.end(c, out)),
            _ => Err(NameResult::NoName),
        };
        r.err()
    }

    /// Up to [`HTTP_BATCH`] steps: what one `bpf_loop` callback does.
    #[inline(always)]
    pub fn steps(&mut self, buf: &Window, len: usize, out: &mut Name) -> Option<NameResult> {
        for _ in 0..HTTP_BATCH {
            if let Some(r) = self.step(buf, len, out) {
                return Some(r);
            }
        }
        None
    }

    #[inline(always)]
    #[allow(clippy::unnecessary_wraps, reason = "each transition is one expression, `return self.go(PHASE)`")]
    fn go(&mut self, phase: u32) -> Result<(), Stop> {
        self.phase = phase;
        Ok(())
    }

    /// Upper-case letters (then `-`, `_` too) up to a space.
    #[inline(always)]
    fn method(&mut self, c: u8) -> Result<(), Stop> {
        if c == b' ' && self.method != 0 {
            self.connect = u32::from(self.connect == CONNECT_LEN && self.method == CONNECT_LEN);
            self.absolute = self.connect;
            if self.connect != 0 {
                self.name = NameBuilder::new();
            }
            return self.go(if self.connect != 0 { P_AUTHORITY } else { P_TARGET });
        }
        let upper = c.is_ascii_uppercase() || (self.method != 0 && (c == b'-' || c == b'_'));
        if !upper || self.method >= MAX_METHOD {
            return Err(NameResult::NotHttp);
        }
        if self.connect == self.method && self.method < CONNECT_LEN && c == nth(CONNECT, self.method) {
            self.connect += 1;
        }
        self.method += 1;
        Ok(())
    }

    /// The target's first byte: origin-form (`/`), asterisk-form (`*`) or
    /// the start of an absolute-form scheme.
    #[inline(always)]
    fn target(&mut self, c: u8) -> Result<(), Stop> {
        match c {
            b'/' | b'*' => self.go(P_PATH),
            b' ' | b'\r' | b'\n' => Err(NameResult::NotHttp),
            _ => {
                self.k = 0;
                self.scheme(c)
            }
        }
    }

    /// `http://` or `https://`, any case.
    #[inline(always)]
    fn scheme(&mut self, c: u8) -> Result<(), Stop> {
        let c = c.to_ascii_lowercase();
        let next = match (self.k, c) {
            (0, b'h') => 1,
            (1 | 2, b't') => self.k + 1,
            (3, b'p') => 4,
            (4, b's') => 5,
            (4 | 5, b':') => 6,
            (6, b'/') => 7,
            (7, b'/') => {
                self.absolute = 1;
                self.name = NameBuilder::new();
                return self.go(P_AUTHORITY);
            }
            // Another scheme, or a target no server reads the same way.
            _ => return Err(NameResult::NoName),
        };
        self.k = next;
        self.go(P_SCHEME)
    }

    /// The target's host, up to a port, a path or the space.
    #[inline(always)]
    fn authority(&mut self, c: u8, out: &mut Name) -> Result<(), Stop> {
        let next = match c {
            b':' => P_TARGET_PORT,
            b'/' | b'?' | b'#' if self.connect == 0 => P_PATH,
            b' ' => P_VERSION,
            // Anything else must be part of the name (`[` of an IPv6
            // literal and `@` of userinfo are not).
            _ => {
                return if self.name.push(c, &mut out.bytes) { Ok(()) } else { Err(NameResult::NoName) };
            }
        };
        let Some(n) = self.name.finish() else { return Err(NameResult::NoName) };
        out.len = n;
        self.k = 0;
        self.go(next)
    }

    #[inline(always)]
    fn target_port(&mut self, c: u8) -> Result<(), Stop> {
        match c {
            b'0'..=b'9' if self.k < MAX_PORT => {
                self.k += 1;
                Ok(())
            }
            b'/' | b'?' | b'#' if self.connect == 0 => self.go(P_PATH),
            b' ' => {
                self.k = 0;
                self.go(P_VERSION)
            }
            _ => Err(NameResult::NoName),
        }
    }

    /// The rest of the target, up to the space.
    #[inline(always)]
    fn path(&mut self, c: u8) -> Result<(), Stop> {
        match c {
            b' ' => {
                self.k = 0;
                self.go(P_VERSION)
            }
            b'\r' | b'\n' => Err(NameResult::NotHttp),
            _ if c < 0x20 || c == 0x7f => Err(NameResult::NoName),
            _ => Ok(()),
        }
    }

    /// `HTTP/1.` and a digit, then CR.
    #[inline(always)]
    fn version(&mut self, c: u8) -> Result<(), Stop> {
        let k = self.k;
        let ok = match k.cmp(&VERSION_LEN) {
            Ordering::Less => c == nth(VERSION, k),
            Ordering::Equal => c.is_ascii_digit(),
            Ordering::Greater => c == b'\r',
        };
        if !ok {
            return Err(NameResult::NotHttp);
        }
        self.k += 1;
        if k == VERSION_LEN + 1 {
            return self.go(P_LINE_LF);
        }
        Ok(())
    }

    /// The LF that ends a line (after its CR).
    #[inline(always)]
    fn line_lf(&mut self, c: u8) -> Result<(), Stop> {
        if c != b'\n' {
            return Err(NameResult::NoName);
        }
        self.go(P_LINE)
    }

    /// The first byte of a header line, or the CR of the empty line.
    #[inline(always)]
    fn line(&mut self, c: u8) -> Result<(), Stop> {
        if c == b'\r' {
            return self.go(P_END_LF);
        }
        self.headers += 1;
        // Folded lines (a leading space) and empty field names are refused.
        if self.headers > MAX_HEADERS || !token(c) {
            return Err(NameResult::NoName);
        }
        self.k = u32::from(c.to_ascii_lowercase() == nth(HOST, 0));
        self.go(P_FIELD)
    }

    /// A header's name, up to its colon (no space before it).
    #[inline(always)]
    fn field(&mut self, c: u8) -> Result<(), Stop> {
        if c == b':' {
            if self.k != HOST_LEN {
                return self.go(P_VALUE);
            }
            self.hosts += 1;
            if self.hosts > 1 {
                return Err(NameResult::NoName);
            }
            self.name = NameBuilder::new();
            return self.go(P_HOST_OWS);
        }
        if !token(c) {
            return Err(NameResult::NoName);
        }
        let k = self.k;
        self.k = if k != 0 && k < HOST_LEN && c.to_ascii_lowercase() == nth(HOST, k) { k + 1 } else { 0 };
        Ok(())
    }

    /// Another header's value, up to CR.
    #[inline(always)]
    fn value(&mut self, c: u8) -> Result<(), Stop> {
        match c {
            b'\r' => self.go(P_LINE_LF),
            b'\n' | 0 => Err(NameResult::NoName),
            _ => Ok(()),
        }
    }

    /// Whitespace before the host.
    #[inline(always)]
    fn host_ows(&mut self, c: u8) -> Result<(), Stop> {
        if ows(c) {
            return Ok(());
        }
        self.phase = P_HOST;
        self.host_byte(c)
    }

    /// The host, up to a port, whitespace or CR.
    #[inline(always)]
    fn host_byte(&mut self, c: u8) -> Result<(), Stop> {
        let next = match c {
            b':' => P_HOST_PORT,
            b'\r' => P_LINE_LF,
            _ if ows(c) => P_HOST_TRAIL,
            _ => return if self.name.push(c, &mut self.host) { Ok(()) } else { Err(NameResult::NoName) },
        };
        let Some(n) = self.name.finish() else { return Err(NameResult::NoName) };
        self.host_len = n as u32;
        self.k = 0;
        self.go(next)
    }

    #[inline(always)]
    fn host_port(&mut self, c: u8) -> Result<(), Stop> {
        match c {
            b'0'..=b'9' if self.k < MAX_PORT => {
                self.k += 1;
                Ok(())
            }
            b'\r' => self.go(P_LINE_LF),
            _ if ows(c) => self.go(P_HOST_TRAIL),
            _ => Err(NameResult::NoName),
        }
    }

    #[inline(always)]
    fn host_trail(&mut self, c: u8) -> Result<(), Stop> {
        match c {
            b'\r' => self.go(P_LINE_LF),
            _ if ows(c) => Ok(()),
            _ => Err(NameResult::NoName),
        }
    }

    /// The LF of the empty line: the head is whole. The answer.
    #[inline(always)]
    fn end(&mut self, c: u8, out: &mut Name) -> NameResult {
        if c != b'\n' {
            return NameResult::NoName;
        }
        if self.absolute == 0 {
            if self.hosts == 0 {
                return NameResult::NoName;
            }
            out.bytes = self.host;
            out.len = self.host_len as usize;
            return NameResult::Name;
        }
        if self.hosts == 0 {
            return NameResult::Name;
        }
        if self.host_len as usize != out.len {
            return NameResult::NoName;
        }
        for i in 0..NAME_BUF {
            if i >= out.len {
                break;
            }
            if self.host[i & (NAME_BUF - 1)] != out.bytes[i & (NAME_BUF - 1)] {
                return NameResult::NoName;
            }
        }
        NameResult::Name
    }
}

impl Default for HttpWalk {
    fn default() -> Self {
        Self::new()
    }
}

/// The host of the HTTP/1.x request head at the start of `buf[..len]`:
/// `Name` (in `out`), `NeedMore`, `NoName` or `NotHttp`. See the module's
/// documentation.
pub fn http_host(buf: &Window, len: usize, out: &mut Name) -> NameResult {
    let mut walk = HttpWalk::new();
    super::drive(buf, len, out, HTTP_BATCHES, |buf, len, out| walk.steps(buf, len, out))
}
