//! `host/apparmor/<name>`: an AppArmor profile from the configuration directory's `apparmor/<name>`,
//! installed as `/etc/apparmor.d/<name>` and loaded, on the host channel.
//!
//! The installed file is compared by content. A new or changed profile is first written beside (under
//! `/run`) and checked by the node's own `apparmor_parser` without touching the kernel (`-QTK`); only a
//! profile that parses replaces the live file, so a bad one never reaches `/etc/apparmor.d`. It is then
//! loaded with `apparmor_parser -r`. Whether it is loaded is read from `aa-status --json`; on a node
//! whose kernel has no AppArmor (`aa-status` says the module is not loaded) the profile is installed and
//! the step fails saying it could not be loaded, without touching any other step.

use std::collections::BTreeMap;

use phoenix_core::ManagerError;
use phoenix_pve::host::sha256_hex;
use serde_json::{Value, json};

use crate::node::Node;

/// Where the node keeps its profiles.
const DIR: &str = "/etc/apparmor.d";

/// What the plan shows for a profile's text: a digest, short enough to read.
fn digest(text: &str) -> String {
    format!("sha256:{}", &sha256_hex(text.as_bytes())[..16])
}

/// The declared fields: the file's content, and the profile loaded.
pub(crate) fn desired(text: &str) -> BTreeMap<String, Value> {
    BTreeMap::from([
        ("content".to_owned(), json!(digest(text))),
        ("loaded".to_owned(), json!(true)),
    ])
}

/// What the node has: `None` when the file is not installed.
pub(crate) async fn observe(
    node: &Node,
    name: &str,
) -> Result<Option<BTreeMap<String, Value>>, ManagerError> {
    let Some(installed) = node.read_file(&format!("{DIR}/{name}")).await? else {
        return Ok(None);
    };
    Ok(Some(BTreeMap::from([
        ("content".to_owned(), json!(digest(&installed))),
        (
            "loaded".to_owned(),
            json!(loaded(node).await?.iter().any(|profile| profile == name)),
        ),
    ])))
}

/// The names of the profiles the kernel has loaded; none on a node without AppArmor.
async fn loaded(node: &Node) -> Result<Vec<String>, ManagerError> {
    let argv = ["aa-status", "--json"];
    let output = node.run(&argv, None).await?;
    if !output.success() {
        // 1: AppArmor is not enabled (or not in the kernel); nothing can be loaded.
        return if output.status == Some(1) {
            Ok(Vec::new())
        } else {
            Err(node.failure(&argv, &output))
        };
    }
    // Debian's aa-status 3.0 prints nothing, and exits 0, for `--json` where AppArmor is not present.
    if output.stdout.trim().is_empty() {
        return Ok(Vec::new());
    }
    let status: Value = serde_json::from_str(&output.stdout).map_err(|error| {
        ManagerError::failed(format!(
            "node {}: `aa-status --json` printed no JSON: {error}",
            node.name()
        ))
    })?;
    Ok(status
        .get("profiles")
        .and_then(Value::as_object)
        .map(|profiles| profiles.keys().cloned().collect())
        .unwrap_or_default())
}

/// Installs the profile where its file differs, checked first, and loads it.
pub(crate) async fn apply(node: &Node, name: &str, text: &str) -> Result<(), ManagerError> {
    let live = format!("{DIR}/{name}");
    if node.read_file(&live).await?.as_deref() != Some(text) {
        let candidate = format!("/run/phoenix-apparmor-{name}");
        node.write_file(&candidate, text, "0600", None).await?;
        let check = ["apparmor_parser", "-QTK", candidate.as_str()];
        let output = node.run(&check, None).await?;
        if !output.success() {
            node.run(&["rm", "-f", "--", &candidate], None).await?;
            return Err(node.failure(&check, &output));
        }
        node.change(
            &format!("installed {live}"),
            &["install", "-m", "0644", &candidate, &live],
            None,
        )
        .await?;
        node.run(&["rm", "-f", "--", &candidate], None).await?;
    }
    let enabled = node.run(&["aa-status", "--enabled"], None).await?;
    if !enabled.success() {
        return Err(ManagerError::failed(format!(
            "node {} has no AppArmor in its kernel (`aa-status --enabled` says so): {live} is installed but the \
             profile is not loaded, and containers that name it cannot start until the node runs with AppArmor",
            node.name()
        )));
    }
    node.change(
        &format!("loaded the AppArmor profile {name}"),
        &["apparmor_parser", "-r", "-W", &live],
        None,
    )
    .await
    .map(drop)
}
