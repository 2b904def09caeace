//! `host/firewall` (the cluster firewall) against fakepve, whose cluster firewall keeps rules, positions
//! and digests as Proxmox does: converged on a fresh cluster, a second run writes nothing, a rule appended to
//! the configuration is one insert (no rewrite), rules of others are kept, and one put in the middle of the
//! declared block is moved below it.

use std::path::Path;
use std::sync::Arc;

use phoenix_core::{CheckOptions, ExecuteOptions, FileKind, Managers, PlanOptions, Resource};
use phoenix_host::{HostManager, Node};
use phoenix_pve::Form;
use phoenix_testing::{FakePve, fixture};
use serde_json::Value;

const FIREWALL: &str = r#""firewall": {
    "enabled": true,
    "default_input_policy": "DROP",
    "default_output_policy": "ACCEPT",
    "global_firewall_rules": [
      { "type": "in", "action": "ACCEPT", "proto": "tcp", "port": "8006", "source": "10.42.0.0/24", "comment": "API" },
      { "type": "in", "action": "ACCEPT", "proto": "tcp", "port": "22", "source": "10.42.0.0/24", "comment": "SSH" }
      EXTRA
    ]
  },
  "users": ["#;

const EXTRA: &str =
    r#", { "type": "in", "action": "ACCEPT", "proto": "icmp", "source": "10.42.0.0/24", "comment": "ping" }"#;

fn resources(extra: &str) -> Vec<Resource> {
    let dir = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/node"));
    let sources = fixture::every_source_edited(dir, |kind, text| {
        Some(if kind == FileKind::Hypervisor {
            text.replace(r#""users": ["#, &FIREWALL.replace("EXTRA", extra))
        } else {
            text
        })
    });
    fixture::resources(sources, &CheckOptions::default())
        .into_iter()
        .filter(|resource| resource.address.to_string() == "host/firewall")
        .collect()
}

async fn converge(managers: &Managers, resources: &[Resource]) -> phoenix_core::Plan {
    let plan = phoenix_testing::plan(resources.to_vec(), managers, &PlanOptions::default()).await;
    let report = phoenix_testing::apply(&plan, managers, &ExecuteOptions::default()).await;
    assert!(report.succeeded(), "{report:#?}");
    plan
}

async fn comments(fake: &FakePve) -> Vec<String> {
    let rules: Vec<Value> = fake
        .root_client()
        .await
        .get("/cluster/firewall/rules", &[])
        .await
        .expect("reads");
    rules
        .iter()
        .map(|rule| rule["comment"].as_str().unwrap_or("-").to_owned())
        .collect()
}

/// A fresh fake, a root client, and a host manager on it.
async fn start() -> Option<(FakePve, Arc<phoenix_pve::Client>, Managers)> {
    let fake = FakePve::start().await?;
    let client = fake.root_client().await;
    let mut managers = Managers::default();
    let node = Node::new(Arc::clone(&client), "pve1", None);
    managers.register(Arc::new(HostManager::new(node)));
    Some((fake, client, managers))
}

#[tokio::test]
async fn the_cluster_firewall_converges_keeps_rules_of_others_and_appends_with_one_insert() {
    let Some((fake, client, managers)) = start().await else {
        return;
    };
    // A rule someone else wrote is there before Phoenix.
    let rule_of_others = |comment: &str| {
        Form::new()
            .text("type", "in")
            .text("action", "ACCEPT")
            .text("proto", "tcp")
            .text("dport", "9100")
            .text("comment", comment)
            .flag("enable", true)
    };
    let _: Value = client
        .post("/cluster/firewall/rules", &rule_of_others("theirs"))
        .await
        .expect("adds");

    let declared = resources("");
    converge(&managers, &declared).await;
    assert_eq!(comments(&fake).await, ["API", "SSH", "theirs"]);
    let options: Value = client.get("/cluster/firewall/options", &[]).await.expect("reads");
    assert_eq!(
        (options["enable"].as_i64(), options["policy_in"].as_str()),
        (Some(1), Some("DROP")),
        "{options}"
    );
    let writes = fake.writes().await.len();
    let again = phoenix_testing::plan(declared.clone(), &managers, &PlanOptions::default()).await;
    assert!(!again.has_changes(), "{again:#?}");
    assert_eq!(fake.writes().await.len(), writes, "a plan writes nothing");

    // Appending a rule to the configuration inserts that rule and moves it into place: nothing is rewritten.
    let appended = resources(EXTRA);
    converge(&managers, &appended).await;
    let new_writes: Vec<String> = fake.writes().await[writes..].to_vec();
    assert_eq!(
        new_writes,
        [
            "POST /api2/json/cluster/firewall/rules",
            "PUT /api2/json/cluster/firewall/rules/0"
        ]
    );
    assert_eq!(comments(&fake).await, ["API", "SSH", "ping", "theirs"]);

    // A rule put by hand in the middle of the declared block is drift: it is moved below, not deleted.
    let _: Value = client
        .post("/cluster/firewall/rules", &rule_of_others("middle"))
        .await
        .expect("adds");
    let _: Value = client
        .put("/cluster/firewall/rules/0", &Form::new().number("moveto", 2))
        .await
        .expect("moves");
    assert_eq!(comments(&fake).await, ["API", "middle", "SSH", "ping", "theirs"]);
    let plan = converge(&managers, &appended).await;
    assert_eq!(plan.entries()[0].changes[0].fields[0].field, "rules");
    assert_eq!(comments(&fake).await, ["API", "SSH", "ping", "middle", "theirs"]);
    assert!(
        !phoenix_testing::plan(appended, &managers, &PlanOptions::default())
            .await
            .has_changes()
    );
}

#[tokio::test]
async fn a_rule_whose_insert_failed_on_the_way_is_sent_again_once_and_never_twice() {
    let Some((fake, _client, managers)) = start().await else {
        return;
    };
    // The first insert is answered 502: it did not go in, and is sent again after a read-back.
    fake.exec("pve.fail('POST', '/cluster/firewall/rules', 502, 'Bad Gateway', times=1)")
        .await;
    converge(&managers, &resources("")).await;
    assert_eq!(comments(&fake).await, ["API", "SSH"]);
    let posts = fake
        .writes()
        .await
        .iter()
        .filter(|write| write.starts_with("POST"))
        .count();
    assert_eq!(posts, 3, "two rules, one of them sent again");
}
