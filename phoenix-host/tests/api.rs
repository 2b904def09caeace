//! The host steps Proxmox has an API for (timezone, DNS), against fakepve with the harness's state for
//! those paths: converged on a fresh node with one write each, a second plan that writes nothing, a change
//! by hand found as drift and corrected alone, and a value Proxmox refuses failing only its own step.

use std::path::Path;
use std::sync::Arc;

use phoenix_core::{CheckOptions, ExecuteOptions, Managers, Outcome, PlanOptions, Resource, ResourceKind};
use phoenix_host::{HostManager, Node};
use phoenix_pve::Form;
use phoenix_testing::{FakePve, fixture, outcome};
use serde_json::{Value, json};

struct Node1 {
    fake: FakePve,
    managers: Managers,
    resources: Vec<Resource>,
}

fn fixture_dir() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/node"))
}

/// A fresh fake and a host manager without a host channel (so the fixture's user is not planned).
async fn start(edit: impl Fn(String) -> String) -> Option<Node1> {
    let fake = FakePve::start().await?;
    let client = fake.root_client().await;
    let mut managers = Managers::default();
    managers.register(Arc::new(HostManager::new(Node::new(client, "pve1", None))));
    let sources = fixture::every_source_edited(fixture_dir(), |kind, text| {
        Some(if kind == phoenix_core::FileKind::Hypervisor {
            edit(text)
        } else {
            text
        })
    });
    // The fixture's bridge has tests of its own (`network.rs`): changing it here would be risky.
    let resources = fixture::resources(sources, &CheckOptions::default())
        .into_iter()
        .filter(|resource| !resource.address.to_string().starts_with("host/network/"))
        .collect();
    Some(Node1 {
        fake,
        managers,
        resources,
    })
}

impl Node1 {
    async fn plan(&self) -> phoenix_core::Plan {
        phoenix_testing::plan(self.resources.clone(), &self.managers, &PlanOptions::default()).await
    }

    async fn apply(&self) -> phoenix_core::Report {
        let plan = self.plan().await;
        phoenix_testing::apply(&plan, &self.managers, &ExecuteOptions::default()).await
    }

    async fn writes(&self) -> Vec<String> {
        self.fake.writes().await
    }

    async fn get(&self, path: &str) -> Value {
        self.fake.root_client().await.get(path, &[]).await.expect("reads")
    }
}

#[tokio::test]
async fn a_fresh_node_gets_its_timezone_and_resolvers_and_the_second_run_writes_nothing() {
    let Some(node) = start(|text| text).await else {
        return;
    };
    let plan = node.plan().await;
    let planned: Vec<String> = plan
        .entries()
        .iter()
        .map(|entry| entry.address.to_string())
        .collect();
    assert_eq!(planned, ["host/dns", "host/timezone"]);
    // Without a host channel, the user and the `sudo` package it needs are counted, not planned.
    assert_eq!(plan.unmanaged().get(&ResourceKind::Host), Some(&2));

    let report = node.apply().await;
    assert!(report.succeeded(), "{report:#?}");
    assert_eq!(
        node.writes().await,
        ["PUT /api2/json/nodes/pve1/dns", "PUT /api2/json/nodes/pve1/time"]
    );
    assert_eq!(node.get("/nodes/pve1/time").await["timezone"], "Europe/Berlin");
    let dns = node.get("/nodes/pve1/dns").await;
    assert_eq!(
        (
            dns["search"].clone(),
            dns["dns1"].clone(),
            dns["dns2"].clone(),
            dns.get("dns3").cloned()
        ),
        (
            json!("lab.example.org"),
            json!("10.42.0.1"),
            json!("9.9.9.9"),
            None
        ),
        "{dns}"
    );

    assert!(!node.plan().await.has_changes());
    let again = node.apply().await;
    assert!(again.succeeded());
    assert_eq!(node.writes().await.len(), 2, "the second run writes nothing");
}

#[tokio::test]
async fn a_timezone_changed_by_hand_is_drift_and_only_it_is_corrected() {
    let Some(node) = start(|text| text).await else {
        return;
    };
    assert!(node.apply().await.succeeded());
    let client = node.fake.root_client().await;
    let _: Value = client
        .put("/nodes/pve1/time", &Form::new().text("timezone", "UTC"))
        .await
        .expect("set by hand");

    let plan = node.plan().await;
    let drifted: Vec<_> = plan
        .entries()
        .iter()
        .filter(|entry| !entry.changes.is_empty())
        .collect();
    assert_eq!(drifted.len(), 1, "{plan:#?}");
    let field = &drifted[0].changes[0].fields[0];
    assert_eq!(
        (field.field.as_str(), field.old.clone(), field.new.clone()),
        ("timezone", Some(json!("UTC")), Some(json!("Europe/Berlin")))
    );
    let before = node.writes().await.len();
    assert!(node.apply().await.succeeded());
    assert_eq!(node.writes().await[before..], ["PUT /api2/json/nodes/pve1/time"]);
    assert!(!node.plan().await.has_changes());
}

#[tokio::test]
async fn a_timezone_proxmox_does_not_know_fails_its_step_alone() {
    let Some(node) = start(|text| text.replace("Europe/Berlin", "Mars/Olympus_Mons")).await else {
        return;
    };
    let report = node.apply().await;
    let Outcome::Failed { error, .. } = outcome(&report, "host/timezone") else {
        panic!("{report:#?}")
    };
    assert!(error.contains("No such timezone"), "{error}");
    assert!(matches!(outcome(&report, "host/dns"), Outcome::Changed { .. }));
}

#[tokio::test]
async fn each_node_of_a_cluster_gets_its_own_steps_and_an_offline_node_is_skipped() {
    let Some(fake) = FakePve::start().await else {
        return;
    };
    fake.exec("pve.add_node('pve2')").await;
    let client = fake.root_client().await;
    let mut managers = Managers::default();
    let nodes = ["pve1", "pve2"].map(|name| Node::new(Arc::clone(&client), name, None));
    managers.register(Arc::new(HostManager::cluster(nodes.to_vec())));
    let sources = fixture::every_source_edited(fixture_dir(), |kind, text| {
        Some(if kind == phoenix_core::FileKind::Hypervisor {
            text.replace(r#""nodes": ["pve1"],"#, r#""nodes": ["pve1", "pve2"],"#)
        } else {
            text
        })
    });
    let resources: Vec<Resource> = fixture::resources(sources, &CheckOptions::default())
        .into_iter()
        .filter(|resource| !resource.address.to_string().contains("/network/"))
        .collect();
    let plan = phoenix_testing::plan(resources.clone(), &managers, &PlanOptions::default()).await;
    let planned: Vec<String> = plan
        .entries()
        .iter()
        .map(|entry| entry.address.to_string())
        .collect();
    assert_eq!(
        planned,
        [
            "host/pve1/dns",
            "host/pve1/timezone",
            "host/pve2/dns",
            "host/pve2/timezone"
        ]
    );
    let report = phoenix_testing::apply(&plan, &managers, &ExecuteOptions::default()).await;
    assert!(report.succeeded(), "{report:#?}");
    let writes = fake.writes().await;
    for node in ["pve1", "pve2"] {
        for path in ["dns", "time"] {
            let write = format!("PUT /api2/json/nodes/{node}/{path}");
            assert_eq!(
                writes.iter().filter(|done| **done == write).count(),
                1,
                "{write}: {writes:#?}"
            );
        }
        let zone: Value = client
            .get(&format!("/nodes/{node}/time"), &[])
            .await
            .expect("reads");
        assert_eq!(zone["timezone"], "Europe/Berlin", "{node}");
    }
    let again = phoenix_testing::plan(resources.clone(), &managers, &PlanOptions::default()).await;
    assert!(!again.has_changes(), "{:#?}", again.entries());

    // pve2 goes down: its steps are unreachable and nothing is sent there; pve1's still converge.
    fake.exec("pve.set_node_offline('pve2')").await;
    client
        .put("/nodes/pve1/time", &Form::new().text("timezone", "UTC"))
        .await
        .map(|_: Value| ())
        .expect("changed by hand");
    let plan = phoenix_testing::plan(resources, &managers, &PlanOptions::default()).await;
    let unreachable: Vec<String> = plan
        .unreachable()
        .map(|(address, _)| address.to_string())
        .collect();
    assert_eq!(unreachable, ["host/pve2/dns", "host/pve2/timezone"]);
    let before = fake.writes().await.len();
    let report = phoenix_testing::apply(&plan, &managers, &ExecuteOptions::default()).await;
    assert!(!report.succeeded());
    assert_eq!(
        outcome(&report, "host/pve2/timezone"),
        &Outcome::Skipped {
            reason: "node pve2 is offline".into()
        }
    );
    assert_eq!(
        fake.writes().await.split_off(before),
        ["PUT /api2/json/nodes/pve1/time"]
    );
}
