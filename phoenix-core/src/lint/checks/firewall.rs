//! Checks of firewall rules: protocol, ports, addresses, and rules written twice.

use std::collections::HashMap;

use crate::config::{FileKind, FirewallRule};
use crate::lint::checks::network::{parse_address_match, parse_ports};
use crate::lint::diagnostic::Problem;

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
    file: FileKind,
    pointer: &str,
    rules: &[FirewallRule],
    problems: &mut Vec<Problem>,
) {
    let mut seen: HashMap<&FirewallRule, usize> = HashMap::new();
    for (index, rule) in rules.iter().enumerate() {
        let rule_pointer = format!("{pointer}/{index}");
        check_rule(file, &rule_pointer, rule, problems);
        if let Some(first) = seen.get(rule) {
            problems.push(
                Problem::warning(
                    "phoenix::firewall::duplicate_rule",
                    file,
                    rule_pointer,
                    format!("this rule repeats rule {first} of the same list"),
                )
                .with_label("duplicate rule")
                .with_help("remove the copy: rules are compared by content, so both map to one Proxmox rule"),
            );
        } else {
            seen.insert(rule, index);
        }
    }
}

fn check_rule(file: FileKind, pointer: &str, rule: &FirewallRule, problems: &mut Vec<Problem>) {
    let protocol = rule.proto.as_deref().map(str::to_ascii_lowercase);
    if let Some(protocol) = &protocol {
        let numeric = protocol.parse::<u8>().is_ok();
        if !numeric && !PROTOCOLS.contains(&protocol.as_str()) {
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
        let key_pointer = format!("{pointer}/{key}");
        if let Err(reason) = parse_ports(value) {
            problems.push(
                Problem::error("phoenix::firewall::bad_port", file, key_pointer, reason)
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
                    key_pointer,
                    message,
                )
                .with_label("port given here")
                .with_help("set `proto` to `tcp` or `udp`, or remove the port"),
            );
        }
    }
    for (key, value) in [("source", &rule.source), ("dest", &rule.dest)] {
        let Some(value) = value else { continue };
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
