//! A live VM as the `phoenix_vm_configs.json` entry that declares it as it is (`phoenix import`): the
//! inverse of [`fields::desired_fields`] over what [`fields::observed_fields`] reads, so that the next plan
//! finds nothing to change where the configuration can say what the VM is.

use std::collections::BTreeMap;

use phoenix_core::Fields;
use phoenix_core::import::{Doc, Imported};
use phoenix_pve::{import, props};
use serde_json::Value;

use crate::fields::{BOOT_DISKS, VmField};

/// The entry of VM `vmid` on `node`, from its config as Proxmox returns it and its fields as read.
pub(crate) fn entry(
    vmid: u32,
    node: &str,
    config: &BTreeMap<String, Value>,
    fields: &Fields<VmField>,
) -> Imported {
    let text = |key: &str| props::config_text(config, key);
    let number = |key: &str| text(key).and_then(|value| value.parse::<u64>().ok());
    let field_text = |field: VmField| fields.get(&field).and_then(Value::as_str);
    let mut notes = Vec::new();
    let name = match text("name") {
        Some(name) => name,
        None => {
            notes.push(format!(
                "it has no name: declared as `vm{vmid}`, which the next run sets"
            ));
            format!("vm{vmid}")
        }
    };
    let template = text("template").as_deref() == Some("1");
    let (boot_order, boot_delay) = import::startup(config);
    let (storage_pool, disk_size_gb) = import::disk(BOOT_DISKS.iter().find_map(|disk| text(disk)).as_deref());
    let net0 = fields.get(&VmField::Net0).and_then(Value::as_object);
    let net = |key: &str| net0.and_then(|net0| net0.get(key)).and_then(Value::as_str);
    let mut doc = Doc::object()
        .with("vmid", vmid)
        .with("name", name)
        .with("adopted", true)
        .with("node", node);
    if template {
        doc = doc.with("is_template", true);
    }
    doc = doc
        .with("start_at_boot", number("onboot") == Some(1))
        .with_some("boot_order", boot_order)
        .with_some("boot_delay", boot_delay)
        .with_some("cores", number("cores"))
        .with_some("memory_mb", number("memory"))
        .with_some("disk_size_gb", disk_size_gb)
        .with_some("storage_pool", storage_pool)
        // Declared always: a VM that names no bridge is compared with the default one.
        .with("network_bridge", net("bridge").unwrap_or("vmbr0"))
        .with_some("mac_address", net("macaddr"));
    if net0.is_none() {
        notes.push("it has no net0: the next run gives it a virtio NIC on the declared bridge".to_owned());
    }
    match network(fields, &mut notes) {
        Some(network) => doc = doc.with("network_config", network),
        None => {
            if fields.contains_key(&VmField::Nameserver) || fields.contains_key(&VmField::Searchdomain) {
                notes.push(
                    "its cloud-init DNS settings are not declared: without an IPv4 address in ipconfig0 there is \
                     no `network_config` to hold them, and they stay as they are"
                        .to_owned(),
                );
            }
        }
    }
    match field_text(VmField::Ciuser) {
        Some(username) => {
            let mut user = Doc::object().with("username", username);
            if fields.get(&VmField::Cipassword) == Some(&Value::Bool(true)) {
                let variable = format!("PHOENIX_VM_{vmid}_PASSWORD");
                notes.push(format!(
                    "its cloud-init password is set and Proxmox never shows it: `user_config.password` reads \
                     it from ${variable}, to be set before the next run"
                ));
                user = user.with("password", Doc::object().with("env", variable));
            }
            let keys: Vec<Doc> = field_text(VmField::Sshkeys)
                .into_iter()
                .flat_map(str::lines)
                .map(Doc::from)
                .collect();
            if !keys.is_empty() {
                user = user.with("ssh_public_keys", keys);
            }
            doc = doc.with("user_config", user);
        }
        None if fields.contains_key(&VmField::Sshkeys) => notes.push(
            "it has cloud-init SSH keys but no cloud-init user: `user_config` needs a username, so the keys \
             are not declared and stay as they are"
                .to_owned(),
        ),
        None => {}
    }
    let enabled = fields.get(&VmField::FirewallEnabled) == Some(&Value::Bool(true));
    let rules = fields
        .get(&VmField::FirewallRules)
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let firewall = import::firewall(enabled, &rules);
    notes.extend(import::nic_flag_note(&firewall, net("firewall"), enabled));
    doc = doc.with_some("firewall", firewall);
    if field_text(VmField::Agent) != Some("1") {
        notes.push(
            "its QEMU guest agent is off: Phoenix runs every VM with the agent, so the next run turns it on \
             (effective at the next start)"
                .to_owned(),
        );
    }
    if !template && field_text(VmField::Status) != Some("running") {
        notes.push(import::NOT_RUNNING.to_owned());
    }
    if text("cicustom").is_some() {
        notes.push(
            "it has custom cloud-init snippets (`cicustom`): with `cloud-init/user-data.template.yml` in the \
             configuration directory the next run replaces its user-data with the rendered template"
                .to_owned(),
        );
    }
    Imported {
        id: vmid,
        entry: doc,
        notes,
    }
}

/// `network_config` from the cloud-init `ipconfig0` and DNS settings; `None` without an IPv4 `ip`.
fn network(fields: &Fields<VmField>, notes: &mut Vec<String>) -> Option<Doc> {
    let ipconfig = fields.get(&VmField::Ipconfig0)?.as_object()?;
    let value = |key: &str| ipconfig.get(key).and_then(Value::as_str);
    let Some(ip) = value("ip") else {
        notes.push(
            "its ipconfig0 sets no IPv4 `ip` (IPv6 only?): `network_config` is left out, and ipconfig0 stays \
             as it is"
                .to_owned(),
        );
        return None;
    };
    let text = |field: VmField| fields.get(&field).and_then(Value::as_str);
    Some(
        Doc::object()
            .with("ip", ip)
            .with_some("gw", value("gw"))
            .with_some("nameserver", text(VmField::Nameserver))
            .with_some("searchdomain", text(VmField::Searchdomain)),
    )
}

#[cfg(test)]
mod tests {
    use phoenix_core::config::VmConfig;
    use serde_json::json;

    use super::*;
    use crate::fields;

    fn observed(
        config: &BTreeMap<String, Value>,
        status: &str,
        firewall: (bool, Vec<Value>),
    ) -> Fields<VmField> {
        fields::observed_fields(config, status, &[], firewall)
    }

    fn config(value: Value) -> BTreeMap<String, Value> {
        serde_json::from_value(value).expect("a map")
    }

    #[test]
    fn a_vm_reads_back_as_the_entry_that_declares_it_and_compares_equal() {
        let config = config(json!({
            "name": "db", "cores": 4, "memory": 8192, "onboot": 1, "startup": "order=2,up=30", "agent": "1",
            "scsi0": "tank:vm-210-disk-0,discard=on,size=32G",
            "net0": "virtio=bc:24:11:aa:bb:cc,bridge=vmbr1,firewall=1",
            "ipconfig0": "ip=10.0.0.21/24,gw=10.0.0.1", "nameserver": "10.0.0.2 1.1.1.1",
            "searchdomain": "lab.example", "ciuser": "ops", "cipassword": "**********",
            "sshkeys": "ssh-ed25519%20AAAAC3Nza%20ops%40laptop%0A", "tags": "db"
        }));
        let firewall = (
            true,
            vec![json!({"type": "in", "action": "ACCEPT", "proto": "tcp", "dport": "5432", "enable": 1})],
        );
        let mut observed = observed(&config, "running", firewall);
        observed.insert(VmField::Node, json!("pve2"));
        let imported = entry(210, "pve2", &config, &observed);
        let value = imported.entry.to_value();
        assert_eq!(
            value,
            json!({
                "vmid": 210, "name": "db", "adopted": true, "node": "pve2", "start_at_boot": true,
                "boot_order": 2, "boot_delay": 30, "cores": 4, "memory_mb": 8192, "disk_size_gb": 32,
                "storage_pool": "tank", "network_bridge": "vmbr1", "mac_address": "BC:24:11:AA:BB:CC",
                "network_config": {"ip": "10.0.0.21/24", "gw": "10.0.0.1", "nameserver": "10.0.0.2 1.1.1.1",
                                   "searchdomain": "lab.example"},
                "user_config": {"username": "ops", "password": {"env": "PHOENIX_VM_210_PASSWORD"},
                                "ssh_public_keys": ["ssh-ed25519 AAAAC3Nza ops@laptop"]},
                "firewall": {"enabled": true, "rules": [
                    {"type": "in", "action": "ACCEPT", "proto": "tcp", "port": "5432"}]}
            })
        );
        assert_eq!(imported.notes.len(), 1, "{:?}", imported.notes);
        assert!(imported.notes[0].contains("PHOENIX_VM_210_PASSWORD"));
        // What the entry declares is what was read, except the owner tag `--adopt` adds.
        let vm: VmConfig = serde_json::from_value(value).expect("a VM entry");
        let wanted = fields::desired_fields(&vm, None);
        let changed: Vec<VmField> = fields::compare(&wanted, &observed)
            .into_iter()
            .map(|change| change.field)
            .collect();
        assert_eq!(changed, [VmField::Owned]);
    }

    #[test]
    fn what_the_configuration_cannot_say_is_noted() {
        let config = config(json!({
            "template": 1, "sata0": "local-lvm:base-9000-disk-0,size=2G", "sshkeys": "ssh-rsa%20AAA",
            "ipconfig0": "ip6=auto", "nameserver": "1.1.1.1", "cicustom": "user=local:snippets/u.yml"
        }));
        let observed = observed(&config, "stopped", (false, Vec::new()));
        let imported = entry(9000, "pve1", &config, &observed);
        let value = imported.entry.to_value();
        assert_eq!(value["name"], "vm9000");
        assert_eq!(value["is_template"], true);
        assert_eq!(value["network_bridge"], "vmbr0");
        assert!(
            value.get("network_config").is_none() && value.get("user_config").is_none(),
            "{value}"
        );
        let notes = imported.notes.join("\n");
        for expected in [
            "no name", "no net0", "IPv4", "DNS", "SSH keys", "agent", "cicustom",
        ] {
            assert!(notes.contains(expected), "{expected}: {notes}");
        }
        assert!(
            !notes.contains("not running"),
            "a template is never started: {notes}"
        );
    }
}
