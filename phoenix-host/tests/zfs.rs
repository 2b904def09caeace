//! `host/zfs/*` on a real Debian node (`TestNode`) with real ZFS: zfs-fuse's on file-backed disks (the
//! kernel here has no ZFS module). What differs from a real node is in the test setup only
//! (`common::with_zfs`, `common::for_zfs_fuse`): a `zpool` that takes `status -P`, and an
//! `update-initramfs` that records its calls.

mod common;

use common::{Setup, failure, start, steps, with_zfs};
use phoenix_core::Outcome;
use phoenix_pve::Form;
use phoenix_testing::outcome;
use serde_json::{Value, json};

/// Two pools, a dataset on each (one nested), and the ARC limit.
const ZFS: &str = r#""mount_point_base": "/mnt/pve",
  "zfs": {
    "arc_max_gb": 4,
    "pools": [
      { "name": "fastData", "raid_level": "mirror", "disks": ["/srv/disks/d0", "/srv/disks/d1"] },
      { "name": "slowData", "raid_level": "single", "disks": ["/srv/disks/d2"] }
    ],
    "datasets": [
      { "name": "shared", "pool": "fastData", "properties": "recordsize=16K,compression=on,quota=1.4T" },
      { "name": "shared/models", "pool": "fastData", "properties": "recordsize=128K" },
      { "name": "backups", "pool": "slowData", "properties": "quota=2T,atime=off" }
    ]
  },"#;

async fn zfs_node(zfs: &str) -> Option<Setup> {
    let zfs = zfs.to_owned();
    let setup = start(move |text| {
        text.replace(
            r#""timezone": "Europe/Berlin","#,
            &format!(r#""timezone": "Europe/Berlin", {zfs}"#),
        )
    })
    .await?;
    with_zfs(&setup);
    Some(setup)
}

#[tokio::test]
async fn pools_datasets_and_the_arc_limit_converge_and_a_property_changed_by_hand_is_set_back_alone() {
    let Some(setup) = zfs_node(ZFS).await else {
        return;
    };
    let report = setup.apply().await;
    assert!(report.succeeded(), "{report:#?}");
    assert_eq!(
        steps(&report, "host/zfs/pool/fastData"),
        ["created the pool fastData (mirror)"]
    );
    assert_eq!(
        steps(&report, "host/zfs/dataset/fastData/shared"),
        ["created the dataset fastData/shared"]
    );
    assert!(setup.sh("zpool status fastData").contains("mirror-0"));
    assert_eq!(
        setup.sh("zfs get -H -o value recordsize,compression,quota,mountpoint fastData/shared"),
        "16K\non\n1.40T\n/mnt/pve/fastData/shared\n"
    );
    assert_eq!(
        setup.sh("zfs get -H -o value mountpoint fastData/shared/models"),
        "/mnt/pve/fastData/shared/models\n"
    );
    assert_eq!(
        setup.sh("cat /etc/modprobe.d/zfs.conf"),
        "options zfs zfs_arc_max=4294967296\n"
    );
    assert_eq!(
        setup.sh("cat /var/lib/phoenix-stand-in/update-initramfs"),
        "-u -k all\n"
    );
    setup.assert_converged().await;

    // By hand: a quota changed, atime turned back on. Each is set back, nothing else is touched.
    setup.sh("zfs set quota=10G fastData/shared && zfs set atime=on slowData/backups");
    assert_eq!(
        setup.drift("host/zfs/dataset/fastData/shared").await,
        ["quota: Some(String(\"10G\")) -> Some(String(\"1.4T\"))"]
    );
    let report = setup.apply().await;
    assert!(report.succeeded(), "{report:#?}");
    let mut done: Vec<String> = report
        .resources
        .iter()
        .flat_map(|line| line.steps.iter().map(|step| step.what.clone()))
        .collect();
    done.sort();
    assert_eq!(
        done,
        [
            "set atime=off on slowData/backups",
            "set quota=1.4T on fastData/shared"
        ]
    );
    setup.assert_converged().await;
}

#[tokio::test]
async fn only_a_dataset_phoenix_made_is_destroyed_when_taken_out_and_only_with_allow_destroy() {
    let Some(mut setup) = zfs_node(ZFS).await else {
        return;
    };
    assert!(setup.apply().await.succeeded());
    // Someone else's dataset, under one of Phoenix's and beside them; a snapshot of Phoenix's.
    setup.sh("zfs create fastData/byhand && zfs create slowData/backups/mine && zfs snapshot fastData/shared/models@keep");
    // The configuration without the models and the backups.
    let edited = ZFS
        .replace(
            r#",
      { "name": "backups", "pool": "slowData", "properties": "quota=2T,atime=off" }"#,
            "",
        )
        .replace(
            r#",
      { "name": "shared/models", "pool": "fastData", "properties": "recordsize=128K" }"#,
            "",
        );
    assert!(
        !edited.contains("backups") && !edited.contains("models"),
        "{edited}"
    );
    setup.resources = common::start_resources(
        |text| {
            text.replace(
                r#""timezone": "Europe/Berlin","#,
                &format!(r#""timezone": "Europe/Berlin", {edited}"#),
            )
        },
        &phoenix_core::CheckOptions::default(),
    );
    let plan = setup.plan().await;
    let deleted: Vec<String> = plan
        .entries()
        .iter()
        .filter(|entry| entry.resource.is_none())
        .map(|entry| format!("{} {:?}", entry.address, entry.consequence()))
        .collect();
    assert_eq!(
        deleted,
        [
            "host/zfs/dataset/fastData/shared/models Some(Destructive)",
            "host/zfs/dataset/slowData/backups Some(Destructive)"
        ]
    );
    // The plan shows the space each one holds.
    for entry in plan.entries().iter().filter(|entry| entry.resource.is_none()) {
        let used = &entry.observed.as_ref().expect("observed").fields["used"];
        assert!(used.as_str().is_some_and(|used| used.ends_with('K')), "{used}");
    }
    // Without --allow-destroy the run does not start.
    let (_handle, signal) = phoenix_core::StopHandle::new();
    let refused = phoenix_core::execute(
        &plan,
        &setup.managers,
        &phoenix_core::ExecuteOptions::default(),
        signal,
        None,
    )
    .await;
    assert!(refused.is_err(), "a destructive plan runs only when allowed");

    let allowed = phoenix_core::ExecuteOptions {
        allow_destroy: true,
        ..phoenix_core::ExecuteOptions::default()
    };
    let report = phoenix_testing::apply(&plan, &setup.managers, &allowed).await;
    assert_eq!(
        steps(&report, "host/zfs/dataset/fastData/shared/models"),
        ["destroyed the dataset fastData/shared/models and its snapshots"],
        "{report:#?}"
    );
    // The backups hold someone else's dataset: refused, named, kept.
    let error = failure(&report, "host/zfs/dataset/slowData/backups");
    assert!(error.contains("slowData/backups/mine under it"), "{error}");
    assert_eq!(
        setup.sh("zfs list -H -o name -r fastData slowData"),
        "fastData\nfastData/byhand\nfastData/shared\nslowData\nslowData/backups\nslowData/backups/mine\n"
    );
    // Once the other dataset is gone, the next run destroys the backups, and then nothing is left to do.
    setup.sh("zfs destroy slowData/backups/mine");
    let report = phoenix_testing::apply(&setup.plan().await, &setup.managers, &allowed).await;
    assert!(report.succeeded(), "{report:#?}");
    assert_eq!(setup.sh("zfs list -H -o name -r slowData"), "slowData\n");
    setup.assert_converged().await;
}

#[tokio::test]
async fn a_disk_that_holds_data_is_refused_by_name_and_an_existing_pool_is_never_rebuilt() {
    let Some(setup) = zfs_node(ZFS).await else {
        return;
    };
    // d1 carries the label of a pool someone exported; slowData exists already as a stripe of d2 and d3.
    setup.sh("zpool create other /srv/disks/d1 && zpool export other && \
         zpool create slowData /srv/disks/d2 /srv/disks/d3");
    let report = setup.apply().await;
    let error = failure(&report, "host/zfs/pool/fastData");
    assert!(
        error.contains("disk /srv/disks/d1 of pool fastData holds data (zfs_member \"other\")"),
        "{error}"
    );
    let error = failure(&report, "host/zfs/pool/slowData");
    assert!(
        error.contains("exists on node pve1 as `stripe: /srv/disks/d2 /srv/disks/d3`")
            && error.contains("never rebuilds"),
        "{error}"
    );
    assert!(
        matches!(
            outcome(&report, "host/zfs/dataset/fastData/shared"),
            Outcome::Skipped { .. }
        ),
        "a dataset waits for its pool"
    );
    assert_eq!(
        setup.sh("zpool list -H -o name"),
        "slowData\n",
        "nothing was created on d0 or d1, and slowData is as it was"
    );
    assert!(
        setup
            .sh("zpool import -d /srv/disks 2>&1 || true")
            .contains("other"),
        "the exported pool is still there to import"
    );
    assert!(matches!(
        outcome(&report, "host/timezone"),
        Outcome::Changed { .. }
    ));
}

#[tokio::test]
async fn datasets_are_registered_as_storages_and_a_content_type_changed_in_the_ui_is_set_back() {
    let zfs = ZFS
        .replace(
            r#""properties": "recordsize=16K,compression=on,quota=1.4T" }"#,
            r#""properties": "recordsize=16K,compression=on,quota=1.4T", "proxmox_storage_type": "zfspool", "proxmox_content_type": "rootdir,images" }"#,
        )
        .replace(
            r#""properties": "quota=2T,atime=off" }"#,
            r#""properties": "quota=2T,atime=off", "proxmox_storage_type": "dir", "proxmox_content_type": "backup", "storage_id": "backups" }"#,
        )
        .replace(
            r#""mount_point_base": "/mnt/pve","#,
            r#""mount_point_base": "/mnt/pve", "proxmox_storages": [{ "id": "local", "content": ["vztmpl", "snippets"] }],"#,
        );
    let Some(setup) = zfs_node(&zfs).await else {
        return;
    };
    let client = setup.fake.root_client().await;
    let before: Vec<Value> = client.get("/storage", &[]).await.expect("lists");
    let report = setup.apply().await;
    assert!(report.succeeded(), "{report:#?}");
    let shared: Value = client.get("/storage/fastData-shared", &[]).await.expect("reads");
    assert_eq!(
        (
            &shared["type"],
            &shared["pool"],
            &shared["mountpoint"],
            &shared["content"]
        ),
        (
            &json!("zfspool"),
            &json!("fastData/shared"),
            &json!("/mnt/pve/fastData/shared"),
            &json!("images,rootdir")
        )
    );
    let backups: Value = client.get("/storage/backups", &[]).await.expect("reads");
    assert_eq!(
        (
            &backups["type"],
            &backups["path"],
            &backups["is_mountpoint"],
            &backups["content"]
        ),
        (
            &json!("dir"),
            &json!("/mnt/pve/slowData/backups"),
            &json!("yes"),
            &json!("backup")
        )
    );
    let local: Value = client.get("/storage/local", &[]).await.expect("reads");
    let mut content: Vec<&str> = local["content"].as_str().expect("content").split(',').collect();
    content.sort_unstable();
    assert_eq!(
        content,
        ["backup", "iso", "snippets", "vztmpl"],
        "snippets added, what local had kept"
    );
    // Storages Phoenix does not declare are as they were.
    let after: Vec<Value> = client.get("/storage", &[]).await.expect("lists");
    for storage in before.iter().filter(|storage| storage["storage"] != "local") {
        let id = &storage["storage"];
        let now = after
            .iter()
            .find(|other| other["storage"] == *id)
            .expect("still there");
        assert_eq!(now["content"], storage["content"], "{id}");
    }
    let writes = setup.fake.writes().await;
    setup.assert_converged().await;
    assert_eq!(setup.fake.writes().await, writes, "the second run writes nothing");

    // In the UI: rootdir taken off the dataset's storage. One PUT puts it back.
    client
        .put::<Value>("/storage/fastData-shared", &Form::new().text("content", "images"))
        .await
        .expect("set");
    assert_eq!(
        setup.drift("host/storage/fastData-shared").await,
        ["content: Some(String(\"images\")) -> Some(String(\"images,rootdir\"))"]
    );
    let count = setup.fake.writes().await.len();
    assert!(setup.apply().await.succeeded());
    assert_eq!(
        setup.fake.writes().await.split_off(count),
        ["PUT /api2/json/storage/fastData-shared"]
    );
    setup.assert_converged().await;
}

#[tokio::test]
async fn a_storage_registered_elsewhere_is_reported_and_left_as_it_is() {
    let zfs = ZFS.replace(
        r#""properties": "quota=2T,atime=off" }"#,
        r#""properties": "quota=2T,atime=off", "proxmox_storage_type": "dir", "proxmox_content_type": "backup", "storage_id": "backups" }"#,
    );
    let Some(setup) = zfs_node(&zfs).await else {
        return;
    };
    let client = setup.fake.root_client().await;
    let made = Form::new()
        .text("storage", "backups")
        .text("type", "dir")
        .text("path", "/srv/elsewhere")
        .text("content", "iso");
    client
        .post::<Value>("/storage", &made)
        .await
        .expect("made by hand");
    let report = setup.apply().await;
    let error = failure(&report, "host/storage/backups");
    assert!(
        error.contains("storage backups: path is /srv/elsewhere") && error.contains("removes no storage"),
        "{error}"
    );
    let live: Value = client.get("/storage/backups", &[]).await.expect("reads");
    assert_eq!(live["path"], "/srv/elsewhere", "never recreated");
    assert_eq!(live["content"], "backup", "what Proxmox lets change is converged");
}

#[tokio::test]
async fn exports_go_to_phoenixs_own_file_and_are_reexported_only_when_it_changed() {
    let zfs = ZFS.replace(
        r#""mount_point_base": "/mnt/pve","#,
        r#""mount_point_base": "/mnt/pve", "nfs": { "exports": [
            { "path": "/mnt/pve/fastData/shared", "clients": ["10.0.0.111", "10.0.0.0/24"], "options": ["rw", "sync", "no_subtree_check"],
              "proxmox_storage": { "id": "shared-nfs", "content": ["images", "backup"], "server": "127.0.0.1", "options": "vers=4.2" } },
            { "path": "/slowData/backups", "clients": ["10.0.0.13"], "options": ["ro", "no_subtree_check"] } ] },"#,
    );
    let Some(setup) = zfs_node(&zfs).await else {
        return;
    };
    setup.sh("mkdir -p /etc/exports.d && echo '/srv 127.0.0.1(ro,no_subtree_check)' > /etc/exports.d/by-hand.exports");
    let report = setup.apply().await;
    assert!(report.succeeded(), "{report:#?}");
    assert_eq!(
        steps(&report, "host/nfs/exports"),
        [
            "wrote /etc/exports.d/phoenix.exports",
            "exported the NFS exports again (exportfs -ra)"
        ]
    );
    // The dataset's name is exported where the dataset is mounted.
    assert!(
        setup
            .sh("cat /etc/exports.d/phoenix.exports")
            .ends_with(
                "/mnt/pve/fastData/shared 10.0.0.111(rw,sync,no_subtree_check) 10.0.0.0/24(rw,sync,no_subtree_check)\n\
                 /mnt/pve/slowData/backups 10.0.0.13(ro,no_subtree_check)\n"
            )
    );
    let exported = setup.sh("exportfs -v");
    for path in ["/mnt/pve/fastData/shared", "/mnt/pve/slowData/backups", "/srv"] {
        assert!(exported.contains(path), "{path} in {exported}");
    }
    // Proxmox mounts the first export as an nfs storage, made after the export.
    let client = setup.fake.root_client().await;
    let storage: Value = client.get("/storage/shared-nfs", &[]).await.expect("reads");
    for (key, value) in [
        ("type", "nfs"),
        ("server", "127.0.0.1"),
        ("export", "/mnt/pve/fastData/shared"),
        ("path", "/mnt/pve/shared-nfs"),
        ("options", "vers=4.2"),
        ("content", "backup,images"),
    ] {
        assert_eq!(storage[key], value, "{key} in {storage}");
    }
    setup.assert_converged().await;
    // Its mount options changed in the UI are set back by one PUT.
    client
        .put::<Value>("/storage/shared-nfs", &Form::new().text("options", "vers=3"))
        .await
        .expect("changes");
    assert_eq!(
        setup.drift("host/storage/shared-nfs").await,
        [r#"options: Some(String("vers=3")) -> Some(String("vers=4.2"))"#]
    );
    let report = setup.apply().await;
    assert!(report.succeeded(), "{report:#?}");
    let storage: Value = client.get("/storage/shared-nfs", &[]).await.expect("reads");
    assert_eq!(storage["options"], "vers=4.2");
    setup.assert_converged().await;

    // A line removed by hand is put back, and only then is exportfs run again.
    setup.sh("sed -i '/backups/d' /etc/exports.d/phoenix.exports");
    assert_eq!(setup.drift("host/nfs/exports").await.len(), 1);
    assert_eq!(
        steps(&setup.apply().await, "host/nfs/exports"),
        [
            "wrote /etc/exports.d/phoenix.exports",
            "exported the NFS exports again (exportfs -ra)"
        ]
    );
    setup.assert_converged().await;
    assert!(
        setup
            .sh("cat /etc/exports.d/by-hand.exports")
            .starts_with("/srv ")
    );
}

#[tokio::test]
async fn an_export_of_a_missing_directory_or_that_exportfs_refuses_never_goes_live() {
    let exports = r#""nfs": { "exports": [
        { "path": "/srv/share", "clients": ["10.0.0.0/24"], "options": ["rw", "no_such_option"] } ] },"#;
    let Some(setup) = zfs_node(exports).await else {
        return;
    };
    let report = setup.apply().await;
    let error = failure(&report, "host/nfs/exports");
    assert!(error.contains("has no directory /srv/share"), "{error}");
    assert!(steps(&report, "host/nfs/exports").is_empty());

    // The directory made: now exportfs itself refuses the option, and the file does not stay.
    setup.sh("mkdir -p /srv/share");
    let report = setup.apply().await;
    let error = failure(&report, "host/nfs/exports");
    assert!(error.contains("`exportfs` failed on node pve1"), "{error}");
    assert!(error.contains("no_such_option"), "{error}");
    assert_eq!(
        setup.sh("ls /etc/exports.d"),
        "",
        "the refused file was taken back"
    );
}

#[tokio::test]
async fn snapshots_follow_the_policy_and_the_second_replication_sends_only_the_increment() {
    let zfs = ZFS
        .replace(
            r#""arc_max_gb": 4,"#,
            r#""arc_max_gb": 4, "snapshot_policies": { "prod": { "hourly": 2, "daily": 1, "replica": { "hourly": 4, "daily": 3 } } },"#,
        )
        .replace(
            r#""properties": "recordsize=16K,compression=on,quota=1.4T" }"#,
            r#""properties": "recordsize=16K,compression=on,quota=1.4T", "snapshot_policy": "prod", "replicate_to": "slowData" }"#,
        );
    let Some(setup) = zfs_node(&zfs).await else {
        return;
    };
    let report = setup.apply().await;
    assert!(report.succeeded(), "{report:#?}");
    assert_eq!(
        steps(&report, "host/zfs/snapshots"),
        [
            "wrote /etc/sanoid/sanoid.conf",
            "wrote /etc/phoenix/replication/prod",
            "wrote /etc/systemd/system/phoenix-replicate-prod.service",
            "wrote /etc/systemd/system/phoenix-replicate-prod.timer",
            "enabled phoenix-replicate-prod.timer",
            "wrote /usr/local/lib/phoenix/replicate",
        ]
    );
    setup.assert_converged().await;

    // As sanoid's timer would, then as the replication timer would: a full send the first time.
    setup.sh("sanoid --take-snapshots >/dev/null 2>&1");
    let taken = setup.sh("zfs list -H -t snapshot -o name -r fastData/shared");
    assert!(
        taken.contains("fastData/shared@autosnap_") && taken.contains("_hourly"),
        "{taken}"
    );
    let replicate = "/usr/local/lib/phoenix/replicate /etc/phoenix/replication/prod 2>&1";
    let first = setup.sh(replicate);
    assert!(first.contains("full snapshot"), "{first}");
    // New data and a snapshot taken by hand: the second run sends only what is new. (syncoid names its
    // sync snapshots to the second: a run within the same second as the last would collide.)
    setup.sh("echo more > /mnt/pve/fastData/shared/file && zfs snapshot fastData/shared@by-hand && sleep 1");
    let second = setup.sh(replicate);
    assert!(
        second.contains("incremental") && !second.contains("full snapshot"),
        "{second}"
    );
    let replica = setup.sh("zfs list -H -t snapshot -o name -r slowData/fastData/shared");
    assert!(replica.contains("slowData/fastData/shared@by-hand"), "{replica}");
    assert_eq!(setup.sh("cat /mnt/pve/fastData/shared/file"), "more\n");

    // The plan shows the replica's newest snapshot, as a fact.
    let plan = setup.plan().await;
    let entry = plan
        .entries()
        .iter()
        .find(|entry| entry.address.to_string() == "host/zfs/snapshots")
        .expect("planned");
    let fields = &entry.observed.as_ref().expect("observed").fields;
    assert!(
        fields["replicas"]["fastData/shared"]["snapshot"]
            .as_str()
            .is_some_and(|name| name.starts_with("slowData/fastData/shared@")),
        "{fields:?}"
    );
    assert!(
        fields["status"]
            .as_str()
            .is_some_and(|status| status.starts_with("replicated ") && status.ends_with(" ago")),
        "what `phoenix status` shows: {fields:?}"
    );
    assert!(entry.changes.is_empty());

    // A snapshot taken on the replica is never pruned nor rolled back over, and nothing of the source's
    // that is not the policy's is pruned.
    setup.sh("zfs snapshot slowData/fastData/shared@kept-on-replica");
    setup.sh("sanoid --prune-snapshots >/dev/null 2>&1");
    setup.node.exec(&["sh", "-c", replicate]);
    let replica = setup.sh("zfs list -H -t snapshot -o name -r slowData/fastData/shared");
    assert!(replica.contains("@kept-on-replica"), "{replica}");
    assert!(
        setup
            .sh("zfs list -H -t snapshot -o name -r fastData/shared")
            .contains("@by-hand")
    );

    // sanoid.conf edited by someone else is refused, not replaced.
    setup.sh("echo '[tank]' > /etc/sanoid/sanoid.conf");
    let report = setup.apply().await;
    let error = failure(&report, "host/zfs/snapshots");
    assert!(error.contains("was not written by Phoenix"), "{error}");
    assert_eq!(setup.sh("cat /etc/sanoid/sanoid.conf"), "[tank]\n");
}

#[tokio::test]
async fn a_replication_cut_off_half_way_is_completed_by_the_next_run() {
    let zfs = ZFS
        .replace(
            r#""arc_max_gb": 4,"#,
            r#""arc_max_gb": 4, "snapshot_policies": { "prod": { "hourly": 2 } },"#,
        )
        .replace(
            r#""properties": "recordsize=16K,compression=on,quota=1.4T" }"#,
            r#""properties": "recordsize=128K,compression=off", "snapshot_policy": "prod", "replicate_to": "slowData" }"#,
        );
    let Some(setup) = zfs_node(&zfs).await else {
        return;
    };
    assert!(setup.apply().await.succeeded());
    // Enough data that the stream is still running when it is cut.
    setup.sh(
        "head -c 40M /dev/urandom > /mnt/pve/fastData/shared/blob && sha256sum /mnt/pve/fastData/shared/blob \
         > /root/blob.sum && sanoid --take-snapshots >/dev/null 2>&1",
    );
    let replicate = "/usr/local/lib/phoenix/replicate /etc/phoenix/replication/prod";
    // Cut the receiving side as soon as it runs, as a crash or a lost connection would (`[z]fs` keeps the
    // pattern from matching this shell's own command line).
    let cut = setup.node.exec(&[
        "sh",
        "-c",
        &format!(
            "{replicate} >/root/first.log 2>&1 & for _ in $(seq 400); do ps -eo args | grep -q '[z]fs rec' && \
             {{ pkill -9 -f '[z]fs rec' && exit 0; }}; \
             sleep 0.05; done; cat /root/first.log; exit 1"
        ),
    ]);
    assert!(cut.success(), "the receive was cut: {}", cut.tail(5));
    setup.sh("sleep 1; while pgrep -f '[s]yncoid' >/dev/null; do sleep 0.2; done");
    let second = setup.node.exec(&["sh", "-c", &format!("{replicate} 2>&1")]);
    assert!(second.success(), "{}", second.tail(10));
    setup.sh("zfs set mountpoint=/srv/replica slowData/fastData/shared && { zfs mount slowData/fastData/shared || true; } && \
         cd /srv/replica && sed 's|/mnt/pve/fastData/shared|/srv/replica|' /root/blob.sum | sha256sum -c -");
}
