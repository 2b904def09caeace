//! End-to-end tests of the `phoenix` binary: exit codes, output formats, configuration lookup.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

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
        .current_dir(workspace())
        .output()
        .expect("phoenix runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8(bytes.to_vec()).expect("output is UTF-8")
}

/// A copy of `examples/minimal` in a fresh temporary directory, with one text replacement applied.
fn broken_minimal(test: &str, find: &str, replace: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("phoenix-cli-{test}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    for entry in std::fs::read_dir(workspace().join("examples/minimal")).expect("example exists") {
        let path = entry.expect("entry").path();
        if path.extension().is_some_and(|extension| extension == "json") {
            let content = std::fs::read_to_string(&path)
                .expect("readable")
                .replace(find, replace);
            std::fs::write(dir.join(path.file_name().expect("file name")), content).expect("writable");
        }
    }
    dir
}

#[test]
fn validate_accepts_the_examples() {
    for example in ["examples/homelab", "examples/minimal"] {
        let output = phoenix(&["validate", "--config", example]);
        assert!(output.status.success(), "{}", text(&output.stderr));
        assert!(
            text(&output.stderr).contains("is valid"),
            "{}",
            text(&output.stderr)
        );
    }
}

#[test]
fn validate_reports_errors_with_exit_status_1_and_no_colour_off_a_terminal() {
    let dir = broken_minimal("human", "\"memory_mb\"", "\"memroy_mb\"");
    let output = phoenix(&["validate", "-c", dir.to_str().expect("utf-8 path")]);
    assert_eq!(output.status.code(), Some(1));
    let stderr = text(&output.stderr);
    assert!(stderr.contains("unknown key `memroy_mb`"), "{stderr}");
    assert!(stderr.contains("did you mean `memory_mb`?"), "{stderr}");
    assert!(
        stderr.contains("phoenix_lxc_configs.json:7:7"),
        "file, line and column are shown: {stderr}"
    );
    assert!(
        !stderr.contains('\u{1b}'),
        "no escape codes when stderr is not a terminal"
    );
}

#[test]
fn validate_json_output_lists_every_problem() {
    let dir = broken_minimal(
        "json",
        "\"ip\": \"dhcp\"",
        "\"ip\": \"10.0.0.5\", \"gw\": \"10.9.0.1\"",
    );
    let output = phoenix(&[
        "validate",
        "-c",
        dir.to_str().expect("utf-8 path"),
        "--output",
        "json",
    ]);
    assert_eq!(output.status.code(), Some(1));
    let records: serde_json::Value = serde_json::from_slice(&output.stdout).expect("stdout is JSON");
    let records = records.as_array().expect("an array");
    assert_eq!(records.len(), 1, "{records:#?}");
    let record = &records[0];
    assert_eq!(record["code"], "phoenix::network::bad_address");
    assert_eq!(record["pointer"], "/lxc_configs/100/network_config/ip");
    assert_eq!(record["severity"], "error");
    assert_eq!(record["line"], 12);
    assert!(
        record["file"]
            .as_str()
            .expect("file")
            .ends_with("phoenix_lxc_configs.json")
    );
    for key in ["column", "message", "help"] {
        assert!(record.get(key).is_some(), "record has {key}");
    }
}

#[test]
fn warnings_alone_exit_zero() {
    let dir = broken_minimal(
        "warning",
        "\"storage_pool\": \"local-lvm\"",
        "\"storage_pool\": \"local-zfs\"",
    );
    let output = phoenix(&["validate", "-c", dir.to_str().expect("utf-8 path")]);
    assert!(output.status.success(), "{}", text(&output.stderr));
    assert!(
        text(&output.stderr).contains("1 warning"),
        "{}",
        text(&output.stderr)
    );
}

#[test]
fn config_directory_comes_from_the_environment() {
    let output = Command::new(env!("CARGO_BIN_EXE_phoenix"))
        .arg("validate")
        .env("PHOENIX_CONFIG_DIR", workspace().join("examples/minimal"))
        .output()
        .expect("phoenix runs");
    assert!(output.status.success(), "{}", text(&output.stderr));
}

#[test]
fn a_missing_directory_is_a_clear_error() {
    let output = phoenix(&["validate", "--config", "no/such/dir"]);
    assert_eq!(output.status.code(), Some(1));
    let stderr = text(&output.stderr);
    assert!(
        stderr.contains("configuration directory no/such/dir does not exist"),
        "{stderr}"
    );
    assert!(
        stderr.contains("PHOENIX_CONFIG_DIR"),
        "the help names the variable: {stderr}"
    );
}

#[test]
fn schema_prints_the_embedded_schemas() {
    let listing = text(&phoenix(&["schema"]).stdout);
    for name in ["hypervisor", "lxc", "vm", "stacks"] {
        assert!(listing.contains(name), "{listing}");
    }
    let lxc = phoenix(&["schema", "lxc"]);
    assert!(lxc.status.success());
    let on_disk =
        std::fs::read_to_string(workspace().join("schemas/phoenix_lxc_configs.schema.json")).expect("file");
    assert_eq!(text(&lxc.stdout), on_disk);
    let by_file_name = phoenix(&["schema", "phoenix_vm_configs.json"]);
    assert!(text(&by_file_name.stdout).contains("phoenix_vm_configs.schema.json"));
    let unknown = phoenix(&["schema", "nope"]);
    assert_eq!(unknown.status.code(), Some(1));
    assert!(text(&unknown.stderr).contains("there is no schema named `nope`"));
}

#[test]
fn completions_are_generated() {
    let output = phoenix(&["completions", "bash"]);
    assert!(output.status.success());
    let script = text(&output.stdout);
    assert!(
        script.contains("phoenix") && script.contains("validate"),
        "{script}"
    );
}
