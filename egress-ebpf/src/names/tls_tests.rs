//! The ClientHello table: built hellos and captured ones, each checked whole,
//! at every prefix length and cut into 1..8 records (and at awkward places).

use super::NameResult::{Name, NeedMore, NoName, NotTls};
use super::testkit::{
    EXT_ALPN, EXT_ECH, EXT_PADDING, EXT_PRE_SHARED_KEY, EXT_PSK_MODES, EXT_SERVER_NAME, EXT_SESSION_TICKET,
    EXT_SUPPORTED_VERSIONS, Expect, Hello, alpn, check, ech, even_cuts, filler, fixture, grease, handshake, parse,
    pre_shared_key, record, records, sni, sni_entries, supported_versions, window,
};
use super::tls::{MAX_EXTENSIONS, MAX_RECORDS, TLS_STEPS, TlsWalk, client_hello_name};
use super::{NameResult, WINDOW};

const API: &str = "api.openai.com";

/// One record, checked whole and at every prefix.
fn one(label: &str, bytes: &[u8], expect: Expect) {
    check(label, client_hello_name, bytes, Some(bytes.len()), expect);
}

/// Where `needle` starts in `hay`.
fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// The handshake message `hs` in one record and cut into 2..=8 records
/// (evenly, and at the handshake header's bytes, around and inside the
/// name, and before the last byte), each checked at every prefix.
fn split(label: &str, hs: &[u8], expect: Expect) {
    one(&format!("{label} (1 record)"), &records(hs, &[], 0x0301), expect);
    let mut cuts: Vec<Vec<usize>> = (2..=8).map(|parts| even_cuts(hs.len(), parts)).collect();
    cuts.push(vec![1, 2, 3, 4]);
    cuts.push(vec![hs.len() - 1]);
    if let Expect::Name(name) = expect
        && let Some(at) = find(hs, name.as_bytes())
    {
        cuts.push(vec![at - 5, at - 2, at + 1, at + name.len() / 2]);
        cuts.push(vec![at + name.len()]);
    }
    for c in cuts.into_iter().filter(|c| c.iter().all(|&at| at > 0 && at < hs.len())) {
        let bytes = records(hs, &c, 0x0303);
        one(&format!("{label} (cut at {c:?})"), &bytes, expect);
    }
}

/// The answer for the whole of `bytes`, with the name.
fn whole(bytes: &[u8]) -> (NameResult, String) {
    parse(client_hello_name, &window(bytes), bytes.len())
}

/// Steps a walk takes over the whole of `bytes`.
fn steps(bytes: &[u8]) -> usize {
    let w = window(bytes);
    let mut walk = TlsWalk::new();
    let mut out = super::Name::new();
    (1..=TLS_STEPS).find(|_| walk.step(&w, bytes.len(), &mut out).is_some()).expect("the walk ends")
}

#[test]
fn names_from_built_hellos() {
    let name253 = long_name(253);
    let name253 = std::str::from_utf8(&name253).unwrap();
    let cases: Vec<(&str, Hello, Expect)> = vec![
        ("basic", Hello::basic(b"example.com"), Expect::Name("example.com")),
        ("browser", Hello::browser(API.as_bytes()), Expect::Name(API)),
        ("upper case, trailing dot", Hello::basic(b"Api.OpenAI.COM."), Expect::Name(API)),
        (
            "underscore, digits, punycode",
            Hello::basic(b"_a-1.xn--bcher-kva.example"),
            Expect::Name("_a-1.xn--bcher-kva.example"),
        ),
        ("one label", Hello::basic(b"localhost"), Expect::Name("localhost")),
        (
            "tls 1.2 style (no supported_versions), legacy version 0x0301",
            Hello { version: 0x0301, ..Hello::basic(b"example.com") },
            Expect::Name("example.com"),
        ),
        (
            "GREASE everywhere, SNI last",
            Hello::without_name()
                .ext(grease(0), Vec::new())
                .ext(grease(7), filler(9, 1))
                .ext(EXT_SUPPORTED_VERSIONS, supported_versions(&[grease(8), 0x0304]))
                .ext(EXT_SERVER_NAME, sni(&[b"example.com"])),
            Expect::Name("example.com"),
        ),
        (
            "session ticket, psk modes, pre_shared_key last",
            Hello::basic(b"example.com")
                .ext(EXT_SESSION_TICKET, filler(1200, 3))
                .ext(EXT_PSK_MODES, vec![1, 1])
                .ext(EXT_PRE_SHARED_KEY, pre_shared_key(400)),
            Expect::Name("example.com"),
        ),
        (
            "ECH: the outer name, not the inner one",
            Hello::basic(b"public.example").ext(EXT_ECH, ech(400)).ext(EXT_PADDING, vec![0; 100]),
            Expect::Name("public.example"),
        ),
        ("name of 253 bytes", Hello::basic(&long_name(253)), Expect::Name(name253)),
        (
            "name of 253 bytes and a trailing dot",
            Hello::basic(&[long_name(253), b".".to_vec()].concat()),
            Expect::Name(name253),
        ),
        ("label of 63 bytes", Hello::basic(&[vec![b'a'; 63], b".com".to_vec()].concat()), Expect::Name(LABEL63)),
    ];
    for (label, hello, expect) in cases {
        split(label, &hello.handshake(), expect);
    }
}

#[test]
fn contradictions_give_no_name() {
    let cases: Vec<(&str, Hello, Expect)> = vec![
        ("no server_name", Hello::without_name().ext(EXT_ALPN, alpn(&[b"h2"])), Expect::Final(NoName)),
        (
            "two host_name entries",
            Hello::without_name().ext(EXT_SERVER_NAME, sni(&[b"example.com", b"attacker.example"])),
            Expect::Final(NoName),
        ),
        (
            "the same host_name twice",
            Hello::without_name().ext(EXT_SERVER_NAME, sni(&[b"example.com", b"example.com"])),
            Expect::Final(NoName),
        ),
        (
            "two server_name extensions",
            Hello::basic(b"example.com").ext(EXT_SERVER_NAME, sni(&[b"attacker.example"])),
            Expect::Final(NoName),
        ),
        (
            "a name type other than host_name",
            Hello::without_name().ext(EXT_SERVER_NAME, sni_entries(&[(1, b"example.com")])),
            Expect::Final(NoName),
        ),
        (
            "host_name and another type",
            Hello::without_name().ext(EXT_SERVER_NAME, sni_entries(&[(0, b"example.com"), (1, b"x")])),
            Expect::Final(NoName),
        ),
        ("empty server_name extension", Hello::without_name().ext(EXT_SERVER_NAME, Vec::new()), Expect::Final(NoName)),
        ("empty server_name list", Hello::without_name().ext(EXT_SERVER_NAME, vec![0, 0]), Expect::Final(NoName)),
    ];
    for (label, hello, expect) in cases {
        split(label, &hello.handshake(), expect);
    }
}

#[test]
fn names_that_are_not_give_no_name() {
    let cases: Vec<(&str, Hello, Expect)> = vec![
        ("empty host_name", Hello::basic(b""), Expect::Final(NoName)),
        ("a space in the name", Hello::basic(b"exa mple.com"), Expect::Final(NoName)),
        ("a percent sign in the name", Hello::basic(b"exa%2emple.com"), Expect::Final(NoName)),
        ("a NUL in the name", Hello::basic(b"example.com\0.attacker.example"), Expect::Final(NoName)),
        ("UTF-8 in the name", Hello::basic("exämple.com".as_bytes()), Expect::Final(NoName)),
        ("an empty label", Hello::basic(b"a..example.com"), Expect::Final(NoName)),
        ("a leading dot", Hello::basic(b".example.com"), Expect::Final(NoName)),
        ("only a dot", Hello::basic(b"."), Expect::Final(NoName)),
        ("two trailing dots", Hello::basic(b"example.com.."), Expect::Final(NoName)),
        ("label of 64 bytes", Hello::basic(&[vec![b'a'; 64], b".com".to_vec()].concat()), Expect::Final(NoName)),
        ("name of 254 bytes", Hello::basic(&long_name(254)), Expect::Final(NoName)),
        ("an IPv4 address", Hello::basic(b"10.0.0.1"), Expect::Final(NoName)),
        ("no extensions block", Hello { extensions: None, ..Hello::basic(b"x") }, Expect::Final(NoName)),
        ("empty extensions block", Hello { extensions: Some(Vec::new()), ..Hello::basic(b"x") }, Expect::Final(NoName)),
        ("session id of 33 bytes", Hello { session_id: filler(33, 1), ..Hello::basic(b"x.y") }, Expect::Final(NoName)),
        ("no cipher suites", Hello { suites: Vec::new(), ..Hello::basic(b"x.y") }, Expect::Final(NoName)),
        ("no compression method", Hello { compression: Vec::new(), ..Hello::basic(b"x.y") }, Expect::Final(NoName)),
        ("legacy version 2.0", Hello { version: 0x0200, ..Hello::basic(b"x.y") }, Expect::Final(NoName)),
    ];
    for (label, hello, expect) in cases {
        split(label, &hello.handshake(), expect);
    }
}

const LABEL63: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa.com";

/// A name of `n` bytes: labels of 63 and a shorter last one.
fn long_name(n: usize) -> Vec<u8> {
    (0..n).map(|i| if i % 64 == 63 { b'.' } else { b'a' + (i % 26) as u8 }).collect()
}

#[test]
fn a_browser_hello_spans_more_than_one_segment() {
    let hs = Hello::browser(API.as_bytes()).handshake();
    assert!(hs.len() > 1500, "{} bytes", hs.len());
    // Cut into two records at every offset.
    for cut in 1..hs.len() {
        let bytes = records(&hs, &[cut], 0x0303);
        assert_eq!(whole(&bytes), (Name, API.to_owned()), "cut at {cut}");
        let short = &bytes[..bytes.len() - 1];
        assert_eq!(parse(client_hello_name, &window(&bytes), short.len()).0, NeedMore, "cut at {cut}");
    }
}

/// Mangles the body of a basic hello for `example.com` at the byte
/// `offset` from the end (`delta` added to it).
fn mangled(offset_from_end: usize, delta: i16) -> Vec<u8> {
    let mut body = Hello::basic(b"example.com").body();
    let i = body.len() - offset_from_end;
    body[i] = body[i].wrapping_add_signed(delta as i8);
    handshake(1, &body)
}

#[test]
fn lengths_that_disagree() {
    // Offsets from the end of the body of `Hello::basic(b"example.com")`,
    // whose last extension is server_name: name (11), its length (2), its
    // type (1), the list length (2), the extension length (2), the type.
    let name_len = 11 + 1;
    let list_len = 11 + 3 + 1;
    let ext_len = 11 + 3 + 2 + 1;
    for (what, off, delta) in [
        ("name length + 1", name_len, 1),
        ("name length - 1", name_len, -1),
        ("list length + 1", list_len, 1),
        ("list length - 1", list_len, -1),
        ("extension length + 1", ext_len, 1),
        ("extension length - 1", ext_len, -1),
    ] {
        split(what, &mangled(off, delta), Expect::Final(NoName));
    }
    let base = Hello::basic(b"example.com");
    // The extensions' length says one more or one less.
    let mut body = base.body();
    let ext_start = body.len() - base.extensions.as_ref().map_or(0, |e| e.iter().map(|(_, d)| 4 + d.len()).sum()) - 2;
    body[ext_start + 1] += 1;
    split("extensions length + 1", &handshake(1, &body), Expect::Final(NoName));
    body[ext_start + 1] -= 2;
    split("extensions length - 1", &handshake(1, &body), Expect::Final(NoName));
    // Bytes in the ClientHello after its extensions.
    let mut body = base.body();
    body.extend_from_slice(&[0, 0, 0, 0]);
    split("bytes after the extensions", &handshake(1, &body), Expect::Final(NoName));
    // An odd cipher suites length.
    let mut body = base.body();
    body[2 + 32 + 1 + 32 + 1] += 1;
    split("odd cipher suites length", &handshake(1, &body), Expect::Final(NoName));
    // The handshake length says more than is sent: it never completes.
    let mut hs = base.handshake();
    hs[3] += 4;
    one("handshake length + 4", &records(&hs, &[], 0x0301), Expect::Final(NeedMore));
    // ... or less: the extensions run past it.
    let mut hs = base.handshake();
    hs[3] -= 4;
    one("handshake length - 4", &records(&hs, &[], 0x0301), Expect::Final(NoName));
    // A ClientHello too short to be one.
    one("tiny ClientHello", &records(&handshake(1, &[3, 3, 0, 0]), &[], 0x0301), Expect::Final(NoName));
}

#[test]
fn record_layer() {
    let hs = Hello::basic(b"example.com").handshake();
    for version in [0x0300, 0x0301, 0x0302, 0x0303] {
        one(&format!("record version {version:#06x}"), &records(&hs, &[], version), Expect::Name("example.com"));
        one(
            &format!("records of version {version:#06x}"),
            &records(&hs, &[20, 90], version),
            Expect::Name("example.com"),
        );
    }
    for version in [0x0304, 0x0200, 0x0103] {
        one(&format!("record version {version:#06x}"), &records(&hs, &[], version), Expect::Final(NotTls));
        // A later record's version is not one either.
        let mut bytes = records(&hs, &[40], 0x0303);
        bytes[5 + 40 + 1..5 + 40 + 3].copy_from_slice(&u16::to_be_bytes(version));
        one(&format!("second record version {version:#06x}"), &bytes, Expect::Final(NoName));
    }
    // Another record amid the handshake message.
    for (kind, what) in [(20u8, "change_cipher_spec"), (21, "alert"), (23, "application_data"), (24, "heartbeat")] {
        let mut bytes = records(&hs[..50], &[], 0x0303);
        bytes.extend_from_slice(&record(kind, 0x0303, &[1]));
        bytes.extend_from_slice(&records(&hs[50..], &[], 0x0303));
        one(&format!("{what} record amid the hello"), &bytes, Expect::Final(NoName));
    }
    // An empty handshake record, first or amid.
    let mut bytes = record(22, 0x0301, &[]);
    bytes.extend_from_slice(&records(&hs, &[], 0x0301));
    one("empty first record", &bytes, Expect::Final(NoName));
    one("empty record amid", &records(&hs, &[30, 30], 0x0303), Expect::Final(NoName));
    // A record longer than 2^14.
    let mut bytes = records(&hs, &[], 0x0301);
    bytes[3..5].copy_from_slice(&0x4001u16.to_be_bytes());
    one("record over 2^14", &bytes, Expect::Final(NoName));
    // At most 16 records: 16 read, 17 not.
    let cuts: Vec<usize> = (1..MAX_RECORDS as usize).map(|i| i * 7).collect();
    one("16 records", &records(&hs, &cuts, 0x0303), Expect::Name("example.com"));
    let cuts: Vec<usize> = (1..=MAX_RECORDS as usize).map(|i| i * 7).collect();
    one("17 records", &records(&hs, &cuts, 0x0303), Expect::Final(NoName));
    // What follows the hello does not matter: change_cipher_spec, early
    // data, or another handshake message in the hello's last record.
    let mut bytes = records(&hs, &[60], 0x0301);
    let complete = bytes.len();
    bytes.extend_from_slice(&record(20, 0x0303, &[1]));
    bytes.extend_from_slice(&record(23, 0x0303, &filler(300, 9)));
    check(
        "hello, change_cipher_spec, early data",
        client_hello_name,
        &bytes,
        Some(complete),
        Expect::Name("example.com"),
    );
    let mut more = hs.clone();
    more.extend_from_slice(&handshake(11, &filler(20, 4)));
    let bytes = records(&more, &[], 0x0301);
    check(
        "another message after the hello",
        client_hello_name,
        &bytes,
        Some(5 + hs.len()),
        Expect::Name("example.com"),
    );
}

#[test]
fn not_tls() {
    for (what, bytes) in [
        ("HTTP", b"GET / HTTP/1.1\r\nHost: example.com\r\n\r\n".to_vec()),
        ("SSLv2 hello", vec![0x80, 0x2e, 0x01, 0x03, 0x01, 0x00, 0x15]),
        ("application data", record(23, 0x0303, &filler(40, 1))),
        ("major version 2", vec![22, 2, 0, 0, 40]),
        ("SSH", b"SSH-2.0-OpenSSH_9.6\r\n".to_vec()),
    ] {
        one(what, &bytes, Expect::Final(NotTls));
    }
    // A handshake record that does not start with a ClientHello.
    let server_hello = handshake(2, &Hello::basic(b"example.com").body());
    one("ServerHello", &records(&server_hello, &[], 0x0303), Expect::Final(NoName));
    assert_eq!(whole(&[]), (NeedMore, String::new()));
}

#[test]
fn extensions_at_most_64() {
    let mut hello = Hello::basic(b"example.com");
    while hello.extensions.as_ref().unwrap().len() < MAX_EXTENSIONS as usize {
        let i = hello.extensions.as_ref().unwrap().len() as u8;
        hello = hello.ext(grease(i), vec![1]);
    }
    split("64 extensions", &hello.handshake(), Expect::Name("example.com"));
    split("65 extensions", &hello.ext(EXT_PADDING, Vec::new()).handshake(), Expect::Final(NoName));
}

#[test]
fn the_window() {
    // A hello of 16,379 bytes fits in one record: 16,384 bytes.
    let base = Hello::basic(b"example.com");
    let pad = WINDOW - 5 - base.handshake().len() - 4;
    let hs = base.clone().ext(EXT_PADDING, vec![0; pad]).handshake();
    let bytes = records(&hs, &[], 0x0301);
    assert_eq!(bytes.len(), WINDOW);
    one("16 KiB in one record", &bytes, Expect::Name("example.com"));
    // In two records it does not fit: NeedMore until the window is full.
    let bytes = records(&hs, &[8000], 0x0303);
    let w = window(&bytes);
    for len in [0, 100, 8000, WINDOW - 1] {
        assert_eq!(parse(client_hello_name, &w, len).0, NeedMore, "at {len}");
    }
    assert_eq!(parse(client_hello_name, &w, WINDOW).0, NoName);
    // Longer than the window: no name as soon as the length is read.
    let hs = base.ext(EXT_PADDING, vec![0; WINDOW]).handshake();
    let bytes = records(&hs, &[12000], 0x0303);
    assert_eq!(parse(client_hello_name, &window(&bytes), 9).0, NoName);
    assert_eq!(parse(client_hello_name, &window(&bytes), 8).0, NeedMore);
}

#[test]
fn captured_hellos() {
    for (what, text, expect) in [
        ("openssl s_client", include_str!("fixtures/openssl_sni.hex"), Expect::Name(API)),
        ("openssl s_client, resumed (pre_shared_key)", include_str!("fixtures/openssl_resumed.hex"), Expect::Name(API)),
        ("openssl s_client -tls1_2, Api.OpenAI.com.", include_str!("fixtures/openssl_tls12.hex"), Expect::Name(API)),
        ("openssl s_client -noservername", include_str!("fixtures/openssl_nosni.hex"), Expect::Final(NoName)),
        ("curl", include_str!("fixtures/curl_sni.hex"), Expect::Name(API)),
    ] {
        let bytes = fixture(text);
        one(what, &bytes, expect);
        // Cut again into records: the captures are one record each.
        let len = usize::from(u16::from_be_bytes([bytes[3], bytes[4]]));
        assert_eq!(bytes.len(), 5 + len, "{what}: one record");
        split(what, &bytes[5..], expect);
    }
}

#[test]
fn steps_stay_within_the_bound() {
    // The longest walk: 16 records, 64 extensions, a 253-byte name and a
    // trailing dot, every skipped field cut by a record boundary.
    let name = [long_name(253), b".".to_vec()].concat();
    let mut hello = Hello::basic(&name);
    while hello.extensions.as_ref().unwrap().len() < MAX_EXTENSIONS as usize {
        let i = hello.extensions.as_ref().unwrap().len() as u8;
        hello = hello.ext(grease(i), vec![1; 30]);
    }
    let hs = hello.handshake();
    let cuts: Vec<usize> = (1..MAX_RECORDS as usize).map(|i| 50 + i * 67).collect();
    let bytes = records(&hs, &cuts, 0x0303);
    assert_eq!(whole(&bytes).0, Name);
    let n = steps(&bytes);
    assert!(n < TLS_STEPS * 4 / 5, "{n} steps");
    let n = steps(&records(&Hello::browser(API.as_bytes()).handshake(), &[], 0x0303));
    assert!(n < 100, "browser: {n} steps");
}
