//! `host/firewall/group/<name>`, `host/firewall/alias/<name>`, `host/firewall/ipset/<name>` and
//! `host/firewall/node`: the named objects of the cluster firewall, and the node's own firewall.
//!
//! Ownership follows what each object is:
//! - A declared security group belongs to the configuration whole: its rules are exactly the declared ones,
//!   in order, so a rule added by hand inside it is drift and is deleted (alone) by the next run. Rules are
//!   compared by content and position ([`converge_rule_list`]): a rule appended to the configuration is one
//!   insert (and one move), never a rewrite, and the group is never deleted and created again.
//! - An alias is its address: a changed one is updated in place. Its comment is compared only when declared.
//! - A declared IP set's entries are owned whole: a missing entry is added, a changed one updated, one that
//!   is not declared removed. Entries are a set: their order is not compared.
//! - The node's rules are a block on top of its list, like the cluster's; rules of others stay below.
//!
//! Nothing that is not declared is read or deleted: other groups, aliases and sets are left alone.

use std::collections::BTreeMap;

use phoenix_core::config::firewall::proxmox_cidr;
use phoenix_core::config::hypervisor::{IpSet, IpSetEntry, NodeFirewall};
use phoenix_core::{Action, Change, FirewallPart, ManagerError};
use phoenix_pve::firewall::{converge_rule_list, is_enabled, rule_list, rule_value};
use phoenix_pve::{Client, Form};
use serde_json::{Value, json};

use crate::firewall::{converge_block, observe_block};
use crate::node::Node;

const GROUPS: &str = "/cluster/firewall/groups";
const ALIASES: &str = "/cluster/firewall/aliases";
const IPSETS: &str = "/cluster/firewall/ipset";

/// The declared fields of a part.
pub(crate) fn desired(part: &FirewallPart) -> BTreeMap<String, Value> {
    let mut fields = BTreeMap::new();
    let comment = match part {
        FirewallPart::Group { group, .. } => {
            let rules: Vec<Value> = group.rules.iter().map(rule_value).collect();
            fields.insert("rules".to_owned(), json!(rules));
            group.comment.as_deref()
        }
        FirewallPart::Alias { alias, .. } => {
            fields.insert("cidr".to_owned(), json!(alias.cidr.trim()));
            alias.comment.as_deref()
        }
        FirewallPart::IpSet { set, .. } => {
            fields.insert("entries".to_owned(), json!(declared_entries(set)));
            set.comment.as_deref()
        }
        FirewallPart::Node(node) => {
            let rules: Vec<Value> = node.rules.iter().map(rule_value).collect();
            fields.insert("rules".to_owned(), json!(rules));
            fields.extend(node_options(node));
            None
        }
    };
    if let Some(comment) = comment.map(str::trim) {
        fields.insert("comment".to_owned(), json!(comment));
    }
    fields
}

/// What Proxmox has of a part; `None` when the group, alias or set does not exist.
pub(crate) async fn observe(
    node: &Node,
    part: &FirewallPart,
) -> Result<Option<BTreeMap<String, Value>>, ManagerError> {
    let client = node.client();
    let mut fields = BTreeMap::new();
    let comment = match part {
        FirewallPart::Group { name, .. } => {
            let Some(index) = find(client, GROUPS, "group", name).await? else {
                return Ok(None);
            };
            let rules = rule_list(client, &format!("{GROUPS}/{name}")).await?;
            fields.insert("rules".to_owned(), json!(rules));
            index
        }
        FirewallPart::Alias { name, .. } => {
            let Some(alias) = find(client, ALIASES, "name", name).await? else {
                return Ok(None);
            };
            fields.insert("cidr".to_owned(), alias["cidr"].clone());
            alias
        }
        FirewallPart::IpSet { name, .. } => {
            let Some(index) = find(client, IPSETS, "name", name).await? else {
                return Ok(None);
            };
            let live: Vec<Value> = client.get(&format!("{IPSETS}/{name}"), &[]).await?;
            fields.insert("entries".to_owned(), json!(live_entries(&live)));
            index
        }
        FirewallPart::Node(declared) => {
            let base = format!("/nodes/{}", node.name());
            let options: Value = client.get(&format!("{base}/firewall/options"), &[]).await?;
            fields.insert(
                "rules".to_owned(),
                observe_block(client, &base, declared.rules.len()).await?,
            );
            fields.extend(live_node_options(&options));
            return Ok(Some(fields));
        }
    };
    if let Some(comment) = comment.get("comment").and_then(Value::as_str) {
        fields.insert("comment".to_owned(), json!(comment));
    }
    Ok(Some(fields))
}

/// Carries out `change` on a part: creates what is missing, then changes only the fields that differ.
pub(crate) async fn apply(node: &Node, part: &FirewallPart, change: &Change) -> Result<(), ManagerError> {
    let client = node.client();
    let create = change.action == Action::Create;
    let changed = |field: &str| create || change.fields.iter().any(|changed| changed.field == field);
    match part {
        FirewallPart::Group { name, group } => {
            if changed("comment") {
                let index = Index::new(GROUPS, "group", name);
                index
                    .create_or_describe(client, group.comment.as_deref(), create)
                    .await?;
            }
            if changed("rules") {
                let path = format!("{GROUPS}/{name}");
                let live = rule_list(client, &path).await?;
                let wanted: Vec<Value> = group.rules.iter().map(rule_value).collect();
                converge_rule_list(client, &path, &live, &wanted).await?;
            }
        }
        FirewallPart::Alias { name, alias } => {
            let cidr = alias.cidr.trim();
            let declared = alias.comment.as_deref().map(str::trim);
            if create {
                let mut form = Form::new().text("name", name).text("cidr", cidr);
                if let Some(comment) = declared {
                    form = form.text("comment", comment);
                }
                let _: Value = client.post(ALIASES, &form).await?;
            } else {
                // An update sets the whole alias: a comment the configuration leaves out is sent as it is.
                let live = find(client, ALIASES, "name", name)
                    .await?
                    .ok_or_else(|| ManagerError::failed(format!("alias {name} went away during the run")))?;
                let live_name = live["name"].as_str().unwrap_or(name);
                let mut form = Form::new().text("cidr", cidr);
                if let Some(comment) = declared.or(live["comment"].as_str()) {
                    form = form.text("comment", comment);
                }
                let _: Value = client.put(&format!("{ALIASES}/{live_name}"), &form).await?;
            }
        }
        FirewallPart::IpSet { name, set } => {
            if changed("comment") {
                let index = Index::new(IPSETS, "name", name);
                index
                    .create_or_describe(client, set.comment.as_deref(), create)
                    .await?;
            }
            if changed("entries") {
                converge_entries(client, name, set).await?;
            }
        }
        FirewallPart::Node(declared) => {
            let base = format!("/nodes/{}", node.name());
            if changed("rules") {
                let rules: Vec<Value> = declared.rules.iter().map(rule_value).collect();
                converge_block(client, &base, &rules).await?;
            }
            let mut form = Form::new();
            let mut any = false;
            for (key, value) in node_options(declared).into_iter().filter(|(key, _)| changed(key)) {
                form = match (key.as_str(), &value) {
                    ("enabled", Value::Bool(on)) => form.flag("enable", *on),
                    (_, Value::Bool(on)) => form.flag(&key, *on),
                    (_, other) => form.text(&key, other.as_str().unwrap_or_default()),
                };
                any = true;
            }
            if any {
                let _: Value = client.put(&format!("{base}/firewall/options"), &form).await?;
            }
        }
    }
    Ok(())
}

/// A named entry of an index of groups or IP sets, which are created and described by a `POST` to the
/// index.
struct Index<'a> {
    list: &'static str,
    key: &'static str,
    name: &'a str,
}

impl<'a> Index<'a> {
    fn new(list: &'static str, key: &'static str, name: &'a str) -> Index<'a> {
        Index { list, key, name }
    }

    /// Creates the entry with `comment`, or (`create` false) sets the comment of the one there: Proxmox
    /// changes a comment through a "rename" to the same name.
    async fn create_or_describe(
        &self,
        client: &Client,
        comment: Option<&str>,
        create: bool,
    ) -> Result<(), ManagerError> {
        let mut form = Form::new().text(self.key, self.name);
        if !create {
            form = form.text("rename", self.name);
        }
        if let Some(comment) = comment.map(str::trim) {
            form = form.text("comment", comment);
        }
        let _: Value = client.post(self.list, &form).await?;
        Ok(())
    }
}

/// The entry of the index at `list` whose `key` is `name` (aliases without regard to case, as Proxmox
/// keeps them).
async fn find(client: &Client, list: &str, key: &str, name: &str) -> Result<Option<Value>, ManagerError> {
    let index: Vec<Value> = client.get(list, &[]).await?;
    let matches = |text: &str| {
        if list == ALIASES {
            text.eq_ignore_ascii_case(name)
        } else {
            text == name
        }
    };
    Ok(index
        .into_iter()
        .find(|entry| entry[key].as_str().is_some_and(matches)))
}

/// The node's options the configuration declares, by their field names.
fn node_options(node: &NodeFirewall) -> BTreeMap<String, Value> {
    let flags = [
        ("enabled", node.enabled),
        ("nosmurfs", node.nosmurfs),
        ("tcpflags", node.tcpflags),
    ];
    let levels = [
        ("log_level_in", &node.log_level_in),
        ("log_level_out", &node.log_level_out),
    ];
    flags
        .into_iter()
        .filter_map(|(key, value)| value.map(|value| (key.to_owned(), json!(value))))
        .chain(
            levels
                .into_iter()
                .filter_map(|(key, value)| value.as_ref().map(|value| (key.to_owned(), json!(value)))),
        )
        .collect()
}

/// The node's options as Proxmox reports them, in the vocabulary of [`node_options`]. An option Proxmox
/// does not report is left out: declaring it writes it once, and from then on it is reported.
fn live_node_options(options: &Value) -> BTreeMap<String, Value> {
    let mut fields = BTreeMap::new();
    for (field, key) in [
        ("enabled", "enable"),
        ("nosmurfs", "nosmurfs"),
        ("tcpflags", "tcpflags"),
    ] {
        if options.get(key).is_some_and(|value| !value.is_null()) {
            fields.insert(
                field.to_owned(),
                json!(is_enabled(&json!({ "enable": options[key] }))),
            );
        }
    }
    for key in ["log_level_in", "log_level_out"] {
        if let Some(level) = options[key].as_str() {
            fields.insert(key.to_owned(), json!(level));
        }
    }
    fields
}

/// An entry as Phoenix compares it: the address as Proxmox writes it, `nomatch`, and the comment if any.
fn entry_value(cidr: &str, nomatch: bool, comment: Option<&str>) -> Value {
    let mut entry = json!({ "cidr": cidr, "nomatch": nomatch });
    if let Some(comment) = comment.map(str::trim).filter(|comment| !comment.is_empty()) {
        entry["comment"] = json!(comment);
    }
    entry
}

/// The declared entries, sorted by address: a set has no order.
fn declared_entries(set: &IpSet) -> Vec<Value> {
    let mut entries: Vec<Value> = set
        .entries
        .iter()
        .map(|entry: &IpSetEntry| {
            entry_value(
                &proxmox_cidr(entry.cidr.trim()),
                entry.nomatch,
                entry.comment.as_deref(),
            )
        })
        .collect();
    entries.sort_by(|left, right| left["cidr"].as_str().cmp(&right["cidr"].as_str()));
    entries
}

/// The live entries, sorted by address.
fn live_entries(live: &[Value]) -> Vec<Value> {
    let mut entries: Vec<Value> = live
        .iter()
        .map(|entry| {
            let nomatch = entry["nomatch"].as_i64() == Some(1) || entry["nomatch"] == true;
            entry_value(
                entry["cidr"].as_str().unwrap_or_default(),
                nomatch,
                entry["comment"].as_str(),
            )
        })
        .collect();
    entries.sort_by(|left, right| left["cidr"].as_str().cmp(&right["cidr"].as_str()));
    entries
}

/// Takes the entries of the set `name` to the declared ones: adds the missing, updates the changed, removes
/// the ones not declared.
async fn converge_entries(client: &Client, name: &str, set: &IpSet) -> Result<(), ManagerError> {
    let path = format!("{IPSETS}/{name}");
    let live: Vec<Value> = client.get(&path, &[]).await?;
    let live = live_entries(&live);
    let wanted = declared_entries(set);
    let cidr_of = |entry: &Value| entry["cidr"].as_str().unwrap_or_default().to_owned();
    for entry in &live {
        let cidr = cidr_of(entry);
        if !wanted.iter().any(|candidate| cidr_of(candidate) == cidr) {
            let _: Value = client.delete(&format!("{path}/{}", encode(&cidr)), &[]).await?;
        }
    }
    for entry in &wanted {
        let cidr = cidr_of(entry);
        let mut form = Form::new().flag("nomatch", entry["nomatch"] == true);
        if let Some(comment) = entry["comment"].as_str() {
            form = form.text("comment", comment);
        }
        match live.iter().find(|candidate| cidr_of(candidate) == cidr) {
            Some(current) if current == entry => {}
            Some(_) => {
                let _: Value = client.put(&format!("{path}/{}", encode(&cidr)), &form).await?;
            }
            None => {
                let _: Value = client.post(&path, &form.text("cidr", &cidr)).await?;
            }
        }
    }
    Ok(())
}

/// A CIDR as one path segment (`10.0.0.0%2F24`).
fn encode(cidr: &str) -> String {
    cidr.replace('/', "%2F")
}
