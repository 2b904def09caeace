//! VM state as comparable fields, the way `phoenix-lxc` does it for containers: property strings as maps of
//! the declared keys, MAC addresses in upper case, SSH keys decoded, sizes in GiB.

use std::collections::BTreeMap;

use phoenix_core::config::VmConfig;
use phoenix_core::{Consequence, FieldKey, Fields, TypedChange};
use phoenix_pve::{compare, props};
use serde_json::{Map, Value, json};

pub(crate) use phoenix_pve::OWNER_TAG;

/// The VM field vocabulary: what the diff compares and apply writes. Variants are in the order of their
/// names, so plans list fields alphabetically.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum VmField {
    /// The QEMU guest agent (`1` on).
    Agent,
    /// Whether a cloud-init password is set (Proxmox never shows it).
    Cipassword,
    /// The cloud-init user.
    Ciuser,
    /// CPU cores.
    Cores,
    /// Boot disk size in GiB (a minimum).
    DiskGb,
    /// Whether the guest firewall is on.
    FirewallEnabled,
    /// The guest firewall's rules, in order.
    FirewallRules,
    /// Digests of the scripts run inside (NFS volumes, features), by record name.
    GuestScripts,
    /// The cloud-init `ipconfig0` property string.
    Ipconfig0,
    /// Memory in MiB.
    Memory,
    /// The VM's name.
    Name,
    /// DNS servers (cloud-init).
    Nameserver,
    /// The first NIC's property string (model, MAC, bridge, firewall flag).
    Net0,
    /// The node it runs on; a change migrates it.
    Node,
    /// Start at boot.
    Onboot,
    /// Whether it carries the owner tag.
    Owned,
    /// How a new VM reaches its node (placed by a rule, cloned beside its source and migrated): said in
    /// the plan of a creation, never compared.
    Placement,
    /// DNS search domain (cloud-init).
    Searchdomain,
    /// Snapshot names.
    Snapshots,
    /// Authorised SSH keys (cloud-init), one per line.
    Sshkeys,
    /// The `startup` property string (order, up delay).
    Startup,
    /// Running or stopped.
    Status,
    /// Whether it is a template.
    Template,
    /// The digest of the custom cloud-init user-data snippet attached with `cicustom`.
    UserData,
}

impl FieldKey for VmField {
    fn all() -> &'static [VmField] {
        use VmField::*;
        &[
            Agent,
            Cipassword,
            Ciuser,
            Cores,
            DiskGb,
            FirewallEnabled,
            FirewallRules,
            GuestScripts,
            Ipconfig0,
            Memory,
            Name,
            Nameserver,
            Net0,
            Node,
            Onboot,
            Owned,
            Placement,
            Searchdomain,
            Snapshots,
            Sshkeys,
            Startup,
            Status,
            Template,
            UserData,
        ]
    }

    fn name(&self) -> String {
        match self {
            VmField::Agent => "agent",
            VmField::Cipassword => "cipassword",
            VmField::Ciuser => "ciuser",
            VmField::Cores => "cores",
            VmField::DiskGb => "disk_gb",
            VmField::FirewallEnabled => "firewall_enabled",
            VmField::FirewallRules => "firewall_rules",
            VmField::GuestScripts => "guest_scripts",
            VmField::Ipconfig0 => "ipconfig0",
            VmField::Memory => "memory",
            VmField::Name => "name",
            VmField::Nameserver => "nameserver",
            VmField::Net0 => "net0",
            VmField::Node => "node",
            VmField::Onboot => "onboot",
            VmField::Owned => "owned",
            VmField::Placement => "placement",
            VmField::Searchdomain => "searchdomain",
            VmField::Snapshots => "snapshots",
            VmField::Sshkeys => "sshkeys",
            VmField::Startup => "startup",
            VmField::Status => "status",
            VmField::Template => "template",
            VmField::UserData => "user_data",
        }
        .to_owned()
    }
}

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
) -> Fields<VmField> {
    let text = |key: &str| props::config_text(config, key);
    let mut fields = BTreeMap::new();
    for (key, field) in [
        ("name", VmField::Name),
        ("nameserver", VmField::Nameserver),
        ("searchdomain", VmField::Searchdomain),
        ("ciuser", VmField::Ciuser),
    ] {
        if let Some(value) = text(key) {
            fields.insert(field, json!(value));
        }
    }
    // A VM that does not start at boot may have no `onboot`.
    fields.insert(VmField::Onboot, json!(0));
    for (key, field) in [
        ("cores", VmField::Cores),
        ("memory", VmField::Memory),
        ("onboot", VmField::Onboot),
    ] {
        if let Some(number) = text(key).and_then(|value| value.parse::<i64>().ok()) {
            fields.insert(field, json!(number));
        }
    }
    if let Some(keys) = text("sshkeys") {
        fields.insert(VmField::Sshkeys, json!(normalise_keys(&percent_decode(&keys))));
    }
    for (key, default_key, field) in [
        ("net0", "model", VmField::Net0),
        ("ipconfig0", "ip", VmField::Ipconfig0),
        ("startup", "order", VmField::Startup),
    ] {
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
                field,
                Value::Object(map.into_iter().map(|(k, v)| (k, json!(v))).collect()),
            );
        }
    }
    if let Some(agent) = text("agent") {
        let enabled = agent.split(',').any(|part| part == "1" || part == "enabled=1");
        fields.insert(VmField::Agent, json!(if enabled { "1" } else { "0" }));
    }
    if let Some(size) = BOOT_DISKS.iter().find_map(|disk| text(disk)).and_then(|drive| {
        props::parse(&drive, "volume")
            .get("size")
            .and_then(|size| props::size_gib(size))
    }) {
        fields.insert(VmField::DiskGb, json!(size));
    }
    // Proxmox never shows the cloud-init password, only that one is set.
    fields.insert(VmField::Cipassword, json!(config.contains_key("cipassword")));
    let owned = text("tags").is_some_and(|tags| phoenix_pve::has_owner_tag(&tags));
    fields.insert(VmField::Owned, json!(owned));
    fields.insert(
        VmField::Template,
        json!(text("template").is_some_and(|value| value == "1")),
    );
    fields.insert(VmField::Status, json!(status));
    fields.insert(VmField::Snapshots, json!(snapshots));
    fields.insert(VmField::FirewallEnabled, json!(firewall.0));
    fields.insert(VmField::FirewallRules, Value::Array(firewall.1));
    fields
}

/// The fields the configuration declares (defaults already merged), in the shape of [`observed_fields`].
pub(crate) fn desired_fields(vm: &VmConfig, domain: Option<&str>) -> Fields<VmField> {
    let mut fields = BTreeMap::new();
    fields.insert(VmField::Name, json!(vm.name));
    if let Some(node) = &vm.node {
        fields.insert(VmField::Node, json!(node));
    }
    if let Some(cores) = vm.cores {
        fields.insert(VmField::Cores, json!(cores));
    }
    if let Some(memory) = vm.memory_mb {
        fields.insert(VmField::Memory, json!(memory));
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
    fields.insert(VmField::Net0, Value::Object(net));
    if let Some(network) = &vm.network_config {
        let mut ip = Map::new();
        ip.insert("ip".into(), json!(network.ip));
        if let Some(gateway) = &network.gw {
            ip.insert("gw".into(), json!(gateway));
        }
        fields.insert(VmField::Ipconfig0, Value::Object(ip));
        if let Some(nameserver) = &network.nameserver {
            fields.insert(VmField::Nameserver, json!(props::nameservers(nameserver)));
        }
        if let Some(domain) = network.searchdomain.as_deref().or(domain) {
            fields.insert(VmField::Searchdomain, json!(domain));
        }
    }
    if let Some(user) = &vm.user_config {
        fields.insert(VmField::Ciuser, json!(user.username));
        if user.password.is_some() {
            fields.insert(VmField::Cipassword, json!(true));
        }
        if !user.ssh_public_keys.is_empty() {
            fields.insert(
                VmField::Sshkeys,
                json!(normalise_keys(&user.ssh_public_keys.join("\n"))),
            );
        }
    }
    fields.insert(VmField::Onboot, json!(i64::from(vm.start_at_boot)));
    if let Some(startup) = props::startup(vm.boot_order, vm.boot_delay) {
        fields.insert(VmField::Startup, startup);
    }
    fields.insert(VmField::Agent, json!("1"));
    if let Some(size) = vm.disk_size_gb {
        fields.insert(VmField::DiskGb, json!(size as f64));
    }
    if let Some(firewall) = &vm.firewall {
        fields.insert(VmField::FirewallEnabled, json!(firewall.enabled));
        let rules: Vec<Value> = firewall
            .rules
            .iter()
            .map(phoenix_pve::firewall::rule_value)
            .collect();
        fields.insert(VmField::FirewallRules, Value::Array(rules));
    }
    fields.insert(VmField::Owned, json!(true));
    fields.insert(VmField::Template, json!(vm.is_template));
    if !vm.is_template {
        fields.insert(VmField::Status, json!("running"));
        if let Some(snapshot) = &vm.template_snapshot_name {
            fields.insert(VmField::Snapshots, json!([snapshot]));
        }
    }
    fields
}

/// Compares declared fields with observed ones; `new` is the complete value to write.
pub(crate) fn compare(desired: &Fields<VmField>, observed: &Fields<VmField>) -> Vec<TypedChange<VmField>> {
    let mut changes = Vec::new();
    for (field, wanted) in desired {
        let live = observed.get(field);
        let change = |new: Value, consequence: Consequence| TypedChange {
            field: *field,
            old: live.cloned(),
            new,
            consequence,
        };
        match field {
            VmField::Net0 | VmField::Startup | VmField::GuestScripts => {
                if let Some(merged) = compare::overlay(live, wanted) {
                    changes.push(change(merged, Consequence::Live));
                }
            }
            // Cloud-init settings reach the guest on its next boot.
            VmField::Ipconfig0 => {
                if let Some(merged) = compare::overlay(live, wanted) {
                    changes.push(change(merged, Consequence::Restart));
                }
            }
            VmField::Snapshots => {
                if let Some(all) = compare::with_missing(live, wanted) {
                    changes.push(change(all, Consequence::Live));
                }
            }
            // Sizes are minimums (see `compare::must_grow`).
            VmField::DiskGb => {
                if compare::must_grow(live, wanted) {
                    changes.push(change(wanted.clone(), Consequence::Live));
                }
            }
            VmField::Placement => {}
            _ if live == Some(wanted) => {}
            // A template cannot become a VM again: the VM is created anew.
            VmField::Template if wanted == false => {
                changes.push(change(wanted.clone(), Consequence::Destructive))
            }
            // Without memory and CPU hotplug, and for cloud-init, these take effect at the next start.
            VmField::Cores
            | VmField::Memory
            | VmField::Nameserver
            | VmField::Searchdomain
            | VmField::Ciuser
            | VmField::Sshkeys
            | VmField::UserData => changes.push(change(wanted.clone(), Consequence::Restart)),
            VmField::Agent
            | VmField::Cipassword
            | VmField::FirewallEnabled
            | VmField::FirewallRules
            | VmField::Name
            // A running VM migrates live (its local disks copied while it runs), a stopped one offline.
            | VmField::Node
            | VmField::Onboot
            | VmField::Owned
            | VmField::Status
            | VmField::Template => changes.push(change(wanted.clone(), Consequence::Live)),
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
    fn every_field_name_reads_back_and_plans_list_them_alphabetically() {
        let names: Vec<String> = VmField::all().iter().map(FieldKey::name).collect();
        let mut sorted = names.clone();
        sorted.sort();
        assert_eq!(names, sorted, "variants are declared in the order of their names");
        for field in VmField::all() {
            assert_eq!(VmField::parse(&field.name()), Some(*field));
        }
        assert_eq!(VmField::parse("disk_size_gb"), None);
    }

    #[test]
    fn net0_models_normalise_and_render_back() {
        let config = BTreeMap::from([(
            "net0".to_owned(),
            json!("e1000=bc:24:11:00:00:01,bridge=vmbr0,firewall=1"),
        )]);
        let fields = observed_fields(&config, "running", &[], (false, Vec::new()));
        let net0 = &fields[&VmField::Net0];
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
