//! End to end, connection names (issue 13): a real resolver (dnsmasq), a
//! real TLS server (`openssl s_server`) and real clients (curl, `openssl
//! s_client`, a hand-made ClientHello cut in two). An address learned for a
//! sanctioned name opens only that name: another name sent to the same
//! address (SNI or `Host`) is reset at once in enforce mode and reported as
//! `would_deny` in monitor mode, with the name in the flow log.

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use egress_lab::agent::AgentProcess;
use egress_lab::hello::client_hello;
use egress_lab::lab::Lab;
use egress_lab::netns::within;
use egress_lab::resolver::{Resolver, Zone};
use egress_lab::tls::{self, Certificate, Server, wait_accepting};

const RESOLVER: &str = "198.51.100.53";
/// The shared front end: the sanctioned API and the attacker's tenant.
const CDN: Ipv4Addr = Ipv4Addr::new(198, 18, 10, 1);
/// A partner network that a CIDR rule permits.
const PARTNER: Ipv4Addr = Ipv4Addr::new(198, 18, 20, 1);
const SANCTIONED: &str = "api.sanctioned.test";

fn pack(mode: &str) -> String {
    format!(
        r#"
version: 1
mode: {mode}
dns:
  resolvers: [{RESOLVER}]
smartgroups:
  runtime: {{ cidrs: [10.10.1.0/24] }}
webgroups:
  sanctioned: {{ domains: [{SANCTIONED}] }}
  evil: {{ domains: ["**.evil.test"] }}
rules:
  - {{ name: deny-evil, priority: 5, source: runtime, destination: {{ webgroup: evil }}, protocol: tcp, ports: [443], action: deny }}
  - {{ name: allow-sanctioned, priority: 10, source: runtime, destination: {{ webgroup: sanctioned }}, protocol: tcp, ports: [443, 80], action: permit }}
  - {{ name: allow-partner, priority: 15, source: runtime, destination: {{ cidrs: [198.18.20.0/24] }}, protocol: tcp, ports: [443], action: permit }}
  - {{ name: allow-dns, priority: 20, source: runtime, destination: resolvers, ports: [53], action: permit }}
  - {{ name: default-deny, priority: 1000, source: runtime, destination: any, action: deny }}
"#
    )
}

struct Names {
    lab: Lab,
    _resolver: Resolver,
    _tls: Vec<Server>,
    agent: AgentProcess,
    _dir: PathBuf,
}

/// A plain HTTP/1.1 server on port 80 of `addr` that answers every request.
fn http_server(lab: &Lab, addr: Ipv4Addr) {
    let listener = within(&lab.upstream.name, move || TcpListener::bind((addr, 80))).expect("netns").expect("bind");
    std::thread::spawn(move || {
        for mut conn in listener.incoming().flatten() {
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                if conn.read(&mut buf).is_ok_and(|n| n > 0) {
                    let _ = conn.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nConnection: close\r\n\r\nok\n");
                }
            });
        }
    });
}

fn start(mode: &str) -> Names {
    let lab = Lab::new(&[RESOLVER]).expect("lab (run as root)");
    lab.upstream.ip(&["addr", "add", &format!("{CDN}/32"), "dev", "lo"]).expect("cdn address");
    lab.upstream.ip(&["addr", "add", &format!("{PARTNER}/32"), "dev", "lo"]).expect("partner address");
    let dir = std::env::temp_dir().join(format!("egress-names-{}", lab.workload.name));
    std::fs::create_dir_all(&dir).expect("temp dir");
    // The clients skip verification: what is tested is the name they send.
    let cert = Certificate::self_signed(&dir, SANCTIONED).expect("openssl req");
    let mut tls: Vec<Server> = [CDN, PARTNER]
        .into_iter()
        .map(|a| Server::start(&lab.upstream, IpAddr::V4(a), &cert).expect("openssl s_server"))
        .collect();
    http_server(&lab, CDN);
    let zone =
        Zone { hosts: vec![(SANCTIONED.into(), vec![IpAddr::V4(CDN)])], cnames: vec![], wildcards: vec![], ttl: 300 };
    let resolver = Resolver::start(&lab, &[RESOLVER.parse().expect("addr")], &zone).expect("dnsmasq");
    // The servers answer before the agent starts.
    wait_accepting(&mut tls, &lab.workload, Duration::from_secs(5)).expect("TLS servers");
    let agent = AgentProcess::start(&lab, &egress_lab::agent_binary(), &pack(mode)).expect("agent");
    Names { lab, _resolver: resolver, _tls: tls, agent, _dir: dir }
}

/// curl from the workload: its exit code and how long it took.
fn curl(lab: &Lab, args: &[&str]) -> (i32, Duration) {
    tls::curl(&lab.workload, Duration::from_secs(5), args).expect("curl")
}

/// A reset the workload sees: curl's "connection reset" family of errors
/// (35: TLS handshake failed, 56: failure receiving), never a timeout (28).
fn reset(code: i32) -> bool {
    code == 35 || code == 56 || code == 52
}

#[test]
fn a_learned_address_opens_only_the_names_its_webgroup_covers() {
    let n = start("enforce");
    let url = format!("https://{SANCTIONED}/");
    // The sanctioned name, resolved through the gateway: delivered.
    let (code, _) = curl(&n.lab, &[&url]);
    assert_eq!(code, 0, "the sanctioned name on its learned address");
    // Another tenant's name on the same (learned) address: reset at once.
    let resolve = tls::resolve("attacker-tenant.example", IpAddr::V4(CDN));
    let (code, took) = curl(&n.lab, &["--resolve", &resolve, "https://attacker-tenant.example/"]);
    assert!(reset(code), "another name on the learned address: curl exit {code}");
    assert!(took < Duration::from_millis(900), "reset, not timed out: {took:?}");
    let rec = n
        .agent
        .wait_record(Duration::from_secs(3), |v| v["name"] == "attacker-tenant.example")
        .expect("a flow record with the name");
    assert_eq!(rec["verdict"], "denied", "{rec}");
    assert_eq!(rec["rule"], "default-deny", "{rec}");
    assert_eq!(rec["name_source"], "sni", "{rec}");
    assert_eq!(rec["reason"], "name_read", "{rec}");
    // No SNI at all: no name, not the WebGroup's.
    let out = Command::new("ip")
        .args(["netns", "exec", &n.lab.workload.name, "openssl", "s_client", "-noservername", "-connect"])
        .arg(format!("{CDN}:443"))
        .stdin(Stdio::null())
        .output()
        .expect("openssl s_client");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!text.contains("Server certificate"), "no SNI got a server certificate: {text}");
    n.agent.wait_record(Duration::from_secs(3), |v| v["reason"] == "name_missing").expect("a record without a name");
    // HTTP: the Host header is the name.
    let (code, _) = curl(&n.lab, &[&format!("http://{SANCTIONED}/")]);
    assert_eq!(code, 0, "sanctioned Host over HTTP");
    let (code, _) = curl(&n.lab, &["-H", "Host: attacker-tenant.example", &format!("http://{SANCTIONED}/")]);
    assert!(reset(code), "another Host on the learned address: curl exit {code}");
    let rec = n
        .agent
        .wait_record(Duration::from_secs(3), |v| v["name_source"] == "host" && v["verdict"] == "denied")
        .expect("a flow record with the Host");
    assert_eq!(rec["name"], "attacker-tenant.example", "{rec}");
    // A CIDR rule's flow: another name on the partner's address is let
    // through.
    let resolve = tls::resolve("api.partner.test", IpAddr::V4(PARTNER));
    assert_eq!(curl(&n.lab, &["--resolve", &resolve, "https://api.partner.test/"]).0, 0, "partner");
    // ... but one whose name an earlier deny WebGroup covers is denied.
    let resolve = tls::resolve("x.evil.test", IpAddr::V4(PARTNER));
    let (code, _) = curl(&n.lab, &["--resolve", &resolve, "https://x.evil.test/"]);
    assert!(reset(code), "a name the deny WebGroup covers, on a CIDR-permitted address: curl exit {code}");
    let rec = n.agent.wait_record(Duration::from_secs(3), |v| v["name"] == "x.evil.test").expect("record");
    assert_eq!(rec["rule"], "deny-evil", "{rec}");
    // The server's side of the denied flow was reset too: the partner's
    // server (one connection at a time, waiting in its handshake for the
    // ClientHello that never came) is free for the next one at once.
    let resolve = tls::resolve("api.partner.test", IpAddr::V4(PARTNER));
    let (code, took) = curl(&n.lab, &["--resolve", &resolve, "https://api.partner.test/"]);
    assert_eq!(code, 0, "the partner's server serves again after the denied flow ({took:?})");
}

/// From the workload: sends `hello` to the CDN in two segments, cut at
/// `cut`, and reads what comes back: `Ok(n)` bytes of an answer, or the
/// error (a reset).
fn split_hello(lab: &Lab, hello: Vec<u8>, cut: usize) -> std::io::Result<usize> {
    within(&lab.workload.name, move || -> std::io::Result<usize> {
        let mut s = TcpStream::connect_timeout(&SocketAddr::new(IpAddr::V4(CDN), 443), Duration::from_secs(2))?;
        s.set_nodelay(true)?;
        s.set_read_timeout(Some(Duration::from_secs(2)))?;
        s.write_all(&hello[..cut])?;
        std::thread::sleep(Duration::from_millis(50));
        s.write_all(&hello[cut..])?;
        let mut buf = [0u8; 64];
        s.read(&mut buf)
    })
    .expect("netns")
}

#[test]
fn a_clienthello_cut_in_two_is_read_whole_and_monitor_only_reports() {
    let n = start("enforce");
    // Learn the CDN's address for the sanctioned name.
    assert_eq!(curl(&n.lab, &[&format!("https://{SANCTIONED}/")]).0, 0);
    // The name in the second segment.
    let good = client_hello(SANCTIONED, 600);
    let got = split_hello(&n.lab, good.clone(), 300);
    assert!(got.as_ref().is_ok_and(|n| *n > 0), "sanctioned name in the second segment: {got:?}");
    let bad = client_hello("attacker-tenant.example", 600);
    let got = split_hello(&n.lab, bad, 300);
    assert!(got.is_err() || got.as_ref().is_ok_and(|n| *n == 0), "other name in the second segment: {got:?}");
    drop(n);

    // Monitor: the other name passes, reported as would_deny with its name.
    let n = start("monitor");
    assert_eq!(curl(&n.lab, &[&format!("https://{SANCTIONED}/")]).0, 0);
    let resolve = tls::resolve("attacker-tenant.example", IpAddr::V4(CDN));
    assert_eq!(
        curl(&n.lab, &["--resolve", &resolve, "https://attacker-tenant.example/"]).0,
        0,
        "monitor lets it through"
    );
    let rec = n
        .agent
        .wait_record(Duration::from_secs(3), |v| v["name"] == "attacker-tenant.example")
        .expect("a would_deny record with the name");
    assert_eq!(rec["verdict"], "would_deny", "{rec}");
}
