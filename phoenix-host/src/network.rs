//! `host/network/<name>`: a bridge of the node (`network.interfaces`), through `/nodes/{node}/network`.
//!
//! Proxmox writes network changes to `/etc/network/interfaces.new` and applies them with a reload
//! (`PUT /nodes/{node}/network`, which runs `ifreload -a`); networking is never restarted. A bridge is
//! created with one `POST`, or corrected with one `PUT` of the bridge's whole settings (the live ones with
//! the declared ones laid over them: Proxmox recomputes an interface's method from each `PUT`, so a `PUT`
//! without the address would drop it), and then reloaded once. Nothing is written when nothing differs.
//!
//! Two things are risky ([`Consequence::Risky`], `--allow-risky`): a change to the bridge Phoenix reaches
//! the node through (see [`Management`]), except its comment; and network changes pending on the node
//! that Phoenix did not make (someone edited in the GUI without applying), which a reload would apply
//! with Phoenix's own. Those show in the plan as the field `pending` (the changed lines of Proxmox's diff).

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Mutex;

use phoenix_core::config::hypervisor::HostInterface;
use phoenix_core::{Action, Change, Consequence, ManagerError};
use phoenix_pve::{Form, Method};
use serde_json::{Value, json};

use crate::node::Node;

/// The bridge settings Phoenix sends back on every `PUT`, beside the declared ones, as Proxmox names them.
const KEPT: [&str; 10] = [
    "cidr",
    "gateway",
    "cidr6",
    "gateway6",
    "bridge_ports",
    "bridge_vlan_aware",
    "bridge_vids",
    "autostart",
    "comments",
    "mtu",
];

/// What observe learnt about the node's network as a whole, for the diffs: the addresses the API is
/// reached on, and the pending changes.
#[derive(Debug, Default)]
pub(crate) struct Facts(Mutex<NodeNetwork>);

#[derive(Debug, Default, Clone)]
struct NodeNetwork {
    management: Management,
    pending: Vec<String>,
}

/// How Phoenix tells the bridge it reaches the node through (the management interface).
///
/// The endpoint's host, as an address or resolved, is the management address. A bridge carries it when
/// the bridge's address, live or declared, is that address or a network that contains it. When Phoenix
/// reaches the API on loopback (it runs on the node) or the endpoint does not resolve, the address tells
/// nothing: then the bridge with the node's default gateway, live or declared, is the management interface,
/// as the one the node is reached by from elsewhere.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct Management {
    addresses: Vec<IpAddr>,
}

impl Management {
    pub(crate) fn new(addresses: Vec<IpAddr>) -> Management {
        Management { addresses }
    }

    /// Whether the bridge with these live and declared settings carries the management address.
    fn carries(&self, live: Option<&BTreeMap<String, Value>>, declared: &BTreeMap<String, Value>) -> bool {
        let settings = || live.into_iter().chain([declared]);
        let routable: Vec<IpAddr> = self
            .addresses
            .iter()
            .copied()
            .filter(|address| !address.is_loopback())
            .collect();
        if routable.is_empty() {
            return settings().any(|fields| fields.get("gateway").is_some_and(|gateway| gateway.is_string()));
        }
        settings()
            .filter_map(|fields| fields.get("cidr").and_then(Value::as_str))
            .any(|cidr| routable.iter().any(|address| cidr_contains(cidr, *address)))
    }
}

/// Whether `cidr` (`10.0.0.13/24`) is `address` or a network containing it.
fn cidr_contains(cidr: &str, address: IpAddr) -> bool {
    let Some((network, prefix)) = cidr.split_once('/') else {
        return cidr.parse::<IpAddr>().is_ok_and(|own| own == address);
    };
    let (Ok(network), Ok(prefix)) = (network.parse::<IpAddr>(), prefix.parse::<u32>()) else {
        return false;
    };
    match (network, address) {
        (IpAddr::V4(network), IpAddr::V4(address)) if prefix <= 32 => {
            let mask = u32::MAX.checked_shl(32 - prefix).unwrap_or(0);
            u32::from(network) & mask == u32::from(address) & mask
        }
        (IpAddr::V6(network), IpAddr::V6(address)) if prefix <= 128 => {
            let mask = u128::MAX.checked_shl(128 - prefix).unwrap_or(0);
            u128::from(network) & mask == u128::from(address) & mask
        }
        _ => false,
    }
}

/// The declared fields: `type` (always `bridge`), and what the interface declares, in the vocabulary
/// [`observe`] reads. `pending` is always empty: a converged node has no network change waiting.
pub(crate) fn desired(bridge: &HostInterface) -> BTreeMap<String, Value> {
    let mut fields = BTreeMap::from([
        ("type".to_owned(), json!("bridge")),
        ("pending".to_owned(), json!([])),
    ]);
    // Only a static address is Proxmox's to set; `dhcp` is left as the node has it.
    if let Some(cidr) = bridge.address.as_deref().filter(|address| address.contains('/')) {
        fields.insert("cidr".to_owned(), json!(cidr));
    }
    if let Some(gateway) = &bridge.gateway {
        fields.insert("gateway".to_owned(), json!(gateway));
    }
    if let Some(ports) = &bridge.ports {
        fields.insert(
            "ports".to_owned(),
            json!(port_set(ports.iter().map(String::as_str))),
        );
    }
    if let Some(comments) = &bridge.comments {
        fields.insert("comments".to_owned(), json!(comments.trim_end()));
    }
    if let Some(autostart) = bridge.autostart {
        fields.insert("autostart".to_owned(), json!(autostart));
    }
    if let Some(vlan_aware) = bridge.vlan_aware {
        fields.insert("vlan_aware".to_owned(), json!(vlan_aware));
    }
    if let Some(mtu) = bridge.mtu {
        fields.insert("mtu".to_owned(), json!(mtu));
    }
    fields
}

/// Bridge ports as a set: their order means nothing to Proxmox, and `none` is no port.
fn port_set<'a>(ports: impl Iterator<Item = &'a str>) -> Vec<String> {
    let mut ports: Vec<String> = ports
        .filter(|port| !port.is_empty() && *port != "none")
        .map(str::to_owned)
        .collect();
    ports.sort();
    ports.dedup();
    ports
}

/// Reads the node's network listing (with its pending changes) and the declared bridge; `None` when the
/// node has no interface of that name. What it learns of the node as a whole goes to `facts`.
pub(crate) async fn observe(
    node: &Node,
    facts: &Facts,
    bridge: &HostInterface,
) -> Result<Option<BTreeMap<String, Value>>, ManagerError> {
    let (listing, attributes): (Vec<Value>, _) = node
        .client()
        .get_with_attributes(&node.path("network"), &[])
        .await?;
    let pending = pending_lines(
        attributes
            .get("changes")
            .and_then(Value::as_str)
            .unwrap_or_default(),
    );
    let management = Management::new(node.management_addresses().await);
    *facts.0.lock().expect("not poisoned") = NodeNetwork {
        management,
        pending: pending.clone(),
    };
    let Some(live) = listing
        .iter()
        .find(|entry| entry.get("iface").and_then(Value::as_str) == Some(bridge.name.as_str()))
    else {
        return Ok(None);
    };
    let mut fields = fields_of(live);
    fields.insert("pending".to_owned(), json!(pending));
    Ok(Some(fields))
}

/// The changed lines of Proxmox's diff of `interfaces` against `interfaces.new`.
fn pending_lines(changes: &str) -> Vec<String> {
    changes
        .lines()
        .filter(|line| {
            (line.starts_with('+') || line.starts_with('-'))
                && !line.starts_with("+++")
                && !line.starts_with("---")
        })
        .map(|line| line.replace('\t', " "))
        .collect()
}

/// One interface as Proxmox lists it, in the vocabulary of [`desired`].
fn fields_of(live: &Value) -> BTreeMap<String, Value> {
    let mut fields = BTreeMap::new();
    let text = |key: &str| {
        live.get(key)
            .and_then(Value::as_str)
            .filter(|text| !text.is_empty())
    };
    let flag = |key: &str| {
        live.get(key)
            .is_some_and(|value| value.as_u64() == Some(1) || value.as_bool() == Some(true) || value == "1")
    };
    if let Some(kind) = text("type") {
        fields.insert("type".to_owned(), json!(kind));
    }
    if let Some(cidr) = live_cidr(live) {
        fields.insert("cidr".to_owned(), json!(cidr));
    }
    if let Some(gateway) = text("gateway") {
        fields.insert("gateway".to_owned(), json!(gateway));
    }
    let ports = text("bridge_ports").unwrap_or_default();
    fields.insert("ports".to_owned(), json!(port_set(ports.split_whitespace())));
    if let Some(comments) = text("comments") {
        fields.insert("comments".to_owned(), json!(comments.trim_end()));
    }
    fields.insert("autostart".to_owned(), json!(flag("autostart")));
    fields.insert("vlan_aware".to_owned(), json!(flag("bridge_vlan_aware")));
    let mtu = live.get("mtu").and_then(|mtu| {
        mtu.as_u64()
            .or_else(|| mtu.as_str().and_then(|text| text.parse().ok()))
    });
    if let Some(mtu) = mtu {
        fields.insert("mtu".to_owned(), json!(mtu));
    }
    fields
}

/// The interface's IPv4 address with its prefix: `cidr`, or `address` with `netmask` (a prefix length or
/// a dotted mask).
fn live_cidr(live: &Value) -> Option<String> {
    if let Some(cidr) = live
        .get("cidr")
        .and_then(Value::as_str)
        .filter(|cidr| !cidr.is_empty())
    {
        return Some(cidr.to_owned());
    }
    let address = live.get("address").and_then(Value::as_str)?;
    let netmask = live.get("netmask")?;
    let prefix = match netmask.as_str() {
        Some(mask) if mask.contains('.') => mask
            .parse::<std::net::Ipv4Addr>()
            .ok()
            .map(|mask| u32::from(mask).count_ones())?,
        Some(length) => length.parse().ok()?,
        None => u32::try_from(netmask.as_u64()?).ok()?,
    };
    Some(format!("{address}/{prefix}"))
}

/// What changing `field` of `bridge` does: risky for pending changes of others, and for anything but the
/// comment of the management bridge.
pub(crate) fn consequence(
    facts: &Facts,
    bridge: &HostInterface,
    live: Option<&BTreeMap<String, Value>>,
    field: &str,
) -> Consequence {
    let network = facts.0.lock().expect("not poisoned").clone();
    match field {
        "pending" => Consequence::Risky,
        "comments" => Consequence::Live,
        _ if network.management.carries(live, &desired(bridge)) => Consequence::Risky,
        _ => Consequence::Live,
    }
}

/// Changes the diff of a creation finds beyond the declared fields: the node's pending changes, which the
/// reload after the creation would apply too.
pub(crate) fn created(facts: &Facts, change: &mut Change) {
    let pending = facts.0.lock().expect("not poisoned").pending.clone();
    change.fields.retain(|field| field.field != "pending");
    if !pending.is_empty() {
        change.fields.push(phoenix_core::FieldChange {
            field: "pending".to_owned(),
            old: Some(json!(pending)),
            new: Some(json!([])),
            consequence: Consequence::Risky,
        });
        change.fields.sort_by(|left, right| left.field.cmp(&right.field));
    }
}

/// Creates or corrects the bridge, then reloads the node's network once. A change of `pending` alone is
/// the reload.
pub(crate) async fn apply(node: &Node, bridge: &HostInterface, change: &Change) -> Result<(), ManagerError> {
    let client = node.client();
    let wanted = desired(bridge);
    let written = change.fields.iter().any(|field| field.field != "pending");
    if change.action == Action::Create {
        let mut form = Form::new().text("iface", &bridge.name).text("type", "bridge");
        for (key, value) in proxmox_settings(&wanted)
            .into_iter()
            .filter(|(_, value)| !value.is_empty())
        {
            form = form.text(&key, value);
        }
        let _: Value = client.post(&node.path("network"), &form).await?;
    } else if written {
        if change.fields.iter().any(|field| field.field == "type") {
            return Err(ManagerError::failed(format!(
                "interface {} on node {} is not a bridge; Phoenix does not change an interface's type",
                bridge.name,
                node.name()
            )));
        }
        let path = node.path(&format!("network/{}", bridge.name));
        let live: Value = client.get(&path, &[]).await?;
        let mut settings = kept_settings(&live);
        let declared = proxmox_settings(&wanted);
        let cleared: Vec<&str> = declared
            .iter()
            .filter(|(_, value)| value.is_empty())
            .map(|(key, _)| key.as_str())
            .collect();
        for (key, value) in &declared {
            settings.insert(key.clone(), value.clone());
        }
        let mut form = Form::new().text("type", "bridge");
        for (key, value) in settings.iter().filter(|(_, value)| !value.is_empty()) {
            form = form.text(key, value.clone());
        }
        if !cleared.is_empty() {
            form = form.text("delete", cleared.join(","));
        }
        let _: Value = client.put(&path, &form).await?;
    }
    reload(node).await
}

/// `PUT /nodes/{node}/network`: Proxmox moves `interfaces.new` into place and runs `ifreload -a`.
async fn reload(node: &Node) -> Result<(), ManagerError> {
    node.client()
        .run_task(Method::PUT, &node.path("network"), &Form::new())
        .await
        .map_err(ManagerError::from)
        .map(drop)
}

/// The declared fields as Proxmox's parameters; an empty value asks for the setting to be deleted.
fn proxmox_settings(fields: &BTreeMap<String, Value>) -> BTreeMap<String, String> {
    let mut settings = BTreeMap::new();
    for (field, value) in fields {
        let (key, text) = match (field.as_str(), value) {
            ("cidr" | "gateway" | "comments", Value::String(text)) => (field.as_str(), text.clone()),
            ("ports", Value::Array(ports)) => (
                "bridge_ports",
                ports
                    .iter()
                    .filter_map(Value::as_str)
                    .collect::<Vec<_>>()
                    .join(" "),
            ),
            ("autostart", Value::Bool(flag)) => ("autostart", u8::from(*flag).to_string()),
            ("vlan_aware", Value::Bool(flag)) => ("bridge_vlan_aware", u8::from(*flag).to_string()),
            ("mtu", Value::Number(mtu)) => ("mtu", mtu.to_string()),
            _ => continue,
        };
        settings.insert(key.to_owned(), text);
    }
    settings
}

/// The live settings a `PUT` must carry so that Proxmox keeps them, as parameters.
fn kept_settings(live: &Value) -> BTreeMap<String, String> {
    let mut settings = BTreeMap::new();
    for key in KEPT {
        let value = match key {
            "cidr" => live_cidr(live),
            "cidr6" => live
                .get("cidr6")
                .and_then(Value::as_str)
                .map(str::to_owned)
                .or_else(|| {
                    let address = live.get("address6").and_then(Value::as_str)?;
                    Some(format!("{address}/{}", live.get("netmask6")?))
                }),
            _ => match live.get(key) {
                Some(Value::String(text)) => Some(text.trim_end().to_owned()),
                Some(Value::Number(number)) => Some(number.to_string()),
                Some(Value::Bool(flag)) => Some(u8::from(*flag).to_string()),
                _ => None,
            },
        };
        if let Some(value) = value.filter(|value| !value.is_empty() && value != "none") {
            settings.insert(key.to_owned(), value);
        }
    }
    settings
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bridge(text: &str) -> HostInterface {
        serde_json::from_str(text).expect("an interface")
    }

    #[test]
    fn an_address_is_in_a_network_of_its_family_only() {
        let address: IpAddr = "10.0.0.13".parse().expect("ip");
        assert!(cidr_contains("10.0.0.13/24", address));
        assert!(cidr_contains("10.0.0.1/24", address));
        assert!(!cidr_contains("10.0.1.1/24", address));
        assert!(cidr_contains("0.0.0.0/0", address));
        assert!(!cidr_contains("fd00::1/64", address));
        assert!(!cidr_contains("nonsense", address));
    }

    #[test]
    fn the_management_bridge_is_the_one_whose_network_holds_the_endpoint() {
        let declared = desired(&bridge(r#"{"name": "vmbr1", "address": "10.0.1.2/24"}"#));
        let live = fields_of(&json!({"type": "bridge", "cidr": "10.0.0.13/24", "gateway": "10.0.0.1"}));
        let reached = Management::new(vec!["10.0.0.13".parse().expect("ip")]);
        assert!(reached.carries(Some(&live), &declared), "live address");
        assert!(!reached.carries(None, &declared), "another network");
        let moved = desired(&bridge(r#"{"name": "vmbr1", "address": "10.0.0.50/24"}"#));
        assert!(reached.carries(None, &moved), "a new bridge claiming the network");
        // On the node itself, the bridge with the default gateway is the management one.
        let local = Management::new(vec!["127.0.0.1".parse().expect("ip")]);
        assert!(local.carries(Some(&live), &declared));
        assert!(!local.carries(None, &declared));
        assert!(Management::default().carries(Some(&live), &declared));
    }

    #[test]
    fn live_interfaces_read_in_the_declared_vocabulary() {
        let live = json!({"type": "bridge", "address": "192.0.2.11", "netmask": "255.255.255.0",
            "bridge_ports": "eno2 eno1", "autostart": 1, "comments": "LAN\n", "mtu": "9000"});
        let fields = fields_of(&live);
        assert_eq!(fields["cidr"], json!("192.0.2.11/24"));
        assert_eq!(fields["ports"], json!(["eno1", "eno2"]));
        assert_eq!(fields["comments"], json!("LAN"));
        assert_eq!(fields["autostart"], json!(true));
        assert_eq!(fields["vlan_aware"], json!(false));
        assert_eq!(fields["mtu"], json!(9000));
        assert_eq!(fields_of(&json!({"bridge_ports": "none"}))["ports"], json!([]));
    }

    #[test]
    fn a_put_carries_the_live_settings_under_the_declared_ones() {
        let live = json!({"type": "bridge", "cidr": "192.0.2.11/24", "gateway": "192.0.2.1",
            "bridge_ports": "eno1", "autostart": 1, "bridge_stp": "off"});
        let mut settings = kept_settings(&live);
        let declared = proxmox_settings(&desired(&bridge(
            r#"{"name": "vmbr0", "comments": "LAN", "ports": []}"#,
        )));
        settings.extend(declared);
        assert_eq!(
            settings,
            BTreeMap::from(
                [
                    ("autostart", "1"),
                    ("bridge_ports", ""),
                    ("cidr", "192.0.2.11/24"),
                    ("comments", "LAN"),
                    ("gateway", "192.0.2.1")
                ]
                .map(|(key, value)| (key.to_owned(), value.to_owned()))
            )
        );
    }

    #[test]
    fn the_pending_lines_are_the_changed_lines_of_the_diff() {
        let changes = "--- /etc/network/interfaces\n+++ /etc/network/interfaces.new\n@@ -1,3 +1,3 @@\n iface vmbr0 inet static\n-\taddress 10.0.0.2/24\n+\taddress 10.0.0.3/24\n";
        assert_eq!(
            pending_lines(changes),
            ["- address 10.0.0.2/24", "+ address 10.0.0.3/24"]
        );
    }
}
