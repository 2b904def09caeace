//! The real configuration of the earlier bash version (`../shared/reference/original/etc`), containers
//! and VMs together, planned and applied against fakepve: in dependency order across kinds, and a
//! second plan that is empty.

use std::process::{Command, Output, Stdio};

use phoenix_testing::docker::Dockerd;
use phoenix_testing::portainer::FakePortainer;
use phoenix_testing::{FakePve, reference_dir};

fn phoenix(fake: &FakePve, portainer: &FakePortainer, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_phoenix"))
        .args(args)
        .env("PHOENIX_PORTAINER_URL", portainer.url())
        .env("PHOENIX_PVE_URL", &fake.info.url)
        .env("PHOENIX_PVE_USER", &fake.info.user)
        .env("PHOENIX_PVE_PASSWORD", &fake.info.password)
        .env("PHOENIX_PVE_CA_FILE", &fake.info.cafile)
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .output()
        .expect("phoenix runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8(bytes.to_vec()).expect("UTF-8")
}

#[tokio::test]
async fn the_reference_estate_converges_across_kinds() {
    let Some(dir) = reference_dir() else {
        return;
    };
    let Some(fake) = FakePve::start().await else {
        return;
    };
    // A fresh Portainer for the stacks of the agent VM 1002 (its requests checked by Prism).
    let Some(portainer) = FakePortainer::start(&[], 3600).await else {
        return;
    };
    // The storages the reference names, as its host would have registered them.
    fake.exec(
        "for name in ('quickOS-lxc-disks', 'quickOS-vm-disks', 'fastData-shared-bulk-data'):\n    pve.storages[name] = {'type': 'zfspool', 'active': 1, 'content': 'images,rootdir', 'files': set(), 'pool': name.replace('-', '/', 1)}\npve.storages['local']['content'] += ',import'",
    )
    .await;
    fake.resize_vm_disks_like_proxmox().await;
    // The VMs' cloud images would run the guest agent, through which their features run, and Docker,
    // here a real engine of the test's own with a stand-in for the agent's image.
    let Some(engine) = Dockerd::start("reference") else {
        return;
    };
    engine.import_busybox("portainer/agent:latest");
    // The server is the primary VM's stack `portainer_service`, whose data volume is external.
    engine.import_busybox("portainer/portainer-ce:latest");
    assert!(
        engine
            .cli(&["volume", "create", "portainer_data_nfs"])
            .status
            .success()
    );
    fake.emulate_guest_agents_with(&[], Some(&engine.host())).await;
    let dir = dir.to_str().expect("UTF-8 path");

    // The reference's vmbr0 (10.0.0.13/24) replaces fakepve's address on the bridge with the node's
    // gateway: a risky change, as it would be on a real node.
    let apply = phoenix(
        &fake,
        &portainer,
        &["apply", "-c", dir, "--yes", "--allow-risky", "--output", "json"],
    );
    assert!(
        apply.status.success(),
        "{}\n{}",
        text(&apply.stdout),
        text(&apply.stderr)
    );
    let document: serde_json::Value = serde_json::from_slice(&apply.stdout).expect("JSON");
    let order: Vec<&str> = document["report"]["resources"]
        .as_array()
        .expect("array")
        .iter()
        .filter(|line| line["status"] == "changed")
        .map(|line| line["address"].as_str().expect("address"))
        .collect();
    assert_eq!(
        order.len(),
        36,
        "12 containers, 3 VMs, 11 dataset storages, the node's DNS, timezone, firewall and bridge, VM 1002's Portainer agent, the server's stack on VM 1001, Portainer's administrator, VM 1002's environment and its two stacks: {order:?}"
    );
    let position = |address: &str| order.iter().position(|each| *each == address).expect("applied");
    // Edges of the reference README, across kinds.
    for (later, earlier) in [
        ("lxc/103", "lxc/900"),
        ("lxc/102", "lxc/103"),
        ("vm/1001", "vm/9000"),
        ("vm/1001", "lxc/102"),
        ("vm/1002", "vm/1001"),
        ("lxc/901", "vm/1002"),
        ("lxc/911", "lxc/901"),
        ("lxc/801", "lxc/911"),
        ("portainer/server", "vm/1001"),
        ("stack/portainer_service@1001", "vm/1001"),
        ("portainer/server", "stack/portainer_service@1001"),
        ("portainer/endpoint/1002", "vm/1002"),
        ("portainer/docker/1002", "vm/1002"),
        ("portainer/endpoint/1002", "portainer/docker/1002"),
        ("stack/qdrant_service@1002", "portainer/endpoint/1002"),
    ] {
        assert!(
            position(earlier) < position(later),
            "{earlier} before {later}: {order:?}"
        );
    }

    // The stacks of the agent VM went through Portainer's API as its description says they must.
    let state = portainer.state().await;
    let mut stacks: Vec<&str> = state["stacks"]
        .as_array()
        .expect("stacks")
        .iter()
        .map(|stack| stack["Name"].as_str().expect("a name"))
        .collect();
    // Deployed in parallel: in either order.
    stacks.sort_unstable();
    assert_eq!(stacks, ["qdrant_service", "thinkheads_ai_app"]);
    portainer.assert_requests_valid().await;
    // The app's `files` entry (the earlier version's mount path, found in the stack's own `configs/`) is
    // placed on the VM and mounted read-only where the configuration says.
    let app = state["stacks"]
        .as_array()
        .and_then(|stacks| stacks.iter().find(|stack| stack["Name"] == "thinkheads_ai_app"))
        .expect("deployed");
    let content = app["content"].as_str().expect("a compose file");
    assert!(
        content.contains("/var/lib/phoenix/stacks/thinkheads_ai_app/")
            && content.contains("/prod.env:/app/.env:ro"),
        "{content}"
    );
    // The agent runs in the VM's Docker, recorded as Phoenix ran it.
    let agent = engine.cli(&[
        "inspect",
        "--format",
        "{{.State.Running}} {{.Config.Image}}",
        "portainer_agent",
    ]);
    assert_eq!(
        String::from_utf8_lossy(&agent.stdout).trim(),
        "true portainer/agent:latest"
    );

    // Every guest and the node's DNS, timezone and firewall are converged, but the reference also declares host
    // steps, stacks and sync steps that have no manager against a live Proxmox yet: the plan says so, and --detailed-exitcode does not
    // promise "no changes" (0) for what it did not read.
    let before = fake.requests().await.len();
    let again = phoenix(&fake, &portainer, &["plan", "-c", dir, "--detailed-exitcode"]);
    // The container and VM managers share one cluster listing per plan.
    let listings = fake.requests().await[before..]
        .iter()
        .filter(|(method, path, _)| method == "GET" && path.ends_with("/cluster/resources"))
        .count();
    assert_eq!(listings, 1, "GET /cluster/resources per plan");
    assert_eq!(
        again.status.code(),
        Some(1),
        "{}\n{}",
        text(&again.stdout),
        text(&again.stderr)
    );
    assert!(
        text(&again.stdout).contains("No changes in what was read (36 resources up to date), but "),
        "{}",
        text(&again.stdout)
    );
    assert!(
        text(&again.stdout).contains("not planned (no manager yet): this plan is incomplete."),
        "{}",
        text(&again.stdout)
    );
}
