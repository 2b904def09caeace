//! `cargo xtask bench` (its cluster part): the release `phoenix` against fakepve with three nodes and an
//! estate of N containers (1,000 by default): per node a template with a snapshot and its clones, every
//! tenth clone with a firewall rule.
//!
//! It measures, and asserts nothing about time:
//! - applying the estate: wall time, requests, and the ratio of the executor's wall time to a lower bound
//!   of any schedule under the same limits (the longest dependency chain; all work over `--parallelism`;
//!   each node's work over `--per-node`; each storage's creations over `--per-storage`), computed from
//!   the durations the apply report gives each resource;
//! - the no-op plan that follows: wall time and requests by kind, against the floor (one cluster read,
//!   one config read per guest, and the reads declared features need: a snapshot list for each template
//!   with a snapshot, firewall options and rules for each guest with a firewall).
//!
//! The figures go to standard output and to `target/scale/scale.json`. The exit status is 0 when the apply
//! succeeded and the plan after it was empty.
//!
//! Options: `--phoenix PATH` (default `target/release/phoenix`), `--guests N` (default 1000), `--time-scale
//! F` (fakepve's task durations as a fraction of Proxmox's; default 0.05).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use phoenix_testing::{FakePve, workspace};
use serde_json::{Value, json};

/// The executor's default limits, which the runs use.
const PARALLELISM: f64 = 8.0;
const PER_NODE: f64 = 4.0;
const PER_STORAGE: f64 = 2.0;
const NODES: u32 = 3;
/// The first clone's ID; templates are 901, 902, 903.
const FIRST_CLONE: u32 = 1000;

struct Options {
    phoenix: PathBuf,
    guests: u32,
    time_scale: f64,
}

fn options() -> Result<Options, String> {
    let mut options = Options {
        phoenix: workspace().join("target/release/phoenix"),
        guests: 1000,
        time_scale: 0.05,
    };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args.next().ok_or_else(|| format!("{flag} needs a value"))?;
        let bad = |error: &dyn std::fmt::Display| format!("{flag} {value}: {error}");
        match flag.as_str() {
            "--phoenix" => options.phoenix = PathBuf::from(&value),
            "--guests" => options.guests = value.parse().map_err(|error| bad(&error))?,
            "--time-scale" => options.time_scale = value.parse().map_err(|error| bad(&error))?,
            _ => return Err(format!("unknown option {flag}")),
        }
    }
    if options.guests < NODES * 2 {
        return Err(format!("--guests must be at least {}", NODES * 2));
    }
    Ok(options)
}

/// One declared container, as the bound needs it.
struct Guest {
    node: String,
    source: Option<u32>,
    firewall: bool,
    snapshot: bool,
}

/// The estate: a template per node, then clones spread over the nodes, each beside its template.
fn estate(guests: u32) -> BTreeMap<u32, Guest> {
    let mut estate = BTreeMap::new();
    for node in 1..=NODES {
        estate.insert(
            900 + node,
            Guest {
                node: format!("pve{node}"),
                source: None,
                firewall: false,
                snapshot: true,
            },
        );
    }
    for index in 0..guests - NODES {
        let node = 1 + index % NODES;
        estate.insert(
            FIRST_CLONE + index,
            Guest {
                node: format!("pve{node}"),
                source: Some(900 + node),
                firewall: index % 10 == 0,
                snapshot: false,
            },
        );
    }
    estate
}

fn write_config(dir: &Path, estate: &BTreeMap<u32, Guest>) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|error| format!("{}: {error}", dir.display()))?;
    let nodes: Vec<String> = (1..=NODES).map(|node| format!("pve{node}")).collect();
    let hypervisor = json!({
        "proxmox": { "endpoint": "https://127.0.0.1:8006", "nodes": nodes },
        "proxmox_storages": [
            { "id": "local", "content": ["vztmpl"] },
            { "id": "local-lvm", "content": ["rootdir", "images"] }
        ]
    });
    let mut containers = serde_json::Map::new();
    for (id, guest) in estate {
        let mut entry = json!({
            "name": format!("ct{id}"),
            "node": guest.node,
            "storage_pool": "local-lvm",
            "memory_mb": 512,
            "network_config": { "ip": format!("10.{}.{}.{}/8", id / 65536, (id / 256) % 256, id % 256) }
        });
        match guest.source {
            Some(source) => entry["clone_from_ctid"] = json!(source.to_string()),
            None => {
                entry["template"] = json!("local:vztmpl/debian-12-standard_12.7-1_amd64.tar.zst");
                entry["storage_size_gb"] = json!(4);
            }
        }
        if guest.snapshot {
            entry["template_snapshot_name"] = json!("golden");
        }
        if guest.firewall {
            entry["firewall"] = json!({
                "enabled": true,
                "rules": [{ "type": "in", "action": "ACCEPT", "proto": "tcp", "port": "22" }]
            });
        }
        containers.insert(id.to_string(), entry);
    }
    phoenix_testing::fixture::write_containers(dir, &hypervisor, containers)
}

/// A run of phoenix: its exit status, standard output, wall time and the requests fakepve answered.
struct Run {
    status: Option<i32>,
    stdout: String,
    stderr: String,
    elapsed: Duration,
    requests: Vec<(String, String)>,
}

async fn phoenix(options: &Options, fake: &FakePve, dir: &Path, args: &[&str]) -> Result<Run, String> {
    let before = fake.requests().await.len();
    let began = Instant::now();
    let output = fake
        .phoenix(&options.phoenix)
        .args(args)
        .arg("--config")
        .arg(dir)
        .env("XDG_STATE_HOME", dir.join("state"))
        .output()
        .map_err(|error| format!("cannot run {}: {error}", options.phoenix.display()))?;
    let elapsed = began.elapsed();
    let requests = fake
        .requests()
        .await
        .into_iter()
        .skip(before)
        .map(|(method, path, _)| (method, path))
        .collect();
    Ok(Run {
        status: output.status.code(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        elapsed,
        requests,
    })
}

/// The lower bound of any schedule of the apply under the limits, from each resource's duration (ms).
fn lower_bound(estate: &BTreeMap<u32, Guest>, durations: &BTreeMap<u32, f64>) -> BTreeMap<&'static str, f64> {
    let duration = |id: &u32| durations.get(id).copied().unwrap_or(0.0);
    let chain = estate
        .iter()
        .map(|(id, guest)| duration(id) + guest.source.as_ref().map_or(0.0, duration))
        .fold(0.0, f64::max);
    let total: f64 = estate.keys().map(duration).sum();
    let mut per_node: BTreeMap<&str, f64> = BTreeMap::new();
    for (id, guest) in estate {
        *per_node.entry(guest.node.as_str()).or_default() += duration(id);
    }
    let busiest = per_node.values().copied().fold(0.0, f64::max);
    // Every resource here is a creation on its node's `local-lvm`.
    BTreeMap::from([
        ("longest chain", chain),
        ("all work / parallelism", total / PARALLELISM),
        ("busiest node / per-node", busiest / PER_NODE),
        ("busiest storage / per-storage", busiest / PER_STORAGE),
    ])
}

/// The kind of a request, for the no-op plan's tally.
fn request_kind(method: &str, path: &str) -> String {
    let path = path.trim_start_matches("/api2/json");
    let kind = if path == "/cluster/resources" {
        "cluster resources"
    } else if path.ends_with("/config") {
        "guest config"
    } else if path.ends_with("/snapshot") {
        "snapshot list"
    } else if path.ends_with("/firewall/rules") {
        "firewall rules"
    } else if path.ends_with("/firewall/options") {
        "firewall options"
    } else if path.ends_with("/access/ticket") {
        "login"
    } else {
        return format!("{method} {path}");
    };
    format!("{method} {kind}")
}

async fn scale(options: &Options) -> Result<bool, String> {
    let scale_dir = workspace().join("target/scale");
    std::fs::create_dir_all(&scale_dir).map_err(|error| format!("{}: {error}", scale_dir.display()))?;
    let log = std::fs::File::create(scale_dir.join("fakepve.log"))
        .map_err(|error| format!("fakepve.log: {error}"))?;
    let Some(fake) = FakePve::start_with_log(log).await else {
        return Err("fakepve is not installed".into());
    };
    fake.exec(&format!(
        "pve.max_requests = 10**8\npve.add_node('pve2')\npve.add_node('pve3')\npve.time_scale = {}\n\
         pve.ct_secs.update(clone=2, create=4, resize=1, snapshot=1, template=1)",
        options.time_scale
    ))
    .await;
    let dir = scale_dir.join("config");
    let _ = std::fs::remove_dir_all(&dir);
    let estate = estate(options.guests);
    write_config(&dir, &estate)?;
    println!(
        "scale: {} containers on {NODES} nodes ({} with a firewall), fakepve tasks at {}x Proxmox's durations",
        estate.len(),
        estate.values().filter(|guest| guest.firewall).count(),
        options.time_scale
    );

    let apply = phoenix(options, &fake, &dir, &["apply", "--yes", "--output", "json"]).await?;
    let document: Value = serde_json::from_str(&apply.stdout)
        .map_err(|error| format!("the apply printed no JSON document ({error}):\n{}", apply.stderr))?;
    let report = &document["report"];
    let executor_ms = report["elapsed_ms"].as_f64().unwrap_or(0.0);
    let durations: BTreeMap<u32, f64> = report["resources"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|line| {
            let id = line["address"].as_str()?.strip_prefix("lxc/")?.parse().ok()?;
            Some((id, line["duration_ms"].as_f64()?))
        })
        .collect();
    let bounds = lower_bound(&estate, &durations);
    let bound = bounds.values().copied().fold(0.0, f64::max);
    let applied = apply.status == Some(0);
    println!(
        "\napply: exit {:?}, {:.1} s wall, {} requests",
        apply.status,
        apply.elapsed.as_secs_f64(),
        apply.requests.len()
    );
    println!(
        "  executor {:.1} s; lower bound of any schedule {:.1} s; ratio {:.2}",
        executor_ms / 1000.0,
        bound / 1000.0,
        executor_ms / bound.max(1.0)
    );
    for (what, ms) in &bounds {
        println!("    {what:32} {:8.1} s", ms / 1000.0);
    }

    let plan = phoenix(options, &fake, &dir, &["plan", "--detailed-exitcode"]).await?;
    let mut tally: BTreeMap<String, usize> = BTreeMap::new();
    for (method, path) in &plan.requests {
        *tally.entry(request_kind(method, path)).or_default() += 1;
    }
    let floor = 1
        + estate.len()
        + estate.values().filter(|guest| guest.snapshot).count()
        + 2 * estate.values().filter(|guest| guest.firewall).count();
    let empty = plan.status == Some(0);
    println!(
        "\nno-op plan: exit {:?}, {:.2} s wall, {} requests (floor {floor}, ratio {:.2})",
        plan.status,
        plan.elapsed.as_secs_f64(),
        plan.requests.len(),
        plan.requests.len() as f64 / floor as f64
    );
    for (kind, count) in &tally {
        println!("    {kind:40} {count:6}");
    }
    let figures = json!({
        "guests": estate.len(),
        "nodes": NODES,
        "time_scale": options.time_scale,
        "apply": {
            "exit": apply.status,
            "wall_s": apply.elapsed.as_secs_f64(),
            "requests": apply.requests.len(),
            "executor_s": executor_ms / 1000.0,
            "lower_bound_s": bound / 1000.0,
            "bounds_s": bounds.iter().map(|(what, ms)| (what.to_string(), json!(ms / 1000.0))).collect::<serde_json::Map<_, _>>(),
        },
        "noop_plan": {
            "exit": plan.status,
            "wall_s": plan.elapsed.as_secs_f64(),
            "requests": plan.requests.len(),
            "floor": floor,
            "by_kind": tally,
        },
    });
    let path = scale_dir.join("scale.json");
    std::fs::write(&path, serde_json::to_string_pretty(&figures).expect("serialises"))
        .map_err(|error| format!("{}: {error}", path.display()))?;
    if !applied {
        eprintln!("the apply failed:\n{}", apply.stderr);
    }
    if !empty {
        eprintln!(
            "the plan after the apply is not empty:\n{}{}",
            plan.stdout, plan.stderr
        );
    }
    Ok(applied && empty)
}

fn main() -> ExitCode {
    let options = match options() {
        Ok(options) => options,
        Err(error) => {
            eprintln!("scale: {error}");
            return ExitCode::from(2);
        }
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime starts");
    match runtime.block_on(scale(&options)) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(error) => {
            eprintln!("scale: {error}");
            ExitCode::FAILURE
        }
    }
}
