//! A live container as the `phoenix_lxc_configs.json` entry that declares it as it is (`phoenix import`):
//! the inverse of [`fields::desired_fields`] over what [`fields::observed_fields`] reads, in the key order
//! of hand-written configuration, so that the next plan finds nothing to change.

use std::collections::BTreeMap;

use phoenix_core::Fields;
use phoenix_core::import::{Doc, Imported};
use phoenix_pve::{import, props};
use serde_json::Value;

use crate::fields::LxcField;

/// The entry of container `vmid` on `node`, from its config as Proxmox returns it and its fields as read.
pub(crate) fn entry(
    vmid: u32,
    node: &str,
    config: &BTreeMap<String, Value>,
    fields: &Fields<LxcField>,
) -> Imported {
    let text = |key: &str| props::config_text(config, key);
    let number = |key: &str| text(key).and_then(|value| value.parse::<u64>().ok());
    let mut notes = Vec::new();
    let name = match text("hostname") {
        Some(name) => name,
        None => {
            notes.push(format!(
                "it has no hostname: declared as `ct{vmid}`, which the next run sets"
            ));
            format!("ct{vmid}")
        }
    };
    let (boot_order, boot_delay) = import::startup(config);
    let (storage_pool, storage_size_gb) = import::disk(text("rootfs").as_deref());
    let mut doc = Doc::object()
        .with("name", name)
        .with("adopted", true)
        .with("node", node)
        .with("start_at_boot", number("onboot") == Some(1))
        .with_some("boot_order", boot_order)
        .with_some("boot_delay", boot_delay)
        .with_some("memory_mb", number("memory"))
        .with_some("swap_mb", number("swap"))
        .with_some("cores", number("cores"))
        .with_some("storage_pool", storage_pool)
        .with_some("storage_size_gb", storage_size_gb);
    let net0 = text("net0").map(|net0| props::parse(&net0, "name"));
    match net0.as_ref().and_then(|net0| network(net0, config)) {
        Some(network) => doc = doc.with("network_config", network),
        None if net0.is_some() => notes.push(
            "its net0 has no IPv4 address the configuration can declare (`dhcp` or an address with its prefix): \
             `network_config` is left out, and so the NIC is not compared"
                .to_owned(),
        ),
        None => {}
    }
    if let Some(mac) = net0.as_ref().and_then(|net0| net0.get("hwaddr")) {
        doc = doc.with("mac_address", mac.to_ascii_uppercase());
    }
    let devices: Vec<&str> = fields
        .get(&LxcField::Devices)
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    let gpus: Vec<String> = devices
        .iter()
        .filter_map(|path| path.strip_prefix("/dev/nvidia"))
        .filter(|index| !index.is_empty() && index.chars().all(|c| c.is_ascii_digit()))
        .map(str::to_owned)
        .collect();
    if !gpus.is_empty() {
        doc = doc.with("gpu_assignment", gpus.join(","));
        notes.push(
            "it passes NVIDIA GPUs through: `gpu_assignment` is compared with the device nodes the node's driver \
             exposes, found on the host channel"
                .to_owned(),
        );
    }
    let others: Vec<&str> = devices
        .iter()
        .copied()
        .filter(|path| !path.starts_with("/dev/nvidia"))
        .collect();
    if !others.is_empty() {
        notes.push(format!(
            "its devices {} are not GPUs and cannot be declared; Phoenix leaves them as they are",
            others.join(", ")
        ));
    }
    doc = doc.with("unprivileged", number("unprivileged") == Some(1));
    if let Some(features) = text("features") {
        let options: Vec<Doc> = features
            .split(',')
            .map(str::trim)
            .filter(|item| item.contains('='))
            .map(Doc::from)
            .collect();
        if !options.is_empty() {
            doc = doc.with("pct_options", options);
        }
    }
    match fields.get(&LxcField::RawLxc).and_then(Value::as_object) {
        Some(raw) if !raw.is_empty() => {
            let lines: Vec<Doc> = raw
                .iter()
                .flat_map(|(key, values)| {
                    values
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(Value::as_str)
                        .map(move |value| Doc::from(format!("{key}={value}")))
                })
                .collect();
            doc = doc.with("lxc_options", lines);
        }
        Some(_) => {}
        None => notes.push(
            "raw `lxc.*` lines of its config file were not read (no host channel): they are not declared, and \
             stay as they are"
                .to_owned(),
        ),
    }
    let (volumes, binds) = mounts(fields, &mut notes);
    if !volumes.is_empty() {
        doc = doc.with("zfs_volumes", volumes);
    }
    if !binds.is_empty() {
        doc = doc.with("mount_points", binds);
    }
    let enabled = fields.get(&LxcField::FirewallEnabled) == Some(&Value::Bool(true));
    let rules = fields
        .get(&LxcField::FirewallRules)
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if fields.get(&LxcField::Status).and_then(Value::as_str) != Some("running") {
        notes.push(import::NOT_RUNNING.to_owned());
    }
    let firewall = import::firewall(enabled, &rules);
    let flag = net0
        .as_ref()
        .and_then(|net0| net0.get("firewall"))
        .map(String::as_str);
    notes.extend(import::nic_flag_note(&firewall, flag, enabled));
    doc = doc.with_some("firewall", firewall);
    Imported {
        id: vmid,
        entry: doc,
        notes,
    }
}

/// `network_config` from `net0` and the container's DNS keys; `None` when `net0` has no address the
/// configuration can declare.
fn network(net0: &BTreeMap<String, String>, config: &BTreeMap<String, Value>) -> Option<Doc> {
    let ip = net0.get("ip").filter(|ip| *ip == "dhcp" || ip.contains('/'))?;
    let vlan = net0.get("tag").and_then(|tag| tag.parse::<u16>().ok());
    Some(
        Doc::object()
            .with("name", net0.get("name").map_or("eth0", String::as_str))
            .with("bridge", net0.get("bridge").map_or("vmbr0", String::as_str))
            .with("ip", ip)
            .with_some("gw", net0.get("gw"))
            .with_some("nameservers", props::config_text(config, "nameserver"))
            .with_some("searchdomain", props::config_text(config, "searchdomain"))
            .with_some("vlan", vlan.map(u32::from)),
    )
}

/// Mount points as read: volumes on a storage (`zfs_volumes`) and host directories (`mount_points`), by
/// mount index.
fn mounts(fields: &Fields<LxcField>, notes: &mut Vec<String>) -> (Vec<Doc>, Vec<Doc>) {
    let mut read: Vec<(u64, &String, &serde_json::Map<String, Value>)> = fields
        .get(&LxcField::Mounts)
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
        .filter_map(|(path, entry)| {
            let entry = entry.as_object()?;
            Some((entry.get("index")?.as_u64()?, path, entry))
        })
        .collect();
    read.sort_by_key(|(index, ..)| *index);
    let (mut volumes, mut binds) = (Vec::new(), Vec::new());
    let mut names: Vec<String> = Vec::new();
    for (index, path, entry) in read {
        let read_only = entry.get("ro") == Some(&Value::Bool(true));
        if let Some(host_path) = entry.get("host_path").and_then(Value::as_str) {
            let mut bind = Doc::object()
                .with("host_path", host_path)
                .with("container_path", path);
            if read_only {
                bind = bind.with("read_only", true);
            }
            binds.push(bind);
            continue;
        }
        let storage = entry.get("storage").and_then(Value::as_str).unwrap_or_default();
        let size = entry
            .get("size_gb")
            .and_then(Value::as_f64)
            .map(|gib| gib.floor() as u64)
            .filter(|gib| *gib >= 1);
        let Some(size) = size else {
            notes.push(format!(
                "mount point mp{index} ({path}) has no size of a GiB or more: not declared, left as it is"
            ));
            continue;
        };
        if read_only {
            notes.push(format!(
                "volume mp{index} ({path}) is read-only, which `zfs_volumes` cannot say: the next plan makes it writable"
            ));
        }
        let name = volume_name(path, index, &names);
        names.push(name.clone());
        volumes.push(
            Doc::object()
                .with("name", name)
                .with("pool", storage)
                .with("size_gb", size)
                .with("mount_point", path),
        );
    }
    (volumes, binds)
}

/// A name for a volume, unique in its container: the last part of its mount path, or `mp<index>`.
fn volume_name(path: &str, index: u64, taken: &[String]) -> String {
    let base: String = path
        .rsplit('/')
        .find(|part| !part.is_empty())
        .unwrap_or_default()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '-'
            }
        })
        .collect();
    if base.is_empty() || taken.contains(&base) {
        format!("mp{index}")
    } else {
        base
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use phoenix_core::config::ContainerConfig;

    use crate::fields::{ObservedFirewall, compare, desired_fields, observed_fields};

    fn config(value: Value) -> BTreeMap<String, Value> {
        serde_json::from_value(value).expect("a map")
    }

    #[test]
    fn a_container_reads_back_as_the_entry_that_declares_it() {
        let config = config(json!({
            "hostname": "web", "memory": 2048, "swap": 512, "cores": 2, "onboot": 1,
            "startup": "order=3,up=10", "unprivileged": 1, "features": "nesting=1,keyctl=1",
            "rootfs": "local-lvm:vm-105-disk-0,size=8G",
            "net0": "name=eth0,bridge=vmbr1,firewall=1,hwaddr=bc:24:11:00:00:01,ip=10.0.0.5/24,gw=10.0.0.1,tag=20,type=veth",
            "nameserver": "1.1.1.1", "searchdomain": "lab.example",
            "mp0": "/srv/media,mp=/media,ro=1", "mp1": "tank:subvol-105-disk-1,mp=/var/lib/data,size=16G",
            "tags": "web"
        }));
        let firewall = ObservedFirewall {
            enabled: true,
            rules: vec![json!({"type": "in", "action": "ACCEPT", "macro": "SSH", "enable": 1})],
        };
        let mut fields = observed_fields(&config, "running", &["before".to_owned()], &firewall, None);
        fields.insert(LxcField::Node, json!("pve1"));
        let imported = entry(105, "pve1", &config, &fields);
        assert_eq!(
            imported.entry.to_value(),
            json!({
                "name": "web", "adopted": true, "node": "pve1", "start_at_boot": true, "boot_order": 3,
                "boot_delay": 10, "memory_mb": 2048, "swap_mb": 512, "cores": 2, "storage_pool": "local-lvm",
                "storage_size_gb": 8,
                "network_config": {"name": "eth0", "bridge": "vmbr1", "ip": "10.0.0.5/24", "gw": "10.0.0.1",
                                   "nameservers": "1.1.1.1", "searchdomain": "lab.example", "vlan": 20},
                "mac_address": "BC:24:11:00:00:01", "unprivileged": true, "pct_options": ["nesting=1", "keyctl=1"],
                "zfs_volumes": [{"name": "data", "pool": "tank", "size_gb": 16, "mount_point": "/var/lib/data"}],
                "mount_points": [{"host_path": "/srv/media", "container_path": "/media", "read_only": true}],
                "firewall": {"enabled": true, "rules": [{"type": "in", "action": "ACCEPT", "macro": "SSH"}]}
            })
        );
        let keys: Vec<&str> = match &imported.entry {
            Doc::Object(members) => members.iter().map(|(key, _)| key.as_str()).collect(),
            _ => unreachable!(),
        };
        assert_eq!(&keys[..3], ["name", "adopted", "node"]);
        assert_eq!(imported.notes.len(), 1, "{:?}", imported.notes);
        assert!(imported.notes[0].contains("lxc.*"), "{:?}", imported.notes);
        // What the entry declares is what was read, except the owner tag `--adopt` adds.
        let container: ContainerConfig = serde_json::from_value(imported.entry.to_value()).expect("an entry");
        let changed: Vec<LxcField> = compare(&desired_fields(&container, None, None), &fields)
            .into_iter()
            .map(|change| change.field)
            .collect();
        assert_eq!(changed, [LxcField::Owned]);
    }

    #[test]
    fn what_the_configuration_cannot_say_is_noted() {
        let config = config(json!({
            "net0": "name=eth0,bridge=vmbr0,ip=manual", "dev0": "/dev/ttyUSB0", "dev1": "/dev/nvidia0",
            "mp0": "tank:subvol-1-disk-1,mp=/a,size=512M"
        }));
        let firewall = ObservedFirewall {
            enabled: false,
            rules: Vec::new(),
        };
        let mut fields = observed_fields(&config, "stopped", &[], &firewall, None);
        fields.insert(LxcField::RawLxc, json!({"lxc.apparmor.profile": ["unconfined"]}));
        let imported = entry(7, "pve1", &config, &fields);
        let value = imported.entry.to_value();
        assert_eq!(value["name"], "ct7");
        assert_eq!(value["gpu_assignment"], "0");
        assert_eq!(value["lxc_options"], json!(["lxc.apparmor.profile=unconfined"]));
        assert!(
            value.get("network_config").is_none() && value.get("firewall").is_none(),
            "{value}"
        );
        let notes = imported.notes.join("\n");
        for expected in ["hostname", "net0", "/dev/ttyUSB0", "GPUs", "mp0", "not running"] {
            assert!(notes.contains(expected), "{expected}: {notes}");
        }
    }

    #[test]
    fn volume_names_are_unique_in_their_container() {
        assert_eq!(volume_name("/var/lib/data", 1, &[]), "data");
        assert_eq!(volume_name("/srv/data", 2, &["data".to_owned()]), "mp2");
        assert_eq!(volume_name("/", 0, &[]), "mp0");
        assert_eq!(volume_name("/opt/my app", 3, &[]), "my-app");
    }
}
