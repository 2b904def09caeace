//! `host/zfs/*`: ZFS pools, datasets and the ARC limit, on the host channel with the node's own `zpool`
//! and `zfs`.
//!
//! - A pool is compared by its layout (the vdev type and its disks, from `zpool status -P`). A missing
//!   pool is created only on disks that hold nothing: each is probed with `wipefs --no-act` first, and a
//!   partition table, a file system or a ZFS label on any of them fails the step naming the disk and what
//!   is on it, before anything is written. A pool that exists with another layout is reported and never
//!   rebuilt.
//! - A dataset is compared by the properties it declares (`zfs get -Hp all`; sizes as numbers, so
//!   `quota=1.4T` matches what ZFS stores); a missing one is created with them, an existing one gets
//!   `zfs set` for each property that differs, and nothing else. A dataset Phoenix creates carries the
//!   user property `phoenix:owner=phoenix` (set on it, not inherited): one taken out of the configuration
//!   is planned as destroyed (destructive, so only with `--allow-destroy`), and only when nothing is under
//!   it and no Proxmox storage uses it. Phoenix destroys no pool, and no dataset it did not create.
//! - The ARC limit is `zfs_arc_max` in `/etc/modprobe.d/zfs.conf` (other lines of the file are kept) and,
//!   where the kernel module is loaded, its live value in `/sys/module/zfs/parameters`; the initramfs is
//!   rebuilt only when the file changed.

use std::collections::BTreeMap;
use std::time::Duration;

use phoenix_core::config::hypervisor::{RaidLevel, ZfsDataset, ZfsPool};
use phoenix_core::{Change, ManagerError};
use serde_json::{Value, json};

use crate::node::Node;

/// The modprobe file of the ZFS module's options.
const MODPROBE: &str = "/etc/modprobe.d/zfs.conf";

/// The live ARC limit, where the module is loaded.
const LIVE_ARC: &str = "/sys/module/zfs/parameters/zfs_arc_max";

/// The user property that marks a dataset Phoenix created, and its value.
const OWNER: &str = "phoenix:owner";
const OWNER_VALUE: &str = "phoenix";

/// How long `update-initramfs` may take.
const INITRAMFS_TIMEOUT: Duration = Duration::from_secs(10 * 60);

/// A pool's layout as `zpool status` would show it: `mirror: /dev/a /dev/b`; several vdevs joined by `; `.
pub(crate) fn layout(pool: &ZfsPool) -> String {
    let kind = match pool.raid_level {
        RaidLevel::Single | RaidLevel::Stripe => "stripe",
        RaidLevel::Mirror => "mirror",
        RaidLevel::Raidz | RaidLevel::Raidz1 => "raidz1",
        RaidLevel::Raidz2 => "raidz2",
        RaidLevel::Raidz3 => "raidz3",
    };
    format!("{kind}: {}", pool.disks.join(" "))
}

/// The declared fields of a pool.
pub(crate) fn pool_desired(pool: &ZfsPool) -> BTreeMap<String, Value> {
    BTreeMap::from([("layout".to_owned(), json!(layout(pool)))])
}

/// What the node has of a pool: `None` when there is no such pool.
pub(crate) async fn pool_observe(
    node: &Node,
    pool: &ZfsPool,
) -> Result<Option<BTreeMap<String, Value>>, ManagerError> {
    let pools = node.check(&["zpool", "list", "-H", "-o", "name"], None).await?;
    if !pools.lines().any(|line| line.trim() == pool.name) {
        return Ok(None);
    }
    let status = node.check(&["zpool", "status", "-P", &pool.name], None).await?;
    Ok(Some(BTreeMap::from([(
        "layout".to_owned(),
        json!(parse_layout(&status, &pool.name)),
    )])))
}

/// The data vdevs of `zpool status` output, in [`layout`]'s form. Whole disks that ZFS partitioned
/// itself show as their `-part1`; they are named as the disk.
fn parse_layout(status: &str, name: &str) -> String {
    let mut vdevs: Vec<(String, Vec<String>)> = Vec::new();
    let mut pool_indent = None;
    for line in status.lines() {
        let Some(first) = line.split_whitespace().next() else {
            continue;
        };
        let indent = line.len() - line.trim_start().len();
        let Some(base) = pool_indent else {
            if first == name && line.starts_with(char::is_whitespace) {
                pool_indent = Some(indent);
            }
            continue;
        };
        if indent <= base {
            break; // logs, cache, spares, or the end
        }
        let disk = first.strip_suffix("-part1").unwrap_or(first).to_owned();
        let kind = ["mirror", "raidz1", "raidz2", "raidz3", "raidz"]
            .into_iter()
            .find(|kind| first.starts_with(&format!("{kind}-")));
        let top = indent <= base + 2;
        match (top, kind, vdevs.last_mut()) {
            (true, Some(kind), _) => {
                let kind = if kind == "raidz" { "raidz1" } else { kind };
                vdevs.push((kind.to_owned(), Vec::new()));
            }
            (true, None, Some((kind, disks))) if kind == "stripe" => disks.push(disk),
            (true, None, _) => vdevs.push(("stripe".to_owned(), vec![disk])),
            (false, _, Some((_, disks))) => disks.push(disk),
            (false, _, None) => {}
        }
    }
    vdevs
        .iter()
        .map(|(kind, disks)| format!("{kind}: {}", disks.join(" ")))
        .collect::<Vec<_>>()
        .join("; ")
}

/// Creates a missing pool on disks that hold nothing; refuses to touch one that exists.
pub(crate) async fn pool_apply(node: &Node, pool: &ZfsPool, change: &Change) -> Result<(), ManagerError> {
    if change.action != phoenix_core::Action::Create {
        let live = change
            .fields
            .first()
            .and_then(|field| field.old.as_ref())
            .and_then(Value::as_str)
            .unwrap_or("another layout");
        return Err(ManagerError::failed(format!(
            "pool {} exists on node {} as `{live}`, not `{}` as declared: Phoenix never rebuilds a pool; change \
             the configuration to what the node has, or rebuild the pool by hand",
            pool.name,
            node.name(),
            layout(pool)
        )));
    }
    for disk in &pool.disks {
        let argv = ["wipefs", "--no-act", "--json", disk.as_str()];
        let output = node.run(&argv, None).await?;
        if !output.success() {
            return Err(node.failure(&argv, &output));
        }
        let found = signatures(&output.stdout);
        if !found.is_empty() {
            return Err(ManagerError::failed(format!(
                "disk {disk} of pool {} holds data ({}): Phoenix creates pools only on empty disks; wipe it \
                 by hand if it may be lost",
                pool.name,
                found.join(", ")
            )));
        }
    }
    let mut argv = vec!["zpool", "create", pool.name.as_str()];
    let kind = layout(pool);
    let kind = kind.split(':').next().unwrap_or_default();
    if kind != "stripe" {
        argv.push(kind);
    }
    argv.extend(pool.disks.iter().map(String::as_str));
    node.change(&format!("created the pool {} ({kind})", pool.name), &argv, None)
        .await
        .map(drop)
}

/// What `wipefs --json` found: each signature's type, and the pool's name for a ZFS label.
fn signatures(json_text: &str) -> Vec<String> {
    let parsed: Value = serde_json::from_str(json_text).unwrap_or(Value::Null);
    let mut found: Vec<String> = parsed["signatures"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|signature| {
            let kind = signature["type"].as_str().unwrap_or("unknown");
            match signature["label"].as_str() {
                Some(label) if !label.is_empty() => format!("{kind} \"{label}\""),
                _ => kind.to_owned(),
            }
        })
        .collect();
    found.dedup();
    found
}

/// The properties a dataset declares, in order: `key=value` pairs of `properties`.
pub(crate) fn declared_properties(dataset: &ZfsDataset) -> Vec<(String, String)> {
    dataset
        .properties
        .iter()
        .flat_map(|text| text.split(','))
        .filter_map(|pair| {
            let (key, value) = pair.split_once('=')?;
            Some((key.trim().to_owned(), value.trim().to_owned()))
        })
        .collect()
}

/// Properties whose values are sizes, compared as numbers of bytes.
const SIZES: &[&str] = &[
    "quota",
    "refquota",
    "reservation",
    "refreservation",
    "recordsize",
    "volsize",
    "volblocksize",
    "special_small_blocks",
];

/// A size as ZFS reads it (`128K`, `1.4T`, `800G`, `512`), in bytes; `None` for `none` or a non-size.
fn bytes(text: &str) -> Option<u64> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: f64 = number.parse().ok()?;
    let shift = match unit.trim_end_matches(['B', 'b']).to_ascii_uppercase().as_str() {
        "" => 0,
        "K" => 10,
        "M" => 20,
        "G" => 30,
        "T" => 40,
        "P" => 50,
        "E" => 60,
        _ => return None,
    };
    Some((number * (1u64 << shift) as f64) as u64)
}

/// The full name of a dataset.
pub(crate) fn dataset_name(dataset: &ZfsDataset) -> String {
    format!("{}/{}", dataset.pool, dataset.name)
}

/// The declared fields of a dataset: its properties as declared.
pub(crate) fn dataset_desired(dataset: &ZfsDataset) -> BTreeMap<String, Value> {
    declared_properties(dataset)
        .into_iter()
        .map(|(key, value)| (key, json!(value)))
        .collect()
}

/// What the node has of a dataset's declared properties: a value that means the declared one (a size
/// of the same bytes) is shown as declared, others as ZFS prints them. `None` when there is no dataset.
pub(crate) async fn dataset_observe(
    node: &Node,
    dataset: &ZfsDataset,
) -> Result<Option<BTreeMap<String, Value>>, ManagerError> {
    let name = dataset_name(dataset);
    let Some(readable) = zfs_get(node, &name, false).await? else {
        return Ok(None);
    };
    let exact = zfs_get(node, &name, true).await?.unwrap_or_default();
    let mut fields = BTreeMap::new();
    for (key, declared) in declared_properties(dataset) {
        let Some(shown) = readable.get(&key) else {
            continue;
        };
        let same = if SIZES.contains(&key.as_str()) {
            match (
                bytes(&declared),
                exact.get(&key).and_then(|value| value.parse::<u64>().ok()),
            ) {
                (Some(want), Some(have)) => want == have,
                _ => declared.eq_ignore_ascii_case(shown),
            }
        } else {
            declared == *shown
        };
        fields.insert(key, json!(if same { declared } else { shown.clone() }));
    }
    Ok(Some(fields))
}

/// Every property of a dataset (`-p`: exact numbers), or `None` when it does not exist.
async fn zfs_get(
    node: &Node,
    name: &str,
    exact: bool,
) -> Result<Option<BTreeMap<String, String>>, ManagerError> {
    let flags = if exact { "-Hp" } else { "-H" };
    let argv = ["zfs", "get", flags, "-o", "property,value", "all", name];
    let output = node.run(&argv, None).await?;
    if !output.success() {
        if output.stderr.contains("does not exist") {
            return Ok(None);
        }
        return Err(node.failure(&argv, &output));
    }
    Ok(Some(
        output
            .stdout
            .lines()
            .filter_map(|line| line.split_once('\t'))
            .map(|(key, value)| (key.to_owned(), value.to_owned()))
            .collect(),
    ))
}

/// The datasets Phoenix created on the node (`phoenix:owner` set on them), by name (`pool/name`), each with
/// the space it uses. None where ZFS cannot list them (no ZFS, or its module not loaded): then nothing is
/// planned to go, which is the safe side.
pub(crate) async fn owned_datasets(node: &Node) -> Result<BTreeMap<String, Value>, ManagerError> {
    let argv = ["zfs", "get", "-H", "-s", "local", "-o", "name,value", OWNER];
    let output = node.run(&argv, None).await?;
    if !output.success() {
        return Ok(BTreeMap::new());
    }
    let names: Vec<&str> = output
        .stdout
        .lines()
        .filter_map(|line| line.split_once('\t'))
        .filter(|(name, value)| *value == OWNER_VALUE && !name.contains('@'))
        .map(|(name, _)| name)
        .collect();
    if names.is_empty() {
        return Ok(BTreeMap::new());
    }
    // The space of every dataset in one listing, however many are Phoenix's.
    let listing = node
        .check(&["zfs", "list", "-H", "-o", "name,used"], None)
        .await?;
    let used: BTreeMap<&str, &str> = listing.lines().filter_map(|line| line.split_once('\t')).collect();
    Ok(names
        .into_iter()
        .map(|name| (name.to_owned(), json!(used.get(name).copied().unwrap_or("?"))))
        .collect())
}

/// Destroys a dataset Phoenix created that the configuration no longer declares, with its snapshots; refused
/// while a dataset is under it, a Proxmox storage uses it, or it is not Phoenix's (any more).
pub(crate) async fn dataset_destroy(node: &Node, name: &str) -> Result<(), ManagerError> {
    let owner = node
        .check(
            &["zfs", "get", "-H", "-s", "local", "-o", "value", OWNER, name],
            None,
        )
        .await?;
    if owner.trim() != OWNER_VALUE {
        return Err(ManagerError::failed(format!(
            "the dataset {name} is not marked as Phoenix's ({OWNER}), so it is left as it is"
        )));
    }
    let listed = node
        .check(&["zfs", "list", "-H", "-r", "-o", "name", name], None)
        .await?;
    let under: Vec<&str> = listed.lines().filter(|line| *line != name).collect();
    if !under.is_empty() {
        return Err(ManagerError::failed(format!(
            "the dataset {name} has {} under it: declare what should stay, or destroy it by hand; nothing \
             was destroyed",
            under.join(", ")
        )));
    }
    let mountpoint = node
        .check(&["zfs", "get", "-H", "-o", "value", "mountpoint", name], None)
        .await?;
    let storages: Vec<Value> = node.client().get("/storage", &[]).await?;
    let users: Vec<&str> = storages
        .iter()
        .filter(|storage| {
            storage["pool"].as_str() == Some(name) || storage["path"].as_str() == Some(mountpoint.trim())
        })
        .filter_map(|storage| storage["storage"].as_str())
        .collect();
    if !users.is_empty() {
        return Err(ManagerError::failed(format!(
            "the dataset {name} is the Proxmox storage {}: remove the storage in Proxmox first (Phoenix \
             removes no storage); nothing was destroyed",
            users.join(", ")
        )));
    }
    node.change(
        &format!("destroyed the dataset {name} and its snapshots"),
        &["zfs", "destroy", "-r", name],
        None,
    )
    .await
    .map(drop)
}

/// Creates a missing dataset with its properties, or sets each property that differs.
pub(crate) async fn dataset_apply(
    node: &Node,
    dataset: &ZfsDataset,
    change: &Change,
) -> Result<(), ManagerError> {
    let name = dataset_name(dataset);
    let declared = declared_properties(dataset);
    if change.action == phoenix_core::Action::Create {
        let options: Vec<String> = declared
            .iter()
            .map(|(key, value)| format!("{key}={value}"))
            .collect();
        let owner = format!("{OWNER}={OWNER_VALUE}");
        let mut argv = vec!["zfs", "create", "-o", owner.as_str()];
        for option in &options {
            argv.extend(["-o", option.as_str()]);
        }
        argv.push(&name);
        return node
            .change(&format!("created the dataset {name}"), &argv, None)
            .await
            .map(drop);
    }
    for field in &change.fields {
        let Some((key, value)) = declared.iter().find(|(key, _)| *key == field.field) else {
            continue;
        };
        let assignment = format!("{key}={value}");
        node.change(
            &format!("set {assignment} on {name}"),
            &["zfs", "set", &assignment, &name],
            None,
        )
        .await?;
    }
    Ok(())
}

/// The declared ARC limit, in bytes.
fn arc_bytes(gib: u32) -> u64 {
    u64::from(gib) << 30
}

/// The declared fields of the ARC limit.
pub(crate) fn arc_desired(gib: u32) -> BTreeMap<String, Value> {
    BTreeMap::from([("zfs_arc_max".to_owned(), json!(arc_bytes(gib).to_string()))])
}

/// `zfs_arc_max` of the modprobe file.
fn file_arc(text: &str) -> Option<String> {
    text.lines()
        .filter(|line| line.split_whitespace().take(2).eq(["options", "zfs"]))
        .flat_map(|line| line.split_whitespace().skip(2))
        .filter_map(|option| option.strip_prefix("zfs_arc_max="))
        .last()
        .map(str::to_owned)
}

/// The modprobe file with `zfs_arc_max` set to `value`: its own option replaced where it is, else a line
/// of its own appended; everything else kept.
fn with_arc(text: &str, value: &str) -> String {
    let mut found = false;
    let mut lines: Vec<String> = Vec::new();
    for line in text.lines() {
        if line.split_whitespace().take(2).eq(["options", "zfs"]) && line.contains("zfs_arc_max=") {
            if found {
                continue;
            }
            found = true;
            let words: Vec<String> = line
                .split_whitespace()
                .map(|word| {
                    if word.starts_with("zfs_arc_max=") {
                        format!("zfs_arc_max={value}")
                    } else {
                        word.to_owned()
                    }
                })
                .collect();
            lines.push(words.join(" "));
        } else {
            lines.push(line.to_owned());
        }
    }
    if !found {
        lines.push(format!("options zfs zfs_arc_max={value}"));
    }
    lines.join("\n") + "\n"
}

/// What the node has: the file's limit, and where the module is loaded, the live one when it differs.
pub(crate) async fn arc_observe(node: &Node) -> Result<BTreeMap<String, Value>, ManagerError> {
    let file = node.read_file(MODPROBE).await?.unwrap_or_default();
    let mut fields = BTreeMap::new();
    let in_file = file_arc(&file);
    let live = node.read_file(LIVE_ARC).await?.map(|text| text.trim().to_owned());
    let value = match (in_file, live) {
        (Some(in_file), Some(live)) if live != in_file => Some(format!("{in_file} (live: {live})")),
        (in_file, _) => in_file,
    };
    if let Some(value) = value {
        fields.insert("zfs_arc_max".to_owned(), json!(value));
    }
    Ok(fields)
}

/// Writes the limit where it differs: the file (then the initramfs), and the live value.
pub(crate) async fn arc_apply(node: &Node, gib: u32) -> Result<(), ManagerError> {
    let value = arc_bytes(gib).to_string();
    let file = node.read_file(MODPROBE).await?;
    let text = file.clone().unwrap_or_default();
    if file_arc(&text).as_deref() != Some(value.as_str()) {
        node.write_file(MODPROBE, &with_arc(&text, &value), "0644", None)
            .await?;
        node.change_for(
            "rebuilt the initramfs with the ARC limit",
            &["update-initramfs", "-u", "-k", "all"],
            INITRAMFS_TIMEOUT,
        )
        .await?;
    }
    if let Some(live) = node.read_file(LIVE_ARC).await?
        && live.trim() != value
    {
        let line = format!("{value}\n");
        node.change(
            &format!("set the live ARC limit to {value}"),
            &["dd", &format!("of={LIVE_ARC}"), "status=none"],
            Some(line.as_bytes()),
        )
        .await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(level: RaidLevel, disks: &[&str]) -> ZfsPool {
        ZfsPool {
            name: "tank".into(),
            raid_level: level,
            disks: disks.iter().map(|disk| (*disk).to_owned()).collect(),
        }
    }

    #[test]
    fn layouts_read_from_zpool_status_match_the_declared_ones() {
        let mirror = "  pool: tank\n state: ONLINE\nconfig:\n\n\tNAME                                STATE     READ WRITE CKSUM\n\
            \ttank                                ONLINE       0     0     0\n\
            \t  mirror-0                          ONLINE       0     0     0\n\
            \t    /dev/disk/by-id/nvme-A-part1    ONLINE       0     0     0\n\
            \t    /dev/disk/by-id/nvme-B-part1    ONLINE       0     0     0\n\
            \tcache\n\t  /dev/sdc1                         ONLINE       0     0     0\n\nerrors: No known data errors\n";
        assert_eq!(
            parse_layout(mirror, "tank"),
            "mirror: /dev/disk/by-id/nvme-A /dev/disk/by-id/nvme-B"
        );
        assert_eq!(
            layout(&pool(
                RaidLevel::Mirror,
                &["/dev/disk/by-id/nvme-A", "/dev/disk/by-id/nvme-B"]
            )),
            parse_layout(mirror, "tank")
        );
        let single = "config:\n\n\tNAME       STATE\n\ttank       ONLINE\n\t  /srv/d0  ONLINE\n";
        assert_eq!(parse_layout(single, "tank"), "stripe: /srv/d0");
        assert_eq!(layout(&pool(RaidLevel::Single, &["/srv/d0"])), "stripe: /srv/d0");
        let raidz = "config:\n\n\tNAME\n\ttank\n\t  raidz2-0\n\t    /a\n\t    /b\n\t    /c\n\t    /d\n";
        assert_eq!(parse_layout(raidz, "tank"), "raidz2: /a /b /c /d");
    }

    #[test]
    fn sizes_compare_as_zfs_stores_them() {
        assert_eq!(bytes("128K"), Some(131_072));
        assert_eq!(bytes("800G"), Some(858_993_459_200));
        assert_eq!(bytes("1.4T"), Some((1.4 * (1u64 << 40) as f64) as u64));
        assert_eq!(bytes("512"), Some(512));
        assert_eq!(bytes("none"), None);
    }

    #[test]
    fn the_arc_option_is_replaced_in_place_and_other_lines_kept() {
        let file = "# tuned by hand\noptions zfs zfs_arc_min=1073741824 zfs_arc_max=8589934592\n";
        assert_eq!(file_arc(file).as_deref(), Some("8589934592"));
        assert_eq!(
            with_arc(file, "34359738368"),
            "# tuned by hand\noptions zfs zfs_arc_min=1073741824 zfs_arc_max=34359738368\n"
        );
        assert_eq!(with_arc("", "1"), "options zfs zfs_arc_max=1\n");
        assert_eq!(arc_bytes(32), 34_359_738_368);
    }

    #[test]
    fn a_disk_with_a_label_is_named_with_what_is_on_it() {
        let found = r#"{"signatures": [{"device": "d0", "offset": "0x2e000", "type": "zfs_member", "label": "fast"},
            {"device": "d0", "offset": "0x2b000", "type": "zfs_member", "label": "fast"},
            {"device": "d0", "offset": "0x1fe", "type": "dos", "label": null}]}"#;
        assert_eq!(signatures(found), ["zfs_member \"fast\"", "dos"]);
        assert!(signatures("").is_empty());
    }
}
