//! `phoenix plan` and `apply` against a live (fake) Proxmox: the containers of a configuration converge,
//! and the second plan is empty.

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

use phoenix_testing::{FakePve, workspace};

fn text(bytes: &[u8]) -> String {
    String::from_utf8(bytes.to_vec()).expect("UTF-8")
}

/// `examples/minimal` on the fake's node name.
fn config_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("phoenix-cli-live-{}", std::process::id()));
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
    Command::new(env!("CARGO_BIN_EXE_phoenix"))
        .args(args)
        .env("PHOENIX_PVE_URL", &fake.info.url)
        .env("PHOENIX_PVE_TOKEN_ID", &fake.info.token_id)
        .env("PHOENIX_PVE_TOKEN_SECRET", &fake.info.token_secret)
        .env("PHOENIX_PVE_CA_FILE", &fake.info.cafile)
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .output()
        .expect("phoenix runs")
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

    let again = phoenix(&fake, &["plan", "-c", dir, "--detailed-exitcode"]);
    assert_eq!(again.status.code(), Some(0), "{}", text(&again.stdout));
    assert!(text(&again.stdout).contains("No changes: 1 resources are up to date."));

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
