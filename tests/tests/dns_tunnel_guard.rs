//! The DNS tunnel guard (`dns.tunnel_guard`, issue 14), through the real
//! query program under `BPF_PROG_TEST_RUN`: a tunnel of base32 and hex
//! labels under an allowed `**.` zone is flagged within its first 20
//! queries and, under enforce, refused from then on for that workload and
//! zone only; 20,000 lookups of realistic names (cloud-generated ones
//! included) flag nothing; monitor reports and refuses nothing. Before the
//! guard, every one of these queries was forwarded: the filter allows any
//! name under an allowed zone.

use std::net::IpAddr;

use aya::programs::{TestRun, TestRunOptions};
use egress_agent::datapath::events::{Event, decode};
use egress_agent::datapath::{Datapath, TC_PROGRAM};
use egress_common::{DnsStat, NAME_ANY_DEPTH, NameEntry};
use egress_lab::dnsmsg::Message;
use egress_lab::packet::Spec;
use egress_policy::{compile::compile, load_sources};

const TC_ACT_REDIRECT: u32 = 7;
const PASS: u32 = -1i32 as u32;

/// The zones a workload may ask under, as a pack for AI agents on AWS
/// would allow them (regional AWS zones, Lambda function URLs, Azure
/// `OpenAI`; CDN distributions and storage accounts by exact name, as the
/// validator wants under public suffixes: `exact`), with the query filter
/// and the guard in `guard` mode.
fn pack(guard: &str, exact: &[String]) -> String {
    let exact: Vec<String> = exact.iter().map(|n| format!("\"{n}\"")).collect();
    format!(
        r#"
version: 1
mode: enforce
dns: {{ resolvers: [10.10.0.2], query_filter: enforce, tunnel_guard: {guard} }}
smartgroups: {{ workloads: {{ cidrs: [10.10.1.0/24] }} }}
webgroups:
  cloud:
    domains: ["**.us-east-1.amazonaws.com", "**.us-west-2.amazonaws.com", "**.eu-west-1.amazonaws.com",
              "**.ap-southeast-2.amazonaws.com", "**.elb.amazonaws.com", "**.lambda-url.us-east-1.on.aws",
              "**.openai.azure.com"]
  cdn: {{ domains: [cdn.placeholder.example, {}] }}
  llm: {{ domains: [api.openai.com, api.anthropic.com, "*.googleapis.com"] }}
  partner: {{ domains: ["**.partner.example"] }}
rules:
  - {{ name: allow-web, priority: 10, source: workloads, destination: [{{ webgroup: cloud }}, {{ webgroup: cdn }}, {{ webgroup: llm }}, {{ webgroup: partner }}], protocol: tcp, ports: [443], action: permit }}
  - {{ name: allow-dns, priority: 20, source: workloads, destination: resolvers, ports: [53], action: permit }}
  - {{ name: default-deny, priority: 100, source: workloads, destination: any, action: deny }}
"#,
        exact.join(", ")
    )
}

fn loaded(guard: &str, exact: &[String]) -> Datapath {
    let pack = load_sources(&[("t.yaml".into(), pack(guard, exact))]).expect("pack");
    let mut dp = Datapath::load().expect("datapath loads (run as root)");
    dp.install(compile(&pack).expect("compiles")).expect("installs");
    dp
}

/// Runs one UDP query for `name` from `workload`: whether it was
/// forwarded (`true`) or answered REFUSED (`false`).
fn ask(dp: &mut Datapath, workload: &str, port: u16, id: u16, name: &str) -> bool {
    let src: IpAddr = workload.parse().expect("address");
    let frame = Spec::udp(src, "10.10.0.2".parse().expect("address"), port, 53)
        .with_payload(Message::query(id, name, 1).to_bytes())
        .build();
    let mut out = vec![0u8; frame.len() + 64];
    let prog = dp.tc_program(TC_PROGRAM).expect("program");
    let r = prog
        .test_run(TestRunOptions { data_in: Some(&frame), data_out: Some(&mut out), ..Default::default() })
        .expect("test run");
    match r.return_value {
        PASS => true,
        TC_ACT_REDIRECT => false,
        other => panic!("{name}: unexpected verdict {other}"),
    }
}

fn stat(dp: &Datapath, s: DnsStat) -> u64 {
    dp.dns_stats().expect("stats")[s as usize]
}

/// A small deterministic generator (xorshift), so that runs repeat.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn text(&mut self, alphabet: &[u8], len: usize) -> String {
        (0..len).map(|_| alphabet[(self.next() % alphabet.len() as u64) as usize] as char).collect()
    }
}

const BASE32: &[u8] = b"abcdefghijklmnopqrstuvwxyz234567";
const HEX: &[u8] = b"0123456789abcdef";

/// The `i`th query of a tunnel: dnscat2-style hex or iodine-style base32
/// chunks of 30 to 60 characters, a sequence number, the tunnel's zone.
fn tunnel_name(rng: &mut Rng, i: usize, zone: &str) -> String {
    let (alphabet, len) = if i.is_multiple_of(2) { (HEX, 30 + i % 31) } else { (BASE32, 32 + i % 29) };
    format!("{}.{i}.{zone}", rng.text(alphabet, len))
}

/// The suspected-tunnel events in the ring: (zone, sample name).
fn tunnel_events(dp: &mut Datapath) -> Vec<(u32, String)> {
    let mut ring = dp.take_events().expect("event ring");
    let mut found = Vec::new();
    while let Some(item) = ring.next() {
        if let Some(Event::Tunnel(ev)) = decode(&item) {
            let name = String::from_utf8_lossy(&ev.name[..usize::from(ev.name_len)]).into_owned();
            found.push((ev.zone, name));
        }
    }
    found
}

#[test]
fn a_tunnel_under_an_allowed_zone_is_refused_within_20_queries() {
    let mut dp = loaded("enforce", &[]);
    let mut rng = Rng(0x5eed);
    let zone = "t.partner.example";
    let mut first_refused = None;
    for i in 0..500 {
        let name = tunnel_name(&mut rng, i, zone);
        let forwarded = ask(&mut dp, "10.10.1.10", 4000 + i as u16, i as u16, &name);
        match (forwarded, first_refused) {
            (false, None) => first_refused = Some(i),
            (true, Some(at)) => panic!("query {i} forwarded after the tunnel was refused at {at}"),
            _ => {}
        }
    }
    let at = first_refused.expect("the tunnel was never refused");
    assert!(at < 20, "flagged at query {at}, not within the first 20");
    assert_eq!(stat(&dp, DnsStat::TunnelSuspected), 1, "suspected once per workload, zone and window");
    assert_eq!(stat(&dp, DnsStat::TunnelRefused), 500 - at as u64, "every query from the flagging one on");

    // The report names the zone (the pattern's id) and a sample name.
    let events = tunnel_events(&mut dp);
    let zone_id = NameEntry::zone_of(NAME_ANY_DEPTH, b"partner.example");
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0].0, zone_id);
    assert!(events[0].1.ends_with(".t.partner.example") && events[0].1.len() > 40, "{events:?}");

    // Only that workload and that zone: a neighbour asks under the same
    // zone, and the tunnelling workload under another.
    assert!(ask(&mut dp, "10.10.1.11", 6000, 1, "api.partner.example"), "a neighbour, same zone");
    assert!(ask(&mut dp, "10.10.1.10", 6001, 2, "sts.us-east-1.amazonaws.com"), "the same workload, another zone");
    let more = tunnel_name(&mut rng, 501, zone);
    assert!(!ask(&mut dp, "10.10.1.10", 6002, 3, &more), "the zone stays refused to random-looking names");
    // Plain names are never refused: the source address is the workload's
    // to choose, and a tunnel forged from a neighbour's address must not cut
    // the neighbour off its zone.
    assert!(ask(&mut dp, "10.10.1.10", 6003, 4, "www.partner.example"), "a plain name in the zone");
}

#[test]
fn monitor_reports_a_tunnel_and_refuses_nothing() {
    let mut dp = loaded("monitor", &[]);
    let mut rng = Rng(0xbeef);
    for i in 0..60 {
        let name = tunnel_name(&mut rng, i, "x.lambda-url.us-east-1.on.aws");
        assert!(ask(&mut dp, "10.10.1.20", 4000 + i as u16, i as u16, &name), "query {i} forwarded in monitor");
    }
    assert_eq!(stat(&dp, DnsStat::TunnelSuspected), 1);
    assert_eq!(stat(&dp, DnsStat::TunnelRefused), 0);
    assert_eq!(tunnel_events(&mut dp).len(), 1);
}

/// Names a workload of an AI agent runtime asks for in ordinary use:
/// model APIs, cloud control planes, buckets, load balancers, CDN
/// distributions, Lambda function URLs (32 random characters), Azure
/// resources; a realistic number of distinct ones, asked over and over.
/// The second list: those the pack must list by exact name.
fn realistic_names(rng: &mut Rng) -> (Vec<String>, Vec<String>) {
    let mut names: Vec<String> = ["api.openai.com", "api.anthropic.com", "generativelanguage.googleapis.com"]
        .iter()
        .map(ToString::to_string)
        .collect();
    for region in ["us-east-1", "us-west-2", "eu-west-1", "ap-southeast-2"] {
        for service in ["sts", "bedrock-runtime", "bedrock-agent-runtime", "s3", "secretsmanager", "logs", "ecr.api"] {
            names.push(format!("{service}.{region}.amazonaws.com"));
        }
        names.push(format!("123456789012.dkr.ecr.{region}.amazonaws.com"));
        for i in 0..3 {
            names.push(format!("agent-artifacts-{i}-{region}.s3.{region}.amazonaws.com"));
            let lb = rng.text(b"0123456789", 10);
            names.push(format!("internal-agent-api-{i}-{lb}.{region}.elb.amazonaws.com"));
            names.push(format!(
                "{}-ats.iot.{region}.amazonaws.com",
                rng.text(b"abcdefghijklmnopqrstuvwxyz0123456789", 14)
            ));
            names.push(format!(
                "{}.execute-api.{region}.amazonaws.com",
                rng.text(b"abcdefghijklmnopqrstuvwxyz0123456789", 10)
            ));
        }
    }
    let mut exact = Vec::new();
    for _ in 0..20 {
        exact.push(format!("d{}.cloudfront.net", rng.text(b"abcdefghijklmnopqrstuvwxyz0123456789", 13)));
    }
    for _ in 0..5 {
        let id = rng.text(b"abcdefghijklmnopqrstuvwxyz0123456789", 32);
        names.push(format!("{id}.lambda-url.us-east-1.on.aws"));
    }
    // More function URLs than the guard allows a minute, which the pack
    // lists by exact name: exempt.
    for _ in 0..12 {
        let id = rng.text(b"abcdefghijklmnopqrstuvwxyz0123456789", 32);
        exact.push(format!("{id}.lambda-url.us-east-1.on.aws"));
    }
    for r in ["contoso-eastus", "contoso-swedencentral", "agents-prod-westeurope"] {
        names.push(format!("{r}.openai.azure.com"));
        exact.push(format!("{}.blob.core.windows.net", r.replace('-', "")));
    }
    names.extend(exact.iter().cloned());
    (names, exact)
}

#[test]
fn twenty_thousand_realistic_lookups_flag_nothing() {
    let mut rng = Rng(0x1234_5678);
    let (names, exact) = realistic_names(&mut rng);
    let mut dp = loaded("enforce", &exact);
    for i in 0..20_000usize {
        let name = &names[(rng.next() % names.len() as u64) as usize];
        let workload = format!("10.10.1.{}", 30 + i % 4);
        assert!(ask(&mut dp, &workload, 1024 + (i % 60_000) as u16, i as u16, name), "{name} refused (lookup {i})");
    }
    assert_eq!(stat(&dp, DnsStat::TunnelSuspected), 0);
    assert_eq!(stat(&dp, DnsStat::TunnelRefused), 0);
}
