//! `host/access/acl`: the declared ACL entries, one field per path.
//!
//! An entry is a role on a path for one user, group or token, propagated or not. A declared entry that is
//! missing, or whose `propagate` differs, is written with `PUT /access/acl` (one request per declared item
//! that needs it). Entries the configuration does not declare are never read as drift and never removed.

use std::collections::BTreeMap;

use phoenix_core::config::access::AccessAcl;
use phoenix_core::{AclEntries, ManagerError};
use phoenix_pve::{Client, Form};
use serde_json::{Value, json};

use super::flag_of;
use crate::node::Node;

/// One entry: `(type, ugid, roleid)`, and whether it propagates.
type Entry = ((String, String, String), bool);

/// The entries one declared item stands for.
fn entries_of(acl: &AccessAcl) -> Vec<Entry> {
    let subjects = acl
        .users
        .iter()
        .map(|user| ("user", user))
        .chain(acl.groups.iter().map(|group| ("group", group)))
        .chain(acl.tokens.iter().map(|token| ("token", token)));
    let mut entries = Vec::new();
    for (kind, ugid) in subjects {
        for role in &acl.roles {
            entries.push(((kind.to_owned(), ugid.clone(), role.clone()), acl.propagates()));
        }
    }
    entries
}

fn entry_value(((kind, ugid, role), propagate): &Entry) -> Value {
    json!({ "type": kind, "ugid": ugid, "roleid": role, "propagate": propagate })
}

/// The declared entries by path, each path's sorted.
fn declared_by_path(entries: &AclEntries) -> BTreeMap<String, Vec<Entry>> {
    let mut by_path: BTreeMap<String, Vec<Entry>> = BTreeMap::new();
    for acl in &entries.acls {
        by_path
            .entry(acl.normalized_path())
            .or_default()
            .extend(entries_of(acl));
    }
    for list in by_path.values_mut() {
        list.sort();
        list.dedup();
    }
    by_path
}

pub(super) fn desired(entries: &AclEntries) -> BTreeMap<String, Value> {
    declared_by_path(entries)
        .into_iter()
        .map(|(path, list)| (path, json!(list.iter().map(entry_value).collect::<Vec<_>>())))
        .collect()
}

/// The live entries as a map from `(path, type, ugid, roleid)` to `propagate`.
async fn live_entries(
    client: &Client,
) -> Result<BTreeMap<(String, String, String, String), bool>, ManagerError> {
    let live: Vec<Value> = client.get("/access/acl", &[]).await?;
    let text = |entry: &Value, key: &str| entry[key].as_str().unwrap_or_default().to_owned();
    Ok(live
        .iter()
        .map(|entry| {
            (
                (
                    text(entry, "path"),
                    text(entry, "type"),
                    text(entry, "ugid"),
                    text(entry, "roleid"),
                ),
                flag_of(entry, "propagate", true),
            )
        })
        .collect())
}

/// Per declared path, the declared entries that exist, as they are.
pub(super) async fn observe(
    node: &Node,
    entries: &AclEntries,
) -> Result<BTreeMap<String, Value>, ManagerError> {
    let live = live_entries(node.client()).await?;
    Ok(declared_by_path(entries)
        .into_iter()
        .map(|(path, list)| {
            let found: Vec<Value> = list
                .iter()
                .filter_map(|((kind, ugid, role), _)| {
                    let key = (path.clone(), kind.clone(), ugid.clone(), role.clone());
                    live.get(&key).map(|propagate| {
                        entry_value(&((kind.clone(), ugid.clone(), role.clone()), *propagate))
                    })
                })
                .collect();
            (path, json!(found))
        })
        .collect())
}

/// Writes each declared item on the paths in `fields` whose entries are not all there as declared. An
/// item Proxmox refuses (a user it does not know) does not keep the others from being written: the first
/// refusal is the resource's failure.
pub(super) async fn apply(
    client: &Client,
    entries: &AclEntries,
    fields: &[&str],
) -> Result<(), ManagerError> {
    let live = live_entries(client).await?;
    let mut refused = None;
    for acl in &entries.acls {
        let path = acl.normalized_path();
        if !fields.contains(&path.as_str()) {
            continue;
        }
        let complete = entries_of(acl).iter().all(|((kind, ugid, role), propagate)| {
            let key = (path.clone(), kind.clone(), ugid.clone(), role.clone());
            live.get(&key) == Some(propagate)
        });
        if complete {
            continue;
        }
        let mut form = Form::new()
            .text("path", &path)
            .text("roles", acl.roles.join(","))
            .flag("propagate", acl.propagates());
        for (key, names) in [
            ("users", &acl.users),
            ("groups", &acl.groups),
            ("tokens", &acl.tokens),
        ] {
            if !names.is_empty() {
                form = form.text(key, names.join(","));
            }
        }
        if let Err(error) = client.put::<Value>("/access/acl", &form).await {
            refused.get_or_insert(ManagerError::from(error));
        }
    }
    refused.map_or(Ok(()), Err)
}
