//! The LXC manager converging real configurations against fakepve through the engine.

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use phoenix_core::{Address, CheckOptions, Outcome, Resource, SourceFile};
use phoenix_lxc::{Containers, LxcManager};
use phoenix_pve::Form;
use phoenix_pve::host::LocalHost;
use phoenix_pve::lifecycle::GuestType;
use phoenix_testing::{FakePve, Harness, fixture, gpu};
use serde_json::Value;

fn fixture() -> Vec<Resource> {
    let dir = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/estate"));
    fixture::resources(fixture::sources(dir), &CheckOptions::default())
}

/// The container manager, on a domain, against a fresh fakepve.
async fn start() -> Option<Harness> {
    start_with(fixture()).await
}

/// Converges, then reads container 101's firewall rules.
async fn converged_rules(harness: &Harness) -> Vec<Value> {
    assert!(harness.apply(&harness.plan().await).await.succeeded());
    harness
        .client
        .get("/nodes/pve1/lxc/101/firewall/rules", &[])
        .await
        .expect("reads")
}

/// [`start`] with other resources. GPU devices are discovered on this machine under a directory made
/// like the `/dev` and `/proc` of a node with two GPUs and the driver loaded (`phoenix_testing::gpu`).
async fn start_with(resources: Vec<Resource>) -> Option<Harness> {
    static ROOT: OnceLock<Option<PathBuf>> = OnceLock::new();
    let root = ROOT.get_or_init(|| {
        let root = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("gpu-node-{}", std::process::id()));
        gpu::loaded_driver_root(&root).then_some(root)
    });
    let Some(root) = root.clone() else {
        phoenix_testing::unavailable("device nodes cannot be made here (mknod needs root)");
        return None;
    };
    start_on(resources, root).await
}

/// [`start_with`], discovering GPU devices under `root`.
async fn start_on(resources: Vec<Resource>, root: PathBuf) -> Option<Harness> {
    let fake = FakePve::start().await?;
    let harness = Harness::connect(fake, GuestType::Lxc, resources, move |kit| {
        LxcManager::new(
            Containers::new(kit, Some("test.internal".into()))
                .with_device_discovery(Arc::new(LocalHost), root.display().to_string()),
        )
    });
    Some(harness.await)
}

#[tokio::test]
async fn converges_a_template_chain_and_the_second_run_writes_nothing() {
    let Some(harness) = start().await else {
        return;
    };
    let first = harness.plan().await;
    assert_eq!(first.summary().create, 3, "{:#?}", first.entries());
    // A creation is held lean, with no field but where it goes, and shown whole, with the same action
    // and consequence.
    for entry in first.entries() {
        let [held] = entry.changes.as_slice() else {
            panic!("one creation: {entry:#?}");
        };
        assert!(
            held.fields
                .iter()
                .all(|field| ["node", "placement"].contains(&field.field.as_str())),
            "{held:#?}"
        );
        let shown = entry.shown_changes();
        assert_eq!(
            (shown[0].action, shown[0].consequence()),
            (held.action, held.consequence())
        );
        let names: Vec<&str> = shown[0].fields.iter().map(|field| field.field.as_str()).collect();
        assert!(
            names.contains(&"hostname") && names.contains(&"net0"),
            "{names:?}"
        );
    }
    let report = harness.apply(&first).await;
    assert!(report.succeeded(), "{report:#?}");

    let base = harness.config(900).await;
    assert_eq!(base["hostname"], "base");
    assert_eq!(base["cores"], 2);
    assert_eq!(base["memory"], 1024);
    assert_eq!(base["swap"], 256);
    assert_eq!(base["nameserver"], "10.1.0.1 1.1.1.1");
    assert_eq!(base["searchdomain"], "test.internal");
    assert_eq!(base["features"], "keyctl=1,nesting=1");
    assert!(
        base["net0"]
            .as_str()
            .expect("net0")
            .contains("hwaddr=BC:24:11:00:09:00"),
        "{}",
        base["net0"]
    );
    assert!(base["tags"].as_str().expect("tags").contains("phoenix"));

    let gateway = harness.config(101).await;
    assert_eq!(gateway["memory"], 2048);
    assert_eq!(gateway["onboot"], 1);
    assert_eq!(gateway["startup"], "order=2,up=5");
    let net0 = gateway["net0"].as_str().expect("net0");
    assert!(
        net0.contains("firewall=1") && net0.contains("ip=10.1.0.11/24"),
        "{net0}"
    );
    assert!(
        gateway["rootfs"].as_str().expect("rootfs").contains("size=12G"),
        "{}",
        gateway["rootfs"]
    );
    let mounts: Vec<String> = (0..4)
        .filter_map(|index| gateway[format!("mp{index}")].as_str().map(str::to_owned))
        .collect();
    assert!(
        mounts
            .iter()
            .any(|mount| mount.starts_with("/srv/gateway/logs,mp=/var/log/nginx")),
        "{mounts:?}"
    );
    assert!(
        mounts
            .iter()
            .any(|mount| mount.starts_with("local-lvm:") && mount.contains("mp=/cache")),
        "{mounts:?}"
    );

    // GPUs 0 and 1: their nodes and the driver-wide ones the node has, as discovered there.
    let worker = harness.config(102).await;
    let devices: Vec<&str> = (0..10)
        .filter_map(|index| worker[format!("dev{index}")].as_str())
        .collect();
    let mut expected = gpu::GPU0_DEVICES.to_vec();
    expected.insert(6, "/dev/nvidia1");
    assert_eq!(devices, expected);

    let snapshots: Vec<Value> = harness
        .client
        .get("/nodes/pve1/lxc/900/snapshot", &[])
        .await
        .expect("lists");
    assert!(snapshots.iter().any(|snapshot| snapshot["name"] == "golden"));
    let status: Value = harness
        .client
        .get("/nodes/pve1/lxc/102/status/current", &[])
        .await
        .expect("reads");
    assert_eq!(status["status"], "running");

    let before = harness.writes().await.len();
    let second = harness.plan().await;
    assert!(
        !second.has_changes(),
        "{:#?}",
        second
            .entries()
            .iter()
            .filter(|entry| !entry.is_unchanged())
            .collect::<Vec<_>>()
    );
    let report = harness.apply(&second).await;
    assert!(report.succeeded());
    let after = harness.writes().await;
    assert_eq!(
        after.len(),
        before,
        "the second run makes no write request: {:?}",
        &after[before..]
    );
}

#[tokio::test]
async fn a_change_made_by_hand_is_planned_as_drift_and_corrected() {
    let Some(harness) = start().await else {
        return;
    };
    assert!(harness.apply(&harness.plan().await).await.succeeded());
    let by_hand = Form::new().number("memory", 4096).text("onboot", "0");
    harness.edit_by_hand(101, &by_hand).await;

    let plan = harness.plan().await;
    let changed: Vec<_> = plan
        .entries()
        .iter()
        .filter(|entry| !entry.is_unchanged())
        .collect();
    assert_eq!(changed.len(), 1);
    assert_eq!(changed[0].address, Address::Lxc(101));
    let fields: Vec<(String, Option<Value>, Option<Value>)> = changed[0].changes[0]
        .fields
        .iter()
        .map(|field| (field.field.clone(), field.old.clone(), field.new.clone()))
        .collect();
    assert_eq!(
        fields,
        [
            (
                "memory".into(),
                Some(serde_json::json!(4096)),
                Some(serde_json::json!(2048))
            ),
            (
                "onboot".into(),
                Some(serde_json::json!(0)),
                Some(serde_json::json!(1))
            ),
        ]
    );
    assert!(harness.apply(&plan).await.succeeded());
    assert_eq!(harness.config(101).await["memory"], 2048);
    assert!(!harness.plan().await.has_changes());
}

#[tokio::test]
async fn a_failing_start_is_reported_with_its_log_and_dependents_are_skipped() {
    // A task that ends in TASK ERROR (not a transient 5xx on dispatch, which would be retried).
    let Some(harness) = start().await else {
        return;
    };
    harness
        .fake
        .exec("pve.fail('POST', '/nodes/pve1/lxc/101/status/start', error='mtu_size_bigger_than_bridge', times=1)")
        .await;
    let report = harness.apply(&harness.plan().await).await;
    let outcome = |address: Address| {
        report
            .resources
            .iter()
            .find(|line| line.address == address)
            .map(|line| line.outcome.clone())
    };
    assert!(matches!(
        outcome(Address::Lxc(900)),
        Some(Outcome::Changed { .. })
    ));
    let Some(Outcome::Failed { error, .. }) = outcome(Address::Lxc(101)) else {
        panic!("{report:#?}")
    };
    assert!(
        error.contains("MTU size") && error.contains("TASK ERROR"),
        "the task's status and log tail: {error}"
    );
    assert_eq!(
        outcome(Address::Lxc(102)),
        Some(Outcome::Skipped {
            reason: "lxc/101 failed".into()
        })
    );
    // The next run picks up where this one stopped.
    assert!(harness.apply(&harness.plan().await).await.succeeded());
    assert!(!harness.plan().await.has_changes());
}

#[tokio::test]
async fn a_lock_held_by_a_backup_is_waited_out() {
    let Some(harness) = start().await else {
        return;
    };
    assert!(harness.apply(&harness.plan().await).await.succeeded());
    let _: Value = harness
        .client
        .put("/nodes/pve1/lxc/900/config", &Form::new().number("cores", 1))
        .await
        .expect("edits");
    harness
        .fake
        .exec("pve.snapshot_lock(900, 'backup')\nasyncio.get_running_loop().call_later(0.5, pve.unlock, 900)")
        .await;
    let report = harness.apply(&harness.plan().await).await;
    assert!(report.succeeded(), "{report:#?}");
    assert_eq!(harness.config(900).await["cores"], 2);
}

#[tokio::test]
async fn firewall_rules_changed_by_hand_are_corrected_without_wiping_the_rest() {
    let Some(harness) = start().await else {
        return;
    };
    let rules = converged_rules(&harness).await;
    assert_eq!(rules.len(), 3);
    assert_eq!(
        (rules[0]["dport"].as_str(), rules[2]["comment"].as_str()),
        (Some("80,443"), Some("DNS"))
    );
    let options: Value = harness
        .client
        .get("/nodes/pve1/lxc/101/firewall/options", &[])
        .await
        .expect("reads");
    assert_eq!(options["enable"], 1);

    // By hand: one rule deleted, a foreign one added on top.
    let _: Value = harness
        .client
        .delete("/nodes/pve1/lxc/101/firewall/rules/1", &[])
        .await
        .expect("deletes");
    let foreign = Form::new()
        .text("type", "in")
        .text("action", "ACCEPT")
        .text("proto", "tcp")
        .text("dport", "22")
        .text("enable", "1");
    let _: Value = harness
        .client
        .post("/nodes/pve1/lxc/101/firewall/rules", &foreign)
        .await
        .expect("adds");

    let plan = harness.plan().await;
    let changed: Vec<_> = plan
        .entries()
        .iter()
        .filter(|entry| !entry.is_unchanged())
        .collect();
    assert_eq!(changed.len(), 1);
    assert_eq!(changed[0].changes[0].fields[0].field, "firewall_rules");
    let before = harness.writes().await.len();
    let report = harness.apply(&plan).await;
    assert!(report.succeeded(), "{report:#?}");
    let writes = harness.writes().await;
    let deletes = writes[before..]
        .iter()
        .filter(|write| write.starts_with("DELETE"))
        .count();
    assert_eq!(
        deletes,
        1,
        "only the foreign rule is deleted: {:?}",
        &writes[before..]
    );
    assert!(!harness.plan().await.has_changes());
}

#[tokio::test]
async fn operations_start_stop_snapshot_rollback_and_delete_only_owned() {
    use phoenix_core::Operation;

    let Some(harness) = start().await else {
        return;
    };
    assert!(harness.apply(&harness.plan().await).await.succeeded());
    let manager = harness
        .managers
        .get(phoenix_core::ResourceKind::Lxc)
        .expect("registered")
        .clone();
    let gateway = Address::Lxc(101);
    let status = |value: Value| value["status"].as_str().map(str::to_owned);

    manager
        .operate(None, &gateway, &Operation::Stop)
        .await
        .expect("stops");
    let current: Value = harness
        .client
        .get("/nodes/pve1/lxc/101/status/current", &[])
        .await
        .expect("reads");
    assert_eq!(status(current), Some("stopped".into()));
    manager
        .operate(None, &gateway, &Operation::Start)
        .await
        .expect("starts");
    manager
        .operate(None, &gateway, &Operation::Snapshot("before".into()))
        .await
        .expect("snapshots");
    manager
        .operate(None, &gateway, &Operation::Rollback("before".into()))
        .await
        .expect("rolls back");
    let error = manager
        .operate(None, &gateway, &Operation::Rollback("never".into()))
        .await
        .expect_err("no such snapshot");
    assert!(error.to_string().contains("never"), "{error}");

    // A container made by hand carries no owner tag: Phoenix refuses to delete it.
    let form = Form::new()
        .number("vmid", 150)
        .text(
            "ostemplate",
            "local:vztmpl/debian-12-standard_12.7-1_amd64.tar.zst",
        )
        .text("storage", "local-lvm");
    harness
        .client
        .run_task(phoenix_pve::Method::POST, "/nodes/pve1/lxc", &form)
        .await
        .expect("creates");
    let refused = manager
        .operate(None, &Address::Lxc(150), &Operation::Delete)
        .await
        .expect_err("not owned");
    assert!(
        refused.to_string().contains("deletes only what it owns"),
        "{refused}"
    );
    manager
        .operate(None, &Address::Lxc(102), &Operation::Delete)
        .await
        .expect("deletes an owned one");
    let resources = harness.client.cluster_resources().await.expect("lists");
    assert!(!resources.iter().any(|resource| resource.vmid == Some(102)));
    assert!(resources.iter().any(|resource| resource.vmid == Some(150)));
}

#[tokio::test]
async fn a_volume_made_read_only_by_hand_is_written_back_and_not_regrown() {
    let Some(harness) = start().await else {
        return;
    };
    assert!(harness.apply(&harness.plan().await).await.succeeded());
    let config = harness.config(101).await;
    let (key, line) = config
        .as_object()
        .expect("a config")
        .iter()
        .find(|(key, value)| {
            key.starts_with("mp") && value.as_str().is_some_and(|line| line.contains("mp=/cache"))
        })
        .map(|(key, value)| (key.clone(), value.as_str().unwrap_or_default().to_owned()))
        .expect("the /cache volume");
    let volume = line.split(',').next().unwrap_or_default().to_owned();
    let by_hand = Form::new().text(&key, format!("{line},ro=1"));
    harness.edit_by_hand(101, &by_hand).await;

    let plan = harness.plan().await;
    assert!(plan.has_changes());
    let before = harness.writes().await.len();
    let report = harness.apply(&plan).await;
    assert!(report.succeeded(), "{report:#?}");
    let writes = harness.writes().await[before..].to_vec();
    assert!(
        writes.iter().all(|write| !write.ends_with("/resize")),
        "a volume of the declared size is not resized: {writes:?}"
    );
    let line = harness.config(101).await[&key]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(line.starts_with(&volume), "the same volume: {line}");
    assert!(!line.contains("ro=1"), "{line}");
    assert!(!harness.plan().await.has_changes());
}

#[tokio::test]
async fn a_device_entry_added_by_hand_past_a_gap_is_removed() {
    let Some(harness) = start().await else {
        return;
    };
    assert!(harness.apply(&harness.plan().await).await.succeeded());
    let devices = |config: &Value| -> Vec<String> {
        config
            .as_object()
            .into_iter()
            .flatten()
            .filter(|(key, _)| key.starts_with("dev"))
            .map(|(key, _)| key.clone())
            .collect()
    };
    let declared = devices(&harness.config(102).await);
    assert!(!declared.is_empty(), "the GPU worker has device entries");
    // dev9 leaves a gap after the declared entries: counting entries would not find it.
    harness
        .edit_by_hand(102, &Form::new().text("dev9", "/dev/fuse"))
        .await;

    let plan = harness.plan().await;
    assert!(plan.has_changes());
    let report = harness.apply(&plan).await;
    assert!(report.succeeded(), "{report:#?}");
    assert_eq!(devices(&harness.config(102).await), declared);
    assert!(!harness.plan().await.has_changes());
}

#[tokio::test]
async fn a_change_the_manager_cannot_apply_fails_and_writes_nothing() {
    let Some(harness) = start().await else {
        return;
    };
    let report = harness.apply(&harness.plan().await).await;
    assert!(report.succeeded(), "{report:#?}");
    let writes = harness.writes().await.len();
    let resources = fixture();
    let gateway = resources
        .iter()
        .find(|resource| resource.address == Address::Lxc(101))
        .expect("declared");
    // A plan from another version, say: a field this vocabulary does not have, next to one it has.
    let change = phoenix_core::Change {
        address: Address::Lxc(101),
        action: phoenix_core::Action::Update,
        fields: vec![
            phoenix_core::FieldChange {
                field: "memory".into(),
                old: Some(2048.into()),
                new: Some(4096.into()),
                consequence: phoenix_core::Consequence::Live,
            },
            phoenix_core::FieldChange {
                field: "memory_mb".into(),
                old: None,
                new: Some(4096.into()),
                consequence: phoenix_core::Consequence::Live,
            },
        ],
    };
    let manager = harness
        .managers
        .get(phoenix_core::ResourceKind::Lxc)
        .expect("registered");
    let error = manager.apply(Some(gateway), &change).await.expect_err("refused");
    assert!(
        error
            .to_string()
            .contains("`memory_mb` is not a change this manager can apply"),
        "{error}"
    );
    assert_eq!(
        harness.writes().await.len(),
        writes,
        "nothing was written, not even `memory`"
    );
    assert_eq!(harness.config(101).await["memory"], 2048);
}

/// A guest rule may jump to a security group (`type: group`) and use a macro in any case: both go into the
/// guest's own firewall as Proxmox stores them, and the second run finds nothing to change.
#[tokio::test]
async fn guest_rules_jump_to_a_security_group_and_use_macros() {
    let dir = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/estate"));
    let sources = fixture::sources(dir)
        .into_iter()
        .map(|source| {
            if source.kind() != phoenix_core::FileKind::Lxc {
                return source;
            }
            let text = source.text().replace(
                r#"{ "type": "in", "action": "ACCEPT", "proto": "icmp", "source": "10.1.0.0/24" }"#,
                r#"{ "type": "group", "action": "webservers" }, { "type": "in", "action": "ACCEPT", "macro": "ping" }"#,
            );
            SourceFile::new(source.kind(), source.path().to_owned(), text)
        })
        .collect();
    let Some(harness) = start_with(fixture::resources(sources, &CheckOptions::default())).await else {
        return;
    };
    let rules = converged_rules(&harness).await;
    let summary: Vec<(&str, &str, Option<&str>)> = rules
        .iter()
        .map(|rule| {
            let text = |key: &str| rule[key].as_str().unwrap_or_default();
            (text("type"), text("action"), rule["macro"].as_str())
        })
        .collect();
    assert_eq!(
        summary,
        [
            ("in", "ACCEPT", None),
            ("group", "webservers", None),
            ("in", "ACCEPT", Some("Ping")),
            ("out", "ACCEPT", None)
        ]
    );
    let cluster: Vec<Value> = harness
        .client
        .get("/cluster/firewall/rules", &[])
        .await
        .expect("reads");
    assert!(
        cluster.is_empty(),
        "guest rules never reach the cluster's: {cluster:?}"
    );
    assert!(!harness.plan().await.has_changes());
}

#[tokio::test]
async fn a_gpu_container_on_a_node_without_the_driver_fails_alone_and_says_why() {
    // A node whose kernel registered no NVIDIA device: no driver loaded, no device nodes.
    let root = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("no-driver-node-{}", std::process::id()));
    std::fs::create_dir_all(root.join("proc")).expect("a directory");
    std::fs::create_dir_all(root.join("dev")).expect("a directory");
    std::fs::write(
        root.join("proc/devices"),
        "Character devices:\n  1 mem\n 10 misc\n\nBlock devices:\n  8 sd\n",
    )
    .expect("written");
    let Some(harness) = start_on(fixture(), root).await else {
        return;
    };
    let plan = harness.plan().await;
    let report = harness.apply(&plan).await;
    match phoenix_testing::outcome(&report, "lxc/102") {
        Outcome::Failed { error, .. } => assert!(
            error.contains("the NVIDIA driver is not loaded on node pve1"),
            "{error}"
        ),
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        phoenix_testing::outcome(&report, "lxc/101"),
        Outcome::Changed { .. }
    ));
}
