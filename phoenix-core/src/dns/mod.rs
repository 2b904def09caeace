//! The estate's two DNS views. The public one, names of the gateway published in public zones, is
//! [`public`]. This module is the internal view (`sync/dns/internal`): the names of the estate and the
//! addresses they resolve to inside it, served by a dnsmasq instance of Phoenix's own from one
//! configuration file.
//!
//! Records: every guest with a static address, as `<name>.<domain_name>` (and `<name>`); every name a
//! Traefik router answers for (`Host(...)` in its rule: guests' `traefik_service`, stacks' labels), at the
//! Traefik container's address, since Traefik is what serves them. The file also carries the upstream
//! servers and the authoritative zones (`local=/zone/`: never forwarded). [`render`] writes it and
//! [`parse`] reads a live one back into the same [`InternalDns`], so a plan compares records, not text.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::model::Estate;
use crate::traefik::Declared;
use crate::traefik::labels::Section;

pub mod public;

/// Where Phoenix's dnsmasq configuration is, on the node or in the DNS container. Not in `dnsmasq.d/`: a
/// dnsmasq of the system's own would read it too.
pub const CONFIG_PATH: &str = "/etc/phoenix/dnsmasq.conf";
/// The pid file of Phoenix's dnsmasq instance, so that only it is ever restarted.
pub const PID_FILE: &str = "/run/phoenix-dnsmasq.pid";
const HEADER: &str =
    "# Phoenix's internal DNS view, written by Phoenix and replaced whole: edit the configuration.\n";

/// What the internal view's dnsmasq serves.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct InternalDns {
    /// The container it runs in; the node when `None`.
    #[serde(skip)]
    pub container: Option<u32>,
    /// The address and port it listens on.
    pub listen: Listen,
    /// Servers asked for names outside the estate.
    pub upstreams: Vec<String>,
    /// Zones answered from the records alone.
    pub zones: Vec<String>,
    /// Name to address.
    pub records: BTreeMap<String, String>,
}

/// Where dnsmasq listens.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct Listen {
    /// The address; all when `None`.
    pub address: Option<String>,
    /// The port.
    pub port: u16,
}

/// The internal view the estate declares, when `dns_server.enabled`: its guests, and the hosts of the
/// routes `traefik` (the estate's [`crate::traefik::declared`]) sends to its proxy.
pub fn internal_view(estate: &Estate, traefik: &Declared) -> Option<InternalDns> {
    let hypervisor = &estate.files().hypervisor;
    let server = hypervisor.dns_server.as_ref().filter(|server| server.enabled)?;
    let domain = hypervisor.domain_name.as_deref();
    let mut records = BTreeMap::new();
    for guest in estate.guests().values() {
        let Some(address) = guest.static_address().map(str::to_owned) else {
            continue;
        };
        let name = guest.name().to_ascii_lowercase();
        if let Some(domain) = domain {
            records.insert(format!("{name}.{domain}"), address.clone());
        }
        records.insert(name, address);
    }
    if let Some(address) = traefik
        .proxy
        .and_then(|proxy| estate.guest(proxy)?.static_address().map(str::to_owned))
    {
        for router in traefik.config.names(Section::Router) {
            let rule = traefik
                .config
                .get(Section::Router, router)
                .and_then(|router| router.get("rule"))
                .and_then(|rule| rule.as_str())
                .unwrap_or_default();
            for host in hosts_of(rule) {
                records
                    .entry(host.to_ascii_lowercase())
                    .or_insert_with(|| address.clone());
            }
        }
    }
    Some(InternalDns {
        container: server.container,
        listen: Listen {
            address: server.listen_address.clone(),
            port: server.port.unwrap_or(53),
        },
        upstreams: server.upstream_servers.clone(),
        zones: server.authoritative_zones.clone(),
        records,
    })
}

/// The names of `Host(`a`, `b`)` in a router rule.
fn hosts_of(rule: &str) -> Vec<&str> {
    let mut hosts = Vec::new();
    let mut rest = rule;
    while let Some(start) = rest.find("Host(") {
        rest = &rest[start + "Host(".len()..];
        let end = rest.find(')').unwrap_or(rest.len());
        for name in rest[..end].split(',') {
            let name = name.trim().trim_matches(|c| c == '`' || c == '"' || c == '\'');
            if !name.is_empty() && !name.contains('*') {
                hosts.push(name);
            }
        }
        rest = &rest[end..];
    }
    hosts
}

/// The dnsmasq configuration of `view`.
pub fn render(view: &InternalDns) -> String {
    let mut text = String::from(HEADER);
    text.push_str(&format!("port={}\n", view.listen.port));
    if let Some(address) = &view.listen.address {
        text.push_str(&format!("listen-address={address}\nbind-interfaces\n"));
    }
    text.push_str(&format!(
        "pid-file={PID_FILE}\nno-resolv\nno-hosts\ndomain-needed\nbogus-priv\n"
    ));
    for upstream in &view.upstreams {
        text.push_str(&format!("server={upstream}\n"));
    }
    for zone in &view.zones {
        text.push_str(&format!("local=/{zone}/\n"));
    }
    for (name, address) in &view.records {
        text.push_str(&format!("host-record={name},{address}\n"));
    }
    text
}

/// Reads a configuration [`render`] wrote back; lines it does not write are returned apart, so a plan
/// shows them as something to remove.
pub fn parse(text: &str) -> (InternalDns, Vec<String>) {
    let mut view = InternalDns {
        listen: Listen {
            address: None,
            port: 53,
        },
        ..InternalDns::default()
    };
    let mut other = Vec::new();
    for line in text
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
    {
        let (key, value) = line.split_once('=').unwrap_or((line, ""));
        match key {
            "port" => match value.parse() {
                Ok(port) => view.listen.port = port,
                Err(_) => other.push(line.to_owned()),
            },
            "listen-address" => view.listen.address = Some(value.to_owned()),
            "server" => view.upstreams.push(value.to_owned()),
            "local" => view.zones.push(value.trim_matches('/').to_owned()),
            "host-record" => match value.rsplit_once(',') {
                Some((name, address)) => {
                    view.records.insert(name.to_owned(), address.to_owned());
                }
                None => other.push(line.to_owned()),
            },
            "bind-interfaces" | "no-resolv" | "no-hosts" | "domain-needed" | "bogus-priv" => {}
            "pid-file" if value == PID_FILE => {}
            _ => other.push(line.to_owned()),
        }
    }
    (view, other)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rendered_view_reads_back_the_same() {
        let view = InternalDns {
            container: None,
            listen: Listen {
                address: Some("127.0.0.1".into()),
                port: 5353,
            },
            upstreams: vec!["9.9.9.9".into()],
            zones: vec!["lab.example.org".into()],
            records: BTreeMap::from([("gateway.lab.example.org".into(), "10.42.0.12".into())]),
        };
        let (back, other) = parse(&render(&view));
        assert_eq!(back, view);
        assert!(other.is_empty(), "{other:?}");
        let (_, other) = parse(&format!("{}address=/evil/1.2.3.4\n", render(&view)));
        assert_eq!(other, ["address=/evil/1.2.3.4"]);
    }

    #[test]
    fn router_rules_name_their_hosts() {
        assert_eq!(
            hosts_of("Host(`a.example.org`) || Host(`b.example.org`, `c`)"),
            ["a.example.org", "b.example.org", "c"]
        );
        assert_eq!(hosts_of("PathPrefix(`/x`)"), Vec::<&str>::new());
    }
}
