//! The gateway's transaction ids, end to end (issue 14, item 2). A
//! workload chooses every field of its query, so the gateway gives each
//! query it records an id of its own, and only an answer carrying that id
//! teaches.
//!
//! - Forged: the workload sends a query with IP TTL 1 (recorded at the
//!   gateway's LAN ingress, dropped by its forwarding: it never reaches a
//!   resolver) and an accomplice upstream, spoofing the resolver's address,
//!   answers it with the workload's own id. The answer reaches the workload
//!   unchanged and teaches nothing.
//! - Genuine: a real resolver (dnsmasq) answers, over UDP and over TCP; the
//!   workload gets its own id back and the address is learned.

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream, UdpSocket};
use std::time::Duration;

use egress_lab::agent::{AgentProcess, metric};
use egress_lab::dnsmsg::{Message, TYPE_A, tcp_framed};
use egress_lab::lab::{Lab, WORKLOAD_V4};
use egress_lab::netns::within;
use egress_lab::resolver::{Resolver, Zone};

/// dnsmasq listens here.
const RESOLVER: &str = "198.51.100.53";
/// Listed as a resolver too; nothing listens: the accomplice sends from it.
const SPOOFED: &str = "198.51.100.54";
/// Where `api.openai.com` is (the genuine answer).
const API: Ipv4Addr = Ipv4Addr::new(198, 18, 10, 1);
/// Where `a.example.com` is (the genuine answer over TCP).
const EXAMPLE: Ipv4Addr = Ipv4Addr::new(198, 18, 10, 2);
/// What the forged answer says `api.openai.com` is.
const EVIL: Ipv4Addr = Ipv4Addr::new(198, 18, 10, 66);
const TIMEOUT: Duration = Duration::from_secs(2);

// The test is about which answers teach addresses; it reaches them with
// bare TCP (no ClientHello), so the permit rule does not verify names.
const PACK: &str = r#"
version: 1
mode: enforce
dns:
  resolvers: [198.51.100.53, 198.51.100.54]
  min_ttl: 60
  max_ttl: 3600
  query_filter: enforce
smartgroups:
  runtime: { cidrs: [10.10.1.0/24] }
webgroups:
  sanctioned: { domains: [api.openai.com, "*.example.com"] }
rules:
  - { name: allow-sanctioned, priority: 10, source: runtime, destination: { webgroup: sanctioned }, protocol: tcp, ports: [443], action: permit, verify_names: false }
  - { name: allow-dns, priority: 20, source: runtime, destination: resolvers, ports: [53], action: permit }
  - { name: default-deny, priority: 1000, source: runtime, destination: any, action: deny }
"#;

struct Dns {
    lab: Lab,
    _resolver: Resolver,
    agent: AgentProcess,
}

fn start() -> Dns {
    let lab = Lab::new(&[RESOLVER, SPOOFED]).expect("lab (run as root)");
    lab.any_ip("198.18.0.0/16", "2001:db8:100::/48").expect("any-ip routes");
    lab.tcp_echo("0.0.0.0:443".parse().expect("addr")).expect("server");
    let zone = Zone {
        hosts: vec![
            ("api.openai.com".into(), vec![IpAddr::V4(API)]),
            ("a.example.com".into(), vec![IpAddr::V4(EXAMPLE)]),
        ],
        cnames: vec![],
        wildcards: vec![],
        ttl: 300,
    };
    let resolver = Resolver::start(&lab, &[RESOLVER.parse().expect("addr")], &zone).expect("dnsmasq");
    let agent = AgentProcess::start(&lab, &egress_lab::agent_binary(), PACK).expect("agent");
    Dns { lab, _resolver: resolver, agent }
}

impl Dns {
    /// Whether the workload reaches `addr`:443.
    fn reaches(&self, addr: Ipv4Addr) -> bool {
        self.lab.tcp_exchange(None, SocketAddr::new(IpAddr::V4(addr), 443), TIMEOUT).expect("exchange")
    }

    fn dns_event(&self, event: &str) -> u64 {
        let page = self.agent.metrics().expect("metrics");
        metric(&page, &format!("egress_dns_events_total{{event=\"{event}\"}}"))
    }
}

/// The id of a DNS message.
fn id_of(msg: &[u8]) -> u16 {
    u16::from_be_bytes([msg[0], msg[1]])
}

/// From the workload: a UDP socket that has sent `query` to `resolver`:53
/// with IP TTL `ttl`.
fn send_query(lab: &Lab, resolver: &str, query: Vec<u8>, ttl: u32) -> UdpSocket {
    let dst = SocketAddr::new(resolver.parse().expect("addr"), 53);
    within(&lab.workload.name, move || -> std::io::Result<UdpSocket> {
        let sock = UdpSocket::bind("0.0.0.0:0")?;
        sock.set_ttl(ttl)?;
        sock.set_read_timeout(Some(TIMEOUT))?;
        sock.send_to(&query, dst)?;
        Ok(sock)
    })
    .expect("workload namespace")
    .expect("query sent")
}

#[test]
fn a_forged_answer_with_the_workloads_id_teaches_nothing() {
    let dns = start();
    assert!(!dns.reaches(EVIL), "before any answer, the address is denied");
    let tracked = dns.dns_event("query_tracked");

    // TTL 1: the gateway records the query at its LAN ingress, then its
    // forwarding drops it; the resolver never sees it.
    let id = 0x4242;
    let sock = send_query(&dns.lab, SPOOFED, Message::query(id, "api.openai.com", TYPE_A).to_bytes(), 1);
    assert_eq!(dns.dns_event("query_tracked"), tracked + 1, "the gateway recorded the query");
    let port = sock.local_addr().expect("local address").port();

    // The accomplice, upstream, answers as the resolver with the id the
    // workload chose (it knows every field the workload chose).
    let forged = Message::response(id, "api.openai.com", TYPE_A).a("api.openai.com", EVIL.octets(), 300).to_bytes();
    let to = SocketAddr::new(WORKLOAD_V4.parse().expect("addr"), port);
    let sent = forged.clone();
    within(&dns.lab.upstream.name, move || -> std::io::Result<()> {
        let spoofing = UdpSocket::bind(SocketAddr::new(SPOOFED.parse().expect("addr"), 53))?;
        spoofing.send_to(&sent, to)?;
        Ok(())
    })
    .expect("upstream namespace")
    .expect("forged answer sent");

    let mut buf = [0u8; 512];
    let (n, from) = sock.recv_from(&mut buf).expect("the forged answer reaches the workload");
    assert_eq!(from, SocketAddr::new(SPOOFED.parse().expect("addr"), 53));
    assert_eq!(&buf[..n], &forged[..], "an answer naming no recorded query passes unchanged");
    assert!(!dns.reaches(EVIL), "the forged answer taught nothing: the address stays denied");
    assert_eq!(dns.dns_event("address_learned"), 0, "nothing learned");
    assert!(dns.dns_event("unsolicited") >= 1, "counted as unsolicited");
}

#[test]
fn a_genuine_answer_gives_the_workload_its_id_back_and_teaches() {
    let dns = start();
    assert!(!dns.reaches(API) && !dns.reaches(EXAMPLE), "before any answer, the addresses are denied");

    // UDP.
    let id = 0x5151;
    let sock = send_query(&dns.lab, RESOLVER, Message::query(id, "api.openai.com", TYPE_A).to_bytes(), 64);
    let mut buf = [0u8; 512];
    let (n, _) = sock.recv_from(&mut buf).expect("the resolver's answer reaches the workload");
    assert!(n >= 12, "an answer");
    assert_eq!(id_of(&buf[..n]), id, "the workload's own id is back in the answer");
    assert!(buf[..n].windows(4).any(|w| w == API.octets()), "the answer holds the address");
    assert!(dns.reaches(API), "the address was learned");

    // TCP: the id after the length prefix, both ways.
    let id = 0x6161;
    let query = tcp_framed(&Message::query(id, "a.example.com", TYPE_A).to_bytes());
    let answer = within(&dns.lab.workload.name, move || -> std::io::Result<Vec<u8>> {
        let mut conn = TcpStream::connect_timeout(&SocketAddr::new(RESOLVER.parse().expect("addr"), 53), TIMEOUT)?;
        conn.set_read_timeout(Some(TIMEOUT))?;
        conn.write_all(&query)?;
        let mut len = [0u8; 2];
        conn.read_exact(&mut len)?;
        let mut msg = vec![0u8; usize::from(u16::from_be_bytes(len))];
        conn.read_exact(&mut msg)?;
        Ok(msg)
    })
    .expect("workload namespace")
    .expect("an answer over TCP");
    assert!(answer.len() >= 12, "an answer over TCP");
    assert_eq!(id_of(&answer), id, "the workload's own id is back in the answer over TCP");
    assert!(dns.reaches(EXAMPLE), "the address was learned over TCP");
    assert!(dns.dns_event("address_learned") >= 2, "both answers taught");
    assert_eq!(dns.dns_event("unsolicited"), 0, "both answers named their queries");
}
