//! The files of a pack merged into one [`Pack`]: settings given at most once,
//! names and priorities unique, every reference defined. Errors about two
//! places name both.

use super::bitset::FastMap;

use super::error::PolicyError;
use super::model::{Destination, DnsSettings, Location, Mode, Pack, Rule, Source, Uncovered};
use super::parse::Fragment;
use super::record::Located;
use super::rule::{RawRule, RawSource};

/// Merges the fragments of a pack (in file order). Returns the pack only if
/// no error was found here and `errors` was empty on entry.
pub fn merge(first_file: &str, fragments: Vec<Fragment>, errors: &mut Vec<PolicyError>) -> Option<Pack> {
    let mut version: Option<Located<Option<u32>>> = None;
    let mut mode: Option<Located<Option<Mode>>> = None;
    let mut dns: Option<Located<Option<DnsSettings>>> = None;
    let mut uncovered: Option<Located<Option<Uncovered>>> = None;
    let mut pack = Pack::default();
    let mut rules: Vec<RawRule> = Vec::new();
    // Names of groups defined with errors, and whether every file could be
    // read: references into the unknown are not reported as undefined.
    let mut invalid_groups: Vec<String> = Vec::new();
    let mut complete = true;
    for frag in fragments {
        complete &= !frag.broken;
        invalid_groups.extend(frag.invalid_groups);
        set_once(&mut version, frag.version, "version", errors);
        set_once(&mut mode, frag.mode, "mode", errors);
        set_once(&mut dns, frag.dns, "dns", errors);
        set_once(&mut uncovered, frag.uncovered, "uncovered", errors);
        for g in frag.smartgroups {
            if let Some(first) = pack.smartgroups.get(&g.name) {
                let msg = format!("smartgroup `{}` already defined at {}", g.name, first.location);
                errors.push(PolicyError::new(g.location.clone(), msg));
            } else {
                pack.smartgroups.insert(g.name.clone(), g);
            }
        }
        for g in frag.webgroups {
            if let Some(first) = pack.webgroups.get(&g.name) {
                let msg = format!("webgroup `{}` already defined at {}", g.name, first.location);
                errors.push(PolicyError::new(g.location.clone(), msg));
            } else {
                pack.webgroups.insert(g.name.clone(), g);
            }
        }
        rules.extend(frag.rules);
    }
    match &version {
        None if !complete => {}
        None => errors.push(PolicyError::new(
            Location { file: first_file.into(), line: 1, column: 1 },
            "missing `version`: expected `version: 1` in exactly one file of the pack",
        )),
        Some(Located { value, .. }) => pack.version = value.unwrap_or(1),
    }
    pack.mode = mode.and_then(|m| m.value).unwrap_or_default();
    // A `dns:` with errors is reported already; don't also report its absence.
    let knows_dns = complete && !matches!(dns, Some(Located { value: None, .. }));
    pack.dns = dns.and_then(|d| d.value).unwrap_or_default();
    pack.uncovered = uncovered.and_then(|u| u.value).unwrap_or_default();
    check_unique(&rules, errors);
    let known = Known { pack: &pack, invalid_groups: &invalid_groups, complete, knows_dns };
    for rule in &rules {
        check_references(rule, &known, errors);
    }
    if !errors.is_empty() {
        return None;
    }
    pack.rules = rules.into_iter().filter_map(|r| build(r, pack.mode)).collect();
    pack.rules.sort_by_key(|r| r.priority);
    Some(pack)
}

/// Keeps the first `next` setting; a second one is an error naming both.
fn set_once<T>(slot: &mut Option<Located<T>>, next: Option<Located<T>>, field: &str, errors: &mut Vec<PolicyError>) {
    let Some(next) = next else { return };
    match slot {
        Some(first) => {
            let msg = format!("`{field}` already set at {}: set it in one file only", first.location);
            errors.push(PolicyError::new(next.location, msg));
        }
        None => *slot = Some(next),
    }
}

/// Rule names and priorities are unique across the pack.
fn check_unique(rules: &[RawRule], errors: &mut Vec<PolicyError>) {
    let mut names: FastMap<&str, &Location> =
        FastMap::with_capacity_and_hasher(rules.len(), std::hash::BuildHasherDefault::default());
    let mut priorities: FastMap<u16, (&Location, Option<&str>)> =
        FastMap::with_capacity_and_hasher(rules.len(), std::hash::BuildHasherDefault::default());
    for rule in rules {
        let name = rule.name.as_ref().map(|n| n.value.as_str());
        if let Some(n) = &rule.name {
            if let Some(first) = names.get(n.value.as_str()) {
                let msg = format!("rule name `{}` already defined at {first}", n.value);
                errors.push(PolicyError::new(n.location.clone(), msg));
            } else {
                names.insert(&n.value, &n.location);
            }
        }
        if let Some(p) = &rule.priority {
            if let Some((first, first_name)) = priorities.get(&p.value) {
                let owner = first_name.map(|n| format!(" by rule `{n}`")).unwrap_or_default();
                let msg = format!("priority {} already used{owner} at {first}: priorities must be unique", p.value);
                errors.push(PolicyError::new(p.location.clone(), msg));
            } else {
                priorities.insert(p.value, (&p.location, name));
            }
        }
    }
}

/// What references may point at.
struct Known<'a> {
    pack: &'a Pack,
    invalid_groups: &'a [String],
    /// Every file could be read: a name not found is really undefined.
    complete: bool,
    /// The `dns` settings are known (valid, or absent in a complete pack).
    knows_dns: bool,
}

impl Known<'_> {
    /// Whether a reference to smartgroup `name` is fine or already reported.
    fn smartgroup(&self, name: &str) -> bool {
        !self.complete || self.pack.smartgroups.contains_key(name) || self.invalid_groups.iter().any(|g| g == name)
    }

    /// Whether a reference to webgroup `name` is fine or already reported.
    fn webgroup(&self, name: &str) -> bool {
        !self.complete || self.pack.webgroups.contains_key(name) || self.invalid_groups.iter().any(|g| g == name)
    }
}

/// Every group a rule names is defined, as the right kind; `resolvers`
/// needs `dns.resolvers`.
fn check_references(rule: &RawRule, known: &Known, errors: &mut Vec<PolicyError>) {
    let pack = known.pack;
    let as_web = |name: &str| pack.webgroups.get(name).map(|g| ("webgroup", &g.location));
    let as_smart = |name: &str| pack.smartgroups.get(name).map(|g| ("smartgroup", &g.location));
    if let Some(RawSource::Groups(groups)) = &rule.source {
        for g in groups.iter().filter(|g| !known.smartgroup(&g.value)) {
            errors.push(undefined(&g.location, "smartgroup", &g.value, as_web(&g.value)));
        }
    }
    for dest in rule.destinations.iter().flatten() {
        match &dest.value {
            Destination::SmartGroup(n) if !known.smartgroup(n) => {
                errors.push(undefined(&dest.location, "smartgroup", n, as_web(n)));
            }
            Destination::WebGroup(n) if !known.webgroup(n) => {
                errors.push(undefined(&dest.location, "webgroup", n, as_smart(n)));
            }
            Destination::Resolvers if known.knows_dns && pack.dns.resolvers.is_empty() => {
                errors.push(PolicyError::new(
                    dest.location.clone(),
                    "destination `resolvers` but no `dns.resolvers` are configured: expected `dns: {resolvers: [...]}`",
                ));
            }
            _ => {}
        }
    }
}

/// A reference to an undefined group; `other` is a group of the other kind
/// with that name, if there is one.
fn undefined(at: &Location, kind: &str, name: &str, other: Option<(&str, &Location)>) -> PolicyError {
    let hint = other.map(|(k, loc)| format!(" (`{name}` is a {k}, defined at {loc})")).unwrap_or_default();
    let msg = format!("{kind} `{name}` is not defined{hint}: expected a {kind} defined under `{kind}s`");
    PolicyError::new(at.clone(), msg)
}

/// The validated rule; `None` only if a required field was missing (which
/// was already reported, so it does not happen for an error-free pack).
fn build(r: RawRule, pack_mode: Mode) -> Option<Rule> {
    let destinations: Vec<Destination> = r.destinations?.into_iter().map(|d| d.value).collect();
    let action = r.action?;
    Some(Rule {
        name: r.name?.value,
        priority: r.priority?.value,
        source: match r.source? {
            RawSource::Any => Source::Any,
            RawSource::Groups(g) => Source::Groups(g.into_iter().map(|g| g.value).collect()),
        },
        verify_names: r.verify_names.unwrap_or_else(|| Rule::default_verify_names(action, &destinations)),
        destinations,
        protocol: r.protocol,
        ports: r.ports,
        action,
        mode: r.mode.unwrap_or(pack_mode),
        log: r.log,
        location: r.location,
    })
}
