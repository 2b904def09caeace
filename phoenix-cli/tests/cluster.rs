//! `phoenix` against a fake Proxmox cluster of three nodes: an estate spread over the nodes converges
//! (guests that name no node placed by free memory, a clone of a template on local storage made beside it
//! and migrated), the second run writes nothing, a changed `node` migrates the guest, and with one node
//! offline the other two converge while the run names what it skipped.

use std::path::{Path, PathBuf};
use std::process::Output;

use phoenix_testing::FakePve;
use serde_json::{Value, json};

const GIB: u64 = 1024 * 1024 * 1024;

fn text(bytes: &[u8]) -> String {
    String::from_utf8(bytes.to_vec()).expect("UTF-8")
}

fn phoenix(fake: &FakePve, dir: &Path, args: &[&str]) -> Output {
    fake.phoenix_on(env!("CARGO_BIN_EXE_phoenix"), dir)
        .args(args)
        .output()
        .expect("phoenix runs")
}

/// `phoenix apply --yes`, which must succeed.
#[track_caller]
fn apply(fake: &FakePve, dir: &Path) {
    let apply = phoenix(fake, dir, &["apply", "--yes"]);
    let output = format!("{}\n{}", text(&apply.stdout), text(&apply.stderr));
    assert!(apply.status.success(), "{output}");
}

fn write(dir: &Path, file: &str, value: &Value) {
    std::fs::write(dir.join(file), serde_json::to_string_pretty(value).expect("JSON")).expect("writes");
}

/// Three nodes: pve1 with 2 GiB of memory free, pve2 with 7, pve3 with 6; `local-lvm` on each node,
/// and `ceph`, shared by all.
async fn cluster() -> Option<FakePve> {
    let fake = FakePve::start().await?;
    fake.exec(&format!(
        "pve.add_node('pve2')\npve.add_node('pve3')\npve.add_ceph_storage('ceph')\n\
         pve.storages['local']['content'] += ',import'\n\
         pve.node_memory = {{'pve1': ({used1}, {total}), 'pve2': ({used2}, {total}), 'pve3': ({used3}, {total})}}",
        used1 = 6 * GIB,
        used2 = GIB,
        used3 = 2 * GIB,
        total = 8 * GIB,
    ))
    .await;
    Some(fake)
}

struct Estate {
    dir: PathBuf,
    containers: Value,
    vms: Value,
}

impl Estate {
    /// A container template on pve1 and a clone of it pinned to pve2, two containers and a VM that name no
    /// node, a VM on shared storage on pve3, and a VM template on pve1 with a clone pinned to pve2.
    fn new(name: &str) -> Estate {
        let dir = std::env::temp_dir().join(format!("phoenix-cluster-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        write(
            &dir,
            "phoenix_hypervisor_config.json",
            &json!({
                "proxmox": {
                    "endpoint": "https://127.0.0.1:8006",
                    "nodes": ["pve1", "pve2", "pve3"],
                    "placement": "most_free_memory"
                },
                "proxmox_storages": [
                    { "id": "local", "content": ["vztmpl", "import"] },
                    { "id": "local-lvm", "content": ["rootdir", "images"] },
                    { "id": "ceph", "content": ["rootdir", "images"] }
                ]
            }),
        );
        let container = |memory: u64| {
            json!({
                "template": "local:vztmpl/debian-12-standard_12.7-1_amd64.tar.zst",
                "storage_pool": "local-lvm",
                "storage_size_gb": 4,
                "memory_mb": memory,
                "network_config": { "ip": "dhcp" }
            })
        };
        let mut containers = json!({
            "900": container(1024),
            "101": { "clone_from_ctid": "900", "node": "pve2", "storage_pool": "local-lvm", "memory_mb": 1024,
                     "network_config": { "ip": "dhcp" } },
            "102": container(2048),
            "103": container(2048),
        });
        for (id, name) in [
            ("900", "base"),
            ("101", "web"),
            ("102", "cache"),
            ("103", "queue"),
        ] {
            containers[id]["name"] = json!(name);
        }
        containers["900"]["node"] = json!("pve1");
        containers["900"]["template_snapshot_name"] = json!("golden");
        let vm = |vmid: u32, name: &str, storage: &str| {
            json!({
                "vmid": vmid,
                "name": name,
                "template_image": "noble-server-cloudimg-amd64.img",
                "storage_pool": storage,
                "memory_mb": 1024,
                "network_config": { "ip": "dhcp" }
            })
        };
        let mut template = vm(9000, "noble", "local-lvm");
        template["node"] = json!("pve1");
        template["is_template"] = json!(true);
        template["template_snapshot_name"] = json!("clean");
        let clone = json!({ "vmid": 2003, "name": "api", "clone_from_vmid": 9000, "node": "pve2",
                            "storage_pool": "local-lvm", "memory_mb": 1024, "network_config": { "ip": "dhcp" } });
        let mut vms =
            json!({ "vms": [vm(2001, "worker", "local-lvm"), vm(2002, "db", "ceph"), template, clone] });
        vms["vms"][1]["node"] = json!("pve3");
        let estate = Estate {
            dir,
            containers: json!({ "lxc_configs": containers }),
            vms,
        };
        estate.save();
        estate
    }

    fn save(&self) {
        write(&self.dir, "phoenix_lxc_configs.json", &self.containers);
        write(&self.dir, "phoenix_vm_configs.json", &self.vms);
    }
}

async fn node_of(fake: &FakePve, vmid: u32) -> String {
    let node = fake.exec(&format!("result = pve.guest({vmid}).node")).await;
    node.as_str().expect("a node").to_owned()
}

fn json_plan(fake: &FakePve, dir: &Path) -> Value {
    let plan = phoenix(fake, dir, &["plan", "--output", "json"]);
    assert!(plan.status.success(), "{}", text(&plan.stderr));
    serde_json::from_slice(&plan.stdout).expect("a JSON plan")
}

/// The fields of one resource's first change, by name, with their new values.
fn planned(plan: &Value, address: &str) -> Value {
    let resource = plan["resources"]
        .as_array()
        .expect("resources")
        .iter()
        .find(|resource| resource["address"] == address)
        .unwrap_or_else(|| panic!("{address} is planned: {plan}"));
    let fields = resource["changes"][0]["fields"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let mut map = serde_json::Map::new();
    map.insert("action".into(), resource["action"].clone());
    map.insert("consequence".into(), resource["consequence"].clone());
    for field in fields {
        map.insert(
            field["field"].as_str().expect("name").to_owned(),
            field["new"].clone(),
        );
    }
    Value::Object(map)
}

#[tokio::test]
async fn an_estate_spread_over_three_nodes_converges_migrates_and_survives_a_node_going_offline() {
    let Some(fake) = cluster().await else {
        return;
    };
    let mut estate = Estate::new("spread");
    let dir = estate.dir.clone();

    // Placement is shown in the plan: by free memory, counting the guests placed before (in ID order,
    // sources first): 102 takes 2 GiB of pve2's 7, 103 2 of pve3's 6, and 2001 1 of pve2's remaining 5.
    let plan = json_plan(&fake, &dir);
    let web = planned(&plan, "lxc/101");
    assert_eq!(web["node"], "pve2");
    assert_eq!(
        web["placement"], "cloned on pve1, then migrated to pve2: storage local-lvm is not shared",
        "{web}"
    );
    assert_eq!(planned(&plan, "lxc/102")["node"], "pve2");
    assert_eq!(
        planned(&plan, "lxc/102")["placement"],
        "most_free_memory: pve2 had 7168 MiB free"
    );
    assert_eq!(planned(&plan, "lxc/103")["node"], "pve3");
    assert_eq!(
        planned(&plan, "lxc/103")["placement"],
        "most_free_memory: pve3 had 6144 MiB free"
    );
    assert_eq!(planned(&plan, "vm/2001")["node"], "pve2");
    assert_eq!(planned(&plan, "vm/2002")["node"], "pve3");
    assert_eq!(
        planned(&plan, "vm/2003")["placement"],
        "cloned on pve1, then migrated to pve2: storage local-lvm is not shared"
    );

    apply(&fake, &dir);
    for (vmid, node) in [
        (900, "pve1"),
        (101, "pve2"),
        (102, "pve2"),
        (103, "pve3"),
        (2001, "pve2"),
        (2002, "pve3"),
        (9000, "pve1"),
        (2003, "pve2"),
    ] {
        assert_eq!(node_of(&fake, vmid).await, node, "guest {vmid}");
    }
    let writes = fake.writes().await;
    assert!(
        writes.contains(&"POST /api2/json/nodes/pve1/lxc/900/clone".to_owned())
            && writes.contains(&"POST /api2/json/nodes/pve1/lxc/101/migrate".to_owned())
            && writes.contains(&"POST /api2/json/nodes/pve1/qemu/9000/clone".to_owned())
            && writes.contains(&"POST /api2/json/nodes/pve1/qemu/2003/migrate".to_owned()),
        "the clone is made beside its template, then moved: {writes:#?}"
    );

    // The second run changes nothing, and the placements hold.
    let again = phoenix(&fake, &dir, &["plan", "--detailed-exitcode"]);
    assert_eq!(again.status.code(), Some(0), "{}", text(&again.stdout));
    let before = fake.writes().await.len();
    apply(&fake, &dir);
    let written: Vec<String> = fake.writes().await.split_off(before);
    // The run lock is a pool; the guest agent's `exec` (a POST) is how a VM's feature records are read.
    assert!(
        written
            .iter()
            .all(|write| write.ends_with("/pools") || write.ends_with("/agent/exec")),
        "a converged cluster is not written to: {written:#?}"
    );

    // Moving guests migrates them: a running container in restart mode, a running VM live.
    estate.containers["lxc_configs"]["103"]["node"] = json!("pve1");
    estate.vms["vms"][0]["node"] = json!("pve3");
    estate.vms["vms"][1]["node"] = json!("pve1");
    estate.save();
    let plan = json_plan(&fake, &dir);
    let queue = planned(&plan, "lxc/103");
    assert_eq!(
        (queue["action"].as_str(), queue["node"].as_str()),
        (Some("update"), Some("pve1"))
    );
    assert_eq!(fake.exec("result = pve.guest(103).status").await, "running");
    assert_eq!(queue["consequence"], "downtime", "{queue}");
    assert_eq!(
        planned(&plan, "vm/2001")["consequence"],
        "live",
        "a VM moves live"
    );
    let text_plan = text(&phoenix(&fake, &dir, &["plan"]).stdout);
    assert!(text_plan.contains("node   \"pve3\" -> \"pve1\""), "{text_plan}");
    let before = fake.requests().await.len();
    apply(&fake, &dir);
    assert_eq!(node_of(&fake, 103).await, "pve1");
    assert_eq!(node_of(&fake, 2001).await, "pve3");
    assert_eq!(node_of(&fake, 2002).await, "pve1");
    let requests: Vec<(String, String, String)> = fake.requests().await.split_off(before);
    let migrations: Vec<(&str, &str)> = requests
        .iter()
        .filter(|(method, path, _)| method == "POST" && path.ends_with("/migrate"))
        .map(|(_, path, body)| (path.as_str(), body.as_str()))
        .collect();
    assert_eq!(migrations.len(), 3, "{migrations:#?}");
    for (path, body) in &migrations {
        let expected = match *path {
            "/api2/json/nodes/pve3/lxc/103/migrate" => "target=pve1&restart=1",
            // Its disk is on local-lvm, so it is copied while the VM runs; 2002's is on Ceph.
            "/api2/json/nodes/pve2/qemu/2001/migrate" => "target=pve3&online=1&with-local-disks=1",
            "/api2/json/nodes/pve3/qemu/2002/migrate" => "target=pve1&online=1",
            other => panic!("unexpected migration {other}: {body}"),
        };
        assert_eq!(*body, expected, "{path}");
    }
    assert!(
        !requests.iter().any(
            |(method, path, _)| method == "DELETE" && (path.contains("/lxc/") || path.contains("/qemu/"))
        ),
        "a migration is never a delete and a create: {requests:#?}"
    );
    let again = phoenix(&fake, &dir, &["plan", "--detailed-exitcode"]);
    assert_eq!(again.status.code(), Some(0), "{}", text(&again.stdout));

    // pve3 goes offline: its guests are unreachable, the rest converges, and the run names the node.
    fake.exec("pve.set_node_offline('pve3')").await;
    estate.containers["lxc_configs"]["102"]["memory_mb"] = json!(3072);
    estate.vms["vms"][0]["memory_mb"] = json!(3072);
    estate.save();
    let plan = phoenix(&fake, &dir, &["plan", "--detailed-exitcode"]);
    let plan_text = text(&plan.stdout);
    assert_eq!(plan.status.code(), Some(2), "{plan_text}");
    assert!(
        plan_text.contains("vm/2001: node pve3 is offline; not read or planned"),
        "{plan_text}"
    );
    assert!(
        plan_text.contains("1 unreachable (not read): this plan is incomplete"),
        "{plan_text}"
    );
    let partial = phoenix(&fake, &dir, &["apply", "--yes"]);
    let report = text(&partial.stdout);
    assert_eq!(
        partial.status.code(),
        Some(1),
        "{report}\n{}",
        text(&partial.stderr)
    );
    assert!(
        report.contains("vm/2001") && report.contains("node pve3 is offline"),
        "{report}"
    );
    let memory = fake.exec("result = pve.guest(102).config.get('memory')").await;
    assert_eq!(
        memory.to_string().trim_matches('"'),
        "3072",
        "pve2 converged meanwhile"
    );

    // Back online, the next run converges what was skipped.
    fake.exec("pve.set_node_offline('pve3', False)").await;
    apply(&fake, &dir);
    let again = phoenix(&fake, &dir, &["plan", "--detailed-exitcode"]);
    assert_eq!(again.status.code(), Some(0), "{}", text(&again.stdout));
}
