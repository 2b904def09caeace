//! Project automation: `cargo xtask <command>`.
//!
//! - `validate [DIR...]`: validate configuration directories with `phoenix validate` (the examples when none).
//! - `bench`: run the benchmarks and print their figures.
//! - `demo`: apply the whole of `examples/homelab` to the built-in demo target, then plan again (no changes).
//! - `ci`: everything CI checks: formatting, clippy, the tests, and `validate`.
//!
//! Kept free of dependencies: it only runs cargo and the `phoenix` binary.

use std::env;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

fn main() -> ExitCode {
    let mut args = env::args().skip(1);
    let command = args.next();
    let rest: Vec<String> = args.collect();
    let outcome = match command.as_deref() {
        Some("validate") => validate(&rest),
        Some("bench") => bench(),
        Some("demo") => demo(),
        Some("ci") => ci(),
        _ => {
            eprintln!("usage: cargo xtask <validate [DIR...] | bench | demo | ci>");
            return ExitCode::from(2);
        }
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("xtask: {message}");
            ExitCode::FAILURE
        }
    }
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask sits in the workspace")
        .to_path_buf()
}

fn cargo() -> Command {
    let mut command = Command::new(env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned()));
    command.current_dir(root());
    command
}

fn run(what: &str, command: &mut Command) -> Result<(), String> {
    eprintln!("xtask: {what}");
    let status = command
        .status()
        .map_err(|error| format!("cannot start {what}: {error}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("{what} failed ({status})"))
    }
}

/// Validates each directory with the `phoenix` binary; every directory is checked even after a failure.
fn validate(dirs: &[String]) -> Result<(), String> {
    let dirs: Vec<PathBuf> = if dirs.is_empty() {
        let mut examples: Vec<PathBuf> = std::fs::read_dir(root().join("examples"))
            .map_err(|error| format!("cannot list examples/: {error}"))?
            .filter_map(|entry| entry.ok().map(|entry| entry.path()))
            .filter(|path| path.is_dir())
            .collect();
        examples.sort();
        examples
    } else {
        let here = env::current_dir().map_err(|error| error.to_string())?;
        dirs.iter().map(|dir| here.join(dir)).collect()
    };
    run(
        "build phoenix",
        cargo().args(["build", "--quiet", "--package", "phoenix-cli"]),
    )?;
    let phoenix = root().join("target/debug/phoenix");
    let mut failed = Vec::new();
    for dir in &dirs {
        let what = format!("phoenix validate --config {}", dir.display());
        if run(
            &what,
            Command::new(&phoenix).arg("validate").arg("--config").arg(dir),
        )
        .is_err()
        {
            failed.push(dir.display().to_string());
        }
    }
    if failed.is_empty() {
        Ok(())
    } else {
        Err(format!("invalid: {}", failed.join(", ")))
    }
}

/// Applies `examples/homelab` (containers, VMs, stacks, host and sync steps) to a fresh demo target and
/// shows that a second plan finds nothing to do.
fn demo() -> Result<(), String> {
    run(
        "build phoenix",
        cargo().args(["build", "--quiet", "--package", "phoenix-cli"]),
    )?;
    let phoenix = root().join("target/debug/phoenix");
    let state = env::temp_dir().join(format!("phoenix-xtask-demo-{}.json", std::process::id()));
    let _ = std::fs::remove_file(&state);
    let config = root().join("examples/homelab");
    let target = |command: &mut Command| {
        command
            .arg("--config")
            .arg(&config)
            .arg("--demo")
            .arg("--demo-state")
            .arg(&state);
    };
    let mut apply = Command::new(&phoenix);
    apply.args(["apply", "--yes"]);
    target(&mut apply);
    run("phoenix apply --demo (examples/homelab)", &mut apply)?;
    let mut plan = Command::new(&phoenix);
    plan.args(["plan", "--detailed-exitcode"]);
    target(&mut plan);
    let outcome = run("phoenix plan --demo --detailed-exitcode", &mut plan);
    let _ = std::fs::remove_file(&state);
    outcome.map_err(|_| "the second plan found changes: the demo did not converge".to_owned())
}

fn bench() -> Result<(), String> {
    run("cargo bench", cargo().args(["bench", "--workspace"]))
}

/// The feature scripts Phoenix ships must pass shellcheck (POSIX sh).
fn shellcheck() -> Result<(), String> {
    let mut scripts: Vec<PathBuf> = std::fs::read_dir(root().join("phoenix-core/features"))
        .map_err(|error| format!("cannot list phoenix-core/features: {error}"))?
        .filter_map(|entry| entry.ok().map(|entry| entry.path()))
        .filter(|path| path.extension().is_some_and(|extension| extension == "sh"))
        .collect();
    scripts.sort();
    if Command::new("shellcheck").arg("--version").output().is_err() {
        if env::var("CI").is_ok_and(|value| value == "true") {
            return Err("shellcheck is not installed (apt-get install shellcheck)".into());
        }
        eprintln!("xtask: SKIPPED shellcheck: not installed (apt-get install shellcheck)");
        return Ok(());
    }
    run(
        "shellcheck",
        Command::new("shellcheck").args(["--shell", "sh"]).args(&scripts),
    )
}

fn ci() -> Result<(), String> {
    run(
        "cargo fmt --check",
        cargo().args(["fmt", "--all", "--", "--check"]),
    )?;
    run(
        "cargo clippy",
        cargo().args([
            "clippy",
            "--workspace",
            "--all-targets",
            "--locked",
            "--",
            "-D",
            "warnings",
        ]),
    )?;
    shellcheck()?;
    run("cargo test", cargo().args(["test", "--workspace", "--locked"]))?;
    validate(&[])
}
