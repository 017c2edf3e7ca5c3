//! Test-only builders of ClientHellos (record layer, handshake, extensions)
//! and the checks every case goes through: whole, at every prefix length,
//! and (for TLS) cut into several records.

use super::{Name, NameResult, WINDOW, Window};

pub const EXT_SERVER_NAME: u16 = 0x0000;
pub const EXT_STATUS_REQUEST: u16 = 0x0005;
pub const EXT_SUPPORTED_GROUPS: u16 = 0x000a;
pub const EXT_EC_POINT_FORMATS: u16 = 0x000b;
pub const EXT_SIGNATURE_ALGORITHMS: u16 = 0x000d;
pub const EXT_ALPN: u16 = 0x0010;
pub const EXT_SCT: u16 = 0x0012;
pub const EXT_PADDING: u16 = 0x0015;
pub const EXT_EMS: u16 = 0x0017;
pub const EXT_COMPRESS_CERT: u16 = 0x001b;
pub const EXT_SESSION_TICKET: u16 = 0x0023;
pub const EXT_PRE_SHARED_KEY: u16 = 0x0029;
pub const EXT_SUPPORTED_VERSIONS: u16 = 0x002b;
pub const EXT_PSK_MODES: u16 = 0x002d;
pub const EXT_KEY_SHARE: u16 = 0x0033;
pub const EXT_ALPS: u16 = 0x44cd;
pub const EXT_ECH: u16 = 0xfe0d;
pub const EXT_RENEGOTIATION: u16 = 0xff01;

pub const GROUP_X25519: u16 = 0x001d;
pub const GROUP_X25519MLKEM768: u16 = 0x11ec;
/// X25519MLKEM768 client share: ML-KEM-768 encapsulation key and X25519.
pub const MLKEM768_SHARE: usize = 1184 + 32;

/// A GREASE value (RFC 8701): 0x?a?a.
pub const fn grease(i: u8) -> u16 {
    let b = ((i & 0x0f) << 4) | 0x0a;
    u16::from_be_bytes([b, b])
}

fn u16be(v: usize) -> [u8; 2] {
    u16::try_from(v).expect("u16 length").to_be_bytes()
}

/// Bytes of a recognisable pattern (no zeros, so a reader that stops early
/// is not fooled into reading lengths of 0).
pub fn filler(n: usize, seed: u8) -> Vec<u8> {
    (0..n).map(|i| ((i as u8).wrapping_mul(31) ^ seed) | 1).collect()
}

/// A ClientHello: its body's fields and extensions in order.
#[derive(Clone)]
pub struct Hello {
    pub version: u16,
    pub session_id: Vec<u8>,
    pub suites: Vec<u16>,
    pub compression: Vec<u8>,
    /// `None`: no extensions block at all (pre-TLS 1.2 style).
    pub extensions: Option<Vec<(u16, Vec<u8>)>>,
}

impl Hello {
    /// A plain TLS 1.3 hello with a `server_name` for `name`.
    pub fn basic(name: &[u8]) -> Self {
        Hello::without_name().ext(EXT_SERVER_NAME, sni(&[name]))
    }

    /// A plain TLS 1.3 hello without `server_name`.
    pub fn without_name() -> Self {
        Hello {
            version: 0x0303,
            session_id: filler(32, 0x55),
            suites: vec![0x1301, 0x1302, 0x1303, 0xc02b, 0xc02f],
            compression: vec![0],
            extensions: Some(Vec::new()),
        }
        .ext(EXT_SUPPORTED_GROUPS, u16_list(&[GROUP_X25519, 0x0017]))
        .ext(EXT_SUPPORTED_VERSIONS, supported_versions(&[0x0304, 0x0303]))
        .ext(EXT_KEY_SHARE, key_share(&[(GROUP_X25519, 32)]))
        .ext(EXT_SIGNATURE_ALGORITHMS, u16_list(&[0x0403, 0x0804, 0x0401]))
    }

    /// What a current browser sends: GREASE first and last, a post-quantum
    /// key share (the hello is over 1,500 bytes), ECH, ALPN, a session
    /// ticket, padding.
    pub fn browser(name: &[u8]) -> Self {
        let mut h = Hello::without_name();
        h.suites.insert(0, grease(1));
        h.extensions = Some(Vec::new());
        h.ext(grease(2), Vec::new())
            .ext(EXT_SERVER_NAME, sni(&[name]))
            .ext(EXT_EMS, Vec::new())
            .ext(EXT_RENEGOTIATION, vec![0])
            .ext(EXT_SUPPORTED_GROUPS, u16_list(&[grease(3), GROUP_X25519MLKEM768, GROUP_X25519, 0x0017]))
            .ext(EXT_EC_POINT_FORMATS, vec![1, 0])
            .ext(EXT_SESSION_TICKET, filler(192, 0x23))
            .ext(EXT_ALPN, alpn(&[b"h2", b"http/1.1"]))
            .ext(EXT_STATUS_REQUEST, vec![1, 0, 0, 0, 0])
            .ext(EXT_SIGNATURE_ALGORITHMS, u16_list(&[0x0403, 0x0804, 0x0401, 0x0503]))
            .ext(EXT_SCT, Vec::new())
            .ext(
                EXT_KEY_SHARE,
                key_share(&[(grease(3), 1), (GROUP_X25519MLKEM768, MLKEM768_SHARE), (GROUP_X25519, 32)]),
            )
            .ext(EXT_PSK_MODES, vec![1, 1])
            .ext(EXT_SUPPORTED_VERSIONS, supported_versions(&[grease(4), 0x0304, 0x0303]))
            .ext(EXT_COMPRESS_CERT, vec![2, 0, 2])
            .ext(EXT_ALPS, vec![0, 3, 2, b'h', b'2'])
            .ext(EXT_ECH, ech(208))
            .ext(grease(5), vec![0])
            .ext(EXT_PADDING, vec![0; 64])
    }

    /// Appends an extension.
    pub fn ext(mut self, kind: u16, data: Vec<u8>) -> Self {
        self.extensions.get_or_insert_with(Vec::new).push((kind, data));
        self
    }

    /// The body (after the handshake header).
    pub fn body(&self) -> Vec<u8> {
        let mut b = Vec::new();
        b.extend_from_slice(&self.version.to_be_bytes());
        b.extend_from_slice(&filler(32, 0x77));
        b.push(u8::try_from(self.session_id.len()).expect("session id"));
        b.extend_from_slice(&self.session_id);
        b.extend_from_slice(&u16be(self.suites.len() * 2));
        for s in &self.suites {
            b.extend_from_slice(&s.to_be_bytes());
        }
        b.push(u8::try_from(self.compression.len()).expect("compression"));
        b.extend_from_slice(&self.compression);
        if let Some(exts) = &self.extensions {
            let mut e = Vec::new();
            for (kind, data) in exts {
                e.extend_from_slice(&kind.to_be_bytes());
                e.extend_from_slice(&u16be(data.len()));
                e.extend_from_slice(data);
            }
            b.extend_from_slice(&u16be(e.len()));
            b.extend_from_slice(&e);
        }
        b
    }

    /// The handshake message: type 1, 24-bit length, body.
    pub fn handshake(&self) -> Vec<u8> {
        handshake(1, &self.body())
    }
}

/// A handshake message of `kind` with `body`.
pub fn handshake(kind: u8, body: &[u8]) -> Vec<u8> {
    let n = u32::try_from(body.len()).expect("length").to_be_bytes();
    let mut m = vec![kind, n[1], n[2], n[3]];
    m.extend_from_slice(body);
    m
}

/// One record of `kind`.
pub fn record(kind: u8, version: u16, payload: &[u8]) -> Vec<u8> {
    let mut r = vec![kind];
    r.extend_from_slice(&version.to_be_bytes());
    r.extend_from_slice(&u16be(payload.len()));
    r.extend_from_slice(payload);
    r
}

/// `payload` in handshake records cut at the offsets `cuts` (ascending).
pub fn records(payload: &[u8], cuts: &[usize], version: u16) -> Vec<u8> {
    let mut out = Vec::new();
    let mut start = 0;
    for &end in cuts.iter().chain(std::iter::once(&payload.len())) {
        out.extend_from_slice(&record(22, version, &payload[start..end]));
        start = end;
    }
    out
}

/// Cuts that split `n` bytes into `parts` records of about equal size.
pub fn even_cuts(n: usize, parts: usize) -> Vec<usize> {
    (1..parts).map(|i| i * n / parts).collect()
}

/// `server_name` extension data with one `host_name` entry per name.
pub fn sni(names: &[&[u8]]) -> Vec<u8> {
    sni_entries(&names.iter().map(|n| (0, *n)).collect::<Vec<_>>())
}

/// `server_name` extension data with entries of any type.
pub fn sni_entries(entries: &[(u8, &[u8])]) -> Vec<u8> {
    let mut list = Vec::new();
    for (kind, name) in entries {
        list.push(*kind);
        list.extend_from_slice(&u16be(name.len()));
        list.extend_from_slice(name);
    }
    let mut d = u16be(list.len()).to_vec();
    d.extend_from_slice(&list);
    d
}

pub fn u16_list(v: &[u16]) -> Vec<u8> {
    let mut d = u16be(v.len() * 2).to_vec();
    for x in v {
        d.extend_from_slice(&x.to_be_bytes());
    }
    d
}

pub fn supported_versions(v: &[u16]) -> Vec<u8> {
    let mut d = vec![u8::try_from(v.len() * 2).expect("versions")];
    for x in v {
        d.extend_from_slice(&x.to_be_bytes());
    }
    d
}

/// `key_share` client shares of the given groups and sizes.
pub fn key_share(shares: &[(u16, usize)]) -> Vec<u8> {
    let mut list = Vec::new();
    for (i, (group, n)) in shares.iter().enumerate() {
        list.extend_from_slice(&group.to_be_bytes());
        list.extend_from_slice(&u16be(*n));
        list.extend_from_slice(&filler(*n, i as u8));
    }
    let mut d = u16be(list.len()).to_vec();
    d.extend_from_slice(&list);
    d
}

pub fn alpn(protocols: &[&[u8]]) -> Vec<u8> {
    let mut list = Vec::new();
    for p in protocols {
        list.push(u8::try_from(p.len()).expect("protocol"));
        list.extend_from_slice(p);
    }
    let mut d = u16be(list.len()).to_vec();
    d.extend_from_slice(&list);
    d
}

/// An outer ECH extension (draft-ietf-tls-esni): type outer, cipher suite,
/// config id, encapsulated key, `payload` bytes of encrypted inner hello
/// (which holds the real name: never read).
pub fn ech(payload: usize) -> Vec<u8> {
    let mut d = vec![0, 0, 1, 0, 1, 0x42];
    d.extend_from_slice(&u16be(32));
    d.extend_from_slice(&filler(32, 0xec));
    d.extend_from_slice(&u16be(payload));
    // A name-looking inner part: the parser must not take it.
    let mut inner = filler(payload, 0xe0);
    let fake = sni(&[b"attacker.example"]);
    inner[..fake.len()].copy_from_slice(&fake);
    d.extend_from_slice(&inner);
    d
}

/// A `pre_shared_key` extension with one identity and one binder.
pub fn pre_shared_key(identity: usize) -> Vec<u8> {
    let mut ids = u16be(identity).to_vec();
    ids.extend_from_slice(&filler(identity, 0x29));
    ids.extend_from_slice(&[0, 0, 0, 1]);
    let mut d = u16be(ids.len()).to_vec();
    d.extend_from_slice(&ids);
    d.extend_from_slice(&u16be(33));
    d.push(32);
    d.extend_from_slice(&filler(32, 0xb1));
    d
}

/// The bytes of a hex fixture (`#` lines are notes).
pub fn fixture(text: &str) -> Vec<u8> {
    let hex: String = text.lines().filter(|l| !l.starts_with('#')).collect();
    (0..hex.len()).step_by(2).map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("hex")).collect()
}

/// A parser under test.
pub type Parser = fn(&Window, usize, &mut Name) -> NameResult;

/// The window holding `bytes` (cut at `WINDOW`).
pub fn window(bytes: &[u8]) -> Box<Window> {
    let mut w: Box<Window> = vec![0u8; WINDOW].into_boxed_slice().try_into().expect("window");
    let n = bytes.len().min(WINDOW);
    w[..n].copy_from_slice(&bytes[..n]);
    w
}

/// What a case should give.
#[derive(Clone, Copy, Debug)]
pub enum Expect<'a> {
    Name(&'a str),
    Final(NameResult),
}

/// Parses all of `bytes` (the window holds all of them; only `len` count).
pub fn parse(parser: Parser, w: &Window, len: usize) -> (NameResult, String) {
    let mut out = Name::new();
    out.bytes = [0xee; 256];
    let r = parser(w, len, &mut out);
    (r, String::from_utf8_lossy(out.as_bytes()).into_owned())
}

/// Checks a case whole and at every prefix: every prefix gives `NeedMore`
/// until the answer, then the answer. For a name, the answer comes exactly
/// at `complete` bytes (where the message ends). The bytes after `len` are
/// in the window all along: a parser that reads them is caught.
pub fn check(label: &str, parser: Parser, bytes: &[u8], complete: Option<usize>, expect: Expect) {
    let w = window(bytes);
    let total = bytes.len().min(WINDOW);
    if let Expect::Final(NameResult::NeedMore) = expect {
        for len in 0..=total {
            assert_eq!(parse(parser, &w, len).0, NameResult::NeedMore, "{label}: at {len} of {total}");
        }
        return;
    }
    let mut first_final = None;
    for len in 0..=total {
        let (r, name) = parse(parser, &w, len);
        if r == NameResult::NeedMore {
            assert!(first_final.is_none(), "{label}: NeedMore at {len} after an answer at {first_final:?}");
            continue;
        }
        first_final.get_or_insert(len);
        match expect {
            Expect::Name(want) => {
                assert_eq!((r, name.as_str()), (NameResult::Name, want), "{label}: at {len} of {total}");
            }
            Expect::Final(want) => {
                assert_eq!(r, want, "{label}: at {len} of {total}");
                assert!(name.is_empty(), "{label}: a name with {r:?}");
            }
        }
    }
    assert!(first_final.is_some(), "{label}: NeedMore at the full length {total}");
    if let (Expect::Name(_), Some(at)) = (expect, complete) {
        assert_eq!(first_final, Some(at), "{label}: answered at another length than the message's end");
    }
}
