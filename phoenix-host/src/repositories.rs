//! `host/apt/repositories`: which of Proxmox's standard repositories are on, through
//! `/nodes/{node}/apt/repositories`.
//!
//! Proxmox names its standard repositories by handle: `enterprise`, `no-subscription` and `test` for
//! Proxmox VE, `ceph-<release>-<channel>` for Ceph, and lists, for each, whether an entry of the node's
//! APT files is that repository and is enabled. The step turns the declared channel on (Proxmox adds the
//! entry, or enables the one there) and the other channels off (their entries are disabled, never
//! deleted); without a declared Ceph channel every Ceph repository is turned off. Debian's own
//! repositories and any other entry are left as they are. After a change the node's package lists are
//! refreshed (`POST /nodes/{node}/apt/update`).

use std::collections::{BTreeMap, BTreeSet};

use phoenix_core::config::hypervisor::RepositoryChannel;
use phoenix_core::engine::journal;
use phoenix_core::{AptRepositories, ManagerError};
use phoenix_pve::{Form, Method};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::node::Node;

/// What a group of channels shows when none is on.
const OFF: &str = "off";

/// The declared fields: `proxmox` when declared, and `ceph` always (`off` unless declared).
pub(crate) fn desired(declared: &AptRepositories) -> BTreeMap<String, Value> {
    let mut fields = BTreeMap::new();
    if let Some(channel) = declared.proxmox {
        fields.insert("proxmox".to_owned(), json!(channel.as_str()));
    }
    let ceph = declared.ceph.map_or(OFF, RepositoryChannel::as_str);
    fields.insert("ceph".to_owned(), json!(ceph));
    fields
}

/// The answer of `GET /nodes/{node}/apt/repositories`, as far as the step reads it.
#[derive(Debug, Deserialize)]
struct Listing {
    files: Vec<File>,
    #[serde(rename = "standard-repos")]
    standard: Vec<Standard>,
}

#[derive(Debug, Deserialize)]
struct File {
    path: String,
    repositories: Vec<Entry>,
}

#[derive(Debug, Deserialize)]
struct Entry {
    #[serde(rename = "URIs", default)]
    uris: Vec<String>,
    #[serde(rename = "Components", default)]
    components: Vec<String>,
    #[serde(rename = "Enabled")]
    enabled: bool,
}

#[derive(Debug, Deserialize)]
struct Standard {
    handle: String,
    /// On when an enabled entry is this repository; off when only disabled ones are; absent when none is.
    status: Option<bool>,
}

/// A standard repository, read from its handle.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Handle {
    /// `None` for Proxmox VE, the release for Ceph (`squid`).
    ceph: Option<String>,
    channel: String,
}

impl Handle {
    fn parse(handle: &str) -> Option<Handle> {
        if let Some(rest) = handle.strip_prefix("ceph-") {
            let (release, channel) = rest.split_once('-')?;
            return Some(Handle {
                ceph: Some(release.to_owned()),
                channel: channel.to_owned(),
            });
        }
        Some(Handle {
            ceph: None,
            channel: handle.to_owned(),
        })
    }

    /// Whether an entry of the APT files is this repository: its URI (whatever the scheme) and component.
    fn is(&self, entry: &Entry) -> bool {
        let host = if self.channel == "enterprise" {
            "enterprise.proxmox.com"
        } else {
            "download.proxmox.com"
        };
        let (path, components): (String, &[&str]) = match &self.ceph {
            Some(release) => (format!("debian/ceph-{release}"), &[self.channel.as_str()]),
            None => match self.channel.as_str() {
                "enterprise" => ("debian/pve".to_owned(), &["pve-enterprise"]),
                "no-subscription" => ("debian/pve".to_owned(), &["pve-no-subscription"]),
                // `pvetest` until Proxmox VE 8, `pve-test` since 9.
                _ => ("debian/pve".to_owned(), &["pve-test", "pvetest"]),
            },
        };
        let wanted = format!("{host}/{path}");
        entry.uris.iter().any(|uri| {
            let bare = uri.split_once("://").map_or(uri.as_str(), |(_, rest)| rest);
            bare.trim_end_matches('/') == wanted
        }) && entry
            .components
            .iter()
            .any(|component| components.contains(&component.as_str()))
    }
}

async fn listing(node: &Node) -> Result<Listing, ManagerError> {
    let value: Value = node.client().get(&node.path("apt/repositories"), &[]).await?;
    serde_json::from_value(value).map_err(|error| {
        ManagerError::failed(format!(
            "node {}: unexpected answer from /apt/repositories: {error}",
            node.name()
        ))
    })
}

/// The channels that are on, per group, as the fields show them: `enterprise`, `no-subscription, test`
/// or `off`.
fn on_channels(listing: &Listing) -> BTreeMap<String, Value> {
    let mut proxmox = BTreeSet::new();
    let mut ceph = BTreeSet::new();
    for standard in listing
        .standard
        .iter()
        .filter(|standard| standard.status == Some(true))
    {
        let Some(handle) = Handle::parse(&standard.handle) else {
            continue;
        };
        match handle.ceph {
            Some(_) => ceph.insert(handle.channel),
            None => proxmox.insert(handle.channel),
        };
    }
    let shown = |channels: BTreeSet<String>| {
        if channels.is_empty() {
            json!(OFF)
        } else {
            json!(channels.into_iter().collect::<Vec<_>>().join(", "))
        }
    };
    BTreeMap::from([
        ("proxmox".to_owned(), shown(proxmox)),
        ("ceph".to_owned(), shown(ceph)),
    ])
}

/// What the node has on.
pub(crate) async fn observe(node: &Node) -> Result<BTreeMap<String, Value>, ManagerError> {
    Ok(on_channels(&listing(node).await?))
}

/// The Ceph release a declared Ceph channel is taken from: the one the node's files already use, else the
/// newest the node offers (Ceph names its releases in alphabetical order).
fn ceph_release(listing: &Listing) -> Option<String> {
    let configured = listing
        .standard
        .iter()
        .filter(|standard| standard.status.is_some())
        .filter_map(|standard| Handle::parse(&standard.handle))
        .filter_map(|handle| handle.ceph)
        .max();
    configured.or_else(|| {
        listing
            .standard
            .iter()
            .filter_map(|standard| Handle::parse(&standard.handle)?.ceph)
            .max()
    })
}

/// Turns the declared channels on and the others off, then refreshes the package lists.
pub(crate) async fn apply(node: &Node, declared: &AptRepositories) -> Result<(), ManagerError> {
    let listing = listing(node).await?;
    let release = ceph_release(&listing);
    if let Some(channel) = declared.ceph
        && release.is_none()
    {
        return Err(ManagerError::failed(format!(
            "node {} offers no Ceph repository, so `ceph_repository: \"{}\"` cannot be turned on",
            node.name(),
            channel.as_str()
        )));
    }
    let wanted = |handle: &Handle| match &handle.ceph {
        None => declared.proxmox.map(|channel| channel.as_str() == handle.channel),
        Some(ceph) => Some(
            declared
                .ceph
                .is_some_and(|channel| channel.as_str() == handle.channel && Some(ceph) == release.as_ref()),
        ),
    };
    let mut changed = false;
    // Off first, so that two channels are never on together through a failure half-way.
    for standard in &listing.standard {
        let Some(handle) = Handle::parse(&standard.handle) else {
            continue;
        };
        if standard.status == Some(true) && wanted(&handle) == Some(false) {
            changed |= disable(node, &listing, &standard.handle, &handle).await?;
        }
    }
    for standard in &listing.standard {
        let Some(handle) = Handle::parse(&standard.handle) else {
            continue;
        };
        if standard.status != Some(true) && wanted(&handle) == Some(true) {
            let form = Form::new().text("handle", standard.handle.as_str());
            node.client()
                .put::<Value>(&node.path("apt/repositories"), &form)
                .await?;
            journal::done(format!("turned the {} repository on", standard.handle));
            changed = true;
        }
    }
    if changed {
        node.client()
            .run_task(Method::POST, &node.path("apt/update"), &Form::new())
            .await?;
        journal::done("refreshed the package lists");
    }
    Ok(())
}

/// Disables every enabled entry that is `handle`; whether any was.
async fn disable(node: &Node, listing: &Listing, name: &str, handle: &Handle) -> Result<bool, ManagerError> {
    let mut any = false;
    for file in &listing.files {
        for (index, entry) in file.repositories.iter().enumerate() {
            if !entry.enabled || !handle.is(entry) {
                continue;
            }
            let form = Form::new()
                .text("path", file.path.as_str())
                .number("index", i64::try_from(index).unwrap_or(i64::MAX))
                .flag("enabled", false);
            node.client()
                .post::<Value>(&node.path("apt/repositories"), &form)
                .await?;
            journal::done(format!(
                "turned the {name} repository off ({} entry {index})",
                file.path
            ));
            any = true;
        }
    }
    Ok(any)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(uri: &str, component: &str) -> Entry {
        Entry {
            uris: vec![uri.to_owned()],
            components: vec![component.to_owned()],
            enabled: true,
        }
    }

    #[test]
    fn handles_know_their_entries_by_uri_and_component_whatever_the_scheme() {
        let no_subscription = Handle::parse("no-subscription").unwrap();
        assert!(no_subscription.is(&entry(
            "http://download.proxmox.com/debian/pve/",
            "pve-no-subscription"
        )));
        assert!(no_subscription.is(&entry(
            "https://download.proxmox.com/debian/pve",
            "pve-no-subscription"
        )));
        assert!(!no_subscription.is(&entry(
            "https://enterprise.proxmox.com/debian/pve",
            "pve-enterprise"
        )));
        let test = Handle::parse("test").unwrap();
        assert!(test.is(&entry("http://download.proxmox.com/debian/pve", "pvetest")));
        let ceph = Handle::parse("ceph-squid-enterprise").unwrap();
        assert_eq!(ceph.ceph.as_deref(), Some("squid"));
        assert!(ceph.is(&entry(
            "https://enterprise.proxmox.com/debian/ceph-squid",
            "enterprise"
        )));
        assert!(!ceph.is(&entry(
            "https://enterprise.proxmox.com/debian/ceph-reef",
            "enterprise"
        )));
    }
}
