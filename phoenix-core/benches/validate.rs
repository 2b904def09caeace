//! Benchmark: full validation of a generated estate of 10,000 guests.
//!
//! Reports the time of `validate` (scan into a tape, schema, typed, semantic checks) over several runs and
//! the peak resident memory of the process. Targets on the 2-core machines: under 300 ms and under 200 MB.
//! Run with `cargo bench -p phoenix-core --bench validate` or `cargo xtask bench`.

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use phoenix_core::{CheckOptions, FileKind, SourceFile, validate};

const CONTAINERS: u32 = 8_000;
const VMS: u32 = 2_000;
const RUNS: usize = 7;

fn main() {
    let files = generate();
    let bytes: usize = files.iter().map(|(_, text)| text.len()).sum();
    let mut timings = Vec::with_capacity(RUNS);
    for _ in 0..RUNS {
        let sources: Vec<SourceFile> = files
            .iter()
            .map(|(kind, text)| SourceFile::new(*kind, kind.file_name(), text.as_str()))
            .collect();
        let started = Instant::now();
        let validation = validate(sources, &CheckOptions::default());
        timings.push(started.elapsed());
        assert!(
            !validation.has_errors(),
            "the generated estate is valid: {:?}",
            &validation.problems()[..1]
        );
        assert_eq!(
            validation.estate().map(|estate| estate.guests().len()),
            Some((CONTAINERS + VMS) as usize)
        );
    }
    timings.sort();
    let median = timings[RUNS / 2];
    let peak = peak_resident_mib();
    println!(
        "validate: {} guests, {:.1} MiB of JSON in 4 files",
        CONTAINERS + VMS,
        bytes as f64 / 1048576.0
    );
    println!(
        "validate: median {} ms, min {} ms, max {} ms over {RUNS} runs (target < 300 ms)",
        millis(median),
        millis(timings[0]),
        millis(timings[RUNS - 1])
    );
    match peak {
        Some(peak) => println!("validate: peak resident memory {peak:.0} MiB (target < 200 MiB)"),
        None => println!("validate: peak resident memory unavailable (no /proc/self/status)"),
    }
}

fn millis(duration: Duration) -> u128 {
    duration.as_millis()
}

/// Peak resident set size of this process (VmHWM), in MiB.
fn peak_resident_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|line| line.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

/// An estate shaped like real ones: template chains, dependencies, firewall rules, unique addresses.
fn generate() -> Vec<(FileKind, String)> {
    let hypervisor = r#"{
  "proxmox": { "endpoint": "https://pve1:8006", "nodes": ["pve1"], "token_id": "phoenix@pve!bench",
               "token_secret": { "env": "PHOENIX_PVE_TOKEN_SECRET" } },
  "network": { "interfaces": [{ "name": "vmbr0", "address": "10.0.0.2/8", "gateway": "10.0.0.1" }] },
  "zfs": { "pools": [{ "name": "tank", "raid_level": "mirror", "disks": ["/dev/sda", "/dev/sdb"] }],
           "datasets": [{ "name": "guests", "pool": "tank", "proxmox_storage_type": "zfspool" }] },
  "proxmox_storages": [{ "id": "local", "content": ["vztmpl", "import"] }]
}"#
    .to_owned();

    let mut lxc = String::from("{\n  \"lxc_configs\": {\n");
    for index in 0..CONTAINERS {
        let ctid = 1000 + index;
        let origin = if index % 100 == 0 {
            r#""template": "local:vztmpl/debian-12-standard_12.7-1_amd64.tar.zst", "template_snapshot_name": "golden","#
                .to_owned()
        } else {
            format!(r#""clone_from_ctid": "{}","#, 1000 + index / 100 * 100)
        };
        let dependencies = if index % 100 > 1 {
            format!(r#""dependencies": ["{}"],"#, ctid - 1)
        } else {
            String::new()
        };
        let separator = if index + 1 == CONTAINERS { "" } else { "," };
        write!(
            lxc,
            r#"    "{ctid}": {{
      "name": "ct-{ctid}", {origin} {dependencies}
      "memory_mb": 2048, "cores": 2, "storage_pool": "tank-guests", "storage_size_gb": 16,
      "network_config": {{ "name": "eth0", "bridge": "vmbr0", "ip": "{ip}/8", "gw": "10.0.0.1", "nameservers": "10.0.0.1" }},
      "mac_address": "{mac}", "unprivileged": true, "features": ["base_setup", "docker"],
      "start_at_boot": true, "boot_order": 2, "boot_delay": 5,
      "traefik_service": {{ "name": "svc-{ctid}", "port": 8080 }},
      "mount_points": [{{ "host_path": "/tank/data/{ctid}", "container_path": "/data" }}],
      "firewall": {{ "enabled": true, "rules": [
        {{ "type": "in", "action": "ACCEPT", "proto": "tcp", "port": "80,443", "source": "10.0.0.0/8" }},
        {{ "type": "in", "action": "ACCEPT", "proto": "icmp", "source": "10.0.0.0/8" }},
        {{ "type": "out", "action": "ACCEPT", "proto": "udp", "port": "53", "dest": "10.0.0.1" }}
      ] }}
    }}{separator}
"#,
            ip = address(ctid),
            mac = mac(ctid),
        )
        .expect("writing to a String cannot fail");
    }
    lxc.push_str("  }\n}\n");

    let mut vm = String::from(
        "{\n  \"vm_defaults\": { \"cores\": 2, \"memory_mb\": 4096, \"storage_pool\": \"tank-guests\" },\n  \"vms\": [\n",
    );
    for index in 0..VMS {
        let vmid = 20_000 + index;
        let origin = if index % 100 == 0 {
            r#""is_template": true, "template_image": "noble-server-cloudimg-amd64.img", "template_snapshot_name": "clean","#
                .to_owned()
        } else {
            format!(r#""clone_from_vmid": {},"#, 20_000 + index / 100 * 100)
        };
        let separator = if index + 1 == VMS { "" } else { "," };
        write!(
            vm,
            r#"    {{ "vmid": {vmid}, "name": "vm-{vmid}", {origin} "dependencies": ["{dependency}"],
      "network_config": {{ "ip": "{ip}/8", "gw": "10.0.0.1", "nameserver": "10.0.0.1" }},
      "mac_address": "{mac}", "features": ["base_setup", "docker"], "start_at_boot": true,
      "firewall": {{ "enabled": true, "rules": [{{ "type": "in", "action": "ACCEPT", "proto": "tcp", "port": "22" }}] }} }}{separator}
"#,
            dependency = 1000 + index % CONTAINERS,
            ip = address(vmid),
            mac = mac(vmid),
        )
        .expect("writing to a String cannot fail");
    }
    vm.push_str("  ]\n}\n");

    vec![
        (FileKind::Hypervisor, hypervisor),
        (FileKind::Lxc, lxc),
        (FileKind::Vm, vm),
    ]
}

fn address(id: u32) -> String {
    format!("10.{}.{}.{}", (id >> 16) & 0xff, (id >> 8) & 0xff, id & 0xff)
}

fn mac(id: u32) -> String {
    format!(
        "BC:24:11:{:02X}:{:02X}:{:02X}",
        (id >> 16) & 0xff,
        (id >> 8) & 0xff,
        id & 0xff
    )
}
