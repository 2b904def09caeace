//! The VM manager converging a cloud-image template and its clones against fakepve through the engine.

use std::path::Path;
use std::sync::Arc;

use phoenix_core::{
    Address, CheckOptions, FileKind, PlanOptions, Resource, SourceFile, plan, resources, validate,
};
use phoenix_pve::Form;
use phoenix_pve::lifecycle::GuestType;
use phoenix_testing::{FakePve, Harness, fixture};
use phoenix_vm::{VmManager, Vms};
use serde_json::Value;

fn fixture_dir() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/estate"))
}

fn fixture() -> Vec<Resource> {
    let options = CheckOptions {
        extra_features: vec!["hello".to_owned()],
        ..CheckOptions::default()
    };
    fixture::resources(fixture::sources(fixture_dir()), &options)
}

/// A fresh fakepve as the VM tests need it: cloud images are imported from a storage with the `import`
/// content type, and a resized disk reads back resized.
async fn fake() -> Option<FakePve> {
    let fake = FakePve::start().await?;
    fake.exec("pve.storages['local']['content'] += ',import,snippets'")
        .await;
    fake.resize_vm_disks_like_proxmox().await;
    Some(fake)
}

/// The VM manager, on a domain, against [`fake`].
async fn start() -> Option<Harness> {
    let fake = fake().await?;
    let harness = Harness::connect(fake, GuestType::Qemu, fixture(), |kit| {
        VmManager::new(Vms::new(kit, Some("test.internal".into()), "local").with_config_dir(fixture_dir()))
    });
    Some(harness.await)
}

#[tokio::test]
async fn a_cloud_image_template_and_its_clones_converge_and_stay_converged() {
    let Some(harness) = start().await else {
        return;
    };
    let first = harness.plan().await;
    assert_eq!(first.summary().create, 3);
    let report = harness.apply(&first).await;
    assert!(report.succeeded(), "{report:#?}");

    let template = harness.config(9000).await;
    assert_eq!(template["template"], 1);
    assert!(
        template["scsi0"].as_str().expect("disk").contains("size=16G"),
        "{}",
        template["scsi0"]
    );
    assert!(
        template["ide2"]
            .as_str()
            .expect("cloud-init drive")
            .contains("media=cdrom"),
        "{}",
        template["ide2"]
    );
    assert_eq!(
        (template["agent"].as_str(), template["serial0"].as_str()),
        (Some("1"), Some("socket"))
    );
    assert_eq!(template["ipconfig0"], "ip=dhcp");
    assert_eq!(template["ciuser"], "ops");

    let portainer = harness.config(1001).await;
    let number = |value: &Value| {
        value
            .as_i64()
            .or_else(|| value.as_str().and_then(|text| text.parse().ok()))
    };
    assert_eq!(
        (
            portainer["name"].as_str(),
            number(&portainer["cores"]),
            number(&portainer["memory"])
        ),
        (Some("portainer"), Some(4), Some(4096))
    );
    assert_eq!(portainer["ipconfig0"], "ip=10.1.0.31/24,gw=10.1.0.1");
    assert_eq!(portainer["nameserver"], "10.1.0.1");
    assert_eq!(portainer["searchdomain"], "test.internal");
    assert_eq!(number(&portainer["onboot"]), Some(1));
    assert_eq!(portainer["startup"], "order=4,up=2");
    let net0 = portainer["net0"].as_str().expect("net0");
    assert!(
        net0.starts_with("virtio=BC:24:11:10:01:01") && net0.contains("firewall=1"),
        "{net0}"
    );
    let keys = portainer["sshkeys"].as_str().expect("sshkeys");
    assert!(
        !keys.contains(' ') && keys.contains("%2B%2Fphoenix%3D"),
        "URL-encoded: {keys}"
    );
    assert!(
        portainer["scsi0"].as_str().expect("disk").contains("size=32G"),
        "{}",
        portainer["scsi0"]
    );
    let rules: Vec<Value> = harness
        .client
        .get("/nodes/pve1/qemu/1001/firewall/rules", &[])
        .await
        .expect("reads");
    assert_eq!(rules.len(), 1);
    let snapshots: Vec<Value> = harness
        .client
        .get("/nodes/pve1/qemu/1001/snapshot", &[])
        .await
        .expect("lists");
    assert!(snapshots.iter().any(|snapshot| snapshot["name"] == "configured"));
    let status: Value = harness
        .client
        .get("/nodes/pve1/qemu/1002/status/current", &[])
        .await
        .expect("reads");
    assert_eq!(status["status"], "running");

    let before = harness.writes().await.len();
    let second = harness.plan().await;
    assert!(
        !second.has_changes(),
        "{:#?}",
        second
            .entries()
            .iter()
            .filter(|entry| !entry.is_unchanged())
            .collect::<Vec<_>>()
    );
    assert!(harness.apply(&second).await.succeeded());
    assert_eq!(
        harness.writes().await.len(),
        before,
        "the second run makes no write request"
    );
}

#[tokio::test]
async fn drift_by_hand_is_corrected_including_ssh_keys() {
    let Some(harness) = start().await else {
        return;
    };
    assert!(harness.apply(&harness.plan().await).await.succeeded());
    let by_hand = Form::new()
        .number("memory", 1024)
        .text("sshkeys", "ssh-rsa%20AAAAB3%20intruder");
    let _: Value = harness
        .client
        .put("/nodes/pve1/qemu/1001/config", &by_hand)
        .await
        .expect("edits");
    let plan = harness.plan().await;
    let changed: Vec<_> = plan
        .entries()
        .iter()
        .filter(|entry| !entry.is_unchanged())
        .collect();
    assert_eq!(changed.len(), 1);
    assert_eq!(changed[0].address, Address::Vm(1001));
    let fields: Vec<&str> = changed[0].changes[0]
        .fields
        .iter()
        .map(|field| field.field.as_str())
        .collect();
    assert_eq!(fields, ["memory", "sshkeys"]);
    let old_keys = changed[0].changes[0].fields[1].old.clone();
    assert_eq!(
        old_keys,
        Some(Value::String("ssh-rsa AAAAB3 intruder".into())),
        "keys compare decoded"
    );
    assert!(harness.apply(&plan).await.succeeded());
    assert!(!harness.plan().await.has_changes());
}

async fn with_agents(hanging: &[u32], hello: &str) -> Option<Harness> {
    let fake = fake().await?;
    fake.emulate_guest_agents(hanging).await;
    let scripts = phoenix_pve::guest::GuestScripts {
        features: std::collections::BTreeMap::from([("hello".to_owned(), hello.to_owned())]),
        ..Default::default()
    };
    let harness = Harness::connect(fake, GuestType::Qemu, fixture(), |kit| {
        VmManager::new(
            Vms::new(kit, None, "local")
                .with_config_dir(fixture_dir())
                .with_scripts(scripts)
                .with_agent_timeout(std::time::Duration::from_secs(1)),
        )
    });
    Some(harness.await)
}

/// Requests that change something, leaving out the guest agent's, which are POSTs even to read.
async fn writes_outside_the_agent(harness: &Harness) -> usize {
    harness
        .writes()
        .await
        .iter()
        .filter(|write| !write.contains("/agent/"))
        .count()
}

#[tokio::test]
async fn features_and_nfs_volumes_run_through_the_guest_agent_once() {
    let Some(harness) = with_agents(&[], "echo hello from the feature\n").await else {
        return;
    };
    let report = harness.apply(&harness.plan().await).await;
    assert!(report.succeeded(), "{report:#?}");
    let runs = harness.fake.exec("result = pve.vm(1001).phoenix_runs").await;
    let runs: Vec<&str> = runs
        .as_array()
        .expect("a list")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(runs.len(), 2, "the NFS volumes, then the feature: {runs:?}");
    assert!(
        runs[0].contains("/etc/fstab") && runs[1].contains("hello from the feature"),
        "{runs:?}"
    );
    let records = harness.fake.exec("result = pve.vm(1001).phoenix_records").await;
    assert_eq!(
        records.as_object().map(|records| records.len()),
        Some(2),
        "{records}"
    );
    let snapshots: Vec<Value> = harness
        .client
        .get("/nodes/pve1/qemu/1001/snapshot", &[])
        .await
        .expect("lists");
    let names: Vec<&str> = snapshots
        .iter()
        .filter_map(|snapshot| snapshot["name"].as_str())
        .collect();
    for name in ["pre-features", "post-features", "configured"] {
        assert!(names.contains(&name), "{name} in {names:?}");
    }

    let before = writes_outside_the_agent(&harness).await;
    let second = harness.plan().await;
    assert!(
        !second.has_changes(),
        "{:#?}",
        second
            .entries()
            .iter()
            .filter(|entry| !entry.is_unchanged())
            .collect::<Vec<_>>()
    );
    assert!(harness.apply(&second).await.succeeded());
    assert_eq!(writes_outside_the_agent(&harness).await, before);
    let runs = harness.fake.exec("result = len(pve.vm(1001).phoenix_runs)").await;
    assert_eq!(runs, 2, "nothing ran again");
}

/// Applies the fixture, checks that VM 1001 failed and its dependent 1002 was skipped, and returns 1001's error.
async fn apply_expecting_1001_to_fail(harness: &Harness) -> String {
    let report = harness.apply(&harness.plan().await).await;
    let outcome = |id| {
        report
            .resources
            .iter()
            .find(|line| line.address == Address::Vm(id))
            .map(|line| line.outcome.clone())
    };
    let Some(phoenix_core::Outcome::Failed { error, .. }) = outcome(1001) else {
        panic!("{report:#?}")
    };
    assert_eq!(
        outcome(1002),
        Some(phoenix_core::Outcome::Skipped {
            reason: "vm/1001 failed".into()
        })
    );
    error
}

#[tokio::test]
async fn a_feature_failing_inside_the_vm_reports_its_exit_code_and_output() {
    let Some(harness) = with_agents(&[], "echo PHOENIX_TEST_FAIL\n").await else {
        return;
    };
    let error = apply_expecting_1001_to_fail(&harness).await;
    assert!(
        error.contains("`hello` failed in VM 1001 (exit 3)") && error.contains("boom"),
        "{error}"
    );
}

#[tokio::test]
async fn an_agent_that_does_not_answer_times_out_and_skips_dependents() {
    let Some(harness) = with_agents(&[1001], "echo hello\n").await else {
        return;
    };
    let error = apply_expecting_1001_to_fail(&harness).await;
    assert!(
        error.contains("the guest agent of VM 1001") && error.contains("timed out after 1 s"),
        "{error}"
    );
}

#[tokio::test]
async fn user_data_is_rendered_into_a_snippet_and_rewritten_only_when_it_changes() {
    let Some(fake) = fake().await else {
        return;
    };
    let storage = std::env::temp_dir().join(format!("phoenix-vm-snippets-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&storage);
    std::fs::create_dir_all(&storage).expect("creates");
    fake.exec(&format!(
        "pve.storages['local']['path'] = {:?}",
        storage.display().to_string()
    ))
    .await;
    let template = "#cloud-config\nhostname: {{ hostname }}\nfqdn: {{ fqdn }}\n".to_owned();
    let harness = Harness::connect(fake, GuestType::Qemu, fixture(), |kit| {
        VmManager::new(
            Vms::new(kit, Some("test.internal".into()), "local")
                .with_config_dir(fixture_dir())
                .with_user_data(template, Arc::new(phoenix_pve::host::LocalHost), "local"),
        )
    })
    .await;

    assert!(harness.apply(&harness.plan().await).await.succeeded());
    let snippet = storage.join("snippets/phoenix-1001-user-data.yml");
    assert_eq!(
        std::fs::read_to_string(&snippet).expect("written"),
        "#cloud-config\nhostname: portainer\nfqdn: portainer.test.internal\n"
    );
    assert_eq!(
        harness.config(1001).await["cicustom"],
        "user=local:snippets/phoenix-1001-user-data.yml"
    );
    assert!(!harness.plan().await.has_changes());

    std::fs::write(&snippet, "#cloud-config\nhostname: tampered\n").expect("edits");
    let plan = harness.plan().await;
    let changed: Vec<(String, Vec<String>)> = plan
        .entries()
        .iter()
        .filter(|entry| !entry.is_unchanged())
        .map(|entry| {
            (
                entry.address.to_string(),
                entry.changes[0]
                    .fields
                    .iter()
                    .map(|field| field.field.clone())
                    .collect(),
            )
        })
        .collect();
    assert_eq!(changed, [("vm/1001".to_owned(), vec!["user_data".to_owned()])]);
    assert!(harness.apply(&plan).await.succeeded());
    assert!(
        std::fs::read_to_string(&snippet)
            .expect("rewritten")
            .contains("hostname: portainer")
    );
    let _ = std::fs::remove_dir_all(&storage);
}

/// Every VM of `examples/homelab`, rendered through its user-data template, passes `cloud-init schema`.
#[test]
fn the_homelab_user_data_passes_cloud_init_schema() {
    let available = std::process::Command::new("cloud-init")
        .arg("--version")
        .output()
        .is_ok_and(|output| output.status.success());
    if !available {
        phoenix_testing::unavailable("cloud-init is not installed (apt-get install cloud-init)");
        return;
    }
    let dir = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/homelab"));
    let template = std::fs::read_to_string(dir.join("cloud-init/user-data.template.yml")).expect("template");
    let estate = fixture::estate(fixture::sources(dir), &CheckOptions::default());
    let domain = estate.files().hypervisor.domain_name.clone();
    let mut checked = 0;
    for guest in estate.guests().values() {
        let phoenix_core::GuestSpec::Vm(vm) = &guest.spec else {
            continue;
        };
        let rendered =
            phoenix_vm::cloudinit::render_user_data(&template, vm, domain.as_deref()).expect("renders");
        let file = std::env::temp_dir().join(format!(
            "phoenix-user-data-{}-{}.yml",
            vm.vmid,
            std::process::id()
        ));
        std::fs::write(&file, &rendered).expect("writes");
        let output = std::process::Command::new("cloud-init")
            .args(["schema", "--config-file"])
            .arg(&file)
            .output()
            .expect("runs");
        let _ = std::fs::remove_file(&file);
        assert!(
            output.status.success(),
            "VM {}: {}{}\n{rendered}",
            vm.vmid,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        checked += 1;
    }
    assert_eq!(checked, 3, "the template VM and both clones");
}

#[tokio::test]
async fn a_lock_held_by_a_backup_is_waited_out() {
    let Some(harness) = start().await else {
        return;
    };
    assert!(harness.apply(&harness.plan().await).await.succeeded());
    let _: Value = harness
        .client
        .put(
            "/nodes/pve1/qemu/1002/config",
            &Form::new().number("memory", 1024),
        )
        .await
        .expect("edits");
    harness
        .fake
        .exec(
            "pve.snapshot_lock(1002, 'backup')\nasyncio.get_running_loop().call_later(0.5, pve.unlock, 1002)",
        )
        .await;
    let started = std::time::Instant::now();
    let report = harness.apply(&harness.plan().await).await;
    assert!(report.succeeded(), "{report:#?}");
    assert!(
        started.elapsed() >= std::time::Duration::from_millis(400),
        "the apply waited for the lock"
    );
    assert!(!harness.plan().await.has_changes());
}

#[tokio::test]
async fn two_templates_from_one_image_download_it_once() {
    let Some(harness) = start().await else {
        return;
    };
    let template = |vmid: u32| {
        serde_json::json!({
            "vmid": vmid,
            "name": format!("noble-{vmid}"),
            "is_template": true,
            "template_image": "noble-server-cloudimg-amd64.img",
            "network_config": { "ip": "dhcp" }
        })
    };
    let vms = serde_json::json!({ "vms": [template(9100), template(9101)] });
    let hypervisor =
        std::fs::read_to_string(fixture_dir().join(FileKind::Hypervisor.file_name())).expect("reads");
    let sources = vec![
        SourceFile::new(FileKind::Hypervisor, FileKind::Hypervisor.file_name(), hypervisor),
        SourceFile::new(
            FileKind::Lxc,
            FileKind::Lxc.file_name(),
            r#"{"lxc_configs": {}}"#.to_owned(),
        ),
        SourceFile::new(FileKind::Vm, FileKind::Vm.file_name(), vms.to_string()),
    ];
    let estate = validate(sources, &CheckOptions::default())
        .into_estate()
        .expect("valid");
    let plan = plan(resources(&estate), &harness.managers, &PlanOptions::default())
        .await
        .expect("plans");
    let report = harness.apply(&plan).await;
    assert!(report.succeeded(), "{report:#?}");
    let downloads = harness
        .fake
        .requests()
        .await
        .into_iter()
        .filter(|(method, path, _)| method == "POST" && path.ends_with("/download-url"))
        .count();
    assert_eq!(
        downloads, 1,
        "the second template waits for the first one's download"
    );
    for vmid in [9100, 9101] {
        assert_eq!(harness.config(vmid).await["template"], 1);
    }
}
