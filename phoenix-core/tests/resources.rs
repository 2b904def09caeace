//! The desired state of host and sync steps: typed, and with the same declared fields as before it was typed.

use expect_test::{Expect, expect};
use phoenix_core::config::hypervisor::RaidLevel;
use phoenix_core::engine::resource::SENSITIVE;
use phoenix_core::traefik::labels::Section;
use phoenix_core::{Address, CheckOptions, Desired, HostStep, Resource, ResourceKind, SyncStep};
use phoenix_testing::fixture;

/// The resources of a configuration directory, relative to the workspace.
fn resources_of(dir: &str) -> Vec<Resource> {
    let dir = phoenix_testing::workspace().join(dir);
    fixture::resources(fixture::sources(&dir), &CheckOptions::default())
}

/// The resource at an address.
#[track_caller]
fn find<'a>(resources: &'a [Resource], address: &str) -> &'a Resource {
    let address: Address = address.parse().expect("a valid address");
    resources
        .iter()
        .find(|resource| resource.address == address)
        .unwrap_or_else(|| panic!("no resource at {address}"))
}

/// Snapshots the declared fields of every host and sync resource of a configuration directory.
#[track_caller]
fn check_declared_fields(dir: &str, expect: Expect) {
    let mut actual = String::new();
    for resource in resources_of(dir) {
        if matches!(resource.kind(), ResourceKind::Host | ResourceKind::Sync) {
            let fields = serde_json::to_string_pretty(&resource.declared_fields()).expect("JSON");
            actual.push_str(&format!("{} {fields}\n", resource.address));
        }
    }
    expect.assert_eq(&actual);
}

#[test]
fn homelab_host_and_sync_steps_are_typed() {
    let resources = resources_of("examples/homelab");

    let Desired::Host(HostStep::ZfsPool(pool)) = &find(&resources, "host/zfs/pool/tank").desired else {
        panic!("host/zfs/pool/tank is not a ZFS pool step");
    };
    assert_eq!(pool.name, "tank");
    assert_eq!(pool.raid_level, RaidLevel::Mirror);
    assert_eq!(
        pool.disks,
        [
            "/dev/disk/by-id/nvme-EXAMPLE_SSD_2TB_SERIAL0001",
            "/dev/disk/by-id/nvme-EXAMPLE_SSD_2TB_SERIAL0002",
        ]
    );

    let Desired::Host(HostStep::ZfsDataset(dataset)) =
        &find(&resources, "host/zfs/dataset/scratch/models").desired
    else {
        panic!("host/zfs/dataset/scratch/models is not a ZFS dataset step");
    };
    assert_eq!(dataset.proxmox_storage_id().as_deref(), Some("models"));

    // The typed user keeps its hash; only the declared fields hide it.
    let user = find(&resources, "host/user/ops");
    let Desired::Host(HostStep::User(ops)) = &user.desired else {
        panic!("host/user/ops is not a user step");
    };
    assert_eq!(ops.password_hash.as_deref(), Some("NOT_SET"));
    assert_eq!(user.declared_fields()["password_hash"], SENSITIVE);

    let traefik = find(&resources, "sync/traefik");
    let Desired::Sync(SyncStep::Traefik(step)) = &traefik.desired else {
        panic!("sync/traefik is not a Traefik step");
    };
    // Written into the Traefik container, after it and after every guest it routes to.
    assert_eq!(step.proxy, 102);
    let after: Vec<String> = traefik.depends_on.iter().map(ToString::to_string).collect();
    assert_eq!(after, ["lxc/102", "lxc/103", "lxc/950", "vm/1001", "vm/1002"]);
    let servers: Vec<(&str, &str)> = step
        .config
        .names(Section::Service)
        .map(|name| {
            let service = step.config.get(Section::Service, name).expect("listed");
            let url = service["loadBalancer"]["servers"][0]["url"]
                .as_str()
                .expect("a URL");
            (name, url)
        })
        .collect();
    assert_eq!(
        servers,
        [
            ("ca", "https://10.42.0.10:9000"),
            ("llm", "http://10.42.0.50:8000"),
            ("portainer", "https://10.42.0.21:9443"),
            ("qdrant", "http://10.42.0.22:6333"),
            ("search", "http://10.42.0.22:8080"),
        ]
    );

    let Desired::Sync(SyncStep::InternalDns(view)) = &find(&resources, "sync/dns/internal").desired else {
        panic!("sync/dns/internal is not the internal DNS view");
    };
    assert_eq!(view.records["portainer.lab.example.org"], "10.42.0.21");

    // The stacks' firewall rules join their VM's own, after them, in the order the VM lists its stacks.
    let Desired::Vm(apps) = &find(&resources, "vm/1002").desired else {
        panic!("vm/1002 is not a VM");
    };
    let comments: Vec<&str> = apps
        .firewall
        .as_ref()
        .expect("declared")
        .rules
        .iter()
        .filter_map(|rule| rule.comment.as_deref())
        .collect();
    assert_eq!(
        comments,
        [
            "Portainer server to this agent",
            "Stack services reached through Traefik",
            "SSH from the lab network",
            "Qdrant HTTP API through Traefik",
            "SearXNG web UI through Traefik",
        ]
    );
}

#[test]
fn homelab_host_and_sync_fields() {
    check_declared_fields(
        "examples/homelab",
        expect![[r#"
            host/apt/packages {
              "packages": [
                "curl",
                "dkms",
                "htop",
                "locales",
                "nfs-kernel-server",
                "pciutils",
                "sudo",
                "tmux"
              ]
            }
            host/apt/repositories {
              "proxmox": "no-subscription"
            }
            host/dns {
              "search": "lab.example.org",
              "servers": [
                "10.42.0.1",
                "9.9.9.9"
              ]
            }
            host/firewall {
              "default_input_policy": "DROP",
              "default_output_policy": "ACCEPT",
              "enabled": true,
              "global_firewall_rules": [
                {
                  "action": "ACCEPT",
                  "comment": "Proxmox web UI and API from the lab network",
                  "port": "8006",
                  "proto": "tcp",
                  "source": "10.42.0.0/24",
                  "type": "in"
                },
                {
                  "action": "ACCEPT",
                  "comment": "SSH to the host from the lab network",
                  "port": "22",
                  "proto": "tcp",
                  "source": "10.42.0.0/24",
                  "type": "in"
                },
                {
                  "action": "ACCEPT",
                  "comment": "Guests query dnsmasq on the host",
                  "dest": "10.42.0.2",
                  "port": "53",
                  "proto": "udp",
                  "source": "10.42.0.0/24",
                  "type": "in"
                },
                {
                  "action": "ACCEPT",
                  "comment": "Guests query dnsmasq on the host (TCP)",
                  "dest": "10.42.0.2",
                  "port": "53",
                  "proto": "tcp",
                  "source": "10.42.0.0/24",
                  "type": "in"
                },
                {
                  "action": "ACCEPT",
                  "comment": "NFSv4 for the Portainer VMs",
                  "dest": "10.42.0.2",
                  "port": "2049",
                  "proto": "tcp",
                  "source": "10.42.0.21,10.42.0.22",
                  "type": "in"
                },
                {
                  "action": "ACCEPT",
                  "comment": "Ping from the lab network",
                  "proto": "icmp",
                  "source": "10.42.0.0/24",
                  "type": "in"
                }
              ]
            }
            host/locale {
              "locale": "en_US.UTF-8"
            }
            host/network/vmbr0 {
              "address": "10.42.0.2/24",
              "dns_nameservers": [
                "10.42.0.1",
                "9.9.9.9"
              ],
              "gateway": "10.42.0.1",
              "name": "vmbr0"
            }
            host/nfs/exports {
              "exports": [
                {
                  "clients": [
                    "10.42.0.21",
                    "10.42.0.22"
                  ],
                  "options": [
                    "rw",
                    "sync",
                    "no_subtree_check",
                    "no_root_squash"
                  ],
                  "path": "/mnt/pve/tank/vm-data"
                }
              ]
            }
            host/nvidia {
              "cuda_version": "12.8",
              "install": true,
              "install_vllm_libs": true,
              "runfile_url": "https://us.download.nvidia.com/XFree86/Linux-x86_64/570.172.08/NVIDIA-Linux-x86_64-570.172.08.run",
              "version": "570.172.08"
            }
            host/storage/local {
              "content": [
                "backup",
                "import",
                "iso",
                "snippets",
                "vztmpl"
              ],
              "id": "local"
            }
            host/storage/models {
              "content": [
                "images",
                "rootdir"
              ],
              "id": "models",
              "kind": "zfspool",
              "settings": {
                "mountpoint": "/mnt/pve/scratch/models",
                "pool": "scratch/models"
              }
            }
            host/storage/scratch-backups {
              "content": [
                "backup"
              ],
              "id": "scratch-backups",
              "kind": "dir",
              "settings": {
                "is_mountpoint": "yes",
                "path": "/mnt/pve/scratch/backups"
              }
            }
            host/storage/tank-lxc-disks {
              "content": [
                "images",
                "rootdir"
              ],
              "id": "tank-lxc-disks",
              "kind": "zfspool",
              "settings": {
                "mountpoint": "/mnt/pve/tank/lxc-disks",
                "pool": "tank/lxc-disks"
              }
            }
            host/storage/tank-vm-disks {
              "content": [
                "images"
              ],
              "id": "tank-vm-disks",
              "kind": "zfspool",
              "settings": {
                "mountpoint": "/mnt/pve/tank/vm-disks",
                "pool": "tank/vm-disks"
              }
            }
            host/subids {
              "gids": [
                [
                  33,
                  1
                ],
                [
                  100000,
                  65536
                ]
              ],
              "uids": [
                [
                  33,
                  1
                ],
                [
                  100000,
                  65536
                ]
              ]
            }
            host/timezone {
              "timezone": "Europe/Berlin"
            }
            host/user/ops {
              "password_hash": "(sensitive)",
              "ssh_public_key": "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIH7xsk1Dx6lMSV+XaJpmlcBqUjXvH1YG0z6rIbqNRgg8 ops@lab.example.org",
              "sudo_access": true,
              "username": "ops"
            }
            host/zfs/arc {
              "arc_max_gb": 16
            }
            host/zfs/dataset/scratch/backups {
              "name": "backups",
              "pool": "scratch",
              "properties": "recordsize=1M,compression=zstd,mountpoint=/mnt/pve/scratch/backups",
              "proxmox_content_type": "backup",
              "proxmox_storage_type": "dir",
              "storage_class": "shared"
            }
            host/zfs/dataset/scratch/hf-cache {
              "name": "hf-cache",
              "pool": "scratch",
              "properties": "recordsize=1M,compression=lz4,quota=500G,mountpoint=/mnt/pve/scratch/hf-cache",
              "storage_class": "shared"
            }
            host/zfs/dataset/scratch/models {
              "name": "models",
              "pool": "scratch",
              "properties": "recordsize=1M,compression=off,quota=1T,mountpoint=/mnt/pve/scratch/models",
              "proxmox_content_type": "images,rootdir",
              "proxmox_storage_type": "zfspool",
              "storage_class": "shared",
              "storage_id": "models"
            }
            host/zfs/dataset/tank/lxc-disks {
              "name": "lxc-disks",
              "pool": "tank",
              "properties": "recordsize=16K,compression=lz4,mountpoint=/mnt/pve/tank/lxc-disks",
              "proxmox_content_type": "images,rootdir",
              "proxmox_storage_type": "zfspool",
              "storage_class": "direct"
            }
            host/zfs/dataset/tank/lxc-shared {
              "name": "lxc-shared",
              "pool": "tank",
              "properties": "recordsize=128K,compression=lz4,quota=50G,mountpoint=/mnt/pve/tank/lxc-shared",
              "storage_class": "shared"
            }
            host/zfs/dataset/tank/vm-data {
              "name": "vm-data",
              "pool": "tank",
              "properties": "recordsize=128K,compression=lz4,quota=200G,mountpoint=/mnt/pve/tank/vm-data",
              "storage_class": "shared"
            }
            host/zfs/dataset/tank/vm-disks {
              "name": "vm-disks",
              "pool": "tank",
              "properties": "recordsize=64K,compression=lz4,mountpoint=/mnt/pve/tank/vm-disks",
              "proxmox_content_type": "images",
              "proxmox_storage_type": "zfspool",
              "storage_class": "direct"
            }
            host/zfs/pool/scratch {
              "disks": [
                "/dev/disk/by-id/ata-EXAMPLE_HDD_8TB_SERIAL0003"
              ],
              "name": "scratch",
              "raid_level": "single"
            }
            host/zfs/pool/tank {
              "disks": [
                "/dev/disk/by-id/nvme-EXAMPLE_SSD_2TB_SERIAL0001",
                "/dev/disk/by-id/nvme-EXAMPLE_SSD_2TB_SERIAL0002"
              ],
              "name": "tank",
              "raid_level": "mirror"
            }
            sync/dns/internal {
              "listen": {
                "port": 53
              },
              "records": {
                "apps": "10.42.0.22",
                "apps.lab.example.org": "10.42.0.22",
                "ca.lab.example.org": "10.42.0.11",
                "gateway": "10.42.0.12",
                "gateway.lab.example.org": "10.42.0.12",
                "llm-qwen": "10.42.0.50",
                "llm-qwen.lab.example.org": "10.42.0.50",
                "llm.lab.example.org": "10.42.0.11",
                "portainer": "10.42.0.21",
                "portainer.lab.example.org": "10.42.0.21",
                "qdrant.lab.example.org": "10.42.0.11",
                "search.lab.example.org": "10.42.0.11",
                "step-ca": "10.42.0.10",
                "step-ca.lab.example.org": "10.42.0.10",
                "tpl-debian-base": "10.42.0.200",
                "tpl-debian-base.lab.example.org": "10.42.0.200",
                "tpl-debian-cuda": "10.42.0.201",
                "tpl-debian-cuda.lab.example.org": "10.42.0.201",
                "traefik": "10.42.0.11",
                "traefik.lab.example.org": "10.42.0.11"
              },
              "upstreams": [
                "9.9.9.9",
                "1.1.1.1"
              ],
              "zones": [
                "lab.example.org"
              ]
            }
            sync/gateway {
              "container": 101,
              "site": "/etc/nginx/sites-enabled/gateway",
              "template": "nginx/sites-available/gateway.template"
            }
            sync/traefik {
              "router/ca": {
                "rule": "Host(`ca.lab.example.org`)",
                "service": "ca"
              },
              "router/llm": {
                "rule": "Host(`llm.lab.example.org`)",
                "service": "llm"
              },
              "router/portainer": {
                "rule": "Host(`portainer.lab.example.org`)",
                "service": "portainer"
              },
              "router/qdrant": {
                "entryPoints": [
                  "websecure"
                ],
                "rule": "Host(`qdrant.lab.example.org`)",
                "service": "qdrant",
                "tls": {}
              },
              "router/search": {
                "entryPoints": [
                  "websecure"
                ],
                "rule": "Host(`search.lab.example.org`)",
                "service": "search",
                "tls": {}
              },
              "service/ca": {
                "loadBalancer": {
                  "servers": [
                    {
                      "url": "https://10.42.0.10:9000"
                    }
                  ]
                }
              },
              "service/llm": {
                "loadBalancer": {
                  "servers": [
                    {
                      "url": "http://10.42.0.50:8000"
                    }
                  ]
                }
              },
              "service/portainer": {
                "loadBalancer": {
                  "servers": [
                    {
                      "url": "https://10.42.0.21:9443"
                    }
                  ]
                }
              },
              "service/qdrant": {
                "loadBalancer": {
                  "servers": [
                    {
                      "url": "http://10.42.0.22:6333"
                    }
                  ]
                }
              },
              "service/search": {
                "loadBalancer": {
                  "servers": [
                    {
                      "url": "http://10.42.0.22:8080"
                    }
                  ]
                }
              }
            }
        "#]],
    );
}

#[test]
fn fixture_host_and_sync_fields() {
    check_declared_fields(
        "phoenix-core/tests/fixtures/estate",
        expect![[r#"
            host/dns {
              "search": "test.internal",
              "servers": [
                "10.1.0.1"
              ]
            }
            host/firewall {
              "default_input_policy": "DROP",
              "enabled": true,
              "global_firewall_rules": [
                {
                  "action": "ACCEPT",
                  "port": "8006",
                  "proto": "tcp",
                  "source": "10.1.0.0/24",
                  "type": "in"
                }
              ]
            }
            host/network/vmbr0 {
              "address": "10.1.0.2/24",
              "dns_nameservers": [
                "10.1.0.1"
              ],
              "gateway": "10.1.0.1",
              "name": "vmbr0"
            }
            host/storage/local {
              "content": [
                "import",
                "snippets",
                "vztmpl"
              ],
              "id": "local"
            }
            host/storage/tank-guests {
              "content": [
                "images",
                "rootdir"
              ],
              "id": "tank-guests",
              "kind": "zfspool",
              "settings": {
                "pool": "tank/guests"
              }
            }
            host/zfs/dataset/tank/guests {
              "name": "guests",
              "pool": "tank",
              "proxmox_content_type": "images,rootdir",
              "proxmox_storage_type": "zfspool"
            }
            host/zfs/pool/tank {
              "disks": [
                "/dev/sda",
                "/dev/sdb"
              ],
              "name": "tank",
              "raid_level": "mirror"
            }
            sync/dns/internal {
              "listen": {
                "port": 53
              },
              "records": {
                "apps": "10.1.0.32",
                "apps-ui.test.internal": "10.1.0.12",
                "apps.test.internal": "10.1.0.32",
                "base": "10.1.0.90",
                "base.test.internal": "10.1.0.90",
                "gateway": "10.1.0.11",
                "gateway.test.internal": "10.1.0.11",
                "portainer": "10.1.0.31",
                "portainer.test.internal": "10.1.0.31",
                "proxy": "10.1.0.12",
                "proxy.test.internal": "10.1.0.12"
              },
              "upstreams": [
                "9.9.9.9"
              ]
            }
            sync/traefik {
              "router/apps-ui": {
                "rule": "Host(`apps-ui.test.internal`)",
                "service": "apps-ui"
              },
              "router/gateway": {
                "rule": "Host(`gateway.test.internal`)",
                "service": "gateway"
              },
              "router/proxy": {
                "rule": "Host(`proxy.test.internal`)",
                "service": "proxy"
              },
              "service/apps-ui": {
                "loadBalancer": {
                  "servers": [
                    {
                      "url": "http://10.1.0.32:3000"
                    }
                  ]
                }
              },
              "service/gateway": {
                "loadBalancer": {
                  "servers": [
                    {
                      "url": "http://10.1.0.11:443"
                    }
                  ]
                }
              },
              "service/proxy": {
                "loadBalancer": {
                  "servers": [
                    {
                      "url": "http://10.1.0.12:8080"
                    }
                  ]
                }
              }
            }
        "#]],
    );
}

/// The firewall's groups, aliases and IP sets are resources of their own, after what they name; the
/// cluster's rules, the node's, and guests' rules that jump to a group come after it.
#[test]
fn firewall_objects_are_resources_after_what_they_name() {
    let dir = phoenix_testing::workspace().join("phoenix-core/tests/fixtures/estate");
    let sources = fixture::every_source_edited(&dir, |kind, text| {
        Some(match kind {
            phoenix_core::FileKind::Hypervisor => text.replace(
                r#""default_input_policy": "DROP","#,
                r#""default_input_policy": "DROP",
    "aliases": { "lan": { "cidr": "10.1.0.0/24" } },
    "ipsets": { "admins": { "entries": [{ "cidr": "LAN" }] } },
    "security_groups": { "web": { "rules": [{ "type": "in", "action": "ACCEPT", "macro": "HTTPS", "source": "+admins" }] } },
    "node": { "rules": [{ "type": "group", "action": "web" }, { "type": "in", "action": "ACCEPT", "macro": "SSH", "source": "dc/lan" }] },"#,
            ),
            phoenix_core::FileKind::Lxc => text.replace(
                r#"{ "type": "in", "action": "ACCEPT", "proto": "tcp", "port": "80,443" }"#,
                r#"{ "type": "group", "action": "web" }"#,
            ),
            _ => text,
        })
    });
    let resources = fixture::resources(sources, &CheckOptions::default());
    let depends = |address: &str| -> Vec<String> {
        let mut found: Vec<String> = find(&resources, address)
            .depends_on
            .iter()
            .map(Address::to_string)
            .filter(|address| address.starts_with("host/firewall"))
            .collect();
        found.sort();
        found
    };
    assert!(depends("host/firewall/alias/lan").is_empty());
    assert_eq!(depends("host/firewall/ipset/admins"), ["host/firewall/alias/lan"]);
    assert_eq!(depends("host/firewall/group/web"), ["host/firewall/ipset/admins"]);
    assert_eq!(
        depends("host/firewall/node"),
        ["host/firewall/alias/lan", "host/firewall/group/web"]
    );
    assert!(depends("lxc/101").contains(&"host/firewall/group/web".to_owned()));
    let Desired::Host(HostStep::FirewallPart(part)) = &find(&resources, "host/firewall/group/web").desired
    else {
        panic!("the group is a firewall part");
    };
    assert!(matches!(**part, phoenix_core::FirewallPart::Group { ref name, .. } if name == "web"));
    let cluster = find(&resources, "host/firewall").declared_fields();
    assert_eq!(
        cluster.keys().collect::<Vec<_>>(),
        ["default_input_policy", "enabled", "global_firewall_rules"],
        "the cluster's resource shows only the cluster's options and rules"
    );
}

#[test]
fn in_a_cluster_each_node_has_its_own_host_steps_and_guests_wait_for_their_nodes() {
    let dir = phoenix_testing::workspace().join("examples/homelab");
    // Two nodes; the first container named in the file runs on pve1, the others are placed.
    let sources = fixture::every_source_edited(&dir, |kind, text| {
        let text = text.replace(
            r#""nodes": ["pve1"],"#,
            r#""nodes": ["pve1", "pve2"], "placement": "first_node","#,
        );
        Some(match kind {
            phoenix_core::FileKind::Lxc => text.replacen(r#""name":"#, r#""node": "pve1", "name":"#, 1),
            _ => text,
        })
    });
    let resources = fixture::resources(sources, &CheckOptions::default());
    let addresses: Vec<String> = resources
        .iter()
        .filter(|resource| resource.kind() == ResourceKind::Host)
        .map(|resource| resource.address.to_string())
        .collect();
    for node in ["pve1", "pve2"] {
        let pool = find(&resources, &format!("host/{node}/zfs/pool/tank"));
        assert_eq!(pool.node.as_deref(), Some(node));
        let dataset = find(&resources, &format!("host/{node}/zfs/dataset/tank/vm-data"));
        assert!(
            dataset
                .depends_on
                .contains(&format!("host/{node}/zfs/pool/tank").parse().unwrap()),
            "{:?}",
            dataset.depends_on
        );
    }
    // The cluster's own steps are there once: the datacenter firewall, access, storage definitions.
    assert!(addresses.contains(&"host/firewall".to_owned()), "{addresses:?}");
    assert!(!addresses.iter().any(|address| address == "host/zfs/pool/tank"));
    assert!(
        !addresses.contains(&"host/pve1/firewall".to_owned()),
        "{addresses:?}"
    );
    let storage = find(&resources, "host/storage/tank-vm-disks");
    for node in ["pve1", "pve2"] {
        let dataset: phoenix_core::Address =
            format!("host/{node}/zfs/dataset/tank/vm-disks").parse().unwrap();
        assert!(storage.depends_on.contains(&dataset), "{:?}", storage.depends_on);
    }
    let guest = resources
        .iter()
        .find(|resource| resource.kind() == ResourceKind::Lxc && resource.node.as_deref() == Some("pve1"))
        .expect("a container on pve1");
    let waits: Vec<String> = guest.depends_on.iter().map(ToString::to_string).collect();
    assert!(waits.contains(&"host/pve1/zfs/pool/tank".to_owned()), "{waits:?}");
    assert!(
        !waits.iter().any(|address| address.starts_with("host/pve2/")),
        "{waits:?}"
    );
    // A guest placed when it is created waits for every node.
    let placed = resources
        .iter()
        .find(|resource| resource.kind() == ResourceKind::Lxc && resource.node.is_none())
        .expect("a placed container");
    let waits: Vec<String> = placed.depends_on.iter().map(ToString::to_string).collect();
    assert!(
        waits.contains(&"host/pve1/zfs/pool/tank".to_owned())
            && waits.contains(&"host/pve2/zfs/pool/tank".to_owned()),
        "{waits:?}"
    );
}
