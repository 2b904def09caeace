//! `host/dns`: the node's search domain and resolvers, through `/nodes/{node}/dns`.

use std::collections::BTreeMap;

use phoenix_core::{HostDns, ManagerError};
use phoenix_pve::Form;
use serde_json::{Value, json};

use crate::node::Node;

/// Proxmox's resolver slots, in order.
const SLOTS: [&str; HostDns::MAX_SERVERS] = ["dns1", "dns2", "dns3"];

/// The declared fields: `search` when declared, and `servers` in order.
pub(crate) fn desired(dns: &HostDns) -> BTreeMap<String, Value> {
    let mut fields = BTreeMap::new();
    if let Some(search) = &dns.search {
        fields.insert("search".to_owned(), json!(search));
    }
    if !dns.servers.is_empty() {
        fields.insert("servers".to_owned(), json!(dns.servers));
    }
    fields
}

/// What the node has: `search`, and the resolvers it lists, in order.
pub(crate) async fn observe(node: &Node) -> Result<BTreeMap<String, Value>, ManagerError> {
    let live: Value = node.client().get(&node.path("dns"), &[]).await?;
    Ok(fields_of(&live))
}

fn fields_of(live: &Value) -> BTreeMap<String, Value> {
    let mut fields = BTreeMap::new();
    if let Some(search) = live
        .get("search")
        .filter(|search| search.as_str().is_some_and(|text| !text.is_empty()))
    {
        fields.insert("search".to_owned(), search.clone());
    }
    let servers: Vec<&str> = SLOTS
        .iter()
        .filter_map(|slot| live.get(*slot).and_then(Value::as_str))
        .filter(|server| !server.is_empty())
        .collect();
    fields.insert("servers".to_owned(), json!(servers));
    fields
}

/// Writes the declared settings. Proxmox requires `search` on every write: when the configuration names
/// none, the node's own is sent back unchanged. The resolvers are written whole, so a resolver the node
/// had beyond the declared ones is dropped (they are one list).
pub(crate) async fn apply(node: &Node, dns: &HostDns) -> Result<(), ManagerError> {
    let live = if dns.search.is_none() || dns.servers.is_empty() {
        observe(node).await?
    } else {
        BTreeMap::new()
    };
    let search = match &dns.search {
        Some(search) => search.as_str(),
        None => live.get("search").and_then(Value::as_str).unwrap_or_default(),
    };
    // Only the search domain declared: the node's resolvers are kept.
    let servers: Vec<&str> = if dns.servers.is_empty() {
        live.get("servers")
            .and_then(Value::as_array)
            .map(|servers| servers.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default()
    } else {
        dns.servers.iter().map(String::as_str).collect()
    };
    let mut form = Form::new().text("search", search);
    for (slot, server) in SLOTS.iter().zip(servers) {
        form = form.text(slot, server);
    }
    node.client().put::<Value>(&node.path("dns"), &form).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_live_settings_read_as_an_ordered_list() {
        let live = json!({"search": "lab.example.org", "dns1": "10.0.0.1", "dns3": "9.9.9.9"});
        assert_eq!(
            fields_of(&live),
            BTreeMap::from([
                ("search".to_owned(), json!("lab.example.org")),
                ("servers".to_owned(), json!(["10.0.0.1", "9.9.9.9"])),
            ])
        );
        assert_eq!(fields_of(&json!({}))["servers"], json!([]));
    }
}
