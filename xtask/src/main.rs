//! Project automation: `cargo xtask <command>`.
//!
//! - `validate [DIR...]`: validate configuration directories with `phoenix validate` (the examples when none).
//! - `bench [OPTIONS]`: run the benchmarks and print their figures, then the cluster at scale against
//!   fakepve (`phoenix-testing/src/bin/scale.rs`, which takes the options).
//! - `realistic DIR N`: write a directory of N containers shaped like the earlier version's real ones.
//! - `demo`: apply the whole of `examples/homelab` to the built-in demo target, then plan again (no changes).
//! - `soak [OPTIONS]`: apply and re-apply 50 containers against fakepve at real task speed with dropped
//!   connections and random 5xx for a bounded time (`--minutes`, default 10), and judge every report
//!   (`phoenix-testing/src/bin/soak.rs` says how).
//! - `docs`: write the configuration reference, `docs/reference.md`, from the JSON Schemas ([`reference`]).
//! - `ci`: everything CI checks: formatting, clippy, that `docs/reference.md` is up to date, shellcheck,
//!   the tests, and `validate`.
//!
//! It runs cargo and the `phoenix` binary; its one dependency, `serde_json`, reads the schemas for `docs`.

mod realistic;
mod reference;

use std::env;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

fn main() -> ExitCode {
    let mut args = env::args().skip(1);
    let command = args.next();
    let rest: Vec<String> = args.collect();
    let outcome = match command.as_deref() {
        Some("validate") => validate(&rest),
        Some("bench") => bench(&rest),
        Some("demo") => demo(),
        Some("soak") => soak(&rest),
        Some("realistic") => realistic_dir(&rest),
        Some("docs") => docs(),
        Some("ci") => ci(),
        _ => {
            eprintln!(
                "usage: cargo xtask <validate [DIR...] | bench [--realistic | OPTIONS] | demo | soak [OPTIONS] | docs | ci>"
            );
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

/// Builds `phoenix` and the soak driver, then runs the soak with the given options.
fn soak(options: &[String]) -> Result<(), String> {
    run(
        "build phoenix",
        cargo().args(["build", "--quiet", "--package", "phoenix-cli"]),
    )?;
    let phoenix = root().join("target/debug/phoenix");
    run(
        "soak",
        cargo()
            .args([
                "run",
                "--quiet",
                "--package",
                "phoenix-testing",
                "--bin",
                "soak",
                "--",
            ])
            .arg("--phoenix")
            .arg(&phoenix)
            .args(options),
    )
}

/// The configuration reference as `cargo xtask docs` would write it, from `schemas/*.schema.json`.
fn generated_reference() -> Result<String, String> {
    let dir = root().join("schemas");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .map_err(|error| format!("cannot list schemas/: {error}"))?
        .filter_map(|entry| entry.ok().map(|entry| entry.path()))
        .filter(|path| {
            path.file_name()
                .and_then(|name| name.to_str())
                .is_some_and(|name| name.ends_with(".schema.json"))
        })
        .collect();
    files.sort();
    let mut schemas = Vec::new();
    for path in files {
        let file_name = path
            .file_name()
            .and_then(|name| name.to_str())
            .unwrap_or_default()
            .to_owned();
        let text = std::fs::read_to_string(&path)
            .map_err(|error| format!("cannot read schemas/{file_name}: {error}"))?;
        let schema = serde_json::from_str(&text)
            .map_err(|error| format!("schemas/{file_name} is not JSON: {error}"))?;
        schemas.push(reference::Schema { file_name, schema });
    }
    reference::render(&schemas)
}

/// Writes `docs/reference.md`.
fn docs() -> Result<(), String> {
    let text = generated_reference()?;
    let path = root().join(reference::OUTPUT);
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|error| format!("cannot create {}: {error}", dir.display()))?;
    }
    std::fs::write(&path, text).map_err(|error| format!("cannot write {}: {error}", reference::OUTPUT))?;
    eprintln!("xtask: wrote {}", reference::OUTPUT);
    Ok(())
}

/// Fails when `docs/reference.md` (as checked out) is not what `cargo xtask docs` would write.
fn docs_check() -> Result<(), String> {
    eprintln!("xtask: check that {} is up to date", reference::OUTPUT);
    let expected = generated_reference()?;
    let committed = std::fs::read_to_string(root().join(reference::OUTPUT)).unwrap_or_default();
    if committed == expected {
        Ok(())
    } else {
        Err(format!(
            "{} is out of date: run `cargo xtask docs`",
            reference::OUTPUT
        ))
    }
}

/// The in-process benchmarks, then the cluster at scale: the release binary against fakepve
/// (`phoenix-testing/src/bin/scale.rs`; options after `bench` go to it, such as `--guests 300`).
fn bench(options: &[String]) -> Result<(), String> {
    // `--realistic`: only the reference-shaped validate and plan runs, with ajv beside them.
    let only_realistic = options.first().is_some_and(|option| option == "--realistic");
    if !only_realistic {
        run("cargo bench", cargo().args(["bench", "--workspace"]))?;
    }
    run(
        "build phoenix (release)",
        cargo().args(["build", "--release", "--quiet", "--package", "phoenix-cli"]),
    )?;
    let phoenix = root().join("target/release/phoenix");
    realistic_bench(&phoenix)?;
    if only_realistic {
        return Ok(());
    }
    run(
        "scale",
        cargo()
            .args([
                "run",
                "--release",
                "--quiet",
                "--package",
                "phoenix-testing",
                "--bin",
                "scale",
                "--",
            ])
            .arg("--phoenix")
            .arg(&phoenix)
            .args(options),
    )
}

/// `cargo xtask realistic DIR N`: writes a reference-shaped directory of N containers ([`realistic`]).
fn realistic_dir(args: &[String]) -> Result<(), String> {
    let [dir, containers] = args else {
        return Err("usage: cargo xtask realistic DIR CONTAINERS".into());
    };
    let containers: u32 = containers
        .parse()
        .map_err(|error| format!("{containers}: {error}"))?;
    realistic::write(Path::new(dir), containers)
}

/// Times of one measured command, over a few runs: wall seconds and peak resident MiB of each.
struct Measured {
    seconds: Vec<f64>,
    peak_mib: f64,
}

impl Measured {
    fn median(&self) -> f64 {
        let mut sorted = self.seconds.clone();
        sorted.sort_by(f64::total_cmp);
        sorted[sorted.len() / 2]
    }
}

/// Runs `program args` `runs` times under GNU time (`/usr/bin/time`), output discarded; fails if a run does.
fn measure(what: &str, program: &Path, args: &[&str], runs: usize) -> Result<Measured, String> {
    let mut measured = Measured {
        seconds: Vec::new(),
        peak_mib: 0.0,
    };
    for _ in 0..runs {
        measured.add(what, program, args)?;
    }
    Ok(measured)
}

impl Measured {
    /// One more run of `program args`.
    fn add(&mut self, what: &str, program: &Path, args: &[&str]) -> Result<(), String> {
        let report = root().join("target/bench/time.txt");
        let status = Command::new("/usr/bin/time")
            .arg("-f")
            .arg("%e %M")
            .arg("-o")
            .arg(&report)
            .arg(program)
            .args(args)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .map_err(|error| {
                format!("cannot run /usr/bin/time for {what}: {error} (apt-get install time)")
            })?;
        if !status.success() {
            return Err(format!("{what} failed ({status})"));
        }
        let text =
            std::fs::read_to_string(&report).map_err(|error| format!("{}: {error}", report.display()))?;
        let mut fields = text.split_whitespace();
        let seconds: f64 = fields
            .next()
            .and_then(|field| field.parse().ok())
            .unwrap_or_default();
        let kib: f64 = fields
            .next()
            .and_then(|field| field.parse().ok())
            .unwrap_or_default();
        self.seconds.push(seconds);
        self.peak_mib = self.peak_mib.max(kib / 1024.0);
        Ok(())
    }
}

/// `phoenix validate` and `phoenix plan --offline --output json` on reference-shaped directories of 1,000
/// and 10,000 containers ([`realistic`]), with ajv-cli on the LXC file against Phoenix's schema in the same
/// run when it is installed (`npm install --prefix target/ajv ajv-cli@5 ajv-formats@3`), as a ratio.
///
/// Phoenix and ajv run in turns, after one run of each that is not counted (the first run after a while
/// pays for the machine's page cache and memory), so that both see the same machine; the ratio is the
/// median of the pairs' ratios.
fn realistic_bench(phoenix: &Path) -> Result<(), String> {
    const RUNS: usize = 7;
    let ajv = root().join("target/ajv/node_modules/.bin/ajv");
    for containers in [1_000, 10_000] {
        let dir = root().join(format!("target/bench/realistic-{containers}"));
        let _ = std::fs::remove_dir_all(&dir);
        realistic::write(&dir, containers)?;
        let bytes: u64 = std::fs::read_dir(&dir)
            .map_err(|error| format!("{}: {error}", dir.display()))?
            .filter_map(|entry| entry.ok()?.metadata().ok())
            .map(|metadata| metadata.len())
            .sum();
        let config = dir.display().to_string();
        let schema = root()
            .join("schemas/phoenix_lxc_configs.schema.json")
            .display()
            .to_string();
        let data = dir.join("phoenix_lxc_configs.json").display().to_string();
        let ajv_args = [
            "validate",
            "--spec=draft2020",
            // Phoenix's schemas carry their own keywords (`x-phoenix-hint`).
            "--strict=false",
            "-c",
            "ajv-formats",
            "-s",
            &schema,
            "-d",
            &data,
        ];
        let validate_args = ["validate", "-c", &config];
        let mut validate = measure("phoenix validate", phoenix, &validate_args, 1)?;
        let mut checked = if ajv.exists() {
            Some(measure("ajv validate", &ajv, &ajv_args, 1)?)
        } else {
            None
        };
        validate.seconds.clear();
        if let Some(checked) = &mut checked {
            checked.seconds.clear();
        }
        for _ in 0..RUNS {
            validate.add("phoenix validate", phoenix, &validate_args)?;
            if let Some(checked) = &mut checked {
                checked.add("ajv validate", &ajv, &ajv_args)?;
            }
        }
        let plan = measure(
            "phoenix plan --offline",
            phoenix,
            &["plan", "--offline", "--output", "json", "-c", &config],
            3,
        )?;
        println!(
            "realistic {containers} containers ({:.1} MB of JSON): validate {:.2} s, {:.0} MiB; plan --offline --output json {:.2} s, {:.0} MiB",
            bytes as f64 / 1e6,
            validate.median(),
            validate.peak_mib,
            plan.median(),
            plan.peak_mib
        );
        match checked {
            Some(checked) => {
                let ratios = Measured {
                    seconds: validate
                        .seconds
                        .iter()
                        .zip(&checked.seconds)
                        .map(|(phoenix, ajv)| phoenix / ajv)
                        .collect(),
                    peak_mib: 0.0,
                };
                println!(
                    "  ajv-cli on the LXC file alone: {:.2} s, {:.0} MiB; Phoenix/ajv time {:.2} (median of {RUNS} pairs)",
                    checked.median(),
                    checked.peak_mib,
                    ratios.median()
                );
            }
            None => println!("  (ajv-cli is not installed in target/ajv: no comparison)"),
        }
    }
    Ok(())
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
    docs_check()?;
    shellcheck()?;
    run("cargo test", cargo().args(["test", "--workspace", "--locked"]))?;
    validate(&[])
}
