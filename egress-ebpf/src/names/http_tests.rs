//! The request-head table: each request checked whole and at every prefix
//! (`NeedMore` until the empty line that ends the head).

use std::fmt::Write as _;

use super::NameResult::{NeedMore, NoName, NotHttp};
use super::WINDOW;
use super::http::{MAX_HEADERS, http_host};
use super::testkit::{Expect, check, fixture, parse, window};

/// Checks `head` (followed by `body`, which must not matter).
fn req(label: &str, head: &str, expect: Expect) {
    check(label, http_host, head.as_bytes(), Some(head.len()), expect);
    let mut with_body = head.as_bytes().to_vec();
    with_body.extend_from_slice(b"{\"Host\": \"attacker.example\"}\r\nHost: attacker.example\r\n\r\n");
    check(&format!("{label} (and a body)"), http_host, &with_body, Some(head.len()), expect);
}

#[test]
fn hosts() {
    let name = Expect::Name("api.openai.com");
    for (label, head) in [
        ("Host", "GET / HTTP/1.1\r\nHost: api.openai.com\r\n\r\n"),
        ("Host with a port", "GET /v1/models HTTP/1.1\r\nHost: api.openai.com:8443\r\nAccept: */*\r\n\r\n"),
        ("Host with an empty port", "GET / HTTP/1.1\r\nHost: api.openai.com:\r\n\r\n"),
        ("case and whitespace", "POST /v1 HTTP/1.1\r\nUser-Agent: x\r\nhOsT: \t API.OpenAI.Com.:443 \t\r\n\r\n"),
        ("no space after the colon", "GET / HTTP/1.1\r\nHOST:api.openai.com\r\n\r\n"),
        ("HTTP/1.0", "GET / HTTP/1.0\r\nHost: api.openai.com\r\n\r\n"),
        (
            "Host last of many",
            "GET /?q=a%20b HTTP/1.1\r\nA: 1\r\nB:\r\nX-Hosts: h\r\nHosts: x\r\nHos: y\r\nHost: api.openai.com\r\n\r\n",
        ),
        ("a method with a dash", "M-SEARCH * HTTP/1.1\r\nHost: api.openai.com\r\n\r\n"),
        ("OPTIONS *", "OPTIONS * HTTP/1.1\r\nHost: api.openai.com\r\n\r\n"),
        ("absolute-form", "GET http://api.openai.com/v1/models HTTP/1.1\r\n\r\n"),
        ("absolute-form with a port", "GET http://api.openai.com:8080/v1?x=1 HTTP/1.1\r\nAccept: */*\r\n\r\n"),
        ("absolute-form, no path", "GET http://api.openai.com HTTP/1.1\r\n\r\n"),
        ("absolute-form, query", "GET http://api.openai.com?x HTTP/1.1\r\n\r\n"),
        ("absolute-form, upper-case scheme", "GET HTTPS://API.openai.com./ HTTP/1.1\r\n\r\n"),
        ("absolute-form and the same Host", "GET http://api.openai.com/ HTTP/1.1\r\nHost: API.openai.com.:80\r\n\r\n"),
        ("CONNECT", "CONNECT api.openai.com:443 HTTP/1.1\r\nHost: api.openai.com:443\r\n\r\n"),
        ("CONNECT without Host", "CONNECT api.openai.com:443 HTTP/1.1\r\n\r\n"),
    ] {
        req(label, head, name);
    }
}

#[test]
fn no_name() {
    for (label, head) in [
        ("no Host", "GET / HTTP/1.1\r\nAccept: */*\r\n\r\n"),
        ("two Hosts", "GET / HTTP/1.1\r\nHost: api.openai.com\r\nHost: attacker.example\r\n\r\n"),
        ("the same Host twice", "GET / HTTP/1.1\r\nHost: api.openai.com\r\nhost: api.openai.com\r\n\r\n"),
        ("absolute-form and another Host", "GET http://api.openai.com/ HTTP/1.1\r\nHost: attacker.example\r\n\r\n"),
        ("absolute-form and a longer Host", "GET http://api.openai.com/ HTTP/1.1\r\nHost: api.openai.com.evil\r\n\r\n"),
        ("absolute-form and a shorter Host", "GET http://api.openai.com/ HTTP/1.1\r\nHost: api.openai.co\r\n\r\n"),
        ("CONNECT and another Host", "CONNECT api.openai.com:443 HTTP/1.1\r\nHost: attacker.example\r\n\r\n"),
        ("IPv6 literal", "GET / HTTP/1.1\r\nHost: [2001:db8::1]:80\r\n\r\n"),
        ("IPv6 literal in the target", "GET http://[2001:db8::1]/ HTTP/1.1\r\n\r\n"),
        ("IPv4 literal", "GET / HTTP/1.1\r\nHost: 192.0.2.1:8080\r\n\r\n"),
        ("empty Host", "GET / HTTP/1.1\r\nHost: \r\n\r\n"),
        ("Host of spaces", "GET / HTTP/1.1\r\nHost:   \r\n\r\n"),
        ("userinfo", "GET http://user@api.openai.com/ HTTP/1.1\r\n\r\n"),
        ("empty authority", "GET http:///x HTTP/1.1\r\nHost: api.openai.com\r\n\r\n"),
        ("another scheme", "GET ftp://api.openai.com/ HTTP/1.1\r\n\r\n"),
        ("a relative target", "GET api.openai.com HTTP/1.1\r\nHost: api.openai.com\r\n\r\n"),
        ("two names in Host", "GET / HTTP/1.1\r\nHost: api.openai.com attacker.example\r\n\r\n"),
        ("a comma in Host", "GET / HTTP/1.1\r\nHost: api.openai.com,attacker.example\r\n\r\n"),
        ("letters in the port", "GET / HTTP/1.1\r\nHost: api.openai.com:44x\r\n\r\n"),
        ("a port of 6 digits", "GET / HTTP/1.1\r\nHost: api.openai.com:123456\r\n\r\n"),
        ("bad name bytes", "GET / HTTP/1.1\r\nHost: api%2eopenai.com\r\n\r\n"),
        ("an empty label", "GET / HTTP/1.1\r\nHost: api..openai.com\r\n\r\n"),
        ("a space before the colon", "GET / HTTP/1.1\r\nHost : api.openai.com\r\n\r\n"),
        ("a folded line", "GET / HTTP/1.1\r\nX: 1\r\n Host: api.openai.com\r\nHost: a.example\r\n\r\n"),
        ("an empty header name", "GET / HTTP/1.1\r\n: x\r\nHost: api.openai.com\r\n\r\n"),
        ("bare LF in a header", "GET / HTTP/1.1\r\nX: 1\nHost: api.openai.com\r\n\r\n"),
        ("bare CR", "GET / HTTP/1.1\r\nHost: api.openai.com\rX: 1\r\n\r\n"),
        ("bare LF at the end", "GET / HTTP/1.1\r\nHost: api.openai.com\r\n\n"),
        ("a NUL in a value", "GET / HTTP/1.1\r\nX: a\0b\r\nHost: api.openai.com\r\n\r\n"),
        ("a control byte in the target", "GET /\x01 HTTP/1.1\r\nHost: api.openai.com\r\n\r\n"),
    ] {
        req(label, head, Expect::Final(NoName));
    }
    // At most 64 header lines.
    let mut head = String::from("GET / HTTP/1.1\r\nHost: api.openai.com\r\n");
    for i in 1..MAX_HEADERS {
        write!(head, "X-{i}: {i}\r\n").unwrap();
    }
    req("64 headers", &format!("{head}\r\n"), Expect::Name("api.openai.com"));
    req("65 headers", &format!("{head}X: y\r\n\r\n"), Expect::Final(NoName));
}

#[test]
fn not_http() {
    for (label, bytes) in [
        ("TLS", b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03".to_vec()),
        ("lower-case method", b"get / HTTP/1.1\r\nHost: a.example\r\n\r\n".to_vec()),
        ("a digit in the method", b"G3T / HTTP/1.1\r\n".to_vec()),
        ("a method of 17 letters", b"ABCDEFGHIJKLMNOPQ / HTTP/1.1\r\n".to_vec()),
        ("no method", b" / HTTP/1.1\r\n".to_vec()),
        ("two spaces", b"GET  / HTTP/1.1\r\n".to_vec()),
        ("HTTP/0.9", b"GET /\r\n".to_vec()),
        ("bare LF after the request line", b"GET / HTTP/1.1\nHost: api.openai.com\r\n\r\n".to_vec()),
        ("HTTP/2 preface", b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec()),
        ("lower-case version", b"GET / http/1.1\r\nHost: a.example\r\n\r\n".to_vec()),
        ("a space after the version", b"GET / HTTP/1.1 \r\nHost: a.example\r\n\r\n".to_vec()),
        ("SSH", b"SSH-2.0-OpenSSH_9.6\r\n".to_vec()),
        ("binary", vec![0, 1, 2, 3, 0xff]),
    ] {
        check(label, http_host, &bytes, None, Expect::Final(NotHttp));
    }
    assert_eq!(parse(http_host, &window(b""), 0).0, NeedMore);
}

#[test]
fn cut_short() {
    for head in [
        "GET / HTTP/1.1\r\nHost: api.openai.com\r\n",
        "GET / HTTP/1.1\r\nHost: api.openai.com\r\n\r",
        "GET http://api.openai.com/ HTTP/1.1\r\n",
        "GET / HTTP/1.1\r\nHost: api.open",
        "GET",
    ] {
        check(head, http_host, head.as_bytes(), None, Expect::Final(NeedMore));
    }
}

#[test]
fn the_window() {
    // A Host, then headers until the window is full: the head never ends
    // inside it, so a second Host could follow unseen.
    let mut head = String::from("GET / HTTP/1.1\r\nHost: api.openai.com\r\n");
    while head.len() < WINDOW + 100 {
        head.push_str("X-Long: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n");
    }
    let long = head.replace("X-Long", "X").replacen("X: ", "Xx: ", 1);
    // Fewer headers than the limit, but longer than the window.
    let mut lines = String::from("GET / HTTP/1.1\r\nHost: api.openai.com\r\nX: ");
    while lines.len() < WINDOW + 10 {
        lines.push('a');
    }
    let w = window(lines.as_bytes());
    for len in [0, 100, WINDOW - 1] {
        assert_eq!(parse(http_host, &w, len).0, NeedMore, "at {len}");
    }
    assert_eq!(parse(http_host, &w, WINDOW).0, NoName);
    assert_eq!(parse(http_host, &w, WINDOW + 5).0, NoName, "len past the window counts as the window");
    // Many headers give up at the limit, whatever the window.
    assert_eq!(parse(http_host, &window(long.as_bytes()), WINDOW).0, NoName);
    // A head that ends exactly at the window's end is read.
    let mut exact = String::from("GET / HTTP/1.1\r\nHost: api.openai.com\r\nX: ");
    while exact.len() < WINDOW - 4 {
        exact.push('a');
    }
    exact.push_str("\r\n\r\n");
    assert_eq!(exact.len(), WINDOW);
    check("a head of 16 KiB", http_host, exact.as_bytes(), Some(WINDOW), Expect::Name("api.openai.com"));
}

#[test]
fn captured_requests() {
    for (what, text) in [
        ("curl", include_str!("fixtures/curl_http.hex")),
        ("curl through a proxy (absolute-form)", include_str!("fixtures/curl_http_proxy.hex")),
    ] {
        let bytes = fixture(text);
        check(what, http_host, &bytes, Some(bytes.len()), Expect::Name("api.openai.com"));
    }
}
