//! `host/zfs/snapshots`: snapshot policies and replication, by configuring sanoid and syncoid (Debian's
//! `sanoid` package), on the host channel.
//!
//! - `/etc/sanoid/sanoid.conf` is written whole by Phoenix: a section per dataset under a policy (sanoid
//!   takes and prunes its snapshots; the package's own timer runs it every 15 minutes), and one per replica
//!   (pruned, never snapshotted there). sanoid prunes only the `autosnap_` snapshots it made, so a snapshot
//!   someone else took survives on either side. A file Phoenix did not write is refused, not replaced.
//! - Replication is one systemd timer per policy (`phoenix-replicate-<policy>.timer`, at the policy's
//!   `replicate_every`), whose service runs `/usr/local/lib/phoenix/replicate` over the pairs listed in
//!   `/etc/phoenix/replication/<policy>` (data, not shell code). It runs syncoid per pair: incremental from
//!   the newest common snapshot, with syncoid's own sync snapshot kept on the source so a failed run never
//!   loses the base; `--no-rollback`, so the replica is never rolled back over snapshots taken there (such a
//!   snapshot makes the pair fail, and the run says so). A replica's missing parents are created first.
//! - Plans show, as facts, each replica's newest snapshot and its age; `phoenix status` the stalest's.

use std::collections::BTreeMap;

use phoenix_core::config::hypervisor::Retention;
use phoenix_core::{ManagerError, SnapshotPlan};
use phoenix_pve::host::sha256_hex;
use serde_json::{Value, json};

use crate::node::Node;

const SANOID_CONF: &str = "/etc/sanoid/sanoid.conf";
const HEADER: &str =
    "# Written by Phoenix (host/zfs/snapshots) from zfs.snapshot_policies; Phoenix writes this file whole.\n";
const SCRIPT: &str = "/usr/local/lib/phoenix/replicate";
const PAIRS: &str = "/etc/phoenix/replication";
const UNITS: &str = "/etc/systemd/system";

/// Replicates each `<source> <replica>` line of the file it is given, with syncoid; exits 1 when any
/// pair failed, after trying every pair.
const REPLICATE: &str = r#"#!/bin/sh
# Written by Phoenix (host/zfs/snapshots): replicates each "<source> <replica>" line of "$1" with syncoid.
set -u
status=0
while read -r source replica; do
    [ -n "$source" ] || continue
    # The replica's parents, one level at a time (they hold nothing themselves).
    parent="${replica%/*}"; missing=""
    while [ "${parent#*/}" != "$parent" ] && ! zfs list -H -o name "$parent" >/dev/null 2>&1; do
        missing="$parent $missing"; parent="${parent%/*}"
    done
    for dataset in $missing; do zfs create -o canmount=off "$dataset" || status=1; done
    syncoid --no-privilege-elevation --no-rollback "$source" "$replica" || { echo "phoenix: $source -> $replica failed" >&2; status=1; }
done < "$1"
exit $status
"#;

fn digest(text: &str) -> String {
    format!("sha256:{}", &sha256_hex(text.as_bytes())[..16])
}

fn counts(out: &mut String, retention: &Retention) {
    for (period, count) in [
        ("frequently", retention.frequently),
        ("hourly", retention.hourly),
        ("daily", retention.daily),
        ("weekly", retention.weekly),
        ("monthly", retention.monthly),
        ("yearly", retention.yearly),
    ] {
        out.push_str(&format!("\t{period} = {count}\n"));
    }
}

/// sanoid's configuration: a section per dataset and replica, a template per policy and side.
fn sanoid_conf(plan: &SnapshotPlan) -> String {
    let mut out = HEADER.to_owned();
    let mut templates: BTreeMap<String, (Retention, bool)> = BTreeMap::new();
    for dataset in &plan.datasets {
        let source = format!("phoenix_{}", dataset.policy);
        out.push_str(&format!("\n[{}]\n\tuse_template = {source}\n", dataset.dataset));
        templates.insert(source, (dataset.retention, true));
        if let Some(replica) = &dataset.replica {
            let name = format!("phoenix_{}_replica", dataset.policy);
            out.push_str(&format!("\n[{}]\n\tuse_template = {name}\n", replica.dataset));
            templates.insert(name, (replica.retention, false));
        }
    }
    for (name, (retention, autosnap)) in &templates {
        out.push_str(&format!("\n[template_{name}]\n"));
        counts(&mut out, retention);
        let autosnap = if *autosnap { "yes" } else { "no" };
        out.push_str(&format!("\tautosnap = {autosnap}\n\tautoprune = yes\n"));
    }
    out
}

/// Every file of the replication, by path: the script, and per policy its pairs, service and timer.
fn replication_files(plan: &SnapshotPlan) -> BTreeMap<String, String> {
    let mut pairs: BTreeMap<&str, (String, &str)> = BTreeMap::new();
    for dataset in &plan.datasets {
        if let Some(replica) = &dataset.replica {
            let entry = pairs
                .entry(dataset.policy.as_str())
                .or_insert_with(|| (String::new(), replica.every.as_str()));
            entry
                .0
                .push_str(&format!("{} {}\n", dataset.dataset, replica.dataset));
        }
    }
    let mut files = BTreeMap::new();
    if pairs.is_empty() {
        return files;
    }
    files.insert(SCRIPT.to_owned(), REPLICATE.to_owned());
    for (policy, (lines, every)) in pairs {
        let unit = format!("phoenix-replicate-{policy}");
        files.insert(format!("{PAIRS}/{policy}"), lines);
        files.insert(
            format!("{UNITS}/{unit}.service"),
            format!(
                "# Written by Phoenix (host/zfs/snapshots).\n[Unit]\nDescription=Phoenix: replicate the ZFS datasets \
                 of snapshot policy {policy}\nAfter=zfs.target\n\n[Service]\nType=oneshot\nExecStart={SCRIPT} \
                 {PAIRS}/{policy}\n"
            ),
        );
        files.insert(
            format!("{UNITS}/{unit}.timer"),
            format!(
                "# Written by Phoenix (host/zfs/snapshots).\n[Unit]\nDescription=Phoenix: replicate snapshot policy \
                 {policy}\n\n[Timer]\nOnCalendar={every}\nPersistent=true\n\n[Install]\nWantedBy=timers.target\n"
            ),
        );
        files.insert(
            format!("{UNITS}/timers.target.wants/{unit}.timer"),
            format!("-> {UNITS}/{unit}.timer"),
        );
    }
    files
}

/// The declared fields: the digests of sanoid's file and of the replication's files.
pub(crate) fn desired(plan: &SnapshotPlan) -> BTreeMap<String, Value> {
    let mut fields = BTreeMap::from([("sanoid_conf".to_owned(), json!(digest(&sanoid_conf(plan))))]);
    let files = replication_files(plan);
    if !files.is_empty() {
        fields.insert("replication".to_owned(), json!(digest(&join(&files))));
    }
    fields
}

fn join(files: &BTreeMap<String, String>) -> String {
    files
        .iter()
        .map(|(path, text)| format!("{path}\n{text}"))
        .collect::<Vec<_>>()
        .join("\0")
}

/// What the node has of a file of `files`: a symlink as `-> target`, a file by its text.
async fn read(node: &Node, path: &str) -> Result<Option<String>, ManagerError> {
    if path.contains(".wants/") {
        let output = node.run(&["readlink", "--", path], None).await?;
        return Ok(output.success().then(|| format!("-> {}", output.stdout.trim())));
    }
    node.read_file(path).await
}

/// What the node has: the digests of the files as they are, and each replica's newest snapshot.
pub(crate) async fn observe(
    node: &Node,
    plan: &SnapshotPlan,
) -> Result<BTreeMap<String, Value>, ManagerError> {
    let mut fields = BTreeMap::new();
    match node.read_file(SANOID_CONF).await? {
        Some(text) if text.starts_with(HEADER) => {
            fields.insert("sanoid_conf".to_owned(), json!(digest(&text)));
        }
        Some(_) => {
            fields.insert("sanoid_conf".to_owned(), json!("(written by someone else)"));
        }
        None => {}
    }
    let wanted = replication_files(plan);
    if !wanted.is_empty() {
        let mut live = BTreeMap::new();
        for path in wanted.keys() {
            if let Some(text) = read(node, path).await? {
                live.insert(path.clone(), text);
            }
        }
        fields.insert("replication".to_owned(), json!(digest(&join(&live))));
        let mut replicas = serde_json::Map::new();
        for dataset in &plan.datasets {
            if let Some(replica) = &dataset.replica {
                replicas.insert(dataset.dataset.clone(), newest(node, &replica.dataset).await?);
            }
        }
        fields.insert("status".to_owned(), json!(summary(&replicas)));
        fields.insert("replicas".to_owned(), Value::Object(replicas));
    }
    Ok(fields)
}

/// What `phoenix status` shows: how old the stalest replica is.
fn summary(replicas: &serde_json::Map<String, Value>) -> String {
    let ages: Vec<Option<i64>> = replicas
        .values()
        .map(|replica| replica["age_seconds"].as_i64())
        .collect();
    if ages.iter().any(Option::is_none) {
        return "a replica has no snapshot yet".to_owned();
    }
    let oldest = ages.into_iter().flatten().max().unwrap_or(0);
    let age = match oldest {
        0..60 => format!("{oldest} s"),
        60..3600 => format!("{} min", oldest / 60),
        3600..86400 => format!("{} h", oldest / 3600),
        _ => format!("{} d", oldest / 86400),
    };
    format!("replicated {age} ago")
}

/// The newest snapshot of a replica and its age, or that there is none yet.
async fn newest(node: &Node, dataset: &str) -> Result<Value, ManagerError> {
    let output = node
        .run(
            &["zfs", "list", "-H", "-t", "snapshot", "-o", "name", "-r", dataset],
            None,
        )
        .await?;
    let prefix = format!("{dataset}@");
    let newest = output.stdout.lines().rev().find(|line| line.starts_with(&prefix));
    let Some(snapshot) = newest.filter(|_| output.success()).map(str::to_owned) else {
        return Ok(json!("none yet"));
    };
    let created = node
        .check(&["zfs", "get", "-Hp", "-o", "value", "creation", &snapshot], None)
        .await?;
    let now = node.check(&["date", "+%s"], None).await?;
    let age = now.trim().parse::<i64>().unwrap_or(0) - created.trim().parse::<i64>().unwrap_or(0);
    Ok(json!({ "snapshot": snapshot, "age_seconds": age.max(0) }))
}

/// Writes what differs: sanoid's file (refusing one Phoenix did not write), then the replication's files,
/// and starts changed timers where systemd runs.
pub(crate) async fn apply(node: &Node, plan: &SnapshotPlan) -> Result<(), ManagerError> {
    let conf = sanoid_conf(plan);
    match node.read_file(SANOID_CONF).await? {
        Some(text) if !text.starts_with(HEADER) => {
            return Err(ManagerError::failed(format!(
                "node {}: {SANOID_CONF} was not written by Phoenix; move its sections into zfs.snapshot_policies \
                 (or remove the file), then run again: Phoenix writes it whole",
                node.name()
            )));
        }
        Some(text) if text == conf => {}
        _ => node.write_file(SANOID_CONF, &conf, "0644", None).await?,
    }
    let mut timers = Vec::new();
    for (path, text) in replication_files(plan) {
        if read(node, &path).await?.as_deref() == Some(text.as_str()) {
            continue;
        }
        if let Some(target) = text.strip_prefix("-> ") {
            node.check(&["mkdir", "-p", &format!("{UNITS}/timers.target.wants")], None)
                .await?;
            node.change(
                &format!("enabled {}", target.rsplit('/').next().unwrap_or(target)),
                &["ln", "-sfn", target, &path],
                None,
            )
            .await?;
            continue;
        }
        let mode = if path == SCRIPT { "0755" } else { "0644" };
        node.write_file(&path, &text, mode, None).await?;
        if let Some(timer) = path
            .strip_suffix(".timer")
            .and_then(|unit| unit.rsplit('/').next())
        {
            timers.push(format!("{timer}.timer"));
        }
    }
    if !timers.is_empty()
        && node
            .run(&["test", "-d", "/run/systemd/system"], None)
            .await?
            .success()
    {
        node.change("reloaded systemd", &["systemctl", "daemon-reload"], None)
            .await?;
        for timer in &timers {
            node.change(
                &format!("started {timer}"),
                &["systemctl", "restart", timer],
                None,
            )
            .await?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use phoenix_core::{Replica, SnapshotDataset};

    use super::*;

    fn plan() -> SnapshotPlan {
        let retention = Retention {
            hourly: 24,
            daily: 7,
            ..Retention::default()
        };
        SnapshotPlan {
            datasets: vec![SnapshotDataset {
                dataset: "fast/data".into(),
                policy: "prod".into(),
                retention,
                replica: Some(Replica {
                    dataset: "slow/fast/data".into(),
                    retention: Retention {
                        monthly: 12,
                        ..retention
                    },
                    every: "hourly".into(),
                }),
            }],
        }
    }

    #[test]
    fn sanoid_snapshots_the_source_and_only_prunes_the_replica() {
        let conf = sanoid_conf(&plan());
        assert!(conf.starts_with(HEADER));
        assert!(conf.contains("[fast/data]\n\tuse_template = phoenix_prod\n"));
        assert!(conf.contains("[slow/fast/data]\n\tuse_template = phoenix_prod_replica\n"));
        assert!(conf.contains(
            "[template_phoenix_prod_replica]\n\tfrequently = 0\n\thourly = 24\n\tdaily = 7\n\tweekly = 0\n\tmonthly = 12\n\
             \tyearly = 0\n\tautosnap = no\n\tautoprune = yes\n"
        ));
    }

    #[test]
    fn replication_is_a_timer_per_policy_over_a_list_of_pairs() {
        let files = replication_files(&plan());
        assert_eq!(
            files["/etc/phoenix/replication/prod"],
            "fast/data slow/fast/data\n"
        );
        assert!(files["/etc/systemd/system/phoenix-replicate-prod.timer"].contains("OnCalendar=hourly\n"));
        assert!(
            files["/etc/systemd/system/phoenix-replicate-prod.service"]
                .contains("ExecStart=/usr/local/lib/phoenix/replicate /etc/phoenix/replication/prod\n")
        );
        assert_eq!(
            files["/etc/systemd/system/timers.target.wants/phoenix-replicate-prod.timer"],
            "-> /etc/systemd/system/phoenix-replicate-prod.timer"
        );
    }
}
