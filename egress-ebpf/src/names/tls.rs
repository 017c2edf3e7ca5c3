//! The server name of a TLS ClientHello (RFC 8446 4.1.2, RFC 6066 3).
//!
//! The handshake message may be cut into several records (of type 22, with
//! a record version 0x0300..=0x0303); the walk reads the handshake bytes
//! across them, one field a [`TlsWalk::step`]: a fixed field, one
//! extension's header, what lies in one record of a field it skips, or one
//! byte of the name. Extensions other than `server_name` are skipped whole
//! (GREASE, padding, key shares of any size, session tickets, pre-shared
//! keys, and ECH, whose outer ClientHello's `server_name` is the name).
//!
//! Exactly one `server_name` extension with exactly one `host_name` entry
//! gives a name; everything else about it (another name type, lengths that
//! disagree with each other or with the handshake length, a name that is
//! not one) gives [`NameResult::NoName`].

use super::{MASK, Name, NameBuilder, NameResult, WINDOW, Window};

/// Records the ClientHello may span at most.
pub const MAX_RECORDS: u32 = 16;
/// Extensions read at most.
pub const MAX_EXTENSIONS: u32 = 64;
/// Steps of a walk at most: fixed fields, two a extension, one a record
/// crossed while skipping, one a name byte, with room to spare.
pub const TLS_STEPS: usize = 512;
/// Largest record payload (2^14).
const MAX_RECORD: u32 = 16384;
/// Record header: type, version, length.
const RECORD_HEADER: u32 = 5;
const CONTENT_HANDSHAKE: u8 = 22;
const HANDSHAKE_CLIENT_HELLO: u8 = 1;
const EXT_SERVER_NAME: u16 = 0;
const NAME_TYPE_HOST: u8 = 0;
/// Shortest ClientHello body: version, random, three empty-ish vectors.
const MIN_BODY: u32 = 2 + 32 + 1 + 2 + 2 + 1 + 1;

/// Phases of the walk (`TlsWalk::phase`).
const P_START: u32 = 0;
const P_VERSION: u32 = 1;
const P_SESSION_ID: u32 = 2;
const P_SUITES: u32 = 3;
const P_COMPRESSION: u32 = 4;
const P_EXTENSIONS: u32 = 5;
const P_EXTENSION: u32 = 6;
const P_SNI_LIST: u32 = 7;
const P_SNI_ENTRY: u32 = 8;
const P_NAME: u32 = 9;
const P_SKIP: u32 = 10;

/// The state of a ClientHello walk. Offsets `pos` and `rec_end` are into
/// the window; `hpos` and the `*_end`s count handshake bytes (record
/// headers left out) from the start of the handshake message.
#[derive(Clone, Copy)]
#[repr(C)]
pub struct TlsWalk {
    /// Window offset of the next byte to read.
    pub pos: u32,
    /// Window offset where the current record's payload ends.
    pub rec_end: u32,
    /// Records entered.
    pub records: u32,
    /// Handshake bytes read.
    pub hpos: u32,
    /// Where the ClientHello ends (4 + its length).
    pub body_end: u32,
    /// Where the extensions end.
    pub ext_end: u32,
    /// Where the current extension ends.
    pub cur_end: u32,
    /// Bytes left to skip in `P_SKIP`, and the phase after it.
    pub skip: u32,
    pub after: u32,
    pub phase: u32,
    /// Extensions, `server_name` extensions and `host_name` entries seen.
    pub extensions: u32,
    pub sni: u32,
    pub hosts: u32,
    /// Bytes of the name left to read.
    pub name_left: u32,
    /// The name read so far.
    pub name: NameBuilder,
}

/// A byte could not be read: `NeedMore`, or the final answer.
type Stop = NameResult;

impl TlsWalk {
    pub const fn new() -> Self {
        TlsWalk {
            pos: 0,
            rec_end: 0,
            records: 0,
            hpos: 0,
            body_end: 0,
            ext_end: 0,
            cur_end: 0,
            skip: 0,
            after: 0,
            phase: P_START,
            extensions: 0,
            sni: 0,
            hosts: 0,
            name_left: 0,
            name: NameBuilder::new(),
        }
    }

    /// Starts the walk again, in place (no walk-sized temporary on the
    /// datapath's stack).
    #[inline(always)]
    pub fn reset(&mut self) {
        self.pos = 0;
        self.rec_end = 0;
        self.records = 0;
        self.hpos = 0;
        self.body_end = 0;
        self.ext_end = 0;
        self.cur_end = 0;
        self.skip = 0;
        self.after = 0;
        self.phase = P_START;
        self.extensions = 0;
        self.sni = 0;
        self.hosts = 0;
        self.name_left = 0;
        self.name = NameBuilder::new();
    }

    /// One step of the walk over `buf[..len]` (`len <= WINDOW`): `None` to
    /// go on, or the answer (with the name in `out` for `Name`).
    #[inline(always)]
    pub fn step(&mut self, buf: &Window, len: usize, out: &mut Name) -> Option<NameResult> {
        let r = match self.phase {
            P_START => self.start(buf, len),
            P_VERSION => self.version(buf, len),
            P_SESSION_ID => self.vector(buf, len, 1, P_SUITES),
            P_SUITES => self.vector(buf, len, 2, P_COMPRESSION),
            P_COMPRESSION => self.vector(buf, len, 1, P_EXTENSIONS),
            P_EXTENSIONS => self.extensions(buf, len),
            P_EXTENSION => self.extension(buf, len, out),
            P_SNI_LIST => self.sni_list(buf, len),
            P_SNI_ENTRY => self.sni_entry(buf, len),
            P_NAME => self.name_byte(buf, len, out),
            P_SKIP => self.skip_some(buf, len),
            _ => Err(NameResult::NoName),
        };
        match r {
            Ok(()) => None,
            // The window is full and the message still goes on: it never
            // fits.
            Err(NameResult::NeedMore) if len >= WINDOW => Some(NameResult::NoName),
            Err(stop) => Some(stop),
        }
    }

    /// Enters the record that starts at `pos`.
    #[inline(always)]
    fn next_record(&mut self, buf: &Window, len: usize) -> Result<(), Stop> {
        let pos = self.pos as usize;
        let first = self.records == 0;
        // The first record's header says whether this is TLS at all: judge
        // what has arrived of it.
        if first {
            for i in 0..RECORD_HEADER as usize {
                if i >= len {
                    return Err(NameResult::NeedMore);
                }
                let b = buf[i & MASK];
                let tls = match i {
                    0 => b == CONTENT_HANDSHAKE,
                    1 => b == 3,
                    2 => b <= 3,
                    _ => true,
                };
                if !tls {
                    return Err(NameResult::NotTls);
                }
            }
        }
        if self.records >= MAX_RECORDS {
            return Err(NameResult::NoName);
        }
        if pos + RECORD_HEADER as usize > len {
            return Err(NameResult::NeedMore);
        }
        let at = |i: usize| buf[(pos + i) & MASK];
        if at(0) != CONTENT_HANDSHAKE || at(1) != 3 || at(2) > 3 {
            // Another record amid the handshake message.
            return Err(NameResult::NoName);
        }
        let rec_len = u32::from(u16::from_be_bytes([at(3), at(4)]));
        if rec_len == 0 || rec_len > MAX_RECORD {
            return Err(NameResult::NoName);
        }
        self.records += 1;
        self.pos += RECORD_HEADER;
        self.rec_end = self.pos + rec_len;
        Ok(())
    }

    /// The next handshake byte, entering the next record if need be.
    #[inline(always)]
    fn byte(&mut self, buf: &Window, len: usize) -> Result<u8, Stop> {
        if self.hpos >= self.body_end {
            // Past the end of the ClientHello: its lengths disagree.
            return Err(NameResult::NoName);
        }
        if self.pos == self.rec_end {
            self.next_record(buf, len)?;
        }
        if self.pos as usize >= len {
            return Err(NameResult::NeedMore);
        }
        let b = buf[(self.pos as usize) & MASK];
        self.pos += 1;
        self.hpos += 1;
        Ok(b)
    }

    #[inline(always)]
    fn u16(&mut self, buf: &Window, len: usize) -> Result<u32, Stop> {
        let hi = self.byte(buf, len)?;
        let lo = self.byte(buf, len)?;
        Ok(u32::from(u16::from_be_bytes([hi, lo])))
    }

    /// Skips `n` handshake bytes, then goes on with `after`.
    #[inline(always)]
    fn skip_then(&mut self, n: u32, after: u32) -> Result<(), Stop> {
        if self.hpos + n > self.body_end {
            return Err(NameResult::NoName);
        }
        self.skip = n;
        self.after = after;
        self.phase = if n == 0 { after } else { P_SKIP };
        Ok(())
    }

    /// Skips what lies of the skipped field in this record (entering it
    /// first if the last one ended).
    #[inline(always)]
    fn skip_some(&mut self, buf: &Window, len: usize) -> Result<(), Stop> {
        if self.pos == self.rec_end {
            self.next_record(buf, len)?;
        }
        let take = self.skip.min(self.rec_end - self.pos);
        if (self.pos + take) as usize > len {
            return Err(NameResult::NeedMore);
        }
        self.pos += take;
        self.hpos += take;
        self.skip -= take;
        if self.skip == 0 {
            self.phase = self.after;
        }
        Ok(())
    }

    /// The first record's header and the handshake header.
    #[inline(always)]
    fn start(&mut self, buf: &Window, len: usize) -> Result<(), Stop> {
        // Until the length is read, the handshake header's four bytes.
        self.body_end = 4;
        if self.byte(buf, len)? != HANDSHAKE_CLIENT_HELLO {
            return Err(NameResult::NoName);
        }
        let b1 = self.byte(buf, len)?;
        let b2 = self.byte(buf, len)?;
        let b3 = self.byte(buf, len)?;
        let body = u32::from_be_bytes([0, b1, b2, b3]);
        if body < MIN_BODY || (RECORD_HEADER + 4 + body) as usize > WINDOW {
            return Err(NameResult::NoName);
        }
        // It cannot be whole before this many bytes (one record).
        if ((RECORD_HEADER + 4 + body) as usize) > len {
            return Err(NameResult::NeedMore);
        }
        self.body_end = 4 + body;
        self.phase = P_VERSION;
        Ok(())
    }

    /// `legacy_version` (3.x), then the random skipped.
    #[inline(always)]
    fn version(&mut self, buf: &Window, len: usize) -> Result<(), Stop> {
        if self.byte(buf, len)? != 3 {
            return Err(NameResult::NoName);
        }
        self.byte(buf, len)?;
        self.skip_then(32, P_SESSION_ID)
    }

    /// A vector with a `width`-byte length (session id, cipher suites,
    /// compression methods), skipped; then `next`.
    #[inline(always)]
    fn vector(&mut self, buf: &Window, len: usize, width: u32, next: u32) -> Result<(), Stop> {
        let n = if width == 1 { u32::from(self.byte(buf, len)?) } else { self.u16(buf, len)? };
        let ok = match self.phase {
            P_SESSION_ID => n <= 32,
            P_SUITES => n >= 2 && n % 2 == 0,
            _ => n >= 1,
        };
        if !ok {
            return Err(NameResult::NoName);
        }
        self.skip_then(n, next)
    }

    /// The extensions' length: they must end where the ClientHello does.
    #[inline(always)]
    fn extensions(&mut self, buf: &Window, len: usize) -> Result<(), Stop> {
        if self.hpos == self.body_end {
            // No extensions at all: no server_name.
            return Err(NameResult::NoName);
        }
        let n = self.u16(buf, len)?;
        if self.hpos + n != self.body_end {
            return Err(NameResult::NoName);
        }
        self.ext_end = self.body_end;
        self.phase = P_EXTENSION;
        Ok(())
    }

    /// One extension's header: `server_name` is read, any other skipped.
    /// At the end of the extensions, the answer.
    #[inline(always)]
    fn extension(&mut self, buf: &Window, len: usize, out: &mut Name) -> Result<(), Stop> {
        if self.hpos == self.ext_end {
            return Err(if self.hosts == 1 && out.len != 0 { NameResult::Name } else { NameResult::NoName });
        }
        self.extensions += 1;
        if self.extensions > MAX_EXTENSIONS {
            return Err(NameResult::NoName);
        }
        let kind = self.u16(buf, len)?;
        let n = self.u16(buf, len)?;
        if self.hpos + n > self.ext_end {
            return Err(NameResult::NoName);
        }
        self.cur_end = self.hpos + n;
        if kind != u32::from(EXT_SERVER_NAME) {
            return self.skip_then(n, P_EXTENSION);
        }
        self.sni += 1;
        if self.sni > 1 {
            return Err(NameResult::NoName);
        }
        self.phase = P_SNI_LIST;
        Ok(())
    }

    /// The `server_name` list's length: it fills the extension.
    #[inline(always)]
    fn sni_list(&mut self, buf: &Window, len: usize) -> Result<(), Stop> {
        let n = self.u16(buf, len)?;
        if n == 0 || self.hpos + n != self.cur_end {
            return Err(NameResult::NoName);
        }
        self.phase = P_SNI_ENTRY;
        Ok(())
    }

    /// One `server_name` entry's header, or the end of the list.
    #[inline(always)]
    fn sni_entry(&mut self, buf: &Window, len: usize) -> Result<(), Stop> {
        if self.hpos == self.cur_end {
            self.phase = P_EXTENSION;
            return Ok(());
        }
        let kind = self.byte(buf, len)?;
        let n = self.u16(buf, len)?;
        self.hosts += 1;
        // Only host_name is defined, and only once; another type's layout
        // is unknown, so the rest cannot be read either.
        if kind != NAME_TYPE_HOST || self.hosts > 1 || n == 0 || self.hpos + n > self.cur_end {
            return Err(NameResult::NoName);
        }
        self.name_left = n;
        self.name = NameBuilder::new();
        self.phase = P_NAME;
        Ok(())
    }

    /// One byte of the name, or its end.
    #[inline(always)]
    fn name_byte(&mut self, buf: &Window, len: usize, out: &mut Name) -> Result<(), Stop> {
        if self.name_left == 0 {
            let Some(n) = self.name.finish() else { return Err(NameResult::NoName) };
            out.len = n;
            self.phase = P_SNI_ENTRY;
            return Ok(());
        }
        let c = self.byte(buf, len)?;
        if !self.name.push(c, &mut out.bytes) {
            return Err(NameResult::NoName);
        }
        self.name_left -= 1;
        Ok(())
    }
}

impl Default for TlsWalk {
    fn default() -> Self {
        Self::new()
    }
}

/// The server name of the ClientHello at the start of `buf[..len]` (the
/// first bytes the client sent, in order): `Name` (in `out`), `NeedMore`,
/// `NoName` or `NotTls`. See the module's documentation.
pub fn client_hello_name(buf: &Window, len: usize, out: &mut Name) -> NameResult {
    let mut walk = TlsWalk::new();
    super::drive(buf, len, out, TLS_STEPS, |buf, len, out| walk.step(buf, len, out))
}
