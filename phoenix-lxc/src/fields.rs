//! Container state as comparable fields: what the configuration asks for, what Proxmox holds, and the
//! diff between them. Normalised so that only real differences count: property strings compare as maps
//! of the declared keys, MAC addresses in upper case, sizes in GiB, snapshots by name.

use std::collections::BTreeMap;

use phoenix_core::config::ContainerConfig;
use phoenix_core::{Consequence, FieldChange};
use serde_json::{Map, Value, json};

use phoenix_pve::{compare, props};

pub(crate) use phoenix_pve::OWNER_TAG;

/// The guest firewall as read: whether it is on, and its rules in order.
pub(crate) struct ObservedFirewall {
    pub(crate) enabled: bool,
    pub(crate) rules: Vec<Value>,
}

/// Fields read from a container's Proxmox config (merged with pending changes), status, snapshots and
/// firewall.
pub(crate) fn observed_fields(
    config: &BTreeMap<String, Value>,
    status: &str,
    snapshots: &[String],
    firewall: &ObservedFirewall,
    records: Option<&BTreeMap<String, String>>,
) -> BTreeMap<String, Value> {
    let text = |key: &str| {
        config.get(key).map(|value| match value {
            Value::String(text) => text.clone(),
            other => other.to_string(),
        })
    };
    let mut fields = BTreeMap::new();
    for key in ["hostname", "nameserver", "searchdomain"] {
        if let Some(value) = text(key) {
            fields.insert(key.to_owned(), Value::String(value));
        }
    }
    // Proxmox writes `unprivileged` only when it is 1: a privileged container has no such key.
    fields.insert("unprivileged".to_owned(), json!(0));
    for key in ["cores", "memory", "swap", "onboot", "unprivileged"] {
        if let Some(number) = text(key).and_then(|value| value.parse::<i64>().ok()) {
            fields.insert(key.to_owned(), json!(number));
        }
    }
    for (key, default_key) in [("net0", "name"), ("startup", "order"), ("features", "")] {
        if let Some(value) = text(key) {
            fields.insert(key.to_owned(), string_map(&props::parse(&value, default_key)));
        }
    }
    if let Some(rootfs) = text("rootfs") {
        let parsed = props::parse(&rootfs, "volume");
        if let Some(size) = parsed.get("size").and_then(|size| props::size_gib(size)) {
            fields.insert("rootfs_gb".to_owned(), json!(size));
        }
    }
    let mut mounts = Map::new();
    let mut devices = Vec::new();
    for (key, value) in config {
        let Some(value) = value.as_str() else { continue };
        if let Some(index) = key.strip_prefix("mp").and_then(|index| index.parse::<u32>().ok()) {
            let parsed = props::parse(value, "volume");
            let Some(path) = parsed.get("mp").cloned() else {
                continue;
            };
            mounts.insert(path, mount_entry(index, &parsed));
        } else if key
            .strip_prefix("dev")
            .is_some_and(|index| index.parse::<u32>().is_ok())
            && let Some(path) = props::parse(value, "path").get("path")
        {
            devices.push(Value::String(path.clone()));
        }
    }
    fields.insert("mounts".to_owned(), Value::Object(mounts));
    devices.sort_by(|left, right| left.as_str().cmp(&right.as_str()));
    fields.insert("devices".to_owned(), Value::Array(devices));
    let owned = text("tags").is_some_and(|tags| phoenix_pve::has_owner_tag(&tags));
    fields.insert("owned".to_owned(), json!(owned));
    fields.insert("status".to_owned(), json!(status));
    fields.insert("snapshots".to_owned(), json!(snapshots));
    fields.insert("firewall_enabled".to_owned(), json!(firewall.enabled));
    fields.insert("firewall_rules".to_owned(), Value::Array(firewall.rules.clone()));
    if let Some(records) = records {
        let records = records
            .iter()
            .map(|(name, digest)| (name.clone(), json!(digest)))
            .collect();
        fields.insert("guest_scripts".to_owned(), Value::Object(records));
    }
    fields
}

fn string_map(map: &BTreeMap<String, String>) -> Value {
    Value::Object(
        map.iter()
            .map(|(key, value)| (key.clone(), Value::String(value.clone())))
            .collect(),
    )
}

/// A mount point as compared: its index, and either a host path (bind mount) or a storage and size.
fn mount_entry(index: u32, parsed: &BTreeMap<String, String>) -> Value {
    let volume = parsed.get("volume").cloned().unwrap_or_default();
    let mut entry = Map::new();
    entry.insert("index".into(), json!(index));
    if volume.starts_with('/') {
        entry.insert("host_path".into(), json!(volume));
    } else {
        let storage = volume.split(':').next().unwrap_or_default();
        entry.insert("storage".into(), json!(storage));
        if let Some(size) = parsed.get("size").and_then(|size| props::size_gib(size)) {
            entry.insert("size_gb".into(), json!(size));
        }
    }
    if parsed.get("ro").is_some_and(|value| value == "1") {
        entry.insert("ro".into(), json!(true));
    }
    entry.insert("volume".into(), json!(volume));
    Value::Object(entry)
}

/// The fields the configuration declares, in the shape of [`observed_fields`].
pub(crate) fn desired_fields(container: &ContainerConfig, domain: Option<&str>) -> BTreeMap<String, Value> {
    let mut fields = BTreeMap::new();
    fields.insert("hostname".to_owned(), json!(container.name));
    if let Some(cores) = container.cores {
        fields.insert("cores".to_owned(), json!(cores));
    }
    if let Some(memory) = container.memory_mb {
        fields.insert("memory".to_owned(), json!(memory));
    }
    if let Some(swap) = container.swap_mb {
        fields.insert("swap".to_owned(), json!(swap));
    }
    if let Some(network) = &container.network_config {
        let mut net = Map::new();
        net.insert("name".into(), json!(network.name));
        net.insert("bridge".into(), json!(network.bridge));
        net.insert("ip".into(), json!(network.ip));
        if let Some(gateway) = &network.gw {
            net.insert("gw".into(), json!(gateway));
        }
        if let Some(mac) = &container.mac_address {
            net.insert("hwaddr".into(), json!(mac.to_ascii_uppercase()));
        }
        if let Some(tag) = network.vlan {
            net.insert("tag".into(), json!(tag.to_string()));
        }
        // The NIC's firewall flag is declared by a `firewall` section; without one it is left as it is.
        if let Some(firewall) = &container.firewall {
            net.insert("firewall".into(), json!(if firewall.enabled { "1" } else { "0" }));
        }
        fields.insert("net0".to_owned(), Value::Object(net));
        if let Some(nameservers) = &network.nameservers {
            let list: Vec<&str> = nameservers
                .split([' ', ',', ';'])
                .filter(|part| !part.is_empty())
                .collect();
            fields.insert("nameserver".to_owned(), json!(list.join(" ")));
        }
        if let Some(domain) = network.searchdomain.as_deref().or(domain) {
            fields.insert("searchdomain".to_owned(), json!(domain));
        }
    }
    fields.insert("onboot".to_owned(), json!(i64::from(container.start_at_boot)));
    if container.boot_order.is_some() || container.boot_delay.is_some() {
        let mut startup = Map::new();
        if let Some(order) = container.boot_order {
            startup.insert("order".into(), json!(order.to_string()));
        }
        if let Some(delay) = container.boot_delay {
            startup.insert("up".into(), json!(delay.to_string()));
        }
        fields.insert("startup".to_owned(), Value::Object(startup));
    }
    if !container.pct_options.is_empty() {
        let features: Map<String, Value> = container
            .pct_options
            .iter()
            .flat_map(|options| options.split(','))
            .filter_map(|item| item.split_once('='))
            .map(|(key, value)| (key.trim().to_owned(), json!(normalise_flag(value.trim()))))
            .collect();
        fields.insert("features".to_owned(), Value::Object(features));
    }
    if let Some(size) = container.storage_size_gb {
        fields.insert("rootfs_gb".to_owned(), json!(size as f64));
    }
    fields.insert(
        "unprivileged".to_owned(),
        json!(i64::from(container.unprivileged.unwrap_or(true))),
    );
    let mut mounts = Map::new();
    for mount in &container.mount_points {
        let mut entry = Map::new();
        entry.insert("host_path".into(), json!(mount.host_path));
        if mount.read_only {
            entry.insert("ro".into(), json!(true));
        }
        mounts.insert(mount.container_path.clone(), Value::Object(entry));
    }
    for volume in &container.zfs_volumes {
        let mut entry = Map::new();
        entry.insert("storage".into(), json!(volume.pool));
        entry.insert("size_gb".into(), json!(volume.size_gb as f64));
        mounts.insert(volume.mount_point.clone(), Value::Object(entry));
    }
    if !mounts.is_empty() {
        fields.insert("mounts".to_owned(), Value::Object(mounts));
    }
    let gpus = gpu_indices(container.gpu_assignment.as_deref());
    if !gpus.is_empty() {
        let mut devices: Vec<String> = gpus.iter().map(|index| format!("/dev/nvidia{index}")).collect();
        devices.extend(
            [
                "/dev/nvidiactl",
                "/dev/nvidia-uvm",
                "/dev/nvidia-uvm-tools",
                "/dev/nvidia-caps/nvidia-cap1",
                "/dev/nvidia-caps/nvidia-cap2",
            ]
            .map(str::to_owned),
        );
        devices.sort();
        fields.insert("devices".to_owned(), json!(devices));
    }
    if let Some(firewall) = &container.firewall {
        fields.insert("firewall_enabled".to_owned(), json!(firewall.enabled));
        let rules: Vec<Value> = firewall
            .rules
            .iter()
            .map(phoenix_pve::firewall::rule_value)
            .collect();
        fields.insert("firewall_rules".to_owned(), Value::Array(rules));
    }
    fields.insert("owned".to_owned(), json!(true));
    fields.insert("status".to_owned(), json!("running"));
    if let Some(snapshot) = &container.template_snapshot_name {
        fields.insert("snapshots".to_owned(), json!([snapshot]));
    }
    fields
}

/// GPU indices of `gpu_assignment` (`none`, `0`, `0, 1`).
pub(crate) fn gpu_indices(assignment: Option<&str>) -> Vec<u32> {
    let Some(assignment) = assignment.filter(|text| *text != "none") else {
        return Vec::new();
    };
    assignment
        .split(',')
        .filter_map(|part| part.trim().parse().ok())
        .collect()
}

/// Compares declared fields with observed ones. Each change's `new` is the complete value to write (for
/// maps, the observed map with the declared keys laid over it, so a generated MAC address is kept).
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
            "net0" | "startup" | "features" | "guest_scripts" | "raw_lxc" => {
                let Some(merged) = compare::overlay(live, wanted) else {
                    continue;
                };
                // Container features and raw LXC keys are read when the container starts.
                let consequence = if field == "features" || field == "raw_lxc" {
                    Consequence::Restart
                } else {
                    Consequence::Live
                };
                changes.push(change(merged, consequence));
            }
            "mounts" => changes.extend(diff_mounts(wanted, live)),
            "snapshots" => {
                if let Some(all) = compare::with_missing(live, wanted) {
                    changes.push(change(all, Consequence::Live));
                }
            }
            "rootfs_gb" => {
                // Sizes are minimums (see `compare::must_grow`).
                if compare::must_grow(live, wanted) {
                    changes.push(change(wanted.clone(), Consequence::Live));
                }
            }
            _ if live == Some(wanted) => {}
            "unprivileged" => changes.push(change(wanted.clone(), Consequence::Destructive)),
            "devices" => changes.push(change(wanted.clone(), Consequence::Restart)),
            _ => changes.push(change(wanted.clone(), Consequence::Live)),
        }
    }
    changes
}

/// Mount points keyed by container path; indices stay stable, new mounts take the next free index.
fn diff_mounts(wanted: &Value, live: Option<&Value>) -> Vec<FieldChange> {
    let observed = live.and_then(Value::as_object).cloned().unwrap_or_default();
    let mut used: Vec<u64> = observed
        .values()
        .filter_map(|entry| entry["index"].as_u64())
        .collect();
    let mut changes = Vec::new();
    for (path, declared) in wanted.as_object().into_iter().flatten() {
        let declared = declared.as_object().expect("mounts are objects");
        let existing = observed.get(path).and_then(Value::as_object);
        // Declared keys must match, except a volume's size, which is a minimum (disks grow, never shrink).
        let matches = existing.is_some_and(|existing| {
            declared.iter().all(|(key, value)| match key.as_str() {
                "size_gb" => existing.get(key).and_then(Value::as_f64) >= value.as_f64(),
                _ => existing.get(key) == Some(value),
            }) && declared.contains_key("ro") == existing.contains_key("ro")
        });
        if matches {
            continue;
        }
        let index = match existing.and_then(|existing| existing["index"].as_u64()) {
            Some(index) => index,
            None => {
                let free = (0..)
                    .find(|candidate| !used.contains(candidate))
                    .expect("an index is free");
                used.push(free);
                free
            }
        };
        let mut new = declared.clone();
        new.insert("index".into(), json!(index));
        // A volume stays where it is unless the declared storage differs: then a new volume takes the mount
        // point, and Proxmox keeps the old one as an `unusedN` entry. The guest loses sight of its data there,
        // so that needs `--allow-destroy`.
        let moved = existing.is_some_and(|existing| {
            declared.contains_key("storage")
                && existing.contains_key("storage")
                && existing["storage"] != declared["storage"]
        });
        if !moved && let Some(volume) = existing.and_then(|existing| existing.get("volume")) {
            new.insert("volume".into(), volume.clone());
        }
        changes.push(FieldChange {
            field: format!("mount {path}"),
            old: existing.map(|existing| Value::Object(existing.clone())),
            new: Some(Value::Object(new)),
            consequence: if moved {
                Consequence::Destructive
            } else {
                Consequence::Restart
            },
        });
    }
    changes
}

/// The raw LXC keys a container declares, each with its lines' values in order: `lxc_options`
/// (`key=value`, or `key:value` as the earlier version also wrote them), the AppArmor profile, and the
/// `lxc.idmap` lines that `id_maps` need (ranges around each mapped ID keep the usual 100000 offset).
pub(crate) fn raw_keys(container: &ContainerConfig) -> BTreeMap<String, Vec<String>> {
    let mut keys: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for option in &container.lxc_options {
        let split = option.split_once('=').or_else(|| option.split_once(':'));
        if let Some((key, value)) = split {
            keys.entry(key.trim().to_owned())
                .or_default()
                .push(value.trim().to_owned());
        }
    }
    if let Some(profile) = &container.apparmor_profile {
        keys.insert("lxc.apparmor.profile".to_owned(), vec![profile.clone()]);
    }
    if !container.id_maps.is_empty() {
        keys.insert("lxc.idmap".to_owned(), id_map_lines(&container.id_maps));
    }
    keys
}

/// Full `lxc.idmap` lines for both kinds: the mapped ranges, and the default mapping around them.
fn id_map_lines(maps: &[phoenix_core::config::lxc::IdMap]) -> Vec<String> {
    use phoenix_core::config::lxc::IdKind;

    const OFFSET: u32 = 100_000;
    const RANGE: u32 = 65_536;
    let mut lines = Vec::new();
    for (kind, letter) in [(IdKind::Uid, "u"), (IdKind::Gid, "g")] {
        let mut ranges: Vec<_> = maps.iter().filter(|map| map.kind == kind).collect();
        ranges.sort_by_key(|map| map.container_id);
        let mut next = 0;
        for map in ranges {
            if map.container_id > next {
                lines.push(format!(
                    "{letter} {next} {} {}",
                    OFFSET + next,
                    map.container_id - next
                ));
            }
            lines.push(format!(
                "{letter} {} {} {}",
                map.container_id, map.host_id, map.size
            ));
            next = map.container_id + map.size;
        }
        if next < RANGE {
            lines.push(format!("{letter} {next} {} {}", OFFSET + next, RANGE - next));
        }
    }
    lines
}

/// Proxmox reads boolean feature values in several spellings and writes them back as `1` or `0`.
fn normalise_flag(value: &str) -> &str {
    match value.to_ascii_lowercase().as_str() {
        "true" | "yes" | "on" => "1",
        "false" | "no" | "off" => "0",
        _ => value,
    }
}

#[cfg(test)]
mod tests {
    use phoenix_core::config::lxc::{IdKind, IdMap};

    use super::*;

    fn volume(storage: &str, size: f64) -> Value {
        json!({"index": 0, "storage": storage, "size_gb": size, "volume": format!("{storage}:subvol-101-disk-1")})
    }

    #[test]
    fn a_volume_on_another_storage_gets_a_new_one_and_is_destructive() {
        let wanted = json!({"/data": {"storage": "tank", "size_gb": 8.0}});
        let live = json!({"/data": volume("local-zfs", 8.0)});
        let [change] = diff_mounts(&wanted, Some(&live)).try_into().expect("one change");
        assert_eq!(change.consequence, Consequence::Destructive);
        let new = change.new.expect("a new mount");
        assert_eq!(new["storage"], "tank");
        assert!(new.get("volume").is_none(), "{new}");
        // Once the new volume is there, nothing is left to do.
        let live = json!({"/data": volume("tank", 8.0)});
        assert!(diff_mounts(&wanted, Some(&live)).is_empty());
    }

    #[test]
    fn a_volume_that_grows_or_turns_read_only_keeps_its_volume() {
        let wanted = json!({"/data": {"storage": "tank", "size_gb": 16.0, "ro": true}});
        let live = json!({"/data": volume("tank", 8.0)});
        let [change] = diff_mounts(&wanted, Some(&live)).try_into().expect("one change");
        assert_eq!(change.consequence, Consequence::Restart);
        let new = change.new.expect("a new mount");
        assert_eq!(new["volume"], "tank:subvol-101-disk-1");
        assert_eq!(new["ro"], true);
    }

    #[test]
    fn id_maps_become_full_idmap_lines() {
        let maps = [IdMap {
            kind: IdKind::Gid,
            host_id: 33,
            container_id: 33,
            size: 1,
        }];
        assert_eq!(
            id_map_lines(&maps),
            [
                "u 0 100000 65536",
                "g 0 100000 33",
                "g 33 33 1",
                "g 34 100034 65502"
            ]
        );
    }

    #[test]
    fn raw_keys_come_from_options_and_the_apparmor_profile() {
        let container = ContainerConfig {
            lxc_options: vec!["lxc.mount.auto:sys:rw".into(), "lxc.cap.drop=".into()],
            apparmor_profile: Some("unconfined".into()),
            ..ContainerConfig::default()
        };
        let keys = raw_keys(&container);
        assert_eq!(keys["lxc.mount.auto"], ["sys:rw"]);
        assert_eq!(keys["lxc.cap.drop"], [""]);
        assert_eq!(keys["lxc.apparmor.profile"], ["unconfined"]);
    }
}
