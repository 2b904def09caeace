//! `host/timezone`: the node's timezone, through `/nodes/{node}/time`.

use std::collections::BTreeMap;

use phoenix_core::ManagerError;
use phoenix_pve::Form;
use serde_json::{Value, json};

use crate::node::Node;

/// The declared field.
pub(crate) fn desired(timezone: &str) -> BTreeMap<String, Value> {
    BTreeMap::from([("timezone".to_owned(), json!(timezone))])
}

/// What the node has set.
pub(crate) async fn observe(node: &Node) -> Result<BTreeMap<String, Value>, ManagerError> {
    let time: Value = node.client().get(&node.path("time"), &[]).await?;
    Ok(time
        .get("timezone")
        .map(|timezone| BTreeMap::from([("timezone".to_owned(), timezone.clone())]))
        .unwrap_or_default())
}

/// Sets it; Proxmox checks the name against the node's zone list.
pub(crate) async fn apply(node: &Node, timezone: &str) -> Result<(), ManagerError> {
    let form = Form::new().text("timezone", timezone);
    node.client().put::<Value>(&node.path("time"), &form).await?;
    Ok(())
}
