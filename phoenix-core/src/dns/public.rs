//! The public DNS view (`sync/dns/public/<zone>`): the names the outside world reaches the estate by, each
//! resolving to the gateway's public address, grouped by the public zone they belong to.
//!
//! Public names are the gateway's `public_names` and route hosts, plus `public_dns.names`. Phoenix owns a
//! name in a zone it shares with others only through an ownership record: a TXT record at
//! `_phoenix.<name>` holding [`ownership_text`] (external-dns's registry, with the owner id of this
//! estate). Names without one are never changed; names with one that left the configuration are removed.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::config::hypervisor::{DnsUpdateServer, PublicDns};
use crate::model::Estate;

/// The label ownership records are written under: `_phoenix.www.example.com` for `www.example.com`.
pub const OWNER_LABEL: &str = "_phoenix";

/// Below this many records in a zone, the one-third rule does not hold (a new zone is all change).
pub const SAFE_ZONE_SIZE: usize = 10;

/// One public zone's names, as Phoenix publishes them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PublicZone {
    /// The zone, lower case, without the trailing dot.
    pub zone: String,
    /// Who owns the records, written in their ownership records.
    pub owner_id: String,
    /// Each name (fully qualified, lower case, without the trailing dot) and its records.
    pub names: BTreeMap<String, NameRecords>,
    /// The server taking updates; `None` when the records are created by hand.
    #[serde(skip)]
    pub server: Option<DnsUpdateServer>,
}

impl PublicZone {
    /// The fields the zone is compared by: each name's records.
    pub fn fields(&self) -> BTreeMap<String, serde_json::Value> {
        self.names
            .iter()
            .map(|(name, records)| (name.clone(), serde_json::to_value(records).unwrap_or_default()))
            .collect()
    }
}

/// The records at one public name.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct NameRecords {
    /// IPv4 addresses.
    #[serde(rename = "A", default, skip_serializing_if = "Vec::is_empty")]
    pub a: Vec<String>,
    /// IPv6 addresses.
    #[serde(rename = "AAAA", default, skip_serializing_if = "Vec::is_empty")]
    pub aaaa: Vec<String>,
    /// Their TTL in seconds.
    pub ttl: u32,
}

/// A public name and the JSON pointer (in the hypervisor file) it is declared at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicName {
    /// The name, lower case, without the trailing dot.
    pub name: String,
    /// Where it is declared.
    pub pointer: String,
}

/// The estate's public names, each once, in the order they are declared.
pub fn public_names(estate: &Estate) -> Vec<PublicName> {
    let hypervisor = &estate.files().hypervisor;
    let mut names: Vec<PublicName> = Vec::new();
    let mut add = |name: &str, pointer: String| {
        let name = normalise(name);
        if !name.is_empty() && !names.iter().any(|known| known.name == name) {
            names.push(PublicName { name, pointer });
        }
    };
    if let Some(gateway) = &hypervisor.gateway {
        for (index, name) in gateway.public_names.iter().enumerate() {
            add(name, format!("/gateway/public_names/{index}"));
        }
        for (index, route) in gateway.routes.iter().enumerate() {
            add(&route.host, format!("/gateway/routes/{index}/host"));
        }
    }
    if let Some(public) = &hypervisor.public_dns {
        for (index, name) in public.names.iter().enumerate() {
            add(name, format!("/public_dns/names/{index}"));
        }
    }
    names
}

/// Lower case, without the trailing dot.
pub fn normalise(name: &str) -> String {
    name.trim().trim_end_matches('.').to_ascii_lowercase()
}

/// The zone of `zones` that `name` belongs to: the longest one it is in.
pub fn zone_of<'a>(name: &str, zones: &'a [String]) -> Option<&'a String> {
    zones
        .iter()
        .filter(|zone| {
            let zone = normalise(zone);
            name == zone || name.ends_with(&format!(".{zone}"))
        })
        .max_by_key(|zone| zone.len())
}

/// The IPv4 address public names resolve to: `public_dns.address`, else the gateway container's static
/// address.
pub fn public_address(estate: &Estate, public: &PublicDns) -> Option<String> {
    public.address.clone().or_else(|| {
        let gateway = estate.files().hypervisor.gateway.as_ref()?;
        Some(estate.guest(gateway.container)?.static_address()?.to_owned())
    })
}

/// The public view the estate declares: one zone per entry of `public_dns.zones`, names outside every zone
/// left out (validation reports them).
pub fn public_view(estate: &Estate) -> Vec<PublicZone> {
    let Some(public) = &estate.files().hypervisor.public_dns else {
        return Vec::new();
    };
    let mut zones: BTreeMap<String, PublicZone> = public
        .zones
        .iter()
        .map(|zone| {
            let zone = normalise(zone);
            let view = PublicZone {
                zone: zone.clone(),
                owner_id: public.owner_id.clone(),
                names: BTreeMap::new(),
                server: public.server.clone(),
            };
            (zone, view)
        })
        .collect();
    let records = NameRecords {
        a: public_address(estate, public).into_iter().collect(),
        aaaa: public.address6.iter().cloned().collect(),
        ttl: public.ttl,
    };
    for name in public_names(estate) {
        if let Some(zone) = zone_of(&name.name, &public.zones).map(|zone| normalise(zone))
            && let Some(view) = zones.get_mut(&zone)
        {
            view.names.insert(name.name, records.clone());
        }
    }
    zones.into_values().collect()
}

/// The name of the ownership record of `name`: `_phoenix.<name>`, and `_phoenix._wildcard.<rest>` for
/// `*.<rest>` (a `*` label anywhere but first is no wildcard, and some servers refuse it).
pub fn owner_name(name: &str) -> String {
    match name.strip_prefix("*.") {
        Some(rest) => format!("{OWNER_LABEL}._wildcard.{rest}"),
        None => format!("{OWNER_LABEL}.{name}"),
    }
}

/// The name an ownership record's name stands for (the inverse of [`owner_name`]); `None` for a name that
/// is not an ownership record's.
pub fn owned_name(owner: &str) -> Option<String> {
    let rest = owner.strip_prefix(OWNER_LABEL)?.strip_prefix('.')?;
    Some(match rest.strip_prefix("_wildcard.") {
        Some(rest) => format!("*.{rest}"),
        None => rest.to_owned(),
    })
}

/// The zones whose records are created by hand: those without a server, with their records.
pub fn manual_zones(estate: &Estate) -> Vec<PublicZone> {
    public_view(estate)
        .into_iter()
        .filter(|zone| zone.server.is_none() && !zone.names.is_empty())
        .collect()
}

/// What the ownership record of a name Phoenix owns says, for this owner id.
pub fn ownership_text(owner_id: &str) -> String {
    format!("heritage=phoenix,phoenix/owner={owner_id}")
}

/// The records of `zone` as zone-file lines, for an operator to create by hand.
pub fn zone_lines(zone: &PublicZone) -> Vec<String> {
    let mut lines = Vec::new();
    for (name, records) in &zone.names {
        for address in &records.a {
            lines.push(format!("{name}. {} IN A {address}", records.ttl));
        }
        for address in &records.aaaa {
            lines.push(format!("{name}. {} IN AAAA {address}", records.ttl));
        }
    }
    lines
}

/// The host and port of a server's address: `host`, `host:port` or `[v6]:port`.
pub fn split_server(address: &str) -> Option<(String, u16)> {
    if let Some(rest) = address.strip_prefix('[') {
        let (host, port) = rest.split_once(']')?;
        let port = match port.strip_prefix(':') {
            Some(port) => port.parse().ok()?,
            None if port.is_empty() => 53,
            None => return None,
        };
        host.parse::<std::net::Ipv6Addr>().ok()?;
        return Some((host.to_owned(), port));
    }
    if address.parse::<std::net::IpAddr>().is_ok() {
        return Some((address.to_owned(), 53));
    }
    let (host, port) = match address.rsplit_once(':') {
        Some((host, port)) => (host, port.parse().ok()?),
        None => (address, 53),
    };
    let valid = !host.is_empty()
        && host
            .split('.')
            .all(|label| !label.is_empty() && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'));
    valid.then(|| (host.to_owned(), port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_name_belongs_to_the_longest_zone_it_is_in() {
        let zones = vec!["example.com".to_owned(), "lab.example.com.".to_owned()];
        assert_eq!(
            zone_of("www.lab.example.com", &zones).map(String::as_str),
            Some("lab.example.com.")
        );
        assert_eq!(
            zone_of("example.com", &zones).map(String::as_str),
            Some("example.com")
        );
        assert_eq!(
            zone_of("www.example.com", &zones).map(String::as_str),
            Some("example.com")
        );
        assert_eq!(zone_of("badexample.com", &zones), None);
    }

    #[test]
    fn ownership_records_name_what_they_own() {
        for name in ["www.example.com", "*.example.com", "example.com"] {
            assert_eq!(owned_name(&owner_name(name)).as_deref(), Some(name));
        }
        assert_eq!(owner_name("*.example.com"), "_phoenix._wildcard.example.com");
        assert_eq!(owned_name("_phoenixish.example.com"), None);
        assert_eq!(owned_name("www.example.com"), None);
    }
}
