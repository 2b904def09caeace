//! What `phoenix import` shares between containers and VMs: which live guests to import (those no
//! configuration declares, narrowed by the command line's filters), and the parts of an entry both kinds
//! write the same way (boot order, firewall).

use std::collections::BTreeMap;
use std::ops::RangeInclusive;

use phoenix_core::import::Doc;
use phoenix_core::{Estate, GuestKind};
use serde_json::Value;

use crate::client::ClusterResource;
use crate::props;

/// The note for a guest that is not running.
pub const NOT_RUNNING: &str = "it is not running: the guests Phoenix manages run, so the next run starts it; leave \
                               it out of the import if it must stay stopped";

/// Which guests to import; an empty list does not narrow.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImportFilter {
    /// Exactly these IDs.
    pub ids: Vec<u32>,
    /// IDs in one of these ranges.
    pub ranges: Vec<RangeInclusive<u32>>,
    /// Guests on one of these nodes.
    pub nodes: Vec<String>,
    /// Guests carrying one of these tags.
    pub tags: Vec<String>,
}

impl ImportFilter {
    /// Whether `guest` passes every filter given: an ID filter passes when the ID is listed or in a range.
    pub fn admits(&self, guest: &Candidate) -> bool {
        let by_id = (self.ids.is_empty() && self.ranges.is_empty())
            || self.ids.contains(&guest.id)
            || self.ranges.iter().any(|range| range.contains(&guest.id));
        let by_node = self.nodes.is_empty() || self.nodes.contains(&guest.node);
        let by_tag = self.tags.is_empty() || guest.tags.iter().any(|tag| self.tags.contains(tag));
        by_id && by_node && by_tag
    }
}

/// A live guest that may be imported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    /// The CTID or VM ID.
    pub id: u32,
    /// Container or VM.
    pub kind: GuestKind,
    /// The node it is on.
    pub node: String,
    /// Its name, as the cluster lists it.
    pub name: String,
    /// `running`, `stopped`, ...
    pub status: String,
    /// Its tags.
    pub tags: Vec<String>,
    /// Whether it is a template.
    pub template: bool,
}

/// The guests of the cluster listing that no configuration declares and that pass `filter`, in ID order,
/// and, for each guest passed over that the operator may have meant, why.
pub fn candidates(
    resources: &[ClusterResource],
    estate: &Estate,
    filter: &ImportFilter,
) -> (Vec<Candidate>, Vec<(u32, String)>) {
    let managed_nodes = estate
        .files()
        .hypervisor
        .proxmox
        .as_ref()
        .map(|proxmox| proxmox.nodes.clone())
        .unwrap_or_default();
    let mut found = Vec::new();
    let mut passed_over = Vec::new();
    for resource in resources {
        let kind = match resource.kind.as_str() {
            "lxc" => GuestKind::Container,
            "qemu" => GuestKind::Vm,
            _ => continue,
        };
        let (Some(id), Some(node)) = (resource.vmid, resource.node.clone()) else {
            continue;
        };
        let candidate = Candidate {
            id,
            kind,
            node,
            name: resource.name.clone().unwrap_or_default(),
            status: resource.status.clone().unwrap_or_else(|| "unknown".to_owned()),
            tags: resource
                .tags
                .as_deref()
                .map(|tags| crate::split_tags(tags).map(str::to_owned).collect())
                .unwrap_or_default(),
            template: resource.template == Some(1),
        };
        if estate.guest(id).is_some() || !filter.admits(&candidate) {
            continue;
        }
        if !managed_nodes.is_empty() && !managed_nodes.contains(&candidate.node) {
            passed_over.push((
                id,
                format!("it is on {}, which `proxmox.nodes` does not list", candidate.node),
            ));
            continue;
        }
        if candidate.kind == GuestKind::Container && candidate.template {
            passed_over.push((
                id,
                "it is a container template, which the LXC file cannot declare; its clones can be imported"
                    .to_owned(),
            ));
            continue;
        }
        found.push(candidate);
    }
    found.sort_by_key(|candidate| candidate.id);
    passed_over.sort();
    (found, passed_over)
}

/// `boot_order` and `boot_delay` from a guest's `startup` property string.
pub fn startup(config: &BTreeMap<String, Value>) -> (Option<u32>, Option<u32>) {
    let Some(text) = props::config_text(config, "startup") else {
        return (None, None);
    };
    let parsed = props::parse(&text, "order");
    let number = |key: &str| parsed.get(key).and_then(|value| value.parse().ok());
    (number("order"), number("up"))
}

/// The `firewall` section of a guest whose firewall is on or has rules (none otherwise: a guest without
/// one has its firewall left as it is), with the rules as read.
pub fn firewall(enabled: bool, rules: &[Value]) -> Option<Doc> {
    if !enabled && rules.is_empty() {
        return None;
    }
    Some(
        Doc::object()
            .with("enabled", enabled)
            .with("rules", rules.iter().map(rule).collect::<Vec<Doc>>()),
    )
}

/// The note for a guest whose firewall section is declared while its NIC's `firewall` flag (`flag`, as
/// read) does not say the same as its firewall's `enable` option: the next run sets the flag.
pub fn nic_flag_note(section: &Option<Doc>, flag: Option<&str>, enabled: bool) -> Option<String> {
    let agrees = flag.map(|flag| flag == "1") == Some(enabled);
    (section.is_some() && !agrees).then(|| {
        format!(
            "its NIC's firewall flag is {} while its firewall is {}: the next run turns the flag {}",
            flag.map_or("unset", |flag| if flag == "1" { "on" } else { "off" }),
            if enabled { "on" } else { "off" },
            if enabled { "on" } else { "off" }
        )
    })
}

/// A rule as read from Proxmox (reduced to the compared keys) in the configuration's key names.
fn rule(read: &Value) -> Doc {
    let text = |key: &str| read.get(key).and_then(Value::as_str).map(str::to_owned);
    let mut doc = Doc::object()
        .with("type", text("type").unwrap_or_else(|| "in".to_owned()))
        .with("action", text("action").unwrap_or_default());
    for (from, to) in [
        ("macro", "macro"),
        ("proto", "proto"),
        ("dport", "port"),
        ("sport", "sport"),
        ("source", "source"),
        ("dest", "dest"),
        ("comment", "comment"),
    ] {
        doc = doc.with_some(to, text(from));
    }
    if read.get("enable").and_then(Value::as_i64) == Some(0) {
        doc = doc.with("enabled", false);
    }
    doc
}

/// The storage and whole GiB of a disk's property string (`tank:vm-100-disk-0,size=8G`), as
/// `storage_pool` and a size declare them.
pub fn disk(drive: Option<&str>) -> (Option<String>, Option<u64>) {
    let Some(parsed) = drive.map(|drive| props::parse(drive, "volume")) else {
        return (None, None);
    };
    let storage = parsed
        .get("volume")
        .and_then(|volume| volume.split_once(':'))
        .map(|(storage, _)| storage.to_owned());
    (storage, parsed.get("size").and_then(|size| whole_gib(size)))
}

/// Whole GiB of a size Proxmox writes (`8G`, `512M`), rounded down so that the declared size is never
/// more than the disk has (sizes are minimums); `None` below one GiB.
pub fn whole_gib(size: &str) -> Option<u64> {
    props::size_gib(size)
        .map(|gib| gib.floor() as u64)
        .filter(|gib| *gib >= 1)
}

#[cfg(test)]
mod tests {
    use phoenix_core::{CheckOptions, FileKind, SourceFile};
    use serde_json::json;

    use super::*;

    fn resource(kind: &str, vmid: u32, node: &str, tags: Option<&str>) -> ClusterResource {
        ClusterResource {
            id: format!("{kind}/{vmid}"),
            kind: kind.to_owned(),
            node: Some(node.to_owned()),
            vmid: Some(vmid),
            name: Some(format!("g{vmid}")),
            status: Some("running".to_owned()),
            tags: tags.map(str::to_owned),
            ..ClusterResource::default()
        }
    }

    fn estate(hypervisor: Value, lxc: Value, vm: Value) -> Estate {
        let sources = [
            (FileKind::Hypervisor, hypervisor),
            (FileKind::Lxc, lxc),
            (FileKind::Vm, vm),
        ]
        .into_iter()
        .map(|(kind, value)| SourceFile::new(kind, kind.file_name(), value.to_string()))
        .collect();
        phoenix_core::validate(sources, &CheckOptions::default())
            .into_estate()
            .unwrap_or_else(|problems| panic!("{problems:#?}"))
    }

    #[test]
    fn filters_narrow_by_id_or_range_then_node_and_tag() {
        let candidate = |id: u32, node: &str, tags: &[&str]| Candidate {
            id,
            kind: GuestKind::Container,
            node: node.to_owned(),
            name: String::new(),
            status: "running".to_owned(),
            tags: tags.iter().map(|tag| (*tag).to_owned()).collect(),
            template: false,
        };
        let filter = ImportFilter {
            ids: vec![105],
            ranges: vec![200..=299],
            ..ImportFilter::default()
        };
        assert!(filter.admits(&candidate(105, "pve1", &[])));
        assert!(filter.admits(&candidate(250, "pve1", &[])));
        assert!(!filter.admits(&candidate(300, "pve1", &[])));
        let filter = ImportFilter {
            nodes: vec!["pve2".into()],
            tags: vec!["web".into()],
            ..ImportFilter::default()
        };
        assert!(filter.admits(&candidate(1, "pve2", &["db", "web"])));
        assert!(!filter.admits(&candidate(1, "pve1", &["web"])));
        assert!(!filter.admits(&candidate(1, "pve2", &["db"])));
        assert!(ImportFilter::default().admits(&candidate(1, "pve9", &[])));
    }

    #[test]
    fn declared_guests_are_left_out_and_templates_and_unlisted_nodes_are_said() {
        let estate = estate(
            json!({"proxmox": {"endpoint": "https://pve:8006", "nodes": ["pve1", "pve2"]}}),
            json!({"lxc_configs": {"101": {"name": "declared", "node": "pve1", "adopted": true}}}),
            json!({"vms": []}),
        );
        let mut template = resource("lxc", 900, "pve1", None);
        template.template = Some(1);
        let resources = [
            resource("lxc", 101, "pve1", None),
            resource("qemu", 300, "pve2", Some("web;phoenix")),
            resource("lxc", 102, "pve3", None),
            template,
            resource("lxc", 103, "pve1", None),
            ClusterResource {
                id: "node/pve1".into(),
                kind: "node".into(),
                ..ClusterResource::default()
            },
        ];
        let (found, passed_over) = candidates(&resources, &estate, &ImportFilter::default());
        let ids: Vec<(u32, GuestKind)> = found.iter().map(|found| (found.id, found.kind)).collect();
        assert_eq!(ids, [(103, GuestKind::Container), (300, GuestKind::Vm)]);
        assert_eq!(found[1].tags, ["web", "phoenix"]);
        let reasons: Vec<u32> = passed_over.iter().map(|(id, _)| *id).collect();
        assert_eq!(reasons, [102, 900]);
        assert!(passed_over[0].1.contains("pve3"), "{passed_over:?}");
    }

    #[test]
    fn rules_read_back_in_the_configuration_key_names() {
        let section = firewall(
            true,
            &[
                json!({"type": "in", "action": "ACCEPT", "proto": "tcp", "dport": "22", "enable": 1}),
                json!({"type": "group", "action": "web", "enable": 0}),
            ],
        )
        .expect("a section");
        assert_eq!(
            section.to_value(),
            json!({"enabled": true, "rules": [
                {"type": "in", "action": "ACCEPT", "proto": "tcp", "port": "22"},
                {"type": "group", "action": "web", "enabled": false}
            ]})
        );
        assert_eq!(firewall(false, &[]), None);
        assert_eq!(whole_gib("8G"), Some(8));
        assert_eq!(whole_gib("1536M"), Some(1));
        assert_eq!(whole_gib("512M"), None);
    }
}
