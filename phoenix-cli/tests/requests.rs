//! How many requests creating an estate and planning it again send: a count is deterministic, unlike a
//! time. For 30 containers (a template with a snapshot, 29 clones of it, 6 of them with a firewall rule)
//! a clone costs six requests with its start, and the no-op plan reads the cluster once, each
//! container's config once, the template's snapshot list, and the firewall of the six that declare one.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Output;

use phoenix_testing::FakePve;
use serde_json::json;

fn phoenix(fake: &FakePve, dir: &Path, args: &[&str]) -> Output {
    fake.phoenix_on(env!("CARGO_BIN_EXE_phoenix"), dir)
        .args(args)
        .output()
        .expect("phoenix runs")
}

fn write_config(dir: &Path) {
    let hypervisor = json!({
        "proxmox": { "endpoint": "https://127.0.0.1:8006", "nodes": ["pve1"] },
        "proxmox_storages": [
            { "id": "local", "content": ["vztmpl"] },
            { "id": "local-lvm", "content": ["rootdir", "images"] }
        ]
    });
    let mut containers = serde_json::Map::new();
    containers.insert(
        "900".into(),
        json!({
            "name": "base", "node": "pve1",
            "template": "local:vztmpl/debian-12-standard_12.7-1_amd64.tar.zst",
            "storage_pool": "local-lvm", "storage_size_gb": 4, "template_snapshot_name": "golden",
            "network_config": { "ip": "dhcp" }
        }),
    );
    for index in 0..29 {
        let mut clone = json!({
            "name": format!("app{index}"), "node": "pve1", "clone_from_ctid": "900",
            "storage_pool": "local-lvm", "memory_mb": 512,
            "network_config": { "ip": format!("10.0.1.{}/24", 10 + index), "gw": "10.0.1.1" }
        });
        if index % 5 == 0 {
            clone["firewall"] = json!({
                "enabled": true,
                "rules": [{ "type": "in", "action": "ACCEPT", "proto": "tcp", "port": "22" }]
            });
        }
        containers.insert((200 + index).to_string(), clone);
    }
    phoenix_testing::fixture::write_containers(dir, &hypervisor, containers).expect("writes");
}

/// Requests by kind: `GET config`, `GET snapshot`, ... (the last part of the path names the kind).
fn tally(requests: &[(String, String, String)]) -> BTreeMap<String, usize> {
    let mut kinds = BTreeMap::new();
    for (method, path, _) in requests {
        let path = path.trim_start_matches("/api2/json");
        let kind = match path {
            "/cluster/resources" | "/version" | "/storage" => path.to_owned(),
            _ if path.ends_with("/firewall/rules") => "firewall/rules".to_owned(),
            _ if path.ends_with("/firewall/options") => "firewall/options".to_owned(),
            _ => path.rsplit('/').next().unwrap_or_default().to_owned(),
        };
        *kinds.entry(format!("{method} {kind}")).or_insert(0) += 1;
    }
    kinds
}

#[tokio::test]
async fn creating_sends_six_requests_a_clone_and_a_no_op_plan_reads_only_what_is_declared() {
    let Some(fake) = FakePve::start().await else {
        return;
    };
    let dir = std::env::temp_dir().join(format!("phoenix-requests-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    write_config(&dir);
    let apply = phoenix(&fake, &dir, &["apply", "--yes"]);
    assert!(
        apply.status.success(),
        "{}",
        String::from_utf8_lossy(&apply.stderr)
    );

    // Creating: per clone, the clone and its task, one config read, one config write, the start and its
    // task; the firewall's read and write for the six that declare one; for the template, its creation
    // from a downloaded image, and its snapshot list read and its snapshot taken. Locks are not looked for before writing.
    let mut created = tally(&fake.requests().await);
    let polls = created.remove("GET status").unwrap_or(0);
    let expected = BTreeMap::from([
        ("POST pools".to_owned(), 1),
        ("GET pools".to_owned(), 1),
        ("DELETE pools".to_owned(), 1),
        ("GET /cluster/resources".to_owned(), 1),
        ("GET /storage".to_owned(), 2),
        ("GET /version".to_owned(), 1),
        ("GET content".to_owned(), 1),
        ("POST download-url".to_owned(), 1),
        ("POST lxc".to_owned(), 1),
        ("POST clone".to_owned(), 29),
        ("GET config".to_owned(), 30),
        ("PUT config".to_owned(), 30),
        ("POST start".to_owned(), 30),
        ("GET snapshot".to_owned(), 1),
        ("POST snapshot".to_owned(), 1),
        ("GET firewall/options".to_owned(), 6),
        ("GET firewall/rules".to_owned(), 6),
        ("POST firewall/rules".to_owned(), 6),
        ("PUT firewall/options".to_owned(), 6),
    ]);
    assert_eq!(created, expected);
    // One task per download, creation, clone, start and snapshot, each polled until it ends.
    let tasks = 1 + 1 + 29 + 30 + 1;
    assert!(
        (tasks..=2 * tasks).contains(&polls),
        "{polls} polls for {tasks} tasks"
    );

    let before = fake.requests().await.len();
    let plan = phoenix(&fake, &dir, &["plan", "--detailed-exitcode"]);
    assert_eq!(
        plan.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&plan.stdout)
    );
    let requests = fake.requests().await.split_off(before);
    let expected = BTreeMap::from([
        ("GET /cluster/resources".to_owned(), 1),
        ("GET /version".to_owned(), 1),
        // The two declared storages, read by their host steps.
        ("GET /storage".to_owned(), 2),
        ("GET config".to_owned(), 30),
        ("GET snapshot".to_owned(), 1),
        ("GET firewall/options".to_owned(), 6),
        ("GET firewall/rules".to_owned(), 6),
    ]);
    assert_eq!(tally(&requests), expected, "{requests:#?}");
    assert_eq!(requests.len(), 47);
    let _ = std::fs::remove_dir_all(&dir);
}
