//! `host/firewall`: the cluster firewall (`/cluster/firewall`): on or off, the input and output policies,
//! and the declared rules (`global_firewall_rules`).
//!
//! The declared rules are a block at the top of the cluster's list, in the declared order. Rules Phoenix
//! does not declare (added in the GUI, by another tool) are left alone: they are kept, below the block,
//! in their own order. Changes are the fewest positional writes ([`phoenix_pve::firewall::converge_rules`]):
//! one rule appended to the configuration is one rule inserted, never the list rewritten. A rule taken out of
//! the configuration is not deleted (Phoenix cannot tell it from one it never wrote); delete it by hand.
//! Guests' rules are never written here: they belong to each guest's own firewall.

use std::collections::BTreeMap;

use phoenix_core::ManagerError;
use phoenix_core::config::FirewallAction;
use phoenix_core::config::hypervisor::HostFirewall;
use phoenix_pve::firewall::{converge_rules, is_enabled, rule_value, rules};
use phoenix_pve::{Client, Form};
use serde_json::{Value, json};

/// The API base of the cluster firewall.
const BASE: &str = "/cluster";

fn policy(action: FirewallAction) -> &'static str {
    match action {
        FirewallAction::Accept => "ACCEPT",
        FirewallAction::Drop => "DROP",
        FirewallAction::Reject => "REJECT",
    }
}

fn declared_rules(firewall: &HostFirewall) -> Vec<Value> {
    firewall.global_firewall_rules.iter().map(rule_value).collect()
}

/// The declared fields: `enabled` and the policies when declared, and `rules` (the declared block).
pub(crate) fn desired(firewall: &HostFirewall) -> BTreeMap<String, Value> {
    let mut fields = BTreeMap::from([("rules".to_owned(), json!(declared_rules(firewall)))]);
    if let Some(enabled) = firewall.enabled {
        fields.insert("enabled".to_owned(), json!(enabled));
    }
    if let Some(action) = firewall.default_input_policy {
        fields.insert("policy_in".to_owned(), json!(policy(action)));
    }
    if let Some(action) = firewall.default_output_policy {
        fields.insert("policy_out".to_owned(), json!(policy(action)));
    }
    fields
}

/// What the cluster has: `rules` is the top of its list, as many rules as are declared, so rules of
/// others below the block are no drift, and one put in the middle of it is.
pub(crate) async fn observe(
    client: &Client,
    firewall: &HostFirewall,
) -> Result<BTreeMap<String, Value>, ManagerError> {
    // One read of the options gives the flag and the policies.
    let options: Value = client.get("/cluster/firewall/options", &[]).await?;
    let enabled = is_enabled(&options);
    let mut fields = BTreeMap::from([
        ("enabled".to_owned(), json!(enabled)),
        (
            "rules".to_owned(),
            observe_block(client, BASE, firewall.global_firewall_rules.len()).await?,
        ),
    ]);
    for key in ["policy_in", "policy_out"] {
        if let Some(value) = options.get(key).and_then(Value::as_str) {
            fields.insert(key.to_owned(), json!(value));
        }
    }
    Ok(fields)
}

/// The top `declared` rules of the list at `base` (`/cluster`, `/nodes/{node}`): the declared block's
/// place.
pub(crate) async fn observe_block(
    client: &Client,
    base: &str,
    declared: usize,
) -> Result<Value, ManagerError> {
    let live = rules(client, base).await?;
    Ok(json!(live.iter().take(declared).collect::<Vec<_>>()))
}

/// Puts the `declared` rules as a block on top of the list at `base`, keeping every other rule below it.
pub(crate) async fn converge_block(
    client: &Client,
    base: &str,
    declared: &[Value],
) -> Result<(), ManagerError> {
    let live = rules(client, base).await?;
    let wanted = arranged(&live, declared);
    converge_rules(client, base, &live, &wanted).await?;
    Ok(())
}

/// The live list with the declared block on top and every other rule after it, in its live order.
fn arranged(live: &[Value], declared: &[Value]) -> Vec<Value> {
    let mut unclaimed: Vec<&Value> = declared.iter().collect();
    let mut others = Vec::new();
    for rule in live {
        match unclaimed.iter().position(|candidate| *candidate == rule) {
            Some(index) => {
                unclaimed.remove(index);
            }
            None => others.push(rule.clone()),
        }
    }
    declared.iter().cloned().chain(others).collect()
}

/// Converges the rules first, then the options, so a firewall turned on never runs without its rules.
pub(crate) async fn apply(
    client: &Client,
    firewall: &HostFirewall,
    fields: &[&str],
) -> Result<(), ManagerError> {
    if fields.contains(&"rules") {
        converge_block(client, BASE, &declared_rules(firewall)).await?;
    }
    let mut form = Form::new();
    let mut options = false;
    if let Some(enabled) = firewall.enabled.filter(|_| fields.contains(&"enabled")) {
        form = form.flag("enable", enabled);
        options = true;
    }
    for (key, declared) in [
        ("policy_in", firewall.default_input_policy),
        ("policy_out", firewall.default_output_policy),
    ] {
        if let Some(action) = declared.filter(|_| fields.contains(&key)) {
            form = form.text(key, policy(action));
            options = true;
        }
    }
    if options {
        let _: Value = client.put("/cluster/firewall/options", &form).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_of_others_go_below_the_declared_block_in_their_order() {
        let rule = |port: &str| json!({"type": "in", "action": "ACCEPT", "dport": port, "enable": 1});
        let live = [rule("1"), rule("22"), rule("2"), rule("8006")];
        let declared = [rule("8006"), rule("22")];
        assert_eq!(
            arranged(&live, &declared),
            [rule("8006"), rule("22"), rule("1"), rule("2")]
        );
    }
}
