//! Snapshot tests of the plan as people read it and as machines read it (JSON format version 1),
//! and of the graph picture sources.

use std::collections::BTreeMap;
use std::path::Path;

use expect_test::{Expect, expect};
use phoenix_core::engine::render::{Colour, GraphFormat, graph_source, plan_document, plan_text};
use phoenix_core::{Address, CheckOptions, ExecuteOptions, Plan, Resource, ResourceKind};
use phoenix_testing::{Fakes, fixture};
use serde_json::json;

fn fixture_resources() -> Vec<Resource> {
    let dir = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/estate"));
    fixture::resources(fixture::every_source(dir), &CheckOptions::default())
}

/// A converged estate with one change of every kind made to it.
async fn drifted_plan() -> Plan {
    let resources = fixture_resources();
    let fakes = Fakes::new();
    let first = fakes.plan(&resources, &[]).await;
    fakes.apply(&first, &ExecuteOptions::default()).await;

    let lxc = fakes.fake(ResourceKind::Lxc);
    lxc.drift(&Address::Lxc(101), "memory_mb", json!(512));
    lxc.drift(&Address::Lxc(102), "clone_from_ctid", json!("555"));
    lxc.insert(
        Address::Lxc(555),
        BTreeMap::from([("name".to_owned(), json!("retired"))]),
    );
    fakes.fake(ResourceKind::Vm).drift(
        &Address::Vm(1001),
        "network_config",
        json!({"gw": "10.1.0.1", "ip": "10.1.0.30/24"}),
    );
    fakes.fake(ResourceKind::Stack).set_live(BTreeMap::new());
    fakes.plan(&resources, &[]).await
}

#[track_caller]
fn check(actual: &str, expect: Expect) {
    expect.assert_eq(actual);
}

#[tokio::test]
async fn human_rendering() {
    let plan = drifted_plan().await;
    check(
        &plan_text(&plan, Colour::Never),
        expect![[r#"
              - lxc/555: delete  [DESTRUCTIVE]
              ~ lxc/101 (gateway): update in place
                  memory_mb   512 -> 1024
              -/+ lxc/102 (proxy): replace  [DESTRUCTIVE]
                  clone_from_ctid   "555" -> "900"  (destroys data)
              ~ vm/1001 (portainer): update in place  [needs restart]
                  network_config   {"gw":"10.1.0.1","ip":"10.1.0.30/24"} -> {"gw":"10.1.0.1","ip":"10.1.0.31/24"}  (restart)
              + portainer/server: create
                  administrator = "admin"
              + portainer/endpoint/1002 (apps): create
                  name = "apps"
                  url  = "tcp://10.1.0.32:9001"
              + stack/web@1002 (web): create
                  compose_file_path = "stacks/web/docker-compose.yml"
                  environments      = {"production":{"variables":[{"name":"PORT","value":"8080"},{"name":"DB_PASSWORD","value":{"env":"WE…
            Plan: 3 to create, 2 to update, 1 to replace, 1 to delete, 1 need a restart, 2 destructive, 12 unchanged.
        "#]],
    );
}

#[tokio::test]
async fn json_document() {
    let plan = drifted_plan().await;
    let document = serde_json::to_value(plan_document(&plan)).expect("serialises");
    let changed: Vec<&serde_json::Value> = document["resources"]
        .as_array()
        .expect("array")
        .iter()
        .filter(|resource| resource["action"] != "none")
        .collect();
    let rendered = serde_json::to_string_pretty(&json!({
        "format_version": document["format_version"],
        "offline": document["offline"],
        "summary": document["summary"],
        "changed": changed,
    }))
    .expect("serialises");
    check(
        &rendered,
        expect![[r#"
            {
              "changed": [
                {
                  "action": "delete",
                  "address": "lxc/555",
                  "changes": [
                    {
                      "action": "delete",
                      "address": "lxc/555",
                      "fields": []
                    }
                  ],
                  "consequence": "destructive",
                  "depends_on": [],
                  "name": null
                },
                {
                  "action": "update",
                  "address": "lxc/101",
                  "changes": [
                    {
                      "action": "update",
                      "address": "lxc/101",
                      "fields": [
                        {
                          "consequence": "live",
                          "field": "memory_mb",
                          "new": 1024,
                          "old": 512
                        }
                      ]
                    }
                  ],
                  "consequence": "live",
                  "depends_on": [
                    "host/dns",
                    "host/firewall",
                    "host/network/vmbr0",
                    "host/storage/local",
                    "host/storage/tank-guests",
                    "host/zfs/dataset/tank/guests",
                    "host/zfs/pool/tank",
                    "lxc/900"
                  ],
                  "name": "gateway"
                },
                {
                  "action": "replace",
                  "address": "lxc/102",
                  "changes": [
                    {
                      "action": "replace",
                      "address": "lxc/102",
                      "fields": [
                        {
                          "consequence": "destructive",
                          "field": "clone_from_ctid",
                          "new": "900",
                          "old": "555"
                        }
                      ]
                    }
                  ],
                  "consequence": "destructive",
                  "depends_on": [
                    "host/dns",
                    "host/firewall",
                    "host/network/vmbr0",
                    "host/storage/local",
                    "host/storage/tank-guests",
                    "host/zfs/dataset/tank/guests",
                    "host/zfs/pool/tank",
                    "lxc/101",
                    "lxc/900"
                  ],
                  "name": "proxy"
                },
                {
                  "action": "update",
                  "address": "vm/1001",
                  "changes": [
                    {
                      "action": "update",
                      "address": "vm/1001",
                      "fields": [
                        {
                          "consequence": "restart",
                          "field": "network_config",
                          "new": {
                            "gw": "10.1.0.1",
                            "ip": "10.1.0.31/24"
                          },
                          "old": {
                            "gw": "10.1.0.1",
                            "ip": "10.1.0.30/24"
                          }
                        }
                      ]
                    }
                  ],
                  "consequence": "restart",
                  "depends_on": [
                    "host/dns",
                    "host/firewall",
                    "host/network/vmbr0",
                    "host/storage/local",
                    "host/storage/tank-guests",
                    "host/zfs/dataset/tank/guests",
                    "host/zfs/pool/tank",
                    "lxc/102",
                    "vm/9000"
                  ],
                  "name": "portainer"
                },
                {
                  "action": "create",
                  "address": "portainer/server",
                  "changes": [
                    {
                      "action": "create",
                      "address": "portainer/server",
                      "fields": [
                        {
                          "consequence": "live",
                          "field": "administrator",
                          "new": "admin",
                          "old": null
                        }
                      ]
                    }
                  ],
                  "consequence": "live",
                  "depends_on": [
                    "vm/1001"
                  ],
                  "name": null
                },
                {
                  "action": "create",
                  "address": "portainer/endpoint/1002",
                  "changes": [
                    {
                      "action": "create",
                      "address": "portainer/endpoint/1002",
                      "fields": [
                        {
                          "consequence": "live",
                          "field": "name",
                          "new": "apps",
                          "old": null
                        },
                        {
                          "consequence": "live",
                          "field": "url",
                          "new": "tcp://10.1.0.32:9001",
                          "old": null
                        }
                      ]
                    }
                  ],
                  "consequence": "live",
                  "depends_on": [
                    "vm/1002",
                    "portainer/server"
                  ],
                  "name": "apps"
                },
                {
                  "action": "create",
                  "address": "stack/web@1002",
                  "changes": [
                    {
                      "action": "create",
                      "address": "stack/web@1002",
                      "fields": [
                        {
                          "consequence": "live",
                          "field": "compose_file_path",
                          "new": "stacks/web/docker-compose.yml",
                          "old": null
                        },
                        {
                          "consequence": "live",
                          "field": "environments",
                          "new": {
                            "production": {
                              "variables": [
                                {
                                  "name": "PORT",
                                  "value": "8080"
                                },
                                {
                                  "name": "DB_PASSWORD",
                                  "value": {
                                    "env": "WEB_DB_PASSWORD"
                                  }
                                }
                              ]
                            }
                          },
                          "old": null
                        }
                      ]
                    }
                  ],
                  "consequence": "live",
                  "depends_on": [
                    "vm/1002",
                    "portainer/endpoint/1002"
                  ],
                  "name": "web"
                }
              ],
              "format_version": 1,
              "offline": null,
              "summary": {
                "create": 3,
                "delete": 1,
                "destructive": 2,
                "not_planned": 0,
                "replace": 1,
                "restart": 1,
                "unchanged": 12,
                "update": 2
              }
            }"#]],
    );
}

#[tokio::test]
async fn coloured_rendering_marks_destruction_loudly() {
    let plan = drifted_plan().await;
    let text = plan_text(&plan, Colour::Always);
    assert!(text.contains("\u{1b}[1;31m[DESTRUCTIVE]\u{1b}[0m"), "{text}");
    assert!(!plan_text(&plan, Colour::Never).contains('\u{1b}'));
}

#[test]
fn graph_sources() {
    let resources = fixture_resources();
    check(
        &graph_source(&resources, GraphFormat::Mermaid),
        expect![[r#"
            flowchart LR
              subgraph host["host setup (before every guest)"]
                host_dns[/"host/dns"/]:::host
                host_firewall[/"host/firewall"/]:::host
                host_network_vmbr0[/"host/network/vmbr0"/]:::host
                host_storage_local[/"host/storage/local"/]:::host
                host_storage_tank_guests[/"host/storage/tank-guests"/]:::host
                host_zfs_dataset_tank_guests[/"host/zfs/dataset/tank/guests"/]:::host
                host_zfs_pool_tank[/"host/zfs/pool/tank"/]:::host
              end
              lxc_101("lxc/101<br/>gateway"):::lxc
              lxc_102("lxc/102<br/>proxy"):::lxc
              lxc_900("lxc/900<br/>base"):::lxc
              vm_1001[["vm/1001<br/>portainer"]]:::vm
              vm_1002[["vm/1002<br/>apps"]]:::vm
              vm_9000[["vm/9000<br/>cloud-template"]]:::vm
              portainer_endpoint_1002{{"portainer/endpoint/1002<br/>apps"}}:::stack
              portainer_server{{"portainer/server"}}:::stack
              stack_web_1002{{"stack/web@1002<br/>web"}}:::stack
              sync_dns_internal>"sync/dns/internal"]:::sync
              sync_traefik>"sync/traefik"]:::sync
              host_zfs_dataset_tank_guests --> host_storage_tank_guests
              host_zfs_pool_tank --> host_zfs_dataset_tank_guests
              lxc_900 == clone ==> lxc_101
              lxc_900 == clone ==> lxc_102
              lxc_101 --> lxc_102
              vm_9000 == clone ==> vm_1001
              lxc_102 --> vm_1001
              vm_9000 == clone ==> vm_1002
              vm_1001 --> vm_1002
              portainer_server --> portainer_endpoint_1002
              vm_1002 --> portainer_endpoint_1002
              sync_dns_internal -.-> portainer_endpoint_1002
              vm_1001 --> portainer_server
              sync_dns_internal -.-> portainer_server
              vm_1002 --> stack_web_1002
              portainer_endpoint_1002 --> stack_web_1002
              sync_dns_internal -.-> stack_web_1002
              lxc_101 --> sync_traefik
              lxc_102 --> sync_traefik
              vm_1002 --> sync_traefik
              stack_web_1002 -.-> sync_traefik
              classDef host fill:#e5e7eb,stroke:#6b7280
              classDef lxc fill:#dbeafe,stroke:#2563eb
              classDef vm fill:#dcfce7,stroke:#16a34a
              classDef stack fill:#fef3c7,stroke:#d97706
              classDef sync fill:#fce7f3,stroke:#db2777
        "#]],
    );
    check(
        &graph_source(&resources, GraphFormat::Dot),
        expect![[r##"
            digraph phoenix {
              rankdir=LR;
              node [fontname="Helvetica", fontsize=11];
              subgraph cluster_host {
                label="host setup (before every guest)";
                style=dashed;
                "host/dns" [label="host/dns", shape=folder, style=filled, fillcolor="#e5e7eb"];
                "host/firewall" [label="host/firewall", shape=folder, style=filled, fillcolor="#e5e7eb"];
                "host/network/vmbr0" [label="host/network/vmbr0", shape=folder, style=filled, fillcolor="#e5e7eb"];
                "host/storage/local" [label="host/storage/local", shape=folder, style=filled, fillcolor="#e5e7eb"];
                "host/storage/tank-guests" [label="host/storage/tank-guests", shape=folder, style=filled, fillcolor="#e5e7eb"];
                "host/zfs/dataset/tank/guests" [label="host/zfs/dataset/tank/guests", shape=folder, style=filled, fillcolor="#e5e7eb"];
                "host/zfs/pool/tank" [label="host/zfs/pool/tank", shape=folder, style=filled, fillcolor="#e5e7eb"];
              }
              "lxc/101" [label="lxc/101\ngateway", shape=box, style="rounded,filled", fillcolor="#dbeafe"];
              "lxc/102" [label="lxc/102\nproxy", shape=box, style="rounded,filled", fillcolor="#dbeafe"];
              "lxc/900" [label="lxc/900\nbase", shape=box, style="rounded,filled", fillcolor="#dbeafe"];
              "vm/1001" [label="vm/1001\nportainer", shape=box3d, style=filled, fillcolor="#dcfce7"];
              "vm/1002" [label="vm/1002\napps", shape=box3d, style=filled, fillcolor="#dcfce7"];
              "vm/9000" [label="vm/9000\ncloud-template", shape=box3d, style=filled, fillcolor="#dcfce7"];
              "portainer/endpoint/1002" [label="portainer/endpoint/1002\napps", shape=component, style=filled, fillcolor="#fef3c7"];
              "portainer/server" [label="portainer/server", shape=component, style=filled, fillcolor="#fef3c7"];
              "stack/web@1002" [label="stack/web@1002\nweb", shape=component, style=filled, fillcolor="#fef3c7"];
              "sync/dns/internal" [label="sync/dns/internal", shape=note, style=filled, fillcolor="#fce7f3"];
              "sync/traefik" [label="sync/traefik", shape=note, style=filled, fillcolor="#fce7f3"];
              "host/zfs/dataset/tank/guests" -> "host/storage/tank-guests";
              "host/zfs/pool/tank" -> "host/zfs/dataset/tank/guests";
              "lxc/900" -> "lxc/101" [label="clone", style=bold];
              "lxc/900" -> "lxc/102" [label="clone", style=bold];
              "lxc/101" -> "lxc/102";
              "vm/9000" -> "vm/1001" [label="clone", style=bold];
              "lxc/102" -> "vm/1001";
              "vm/9000" -> "vm/1002" [label="clone", style=bold];
              "vm/1001" -> "vm/1002";
              "portainer/server" -> "portainer/endpoint/1002";
              "vm/1002" -> "portainer/endpoint/1002";
              "sync/dns/internal" -> "portainer/endpoint/1002" [style=dashed];
              "vm/1001" -> "portainer/server";
              "sync/dns/internal" -> "portainer/server" [style=dashed];
              "vm/1002" -> "stack/web@1002";
              "portainer/endpoint/1002" -> "stack/web@1002";
              "sync/dns/internal" -> "stack/web@1002" [style=dashed];
              "lxc/101" -> "sync/traefik";
              "lxc/102" -> "sync/traefik";
              "vm/1002" -> "sync/traefik";
              "stack/web@1002" -> "sync/traefik" [style=dashed];
            }
        "##]],
    );
}

#[test]
fn inline_secrets_never_reach_the_plan() {
    let mut resources = fixture_resources();
    let stack = resources
        .iter_mut()
        .find(|resource| matches!(resource.desired, phoenix_core::Desired::Stack(_)))
        .expect("a stack");
    let phoenix_core::Desired::Stack(desired) = &mut stack.desired else {
        panic!("a stack resource holds a stack")
    };
    let variables = &mut desired
        .environments
        .get_mut("production")
        .expect("production")
        .variables;
    variables[1].value = phoenix_core::config::Secret::Plain("hunter2".to_owned());
    variables[0].value = phoenix_core::config::Secret::Plain("8080".to_owned());
    let fields = serde_json::to_string(&stack.declared_fields()).expect("serialises");
    assert!(!fields.contains("hunter2"), "{fields}");
    assert!(
        fields.contains(r#"{"name":"DB_PASSWORD","value":"(sensitive)"}"#),
        "{fields}"
    );
    assert!(
        fields.contains(r#"{"name":"PORT","value":"8080"}"#),
        "ordinary variables stay readable: {fields}"
    );
}
