//! The named objects of the host firewall as resources: security groups, aliases, IP sets, and the node's
//! own firewall, with the edges from the rules that refer to them.
//!
//! Aliases come first (nothing they need), IP sets after the aliases their entries name, groups after the
//! aliases and IP sets their rules name; the cluster's and the node's rules after everything they name.
//! Guests come after every host step, so their rules find the groups, aliases and IP sets in place.

use serde_json::Value;

use crate::config::FirewallRule;
use crate::config::firewall::{AddressSpec, ObjectKind, rule_references};
use crate::config::hypervisor::{FirewallAlias, HostFirewall, IpSet, NodeFirewall, SecurityGroup};
use crate::engine::address::Address;
use crate::engine::resource::HostStep;

/// One named object of the host firewall, or the node's firewall.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FirewallPart {
    /// A security group, at `host/firewall/group/<name>`.
    Group {
        /// Its name.
        name: String,
        /// As declared.
        group: SecurityGroup,
    },
    /// An alias, at `host/firewall/alias/<name>`.
    Alias {
        /// Its name.
        name: String,
        /// As declared.
        alias: FirewallAlias,
    },
    /// An IP set, at `host/firewall/ipset/<name>`.
    IpSet {
        /// Its name.
        name: String,
        /// As declared.
        set: IpSet,
    },
    /// The node's own firewall, at `host/firewall/node`.
    Node(NodeFirewall),
}

impl FirewallPart {
    /// The declared configuration, as the hypervisor file writes it (the name is in the address).
    pub fn declared_value(&self) -> Value {
        let value = match self {
            FirewallPart::Group { group, .. } => serde_json::to_value(group),
            FirewallPart::Alias { alias, .. } => serde_json::to_value(alias),
            FirewallPart::IpSet { set, .. } => serde_json::to_value(set),
            FirewallPart::Node(node) => serde_json::to_value(node),
        };
        value.expect("configuration types serialise to JSON")
    }
}

/// The address of a named object.
pub fn object_address(kind: ObjectKind, name: &str) -> Address {
    Address::Host(format!("firewall/{}/{name}", kind.word()))
}

/// The declared objects that `rules` refer to, as addresses to depend on. A reference to an object the
/// configuration does not declare is no edge: it may exist on the cluster (validation warns about it).
pub fn dependencies(firewall: &HostFirewall, rules: &[FirewallRule]) -> Vec<Address> {
    rule_references(rules)
        .into_iter()
        .filter_map(|(kind, name)| {
            declared_name(firewall, kind, &name).map(|name| object_address(kind, name))
        })
        .collect()
}

/// The declared name of an object the rules call `name`: aliases are matched without regard to case, as
/// Proxmox does; groups and IP sets exactly.
pub fn declared_name<'a>(firewall: &'a HostFirewall, kind: ObjectKind, name: &str) -> Option<&'a str> {
    let mut names: Box<dyn Iterator<Item = &'a String>> = match kind {
        ObjectKind::Group => Box::new(firewall.security_groups.keys()),
        ObjectKind::Alias => Box::new(firewall.aliases.keys()),
        ObjectKind::IpSet => Box::new(firewall.ipsets.keys()),
    };
    names
        .find(|declared| match kind {
            ObjectKind::Alias => declared.eq_ignore_ascii_case(name),
            ObjectKind::Group | ObjectKind::IpSet => declared.as_str() == name,
        })
        .map(String::as_str)
}

/// The host steps of the firewall's named objects and the node's firewall, each with its dependencies.
pub fn steps(firewall: &HostFirewall) -> Vec<(Address, Vec<Address>, HostStep)> {
    let mut steps = Vec::new();
    for (name, alias) in &firewall.aliases {
        let part = FirewallPart::Alias {
            name: name.clone(),
            alias: alias.clone(),
        };
        steps.push((object_address(ObjectKind::Alias, name), Vec::new(), part));
    }
    for (name, set) in &firewall.ipsets {
        let mut depends_on: Vec<Address> = Vec::new();
        for entry in &set.entries {
            let named = match AddressSpec::parse(&entry.cidr) {
                AddressSpec::Alias { name, .. } => declared_name(firewall, ObjectKind::Alias, name),
                _ => None,
            };
            let address = named.map(|alias| object_address(ObjectKind::Alias, alias));
            if let Some(address) = address.filter(|address| !depends_on.contains(address)) {
                depends_on.push(address);
            }
        }
        let part = FirewallPart::IpSet {
            name: name.clone(),
            set: set.clone(),
        };
        steps.push((object_address(ObjectKind::IpSet, name), depends_on, part));
    }
    for (name, group) in &firewall.security_groups {
        let part = FirewallPart::Group {
            name: name.clone(),
            group: group.clone(),
        };
        let depends_on = dependencies(firewall, &group.rules);
        steps.push((object_address(ObjectKind::Group, name), depends_on, part));
    }
    if let Some(node) = &firewall.node {
        let depends_on = dependencies(firewall, &node.rules);
        steps.push((
            Address::Host("firewall/node".into()),
            depends_on,
            FirewallPart::Node(node.clone()),
        ));
    }
    steps
        .into_iter()
        .map(|(address, depends_on, part)| (address, depends_on, HostStep::FirewallPart(Box::new(part))))
        .collect()
}
