//! `host/firewall` (the cluster firewall) and `host/firewall/{group,alias,ipset}/<name>` and
//! `host/firewall/node` against fakepve, whose firewall keeps rules, positions and digests as Proxmox does
//! and refuses a rule naming an alias or IP set that does not exist: converged on a fresh cluster, a second
//! run writes nothing, a rule appended to the configuration is one insert (no rewrite), rules of others are
//! kept, one put in the middle of the declared block is moved below it, one put inside a declared group is
//! deleted alone, and an alias or IP set changed by hand is corrected alone.

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
    firewall_resources(&FIREWALL.replace("EXTRA", extra))
        .into_iter()
        .filter(|resource| resource.address.to_string() == "host/firewall")
        .collect()
}

/// The `host/firewall*` resources of the node fixture with `firewall` (the text from the key to the
/// `"users": [` that follows it) put in.
fn firewall_resources(firewall: &str) -> Vec<Resource> {
    let dir = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/node"));
    let sources = fixture::every_source_edited(dir, |kind, text| {
        Some(if kind == FileKind::Hypervisor {
            text.replace(r#""users": ["#, firewall)
        } else {
            text
        })
    });
    fixture::resources(sources, &CheckOptions::default())
        .into_iter()
        .filter(|resource| resource.address.to_string().starts_with("host/firewall"))
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

/// Aliases, an IP set naming one of them, a security group whose rules name both, the node's rules jumping
/// to the group, and the cluster's rules jumping to it too. `GROUP_EXTRA` is where a test appends a rule.
const OBJECTS: &str = r#""firewall": {
    "global_firewall_rules": [
      { "type": "group", "action": "webservers", "comment": "web" }
    ],
    "aliases": {
      "lan": { "cidr": "10.42.0.0/24", "comment": "estate" },
      "admin": { "cidr": "10.42.0.5" }
    },
    "ipsets": {
      "management": {
        "comment": "admins",
        "entries": [
          { "cidr": "admin" },
          { "cidr": "10.42.0.16/28", "comment": "jump hosts" },
          { "cidr": "10.42.0.9/32", "nomatch": true }
        ]
      }
    },
    "security_groups": {
      "webservers": {
        "comment": "web servers",
        "rules": [
          { "type": "in", "action": "ACCEPT", "macro": "https", "source": "lan", "comment": "https" },
          { "type": "in", "action": "ACCEPT", "proto": "tcp", "port": "80", "source": "+management", "comment": "http" }
          GROUP_EXTRA
        ]
      }
    },
    "node": {
      "enabled": true,
      "nosmurfs": true,
      "rules": [
        { "type": "group", "action": "webservers", "comment": "web" },
        { "type": "in", "action": "ACCEPT", "macro": "SSH", "source": "+management", "comment": "ssh" }
      ]
    }
  },
  "users": ["#;

const GROUP_EXTRA: &str =
    r#", { "type": "in", "action": "ACCEPT", "macro": "Ping", "source": "lan", "comment": "ping" }"#;

fn objects(group_extra: &str) -> Vec<Resource> {
    firewall_resources(&OBJECTS.replace("GROUP_EXTRA", group_extra))
}

async fn comments_at(fake: &FakePve, path: &str) -> Vec<String> {
    let rules: Vec<Value> = fake.root_client().await.get(path, &[]).await.expect("reads");
    rules
        .iter()
        .map(|rule| rule["comment"].as_str().unwrap_or("-").to_owned())
        .collect()
}

async fn entries(fake: &FakePve) -> Vec<String> {
    let live: Vec<Value> = fake
        .root_client()
        .await
        .get("/cluster/firewall/ipset/management", &[])
        .await
        .expect("reads");
    let mut entries: Vec<String> = live
        .iter()
        .map(|entry| {
            let nomatch = if entry["nomatch"].as_i64() == Some(1) {
                "!"
            } else {
                ""
            };
            format!("{nomatch}{}", entry["cidr"].as_str().unwrap_or_default())
        })
        .collect();
    entries.sort();
    entries
}

/// The writes made since `before` of them were counted, sorted (independent resources run in parallel).
async fn writes_since(fake: &FakePve, before: usize) -> Vec<String> {
    let mut writes = fake.writes().await[before..].to_vec();
    writes.sort();
    writes
}

async fn changed_addresses(managers: &Managers, resources: &[Resource]) -> Vec<String> {
    let plan = phoenix_testing::plan(resources.to_vec(), managers, &PlanOptions::default()).await;
    plan.entries()
        .iter()
        .filter(|entry| !entry.changes.is_empty())
        .map(|entry| entry.address.to_string())
        .collect()
}

#[tokio::test]
async fn groups_aliases_ip_sets_and_the_node_firewall_converge_in_dependency_order() {
    let Some((fake, client, managers)) = start().await else {
        return;
    };
    let declared = objects("");
    let address = |text: &str| text.parse::<phoenix_core::Address>().expect("an address");
    let group = declared
        .iter()
        .find(|resource| resource.address.to_string() == "host/firewall/group/webservers")
        .expect("the group is a resource");
    assert_eq!(
        group.depends_on,
        [
            address("host/firewall/alias/lan"),
            address("host/firewall/ipset/management")
        ]
    );
    let cluster = declared
        .iter()
        .find(|resource| resource.address.to_string() == "host/firewall")
        .expect("the cluster rules are a resource");
    assert_eq!(cluster.depends_on, [address("host/firewall/group/webservers")]);

    // Proxmox refuses a rule that names a missing alias or IP set: this converges only in dependency order.
    converge(&managers, &declared).await;
    assert_eq!(
        comments_at(&fake, "/cluster/firewall/groups/webservers").await,
        ["https", "http"]
    );
    assert_eq!(
        comments_at(&fake, "/nodes/pve1/firewall/rules").await,
        ["web", "ssh"]
    );
    assert_eq!(comments_at(&fake, "/cluster/firewall/rules").await, ["web"]);
    assert_eq!(entries(&fake).await, ["!10.42.0.9", "10.42.0.16/28", "admin"]);
    let group_rules: Vec<Value> = client
        .get("/cluster/firewall/groups/webservers", &[])
        .await
        .expect("reads");
    assert_eq!(group_rules[0]["macro"], "HTTPS", "the macro as Proxmox spells it");
    let groups: Vec<Value> = client.get("/cluster/firewall/groups", &[]).await.expect("reads");
    assert_eq!(groups[0]["comment"], "web servers");
    let node: Value = client
        .get("/nodes/pve1/firewall/options", &[])
        .await
        .expect("reads");
    assert_eq!(
        (node["enable"].as_i64(), node["nosmurfs"].as_i64()),
        (Some(1), Some(1)),
        "{node}"
    );
    let cluster: Value = client.get("/cluster/firewall/options", &[]).await.expect("reads");
    assert!(
        cluster.get("enable").is_none(),
        "an undeclared `enabled` is left alone: {cluster}"
    );

    let writes = fake.writes().await.len();
    assert!(changed_addresses(&managers, &declared).await.is_empty());
    converge(&managers, &declared).await;
    assert_eq!(fake.writes().await.len(), writes, "a second run writes nothing");
}

#[tokio::test]
async fn a_rule_put_inside_a_group_by_hand_is_deleted_alone_and_an_appended_rule_is_one_insert() {
    let Some((fake, client, managers)) = start().await else {
        return;
    };
    converge(&managers, &objects("")).await;

    // By hand, a rule in the middle of the declared group.
    let by_hand = Form::new()
        .text("type", "in")
        .text("action", "ACCEPT")
        .text("proto", "tcp")
        .text("dport", "8080")
        .text("comment", "by hand")
        .flag("enable", true);
    let group = "/cluster/firewall/groups/webservers";
    let _: Value = client.post(group, &by_hand).await.expect("adds");
    let _: Value = client
        .put(&format!("{group}/0"), &Form::new().number("moveto", 2))
        .await
        .expect("moves");
    assert_eq!(comments_at(&fake, group).await, ["https", "by hand", "http"]);
    assert_eq!(
        changed_addresses(&managers, &objects("")).await,
        ["host/firewall/group/webservers"],
        "the group is drift, nothing else"
    );
    let before = fake.writes().await.len();
    converge(&managers, &objects("")).await;
    assert_eq!(
        writes_since(&fake, before).await,
        ["DELETE /api2/json/cluster/firewall/groups/webservers/1"],
        "the rule added by hand is deleted, alone"
    );
    assert_eq!(comments_at(&fake, group).await, ["https", "http"]);

    // A rule appended to the group's configuration: one insert and one move, the group kept.
    let before = fake.writes().await.len();
    converge(&managers, &objects(GROUP_EXTRA)).await;
    let appended: Vec<String> = fake.writes().await[before..].to_vec();
    assert_eq!(
        appended,
        [
            "POST /api2/json/cluster/firewall/groups/webservers",
            "PUT /api2/json/cluster/firewall/groups/webservers/0"
        ]
    );
    assert_eq!(comments_at(&fake, group).await, ["https", "http", "ping"]);
    assert!(
        changed_addresses(&managers, &objects(GROUP_EXTRA))
            .await
            .is_empty()
    );
}

#[tokio::test]
async fn an_alias_and_an_ip_set_changed_by_hand_are_corrected_alone_and_undeclared_ones_are_kept() {
    let Some((fake, client, managers)) = start().await else {
        return;
    };
    let declared = objects("");
    converge(&managers, &declared).await;

    // By hand: the alias points elsewhere, an entry is removed, one is added, one's comment is changed,
    // and an alias of someone else's appears.
    let _: Value = client
        .put(
            "/cluster/firewall/aliases/lan",
            &Form::new().text("cidr", "10.99.0.0/24").text("comment", "estate"),
        )
        .await
        .expect("updates");
    let _: Value = client
        .delete("/cluster/firewall/ipset/management/admin", &[])
        .await
        .expect("removes");
    let _: Value = client
        .put(
            "/cluster/firewall/ipset/management/10.42.0.16%2F28",
            &Form::new().text("comment", "edited"),
        )
        .await
        .expect("updates");
    let _: Value = client
        .post(
            "/cluster/firewall/ipset/management",
            &Form::new().text("cidr", "10.42.0.77"),
        )
        .await
        .expect("adds");
    let _: Value = client
        .post(
            "/cluster/firewall/aliases",
            &Form::new().text("name", "theirs").text("cidr", "192.0.2.1"),
        )
        .await
        .expect("adds");
    assert_eq!(
        changed_addresses(&managers, &declared).await,
        ["host/firewall/alias/lan", "host/firewall/ipset/management"]
    );
    let before = fake.writes().await.len();
    converge(&managers, &declared).await;
    assert_eq!(
        writes_since(&fake, before).await,
        [
            "DELETE /api2/json/cluster/firewall/ipset/management/10.42.0.77",
            "POST /api2/json/cluster/firewall/ipset/management",
            "PUT /api2/json/cluster/firewall/aliases/lan",
            "PUT /api2/json/cluster/firewall/ipset/management/10.42.0.16/28",
        ]
    );
    assert_eq!(entries(&fake).await, ["!10.42.0.9", "10.42.0.16/28", "admin"]);
    let set: Vec<Value> = client
        .get("/cluster/firewall/ipset/management", &[])
        .await
        .expect("reads");
    let jump = set
        .iter()
        .find(|entry| entry["cidr"] == "10.42.0.16/28")
        .expect("there");
    assert_eq!(jump["comment"], "jump hosts");
    let aliases: Vec<Value> = client.get("/cluster/firewall/aliases", &[]).await.expect("reads");
    let summary: Vec<(String, String, String)> = aliases
        .iter()
        .map(|alias| {
            let text = |key: &str| alias[key].as_str().unwrap_or("-").to_owned();
            (text("name"), text("cidr"), text("comment"))
        })
        .collect();
    assert_eq!(
        summary,
        [
            ("admin".into(), "10.42.0.5".into(), "-".into()),
            ("lan".into(), "10.42.0.0/24".into(), "estate".into()),
            ("theirs".into(), "192.0.2.1".into(), "-".into()),
        ]
    );
    assert!(changed_addresses(&managers, &declared).await.is_empty());
}
