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

/// A node and a fake for the host resources of the configuration directory `dir`.
pub(crate) async fn start_dir(dir: &Path) -> Option<Setup> {
    let mut resources = fixture::resources(fixture::sources(dir), &CheckOptions::default());
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
