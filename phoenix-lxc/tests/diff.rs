//! The container manager's diff as data: a declared container and a live state in, the changes out.
//!
//! No Proxmox here: the live state is what the manager's reads produce (its field vocabulary), so these
//! tests pin down normalisation, the consequence of each change and when a change replaces the container.

use expect_test::{Expect, expect};
use phoenix_core::config::ContainerConfig;
use phoenix_core::{Address, Desired, Differ, Observed, Resource};
use phoenix_lxc::{ContainerDiff, GuestScripts};
use phoenix_pve::guests::GuestDiffer;
use phoenix_testing::diff::edited;

/// A small container as the reference configuration writes them.
const GATEWAY: &str = r#"{
    "name": "gateway", "memory_mb": 2048, "cores": 2, "swap_mb": 512, "storage_size_gb": 8,
    "start_at_boot": true, "boot_order": 2, "boot_delay": 5,
    "network_config": {"name": "eth0", "bridge": "vmbr0", "ip": "10.0.0.11/24", "gw": "10.0.0.1"},
    "template_snapshot_name": "golden"
}"#;

/// What the manager reads from a converged GATEWAY on Proxmox: a MAC address Proxmox generated, and keys
/// the configuration does not declare.
const GATEWAY_LIVE: &str = r#"{
    "hostname": "gateway", "cores": 2, "memory": 2048, "swap": 512, "onboot": 1, "unprivileged": 1,
    "net0": {"name": "eth0", "bridge": "vmbr0", "ip": "10.0.0.11/24", "gw": "10.0.0.1", "hwaddr": "BC:24:11:AA:BB:CC", "type": "veth"},
    "startup": {"order": "2", "up": "5"}, "rootfs_gb": 8.0, "searchdomain": "lab.example",
    "mounts": {}, "devices": [], "owned": true, "status": "running", "snapshots": ["golden"],
    "firewall_enabled": false, "firewall_rules": []
}"#;

fn resource(config: &str) -> Resource {
    let container: ContainerConfig = serde_json::from_str(config).expect("a container config");
    Resource {
        address: Address::Lxc(101),
        name: Some(container.name.clone()),
        depends_on: Vec::new(),
        after: Vec::new(),
        node: None,
        storage: None,
        desired: Desired::Container(std::sync::Arc::new(container)),
    }
}

fn render(differ: &ContainerDiff, config: &str, live: Option<Observed>) -> String {
    let changes = GuestDiffer(differ.clone()).diff(&resource(config), live.as_ref());
    phoenix_testing::diff::render(&changes)
}

fn differ() -> ContainerDiff {
    ContainerDiff {
        domain: Some("lab.example".to_owned()),
        ..ContainerDiff::default()
    }
}

#[track_caller]
fn check(config: &str, live: &str, edits: &str, expect: Expect) {
    expect.assert_eq(&render(&differ(), config, Some(edited(live, edits))));
}

#[test]
fn an_absent_container_is_created_with_every_declared_field() {
    expect![[r#"
        Create (Live)
          cores: - -> 2 [Live]
          hostname: - -> "gateway" [Live]
          memory: - -> 2048 [Live]
          net0: - -> {"bridge":"vmbr0","gw":"10.0.0.1","ip":"10.0.0.11/24","name":"eth0"} [Live]
          onboot: - -> 1 [Live]
          owned: - -> true [Live]
          rootfs_gb: - -> 8.0 [Live]
          searchdomain: - -> "lab.example" [Live]
          snapshots: - -> ["golden"] [Live]
          startup: - -> {"order":"2","up":"5"} [Live]
          status: - -> "running" [Live]
          swap: - -> 512 [Live]
          unprivileged: - -> 1 [Live]
    "#]]
    .assert_eq(&render(&differ(), GATEWAY, None));
}

#[test]
fn a_converged_container_has_no_changes_whatever_proxmox_fills_in() {
    check(GATEWAY, GATEWAY_LIVE, "{}", expect!["no changes\n"]);
}

#[test]
fn memory_changed_by_hand_is_corrected_live() {
    check(
        GATEWAY,
        GATEWAY_LIVE,
        r#"{"memory": 4096}"#,
        expect![[r#"
            Update (Live)
              memory: 4096 -> 2048 [Live]
        "#]],
    );
}

#[test]
fn a_new_address_keeps_the_generated_mac() {
    let config = GATEWAY.replace("10.0.0.11/24", "10.0.0.12/24");
    check(
        &config,
        GATEWAY_LIVE,
        "{}",
        expect![[r#"
            Update (Live)
              net0: {"bridge":"vmbr0","gw":"10.0.0.1","hwaddr":"BC:24:11:AA:BB:CC","ip":"10.0.0.11/24","name":"eth0","type":"veth"} -> {"bridge":"vmbr0","gw":"10.0.0.1","hwaddr":"BC:24:11:AA:BB:CC","ip":"10.0.0.12/24","name":"eth0","type":"veth"} [Live]
        "#]],
    );
}

#[test]
fn privileged_to_unprivileged_replaces_the_container() {
    check(
        GATEWAY,
        GATEWAY_LIVE,
        r#"{"unprivileged": 0}"#,
        expect![[r#"
            Replace (Destructive)
              unprivileged: 0 -> 1 [Destructive]
        "#]],
    );
}

#[test]
fn disks_only_grow() {
    // Grown by hand past the declared size: fine.
    check(
        GATEWAY,
        GATEWAY_LIVE,
        r#"{"rootfs_gb": 32.0}"#,
        expect!["no changes\n"],
    );
    check(
        GATEWAY,
        GATEWAY_LIVE,
        r#"{"rootfs_gb": 4.0}"#,
        expect![[r#"
            Update (Live)
              rootfs_gb: 4.0 -> 8.0 [Live]
        "#]],
    );
}

#[test]
fn a_missing_snapshot_is_taken_and_others_are_kept() {
    check(
        GATEWAY,
        GATEWAY_LIVE,
        r#"{"snapshots": ["before-upgrade"]}"#,
        expect![[r#"
            Update (Live)
              snapshots: ["before-upgrade"] -> ["before-upgrade","golden"] [Live]
        "#]],
    );
}

#[test]
fn a_stopped_container_is_started_and_tagging_is_restored() {
    check(
        GATEWAY,
        GATEWAY_LIVE,
        r#"{"status": "stopped", "owned": false}"#,
        expect![[r#"
            Update (Live)
              owned: false -> true [Live]
              status: "stopped" -> "running" [Live]
        "#]],
    );
}

#[test]
fn features_and_new_mount_points_take_effect_at_the_next_start() {
    let config = GATEWAY.replace(
        r#""template_snapshot_name""#,
        r#""pct_options": ["nesting=true,keyctl=1"],
        "mount_points": [{"host_path": "/tank/data", "container_path": "/data", "read_only": true}],
        "template_snapshot_name""#,
    );
    check(
        &config,
        GATEWAY_LIVE,
        r#"{"mounts": {"/srv": {"index": 0, "host_path": "/tank/srv", "volume": "/tank/srv"}}}"#,
        expect![[r#"
            Update (Restart)
              features: - -> {"keyctl":"1","nesting":"1"} [Restart]
              mount /data: - -> {"host_path":"/tank/data","index":1,"ro":true} [Restart]
        "#]],
    );
}

#[test]
fn with_access_inside_scripts_and_raw_keys_are_declared_too() {
    let scripts = GuestScripts {
        features: [("docker".to_owned(), "apt-get install -y docker.io\n".to_owned())].into(),
        ..GuestScripts::default()
    };
    let inside = ContainerDiff {
        scripts: std::sync::Arc::new(scripts),
        inside: true,
        ..differ()
    };
    let config = GATEWAY.replace(
        r#""template_snapshot_name""#,
        r#""features": ["docker"], "apparmor_profile": "unconfined", "template_snapshot_name""#,
    );
    let rendered = render(&inside, &config, Some(edited(GATEWAY_LIVE, "{}")));
    expect![[r#"
        Update (Restart)
          guest_scripts: - -> {"docker":"64177880fba25edd173d190e16b787c62ff5c543c2c82b5938c3dab1a53f3a1d"} [Live]
          raw_lxc: - -> {"lxc.apparmor.profile":["unconfined"]} [Restart]
    "#]]
    .assert_eq(&rendered);
}
