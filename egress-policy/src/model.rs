//! The validated policy pack: what `parse` + `validate` produce and what
//! `compile` and the reference evaluator consume. Every name reference here
//! has been checked; every list is non-empty where the contract says so.

use std::collections::BTreeMap;
use std::net::IpAddr;

use ipnet::IpNet;

/// Where in which file something was written (1-based line and column).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Location {
    /// Shared by every location of a file (a pack has hundreds of
    /// thousands of them: one allocation per file, not per location).
    pub file: std::sync::Arc<str>,
    pub line: usize,
    pub column: usize,
}

impl Location {
    /// Moves the location `delta` lines down (up if negative).
    pub(crate) fn shift(&mut self, delta: isize) {
        self.line = self.line.saturating_add_signed(delta);
    }
}

impl std::fmt::Display for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}:{}", self.file, self.line, self.column)
    }
}

/// `monitor` reports a deny as `would_deny` and lets the packet through;
/// `enforce` drops it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Mode {
    #[default]
    Monitor,
    Enforce,
}

/// `uncovered`: what becomes of a packet from a source no rule's `source`
/// covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Uncovered {
    /// Denied in the pack's mode, reported as rule `uncovered-source`.
    #[default]
    Deny,
    /// Let through untouched, only counted.
    Pass,
}

impl Uncovered {
    /// The word the policy format uses.
    pub fn keyword(self) -> &'static str {
        match self {
            Uncovered::Deny => "deny",
            Uncovered::Pass => "pass",
        }
    }
}

/// What a matching rule does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    Permit,
    Deny,
}

/// `dns.query_filter`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum QueryFilter {
    #[default]
    Off,
    Monitor,
    Enforce,
}

/// `dns.tunnel_guard`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum TunnelGuard {
    Off,
    #[default]
    Monitor,
    Enforce,
}

impl TunnelGuard {
    /// The word the policy format uses.
    pub fn keyword(self) -> &'static str {
        match self {
            TunnelGuard::Off => "off",
            TunnelGuard::Monitor => "monitor",
            TunnelGuard::Enforce => "enforce",
        }
    }
}

/// The rule's `protocol`. `Icmp` is ICMP for IPv4 and ICMPv6 for IPv6.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Protocol {
    Tcp,
    Udp,
    Icmp,
    #[default]
    Any,
}

/// An inclusive destination port range (`443` is `443..=443`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PortRange {
    pub lo: u16,
    pub hi: u16,
}

/// A domain pattern of a WebGroup, normalised (lowercase, no trailing dot).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DomainPattern {
    /// `api.openai.com`: that name only.
    Exact(String),
    /// `*.example.com`: exactly one label before the suffix (stored without `*.`).
    OneLabel(String),
    /// `**.example.com`: one or more labels before the suffix (stored without `**.`).
    AnyDepth(String),
}

/// `dns:` settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsSettings {
    pub resolvers: Vec<IpAddr>,
    pub min_ttl: u32,
    pub max_ttl: u32,
    pub query_filter: QueryFilter,
    /// `dns.tunnel_guard`: distinct random-looking names under an allowed
    /// zone, per workload, reported (monitor, the default) or refused.
    pub tunnel_guard: TunnelGuard,
    /// `dns.query_types`: the query types the query filter lets through
    /// (type numbers, sorted, without repeats).
    pub query_types: Vec<u16>,
}

impl Default for DnsSettings {
    fn default() -> Self {
        Self {
            resolvers: Vec::new(),
            min_ttl: 60,
            max_ttl: 86400,
            query_filter: QueryFilter::Off,
            tunnel_guard: TunnelGuard::Monitor,
            query_types: crate::dns_types::DEFAULT_QUERY_TYPES.to_vec(),
        }
    }
}

impl Mode {
    /// The word the policy format uses.
    pub fn keyword(self) -> &'static str {
        match self {
            Mode::Monitor => "monitor",
            Mode::Enforce => "enforce",
        }
    }
}

impl Action {
    /// The word the policy format uses.
    pub fn keyword(self) -> &'static str {
        match self {
            Action::Permit => "permit",
            Action::Deny => "deny",
        }
    }
}

impl QueryFilter {
    /// The word the policy format uses.
    pub fn keyword(self) -> &'static str {
        match self {
            QueryFilter::Off => "off",
            QueryFilter::Monitor => "monitor",
            QueryFilter::Enforce => "enforce",
        }
    }
}

impl Protocol {
    /// The word the policy format uses.
    pub fn keyword(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
            Protocol::Icmp => "icmp",
            Protocol::Any => "any",
        }
    }
}

/// The pattern as the policy format writes it (`api.example.com`,
/// `*.example.com`, `**.example.com`).
impl std::fmt::Display for DomainPattern {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DomainPattern::Exact(n) => f.write_str(n),
            DomainPattern::OneLabel(n) => write!(f, "*.{n}"),
            DomainPattern::AnyDepth(n) => write!(f, "**.{n}"),
        }
    }
}

/// A named set of CIDRs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SmartGroup {
    pub name: String,
    /// Non-empty; a bare address is stored as a host prefix.
    pub cidrs: Vec<IpNet>,
    pub location: Location,
}

/// A named set of domain patterns.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct WebGroup {
    pub name: String,
    /// Non-empty.
    pub domains: Vec<DomainPattern>,
    pub location: Location,
}

/// A rule's `source`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    Any,
    /// One or more `SmartGroup` names, all defined.
    Groups(Vec<String>),
}

/// One element of a rule's `destination`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Destination {
    Any,
    /// The `dns.resolvers` addresses.
    Resolvers,
    /// The gateway's own addresses, on every interface ([`Pack::gateway`]).
    Gateway,
    SmartGroup(String),
    WebGroup(String),
    Cidrs(Vec<IpNet>),
}

/// A validated rule; `mode` is already resolved against the pack's default.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub name: String,
    pub priority: u16,
    pub source: Source,
    /// Non-empty; a single destination is a one-element list.
    pub destinations: Vec<Destination>,
    pub protocol: Protocol,
    /// `None`: all ports. `Some` is non-empty.
    pub ports: Option<Vec<PortRange>>,
    pub action: Action,
    pub mode: Mode,
    pub log: bool,
    /// Whether the rule's WebGroup destinations also need the connection's
    /// name (contract section "Connection names"): only meaningful on
    /// `permit` rules with a WebGroup destination. The rule's
    /// `verify_names` key where written (allowed on those rules only), else
    /// the contract's default, [`Rule::default_verify_names`].
    pub verify_names: bool,
    pub location: Location,
}

impl Rule {
    /// The contract's default of `verify_names`: `true` on `permit` rules
    /// with a WebGroup destination, `false` on every other rule.
    pub fn default_verify_names(action: Action, destinations: &[Destination]) -> bool {
        action == Action::Permit && destinations.iter().any(|d| matches!(d, Destination::WebGroup(_)))
    }
}

/// A whole validated pack. `rules` is sorted by ascending priority.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Pack {
    pub version: u32,
    pub mode: Mode,
    pub dns: DnsSettings,
    /// `uncovered` (default `deny`).
    pub uncovered: Uncovered,
    /// The gateway's own addresses, which the `gateway` destination means:
    /// not part of the format, filled in by the agent (from the host) before
    /// the pack is compiled or explained; empty otherwise.
    pub gateway: Vec<IpAddr>,
    pub smartgroups: BTreeMap<String, SmartGroup>,
    pub webgroups: BTreeMap<String, WebGroup>,
    pub rules: Vec<Rule>,
}
