//! What the host tests on a real Debian node share: a [`TestNode`] reached by Phoenix's SSH host channel,
//! fakepve for the API steps, and the fixture's hypervisor file, edited per test.

#![allow(dead_code)] // each test binary uses its own part

use std::path::Path;
use std::sync::Arc;

use phoenix_core::{CheckOptions, ExecuteOptions, FileKind, Managers, Plan, PlanOptions, Report, Resource};
use phoenix_host::{HostManager, Node};
use phoenix_testing::{FakePve, TestNode, fixture};

pub(crate) struct Setup {
    pub(crate) fake: FakePve,
    pub(crate) node: TestNode,
    pub(crate) managers: Managers,
    pub(crate) resources: Vec<Resource>,
    /// Whether `apply` may make risky changes (`--allow-risky`): a whole hypervisor file's bridges.
    pub(crate) allow_risky: bool,
}

/// A node, a fake, and the fixture's resources with the hypervisor file passed through `edit`; `None`
/// where this machine cannot run a node.
pub(crate) async fn start(edit: impl Fn(String) -> String) -> Option<Setup> {
    start_with(edit, &CheckOptions::default(), |manager| manager).await
}

/// [`start`], validating with `options`, with the host manager passed through `configure`.
pub(crate) async fn start_with(
    edit: impl Fn(String) -> String,
    options: &CheckOptions,
    configure: impl FnOnce(HostManager) -> HostManager,
) -> Option<Setup> {
    start_on(start_resources(edit, options), configure).await
}

/// A node and a fake for the host resources of the configuration directory `dir`, its hypervisor file
/// made fit for the test node's ZFS ([`for_zfs_fuse`]).
pub(crate) async fn start_dir(dir: &Path) -> Option<Setup> {
    let sources = fixture::sources(dir)
        .into_iter()
        .map(|source| {
            if source.kind() == FileKind::Hypervisor {
                let text = for_zfs_fuse(source.text());
                phoenix_core::SourceFile::new(source.kind(), source.path().to_owned(), text)
            } else {
                source
            }
        })
        .collect();
    let mut resources = fixture::resources(sources, &CheckOptions::default());
    resources.retain(|resource| resource.kind() == phoenix_core::ResourceKind::Host);
    start_on(resources, |manager| manager).await
}

async fn start_on(
    resources: Vec<Resource>,
    configure: impl FnOnce(HostManager) -> HostManager,
) -> Option<Setup> {
    let node = TestNode::start()?;
    let fake = FakePve::start().await?;
    let client = fake.root_client().await;
    let mut managers = Managers::default();
    let manager = HostManager::new(Node::new(client, "pve1", Some(node.channel())));
    managers.register(Arc::new(configure(manager)));
    Some(Setup {
        fake,
        node,
        managers,
        resources,
        allow_risky: false,
    })
}

/// The ZFS of the test node is zfs-fuse's (ZFS pool version 23), and its disks are files: a hypervisor
/// file's pools get `/srv/disks/d0`, `d1`, ... in order of declaration ([`ZFS_DISKS`] of them, made by
/// `TestNode::start_zfs`), and dataset properties zfs-fuse does not have are mapped to what it has
/// (`lz4`, `zstd` -> `on`; `recordsize` at most `128K`; `sync` left out). This is the one place the
/// tests differ from a real node; the product code is the same.
pub(crate) fn for_zfs_fuse(text: &str) -> String {
    let mut value: serde_json::Value = serde_json::from_str(text).expect("the hypervisor file is JSON");
    let Some(zfs) = value.get_mut("zfs") else {
        return text.to_owned();
    };
    let mut next = 0;
    for pool in zfs["pools"].as_array_mut().into_iter().flatten() {
        for disk in pool["disks"].as_array_mut().into_iter().flatten() {
            *disk = serde_json::json!(format!("/srv/disks/d{next}"));
            next += 1;
        }
    }
    assert!(next <= ZFS_DISKS, "{next} disks: make more");
    for dataset in zfs["datasets"].as_array_mut().into_iter().flatten() {
        let Some(properties) = dataset["properties"].as_str() else {
            continue;
        };
        let mapped: Vec<String> = properties
            .split(',')
            .filter(|pair| !pair.starts_with("sync="))
            .map(|pair| match pair.split_once('=') {
                Some(("compression", "lz4" | "zstd")) => "compression=on".to_owned(),
                Some(("recordsize", size))
                    if !["512", "1K", "2K", "4K", "8K", "16K", "32K", "64K", "128K"].contains(&size) =>
                {
                    "recordsize=128K".to_owned()
                }
                _ => pair.to_owned(),
            })
            .collect();
        dataset["properties"] = serde_json::json!(mapped.join(","));
    }
    serde_json::to_string_pretty(&value).expect("serialises")
}

/// How many file disks a test node gets for ZFS.
pub(crate) const ZFS_DISKS: usize = 6;

/// Gives the node ZFS for the tests: zfs-fuse's daemon, [`ZFS_DISKS`] empty file disks, a `zpool` that
/// takes `status -P` (zfs-fuse's has no `-P`, and prints files' full paths without it), a
/// `zfs destroy` that waits out zfs-fuse's moment of "dataset is busy" after a mount, an
/// `update-initramfs` that records its calls (the node boots no kernel); and a resolver that gives up after a
/// second, since `exportfs` looks every client up and the test machine's resolver is sometimes slow.
pub(crate) fn with_zfs(setup: &Setup) {
    setup.node.start_zfs(ZFS_DISKS, "96M");
    setup.sh(
        "cat > /usr/local/sbin/zpool <<'EOF'\n#!/bin/sh\n# zfs-fuse's zpool has no -P; it prints file vdevs' full paths anyway.\n\
         if [ \"$1\" = status ] && [ \"$2\" = -P ]; then shift 2; exec /usr/sbin/zpool status \"$@\"; fi\n\
         exec /usr/sbin/zpool \"$@\"\nEOF\n\
         cat > /usr/local/sbin/zfs <<'EOF'\n#!/bin/sh\n# zfs-fuse calls a dataset busy for a moment after it was mounted; OpenZFS does not.\n\
         if [ \"$1\" = destroy ]; then for i in 1 2 3 4 5 6 7 8 9 10; do\n\
         if out=$(/usr/sbin/zfs \"$@\" 2>&1); then printf '%s' \"$out\"; exit 0; fi\n\
         case \"$out\" in *'dataset is busy'*) sleep 0.5 ;; *) break ;; esac\ndone\n\
         printf '%s\\n' \"$out\" >&2; exit 1; fi\nexec /usr/sbin/zfs \"$@\"\nEOF\n\
         cat > /usr/local/sbin/update-initramfs <<'EOF'\n#!/bin/sh\necho \"$*\" >> /var/lib/phoenix-stand-in/update-initramfs\nEOF\n\
         mkdir -p /var/lib/phoenix-stand-in\nchmod 755 /usr/local/sbin/zpool /usr/local/sbin/zfs /usr/local/sbin/update-initramfs\n\
         grep -q '^options' /etc/resolv.conf 2>/dev/null || echo 'options timeout:1 attempts:1' >> /etc/resolv.conf",
    );
}

/// The fixture's resources, with the hypervisor file passed through `edit`. The fixture's bridge is left
/// out: it has tests of its own (`network.rs`), and changing the bridge with the node's gateway is risky.
pub(crate) fn start_resources(edit: impl Fn(String) -> String, options: &CheckOptions) -> Vec<Resource> {
    let dir = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/node"));
    let sources = fixture::every_source_edited(dir, |kind, text| {
        Some(if kind == FileKind::Hypervisor {
            edit(text)
        } else {
            text
        })
    });
    fixture::resources(sources, options)
        .into_iter()
        .filter(|resource| !resource.address.to_string().starts_with("host/network/"))
        .collect()
}

impl Setup {
    pub(crate) async fn plan(&self) -> Plan {
        phoenix_testing::plan(self.resources.clone(), &self.managers, &PlanOptions::default()).await
    }

    pub(crate) async fn apply(&self) -> Report {
        let plan = self.plan().await;
        let options = ExecuteOptions {
            allow_risky: self.allow_risky,
            ..ExecuteOptions::default()
        };
        phoenix_testing::apply(&plan, &self.managers, &options).await
    }

    /// What a plan changes at `address`, as `field: old -> new`.
    pub(crate) async fn drift(&self, address: &str) -> Vec<String> {
        drift_in(&self.plan().await, address)
    }

    /// Asserts that the next plan is empty and that applying it records no step at all.
    pub(crate) async fn assert_converged(&self) {
        assert!(!self.plan().await.has_changes(), "the second plan is empty");
        let again = self.apply().await;
        assert!(again.succeeded());
        assert!(
            again.resources.iter().all(|line| line.steps.is_empty()),
            "{again:#?}"
        );
    }

    /// Runs a shell script on the node, which must succeed; its standard output.
    pub(crate) fn sh(&self, script: &str) -> String {
        let output = self.node.exec(&["sh", "-c", script]);
        assert!(output.success(), "{script}: {}", output.tail(10));
        output.stdout
    }
}

/// What `plan` changes at `address`, as `field: old -> new`.
pub(crate) fn drift_in(plan: &Plan, address: &str) -> Vec<String> {
    plan.entries()
        .iter()
        .filter(|entry| entry.address.to_string() == address)
        .flat_map(|entry| &entry.changes)
        .flat_map(|change| &change.fields)
        .map(|field| format!("{}: {:?} -> {:?}", field.field, field.old, field.new))
        .collect()
}

/// The steps a report records for `address`.
pub(crate) fn steps(report: &Report, address: &str) -> Vec<String> {
    report
        .resources
        .iter()
        .filter(|line| line.address.to_string() == address)
        .flat_map(|line| &line.steps)
        .map(|step| step.what.clone())
        .collect()
}

/// The error a report records for `address`, which must have failed.
pub(crate) fn failure<'a>(report: &'a Report, address: &str) -> &'a str {
    match phoenix_testing::outcome(report, address) {
        phoenix_core::Outcome::Failed { error, .. } => error,
        other => panic!("{address}: {other:?} in {report:#?}"),
    }
}
