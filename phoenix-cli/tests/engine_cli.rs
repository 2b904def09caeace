//! End-to-end tests of `plan`, `apply`, `create` and `graph` against the offline and demo targets.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("crate sits in the workspace")
        .to_path_buf()
}

fn phoenix(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_phoenix"))
        .args(args)
        .env_remove("PHOENIX_CONFIG_DIR")
        .env_remove("PHOENIX_DEMO_STATE")
        // Lock files and default demo state go to a scratch state directory, not the user's.
        .env(
            "XDG_STATE_HOME",
            std::env::temp_dir().join(format!("phoenix-cli-state-{}", std::process::id())),
        )
        .env("NO_COLOR", "1")
        .current_dir(workspace())
        .stdin(Stdio::null())
        .output()
        .expect("phoenix runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8(bytes.to_vec()).expect("output is UTF-8")
}

/// `phoenix ARGS` on the homelab example, against the demo target with this state file.
fn homelab_demo(state: &str, args: &[&str]) -> Output {
    let mut all = args.to_vec();
    all.extend(["-c", "examples/homelab", "--demo", "--demo-state", state]);
    phoenix(&all)
}

/// A fresh demo state path for one test.
fn state(test: &str) -> String {
    let path = std::env::temp_dir().join(format!("phoenix-cli-demo-{test}-{}.json", std::process::id()));
    let _ = std::fs::remove_file(&path);
    path.display().to_string()
}

#[test]
fn offline_plan_of_the_homelab_says_so_and_lists_creations() {
    let output = phoenix(&["plan", "--config", "examples/homelab", "--offline"]);
    assert!(output.status.success(), "{}", text(&output.stderr));
    let stdout = text(&output.stdout);
    assert!(
        stdout.starts_with("Offline plan: --offline was given"),
        "{stdout}"
    );
    assert!(
        stdout.contains("  + lxc/900 (tpl-debian-base): create"),
        "{stdout}"
    );
    assert!(
        stdout.contains("  + stack/qdrant@1002 (qdrant): create"),
        "{stdout}"
    );
    assert!(stdout.contains("0 unchanged.\n"), "{stdout}");
    // The homelab's public names have no server to be published to: they are listed to create by hand.
    assert!(
        stdout.trim_end().ends_with("in zone lab.example.org (`public_dns` names no server to publish them to):\n  *.lab.example.org. 300 IN A 203.0.113.10\n  ca.lab.example.org. 300 IN A 203.0.113.10\n  lab.example.org. 300 IN A 203.0.113.10"),
        "{stdout}"
    );
    let detailed = phoenix(&[
        "plan",
        "--config",
        "examples/homelab",
        "--offline",
        "--detailed-exitcode",
    ]);
    assert_eq!(detailed.status.code(), Some(2));
}

#[test]
fn a_configured_endpoint_without_credentials_is_a_clear_error() {
    let output = phoenix(&["plan", "--config", "examples/homelab"]);
    assert_eq!(output.status.code(), Some(1));
    let stderr = text(&output.stderr);
    assert!(
        stderr.contains("the environment variable PHOENIX_PVE_TOKEN_SECRET is not set"),
        "{stderr}"
    );
    assert!(stderr.contains("--offline or --demo"), "{stderr}");
}

#[test]
fn without_an_endpoint_the_plan_is_offline() {
    let dir = std::env::temp_dir().join(format!("phoenix-cli-no-endpoint-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    for file in ["phoenix_lxc_configs.json", "phoenix_vm_configs.json"] {
        std::fs::copy(workspace().join("examples/minimal").join(file), dir.join(file)).expect("copies");
    }
    std::fs::write(
        dir.join("phoenix_hypervisor_config.json"),
        r#"{"proxmox_storages": [{"id": "local"}, {"id": "local-lvm"}]}"#,
    )
    .expect("writes");
    let output = phoenix(&["plan", "--config", dir.to_str().expect("utf-8")]);
    assert!(output.status.success(), "{}", text(&output.stderr));
    assert!(text(&output.stdout).starts_with("Offline plan: no Proxmox endpoint is configured"));
}

#[test]
fn plan_json_is_versioned_and_limited_to_targets() {
    let output = phoenix(&[
        "plan",
        "-c",
        "examples/homelab",
        "--offline",
        "--output",
        "json",
        "101",
    ]);
    assert!(output.status.success(), "{}", text(&output.stderr));
    let document: serde_json::Value = serde_json::from_slice(&output.stdout).expect("JSON");
    assert_eq!(document["format_version"], 1);
    assert!(document["offline"].is_string());
    let addresses: Vec<&str> = document["resources"]
        .as_array()
        .expect("array")
        .iter()
        .map(|r| r["address"].as_str().expect("str"))
        .collect();
    assert!(
        addresses.contains(&"lxc/101") && addresses.contains(&"lxc/103") && addresses.contains(&"lxc/900")
    );
    assert!(
        !addresses.iter().any(|address| address.starts_with("vm/")),
        "{addresses:?}"
    );
    assert_eq!(document["targets"], serde_json::json!(["lxc/101"]));
}

#[test]
fn unknown_targets_and_invalid_configs_fail_clearly() {
    let unknown = phoenix(&["plan", "-c", "examples/homelab", "--offline", "4242"]);
    assert_eq!(unknown.status.code(), Some(1));
    assert!(
        text(&unknown.stderr).contains("target 4242 is not declared"),
        "{}",
        text(&unknown.stderr)
    );
    let malformed = phoenix(&["plan", "-c", "examples/homelab", "--offline", "lxc/"]);
    assert_eq!(malformed.status.code(), Some(1));
    let offline_apply = phoenix(&["apply", "-c", "examples/homelab", "--offline", "--yes"]);
    assert_eq!(offline_apply.status.code(), Some(1));
    assert!(
        text(&offline_apply.stderr).contains("cannot apply offline"),
        "{}",
        text(&offline_apply.stderr)
    );
}

#[test]
fn demo_apply_converges_and_the_second_run_changes_nothing() {
    let state = state("converge");
    let without_yes = phoenix(&[
        "apply",
        "-c",
        "examples/minimal",
        "--demo",
        "--demo-state",
        &state,
    ]);
    assert_eq!(without_yes.status.code(), Some(1));
    assert!(text(&without_yes.stderr).contains("refusing to apply without confirmation"));
    assert!(!Path::new(&state).exists(), "nothing was applied");

    let first = phoenix(&[
        "apply",
        "-c",
        "examples/minimal",
        "--demo",
        "--demo-state",
        &state,
        "--yes",
    ]);
    assert!(first.status.success(), "{}", text(&first.stderr));
    let stdout = text(&first.stdout);
    assert!(stdout.contains("  + lxc/100 (hello): create"), "{stdout}");
    assert!(
        stdout.contains("Apply complete: 3 changed, 0 unchanged, 0 failed, 0 skipped, 0 not started"),
        "{stdout}"
    );
    assert!(
        text(&first.stderr).contains("changed   lxc/100"),
        "plain progress lines off a terminal"
    );

    let second = phoenix(&[
        "plan",
        "-c",
        "examples/minimal",
        "--demo",
        "--demo-state",
        &state,
        "--detailed-exitcode",
    ]);
    assert_eq!(second.status.code(), Some(0), "{}", text(&second.stdout));
    assert!(text(&second.stdout).contains("No changes: 3 resources are up to date."));
}

#[test]
fn demo_drift_is_corrected_and_destruction_needs_the_flag() {
    let state = state("drift");
    assert!(
        phoenix(&[
            "apply",
            "-c",
            "examples/minimal",
            "--demo",
            "--demo-state",
            &state,
            "-y"
        ])
        .status
        .success()
    );
    let mut document: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&state).expect("state written")).expect("JSON");
    // The demo keeps live state in the container manager's own vocabulary (`memory`, as Proxmox says it).
    document["live"]["lxc/100"]["fields"]["memory"] = serde_json::json!(256);
    document["live"]["lxc/999"] = serde_json::json!({"fields": {"name": "leftover"}});
    std::fs::write(&state, document.to_string()).expect("state writable");

    let plan = phoenix(&[
        "plan",
        "-c",
        "examples/minimal",
        "--demo",
        "--demo-state",
        &state,
        "--output",
        "json",
    ]);
    let plan: serde_json::Value = serde_json::from_slice(&plan.stdout).expect("JSON");
    assert_eq!(plan["summary"]["update"], 1);
    assert_eq!(plan["summary"]["delete"], 1);

    let refused = phoenix(&[
        "apply",
        "-c",
        "examples/minimal",
        "--demo",
        "--demo-state",
        &state,
        "-y",
    ]);
    assert_eq!(refused.status.code(), Some(1));
    assert!(
        text(&refused.stderr).contains("the plan destroys lxc/999"),
        "{}",
        text(&refused.stderr)
    );

    let allowed = phoenix(&[
        "apply",
        "-c",
        "examples/minimal",
        "--demo",
        "--demo-state",
        &state,
        "-y",
        "--allow-destroy",
        "--output",
        "json",
    ]);
    assert!(allowed.status.success(), "{}", text(&allowed.stderr));
    let report: serde_json::Value = serde_json::from_slice(&allowed.stdout).expect("JSON report");
    assert_eq!(report["format_version"], 1);
    let statuses: Vec<&str> = report["report"]["resources"]
        .as_array()
        .expect("array")
        .iter()
        .map(|r| r["status"].as_str().expect("str"))
        .collect();
    // The two storages are as they were; the container's drift and the deletion are the changes.
    assert_eq!(statuses, ["unchanged", "unchanged", "changed", "changed"]);
    let after = phoenix(&[
        "plan",
        "-c",
        "examples/minimal",
        "--demo",
        "--demo-state",
        &state,
        "--detailed-exitcode",
    ]);
    assert_eq!(after.status.code(), Some(0));
}

#[test]
fn create_limits_the_run_to_a_guest_and_its_prerequisites() {
    let state = state("create");
    let output = homelab_demo(&state, &["create", "103", "-y", "--output", "json"]);
    assert!(output.status.success(), "{}", text(&output.stderr));
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).expect("JSON");
    let changed = ended(&report, "changed");
    assert!(
        changed.iter().any(|address| address == "lxc/103")
            && changed.iter().any(|address| address == "lxc/900"),
        "{changed:?}"
    );
    assert!(
        !changed.iter().any(|address| address.starts_with("vm/")
            || address.starts_with("stack/")
            || *address == "lxc/101"),
        "{changed:?}"
    );
}

#[test]
fn a_guest_that_triggers_a_sync_brings_the_stacks_and_sync_steps() {
    let path = state("create-trigger");
    // lxc/950 says `trigger_sync_on_completion`.
    let output = homelab_demo(&path, &["create", "950", "-y", "--output", "json"]);
    assert!(output.status.success(), "{}", text(&output.stderr));
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).expect("JSON");
    let changed = ended(&report, "changed");
    for address in [
        "lxc/950",
        "stack/qdrant@1002",
        "stack/searxng@1002",
        "sync/traefik",
        "sync/dns/internal",
    ] {
        assert!(
            changed.iter().any(|done| done == address),
            "{address}: {changed:?}"
        );
    }
    let human = homelab_demo(&state("create-trigger-human"), &["create", "950", "-y"]);
    assert!(
        text(&human.stderr).contains("950 (llm-qwen) asks for `sync all` on completion"),
        "{}",
        text(&human.stderr)
    );
}

/// The addresses of a JSON report's resources that ended `status`, in report order.
fn ended(report: &serde_json::Value, status: &str) -> Vec<String> {
    report["report"]["resources"]
        .as_array()
        .expect("array")
        .iter()
        .filter(|line| line["status"] == status)
        .map(|line| line["address"].as_str().expect("str").to_owned())
        .collect()
}

#[test]
fn sync_all_runs_the_pipeline_and_a_second_sync_has_nothing_to_do() {
    let state = state("sync-all");
    let output = homelab_demo(&state, &["sync", "all", "-y", "--output", "json"]);
    assert!(output.status.success(), "{}", text(&output.stderr));
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).expect("JSON");
    let changed = ended(&report, "changed");
    let at = |address: &str| {
        changed
            .iter()
            .position(|done| done == address)
            .unwrap_or_else(|| panic!("{address} was not changed: {changed:?}"))
    };
    // The seed's order: DNS, the Portainer server, its environments and stacks, Traefik last.
    assert!(at("sync/dns/internal") < at("portainer/server"), "{changed:?}");
    assert!(
        at("portainer/server") < at("portainer/endpoint/1002"),
        "{changed:?}"
    );
    assert!(
        at("portainer/endpoint/1002") < at("stack/qdrant@1002"),
        "{changed:?}"
    );
    assert!(at("stack/qdrant@1002") < at("sync/traefik"), "{changed:?}");
    assert!(at("stack/searxng@1002") < at("sync/traefik"), "{changed:?}");

    let again = homelab_demo(&state, &["sync", "all", "--plan", "--detailed-exitcode"]);
    assert_eq!(again.status.code(), Some(0), "{}", text(&again.stdout));
}

#[test]
fn sync_stack_deploys_one_stack_and_refuses_what_the_configuration_does_not_say() {
    let state = state("sync-stack");
    let output = homelab_demo(
        &state,
        &["sync", "stack", "qdrant", "to", "1002", "-y", "--output", "json"],
    );
    assert!(output.status.success(), "{}", text(&output.stderr));
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).expect("JSON");
    let changed = ended(&report, "changed");
    for address in [
        "stack/qdrant@1002",
        "portainer/endpoint/1002",
        "vm/1002",
        "sync/traefik",
    ] {
        assert!(
            changed.iter().any(|done| done == address),
            "{address}: {changed:?}"
        );
    }
    assert!(
        !changed.iter().any(|done| done == "stack/searxng@1002"),
        "{changed:?}"
    );
    let plan = homelab_demo(&state, &["sync", "all", "--plan", "--detailed-exitcode"]);
    assert_eq!(plan.status.code(), Some(2), "searxng is still to deploy");

    for (args, code, says) in [
        (
            ["sync", "stack", "qdrnt", "to", "1002"],
            "phoenix::sync::unknown_stack",
            "did you mean `qdrant`?",
        ),
        (
            ["sync", "stack", "qdrant", "to", "1001"],
            "phoenix::sync::stack_not_on_vm",
            "add \"qdrant\" to docker_stacks of VM 1001",
        ),
        (
            ["sync", "stack", "qdrant", "to", "101"],
            "phoenix::sync::not_a_vm",
            "101 (gateway) is a container",
        ),
        (
            ["sync", "stack", "qdrant", "to", "4242"],
            "phoenix::sync::unknown_vm",
            "no VM 4242",
        ),
    ] {
        let output = homelab_demo(&state, &[&args[..], &["--plan"]].concat());
        assert_eq!(output.status.code(), Some(1), "{args:?}");
        let stderr = text(&output.stderr);
        assert!(
            stderr.contains(code) && stderr.contains(says),
            "{args:?}: {stderr}"
        );
    }
    let output = homelab_demo(&state, &["sync", "stack", "qdrant", "onto", "1002"]);
    assert_eq!(output.status.code(), Some(2), "clap's usage error");
}

#[test]
fn graph_prints_dot_and_mermaid() {
    let dot = phoenix(&["graph", "-c", "examples/homelab"]);
    assert!(dot.status.success());
    let dot = text(&dot.stdout);
    assert!(dot.starts_with("digraph phoenix {"), "{dot}");
    assert!(
        dot.contains("\"lxc/900\" -> \"lxc/901\" [label=\"clone\", style=bold];"),
        "{dot}"
    );
    let mermaid = text(&phoenix(&["graph", "-c", "examples/homelab", "--format", "mermaid"]).stdout);
    assert!(mermaid.starts_with("flowchart LR\n"), "{mermaid}");
    assert!(mermaid.contains("lxc_900 == clone ==> lxc_901"), "{mermaid}");
    assert!(mermaid.contains("vm_1002 --> stack_qdrant_1002"), "{mermaid}");
}

#[test]
fn operations_on_existing_guests() {
    let state = state("operate");
    let demo = |args: &[&str]| homelab_demo(&state, args);
    assert!(demo(&["apply", "-y"]).status.success());

    let stop = demo(&["stop", "101", "102"]);
    assert!(stop.status.success(), "{}", text(&stop.stderr));
    assert_eq!(
        text(&stop.stdout),
        "stop:        lxc/102\nstop:        lxc/101\n",
        "dependents stop first"
    );
    let status = demo(&["status", "--output", "json", "101"]);
    let rows: serde_json::Value = serde_json::from_slice(&status.stdout).expect("JSON");
    let row = rows
        .as_array()
        .expect("array")
        .iter()
        .find(|row| row["address"] == "lxc/101")
        .expect("listed");
    // A stopped container is drift for the container manager, which declares it running; the demo runs
    // that manager's diff, so it says what a real Proxmox would.
    assert_eq!(
        (row["state"].as_str(), row["drift"].as_str()),
        (Some("stopped"), Some("drift: status"))
    );
    assert!(demo(&["start", "101"]).status.success());

    assert!(demo(&["snapshot", "101", "before-upgrade"]).status.success());
    let again = demo(&["snapshot", "101", "before-upgrade"]);
    assert_eq!(again.status.code(), Some(1));
    assert!(
        text(&again.stderr).contains("already exists"),
        "{}",
        text(&again.stderr)
    );
    let unconfirmed = demo(&["rollback", "101", "before-upgrade"]);
    assert_eq!(unconfirmed.status.code(), Some(1));
    assert!(
        text(&unconfirmed.stderr).contains("refusing to rollback without confirmation"),
        "{}",
        text(&unconfirmed.stderr)
    );
    assert!(
        demo(&["rollback", "101", "before-upgrade", "-y"])
            .status
            .success()
    );
    assert_eq!(
        demo(&["rollback", "101", "never-taken", "-y"]).status.code(),
        Some(1)
    );

    let refused = demo(&["delete", "900", "-y"]);
    assert_eq!(refused.status.code(), Some(1));
    assert!(
        text(&refused.stderr).contains("other resources depend on what you are deleting"),
        "{}",
        text(&refused.stderr)
    );
    let deleted = demo(&["delete", "950", "-y"]);
    assert!(deleted.status.success(), "{}", text(&deleted.stderr));
    let plan = demo(&["plan", "--output", "json"]);
    let plan: serde_json::Value = serde_json::from_slice(&plan.stdout).expect("JSON");
    assert_eq!(plan["summary"]["create"], 1, "the deleted guest is planned again");
    let unknown = demo(&["start", "4242"]);
    assert_eq!(unknown.status.code(), Some(1));
}

#[test]
fn demo_health_checks_fail_like_real_ones() {
    let state = state("health");
    let demo = |args: &[&str]| homelab_demo(&state, args);
    assert!(demo(&["apply", "-y"]).status.success());
    let healthy = demo(&["health-check", "103"]);
    assert!(healthy.status.success(), "{}", text(&healthy.stderr));
    assert_eq!(text(&healthy.stdout), "health-check: lxc/103\n");

    // Gateway declares no health check: there is nothing to run, which is a failure, as on Proxmox.
    let undeclared = demo(&["health-check", "101"]);
    assert_eq!(undeclared.status.code(), Some(1));
    assert!(
        text(&undeclared.stderr).contains("lxc/101 declares no health check"),
        "{}",
        text(&undeclared.stderr)
    );

    assert!(demo(&["stop", "103"]).status.success());
    let stopped = demo(&["health-check", "103"]);
    assert_eq!(stopped.status.code(), Some(1));
    assert!(
        text(&stopped.stderr).contains("the health check of lxc/103 failed: it is not running"),
        "{}",
        text(&stopped.stderr)
    );
}

#[test]
fn demo_and_offline_plans_speak_the_managers_vocabulary() {
    let output = phoenix(&["plan", "-c", "examples/homelab", "--offline", "--output", "json"]);
    assert!(output.status.success(), "{}", text(&output.stderr));
    let plan: serde_json::Value = serde_json::from_slice(&output.stdout).expect("JSON");
    let fields = |address: &str| -> Vec<String> {
        let resource = plan["resources"]
            .as_array()
            .expect("resources")
            .iter()
            .find(|resource| resource["address"] == address)
            .unwrap_or_else(|| panic!("{address} is planned"));
        resource["changes"][0]["fields"]
            .as_array()
            .expect("fields")
            .iter()
            .map(|field| field["field"].as_str().expect("name").to_owned())
            .collect()
    };
    // The names Proxmox and the live managers use, not the configuration's keys.
    let container = fields("lxc/101");
    assert!(
        container.contains(&"memory".to_owned()) && container.contains(&"net0".to_owned()),
        "{container:?}"
    );
    assert!(
        !container
            .iter()
            .any(|field| field == "memory_mb" || field == "network_config")
    );
    let vm = fields("vm/1001");
    assert!(
        vm.contains(&"disk_gb".to_owned()) && vm.contains(&"ipconfig0".to_owned()),
        "{vm:?}"
    );
}

#[test]
fn ctrl_c_stops_dispatch_and_exits_130() {
    use std::io::{BufRead, BufReader};

    let state = state("interrupt");
    let mut child = Command::new(env!("CARGO_BIN_EXE_phoenix"))
        .args([
            "apply",
            "-c",
            "examples/homelab",
            "--demo",
            "--demo-state",
            &state,
            "-y",
        ])
        .args(["--parallelism", "1"])
        .env("NO_COLOR", "1")
        .current_dir(workspace())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("phoenix starts");
    // Once the first resource has started, the run is under way and Ctrl-C is handled.
    let mut stderr = BufReader::new(child.stderr.take().expect("stderr"));
    let mut line = String::new();
    while stderr.read_line(&mut line).expect("reads") > 0 && !line.contains("started") {
        line.clear();
    }
    let pid = child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-INT", &pid])
            .status()
            .expect("kill runs")
            .success()
    );
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stderr, &mut rest).expect("reads");
    let output = child.wait_with_output().expect("phoenix ends");
    assert_eq!(output.status.code(), Some(130), "{rest}");
    let report = text(&output.stdout);
    assert!(report.contains("Apply stopped:"), "{report}");
    assert!(report.contains("not started"), "{report}");
}
