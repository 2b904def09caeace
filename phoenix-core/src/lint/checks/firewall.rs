//! Checks of firewall rules: protocol, ports, addresses, macros, references to security groups, aliases and
//! IP sets, and rules written twice; and of the aliases and IP sets themselves.
//!
//! A reference to a group, alias or IP set that the configuration does not declare is a warning, not an
//! error: it may exist on the cluster (made in the GUI, or by another tool), which `validate` cannot see.
//! If it does not, Proxmox refuses the rule (`no such alias`) and only that resource fails.

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;

use crate::config::firewall::{AddressSpec, MACROS, ObjectKind, canonical_macro, proxmox_cidr};
use crate::config::hypervisor::HostFirewall;
use crate::config::{FileKind, FirewallRule};
use crate::engine::host_firewall::declared_name;
use crate::lint::checks::network::{parse_address_match, parse_ports};
use crate::lint::diagnostic::Problem;
use crate::lint::schema::escape_pointer_token;
use crate::lint::suggest::did_you_mean;

/// Where a list of rules lives, for the checks that depend on it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RuleList<'a> {
    /// The file and the JSON pointer of the array.
    pub(crate) file: FileKind,
    /// The declared host firewall, whose groups, aliases and IP sets references are checked against.
    pub(crate) host: Option<&'a HostFirewall>,
    /// The rules of a security group, which cannot jump to another group.
    pub(crate) in_group: bool,
}

/// Protocol names Proxmox accepts beside numbers (from its `/etc/protocols`), the common ones.
const PROTOCOLS: &[&str] = &[
    "tcp",
    "udp",
    "icmp",
    "icmpv6",
    "ipv6-icmp",
    "igmp",
    "gre",
    "esp",
    "ah",
    "sctp",
    "udplite",
    "vrrp",
    "ospf",
    "ipip",
    "ipv6",
    "l2tp",
];

/// Checks one list of rules at `pointer` (the JSON pointer of the array).
pub(crate) fn check_rules(
    list: RuleList<'_>,
    pointer: &str,
    rules: &[FirewallRule],
    problems: &mut Vec<Problem>,
) {
    let file = list.file;
    // A guest's few rules are compared with those before them; a long list (a node's) through a map.
    let mut seen: HashMap<&FirewallRule, usize> = HashMap::new();
    let long = rules.len() > 16;
    for (index, rule) in rules.iter().enumerate() {
        // Written out only for a problem: the rules of ten thousand guests make none.
        let rule_pointer = RulePointer { list: pointer, index };
        check_rule(file, &rule_pointer, rule, problems);
        check_rule_names(list, &rule_pointer, rule, problems);
        let first = if long {
            seen.get(rule).copied()
        } else {
            rules[..index].iter().position(|earlier| earlier == rule)
        };
        if let Some(first) = first {
            problems.push(
                Problem::warning(
                    "phoenix::firewall::duplicate_rule",
                    file,
                    rule_pointer.to_string(),
                    format!("this rule repeats rule {first} of the same list"),
                )
                .with_label("duplicate rule")
                .with_help("remove the copy: rules are compared by content, so both map to one Proxmox rule"),
            );
        } else if long {
            seen.insert(rule, index);
        }
    }
}

/// The JSON pointer of one rule of a list.
struct RulePointer<'a> {
    list: &'a str,
    index: usize,
}

impl fmt::Display for RulePointer<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.list, self.index)
    }
}

fn check_rule(file: FileKind, pointer: &RulePointer<'_>, rule: &FirewallRule, problems: &mut Vec<Problem>) {
    let protocol = rule.proto.as_deref().map(lowercase);
    if let Some(protocol) = &protocol {
        let numeric = protocol.parse::<u8>().is_ok();
        if !numeric && !PROTOCOLS.contains(&protocol.as_ref()) {
            problems.push(
                Problem::error(
                    "phoenix::firewall::unknown_protocol",
                    file,
                    format!("{pointer}/proto"),
                    format!("unknown protocol `{protocol}`"),
                )
                .with_label("unknown protocol")
                .with_help(format!(
                    "use a protocol number or one of: {}",
                    PROTOCOLS.join(", ")
                )),
            );
        }
    }
    let takes_ports = matches!(protocol.as_deref(), Some("tcp" | "udp" | "sctp" | "udplite"));
    for (key, value) in [("port", &rule.port), ("sport", &rule.sport)] {
        let Some(value) = value else { continue };
        let key_pointer = || format!("{pointer}/{key}");
        if let Err(reason) = parse_ports(value) {
            problems.push(
                Problem::error("phoenix::firewall::bad_port", file, key_pointer(), reason)
                    .with_label("not a port list")
                    .with_help(
                        "write a port (`22`), a range (`8000:8010`) or a comma list (`80,443`), 1 to 65535",
                    ),
            );
        } else if !takes_ports {
            let message = match &protocol {
                Some(protocol) => format!("protocol `{protocol}` has no ports"),
                None => "a port needs a protocol".to_owned(),
            };
            problems.push(
                Problem::error(
                    "phoenix::firewall::port_without_protocol",
                    file,
                    key_pointer(),
                    message,
                )
                .with_label("port given here")
                .with_help("set `proto` to `tcp` or `udp`, or remove the port"),
            );
        }
    }
    for (key, value) in [("source", &rule.source), ("dest", &rule.dest)] {
        let Some(value) = value else { continue };
        let AddressSpec::Addresses(value) = AddressSpec::parse(value) else {
            continue; // An alias or an IP set: checked with the names.
        };
        for part in value.split(',').map(str::trim) {
            if let Err(reason) = parse_address_match(part) {
                problems.push(
                    Problem::error(
                        "phoenix::firewall::bad_address",
                        file,
                        format!("{pointer}/{key}"),
                        reason,
                    )
                    .with_label("not an address")
                    .with_help("write an IP (`10.0.0.5`), a CIDR (`10.0.0.0/24`), a range, or a comma list"),
                );
                break;
            }
        }
    }
}

/// `text` in lower case, copied only when it has an upper-case letter.
fn lowercase(text: &str) -> Cow<'_, str> {
    if text.bytes().any(|byte| byte.is_ascii_uppercase()) {
        Cow::Owned(text.to_ascii_lowercase())
    } else {
        Cow::Borrowed(text)
    }
}

/// The names a rule uses: its macro, the group it jumps to, the aliases and IP sets it matches.
fn check_rule_names(
    list: RuleList<'_>,
    pointer: &RulePointer<'_>,
    rule: &FirewallRule,
    problems: &mut Vec<Problem>,
) {
    let file = list.file;
    if let Some(name) = &rule.macro_name
        && canonical_macro(name).is_none()
    {
        let problem = Problem::error(
            "phoenix::firewall::unknown_macro",
            file,
            format!("{pointer}/macro"),
            format!("unknown macro `{name}`"),
        )
        .with_label("Proxmox has no such macro");
        // Proxmox ignores case in macro names, so the suggestion does too.
        let lowered: Vec<String> = MACROS.iter().map(|known| known.to_ascii_lowercase()).collect();
        let suggestion = did_you_mean(&name.to_ascii_lowercase(), lowered.iter().map(String::as_str))
            .and_then(canonical_macro);
        problems.push(match suggestion {
            Some(suggestion) => problem.with_help(format!("did you mean `{suggestion}`?")),
            None => problem.with_help(
                "Proxmox's macros are listed by `GET /cluster/firewall/macros` (`SSH`, `HTTPS`, `DNS`, `Ping`, ...); \
                 or write `proto` and `port` instead",
            ),
        });
    }
    if let Some(group) = rule.group() {
        if list.in_group {
            problems.push(
                Problem::error(
                    "phoenix::firewall::group_in_group",
                    file,
                    format!("{pointer}/type"),
                    format!("a security group cannot jump to another group (`{group}`)"),
                )
                .with_label("a group rule inside a group")
                .with_help("copy that group's rules here, or jump to both groups from the cluster, node or guest rules"),
            );
        } else {
            check_declared(
                list,
                format!("{pointer}/action"),
                ObjectKind::Group,
                group,
                problems,
            );
        }
    }
    for (key, value) in [("source", &rule.source), ("dest", &rule.dest)] {
        let Some(value) = value else { continue };
        if let Some((kind, name)) = AddressSpec::parse(value).cluster_object() {
            check_declared(list, format!("{pointer}/{key}"), kind, name, problems);
        }
    }
}

/// Warns about a reference to a group, alias or IP set that the configuration does not declare.
fn check_declared(
    list: RuleList<'_>,
    pointer: String,
    kind: ObjectKind,
    name: &str,
    problems: &mut Vec<Problem>,
) {
    let Some(host) = list.host else {
        return undeclared(list.file, pointer, kind, name, Vec::new(), problems);
    };
    if declared_name(host, kind, name).is_some() {
        return;
    }
    let known: Vec<&str> = match kind {
        ObjectKind::Group => host.security_groups.keys().map(String::as_str).collect(),
        ObjectKind::Alias => host.aliases.keys().map(String::as_str).collect(),
        ObjectKind::IpSet => host.ipsets.keys().map(String::as_str).collect(),
    };
    undeclared(list.file, pointer, kind, name, known, problems);
}

fn undeclared(
    file: FileKind,
    pointer: String,
    kind: ObjectKind,
    name: &str,
    known: Vec<&str>,
    problems: &mut Vec<Problem>,
) {
    let (code, what, key) = match kind {
        ObjectKind::Group => (
            "phoenix::firewall::undeclared_group",
            "security group",
            "security_groups",
        ),
        ObjectKind::Alias => ("phoenix::firewall::undeclared_alias", "alias", "aliases"),
        ObjectKind::IpSet => ("phoenix::firewall::undeclared_ipset", "IP set", "ipsets"),
    };
    let problem = Problem::warning(
        code,
        file,
        pointer,
        format!("{what} `{name}` is not declared under `firewall.{key}`"),
    )
    .with_label(format!("unknown {what}"));
    problems.push(match did_you_mean(name, known) {
        Some(suggestion) => problem.with_help(format!("did you mean `{suggestion}`?")),
        None => problem.with_help(format!(
            "declare it under `firewall.{key}` in the hypervisor file; if it exists on the cluster already, \
             Proxmox uses that one"
        )),
    });
}

/// Checks the aliases and IP sets of the host firewall at `base` (`/firewall`).
pub(crate) fn check_objects(host: &HostFirewall, base: &str, problems: &mut Vec<Problem>) {
    let file = FileKind::Hypervisor;
    for (name, alias) in &host.aliases {
        let cidr = alias.cidr.trim();
        if !is_ip_or_cidr(cidr) {
            problems.push(
                Problem::error(
                    "phoenix::firewall::bad_address",
                    file,
                    format!("{base}/aliases/{}/cidr", escape_pointer_token(name)),
                    format!("`{cidr}` is not an IP address or a CIDR"),
                )
                .with_label("not an address")
                .with_help("an alias names one address (`10.0.0.5`) or one network (`10.0.0.0/24`)"),
            );
        }
    }
    for (name, set) in &host.ipsets {
        let mut seen: Vec<String> = Vec::new();
        for (index, entry) in set.entries.iter().enumerate() {
            let pointer = format!(
                "{base}/ipsets/{}/entries/{index}/cidr",
                escape_pointer_token(name)
            );
            let cidr = entry.cidr.trim();
            match AddressSpec::parse(cidr) {
                AddressSpec::Alias { name: alias, .. } => {
                    let list = RuleList {
                        file,
                        host: Some(host),
                        in_group: false,
                    };
                    check_declared(list, pointer.clone(), ObjectKind::Alias, alias, problems);
                }
                _ if !is_ip_or_cidr(cidr) => problems.push(
                    Problem::error(
                        "phoenix::firewall::bad_address",
                        file,
                        pointer.clone(),
                        format!("`{cidr}` is not an IP address, a CIDR or an alias"),
                    )
                    .with_label("not an address")
                    .with_help(
                        "an entry is one address (`10.0.0.5`), one network (`10.0.0.0/24`) or an alias name",
                    ),
                ),
                _ => {}
            }
            let written = proxmox_cidr(cidr);
            if seen.contains(&written) {
                problems.push(
                    Problem::error(
                        "phoenix::firewall::duplicate_entry",
                        file,
                        pointer,
                        format!("IP set `{name}` has `{cidr}` twice"),
                    )
                    .with_label("repeated entry")
                    .with_help("Proxmox keeps each address once in a set: remove the copy"),
                );
            }
            seen.push(written);
        }
    }
}

fn is_ip_or_cidr(text: &str) -> bool {
    !text.contains('-') && !text.contains(',') && parse_address_match(text).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The duplicates of a list of `len` rules where rule `copy` repeats rule `of`: lists of a few rules
    /// are searched, longer ones hashed, and both name the first rule and the copy's pointer.
    fn duplicates(len: usize, of: usize, copy: usize) -> Vec<(String, String)> {
        let rule = |port: usize| -> FirewallRule {
            serde_json::from_value(serde_json::json!({
                "type": "in", "action": "ACCEPT", "proto": "TCP", "port": (1000 + port).to_string()
            }))
            .expect("a rule")
        };
        let mut rules: Vec<FirewallRule> = (0..len).map(rule).collect();
        rules[copy] = rules[of].clone();
        let list = RuleList {
            file: FileKind::Lxc,
            host: None,
            in_group: false,
        };
        let mut problems = Vec::new();
        check_rules(list, "/lxc_configs/101/firewall/rules", &rules, &mut problems);
        problems
            .iter()
            .map(|problem| (problem.pointer().to_owned(), problem.message().to_owned()))
            .collect()
    }

    #[test]
    fn a_repeated_rule_is_found_in_short_and_long_lists() {
        for (len, of, copy) in [(5, 1, 4), (40, 3, 37)] {
            assert_eq!(
                duplicates(len, of, copy),
                [(
                    format!("/lxc_configs/101/firewall/rules/{copy}"),
                    format!("this rule repeats rule {of} of the same list")
                )],
                "{len} rules"
            );
        }
        assert!(duplicates(40, 3, 3).is_empty());
    }
}
