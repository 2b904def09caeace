//! `host/storage/<id>`: Proxmox storages, through `/storage`.
//!
//! A dataset's or an export's storage is registered when missing (`POST /storage`) with its type, its
//! settings (`pool` and `mountpoint` of a `zfspool`; `path` and `is_mountpoint` of a `dir`; `server`,
//! `export`, `path` and `options` of an `nfs`) and its declared content types. An existing storage gets one
//! `PUT` of what differs and Proxmox lets change (content, `mountpoint`, `options`); its type and location
//! are fixed once Proxmox has it, so a difference there is reported and left alone. Storages declared in
//! `proxmox_storages` exist already: their declared content types are added where missing, and the others
//! they have are kept. Phoenix removes no storage, and touches none it does not declare.

use std::collections::BTreeMap;

use phoenix_core::{Change, ManagerError, ProxmoxStorage};
use phoenix_pve::Form;
use serde_json::{Value, json};

use crate::node::Node;

/// The declared fields: type, settings, and content when declared.
pub(crate) fn desired(storage: &ProxmoxStorage) -> BTreeMap<String, Value> {
    let mut fields: BTreeMap<String, Value> = storage
        .settings
        .iter()
        .map(|(key, value)| (key.clone(), json!(value)))
        .collect();
    if let Some(kind) = &storage.kind {
        fields.insert("type".to_owned(), json!(kind));
    }
    if !storage.content.is_empty() {
        fields.insert("content".to_owned(), json!(storage.content.join(",")));
    }
    fields
}

/// What Proxmox has: the declared keys of the storage, content sorted; `None` when there is none.
pub(crate) async fn observe(
    node: &Node,
    storage: &ProxmoxStorage,
) -> Result<Option<BTreeMap<String, Value>>, ManagerError> {
    let all: Vec<Value> = node.client().get("/storage", &[]).await?;
    let Some(live) = all
        .iter()
        .find(|live| live["storage"].as_str() == Some(storage.id.as_str()))
    else {
        return Ok(None);
    };
    let mut fields = BTreeMap::new();
    for key in storage.settings.keys().map(String::as_str).chain(["type"]) {
        if let Some(value) = text(live, key) {
            fields.insert(key.to_owned(), json!(value));
        }
    }
    let mut content = live_content(live);
    if storage.kind.is_none() {
        // A storage Phoenix did not make: only whether it has the declared types counts.
        content.retain(|item| storage.content.contains(item));
    }
    fields.insert("content".to_owned(), json!(content.join(",")));
    Ok(Some(fields))
}

/// A storage's content types, sorted.
fn live_content(live: &Value) -> Vec<String> {
    let mut content: Vec<String> = live["content"]
        .as_str()
        .unwrap_or_default()
        .split(',')
        .filter(|item| !item.is_empty())
        .map(str::to_owned)
        .collect();
    content.sort_unstable();
    content
}

/// A storage option as text, whether Proxmox gives it as a string or a number.
fn text(live: &Value, key: &str) -> Option<String> {
    match &live[key] {
        Value::String(text) => Some(text.clone()),
        Value::Number(number) => Some(number.to_string()),
        _ => None,
    }
}

/// Registers a missing storage, or sets the content types of an existing one.
pub(crate) async fn apply(
    node: &Node,
    storage: &ProxmoxStorage,
    change: &Change,
) -> Result<(), ManagerError> {
    if change.action == phoenix_core::Action::Create {
        let Some(kind) = &storage.kind else {
            return Err(ManagerError::failed(format!(
                "storage {} is in proxmox_storages but Proxmox has none of that ID: add it in Proxmox (or \
                 declare it as a dataset's proxmox_storage_type), then run again",
                storage.id
            )));
        };
        let mut form = Form::new().text("storage", &storage.id).text("type", kind);
        for (key, value) in &storage.settings {
            form = form.text(key, value);
        }
        if !storage.content.is_empty() {
            form = form.text("content", storage.content.join(","));
        }
        node.client().post::<Value>("/storage", &form).await?;
        return Ok(());
    }
    // What Proxmox lets change: the content types, and settings such as a zfspool's mountpoint.
    let mut form = Form::new();
    let mut fixed = Vec::new();
    for field in &change.fields {
        let name = field.field.as_str();
        if FIXED.contains(&name) {
            let old = field.old.as_ref().and_then(Value::as_str).unwrap_or("(none)");
            fixed.push(format!("{name} is {old}"));
        } else if name == "content" {
            form = form.text("content", content_to_write(node, storage).await?.join(","));
        } else if let Some(value) = storage.settings.get(name) {
            form = form.text(name, value);
        }
    }
    if !form.pairs().is_empty() {
        node.client()
            .put::<Value>(&format!("/storage/{}", storage.id), &form)
            .await?;
    }
    if fixed.is_empty() {
        return Ok(());
    }
    Err(ManagerError::failed(format!(
        "storage {}: {}, not as declared; Proxmox cannot change a storage's type or location, and Phoenix \
         removes no storage: remove it in Proxmox if it may go, or declare what it has",
        storage.id,
        fixed.join(", ")
    )))
}

/// Options Proxmox fixes when a storage is made.
const FIXED: &[&str] = &["type", "pool", "path", "server", "export"];

/// The content types to write: the declared ones, and for a storage Phoenix did not make, those it has.
async fn content_to_write(node: &Node, storage: &ProxmoxStorage) -> Result<Vec<String>, ManagerError> {
    let mut content = storage.content.clone();
    if storage.kind.is_none() {
        let all: Vec<Value> = node.client().get("/storage", &[]).await?;
        let live = all
            .iter()
            .find(|live| live["storage"].as_str() == Some(storage.id.as_str()))
            .map(live_content)
            .unwrap_or_default();
        content.extend(live);
        content.sort_unstable();
        content.dedup();
    }
    Ok(content)
}
