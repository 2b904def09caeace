//! `cargo xtask soak`: applies and re-applies an estate of containers against fakepve at real task speed,
//! with dropped connections, random 5xx answers and changes made by hand between runs, for a bounded time.
//!
//! Every run is the real `phoenix apply --yes --output json`. After each one the faults are lifted and
//! `phoenix plan --output json` says where things stand; the run is then one of:
//! - `converged`: it succeeded and the plan is empty;
//! - `reported`: it failed, and the report holds exactly: every resource the plan still changes was
//!   reported failed, skipped or not started, and every failed resource that Proxmox now has but did not
//!   have before the run names at least one step done;
//! - `MISREPORTED`: anything else (a success with changes left, a resource reported converged that is not,
//!   a failed create that claims nothing was written, an exit status or output that is not the contract).
//!
//! A last run without faults must converge. The exit status is 0 only if no run was misreported and the
//! estate converged; the figures go to standard output and to `target/soak/soak.json`.
//!
//! Options: `--phoenix PATH` (the binary), `--minutes N` (default 10), `--containers N` (default 50),
//! `--drop-rate R` (default 0.1), `--seed N`.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use phoenix_testing::{FakePve, workspace};
use serde_json::{Value, json};

/// The template every other container is cloned from.
const TEMPLATE: u32 = 900;
/// The first clone's ID.
const FIRST_CLONE: u32 = 201;

struct Options {
    phoenix: PathBuf,
    minutes: u64,
    containers: u32,
    drop_rate: f64,
    seed: u64,
}

fn options() -> Result<Options, String> {
    let mut options = Options {
        phoenix: workspace().join("target/debug/phoenix"),
        minutes: 10,
        containers: 50,
        drop_rate: 0.1,
        seed: u64::from(std::process::id()),
    };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args.next().ok_or_else(|| format!("{flag} needs a value"))?;
        let bad = |error: &dyn std::fmt::Display| format!("{flag} {value}: {error}");
        match flag.as_str() {
            "--phoenix" => options.phoenix = PathBuf::from(&value),
            "--minutes" => options.minutes = value.parse().map_err(|error| bad(&error))?,
            "--containers" => options.containers = value.parse().map_err(|error| bad(&error))?,
            "--drop-rate" => options.drop_rate = value.parse().map_err(|error| bad(&error))?,
            "--seed" => options.seed = value.parse().map_err(|error| bad(&error))?,
            _ => return Err(format!("unknown option {flag}")),
        }
    }
    if !(2..=500).contains(&options.containers) {
        return Err("--containers must be between 2 and 500".into());
    }
    Ok(options)
}

/// A small deterministic generator (xorshift64*), so that a seed replays a soak.
struct Random(u64);

impl Random {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, bound: u64) -> u64 {
        self.next() % bound
    }
}

/// The configuration directory: one template and its clones, some with firewall rules.
fn write_config(dir: &Path, containers: u32) -> Result<(), String> {
    let hypervisor = json!({
        "proxmox": {
            "endpoint": "https://127.0.0.1:8006",
            "nodes": ["pve1"],
            "token_id": "phoenix@pve!phoenix",
            "token_secret": { "env": "PHOENIX_PVE_TOKEN_SECRET" }
        },
        "proxmox_storages": [
            { "id": "local", "content": ["vztmpl"] },
            { "id": "local-lvm", "content": ["rootdir", "images"] }
        ]
    });
    let mut guests = serde_json::Map::new();
    guests.insert(
        TEMPLATE.to_string(),
        json!({
            "name": "soak-base",
            "template": "local:vztmpl/debian-12-standard_12.7-1_amd64.tar.zst",
            "storage_pool": "local-lvm",
            "storage_size_gb": 8,
            "cores": 2,
            "memory_mb": 1024,
            "network_config": { "ip": "10.9.0.2/16", "gw": "10.9.0.1" },
            "template_snapshot_name": "golden"
        }),
    );
    for index in 0..containers - 1 {
        let vmid = FIRST_CLONE + index;
        let mut guest = json!({
            "name": format!("soak-{vmid}"),
            "clone_from_ctid": TEMPLATE.to_string(),
            "storage_pool": "local-lvm",
            "cores": 1 + index % 2,
            "memory_mb": 512 * (1 + index % 3),
            "network_config": { "ip": format!("10.9.{}.{}/16", 1 + index / 200, 10 + index % 200) }
        });
        if index % 5 == 0 {
            guest["firewall"] = json!({
                "enabled": true,
                "rules": [{ "type": "in", "action": "ACCEPT", "proto": "tcp", "port": "22",
                            "source": "10.9.0.0/16", "comment": "SSH from the soak network" }]
            });
        }
        guests.insert(vmid.to_string(), guest);
    }
    phoenix_testing::fixture::write_containers(dir, &hypervisor, guests)
}

struct Outcome {
    status: Option<i32>,
    stdout: String,
    stderr: String,
    elapsed: Duration,
}

fn phoenix(options: &Options, fake: &FakePve, dir: &Path, args: &[&str]) -> Result<Outcome, String> {
    let began = Instant::now();
    let output = fake
        .phoenix(&options.phoenix)
        .args(args)
        .arg("--config")
        .arg(dir)
        .env("XDG_STATE_HOME", dir.join("state"))
        .output()
        .map_err(|error| format!("cannot run {}: {error}", options.phoenix.display()))?;
    Ok(Outcome {
        status: output.status.code(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        elapsed: began.elapsed(),
    })
}

/// The containers fakepve has.
async fn guests(fake: &FakePve) -> BTreeSet<String> {
    let ids = fake.exec("result = [ct.vmid for ct in pve.cts]").await;
    ids.as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_u64)
        .map(|vmid| format!("lxc/{vmid}"))
        .collect()
}

/// Injects this run's faults: dropped connections, and a few one-off 5xx answers on reads and writes.
async fn break_things(fake: &FakePve, random: &mut Random, options: &Options) -> Vec<String> {
    let clones = u64::from(options.containers - 1);
    let mut faults = Vec::new();
    for _ in 0..4 {
        let vmid = u64::from(FIRST_CLONE) + random.below(clones);
        let (method, suffix) = match random.below(6) {
            0 => ("GET", "/cluster/resources".to_owned()),
            1 => ("GET", "/version".to_owned()),
            2 => ("GET", format!("/lxc/{vmid}/config")),
            3 => ("PUT", format!("/lxc/{vmid}/config")),
            4 => ("POST", format!("/lxc/{vmid}/status/start")),
            _ => ("POST", format!("/lxc/{TEMPLATE}/clone")),
        };
        let status = [500, 502, 503][usize::try_from(random.below(3)).expect("small")];
        fake.exec(&format!(
            "pve.fail('{method}', '{suffix}', {status}, 'soak: injected {status}', times=1)"
        ))
        .await;
        faults.push(format!("{status} on {method} {suffix}"));
    }
    let seed = random.next() % 1_000_000;
    fake.exec(&format!(
        "pve.flaky_network(drop_rate={}, seed={seed})",
        options.drop_rate
    ))
    .await;
    faults
}

async fn heal(fake: &FakePve) {
    fake.exec("pve.flaky_network(0.0, 0.0); pve.failures.clear()")
        .await;
}

/// Changes made by hand between runs: a container removed, another's memory changed.
async fn drift(fake: &FakePve, random: &mut Random, options: &Options) -> Vec<String> {
    let clones = u64::from(options.containers - 1);
    let removed = u64::from(FIRST_CLONE) + random.below(clones);
    let edited = u64::from(FIRST_CLONE) + random.below(clones);
    fake.exec(&format!(
        "ct = pve.guest({removed})\nif ct is not None and ct.lock is None: pve._drop(ct)\n\
         ct = pve.guest({edited})\nif ct is not None and ct.lock is None: ct.config['memory'] = 777"
    ))
    .await;
    vec![
        format!("removed lxc/{removed}"),
        format!("memory of lxc/{edited} set to 777"),
    ]
}

/// The addresses with changes in a `phoenix plan --output json` document.
fn pending(plan: &Value) -> Result<BTreeSet<String>, String> {
    let resources = plan["resources"]
        .as_array()
        .ok_or("the plan document has no resources")?;
    Ok(resources
        .iter()
        .filter(|resource| resource["action"] != "none")
        .filter_map(|resource| resource["address"].as_str().map(str::to_owned))
        .collect())
}

/// Judges one apply against the plan made after it, without faults.
fn verdict(
    apply: &Outcome,
    report: &Value,
    after: &BTreeSet<String>,
    before: &BTreeSet<String>,
    now: &BTreeSet<String>,
) -> Vec<String> {
    let mut wrong = Vec::new();
    let Some(lines) = report["resources"].as_array() else {
        wrong.push("no report in the apply document".to_owned());
        return wrong;
    };
    match apply.status {
        Some(0) if !after.is_empty() => wrong.push(format!("succeeded, but these still differ: {after:?}")),
        Some(0 | 1) => {}
        status => wrong.push(format!("exit status {status:?}")),
    }
    for line in lines {
        let address = line["address"].as_str().unwrap_or_default();
        let status = line["status"].as_str().unwrap_or_default();
        let settled = matches!(status, "changed" | "unchanged");
        if settled && after.contains(address) {
            wrong.push(format!(
                "{address} reported {status}, but the next plan changes it"
            ));
        }
        if status == "failed" && !before.contains(address) && now.contains(address) {
            let done = line["steps"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|step| step["state"] == "done" || step["state"] == "running");
            if !done {
                wrong.push(format!(
                    "{address} failed after Proxmox created it, and its report names no step done"
                ));
            }
        }
    }
    wrong
}

#[derive(Default)]
struct Tally {
    runs: usize,
    converged: usize,
    reported: usize,
    misreported: usize,
    failed_resources: usize,
    longest: Duration,
    rows: Vec<Value>,
}

async fn soak(options: &Options) -> Result<bool, String> {
    let soak_dir = workspace().join("target/soak");
    std::fs::create_dir_all(&soak_dir).map_err(|error| format!("{}: {error}", soak_dir.display()))?;
    let log = std::fs::File::create(soak_dir.join("fakepve.log"))
        .map_err(|error| format!("fakepve.log: {error}"))?;
    let Some(fake) = FakePve::start_with_log(log).await else {
        return Err("fakepve is not installed".into());
    };
    // Real task speed, with Proxmox's own durations for what containers do.
    fake.exec("pve.time_scale = 1; pve.ct_secs.update(clone=2, create=4, resize=1, snapshot=1, template=1)")
        .await;
    let dir = soak_dir.join("config");
    let _ = std::fs::remove_dir_all(&dir);
    write_config(&dir, options.containers)?;
    let mut random = Random(options.seed | 1);
    let deadline = Instant::now() + Duration::from_secs(options.minutes * 60);
    let mut tally = Tally::default();
    let began = Instant::now();
    println!(
        "soak: {} containers, {:.0}% dropped connections and 4 random 5xx per run, for {} min (seed {})",
        options.containers,
        options.drop_rate * 100.0,
        options.minutes,
        options.seed
    );
    println!(
        "{:>4} {:>7} {:>5} {:>8} {:>7} {:>8}  verdict",
        "run", "secs", "exit", "changed", "failed", "skipped"
    );
    while Instant::now() < deadline {
        let drifted = if tally.runs > 0 {
            drift(&fake, &mut random, options).await
        } else {
            Vec::new()
        };
        let before = guests(&fake).await;
        let faults = break_things(&fake, &mut random, options).await;
        let apply = phoenix(options, &fake, &dir, &["apply", "--yes", "--output", "json"])?;
        heal(&fake).await;
        let now = guests(&fake).await;
        let plan = phoenix(options, &fake, &dir, &["plan", "--output", "json"])?;
        let plan: Value = serde_json::from_str(&plan.stdout).map_err(|error| {
            format!(
                "the plan after run {} is not JSON ({error}): {}",
                tally.runs + 1,
                plan.stderr
            )
        })?;
        let after = pending(&plan)?;
        tally.runs += 1;
        tally.longest = tally.longest.max(apply.elapsed);
        let (report, wrong) = match serde_json::from_str::<Value>(&apply.stdout) {
            Ok(document) => {
                let report = document["report"].clone();
                let wrong = verdict(&apply, &report, &after, &before, &now);
                (report, wrong)
            }
            Err(error) => (
                Value::Null,
                vec![format!("stdout is not one JSON document: {error}")],
            ),
        };
        let count = |status: &str| {
            report["resources"].as_array().map_or(0, |lines| {
                lines.iter().filter(|line| line["status"] == status).count()
            })
        };
        let verdict = if !wrong.is_empty() {
            tally.misreported += 1;
            "MISREPORTED"
        } else if apply.status == Some(0) {
            tally.converged += 1;
            "converged"
        } else {
            tally.reported += 1;
            "reported"
        };
        tally.failed_resources += count("failed");
        println!(
            "{:>4} {:>7.1} {:>5} {:>8} {:>7} {:>8}  {verdict}",
            tally.runs,
            apply.elapsed.as_secs_f64(),
            apply
                .status
                .map_or_else(|| "signal".to_owned(), |code| code.to_string()),
            count("changed"),
            count("failed"),
            count("skipped") + count("not_started"),
        );
        for problem in &wrong {
            println!("       {problem}");
        }
        if !wrong.is_empty() {
            let tail: String = apply.stderr.lines().rev().take(20).collect::<Vec<_>>().join("\n");
            println!("       stderr (last lines, newest first):\n{tail}");
        }
        let errors: Vec<String> = report["resources"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|line| line["status"] == "failed")
            .map(|line| {
                format!(
                    "{}: {}",
                    line["address"].as_str().unwrap_or("?"),
                    line["error"].as_str().unwrap_or("?")
                )
            })
            .collect();
        for error in &errors {
            println!("       failed {error}");
        }
        tally.rows.push(json!({
            "run": tally.runs, "seconds": apply.elapsed.as_secs_f64(), "exit": apply.status,
            "changed": count("changed"), "failed": count("failed"), "verdict": verdict,
            "faults": faults, "drift": drifted, "problems": wrong, "errors": errors,
        }));
    }
    // The last run without faults must converge, and the plan after it must be empty.
    let last = phoenix(options, &fake, &dir, &["apply", "--yes", "--output", "json"])?;
    let plan = phoenix(options, &fake, &dir, &["plan", "--output", "json"])?;
    let left = serde_json::from_str(&plan.stdout)
        .map_err(|error| format!("the last plan is not JSON ({error}): {}", plan.stderr))
        .and_then(|plan: Value| pending(&plan))?;
    let converged = last.status == Some(0) && left.is_empty();
    println!(
        "soak: {} runs in {:.0} s: {} converged, {} failed and exactly reported ({} failed resources), {} misreported; longest run {:.1} s; a clean run after them {}",
        tally.runs,
        began.elapsed().as_secs_f64(),
        tally.converged,
        tally.reported,
        tally.failed_resources,
        tally.misreported,
        tally.longest.as_secs_f64(),
        if converged {
            "converged"
        } else {
            "DID NOT converge"
        }
    );
    if !converged {
        println!(
            "last apply: exit {:?}; still differing: {left:?}\n{}",
            last.status, last.stderr
        );
    }
    let summary = json!({
        "containers": options.containers, "drop_rate": options.drop_rate, "minutes": options.minutes,
        "seed": options.seed, "runs": tally.runs, "converged": tally.converged, "reported": tally.reported,
        "misreported": tally.misreported, "failed_resources": tally.failed_resources,
        "longest_run_seconds": tally.longest.as_secs_f64(), "final_run_converged": converged,
        "rows": tally.rows,
    });
    let path = soak_dir.join("soak.json");
    std::fs::write(&path, serde_json::to_string_pretty(&summary).expect("serialises"))
        .map_err(|error| format!("{}: {error}", path.display()))?;
    Ok(converged && tally.misreported == 0)
}

fn main() -> ExitCode {
    let options = match options() {
        Ok(options) => options,
        Err(message) => {
            eprintln!("soak: {message}");
            return ExitCode::from(2);
        }
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime starts");
    match runtime.block_on(soak(&options)) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(message) => {
            eprintln!("soak: {message}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn apply(status: i32) -> Outcome {
        Outcome {
            status: Some(status),
            stdout: String::new(),
            stderr: String::new(),
            elapsed: Duration::ZERO,
        }
    }

    fn set(addresses: &[&str]) -> BTreeSet<String> {
        addresses.iter().map(|address| (*address).to_owned()).collect()
    }

    #[test]
    fn a_failure_whose_resources_are_reported_failed_is_exact() {
        let report = json!({"resources": [
            {"address": "lxc/201", "status": "changed"},
            {"address": "lxc/202", "status": "failed", "steps": [{"what": "clone", "state": "done"}]},
            {"address": "lxc/203", "status": "skipped"},
        ]});
        let wrong = verdict(
            &apply(1),
            &report,
            &set(&["lxc/202", "lxc/203"]),
            &set(&[]),
            &set(&["lxc/201", "lxc/202"]),
        );
        assert!(wrong.is_empty(), "{wrong:?}");
    }

    #[test]
    fn a_success_with_changes_left_is_misreported() {
        let report = json!({"resources": [{"address": "lxc/201", "status": "changed"}]});
        let wrong = verdict(
            &apply(0),
            &report,
            &set(&["lxc/201"]),
            &set(&[]),
            &set(&["lxc/201"]),
        );
        assert_eq!(wrong.len(), 2, "{wrong:?}");
    }

    #[test]
    fn a_failed_create_that_names_no_step_is_misreported() {
        let report = json!({"resources": [{"address": "lxc/202", "status": "failed"}]});
        let wrong = verdict(
            &apply(1),
            &report,
            &set(&["lxc/202"]),
            &set(&[]),
            &set(&["lxc/202"]),
        );
        assert_eq!(wrong.len(), 1, "{wrong:?}");
        assert!(wrong[0].contains("names no step done"), "{wrong:?}");
        // It was there before the run: nothing says this run wrote anything.
        assert!(
            verdict(
                &apply(1),
                &report,
                &set(&["lxc/202"]),
                &set(&["lxc/202"]),
                &set(&["lxc/202"])
            )
            .is_empty()
        );
    }

    #[test]
    fn an_exit_status_outside_the_contract_is_misreported() {
        let report = json!({"resources": []});
        assert_eq!(
            verdict(&apply(101), &report, &set(&[]), &set(&[]), &set(&[])).len(),
            1
        );
    }
}
