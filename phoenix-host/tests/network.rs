//! `host/network/<name>` (the node's bridges) against fakepve, with the harness's pending/active network
//! state: a fresh bridge is one create and one reload, a second run writes nothing, a change by hand is
//! corrected with one update and one reload, a port the node lacks fails that bridge alone with Proxmox's
//! message, and the management bridge and pending changes of others are risky.
//!
//! fakepve's node has `vmbr0` (192.0.2.11/24, gateway 192.0.2.1, port `eno1`) and `eno1`; the tests add
//! `eno2`. Phoenix reaches the fake on 127.0.0.1, so the management bridge is the one with the gateway.

use std::path::Path;
use std::sync::Arc;

use phoenix_core::engine::executor::ExecuteError;
use phoenix_core::{
    Action, CheckOptions, Consequence, ExecuteOptions, FileKind, Managers, Outcome, Plan, PlanOptions,
    Report, Resource, StopHandle,
};
use phoenix_host::{HostManager, Node};
use phoenix_pve::Form;
use phoenix_testing::{FakePve, fixture, outcome};
use serde_json::{Value, json};

const NETWORK: &str = "/api2/json/nodes/pve1/network";

struct Bridges {
    fake: FakePve,
    managers: Managers,
    resources: Vec<Resource>,
}

/// A fresh fake with a second NIC, and the fixture's hypervisor file declaring `interfaces` (JSON).
async fn start(interfaces: &str) -> Option<Bridges> {
    let fake = FakePve::start().await?;
    fake.exec(
        "pve.host_state._net('pve1')['active']['eno2'] = {'type': 'eth', 'method': 'manual', \
         'method6': 'manual', 'families': ['inet'], 'priority': 2, 'active': 1, 'exists': 1}",
    )
    .await;
    let client = fake.root_client().await;
    let mut managers = Managers::default();
    managers.register(Arc::new(HostManager::new(Node::new(client, "pve1", None))));
    let dir = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/node"));
    let sources = fixture::every_source_edited(dir, |kind, text| {
        Some(if kind == FileKind::Hypervisor {
            let start = text
                .find(r#""interfaces": ["#)
                .expect("the fixture declares interfaces");
            let end = start + text[start..].find("],").expect("a list") + 1;
            format!("{}\"interfaces\": {interfaces}{}", &text[..start], &text[end..])
        } else {
            text
        })
    });
    let resources = fixture::resources(sources, &CheckOptions::default())
        .into_iter()
        .filter(|resource| resource.address.to_string().starts_with("host/network/"))
        .collect();
    Some(Bridges {
        fake,
        managers,
        resources,
    })
}

impl Bridges {
    async fn plan(&self) -> Plan {
        phoenix_testing::plan(self.resources.clone(), &self.managers, &PlanOptions::default()).await
    }

    async fn apply_with(&self, options: &ExecuteOptions) -> Report {
        phoenix_testing::apply(&self.plan().await, &self.managers, options).await
    }

    async fn apply(&self) -> Report {
        self.apply_with(&ExecuteOptions::default()).await
    }

    async fn writes(&self) -> Vec<String> {
        self.fake.writes().await
    }

    async fn live(&self, iface: &str) -> Value {
        let client = self.fake.root_client().await;
        client
            .get(&format!("/nodes/pve1/network/{iface}"), &[])
            .await
            .expect("reads")
    }

    /// Asserts the writes since the `since`th, each as a method and the path after `/nodes/pve1/network`.
    async fn assert_wrote(&self, since: usize, expected: &[(&str, &str)]) {
        let writes = self.writes().await;
        let expected: Vec<String> = expected
            .iter()
            .map(|(method, tail)| format!("{method} {NETWORK}{tail}"))
            .collect();
        assert_eq!(writes[since..], expected);
    }

    /// Asserts settings of a live interface, as Proxmox reads them back.
    async fn assert_live(&self, iface: &str, expected: &[(&str, Value)]) {
        let live = self.live(iface).await;
        for (key, value) in expected {
            assert_eq!(&live[*key], value, "{key} of {iface}: {live}");
        }
    }

    /// The node's pending changes, as the listing carries them.
    async fn pending(&self) -> Option<Value> {
        let client = self.fake.root_client().await;
        let (_, attributes): (Value, _) = client
            .get_with_attributes("/nodes/pve1/network", &[])
            .await
            .expect("reads");
        attributes.get("changes").cloned()
    }

    /// A change made in the GUI: one interface updated (`type` is required), applied or left pending.
    async fn by_hand(&self, iface: &str, settings: &[(&str, &str)], reload: bool) {
        let client = self.fake.root_client().await;
        let mut form = Form::new().text("type", "bridge");
        for (key, value) in settings {
            form = form.text(key, *value);
        }
        let _: Value = client
            .put(&format!("/nodes/pve1/network/{iface}"), &form)
            .await
            .expect("changed by hand");
        if reload {
            let _: Value = client
                .put("/nodes/pve1/network", &Form::new())
                .await
                .expect("reloaded by hand");
        }
    }
}

/// The changed fields of the one planned change, with their consequences.
fn planned(plan: &Plan) -> Vec<(String, Action, String, Consequence)> {
    plan.entries()
        .iter()
        .flat_map(|entry| &entry.changes)
        .flat_map(|change| {
            change.fields.iter().map(|field| {
                (
                    change.address.to_string(),
                    change.action,
                    field.field.clone(),
                    field.consequence,
                )
            })
        })
        .collect()
}

fn risky_allowed() -> ExecuteOptions {
    ExecuteOptions {
        allow_risky: true,
        ..ExecuteOptions::default()
    }
}

/// The planned fields with their consequences.
fn consequences(plan: &Plan) -> Vec<(String, Consequence)> {
    planned(plan)
        .into_iter()
        .map(|(_, _, field, consequence)| (field, consequence))
        .collect()
}

const GUESTS: &str = r#"[
  { "name": "vmbr1", "address": "10.10.0.2/24", "ports": ["eno2"], "comments": "guests",
    "autostart": true, "vlan_aware": true, "dns_nameservers": ["10.42.0.1"] }
]"#;

#[tokio::test]
async fn a_fresh_bridge_is_one_create_and_one_reload_and_the_second_run_writes_nothing() {
    let Some(node) = start(GUESTS).await else {
        return;
    };
    let plan = node.plan().await;
    let fields = planned(&plan);
    assert!(
        fields.iter().all(
            |(address, action, _, consequence)| address == "host/network/vmbr1"
                && *action == Action::Create
                && *consequence == Consequence::Live
        ),
        "{fields:?}"
    );
    assert_eq!(plan.risky().count(), 0);

    let report = node.apply().await;
    assert!(report.succeeded(), "{report:#?}");
    node.assert_wrote(0, &[("POST", ""), ("PUT", "")]).await;
    node.assert_live(
        "vmbr1",
        &[
            ("cidr", json!("10.10.0.2/24")),
            ("bridge_ports", json!("eno2")),
            ("comments", json!("guests")),
            ("active", json!(1)),
            ("bridge_vlan_aware", json!(1)),
        ],
    )
    .await;
    assert_eq!(node.pending().await, None, "the reload applied the change");

    assert!(!node.plan().await.has_changes());
    assert!(node.apply().await.succeeded());
    assert_eq!(node.writes().await.len(), 2, "the second run writes nothing");
}

#[tokio::test]
async fn an_address_and_comment_changed_by_hand_are_one_update_and_one_reload() {
    let Some(node) = start(GUESTS).await else {
        return;
    };
    assert!(node.apply().await.succeeded());
    node.by_hand(
        "vmbr1",
        &[
            ("cidr", "10.10.0.9/24"),
            ("comments", "by hand"),
            ("bridge_ports", "eno2"),
            ("autostart", "1"),
        ],
        true,
    )
    .await;

    let plan = node.plan().await;
    assert_eq!(
        consequences(&plan),
        [
            ("cidr".to_owned(), Consequence::Live),
            ("comments".to_owned(), Consequence::Live)
        ],
        "only the drift, and vmbr1 is not the management bridge"
    );
    let before = node.writes().await.len();
    assert!(node.apply().await.succeeded());
    node.assert_wrote(before, &[("PUT", "/vmbr1"), ("PUT", "")]).await;
    node.assert_live(
        "vmbr1",
        &[
            ("cidr", json!("10.10.0.2/24")),
            ("comments", json!("guests")),
            ("bridge_ports", json!("eno2")),
            ("autostart", json!(1)),
        ],
    )
    .await;
    assert!(!node.plan().await.has_changes());
}

#[tokio::test]
async fn a_port_the_node_does_not_have_fails_its_bridge_alone_with_proxmoxs_message() {
    let Some(node) = start(
        r#"[
  { "name": "vmbr1", "address": "10.10.0.2/24", "ports": ["eno9"] },
  { "name": "vmbr2", "ports": [], "comments": "internal" }
]"#,
    )
    .await
    else {
        return;
    };
    let report = node.apply().await;
    let Outcome::Failed { error, .. } = outcome(&report, "host/network/vmbr1") else {
        panic!("{report:#?}")
    };
    assert!(
        error.contains("bridge 'vmbr1' - unable to find bridge port 'eno9'"),
        "{error}"
    );
    assert!(
        matches!(outcome(&report, "host/network/vmbr2"), Outcome::Changed { .. }),
        "{report:#?}"
    );
    let writes = node.writes().await;
    assert_eq!(
        writes
            .iter()
            .filter(|write| *write == &format!("POST {NETWORK}"))
            .count(),
        2,
        "{writes:?}"
    );
    assert_eq!(
        writes
            .iter()
            .filter(|write| *write == &format!("PUT {NETWORK}"))
            .count(),
        1,
        "only vmbr2 reloads: {writes:?}"
    );
    let client = node.fake.root_client().await;
    let listing: Vec<Value> = client.get("/nodes/pve1/network", &[]).await.expect("reads");
    assert!(
        !listing.iter().any(|entry| entry["iface"] == "vmbr1"),
        "nothing half-written: {listing:?}"
    );
    assert_eq!(node.pending().await, None);
}

#[tokio::test]
async fn a_change_to_the_management_bridge_is_risky_and_refused_without_the_flag() {
    let Some(node) = start(
        r#"[{ "name": "vmbr0", "address": "192.0.2.12/24", "gateway": "192.0.2.1", "comments": "uplink" }]"#,
    )
    .await
    else {
        return;
    };
    let plan = node.plan().await;
    assert_eq!(
        consequences(&plan),
        [
            ("cidr".to_owned(), Consequence::Risky),
            ("comments".to_owned(), Consequence::Live)
        ]
    );
    let (_handle, signal) = StopHandle::new();
    let refused =
        phoenix_core::execute(&plan, &node.managers, &ExecuteOptions::default(), signal, None).await;
    assert!(
        matches!(&refused, Err(ExecuteError::RiskyRefused { addresses }) if addresses == &["host/network/vmbr0"]),
        "{refused:?}"
    );
    assert!(node.writes().await.is_empty(), "refused before anything");

    assert!(node.apply_with(&risky_allowed()).await.succeeded());
    node.assert_wrote(0, &[("PUT", "/vmbr0"), ("PUT", "")]).await;
    node.assert_live(
        "vmbr0",
        &[
            ("cidr", json!("192.0.2.12/24")),
            ("gateway", json!("192.0.2.1")),
            ("bridge_ports", json!("eno1")),
            ("comments", json!("uplink")),
        ],
    )
    .await;
    assert!(!node.plan().await.has_changes());
}

#[tokio::test]
async fn a_comment_on_the_management_bridge_is_not_risky_and_keeps_its_address() {
    let Some(node) = start(r#"[{ "name": "vmbr0", "comments": "uplink" }]"#).await else {
        return;
    };
    assert_eq!(node.plan().await.risky().count(), 0);
    assert!(node.apply().await.succeeded());
    node.assert_wrote(0, &[("PUT", "/vmbr0"), ("PUT", "")]).await;
    // Proxmox recomputes an interface's method from each PUT: the live settings travel with the comment.
    let requests = node.fake.requests().await;
    let (_, _, body) = requests
        .iter()
        .find(|(method, path, _)| method == "PUT" && path.ends_with("/network/vmbr0"))
        .expect("the update");
    for setting in [
        "cidr=192.0.2.11%2F24",
        "gateway=192.0.2.1",
        "bridge_ports=eno1",
        "autostart=1",
        "comments=uplink",
    ] {
        assert!(body.split('&').any(|pair| pair == setting), "{setting} in {body}");
    }
    node.assert_live(
        "vmbr0",
        &[
            ("cidr", json!("192.0.2.11/24")),
            ("gateway", json!("192.0.2.1")),
            ("bridge_ports", json!("eno1")),
            ("comments", json!("uplink")),
        ],
    )
    .await;
}

#[tokio::test]
async fn pending_changes_of_others_are_planned_risky_and_applied_only_with_the_flag() {
    let Some(node) = start(GUESTS).await else {
        return;
    };
    assert!(node.apply().await.succeeded());
    node.by_hand(
        "vmbr0",
        &[("cidr", "192.0.2.11/24"), ("comments", "left pending")],
        false,
    )
    .await;
    let before = node.writes().await.len();

    let plan = node.plan().await;
    let entry = &plan.entries()[0];
    let change = &entry.changes[0];
    assert_eq!(
        (
            change.fields.len(),
            change.fields[0].field.as_str(),
            change.fields[0].consequence
        ),
        (1, "pending", Consequence::Risky),
        "{change:#?}"
    );
    let shown = change.fields[0].old.clone().expect("the pending lines");
    assert!(
        shown.to_string().contains("left pending"),
        "the plan shows what would be applied: {shown}"
    );
    let (_handle, signal) = StopHandle::new();
    let refused =
        phoenix_core::execute(&plan, &node.managers, &ExecuteOptions::default(), signal, None).await;
    assert!(
        matches!(refused, Err(ExecuteError::RiskyRefused { .. })),
        "{refused:?}"
    );
    assert!(node.pending().await.is_some(), "left pending");

    assert!(node.apply_with(&risky_allowed()).await.succeeded());
    node.assert_wrote(before, &[("PUT", "")]).await;
    assert_eq!(node.pending().await, None);
    assert!(!node.plan().await.has_changes());
}
