//! `phoenix import` against fakepve: guests made by hand through the API (containers and VMs with mount
//! points, firewalls, snapshots, a cloud-init user) on two nodes are written into the configuration
//! directory, beside a hand-written container whose text stays as it was; then `validate` passes and the
//! plan changes nothing but the owner tag, which `--adopt` (or apply) sets and nothing else. The filters
//! pick by ID, range, node and tag, and neither `--dry-run` nor a plain import writes to the cluster.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::Arc;

use phoenix_pve::{Client, Form, Method};
use phoenix_testing::FakePve;
use serde_json::{Value, json};

fn text(bytes: &[u8]) -> String {
    String::from_utf8(bytes.to_vec()).expect("UTF-8")
}

fn phoenix(fake: &FakePve, dir: &Path, args: &[&str]) -> Output {
    fake.phoenix_on(env!("CARGO_BIN_EXE_phoenix"), dir)
        .args(args)
        .env("PHOENIX_VM_210_PASSWORD", "hunter2")
        .output()
        .expect("phoenix runs")
}

/// Runs phoenix, which must exit with `code`; returns its standard output.
#[track_caller]
fn expect(fake: &FakePve, dir: &Path, args: &[&str], code: i32) -> String {
    let output = phoenix(fake, dir, args);
    let both = format!("{}\n{}", text(&output.stdout), text(&output.stderr));
    assert_eq!(
        output.status.code(),
        Some(code),
        "phoenix {}:\n{both}",
        args.join(" ")
    );
    text(&output.stdout)
}

/// The guests an import lists, as `lxc/105` addresses in its `Imported:` section.
fn imported(stdout: &str) -> Vec<String> {
    stdout
        .lines()
        .skip_while(|line| *line != "Imported:")
        .skip(1)
        .take_while(|line| line.starts_with("  "))
        .filter(|line| !line.trim_start().starts_with("note:"))
        .filter_map(|line| line.split_whitespace().next().map(str::to_owned))
        .collect()
}

/// The fields each resource of a JSON plan changes, by address; resources without changes are left out.
fn changed_fields(plan: &str) -> BTreeMap<String, Vec<String>> {
    let plan: Value = serde_json::from_str(plan).expect("a JSON plan");
    let mut changed = BTreeMap::new();
    for resource in plan["resources"].as_array().expect("resources") {
        let fields: Vec<String> = resource["changes"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|change| change["fields"].as_array().cloned().unwrap_or_default())
            .filter_map(|field| field["field"].as_str().map(str::to_owned))
            .collect();
        if !fields.is_empty() {
            changed.insert(
                resource["address"].as_str().unwrap_or_default().to_owned(),
                fields,
            );
        }
    }
    changed
}

/// The VM file before the import: none yet.
const VMS: &str = "{\n  \"vms\": []\n}\n";

/// The requests that changed a guest or the cluster. Left out: plans reading the records of the scripts
/// run inside VMs through the guest agent (`agent/exec` is a POST that changes nothing), and the run lock
/// (a pool made and removed around each writing run).
async fn changes(fake: &FakePve) -> Vec<String> {
    let mut writes = fake.writes().await;
    writes.retain(|write| !write.contains("/agent/exec") && !write.ends_with("/api2/json/pools"));
    writes
}

const TEMPLATE: &str = "local:vztmpl/debian-12-standard_12.7-1_amd64.tar.zst";

/// The configuration directory: two nodes, their storages, and one container written by hand in a style
/// of its own (four-space indentation, keys in no particular order).
fn config_dir() -> (PathBuf, String) {
    let dir = std::env::temp_dir().join(format!("phoenix-import-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    let hypervisor = json!({
        "proxmox": { "endpoint": "https://127.0.0.1:8006", "nodes": ["pve1", "pve2"] },
        "proxmox_storages": [
            { "id": "local", "content": ["vztmpl", "import", "snippets"] },
            { "id": "local-lvm", "content": ["rootdir", "images"] }
        ]
    });
    std::fs::write(
        dir.join("phoenix_hypervisor_config.json"),
        serde_json::to_string_pretty(&hypervisor).expect("JSON"),
    )
    .expect("writes");
    let lxc = format!(
        "{{\n    \"lxc_configs\": {{\n        \"101\": {{\n            \"template\": \"{TEMPLATE}\",\n            \
         \"name\": \"gateway\",\n            \"node\": \"pve1\",\n            \"storage_pool\": \"local-lvm\",\n            \
         \"network_config\": {{ \"ip\": \"dhcp\" }}\n        }}\n    }}\n}}\n"
    );
    std::fs::write(dir.join("phoenix_lxc_configs.json"), &lxc).expect("writes");
    std::fs::write(dir.join("phoenix_vm_configs.json"), VMS).expect("writes");
    (dir, lxc)
}

async fn task(client: &Client, method: Method, path: &str, form: Form) {
    client
        .run_task(method, path, &form)
        .await
        .unwrap_or_else(|error| panic!("{path}: {error}"));
}

async fn put(client: &Client, path: &str, form: Form) {
    let _: Value = client
        .put(path, &form)
        .await
        .unwrap_or_else(|error| panic!("{path}: {error}"));
}

async fn post(client: &Client, path: &str, form: Form) {
    let _: Value = client
        .post(path, &form)
        .await
        .unwrap_or_else(|error| panic!("{path}: {error}"));
}

/// What an operator made by hand: a container with a volume, a bind mount, a firewall and a snapshot and
/// a VM with a cloud-init user, a firewall and a snapshot on pve1; a container and a VM on pve2.
async fn make_by_hand(client: &Arc<Client>) {
    let form = Form::new()
        .number("vmid", 105)
        .text("ostemplate", TEMPLATE)
        .text("hostname", "web")
        .text("storage", "local-lvm")
        .text("rootfs", "local-lvm:8")
        .number("memory", 1024)
        .number("swap", 256)
        .number("cores", 2)
        .flag("onboot", true)
        .text("startup", "order=2,up=5")
        .flag("unprivileged", true)
        .text("features", "nesting=1")
        .text(
            "net0",
            "name=eth0,bridge=vmbr0,firewall=1,ip=10.0.0.5/24,gw=10.0.0.1",
        )
        .text("nameserver", "10.0.0.2")
        .text("searchdomain", "lab.example")
        .text("mp0", "local-lvm:4,mp=/var/lib/data")
        .text("mp1", "/srv/share,mp=/share,ro=1")
        .text("tags", "web");
    task(client, Method::POST, "/nodes/pve1/lxc", form).await;
    put(
        client,
        "/nodes/pve1/lxc/105/firewall/options",
        Form::new().flag("enable", true),
    )
    .await;
    let rule = Form::new()
        .text("type", "in")
        .text("action", "ACCEPT")
        .text("proto", "tcp")
        .text("dport", "443")
        .flag("enable", true);
    post(client, "/nodes/pve1/lxc/105/firewall/rules", rule).await;
    task(
        client,
        Method::POST,
        "/nodes/pve1/lxc/105/status/start",
        Form::new(),
    )
    .await;
    task(
        client,
        Method::POST,
        "/nodes/pve1/lxc/105/snapshot",
        Form::new().text("snapname", "before"),
    )
    .await;

    let form = Form::new()
        .number("vmid", 106)
        .text("ostemplate", TEMPLATE)
        .text("hostname", "db")
        .text("storage", "local-lvm")
        .text("net0", "name=eth0,bridge=vmbr0,ip=dhcp")
        .text("tags", "db");
    task(client, Method::POST, "/nodes/pve2/lxc", form).await;
    task(
        client,
        Method::POST,
        "/nodes/pve2/lxc/106/status/start",
        Form::new(),
    )
    .await;

    let form = Form::new()
        .number("vmid", 210)
        .text("name", "api")
        .number("cores", 2)
        .number("memory", 2048)
        .text("scsi0", "local-lvm:16")
        .text("ide2", "local-lvm:cloudinit")
        .text("net0", "virtio,bridge=vmbr0,firewall=1")
        .text("agent", "1")
        .flag("onboot", true)
        .text("ipconfig0", "ip=10.0.0.21/24,gw=10.0.0.1")
        .text("nameserver", "10.0.0.2")
        .text("searchdomain", "lab.example")
        .text("ciuser", "ops")
        .text("cipassword", "hunter2")
        .text(
            "sshkeys",
            "ssh-ed25519%20AAAAC3NzaC1lZDI1NTE5AAAAIB%20ops%40laptop",
        )
        .text("tags", "api");
    task(client, Method::POST, "/nodes/pve1/qemu", form).await;
    put(
        client,
        "/nodes/pve1/qemu/210/firewall/options",
        Form::new().flag("enable", true),
    )
    .await;
    let rule = Form::new()
        .text("type", "in")
        .text("action", "ACCEPT")
        .text("macro", "SSH")
        .flag("enable", true);
    post(client, "/nodes/pve1/qemu/210/firewall/rules", rule).await;
    task(
        client,
        Method::POST,
        "/nodes/pve1/qemu/210/status/start",
        Form::new(),
    )
    .await;
    task(
        client,
        Method::POST,
        "/nodes/pve1/qemu/210/snapshot",
        Form::new().text("snapname", "clean"),
    )
    .await;

    let form = Form::new()
        .number("vmid", 300)
        .text("name", "lab")
        .number("memory", 1024)
        .text("scsi0", "local-lvm:4")
        .text("net0", "virtio,bridge=vmbr0")
        .text("agent", "1")
        .text("tags", "lab");
    task(client, Method::POST, "/nodes/pve2/qemu", form).await;
    task(
        client,
        Method::POST,
        "/nodes/pve2/qemu/300/status/start",
        Form::new(),
    )
    .await;
}

#[tokio::test]
async fn hand_made_guests_import_to_an_empty_plan_and_adopt_with_nothing_else_changed() {
    let Some(fake) = FakePve::start().await else {
        return;
    };
    fake.exec("pve.add_node('pve2')").await;
    let (dir, hand_written) = config_dir();
    // The hand-written container exists, made by Phoenix.
    expect(&fake, &dir, &["apply", "--yes"], 0);
    let client = fake.root_client().await;
    make_by_hand(&client).await;
    let writes_before = changes(&fake).await.len();

    // Filters, on dry runs, which write nothing anywhere.
    let dry = |filter: &[&str]| {
        let mut args = vec!["import", "--dry-run"];
        args.extend_from_slice(filter);
        imported(&expect(&fake, &dir, &args, 0))
    };
    assert_eq!(dry(&[]), ["lxc/105", "lxc/106", "vm/210", "vm/300"]);
    assert_eq!(dry(&["--id", "105"]), ["lxc/105"]);
    assert_eq!(dry(&["--range", "200-299", "--id", "106"]), ["lxc/106", "vm/210"]);
    assert_eq!(dry(&["--node", "pve2"]), ["lxc/106", "vm/300"]);
    assert_eq!(dry(&["--tag", "lab", "--tag", "db"]), ["lxc/106", "vm/300"]);
    assert_eq!(
        std::fs::read_to_string(dir.join("phoenix_lxc_configs.json")).expect("reads"),
        hand_written
    );
    assert_eq!(
        std::fs::read_to_string(dir.join("phoenix_vm_configs.json")).expect("reads"),
        VMS
    );

    // A plain import of pve1's guests writes the files and nothing on the cluster.
    let stdout = expect(&fake, &dir, &["import", "--node", "pve1"], 0);
    assert_eq!(imported(&stdout), ["lxc/105", "vm/210"]);
    assert!(stdout.contains("PHOENIX_VM_210_PASSWORD"), "{stdout}");
    assert!(!stdout.contains("hunter2"), "a secret in the output:\n{stdout}");
    let writes = changes(&fake).await;
    assert_eq!(
        writes.len(),
        writes_before,
        "a plain import wrote to the cluster: {:?}",
        &writes[writes_before..]
    );
    let lxc = std::fs::read_to_string(dir.join("phoenix_lxc_configs.json")).expect("reads");
    // Everything up to the end of the last hand-written entry, byte for byte.
    let kept = &hand_written[..hand_written.rfind("\n    }\n}").expect("the end of lxc_configs")];
    assert!(lxc.starts_with(kept), "the hand-written text changed:\n{lxc}");
    assert!(
        lxc.contains("\n        \"105\": {\n            \"name\": \"web\""),
        "{lxc}"
    );
    let containers: Value = serde_json::from_str(&lxc).expect("JSON");
    assert_eq!(
        containers["lxc_configs"]["105"]["mount_points"],
        json!([{ "host_path": "/srv/share", "container_path": "/share", "read_only": true }])
    );
    assert_eq!(
        containers["lxc_configs"]["105"]["zfs_volumes"][0]["mount_point"],
        "/var/lib/data"
    );
    assert_eq!(
        containers["lxc_configs"]["105"]["firewall"]["rules"],
        json!([{ "type": "in", "action": "ACCEPT", "proto": "tcp", "port": "443" }])
    );
    let vms: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("phoenix_vm_configs.json")).expect("reads"))
            .expect("JSON");
    assert_eq!(
        vms["vms"][0]["user_config"]["password"],
        json!({ "env": "PHOENIX_VM_210_PASSWORD" })
    );
    assert_eq!(vms["vms"][0]["disk_size_gb"], 16);
    expect(&fake, &dir, &["validate"], 0);

    // What is left to do for them is to own them.
    let plan = expect(&fake, &dir, &["plan", "--output", "json"], 0);
    let owned = vec!["owned".to_owned()];
    assert_eq!(
        changed_fields(&plan),
        BTreeMap::from([
            ("lxc/105".to_owned(), owned.clone()),
            ("vm/210".to_owned(), owned)
        ]),
        "{plan}"
    );

    // `--adopt` imports the rest and tags exactly them; apply tags the first two.
    let stdout = expect(&fake, &dir, &["import", "--adopt", "--yes"], 0);
    assert_eq!(imported(&stdout), ["lxc/106", "vm/300"]);
    let writes = changes(&fake).await;
    let mut adopted = writes[writes_before..].to_vec();
    adopted.sort();
    assert_eq!(
        adopted,
        [
            "PUT /api2/json/nodes/pve2/lxc/106/config",
            "PUT /api2/json/nodes/pve2/qemu/300/config"
        ],
        "{writes:?}"
    );
    expect(&fake, &dir, &["apply", "--yes"], 0);
    let writes = changes(&fake).await;
    let mut tagged = writes[writes_before + 2..].to_vec();
    tagged.sort();
    assert_eq!(
        tagged,
        [
            "PUT /api2/json/nodes/pve1/lxc/105/config",
            "PUT /api2/json/nodes/pve1/qemu/210/config"
        ]
    );
    expect(&fake, &dir, &["plan", "--detailed-exitcode"], 0);
    let stdout = expect(&fake, &dir, &["import"], 0);
    assert!(stdout.contains("Nothing to import"), "{stdout}");
    let _ = std::fs::remove_dir_all(&dir);
}
