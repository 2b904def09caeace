//! VM state as comparable fields, the way `phoenix-lxc` does it for containers: property strings as maps of
//! the declared keys, MAC addresses in upper case, SSH keys decoded, sizes in GiB.

use std::collections::BTreeMap;

use phoenix_core::config::VmConfig;
use phoenix_core::{Consequence, FieldChange};
use phoenix_pve::{compare, props};
use serde_json::{Map, Value, json};

pub(crate) use phoenix_pve::OWNER_TAG;

/// NIC models Proxmox writes as `<model>=<MAC>` in `net0`.
pub(crate) const NIC_MODELS: [&str; 11] = [
    "virtio", "e1000", "e1000e", "rtl8139", "vmxnet3", "ne2k_pci", "pcnet", "i82551", "i82557b", "i82559er",
    "ne2k_isa",
];

/// Renders `net0` back: the model first (`virtio` unless one is known), with the MAC address when one is
/// known, then the other keys.
pub(crate) fn render_net0(net: &Value) -> String {
    let mut map = net.as_object().cloned().unwrap_or_default();
    let model = map
        .remove("model")
        .and_then(|model| model.as_str().map(str::to_owned))
        .unwrap_or_else(|| "virtio".into());
    let first = match map
        .remove("macaddr")
        .and_then(|mac| mac.as_str().map(str::to_owned))
    {
        Some(mac) => format!("{model}={mac}"),
        None => model,
    };
    let rest = props::render_object(&Value::Object(map), None);
    if rest.is_empty() {
        first
    } else {
        format!("{first},{rest}")
    }
}

/// Disks that may be a VM's boot disk, in the order they are looked for.
pub(crate) const BOOT_DISKS: [&str; 4] = ["scsi0", "virtio0", "sata0", "ide0"];

/// Fields read from a VM's config, status, snapshots and firewall.
pub(crate) fn observed_fields(
    config: &BTreeMap<String, Value>,
    status: &str,
    snapshots: &[String],
    firewall: (bool, Vec<Value>),
) -> BTreeMap<String, Value> {
    let text = |key: &str| {
        config.get(key).map(|value| match value {
            Value::String(text) => text.clone(),
            other => other.to_string(),
        })
    };
    let mut fields = BTreeMap::new();
    for key in ["name", "nameserver", "searchdomain", "ciuser"] {
        if let Some(value) = text(key) {
            fields.insert(key.to_owned(), json!(value));
        }
    }
    for key in ["cores", "memory", "onboot"] {
        if let Some(number) = text(key).and_then(|value| value.parse::<i64>().ok()) {
            fields.insert(key.to_owned(), json!(number));
        }
    }
    if let Some(keys) = text("sshkeys") {
        fields.insert(
            "sshkeys".to_owned(),
            json!(normalise_keys(&percent_decode(&keys))),
        );
    }
    for (key, default_key) in [("net0", "model"), ("ipconfig0", "ip"), ("startup", "order")] {
        if let Some(value) = text(key) {
            let mut map = props::parse(&value, default_key);
            if key == "net0" {
                // `e1000=BC:24:...`: the model's key holds the MAC address. Normalised to `model` + `macaddr`.
                if let Some(model) = NIC_MODELS.iter().find(|model| map.contains_key(**model)) {
                    let mac = map.remove(*model).unwrap_or_default();
                    map.insert("model".into(), (*model).to_owned());
                    map.insert("macaddr".into(), mac.to_ascii_uppercase());
                }
            }
            fields.insert(
                key.to_owned(),
                Value::Object(map.into_iter().map(|(k, v)| (k, json!(v))).collect()),
            );
        }
    }
    if let Some(agent) = text("agent") {
        let enabled = agent.split(',').any(|part| part == "1" || part == "enabled=1");
        fields.insert("agent".to_owned(), json!(if enabled { "1" } else { "0" }));
    }
    if let Some(size) = BOOT_DISKS.iter().find_map(|disk| text(disk)).and_then(|drive| {
        props::parse(&drive, "volume")
            .get("size")
            .and_then(|size| props::size_gib(size))
    }) {
        fields.insert("disk_gb".to_owned(), json!(size));
    }
    // Proxmox never shows the cloud-init password, only that one is set.
    fields.insert("cipassword".to_owned(), json!(config.contains_key("cipassword")));
    let owned = text("tags").is_some_and(|tags| phoenix_pve::has_owner_tag(&tags));
    fields.insert("owned".to_owned(), json!(owned));
    fields.insert(
        "template".to_owned(),
        json!(text("template").is_some_and(|value| value == "1")),
    );
    fields.insert("status".to_owned(), json!(status));
    fields.insert("snapshots".to_owned(), json!(snapshots));
    fields.insert("firewall_enabled".to_owned(), json!(firewall.0));
    fields.insert("firewall_rules".to_owned(), Value::Array(firewall.1));
    fields
}

/// The fields the configuration declares (defaults already merged), in the shape of [`observed_fields`].
pub(crate) fn desired_fields(vm: &VmConfig, domain: Option<&str>) -> BTreeMap<String, Value> {
    let mut fields = BTreeMap::new();
    fields.insert("name".to_owned(), json!(vm.name));
    if let Some(cores) = vm.cores {
        fields.insert("cores".to_owned(), json!(cores));
    }
    if let Some(memory) = vm.memory_mb {
        fields.insert("memory".to_owned(), json!(memory));
    }
    let mut net = Map::new();
    net.insert(
        "bridge".into(),
        json!(vm.network_bridge.clone().unwrap_or_else(|| "vmbr0".to_owned())),
    );
    // The NIC's firewall flag is declared by a `firewall` section; without one it is left as it is.
    if let Some(firewall) = &vm.firewall {
        net.insert("firewall".into(), json!(if firewall.enabled { "1" } else { "0" }));
    }
    if let Some(mac) = &vm.mac_address {
        net.insert("macaddr".into(), json!(mac.to_ascii_uppercase()));
    }
    fields.insert("net0".to_owned(), Value::Object(net));
    if let Some(network) = &vm.network_config {
        let mut ip = Map::new();
        ip.insert("ip".into(), json!(network.ip));
        if let Some(gateway) = &network.gw {
            ip.insert("gw".into(), json!(gateway));
        }
        fields.insert("ipconfig0".to_owned(), Value::Object(ip));
        if let Some(nameserver) = &network.nameserver {
            let list: Vec<&str> = nameserver
                .split([' ', ',', ';'])
                .filter(|part| !part.is_empty())
                .collect();
            fields.insert("nameserver".to_owned(), json!(list.join(" ")));
        }
        if let Some(domain) = network.searchdomain.as_deref().or(domain) {
            fields.insert("searchdomain".to_owned(), json!(domain));
        }
    }
    if let Some(user) = &vm.user_config {
        fields.insert("ciuser".to_owned(), json!(user.username));
        if user.password.is_some() {
            fields.insert("cipassword".to_owned(), json!(true));
        }
        if !user.ssh_public_keys.is_empty() {
            fields.insert(
                "sshkeys".to_owned(),
                json!(normalise_keys(&user.ssh_public_keys.join("\n"))),
            );
        }
    }
    fields.insert("onboot".to_owned(), json!(i64::from(vm.start_at_boot)));
    if vm.boot_order.is_some() || vm.boot_delay.is_some() {
        let mut startup = Map::new();
        if let Some(order) = vm.boot_order {
            startup.insert("order".into(), json!(order.to_string()));
        }
        if let Some(delay) = vm.boot_delay {
            startup.insert("up".into(), json!(delay.to_string()));
        }
        fields.insert("startup".to_owned(), Value::Object(startup));
    }
    fields.insert("agent".to_owned(), json!("1"));
    if let Some(size) = vm.disk_size_gb {
        fields.insert("disk_gb".to_owned(), json!(size as f64));
    }
    if let Some(firewall) = &vm.firewall {
        fields.insert("firewall_enabled".to_owned(), json!(firewall.enabled));
        let rules: Vec<Value> = firewall
            .rules
            .iter()
            .map(phoenix_pve::firewall::rule_value)
            .collect();
        fields.insert("firewall_rules".to_owned(), Value::Array(rules));
    }
    fields.insert("owned".to_owned(), json!(true));
    fields.insert("template".to_owned(), json!(vm.is_template));
    if !vm.is_template {
        fields.insert("status".to_owned(), json!("running"));
        if let Some(snapshot) = &vm.template_snapshot_name {
            fields.insert("snapshots".to_owned(), json!([snapshot]));
        }
    }
    fields
}

/// Compares declared fields with observed ones; `new` is the complete value to write.
pub(crate) fn diff(
    desired: &BTreeMap<String, Value>,
    observed: &BTreeMap<String, Value>,
) -> Vec<FieldChange> {
    let mut changes = Vec::new();
    for (field, wanted) in desired {
        let live = observed.get(field);
        let change = |new: Value, consequence: Consequence| FieldChange {
            field: field.clone(),
            old: live.cloned(),
            new: Some(new),
            consequence,
        };
        match field.as_str() {
            "net0" | "ipconfig0" | "startup" | "guest_scripts" => {
                let Some(merged) = compare::overlay(live, wanted) else {
                    continue;
                };
                // Cloud-init settings reach the guest on its next boot.
                let consequence = if field == "ipconfig0" {
                    Consequence::Restart
                } else {
                    Consequence::Live
                };
                changes.push(change(merged, consequence));
            }
            "snapshots" => {
                if let Some(all) = compare::with_missing(live, wanted) {
                    changes.push(change(all, Consequence::Live));
                }
            }
            "disk_gb" => {
                // Sizes are minimums (see `compare::must_grow`).
                if compare::must_grow(live, wanted) {
                    changes.push(change(wanted.clone(), Consequence::Live));
                }
            }
            _ if live == Some(wanted) => {}
            "template" if wanted == false => changes.push(change(wanted.clone(), Consequence::Destructive)),
            // Without memory and CPU hotplug, and for cloud-init, these take effect at the next start.
            "cores" | "memory" | "nameserver" | "searchdomain" | "ciuser" | "sshkeys" | "user_data" => {
                changes.push(change(wanted.clone(), Consequence::Restart))
            }
            _ => changes.push(change(wanted.clone(), Consequence::Live)),
        }
    }
    changes
}

/// SSH keys as compared: one per line, trimmed, no blank lines.
fn normalise_keys(text: &str) -> String {
    text.lines()
        .map(str::trim)
        .filter(|line| !line.is_empty())
        .collect::<Vec<_>>()
        .join("\n")
}

/// Percent-encodes everything but unreserved characters, as Proxmox wants `sshkeys`.
pub(crate) fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len() * 3);
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b"-_.~".contains(&byte) {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        if bytes[index] == b'%'
            && let Some(byte) = text
                .get(index + 1..index + 3)
                .and_then(|hex| u8::from_str_radix(hex, 16).ok())
        {
            out.push(byte);
            index += 3;
        } else {
            out.push(bytes[index]);
            index += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn net0_models_normalise_and_render_back() {
        let config = BTreeMap::from([(
            "net0".to_owned(),
            json!("e1000=bc:24:11:00:00:01,bridge=vmbr0,firewall=1"),
        )]);
        let fields = observed_fields(&config, "running", &[], (false, Vec::new()));
        let net0 = &fields["net0"];
        assert_eq!(net0["model"], "e1000");
        assert_eq!(net0["macaddr"], "BC:24:11:00:00:01");
        assert_eq!(
            render_net0(net0),
            "e1000=BC:24:11:00:00:01,bridge=vmbr0,firewall=1"
        );
        assert_eq!(render_net0(&json!({"bridge": "vmbr1"})), "virtio,bridge=vmbr1");
    }

    #[test]
    fn ssh_keys_encode_and_decode() {
        let keys = "ssh-ed25519 AAAAC3Nz+/= ops@lab\nssh-rsa AAAAB3 other";
        let encoded = percent_encode(keys);
        assert!(
            !encoded.contains(' ') && !encoded.contains('+') && !encoded.contains('\n'),
            "{encoded}"
        );
        assert_eq!(percent_decode(&encoded), keys);
        assert_eq!(normalise_keys(" a \n\n b\n"), "a\nb");
    }
}
