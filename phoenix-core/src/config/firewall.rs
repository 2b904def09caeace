//! Firewall vocabulary Proxmox fixes and validation can know offline: the macro names, and what a rule's
//! `source` or `dest` refers to (an IP set, an alias, or addresses written out).

/// The macros of Proxmox VE's firewall (`GET /cluster/firewall/macros`), as Proxmox spells them. Proxmox
/// matches a rule's macro without regard to case and stores it spelt like this.
pub const MACROS: &[&str] = &[
    "Amanda",
    "Auth",
    "BGP",
    "BitTorrent",
    "BitTorrent32",
    "CVS",
    "Ceph",
    "Citrix",
    "DAAP",
    "DCC",
    "DHCPfwd",
    "DNS",
    "Distcc",
    "FTP",
    "Finger",
    "GNUnet",
    "GRE",
    "Git",
    "HKP",
    "HTTP",
    "HTTPS",
    "ICPV2",
    "ICQ",
    "IMAP",
    "IMAPS",
    "IPIP",
    "IPsec",
    "IPsecah",
    "IPsecnat",
    "IRC",
    "Jetdirect",
    "L2TP",
    "LDAP",
    "LDAPS",
    "MDNS",
    "MSNP",
    "MSSQL",
    "Mail",
    "Munin",
    "MySQL",
    "NNTP",
    "NNTPS",
    "NTP",
    "OSPF",
    "OpenVPN",
    "PCA",
    "PMG",
    "POP3",
    "POP3S",
    "PPtP",
    "Ping",
    "PostgreSQL",
    "Printer",
    "RDP",
    "RIP",
    "RNDC",
    "Razor",
    "Rdate",
    "Rsync",
    "SANE",
    "SMB",
    "SMBswat",
    "SMTP",
    "SMTPS",
    "SNMP",
    "SPAMD",
    "SPICEproxy",
    "SSH",
    "SVN",
    "SixXS",
    "Squid",
    "Submission",
    "Syslog",
    "TFTP",
    "Telnet",
    "Telnets",
    "Time",
    "Trcrt",
    "VNC",
    "VNCL",
    "Web",
    "Webcache",
    "Webmin",
    "Whois",
];

/// The macro `name` as Proxmox spells it, when Proxmox has such a macro (`ssh` is `SSH`).
pub fn canonical_macro(name: &str) -> Option<&'static str> {
    MACROS
        .iter()
        .copied()
        .find(|known| known.eq_ignore_ascii_case(name))
}

/// An IP set entry's address as Proxmox writes it: a single address without `/32` (`/128`), a network
/// without its host bits. Alias names, and anything that is not an address, are kept as written.
pub fn proxmox_cidr(cidr: &str) -> String {
    let cidr = cidr.trim();
    if let Ok(network) = cidr.parse::<ipnet::IpNet>() {
        return if network.prefix_len() == network.max_prefix_len() {
            network.addr().to_string()
        } else {
            network.trunc().to_string()
        };
    }
    cidr.to_owned()
}

/// Where a reference in a rule is looked up: the cluster (`dc/` or no prefix), or the guest's own firewall
/// (`guest/`), or an SDN object (`sdn/`, IP sets only).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// No prefix: the guest's own first, then the cluster's.
    Any,
    /// `dc/`: the cluster's.
    Cluster,
    /// `guest/`: the guest's own.
    Guest,
    /// `sdn/`: made by Proxmox's SDN.
    Sdn,
}

/// What a rule's `source` or `dest` names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddressSpec<'a> {
    /// `+name`: an IP set.
    IpSet {
        /// Where it is looked up.
        scope: Scope,
        /// Its name.
        name: &'a str,
    },
    /// A name: an alias.
    Alias {
        /// Where it is looked up.
        scope: Scope,
        /// Its name.
        name: &'a str,
    },
    /// Addresses written out: IPs, CIDRs, a range or a comma list.
    Addresses(&'a str),
}

impl<'a> AddressSpec<'a> {
    /// Reads a `source` or `dest` value the way Proxmox does: `+` starts an IP set, a word that starts
    /// with a letter is an alias, anything else is addresses.
    pub fn parse(text: &'a str) -> AddressSpec<'a> {
        let text = text.trim();
        if let Some(set) = text.strip_prefix('+') {
            let (scope, name) = split_scope(set);
            return AddressSpec::IpSet { scope, name };
        }
        let (scope, name) = split_scope(text);
        if is_object_name(name) {
            return AddressSpec::Alias { scope, name };
        }
        AddressSpec::Addresses(text)
    }

    /// The cluster object this refers to, when it can be one of the cluster's (no prefix or `dc/`).
    pub fn cluster_object(&self) -> Option<(ObjectKind, &'a str)> {
        match *self {
            AddressSpec::IpSet {
                scope: Scope::Any | Scope::Cluster,
                name,
            } => Some((ObjectKind::IpSet, name)),
            AddressSpec::Alias {
                scope: Scope::Any | Scope::Cluster,
                name,
            } => Some((ObjectKind::Alias, name)),
            _ => None,
        }
    }
}

/// A kind of named firewall object of the cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum ObjectKind {
    /// A security group.
    Group,
    /// An alias.
    Alias,
    /// An IP set.
    IpSet,
}

impl ObjectKind {
    /// The word in its address (`host/firewall/<word>/<name>`) and in messages.
    pub fn word(self) -> &'static str {
        match self {
            ObjectKind::Group => "group",
            ObjectKind::Alias => "alias",
            ObjectKind::IpSet => "ipset",
        }
    }
}

/// Whether `name` is a name Proxmox allows for an alias, IP set or group: a letter, then letters, digits,
/// `-` and `_`, two characters at least.
pub fn is_object_name(name: &str) -> bool {
    let mut characters = name.chars();
    characters.next().is_some_and(|first| first.is_ascii_alphabetic())
        && name.len() >= 2
        && characters.all(|next| next.is_ascii_alphanumeric() || next == '-' || next == '_')
}

fn split_scope(text: &str) -> (Scope, &str) {
    for (prefix, scope) in [
        ("dc/", Scope::Cluster),
        ("guest/", Scope::Guest),
        ("sdn/", Scope::Sdn),
    ] {
        if let Some(name) = text.strip_prefix(prefix) {
            return (scope, name);
        }
    }
    (Scope::Any, text)
}

/// The cluster objects a list of rules refers to: the groups `group` rules jump to, and the aliases and IP
/// sets of `source` and `dest`, in order, each once.
pub fn rule_references(rules: &[super::FirewallRule]) -> Vec<(ObjectKind, String)> {
    let mut found: Vec<(ObjectKind, String)> = Vec::new();
    for rule in rules {
        let group = rule.group().map(|name| (ObjectKind::Group, name));
        let addresses = [&rule.source, &rule.dest]
            .into_iter()
            .flatten()
            .filter_map(|text| AddressSpec::parse(text).cluster_object());
        for (kind, name) in group.into_iter().chain(addresses) {
            if !found.iter().any(|(seen, text)| *seen == kind && text == name) {
                found.push((kind, name.to_owned()));
            }
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn macros_are_matched_without_case_and_unknown_ones_are_none() {
        assert_eq!(canonical_macro("ssh"), Some("SSH"));
        assert_eq!(canonical_macro("HTTPS"), Some("HTTPS"));
        assert_eq!(canonical_macro("Shh"), None);
    }

    #[test]
    fn entries_are_written_as_proxmox_writes_them() {
        assert_eq!(proxmox_cidr("10.0.0.5/32"), "10.0.0.5");
        assert_eq!(proxmox_cidr("10.0.0.5/24"), "10.0.0.0/24");
        assert_eq!(proxmox_cidr("10.0.0.5"), "10.0.0.5");
        assert_eq!(proxmox_cidr("fd00::1/128"), "fd00::1");
        assert_eq!(proxmox_cidr("lan"), "lan");
    }

    #[test]
    fn addresses_aliases_and_ip_sets_are_told_apart() {
        assert_eq!(
            AddressSpec::parse("+dc/management"),
            AddressSpec::IpSet {
                scope: Scope::Cluster,
                name: "management"
            }
        );
        assert_eq!(
            AddressSpec::parse("lan"),
            AddressSpec::Alias {
                scope: Scope::Any,
                name: "lan"
            }
        );
        assert_eq!(
            AddressSpec::parse("10.0.0.0/24"),
            AddressSpec::Addresses("10.0.0.0/24")
        );
        assert_eq!(AddressSpec::parse("fe80::1"), AddressSpec::Addresses("fe80::1"));
        assert_eq!(AddressSpec::parse("guest/web").cluster_object(), None);
    }
}
