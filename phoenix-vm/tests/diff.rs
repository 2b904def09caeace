//! The VM manager's diff as data: a declared VM and a live state in, the changes out.
//!
//! No Proxmox here: the live state is what the manager's reads produce (its field vocabulary), so these
//! tests pin down normalisation, the consequence of each change and when a change replaces the VM.

use expect_test::{Expect, expect};
use phoenix_core::config::VmConfig;
use phoenix_core::{Address, Desired, Differ, Observed, Resource};
use phoenix_pve::guests::GuestDiffer;
use phoenix_testing::diff::edited;
use phoenix_vm::VmDiff;

/// A clone of a template, as the reference configuration writes VMs.
const WEB: &str = r#"{
    "vmid": 1002, "name": "web", "clone_from_vmid": 9000, "cores": 4, "memory_mb": 8192, "disk_size_gb": 32,
    "start_at_boot": true,
    "network_config": {"ip": "10.0.0.52/24", "gw": "10.0.0.1", "nameserver": "10.0.0.2, 1.1.1.1"},
    "user_config": {"username": "ops", "ssh_public_keys": ["ssh-ed25519 AAAA ops@lab", " ssh-rsa BBBB other "]}
}"#;

/// What the manager reads from a converged WEB: a NIC model and MAC address Proxmox chose, a disk grown
/// past the declared size.
const WEB_LIVE: &str = r#"{
    "name": "web", "cores": 4, "memory": 8192, "onboot": 1, "agent": "1",
    "net0": {"model": "virtio", "macaddr": "BC:24:11:00:10:02", "bridge": "vmbr0"},
    "ipconfig0": {"ip": "10.0.0.52/24", "gw": "10.0.0.1"},
    "nameserver": "10.0.0.2 1.1.1.1", "searchdomain": "lab.example", "ciuser": "ops",
    "sshkeys": "ssh-ed25519 AAAA ops@lab\nssh-rsa BBBB other", "cipassword": false,
    "disk_gb": 50.0, "owned": true, "template": false, "status": "running", "snapshots": [],
    "firewall_enabled": false, "firewall_rules": []
}"#;

fn resource(config: &str) -> Resource {
    let vm: VmConfig = serde_json::from_str(config).expect("a VM config");
    Resource {
        address: Address::Vm(vm.vmid),
        name: Some(vm.name.clone()),
        depends_on: Vec::new(),
        after: Vec::new(),
        node: None,
        storage: None,
        desired: Desired::Vm(Box::new(vm)),
    }
}

fn render(config: &str, live: Option<Observed>) -> String {
    let differ = GuestDiffer(VmDiff {
        domain: Some("lab.example".to_owned()),
        ..VmDiff::default()
    });
    let changes = differ.diff(&resource(config), live.as_ref());
    phoenix_testing::diff::render(&changes)
}

#[track_caller]
fn check(config: &str, edits: &str, expect: Expect) {
    expect.assert_eq(&render(config, Some(edited(WEB_LIVE, edits))));
}

#[test]
fn an_absent_vm_is_created_with_every_declared_field() {
    expect![[r#"
        Create (Live)
          agent: - -> "1" [Live]
          ciuser: - -> "ops" [Live]
          cores: - -> 4 [Live]
          disk_gb: - -> 32.0 [Live]
          ipconfig0: - -> {"gw":"10.0.0.1","ip":"10.0.0.52/24"} [Live]
          memory: - -> 8192 [Live]
          name: - -> "web" [Live]
          nameserver: - -> "10.0.0.2 1.1.1.1" [Live]
          net0: - -> {"bridge":"vmbr0"} [Live]
          onboot: - -> 1 [Live]
          owned: - -> true [Live]
          searchdomain: - -> "lab.example" [Live]
          sshkeys: - -> "ssh-ed25519 AAAA ops@lab\nssh-rsa BBBB other" [Live]
          status: - -> "running" [Live]
          template: - -> false [Live]
    "#]]
    .assert_eq(&render(WEB, None));
}

#[test]
fn a_converged_vm_has_no_changes_whatever_proxmox_fills_in() {
    check(WEB, "{}", expect!["no changes\n"]);
}

#[test]
fn cores_and_cloud_init_settings_wait_for_the_next_start() {
    let config = WEB
        .replace(r#""cores": 4"#, r#""cores": 8"#)
        .replace("10.0.0.52/24", "10.0.0.53/24");
    check(
        &config,
        "{}",
        expect![[r#"
        Update (Restart)
          cores: 4 -> 8 [Restart]
          ipconfig0: {"gw":"10.0.0.1","ip":"10.0.0.52/24"} -> {"gw":"10.0.0.1","ip":"10.0.0.53/24"} [Restart]
    "#]],
    );
}

#[test]
fn ssh_keys_compare_one_per_line_trimmed() {
    check(
        WEB,
        r#"{"sshkeys": "ssh-ed25519 AAAA ops@lab"}"#,
        expect![[r#"
        Update (Restart)
          sshkeys: "ssh-ed25519 AAAA ops@lab" -> "ssh-ed25519 AAAA ops@lab\nssh-rsa BBBB other" [Restart]
    "#]],
    );
}

#[test]
fn a_live_template_declared_as_a_vm_is_replaced_and_a_vm_declared_a_template_is_converted() {
    check(
        WEB,
        r#"{"template": true}"#,
        expect![[r#"
        Replace (Destructive)
          template: true -> false [Destructive]
    "#]],
    );
    let template = WEB.replace(r#""vmid": 1002"#, r#""vmid": 1002, "is_template": true"#);
    check(
        &template,
        "{}",
        expect![[r#"
        Update (Live)
          template: false -> true [Live]
    "#]],
    );
}

#[test]
fn a_firewall_declared_turns_on_the_nic_flag_and_the_rules() {
    let config = WEB.replace(
        r#""start_at_boot": true"#,
        r#""start_at_boot": true, "firewall": {"enabled": true, "rules": [{"type": "in", "action": "ACCEPT", "proto": "tcp", "port": "443"}]}"#,
    );
    check(
        &config,
        "{}",
        expect![[r#"
        Update (Live)
          firewall_enabled: false -> true [Live]
          firewall_rules: [] -> [{"action":"ACCEPT","dport":"443","enable":1,"proto":"tcp","type":"in"}] [Live]
          net0: {"bridge":"vmbr0","macaddr":"BC:24:11:00:10:02","model":"virtio"} -> {"bridge":"vmbr0","firewall":"1","macaddr":"BC:24:11:00:10:02","model":"virtio"} [Live]
    "#]],
    );
}
