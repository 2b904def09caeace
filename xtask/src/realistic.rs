//! Configuration directories shaped like the earlier version's real ones, at any size, for `cargo xtask
//! bench`: containers modelled on its richest (a gateway-like service cloned from a template chain, with
//! features, seven firewall rules, three bind mounts, an id map, raw LXC and pct options, a Traefik service,
//! dependencies), a VM template with clones (a Portainer server and two agents), a stack per hundred
//! containers on the agents (compose file, variables with a secret, Traefik labels, a firewall rule), and
//! the host that declares their storage. About 3.7 KB of JSON per container.

use std::path::Path;

use serde_json::{Value, json};

/// Containers before the clones: a base template, and a template cloned from it.
const BASE: u32 = 900;
const MIDDLE: u32 = 901;
/// The first clone's CTID.
const FIRST: u32 = 10_000;

/// Writes the four files of an estate of `containers` containers (and a few VMs) into `dir`.
pub(crate) fn write(dir: &Path, containers: u32) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|error| format!("{}: {error}", dir.display()))?;
    let hypervisor = json!({
        "domain_name": "phoenix.example",
        "proxmox": { "endpoint": "https://10.0.0.13:8006", "nodes": ["pve1"] },
        "portainer_api": { "admin_user": "admin",
                           "admin_password": { "env": "PHOENIX_PORTAINER_PASSWORD" },
                           "portainer_hostname": "portainer.phoenix.example" },
        "proxmox_storages": [
            { "id": "local", "content": ["vztmpl", "import", "snippets"] },
            { "id": "quickOS-lxc-disks", "content": ["rootdir"] },
            { "id": "quickOS-vm-disks", "content": ["images"] }
        ]
    });
    let mut lxc = serde_json::Map::new();
    lxc.insert(BASE.to_string(), template(BASE, None));
    lxc.insert(MIDDLE.to_string(), template(MIDDLE, Some(BASE)));
    for index in 0..containers.saturating_sub(2) {
        let id = FIRST + index;
        lxc.insert(id.to_string(), service(id, index));
    }
    let mut vms = vec![json!({
        "vmid": 9000, "name": "ubuntu-template", "is_template": true,
        "template_image": "noble-server-cloudimg-amd64.img", "template_snapshot_name": "base",
        "storage_pool": "quickOS-vm-disks", "cores": 2, "memory_mb": 2048, "disk_size_gb": 32,
        "network_config": { "ip": "10.0.0.199/8", "gw": "10.0.0.1" }
    })];
    let stacks = (containers / 100).max(1);
    let mut stack_entries = serde_json::Map::new();
    for index in 0..stacks {
        let name = format!("stack-{index}");
        write_compose(dir, &name)?;
        stack_entries.insert(name.clone(), stack(&name, index));
    }
    for index in 0..3u32 {
        let (role, chosen): (&str, Vec<String>) = match index {
            0 => ("primary", Vec::new()),
            agent => (
                "agent",
                (0..stacks)
                    .filter(|stack| stack % 2 == agent - 1)
                    .map(|stack| format!("stack-{stack}"))
                    .collect(),
            ),
        };
        vms.push(json!({
            "portainer_role": role, "docker_stacks": chosen,
            "vmid": 1001 + index, "name": format!("docker-{index}"), "clone_from_vmid": 9000,
            "storage_pool": "quickOS-vm-disks", "cores": 4, "memory_mb": 8192, "disk_size_gb": 64,
            "network_config": { "ip": format!("10.0.0.{}/8", 111 + index), "gw": "10.0.0.1",
                                "nameserver": "10.0.0.13" },
            "user_config": { "username": "phoenix_user",
                             "password": { "env": format!("PHOENIX_VM_{}_PASSWORD", 1001 + index) } },
            "features": ["base_setup", "docker"],
            "firewall": { "enabled": true, "rules": [
                { "type": "in", "action": "ACCEPT", "proto": "tcp", "port": "9443", "source": "10.0.0.0/8",
                  "comment": "Portainer from the internal network" }
            ] }
        }));
    }
    let files = [
        ("phoenix_hypervisor_config.json", hypervisor),
        ("phoenix_lxc_configs.json", json!({ "lxc_configs": lxc })),
        ("phoenix_vm_configs.json", json!({ "vms": vms })),
        (
            "phoenix_stacks_config.json",
            json!({ "docker_stacks": stack_entries }),
        ),
    ];
    for (name, document) in files {
        let text = serde_json::to_string_pretty(&document).expect("serialises");
        std::fs::write(dir.join(name), text).map_err(|error| format!("{name}: {error}"))?;
    }
    Ok(())
}

/// A stack like the reference's application stacks: one service behind Traefik, its settings as variables.
fn stack(name: &str, index: u32) -> Value {
    let port = 8000 + index % 1000;
    json!({
        "description": format!("Application stack {index}."),
        "compose_file_path": format!("stacks/{name}/docker-compose.yml"),
        "environments": { "production": {
            "variables": [
                { "name": "APP_SECRET", "value": { "env": format!("STACK_{index}_SECRET") } },
                { "name": "API_PORT", "value": port.to_string() },
                { "name": "LOG_LEVEL", "value": "INFO" }
            ],
            "services": { "app": { "traefik_labels": [
                "traefik.enable=true",
                format!("traefik.http.routers.{name}.rule=Host(`{name}.phoenix.example`)"),
                format!("traefik.http.routers.{name}.entrypoints=websecure"),
                format!("traefik.http.routers.{name}.tls=true"),
                format!("traefik.http.services.{name}.loadbalancer.server.port={port}")
            ] } },
            "firewall_rules": [
                { "type": "in", "action": "ACCEPT", "proto": "tcp", "port": port.to_string(),
                  "source": "10.0.0.0/8", "comment": "The application through Traefik" }
            ]
        } }
    })
}

fn write_compose(dir: &Path, name: &str) -> Result<(), String> {
    let folder = dir.join("stacks").join(name);
    std::fs::create_dir_all(&folder).map_err(|error| format!("{}: {error}", folder.display()))?;
    let compose = "services:\n  app:\n    image: ghcr.io/example/app:1.4.2\n    restart: unless-stopped\n    \
                   environment:\n      APP_SECRET: ${APP_SECRET}\n      LOG_LEVEL: ${LOG_LEVEL:-INFO}\n    \
                   ports:\n      - \"${API_PORT}:8080\"\n";
    let path = folder.join("docker-compose.yml");
    std::fs::write(&path, compose).map_err(|error| format!("{}: {error}", path.display()))
}

/// An address of the 10.0.0.0/8 network for `n` (0 is 10.1.0.0).
fn address(n: u32) -> String {
    let n = n + 65_536;
    format!("10.{}.{}.{}", (n >> 16) & 255, (n >> 8) & 255, n & 255)
}

fn template(id: u32, source: Option<u32>) -> Value {
    let mut entry = json!({
        "name": format!("Template-{id}"),
        "start_at_boot": false, "boot_order": 0, "boot_delay": 0,
        "memory_mb": 2048, "cores": 2,
        "storage_pool": "quickOS-lxc-disks", "storage_size_gb": 16,
        "network_config": { "name": "eth0", "bridge": "vmbr0", "ip": format!("{}/8", address(id)),
                            "gw": "10.0.0.1", "nameservers": "8.8.8.8" },
        "gpu_assignment": "none", "portainer_role": "none", "unprivileged": true,
        "features": ["base_setup"],
        "lxc_options": ["lxc.apparmor.profile=unconfined"],
        "template_snapshot_name": "final-form",
        "apparmor_profile": "unconfined", "apparmor_manages_nesting": true,
        "enable_lifecycle_snapshots": true,
        "firewall": { "enabled": true, "rules": [
            { "type": "in", "action": "ACCEPT", "proto": "icmp", "source": "10.0.0.0/8",
              "comment": "Allow ICMP from internal network" },
            { "type": "in", "action": "ACCEPT", "proto": "tcp", "port": "22", "source": "10.0.0.0/8",
              "comment": "Allow SSH from internal network" }
        ] }
    });
    match source {
        Some(source) => entry["clone_from_ctid"] = json!(source.to_string()),
        None => entry["template"] = json!("local:vztmpl/ubuntu-24.04-standard_24.04-2_amd64.tar.zst"),
    }
    entry
}

/// A service container like the reference's gateway: cloned from the middle template, depending on the
/// two services before it.
fn service(id: u32, index: u32) -> Value {
    let ip = address(id);
    let peer = |offset: u32| address(FIRST + (index + offset) % 1000);
    let dependencies: Vec<String> = (1..=2)
        .filter(|back| index >= *back)
        .map(|back| (id - back).to_string())
        .collect();
    // The first runs Traefik, which the others' `traefik_service` routes go to.
    let mut features = vec!["base_setup", "trusted_ca", "step_cli"];
    if index == 0 {
        features.push("traefik");
    }
    json!({
        "name": format!("svc-{index}"),
        "memory_mb": 4096, "swap_mb": 512, "cores": 4,
        "storage_pool": "quickOS-lxc-disks", "storage_size_gb": 32,
        "network_config": { "name": "eth0", "bridge": "vmbr0", "ip": format!("{ip}/8"), "gw": "10.0.0.1",
                            "nameservers": "10.0.0.13" },
        "mac_address": format!("52:54:00:{:02X}:{:02X}:{:02X}", (id >> 16) & 255, (id >> 8) & 255, id & 255),
        "gpu_assignment": "none",
        "unprivileged": true,
        "portainer_role": "none",
        "id_maps": [{ "type": "gid", "host_id": 33, "container_id": 33, "size": 1 }],
        "clone_from_ctid": MIDDLE.to_string(),
        "features": features,
        "pct_options": ["nesting=1"],
        "lxc_options": ["lxc.mount.auto: sys:rw"],
        "traefik_service": { "name": format!("svc-{index}"), "port": 443 },
        "dependencies": dependencies,
        "start_at_boot": true, "boot_order": 2, "boot_delay": 5,
        "apparmor_profile": "unconfined", "apparmor_manages_nesting": true,
        "firewall": { "enabled": true, "rules": [
            { "type": "in", "action": "ACCEPT", "source": peer(1), "proto": "tcp", "port": "443",
              "comment": "Allow the next service to reach this one" },
            { "type": "in", "action": "ACCEPT", "source": "10.0.0.13", "proto": "tcp", "port": "443",
              "comment": "Allow the Proxmox host to reach the service for API calls" },
            { "type": "out", "action": "ACCEPT", "dest": peer(2), "proto": "tcp", "port": "80",
              "comment": "Allow the service to proxy to its upstream" },
            { "type": "out", "action": "ACCEPT", "dest": peer(3), "proto": "tcp", "port": "8080",
              "comment": "Allow the service to reach its backend on the side port" },
            { "type": "in", "action": "ACCEPT", "source": "10.0.0.10", "proto": "tcp", "port": "80,443",
              "comment": "Allow the certificate authority to connect for ACME validation" },
            { "type": "out", "action": "ACCEPT", "dest": "10.0.0.10", "proto": "tcp", "port": "9000",
              "comment": "Allow the service to ask the certificate authority for certificates" },
            { "type": "out", "action": "ACCEPT", "dest": "10.0.0.13", "proto": "udp", "port": "53",
              "comment": "Allow outbound DNS queries to the resolver" }
        ] },
        "mount_points": [
            { "host_path": format!("/mnt/pve/quickOS/lxc-persistent-data/{id}/logs"),
              "container_path": "/var/log/service", "owner_uid": 33, "owner_gid": 33 },
            { "host_path": format!("/mnt/pve/quickOS/lxc-persistent-data/{id}/ssl"),
              "container_path": "/etc/service/ssl", "owner_uid": 0, "owner_gid": 0 },
            { "host_path": "/mnt/pve/quickOS/lxc-persistent-data/shared/ca",
              "container_path": "/etc/step-ca/ssl", "owner_uid": 0, "owner_gid": 0, "read_only": true }
        ]
    })
}
