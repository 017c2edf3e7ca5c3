//! Builds DNS wire messages (RFC 1035) for tests and benchmarks: queries
//! and responses with A, AAAA and CNAME records in any section, optional
//! name compression, and raw helpers to craft malformed messages by hand.
//!
//! ```
//! use egress_lab::dnsmsg::{Message, TYPE_A};
//! let query = Message::query(0x1234, "api.openai.com", TYPE_A).to_bytes();
//! let answer = Message::response(0x1234, "api.openai.com", TYPE_A)
//!     .cname("api.openai.com", "edge.cdn.net", 300)
//!     .a("edge.cdn.net", [203, 0, 113, 7], 60)
//!     .compress(true)
//!     .to_bytes();
//! assert_eq!(&answer[..2], &query[..2]);
//! ```
//!
//! Names are written as given (case preserved, a trailing dot ignored) and
//! are not validated: a label over 63 bytes gets a length byte of 64 or
//! more, which is how tests craft bad names.

use std::collections::HashMap;

/// Record types.
pub const TYPE_A: u16 = 1;
pub const TYPE_NS: u16 = 2;
pub const TYPE_CNAME: u16 = 5;
pub const TYPE_SOA: u16 = 6;
pub const TYPE_TXT: u16 = 16;
pub const TYPE_AAAA: u16 = 28;
/// Class IN.
pub const CLASS_IN: u16 = 1;

/// Header flag bits.
pub const FLAG_QR: u16 = 0x8000;
pub const FLAG_AA: u16 = 0x0400;
pub const FLAG_TC: u16 = 0x0200;
pub const FLAG_RD: u16 = 0x0100;
pub const FLAG_RA: u16 = 0x0080;
/// Flags of a plain query: RD.
pub const QUERY_FLAGS: u16 = FLAG_RD;
/// Flags of a plain response: QR, RD, RA, RCODE 0.
pub const RESPONSE_FLAGS: u16 = FLAG_QR | FLAG_RD | FLAG_RA;

/// Header size.
pub const HEADER_LEN: usize = 12;

/// A message section holding records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Section {
    Answer,
    Authority,
    Additional,
}

/// Record data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RData {
    A([u8; 4]),
    Aaaa([u8; 16]),
    /// A name (CNAME target); compressed like owner names.
    Name(String),
    /// Opaque bytes, written as they are (RDLENGTH is their length).
    Raw(Vec<u8>),
}

/// A resource record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub name: String,
    pub rtype: u16,
    pub class: u16,
    pub ttl: u32,
    pub data: RData,
}

/// A question.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Question {
    pub name: String,
    pub qtype: u16,
    pub class: u16,
}

/// A DNS message to build.
#[derive(Debug, Clone)]
pub struct Message {
    pub id: u16,
    pub flags: u16,
    pub questions: Vec<Question>,
    pub answers: Vec<Record>,
    pub authority: Vec<Record>,
    pub additional: Vec<Record>,
    /// Write names as pointers to earlier occurrences of the name or a suffix.
    pub compress: bool,
    /// Header counts written instead of the true ones (QD, AN, NS, AR).
    pub counts: [Option<u16>; 4],
}

/// Where the parts of an encoded message start.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Layout {
    /// Offset of each question's name.
    pub questions: Vec<usize>,
    /// Each record in wire order (answer, authority, additional).
    pub records: Vec<RecordAt>,
}

/// Offsets of one encoded record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordAt {
    pub section: Section,
    /// Start of the owner name.
    pub owner: usize,
    /// Start of the RDATA (just after RDLENGTH).
    pub rdata: usize,
}

impl Message {
    /// A query with one question (RD set).
    pub fn query(id: u16, name: &str, qtype: u16) -> Message {
        Message {
            id,
            flags: QUERY_FLAGS,
            questions: vec![Question { name: name.to_string(), qtype, class: CLASS_IN }],
            answers: Vec::new(),
            authority: Vec::new(),
            additional: Vec::new(),
            compress: false,
            counts: [None; 4],
        }
    }

    /// A response (QR, RD, RA, RCODE 0) echoing the question; add records.
    pub fn response(id: u16, name: &str, qtype: u16) -> Message {
        Message { flags: RESPONSE_FLAGS, ..Message::query(id, name, qtype) }
    }

    /// Adds a record to a section.
    #[must_use]
    pub fn record(mut self, section: Section, record: Record) -> Self {
        match section {
            Section::Answer => self.answers.push(record),
            Section::Authority => self.authority.push(record),
            Section::Additional => self.additional.push(record),
        }
        self
    }

    /// Adds a record with opaque RDATA to a section.
    #[must_use]
    pub fn raw(self, section: Section, name: &str, rtype: u16, ttl: u32, rdata: Vec<u8>) -> Self {
        self.record(section, Record { name: name.to_string(), rtype, class: CLASS_IN, ttl, data: RData::Raw(rdata) })
    }

    fn a_in(self, section: Section, name: &str, addr: [u8; 4], ttl: u32) -> Self {
        self.record(
            section,
            Record { name: name.to_string(), rtype: TYPE_A, class: CLASS_IN, ttl, data: RData::A(addr) },
        )
    }

    /// An A record in the answer section.
    #[must_use]
    pub fn a(self, name: &str, addr: [u8; 4], ttl: u32) -> Self {
        self.a_in(Section::Answer, name, addr, ttl)
    }

    /// An AAAA record in the answer section.
    #[must_use]
    pub fn aaaa(self, name: &str, addr: [u8; 16], ttl: u32) -> Self {
        let rec = Record { name: name.to_string(), rtype: TYPE_AAAA, class: CLASS_IN, ttl, data: RData::Aaaa(addr) };
        self.record(Section::Answer, rec)
    }

    /// A CNAME record in the answer section.
    #[must_use]
    pub fn cname(self, name: &str, target: &str, ttl: u32) -> Self {
        let rec = Record {
            name: name.to_string(),
            rtype: TYPE_CNAME,
            class: CLASS_IN,
            ttl,
            data: RData::Name(target.to_string()),
        };
        self.record(Section::Answer, rec)
    }

    /// An A record in the authority section.
    #[must_use]
    pub fn authority_a(self, name: &str, addr: [u8; 4], ttl: u32) -> Self {
        self.a_in(Section::Authority, name, addr, ttl)
    }

    /// An A record in the additional section.
    #[must_use]
    pub fn additional_a(self, name: &str, addr: [u8; 4], ttl: u32) -> Self {
        self.a_in(Section::Additional, name, addr, ttl)
    }

    /// Sets the RCODE (low 4 bits of the flags).
    #[must_use]
    pub fn rcode(mut self, rcode: u8) -> Self {
        self.flags = (self.flags & !0x000f) | (u16::from(rcode) & 0x000f);
        self
    }

    /// Sets the whole flags word.
    #[must_use]
    pub fn flags(mut self, flags: u16) -> Self {
        self.flags = flags;
        self
    }

    /// Turns name compression on or off.
    #[must_use]
    pub fn compress(mut self, on: bool) -> Self {
        self.compress = on;
        self
    }

    /// Writes this QDCOUNT instead of the number of questions.
    #[must_use]
    pub fn qdcount(mut self, n: u16) -> Self {
        self.counts[0] = Some(n);
        self
    }

    /// Writes this ANCOUNT instead of the number of answer records.
    #[must_use]
    pub fn ancount(mut self, n: u16) -> Self {
        self.counts[1] = Some(n);
        self
    }

    /// Writes this NSCOUNT instead of the number of authority records.
    #[must_use]
    pub fn nscount(mut self, n: u16) -> Self {
        self.counts[2] = Some(n);
        self
    }

    /// Writes this ARCOUNT instead of the number of additional records.
    #[must_use]
    pub fn arcount(mut self, n: u16) -> Self {
        self.counts[3] = Some(n);
        self
    }

    /// The wire bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        self.encode().0
    }

    /// The wire bytes and where each part starts.
    pub fn encode(&self) -> (Vec<u8>, Layout) {
        let true_counts = [self.questions.len(), self.answers.len(), self.authority.len(), self.additional.len()];
        let counts: Vec<u16> = (0..4)
            .map(|i| self.counts[i].unwrap_or_else(|| u16::try_from(true_counts[i]).expect("count fits 16 bits")))
            .collect();
        let mut w = Writer {
            buf: header(self.id, self.flags, counts[0], counts[1], counts[2], counts[3]),
            seen: HashMap::new(),
            compress: self.compress,
        };
        let mut layout = Layout::default();
        for q in &self.questions {
            layout.questions.push(w.buf.len());
            w.name(&q.name);
            w.buf.extend_from_slice(&q.qtype.to_be_bytes());
            w.buf.extend_from_slice(&q.class.to_be_bytes());
        }
        let sections = [
            (Section::Answer, &self.answers),
            (Section::Authority, &self.authority),
            (Section::Additional, &self.additional),
        ];
        for (section, records) in sections {
            for r in records {
                let owner = w.buf.len();
                w.name(&r.name);
                w.buf.extend_from_slice(&r.rtype.to_be_bytes());
                w.buf.extend_from_slice(&r.class.to_be_bytes());
                w.buf.extend_from_slice(&r.ttl.to_be_bytes());
                let rdlen_at = w.buf.len();
                w.buf.extend_from_slice(&[0, 0]);
                let rdata = w.buf.len();
                match &r.data {
                    RData::A(a) => w.buf.extend_from_slice(a),
                    RData::Aaaa(a) => w.buf.extend_from_slice(a),
                    RData::Name(n) => w.name(n),
                    RData::Raw(b) => w.buf.extend_from_slice(b),
                }
                let rdlen = u16::try_from(w.buf.len() - rdata).expect("RDATA fits 16 bits");
                w.buf[rdlen_at..rdlen_at + 2].copy_from_slice(&rdlen.to_be_bytes());
                layout.records.push(RecordAt { section, owner, rdata });
            }
        }
        (w.buf, layout)
    }
}

/// Writes names, remembering where each suffix went for compression.
struct Writer {
    buf: Vec<u8>,
    /// Dotted suffix (as written, case preserved) -> offset.
    seen: HashMap<String, usize>,
    compress: bool,
}

impl Writer {
    fn name(&mut self, name: &str) {
        let labels = split(name);
        // The longest suffix already written, if compressing.
        let reuse = if self.compress {
            (0..labels.len()).find_map(|i| self.seen.get(&labels[i..].join(".")).map(|&at| (i, at)))
        } else {
            None
        };
        let upto = reuse.map_or(labels.len(), |(i, _)| i);
        for i in 0..upto {
            let at = self.buf.len();
            if at < 0x4000 {
                self.seen.entry(labels[i..].join(".")).or_insert(at);
            }
            push_label(&mut self.buf, labels[i].as_bytes());
        }
        match reuse {
            Some((_, at)) => self.buf.extend_from_slice(&pointer(at as u16)),
            None => self.buf.push(0),
        }
    }
}

fn split(name: &str) -> Vec<&str> {
    let name = name.strip_suffix('.').unwrap_or(name);
    if name.is_empty() { Vec::new() } else { name.split('.').collect() }
}

fn push_label(buf: &mut Vec<u8>, label: &[u8]) {
    buf.push(u8::try_from(label.len()).expect("a label of at most 255 bytes"));
    buf.extend_from_slice(label);
}

/// A 12-byte header with the given counts (any values).
pub fn header(id: u16, flags: u16, qd: u16, an: u16, ns: u16, ar: u16) -> Vec<u8> {
    [id, flags, qd, an, ns, ar].iter().flat_map(|v| v.to_be_bytes()).collect()
}

/// Overwrites a header count in `msg`: 0 QDCOUNT, 1 ANCOUNT, 2 NSCOUNT, 3 ARCOUNT.
pub fn set_count(msg: &mut [u8], which: usize, n: u16) {
    assert!(which < 4, "four counts");
    msg[4 + 2 * which..6 + 2 * which].copy_from_slice(&n.to_be_bytes());
}

/// The labels of `name` without the root label (a trailing dot ignored;
/// lengths not checked beyond 255).
pub fn labels(name: &str) -> Vec<u8> {
    let mut b = Vec::new();
    for l in split(name) {
        push_label(&mut b, l.as_bytes());
    }
    b
}

/// A name in wire form from its labels as given (any bytes, so that tests
/// can put a NUL or a `.` inside a label), with its root label.
pub fn encode_labels(labels: &[&[u8]]) -> Vec<u8> {
    let mut b = Vec::new();
    for l in labels {
        push_label(&mut b, l);
    }
    b.push(0);
    b
}

/// `name` uncompressed, with its root label.
pub fn encode_name(name: &str) -> Vec<u8> {
    let mut b = labels(name);
    b.push(0);
    b
}

/// A compression pointer to `offset` (below 0x4000).
pub fn pointer(offset: u16) -> [u8; 2] {
    assert!(offset < 0x4000, "pointer offsets have 14 bits");
    (0xc000 | offset).to_be_bytes()
}

/// A question entry from an already encoded name.
pub fn question(name_wire: &[u8], qtype: u16, class: u16) -> Vec<u8> {
    let mut b = name_wire.to_vec();
    b.extend_from_slice(&qtype.to_be_bytes());
    b.extend_from_slice(&class.to_be_bytes());
    b
}

/// A resource record from an already encoded owner name; RDLENGTH is the
/// length of `rdata`.
pub fn rr(owner_wire: &[u8], rtype: u16, class: u16, ttl: u32, rdata: &[u8]) -> Vec<u8> {
    let rdlen = u16::try_from(rdata.len()).expect("RDATA fits 16 bits");
    rr_with_len(owner_wire, rtype, class, ttl, rdlen, rdata)
}

/// A resource record with any RDLENGTH, whatever `rdata` holds.
pub fn rr_with_len(owner_wire: &[u8], rtype: u16, class: u16, ttl: u32, rdlen: u16, rdata: &[u8]) -> Vec<u8> {
    let mut b = owner_wire.to_vec();
    b.extend_from_slice(&rtype.to_be_bytes());
    b.extend_from_slice(&class.to_be_bytes());
    b.extend_from_slice(&ttl.to_be_bytes());
    b.extend_from_slice(&rdlen.to_be_bytes());
    b.extend_from_slice(rdata);
    b
}

/// DNS over TCP: the message behind its 2-byte length.
pub fn tcp_framed(msg: &[u8]) -> Vec<u8> {
    let len = u16::try_from(msg.len()).expect("a DNS message of at most 65535 bytes");
    let mut b = len.to_be_bytes().to_vec();
    b.extend_from_slice(msg);
    b
}

/// Reads the name at `at` strictly (pointers only backwards, labels of
/// at most 63 bytes, at most 255 wire bytes): the dotted name as written
/// and the offset just after it where it started. For checking built
/// messages; `None` on anything malformed.
pub fn read_name(msg: &[u8], at: usize) -> Option<(String, usize)> {
    let mut pos = at;
    let mut lowest = at;
    let mut next = None;
    let mut out: Vec<String> = Vec::new();
    let mut wire = 1;
    loop {
        let b = *msg.get(pos)?;
        match b {
            0 => return Some((out.join("."), next.unwrap_or(pos + 1))),
            1..=63 => {
                let label = msg.get(pos + 1..pos + 1 + b as usize)?;
                wire += 1 + b as usize;
                if wire > 255 {
                    return None;
                }
                out.push(String::from_utf8_lossy(label).into_owned());
                pos += 1 + b as usize;
            }
            0xc0..=0xff => {
                let target = (((b & 0x3f) as usize) << 8) | *msg.get(pos + 1)? as usize;
                if target >= lowest {
                    return None;
                }
                next.get_or_insert(pos + 2);
                lowest = target;
                pos = target;
            }
            _ => return None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn count(msg: &[u8], which: usize) -> u16 {
        u16::from_be_bytes([msg[4 + 2 * which], msg[5 + 2 * which]])
    }

    #[test]
    fn query_layout() {
        let q = Message::query(0xbeef, "api.openai.com.", TYPE_AAAA).to_bytes();
        assert_eq!(&q[..4], &[0xbe, 0xef, 0x01, 0x00]);
        assert_eq!((count(&q, 0), count(&q, 1), count(&q, 2), count(&q, 3)), (1, 0, 0, 0));
        assert_eq!(&q[12..], &[&encode_name("api.openai.com")[..], &[0, 28, 0, 1]].concat()[..]);
        assert_eq!(encode_name("api.openai.com"), b"\x03api\x06openai\x03com\x00");
        assert_eq!(encode_name("."), vec![0]);
        assert_eq!(read_name(&q, 12), Some(("api.openai.com".to_string(), 12 + 16)));
    }

    #[test]
    fn response_counts_flags_and_sections() {
        let (m, layout) = Message::response(7, "Api.OpenAI.com", TYPE_A)
            .a("api.openai.com", [192, 0, 2, 1], 300)
            .aaaa("api.openai.com", [0x20, 1, 0xd, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1], 300)
            .authority_a("ns.openai.com", [192, 0, 2, 53], 60)
            .additional_a("ns2.openai.com", [192, 0, 2, 54], 60)
            .rcode(3)
            .encode();
        assert_eq!(u16::from_be_bytes([m[2], m[3]]), FLAG_QR | FLAG_RD | FLAG_RA | 3);
        assert_eq!((count(&m, 0), count(&m, 1), count(&m, 2), count(&m, 3)), (1, 2, 1, 1));
        assert_eq!(read_name(&m, 12).unwrap().0, "Api.OpenAI.com", "case preserved");
        let sections: Vec<Section> = layout.records.iter().map(|r| r.section).collect();
        assert_eq!(sections, [Section::Answer, Section::Answer, Section::Authority, Section::Additional]);
        // Every record parses back: owner, type, RDLENGTH, RDATA.
        let expect = [
            ("api.openai.com", TYPE_A, 300, 4),
            ("api.openai.com", TYPE_AAAA, 300, 16),
            ("ns.openai.com", TYPE_A, 60, 4),
            ("ns2.openai.com", TYPE_A, 60, 4),
        ];
        for (r, (name, rtype, ttl, rdlen)) in layout.records.iter().zip(expect) {
            let (owner, after) = read_name(&m, r.owner).unwrap();
            assert_eq!(owner, name);
            assert_eq!(u16::from_be_bytes([m[after], m[after + 1]]), rtype);
            assert_eq!(u32::from_be_bytes(m[after + 4..after + 8].try_into().unwrap()), ttl);
            assert_eq!(u16::from_be_bytes([m[after + 8], m[after + 9]]) as usize, rdlen);
            assert_eq!(r.rdata, after + 10);
        }
        assert_eq!(&m[layout.records[0].rdata..layout.records[0].rdata + 4], &[192, 0, 2, 1]);
        assert_eq!(layout.records[3].rdata + 4, m.len(), "nothing after the last record");
    }

    #[test]
    fn compression_points_at_the_question_and_cname_targets() {
        let build = |compress| {
            Message::response(1, "api.openai.com", TYPE_A)
                .cname("api.openai.com", "edge.cdn.net", 300)
                .cname("edge.cdn.net", "x.cdn.net", 300)
                .a("x.cdn.net", [203, 0, 113, 7], 60)
                .compress(compress)
                .encode()
        };
        let (m, l) = build(true);
        // The CNAME owner equals the question: a pointer to offset 12.
        assert_eq!(&m[l.records[0].owner..l.records[0].owner + 2], &[0xc0, 12]);
        // The first CNAME target is written in full inside its RDATA.
        let target_at = l.records[0].rdata;
        assert_eq!(&m[target_at..target_at + 14], &encode_name("edge.cdn.net")[..]);
        assert_eq!(u16::from_be_bytes([m[target_at - 2], m[target_at - 1]]), 14);
        // The second owner is that target: a pointer to where it was written.
        assert_eq!(&m[l.records[1].owner..l.records[1].owner + 2], &pointer(target_at as u16));
        // The second target shares the suffix `cdn.net`: one label, then a pointer.
        let t2 = l.records[1].rdata;
        assert_eq!(&m[t2..t2 + 4], &[&labels("x")[..], &pointer(target_at as u16 + 5)[..]].concat()[..]);
        assert_eq!(u16::from_be_bytes([m[t2 - 2], m[t2 - 1]]), 4);
        // And the A record's owner points at that second target.
        assert_eq!(&m[l.records[2].owner..l.records[2].owner + 2], &pointer(t2 as u16));
        for (r, name) in l.records.iter().zip(["api.openai.com", "edge.cdn.net", "x.cdn.net"]) {
            assert_eq!(read_name(&m, r.owner).unwrap().0, name);
            assert_eq!(read_name(&m, r.owner).unwrap().1, r.owner + 2, "owner is one pointer");
        }
        assert_eq!(read_name(&m, t2).unwrap(), ("x.cdn.net".to_string(), t2 + 4));

        // Uncompressed: the same names in full, no pointer anywhere.
        let (u, ul) = build(false);
        assert!(u.len() > m.len());
        for (r, name) in ul.records.iter().zip(["api.openai.com", "edge.cdn.net", "x.cdn.net"]) {
            assert_eq!(&u[r.owner..r.owner + encode_name(name).len()], &encode_name(name)[..]);
        }
        assert_eq!(&u[ul.records[1].rdata..ul.records[1].rdata + 11], &encode_name("x.cdn.net")[..]);
    }

    #[test]
    fn compression_is_exact_about_case() {
        let (m, l) =
            Message::response(1, "Api.OpenAI.com", TYPE_A).a("api.openai.com", [1, 2, 3, 4], 1).compress(true).encode();
        // Different case: written in full (it shares no exact suffix but `com`).
        let owner = l.records[0].owner;
        assert_eq!(&m[owner..owner + 11], &labels("api.openai")[..]);
        assert_eq!(&m[owner + 11..owner + 13], &pointer(12 + 11));
        assert_eq!(read_name(&m, owner).unwrap().0, "api.openai.com");
    }

    #[test]
    fn raw_helpers_and_overrides() {
        let m = Message::response(9, "a.example.com", TYPE_A)
            .a("a.example.com", [1, 1, 1, 1], 5)
            .ancount(65535)
            .arcount(3)
            .to_bytes();
        assert_eq!((count(&m, 0), count(&m, 1), count(&m, 2), count(&m, 3)), (1, 65535, 0, 3));
        let mut hand = header(9, RESPONSE_FLAGS, 1, 1, 0, 0);
        hand.extend(question(&encode_name("a.example.com"), TYPE_A, CLASS_IN));
        hand.extend(rr(&pointer(12), TYPE_A, CLASS_IN, 5, &[1, 1, 1, 1]));
        let built =
            Message::response(9, "a.example.com", TYPE_A).a("a.example.com", [1, 1, 1, 1], 5).compress(true).to_bytes();
        assert_eq!(hand, built);
        set_count(&mut hand, 1, 2);
        assert_eq!(count(&hand, 1), 2);
        let bad = rr_with_len(&pointer(12), TYPE_A, CLASS_IN, 5, 4, &[1, 2, 3, 4, 5]);
        assert_eq!(&bad[6..10], &[0, 0, 0, 5], "TTL");
        assert_eq!(&bad[10..12], &[0, 4], "RDLENGTH as asked");
        assert_eq!(bad.len(), 12 + 5, "RDATA as given");
        assert_eq!(tcp_framed(&built)[..2], (built.len() as u16).to_be_bytes());
        assert_eq!(&tcp_framed(&built)[2..], &built[..]);
        // Long labels are written as asked (malformed on purpose).
        assert_eq!(labels(&"a".repeat(64))[0], 64);
    }

    #[test]
    fn read_name_refuses_bad_pointers() {
        let mut m = header(1, RESPONSE_FLAGS, 1, 0, 0, 0);
        m.extend(pointer(12)); // self pointer
        assert_eq!(read_name(&m, 12), None);
        m.truncate(12);
        m.extend(pointer(14)); // forward
        m.extend(encode_name("a"));
        assert_eq!(read_name(&m, 12), None);
        assert_eq!(read_name(&m, 14), Some(("a".into(), 17)));
    }
}
