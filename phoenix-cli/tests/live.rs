//! `phoenix plan` and `apply` against a live (fake) Proxmox: the containers of a configuration converge,
//! and the second plan is empty.

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use phoenix_testing::{FakePve, workspace};

fn text(bytes: &[u8]) -> String {
    String::from_utf8(bytes.to_vec()).expect("UTF-8")
}

/// `examples/minimal` on the fake's node name, in a directory of its own: tests run at once, and one
/// writing the files while another reads them would read half a file.
fn config_dir() -> PathBuf {
    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("phoenix-cli-live-{}-{n}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    for file in [
        "phoenix_hypervisor_config.json",
        "phoenix_lxc_configs.json",
        "phoenix_vm_configs.json",
    ] {
        let text = std::fs::read_to_string(workspace().join("examples/minimal").join(file)).expect("example");
        std::fs::write(dir.join(file), text.replace(r#"["pve"]"#, r#"["pve1"]"#)).expect("writes");
    }
    dir
}

fn phoenix(fake: &FakePve, args: &[&str]) -> Output {
    command(fake, args).output().expect("phoenix runs")
}

/// `phoenix` with the fake's address and credentials.
fn command(fake: &FakePve, args: &[&str]) -> Command {
    let mut command = fake.phoenix(env!("CARGO_BIN_EXE_phoenix"));
    command.args(args).env(
        "XDG_STATE_HOME",
        std::env::temp_dir().join(format!("phoenix-cli-live-{}-state", std::process::id())),
    );
    command
}

/// Starts `phoenix apply --output json` on a container whose create task runs for 30 s, and returns once
/// Proxmox has accepted that task.
#[expect(
    clippy::zombie_processes,
    reason = "the child is returned to the caller, which waits for it"
)]
async fn apply_in_flight(fake: &FakePve, dir: &str) -> std::process::Child {
    fake.exec("pve.ct_secs['create'] = 30; pve.time_scale = 1").await;
    let mut child = command(fake, &["apply", "-c", dir, "--yes", "--output", "json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("phoenix starts");
    let began = std::time::Instant::now();
    loop {
        let requests = fake.requests().await;
        if requests
            .iter()
            .any(|(method, path, _)| method == "POST" && path.ends_with("/nodes/pve1/lxc"))
        {
            return child;
        }
        if began.elapsed() > Duration::from_secs(60) {
            let _ = child.kill();
            let _ = child.wait();
            panic!("no create after 60 s: {requests:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Sends SIGINT, as Ctrl-C does.
fn interrupt(child: &std::process::Child) {
    let sent = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(sent.success());
}

#[tokio::test]
async fn apply_converges_against_proxmox_and_the_second_plan_is_empty() {
    let Some(fake) = FakePve::start().await else {
        return;
    };
    let dir = config_dir();
    let dir = dir.to_str().expect("utf-8");

    let plan = phoenix(&fake, &["plan", "-c", dir, "--detailed-exitcode"]);
    assert_eq!(plan.status.code(), Some(2), "{}", text(&plan.stderr));
    let stdout = text(&plan.stdout);
    assert!(
        stdout.starts_with(&format!("Proxmox at {}", fake.info.url)),
        "{stdout}"
    );
    assert!(stdout.contains("  + lxc/100 (hello): create"), "{stdout}");

    let apply = phoenix(&fake, &["apply", "-c", dir, "--yes"]);
    assert!(
        apply.status.success(),
        "{}\n{}",
        text(&apply.stdout),
        text(&apply.stderr)
    );
    assert!(
        text(&apply.stdout).contains("Apply complete: 1 changed"),
        "{}",
        text(&apply.stdout)
    );
    assert!(
        !text(&apply.stderr).contains("no cluster-wide run lock"),
        "{}",
        text(&apply.stderr)
    );

    let again = phoenix(&fake, &["plan", "-c", dir, "--detailed-exitcode"]);
    assert_eq!(again.status.code(), Some(0), "{}", text(&again.stdout));
    assert!(text(&again.stdout).contains("No changes: 3 resources are up to date."));

    let wrong = Command::new(env!("CARGO_BIN_EXE_phoenix"))
        .args(["plan", "-c", dir])
        .env("PHOENIX_PVE_URL", &fake.info.url)
        .env("PHOENIX_PVE_TOKEN_ID", &fake.info.token_id)
        .env("PHOENIX_PVE_TOKEN_SECRET", &fake.info.token_secret)
        .env("PHOENIX_PVE_FINGERPRINT", "00:".repeat(31) + "00")
        .output()
        .expect("runs");
    assert_eq!(wrong.status.code(), Some(1));
    let stderr = text(&wrong.stderr);
    assert!(
        stderr.contains("phoenix::pve::tls") && stderr.contains("mismatch"),
        "{stderr}"
    );
    assert!(
        !stderr.contains(&fake.info.token_secret),
        "the secret stays out of errors"
    );
}

#[tokio::test]
async fn apply_waits_for_the_cluster_run_lock_of_another_machine_and_names_it() {
    let Some(fake) = FakePve::start().await else {
        return;
    };
    let dir = config_dir();
    let dir = dir.to_str().expect("utf-8");
    let client = fake.root_client().await;
    let mut other = phoenix_pve::runlock::Holder::current(std::time::Duration::from_secs(600));
    other.user = "bob".to_owned();
    other.host = "laptop".to_owned();
    other.token = "other-run".to_owned();
    let form = phoenix_pve::Form::new()
        .text("poolid", phoenix_pve::runlock::LOCK_POOL)
        .text("comment", other.to_text());
    client
        .post::<serde_json::Value>("/pools", &form)
        .await
        .expect("creates the pool");

    let started = std::time::Instant::now();
    let apply = phoenix(&fake, &["apply", "-c", dir, "--yes", "--lock-timeout", "2s"]);
    assert_eq!(apply.status.code(), Some(1), "{}", text(&apply.stdout));
    assert!(started.elapsed() >= std::time::Duration::from_secs(2));
    let stderr = text(&apply.stderr);
    assert!(
        stderr.contains("Waiting for the cluster run lock (pool phoenix-lock), held by bob@laptop"),
        "{stderr}"
    );
    assert!(
        stderr.contains("the cluster run lock (pool phoenix-lock) is held by bob@laptop (pid "),
        "{stderr}"
    );
    assert!(stderr.contains("(waited 2s)"), "{stderr}");
    assert!(!text(&apply.stdout).contains("Apply complete"));
    // Plans do not take the lock.
    let plan = phoenix(&fake, &["plan", "-c", dir]);
    assert!(plan.status.success(), "{}", text(&plan.stderr));
    // --force-unlock takes it over; the run then releases it.
    let forced = phoenix(&fake, &["apply", "-c", dir, "--yes", "--force-unlock"]);
    assert!(forced.status.success(), "{}", text(&forced.stderr));
    let pools: Vec<serde_json::Value> = client.get("/pools", &[]).await.expect("lists");
    assert!(
        pools
            .iter()
            .all(|pool| pool["poolid"] != phoenix_pve::runlock::LOCK_POOL),
        "{pools:?}"
    );
}

#[tokio::test]
async fn ctrl_c_stops_the_apply_and_its_json_report_names_the_task_left_running() {
    let Some(fake) = FakePve::start().await else {
        return;
    };
    let dir = config_dir();
    let child = apply_in_flight(&fake, dir.to_str().expect("utf-8")).await;
    let interrupted = std::time::Instant::now();
    interrupt(&child);
    let output = child.wait_with_output().expect("phoenix ends");
    assert!(
        interrupted.elapsed() < Duration::from_secs(15),
        "the stop ends the wait on the 30 s task: {:?}",
        interrupted.elapsed()
    );
    assert_eq!(output.status.code(), Some(130), "{}", text(&output.stderr));
    let document: serde_json::Value = serde_json::from_str(&text(&output.stdout)).expect("one JSON document");
    assert_eq!(document["report"]["stopped"], true, "{document:#}");
    let resources = document["report"]["resources"].as_array().expect("report lines");
    let line = resources
        .iter()
        .find(|line| line["address"] == "lxc/100")
        .expect("lxc/100 reported");
    assert_eq!(line["status"], "failed", "{line:#}");
    let running: Vec<_> = line["steps"]
        .as_array()
        .expect("steps")
        .iter()
        .filter(|step| step["state"] == "running")
        .collect();
    assert_eq!(running.len(), 1, "{line:#}");
    assert!(
        running[0]["task"]
            .as_str()
            .is_some_and(|upid| upid.starts_with("UPID:pve1:")),
        "{line:#}"
    );
    assert!(text(&output.stderr).contains("Stopping: no new operations start"));
}

#[tokio::test]
async fn a_second_ctrl_c_abandons_the_apply_and_still_prints_one_json_document() {
    let Some(fake) = FakePve::start().await else {
        return;
    };
    let dir = config_dir();
    let child = apply_in_flight(&fake, dir.to_str().expect("utf-8")).await;
    // Proxmox stops answering: the poll of the task hangs, and a stop waits for it.
    fake.exec("pve.flaky_network(hang_rate=1.0, hang_secs=600)").await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    interrupt(&child);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let abandoned = std::time::Instant::now();
    interrupt(&child);
    let output = child.wait_with_output().expect("phoenix ends");
    assert!(
        abandoned.elapsed() < Duration::from_secs(10),
        "the second Ctrl-C ends the run at once: {:?}",
        abandoned.elapsed()
    );
    assert_eq!(output.status.code(), Some(130), "{}", text(&output.stderr));
    let document: serde_json::Value = serde_json::from_str(&text(&output.stdout)).expect("one JSON document");
    assert_eq!(
        document["error"]["code"], "phoenix::apply::abandoned",
        "{document:#}"
    );
    assert!(text(&output.stderr).contains("Abandoned: operations in flight were cut off"));
}

#[tokio::test]
async fn a_change_to_the_management_bridge_is_refused_without_allow_risky() {
    let Some(fake) = FakePve::start().await else {
        return;
    };
    let dir = config_dir();
    let file = dir.join("phoenix_hypervisor_config.json");
    let mut hypervisor: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&file).expect("written")).expect("JSON");
    // fakepve's vmbr0 holds the default gateway; Phoenix reaches the fake on loopback, so it is the
    // management bridge.
    hypervisor["network"] = serde_json::json!({
        "interfaces": [{ "name": "vmbr0", "address": "192.0.2.12/24", "gateway": "192.0.2.1" }]
    });
    std::fs::write(&file, hypervisor.to_string()).expect("writes");
    let dir = dir.to_str().expect("utf-8");
    let network_writes = || async {
        fake.writes()
            .await
            .into_iter()
            .filter(|write| write.contains("/network"))
            .collect::<Vec<_>>()
    };

    let refused = phoenix(&fake, &["apply", "host/network/vmbr0", "-c", dir, "--yes"]);
    assert_eq!(refused.status.code(), Some(1), "{}", text(&refused.stderr));
    assert!(
        text(&refused.stdout).contains("[RISKY]"),
        "{}",
        text(&refused.stdout)
    );
    let stderr = text(&refused.stderr);
    assert!(
        stderr.contains("risky changes to host/network/vmbr0") && stderr.contains("--allow-risky"),
        "{stderr}"
    );
    assert!(network_writes().await.is_empty(), "refused before anything");

    let allowed = phoenix(
        &fake,
        &["apply", "host/network/vmbr0", "-c", dir, "--yes", "--allow-risky"],
    );
    assert!(allowed.status.success(), "{}", text(&allowed.stderr));
    assert_eq!(
        network_writes().await,
        [
            "PUT /api2/json/nodes/pve1/network/vmbr0",
            "PUT /api2/json/nodes/pve1/network"
        ]
    );
}

#[tokio::test]
async fn setup_node_names_a_node_of_the_configuration() {
    let Some(fake) = FakePve::start().await else {
        return;
    };
    let dir = config_dir();
    let dir = dir.to_str().expect("utf-8");
    let unknown = phoenix(&fake, &["setup", "-c", dir, "--node", "pve9", "--yes"]);
    assert_eq!(unknown.status.code(), Some(1));
    let stderr = text(&unknown.stderr);
    assert!(
        stderr.contains("--node pve9 is not one of `proxmox.nodes`") && stderr.contains("pve1"),
        "{stderr}"
    );
    assert!(fake.writes().await.is_empty(), "refused before anything");
    let named = phoenix(&fake, &["plan", "host/*", "-c", dir, "--node", "pve1"]);
    assert_eq!(named.status.code(), Some(0), "{}", text(&named.stderr));
}
