//! Container state as comparable fields: what the configuration asks for, what Proxmox holds, and the
//! diff between them. Normalised so that only real differences count: property strings compare as maps
//! of the declared keys, MAC addresses in upper case, sizes in GiB, snapshots by name.

use std::collections::BTreeMap;

use phoenix_core::config::ContainerConfig;
use phoenix_core::{Consequence, FieldKey, Fields, TypedChange};
use serde_json::{Map, Value, json};

use phoenix_pve::gpu::NvidiaDevices;
use phoenix_pve::{compare, props};

pub(crate) use phoenix_pve::OWNER_TAG;

/// The container field vocabulary: what the diff compares and apply writes. Variants are in the order of
/// their names, so plans list fields alphabetically.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum LxcField {
    /// CPU cores.
    Cores,
    /// `devN` device passthrough entries (GPUs), as paths.
    Devices,
    /// The `features` property string (nesting, keyctl, ...).
    Features,
    /// Whether the guest firewall is on.
    FirewallEnabled,
    /// The guest firewall's rules, in order.
    FirewallRules,
    /// Digests of the scripts run inside (features, application script), by record name.
    GuestScripts,
    /// The hostname.
    Hostname,
    /// Memory in MiB.
    Memory,
    /// One mount point, by its path in the container: the change of one entry of [`LxcField::Mounts`].
    Mount(String),
    /// Every mount point, by path in the container (the state; changes are per [`LxcField::Mount`]).
    Mounts,
    /// DNS servers.
    Nameserver,
    /// The first NIC's property string.
    Net0,
    /// The node it runs on; a change migrates it.
    Node,
    /// Start at boot.
    Onboot,
    /// Whether it carries the owner tag.
    Owned,
    /// How a new container reaches its node (placed by a rule, cloned beside its source and migrated):
    /// said in the plan of a creation, never compared.
    Placement,
    /// Raw `lxc.*` keys of the config file, with their lines' values.
    RawLxc,
    /// Root disk size in GiB (a minimum).
    RootfsGb,
    /// DNS search domain.
    Searchdomain,
    /// Snapshot names.
    Snapshots,
    /// The `startup` property string (order, up delay).
    Startup,
    /// Running or stopped.
    Status,
    /// Swap in MiB.
    Swap,
    /// Unprivileged (1) or privileged (0); cannot change in place.
    Unprivileged,
}

impl FieldKey for LxcField {
    fn all() -> &'static [LxcField] {
        use LxcField::*;
        &[
            Cores,
            Devices,
            Features,
            FirewallEnabled,
            FirewallRules,
            GuestScripts,
            Hostname,
            Memory,
            Mounts,
            Nameserver,
            Net0,
            Node,
            Onboot,
            Owned,
            Placement,
            RawLxc,
            RootfsGb,
            Searchdomain,
            Snapshots,
            Startup,
            Status,
            Swap,
            Unprivileged,
        ]
    }

    fn name(&self) -> String {
        match self {
            LxcField::Cores => "cores",
            LxcField::Devices => "devices",
            LxcField::Features => "features",
            LxcField::FirewallEnabled => "firewall_enabled",
            LxcField::FirewallRules => "firewall_rules",
            LxcField::GuestScripts => "guest_scripts",
            LxcField::Hostname => "hostname",
            LxcField::Memory => "memory",
            LxcField::Mount(path) => return format!("mount {path}"),
            LxcField::Mounts => "mounts",
            LxcField::Nameserver => "nameserver",
            LxcField::Net0 => "net0",
            LxcField::Node => "node",
            LxcField::Onboot => "onboot",
            LxcField::Owned => "owned",
            LxcField::Placement => "placement",
            LxcField::RawLxc => "raw_lxc",
            LxcField::RootfsGb => "rootfs_gb",
            LxcField::Searchdomain => "searchdomain",
            LxcField::Snapshots => "snapshots",
            LxcField::Startup => "startup",
            LxcField::Status => "status",
            LxcField::Swap => "swap",
            LxcField::Unprivileged => "unprivileged",
        }
        .to_owned()
    }

    fn parse(name: &str) -> Option<LxcField> {
        if let Some(path) = name.strip_prefix("mount ") {
            return Some(LxcField::Mount(path.to_owned()));
        }
        LxcField::all().iter().find(|field| field.name() == name).cloned()
    }
}

/// The guest firewall as read: whether it is on, and its rules in order.
#[derive(Default)]
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
) -> Fields<LxcField> {
    let text = |key: &str| props::config_text(config, key);
    let mut fields = BTreeMap::new();
    for (key, field) in [
        ("hostname", LxcField::Hostname),
        ("nameserver", LxcField::Nameserver),
        ("searchdomain", LxcField::Searchdomain),
    ] {
        if let Some(value) = text(key) {
            fields.insert(field, Value::String(value));
        }
    }
    // Proxmox writes `unprivileged` only when it is 1: a privileged container has no such key; and a
    // guest that does not start at boot may have no `onboot`.
    fields.insert(LxcField::Unprivileged, json!(0));
    fields.insert(LxcField::Onboot, json!(0));
    for (key, field) in [
        ("cores", LxcField::Cores),
        ("memory", LxcField::Memory),
        ("swap", LxcField::Swap),
        ("onboot", LxcField::Onboot),
        ("unprivileged", LxcField::Unprivileged),
    ] {
        if let Some(number) = text(key).and_then(|value| value.parse::<i64>().ok()) {
            fields.insert(field, json!(number));
        }
    }
    for (key, default_key, field) in [
        ("net0", "name", LxcField::Net0),
        ("startup", "order", LxcField::Startup),
        ("features", "", LxcField::Features),
    ] {
        if let Some(value) = text(key) {
            let mut map = props::parse(&value, default_key);
            // MAC addresses compare in upper case, whichever case they were written in.
            if let Some(mac) = map.get_mut("hwaddr") {
                *mac = mac.to_ascii_uppercase();
            }
            fields.insert(field, string_map(&map));
        }
    }
    if let Some(rootfs) = text("rootfs") {
        let parsed = props::parse(&rootfs, "volume");
        if let Some(size) = parsed.get("size").and_then(|size| props::size_gib(size)) {
            fields.insert(LxcField::RootfsGb, json!(size));
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
    fields.insert(LxcField::Mounts, Value::Object(mounts));
    devices.sort_by(|left, right| left.as_str().cmp(&right.as_str()));
    fields.insert(LxcField::Devices, Value::Array(devices));
    let owned = text("tags").is_some_and(|tags| phoenix_pve::has_owner_tag(&tags));
    fields.insert(LxcField::Owned, json!(owned));
    fields.insert(LxcField::Status, json!(status));
    fields.insert(LxcField::Snapshots, json!(snapshots));
    fields.insert(LxcField::FirewallEnabled, json!(firewall.enabled));
    fields.insert(LxcField::FirewallRules, Value::Array(firewall.rules.clone()));
    if let Some(records) = records {
        let records = records
            .iter()
            .map(|(name, digest)| (name.clone(), json!(digest)))
            .collect();
        fields.insert(LxcField::GuestScripts, Value::Object(records));
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

/// The fields the configuration declares, in the shape of [`observed_fields`]; `gpu` is what was
/// discovered of the node's NVIDIA devices, for GPU containers' device entries.
pub(crate) fn desired_fields(
    container: &ContainerConfig,
    domain: Option<&str>,
    gpu: Option<&NvidiaDevices>,
) -> Fields<LxcField> {
    let mut fields = BTreeMap::new();
    fields.insert(LxcField::Hostname, json!(container.name));
    if let Some(node) = &container.node {
        fields.insert(LxcField::Node, json!(node));
    }
    if let Some(cores) = container.cores {
        fields.insert(LxcField::Cores, json!(cores));
    }
    if let Some(memory) = container.memory_mb {
        fields.insert(LxcField::Memory, json!(memory));
    }
    if let Some(swap) = container.swap_mb {
        fields.insert(LxcField::Swap, json!(swap));
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
        fields.insert(LxcField::Net0, Value::Object(net));
        if let Some(nameservers) = &network.nameservers {
            fields.insert(LxcField::Nameserver, json!(props::nameservers(nameservers)));
        }
        if let Some(domain) = network.searchdomain.as_deref().or(domain) {
            fields.insert(LxcField::Searchdomain, json!(domain));
        }
    }
    fields.insert(LxcField::Onboot, json!(i64::from(container.start_at_boot)));
    if let Some(startup) = props::startup(container.boot_order, container.boot_delay) {
        fields.insert(LxcField::Startup, startup);
    }
    if !container.pct_options.is_empty() {
        let features: Map<String, Value> = container
            .pct_options
            .iter()
            .flat_map(|options| options.split(','))
            .filter_map(|item| item.split_once('='))
            .map(|(key, value)| (key.trim().to_owned(), json!(normalise_flag(value.trim()))))
            .collect();
        fields.insert(LxcField::Features, Value::Object(features));
    }
    if let Some(size) = container.storage_size_gb {
        fields.insert(LxcField::RootfsGb, json!(size as f64));
    }
    fields.insert(
        LxcField::Unprivileged,
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
        fields.insert(LxcField::Mounts, Value::Object(mounts));
    }
    let gpus = gpu_indices(container.gpu_assignment.as_deref());
    if !gpus.is_empty() {
        fields.insert(LxcField::Devices, json!(gpu_devices(&gpus, gpu)));
    }
    if let Some(firewall) = &container.firewall {
        fields.insert(LxcField::FirewallEnabled, json!(firewall.enabled));
        let rules: Vec<Value> = firewall
            .rules
            .iter()
            .map(phoenix_pve::firewall::rule_value)
            .collect();
        fields.insert(LxcField::FirewallRules, Value::Array(rules));
    }
    fields.insert(LxcField::Owned, json!(true));
    fields.insert(LxcField::Status, json!("running"));
    if let Some(snapshot) = &container.template_snapshot_name {
        fields.insert(LxcField::Snapshots, json!([snapshot]));
    }
    fields
}

/// The device entries of a container with the GPUs `indices`: built from the node's NVIDIA devices as
/// discovered (each GPU's node and every driver-wide node); where nothing could be discovered (no host
/// channel, or no driver loaded yet), the GPUs' own nodes, which apply discovers again before it writes.
pub(crate) fn gpu_devices(indices: &[u32], discovered: Option<&NvidiaDevices>) -> Vec<String> {
    match discovered.map(|found| found.for_container("the node", indices)) {
        Some(Ok(paths)) => paths,
        _ => {
            let mut paths: Vec<String> = indices
                .iter()
                .map(|index| format!("/dev/nvidia{index}"))
                .collect();
            paths.sort();
            paths
        }
    }
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
pub(crate) fn compare(desired: &Fields<LxcField>, observed: &Fields<LxcField>) -> Vec<TypedChange<LxcField>> {
    let mut changes = Vec::new();
    for (field, wanted) in desired {
        let live = observed.get(field);
        let change = |new: Value, consequence: Consequence| TypedChange {
            field: field.clone(),
            old: live.cloned(),
            new,
            consequence,
        };
        match field {
            LxcField::Net0 | LxcField::Startup | LxcField::GuestScripts => {
                if let Some(merged) = compare::overlay(live, wanted) {
                    changes.push(change(merged, Consequence::Live));
                }
            }
            // Container features and raw LXC keys are read when the container starts.
            LxcField::Features | LxcField::RawLxc => {
                if let Some(merged) = compare::overlay(live, wanted) {
                    changes.push(change(merged, Consequence::Restart));
                }
            }
            LxcField::Mounts => changes.extend(diff_mounts(wanted, live)),
            LxcField::Placement => {}
            LxcField::Snapshots => {
                if let Some(all) = compare::with_missing(live, wanted) {
                    changes.push(change(all, Consequence::Live));
                }
            }
            // Sizes are minimums (see `compare::must_grow`).
            LxcField::RootfsGb => {
                if compare::must_grow(live, wanted) {
                    changes.push(change(wanted.clone(), Consequence::Live));
                }
            }
            _ if live == Some(wanted) => {}
            LxcField::Unprivileged => changes.push(change(wanted.clone(), Consequence::Destructive)),
            LxcField::Devices => changes.push(change(wanted.clone(), Consequence::Restart)),
            // A running container migrates in restart mode: it is down while its disks move.
            LxcField::Node => {
                let running = observed
                    .get(&LxcField::Status)
                    .is_some_and(|status| status == "running");
                let consequence = if running {
                    Consequence::Downtime
                } else {
                    Consequence::Live
                };
                changes.push(change(wanted.clone(), consequence));
            }
            LxcField::Cores
            | LxcField::FirewallEnabled
            | LxcField::FirewallRules
            | LxcField::Hostname
            | LxcField::Memory
            | LxcField::Mount(_)
            | LxcField::Nameserver
            | LxcField::Onboot
            | LxcField::Owned
            | LxcField::Searchdomain
            | LxcField::Status
            | LxcField::Swap => changes.push(change(wanted.clone(), Consequence::Live)),
        }
    }
    changes
}

/// Mount points keyed by container path; indices stay stable, new mounts take the next free index.
fn diff_mounts(wanted: &Value, live: Option<&Value>) -> Vec<TypedChange<LxcField>> {
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
        changes.push(TypedChange {
            field: LxcField::Mount(path.clone()),
            old: existing.map(|existing| Value::Object(existing.clone())),
            new: Value::Object(new),
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
        let new = change.new;
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
        let new = change.new;
        assert_eq!(new["volume"], "tank:subvol-101-disk-1");
        assert_eq!(new["ro"], true);
    }

    #[test]
    fn every_field_name_reads_back_and_plans_list_them_alphabetically() {
        let names: Vec<String> = LxcField::all().iter().map(FieldKey::name).collect();
        let mut sorted = names.clone();
        sorted.sort();
        assert_eq!(names, sorted, "variants are declared in the order of their names");
        for field in LxcField::all() {
            assert_eq!(LxcField::parse(&field.name()).as_ref(), Some(field));
        }
        let mount = LxcField::Mount("/srv/data".into());
        assert_eq!(LxcField::parse(&mount.name()), Some(mount.clone()));
        assert!(mount < LxcField::Mounts && LxcField::Memory < mount);
        assert_eq!(LxcField::parse("memory_mb"), None);
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
