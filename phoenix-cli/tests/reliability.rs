//! End-to-end tests of how the binary treats hostile or broken local files: FIFOs, links to devices,
//! huge files, dangling links, text that is not UTF-8; JSON output that stays one document on failure;
//! inline secrets kept out of code frames; the demo state's private home; the run lock.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("crate sits in the workspace")
        .to_path_buf()
}

/// A fresh scratch directory for one test.
fn scratch(test: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("phoenix-reliability-{test}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir
}

fn command(state_home: &Path, args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_phoenix"));
    command
        .args(args)
        .env_remove("PHOENIX_CONFIG_DIR")
        .env_remove("PHOENIX_DEMO_STATE")
        .env_remove("PHOENIX_PVE_URL")
        .env("XDG_STATE_HOME", state_home)
        .env("NO_COLOR", "1")
        .env("COLUMNS", "400")
        .current_dir(workspace())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    command
}

/// Runs phoenix with a private state directory; a run that does not end within a minute (a FIFO read
/// blocking, say) is killed and fails the test.
fn phoenix(state_home: &Path, args: &[&str]) -> Output {
    let mut child = command(state_home, args).spawn().expect("phoenix runs");
    let started = Instant::now();
    while child.try_wait().expect("waits").is_none() {
        if started.elapsed() > Duration::from_secs(60) {
            child.kill().expect("kills");
            panic!("phoenix {args:?} did not end within a minute");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().expect("output")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A copy of `examples/minimal` (its JSON files) in `dir/config`.
fn minimal(dir: &Path) -> PathBuf {
    let config = dir.join("config");
    std::fs::create_dir_all(&config).expect("config dir");
    for entry in std::fs::read_dir(workspace().join("examples/minimal")).expect("example exists") {
        let path = entry.expect("entry").path();
        if path.extension().is_some_and(|extension| extension == "json") {
            std::fs::copy(&path, config.join(path.file_name().expect("name"))).expect("copies");
        }
    }
    config
}

fn mkfifo(path: &Path) {
    let status = Command::new("mkfifo").arg(path).status().expect("mkfifo runs");
    assert!(status.success());
}

fn utf8(path: &Path) -> &str {
    path.to_str().expect("UTF-8 path")
}

#[track_caller]
fn assert_fails_naming(output: &Output, needles: &[&str]) {
    assert_eq!(output.status.code(), Some(1), "{}", text(&output.stderr));
    let stderr = text(&output.stderr);
    for needle in needles {
        assert!(stderr.contains(needle), "{needle:?} not in:\n{stderr}");
    }
}

#[test]
fn a_config_file_that_is_a_fifo_or_a_link_to_dev_zero_is_refused_naming_it() {
    let dir = scratch("fifo");
    let config = minimal(&dir);
    let lxc = config.join("phoenix_lxc_configs.json");
    std::fs::remove_file(&lxc).expect("removes");
    mkfifo(&lxc);
    for args in [vec!["validate"], vec!["plan", "--offline"]] {
        let mut all = args.clone();
        all.extend(["-c", utf8(&config)]);
        let output = phoenix(&dir, &all);
        assert_fails_naming(&output, &[utf8(&lxc), "is not a regular file (it is a FIFO)"]);
    }
    std::fs::remove_file(&lxc).expect("removes");
    std::os::unix::fs::symlink("/dev/zero", &lxc).expect("symlink");
    let output = phoenix(&dir, &["validate", "-c", utf8(&config)]);
    assert_fails_naming(&output, &[utf8(&lxc), "(it is a character device)"]);
}

#[test]
fn a_config_file_over_64_mib_is_refused_and_a_link_to_a_regular_file_is_read() {
    let dir = scratch("large");
    let config = minimal(&dir);
    let vm = config.join("phoenix_vm_configs.json");
    let moved = dir.join("vm.json");
    std::fs::rename(&vm, &moved).expect("moves");
    std::os::unix::fs::symlink(&moved, &vm).expect("symlink");
    let output = phoenix(&dir, &["validate", "-c", utf8(&config)]);
    assert!(output.status.success(), "{}", text(&output.stderr));
    std::fs::remove_file(&vm).expect("removes");
    // Sparse: 65 MiB to the reader, nothing on disk.
    std::fs::File::create(&vm)
        .expect("creates")
        .set_len(65 << 20)
        .expect("grows");
    let output = phoenix(&dir, &["validate", "-c", utf8(&config)]);
    assert_fails_naming(&output, &[utf8(&vm), "is larger than 64 MiB"]);
}

#[test]
fn scripts_that_are_not_regular_files_are_refused() {
    let dir = scratch("scripts");
    let config = minimal(&dir);
    std::fs::create_dir_all(config.join("features")).expect("features dir");
    let feature = config.join("features/blocking.sh");
    mkfifo(&feature);
    let output = phoenix(&dir, &["validate", "-c", utf8(&config)]);
    assert_fails_naming(&output, &[utf8(&feature), "is not a regular file"]);
    std::fs::remove_file(&feature).expect("removes");
    std::fs::create_dir_all(config.join("scripts")).expect("scripts dir");
    let script = config.join("scripts/zero");
    std::os::unix::fs::symlink("/dev/zero", &script).expect("symlink");
    let output = phoenix(&dir, &["plan", "--offline", "-c", utf8(&config)]);
    assert_fails_naming(&output, &[utf8(&script), "is not a regular file"]);
}

#[test]
fn a_dangling_stacks_link_is_an_error_not_a_missing_file() {
    let dir = scratch("dangling");
    let config = minimal(&dir);
    let stacks = config.join("phoenix_stacks_config.json");
    let _ = std::fs::remove_file(&stacks);
    std::os::unix::fs::symlink(dir.join("moved-away.json"), &stacks).expect("symlink");
    let output = phoenix(&dir, &["validate", "-c", utf8(&config)]);
    assert_fails_naming(
        &output,
        &[utf8(&stacks), "is a symbolic link to", "which does not exist"],
    );
}

#[test]
fn config_naming_a_file_says_it_is_not_a_directory() {
    let dir = scratch("notdir");
    let file = dir.join("etc");
    std::fs::write(&file, "{}").expect("writes");
    let output = phoenix(&dir, &["validate", "-c", utf8(&file)]);
    assert_fails_naming(&output, &["is not a directory (it is a regular file)"]);
    assert!(!text(&output.stderr).contains("does not exist"));
    let output = phoenix(&dir, &["validate", "-c", utf8(&dir.join("absent"))]);
    assert_fails_naming(&output, &["does not exist"]);
}

/// Every command that has `--output json`, against a configuration directory.
fn json_commands(config: &str, state: &str) -> Vec<Vec<String>> {
    let commands: [&[&str]; 6] = [
        &["validate"],
        &["plan", "--offline"],
        &["status", "--offline"],
        &["apply", "--demo", "--demo-state", state, "-y"],
        &["create", "101", "--demo", "--demo-state", state, "-y"],
        &["converge", "101", "--demo", "--demo-state", state, "-y"],
    ];
    commands
        .iter()
        .map(|args| {
            let mut all: Vec<String> = args.iter().map(|arg| (*arg).to_owned()).collect();
            all.extend([
                "--output".to_owned(),
                "json".to_owned(),
                "-c".to_owned(),
                config.to_owned(),
            ]);
            all
        })
        .collect()
}

#[test]
fn json_output_is_one_document_also_when_the_run_fails() {
    let dir = scratch("json");
    let state = dir.join("demo.json");
    let broken = minimal(&dir);
    std::fs::write(
        broken.join("phoenix_lxc_configs.json"),
        b"{\"lxc_configs\": \"\xff\"}",
    )
    .expect("writes");
    let missing = dir.join("missing");
    std::fs::create_dir_all(&missing).expect("dir");
    let a_file = dir.join("a-file");
    std::fs::write(&a_file, "").expect("writes");
    let cases = [
        (broken, "phoenix::file::not_utf8"),
        (missing, "phoenix::config::"),
        (a_file, "phoenix::config::not_a_directory"),
        (dir.join("absent"), "phoenix::config::no_directory"),
    ];
    for (config, code) in &cases {
        for args in json_commands(utf8(config), utf8(&state)) {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let output = phoenix(&dir, &args);
            assert_eq!(
                output.status.code(),
                Some(1),
                "{args:?}: {}",
                text(&output.stderr)
            );
            let document: serde_json::Value = serde_json::from_slice(&output.stdout)
                .unwrap_or_else(|error| panic!("{args:?}: {error}: {:?}", text(&output.stdout)));
            let stdout = text(&output.stdout);
            if args[0] == "validate" {
                assert!(document.is_array(), "{args:?}: {stdout}");
            } else {
                assert_eq!(document["format_version"], 1, "{args:?}: {stdout}");
                assert!(document["error"]["message"].is_string(), "{args:?}: {stdout}");
            }
            assert!(stdout.contains(code), "{args:?}: {code} not in {stdout}");
        }
    }
    // A missing file makes the configuration invalid: the other commands list its problems.
    let output = phoenix(
        &dir,
        &["plan", "--offline", "--output", "json", "-c", utf8(&cases[1].0)],
    );
    let document: serde_json::Value = serde_json::from_slice(&output.stdout).expect("one JSON document");
    assert_eq!(document["error"]["code"], "phoenix::config::not_valid");
    assert!(!document["problems"].as_array().expect("problems").is_empty());
}

#[test]
fn an_inline_secret_never_shows_in_a_code_frame() {
    let dir = scratch("secret");
    let config = minimal(&dir);
    let hypervisor = config.join("phoenix_hypervisor_config.json");
    let text_before = std::fs::read_to_string(&hypervisor).expect("reads");
    // The secret, and an error on the line before it, whose code frame shows the secret's line as context.
    let with_secret = text_before.replacen(
        "\"proxmox_storages\"",
        "\"portainer_api\": {\n    \"admin_user\": 7,\n    \"admin_password\": \"NewKick@$$2025\",\n    \"portainer_hostname\": \"portainer.example.org\"\n  },\n  \"proxmox_storages\"",
        1,
    );
    std::fs::write(&hypervisor, &with_secret).expect("writes");
    for args in [
        vec!["validate"],
        vec!["validate", "--output", "json"],
        vec!["plan", "--offline"],
        vec!["plan", "--offline", "--output", "json"],
    ] {
        let mut all = args.clone();
        all.extend(["-c", utf8(&config)]);
        let output = phoenix(&dir, &all);
        let everything = format!("{}{}", text(&output.stdout), text(&output.stderr));
        assert!(
            !everything.contains("NewKick"),
            "{args:?} shows the secret:\n{everything}"
        );
        if args.len() == 1 {
            assert!(everything.contains("(sensitive)"), "{args:?}:\n{everything}");
        }
    }
    // Alone, the warning's own frame is masked too.
    std::fs::write(
        &hypervisor,
        with_secret.replace("\"admin_user\": 7", "\"admin_user\": \"admin\""),
    )
    .expect("writes");
    let output = phoenix(&dir, &["validate", "-c", utf8(&config)]);
    assert!(output.status.success(), "{}", text(&output.stderr));
    let stderr = text(&output.stderr);
    assert!(stderr.contains("plaintext_secret"), "{stderr}");
    assert!(stderr.contains(r#""admin_password": "(sensitive)""#), "{stderr}");
    assert!(!stderr.contains("NewKick"), "{stderr}");
}

#[test]
fn the_demo_state_is_private_and_never_written_through_a_link() {
    let dir = scratch("state");
    let config = minimal(&dir);
    let output = phoenix(&dir, &["apply", "--demo", "-y", "-c", utf8(&config)]);
    assert!(output.status.success(), "{}", text(&output.stderr));
    let demo = dir.join("phoenix/demo");
    let files: Vec<PathBuf> = std::fs::read_dir(&demo)
        .expect("the state lives in XDG_STATE_HOME/phoenix/demo")
        .map(|entry| entry.expect("entry").path())
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");
    let mode = |path: &Path| std::fs::metadata(path).expect("exists").permissions().mode() & 0o777;
    assert_eq!(mode(&files[0]), 0o600);
    assert_eq!(mode(&dir.join("phoenix")), 0o700);
    assert!(
        text(&output.stdout).contains(utf8(&files[0])),
        "{}",
        text(&output.stdout)
    );
    // The next plan reads it back: nothing to do.
    let again = phoenix(
        &dir,
        &["plan", "--demo", "--detailed-exitcode", "-c", utf8(&config)],
    );
    assert_eq!(again.status.code(), Some(0), "{}", text(&again.stdout));

    let victim = dir.join("victim");
    std::fs::write(&victim, "keep").expect("writes");
    let planted = dir.join("planted.json");
    std::os::unix::fs::symlink(&victim, &planted).expect("symlink");
    let output = phoenix(
        &dir,
        &[
            "apply",
            "--demo",
            "--demo-state",
            utf8(&planted),
            "-y",
            "-c",
            utf8(&config),
        ],
    );
    assert_fails_naming(&output, &[utf8(&planted), "is a symbolic link"]);
    assert_eq!(std::fs::read_to_string(&victim).expect("reads"), "keep");
}

/// Waits until some lock file under `locks` is held by another process.
fn wait_until_locked(locks: &Path, child: &mut Child) {
    let started = Instant::now();
    loop {
        assert!(
            child.try_wait().expect("waits").is_none(),
            "the first run ended early"
        );
        let held = std::fs::read_dir(locks).into_iter().flatten().any(|entry| {
            let file = std::fs::File::open(entry.expect("entry").path()).expect("opens");
            matches!(file.try_lock(), Err(std::fs::TryLockError::WouldBlock))
        });
        if held {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the first run never took the lock"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_second_apply_on_one_target_fails_at_once_with_lock_timeout_0_naming_the_holder() {
    let dir = scratch("lock");
    let state = dir.join("demo.json");
    let homelab = ["-c", "examples/homelab", "--demo", "--demo-state", utf8(&state)];
    let mut first_args = vec!["apply", "-y"];
    first_args.extend(homelab);
    let mut first = command(&dir, &first_args).spawn().expect("first run starts");
    wait_until_locked(&dir.join("phoenix/locks"), &mut first);

    let mut second_args = vec!["apply", "-y", "--lock-timeout", "0"];
    second_args.extend(homelab);
    let started = Instant::now();
    let second = phoenix(&dir, &second_args);
    assert!(started.elapsed() < Duration::from_secs(20));
    assert_fails_naming(
        &second,
        &[
            "the run lock of demo",
            "is held by",
            &format!("pid {}", first.id()),
        ],
    );
    // Operations lock too; read-only commands do not wait.
    let mut stop_args = vec!["stop", "101", "--lock-timeout", "0"];
    stop_args.extend(homelab);
    assert_fails_naming(&phoenix(&dir, &stop_args), &["is held by"]);
    let mut status_args = vec!["status"];
    status_args.extend(homelab);
    let status = phoenix(&dir, &status_args);
    assert!(status.status.success(), "{}", text(&status.stderr));

    let first = first.wait_with_output().expect("first run ends");
    assert!(first.status.success(), "{}", text(&first.stderr));
    let mut plan_args = vec!["plan", "--detailed-exitcode"];
    plan_args.extend(homelab);
    assert_eq!(phoenix(&dir, &plan_args).status.code(), Some(0));
}
