//! `host/zfs/*` on a real Debian node (`TestNode`) with real ZFS: zfs-fuse's on file-backed disks (the
//! kernel here has no ZFS module). What differs from a real node is in the test setup only
//! (`common::with_zfs`, `common::for_zfs_fuse`): a `zpool` that takes `status -P`, and an
//! `update-initramfs` that records its calls.

mod common;

use common::{Setup, start, steps, with_zfs};
use phoenix_core::Outcome;
use phoenix_testing::outcome;

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

fn failure<'a>(report: &'a phoenix_core::Report, address: &str) -> &'a str {
    match outcome(report, address) {
        Outcome::Failed { error, .. } => error,
        other => panic!("{address}: {other:?} in {report:#?}"),
    }
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
