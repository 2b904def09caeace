//! `phoenix_vm_configs.json`: the QEMU/KVM virtual machines, in an array, with shared defaults.

use serde::{Deserialize, Serialize};

use super::common::{GuestFirewall, HealthCheck, PortainerRole, Secret, TraefikService};

/// The whole VM file.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct VmFile {
    /// Editor hint; ignored by Phoenix.
    #[serde(rename = "$schema", default)]
    pub schema: Option<String>,
    /// Values every VM takes unless it sets its own.
    #[serde(default)]
    pub vm_defaults: VmDefaults,
    /// The VMs.
    #[serde(default)]
    pub vms: Vec<VmConfig>,
}

/// Defaults merged into each VM that leaves the field unset.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct VmDefaults {
    /// Legacy: an LXC template name the earlier version kept here and never used for VMs.
    #[serde(default)]
    pub template: Option<String>,
    /// Default node.
    #[serde(default)]
    pub node: Option<String>,
    /// Default CPU cores.
    #[serde(default)]
    pub cores: Option<u32>,
    /// Default memory in MiB.
    #[serde(default)]
    pub memory_mb: Option<u64>,
    /// Default boot disk size in GiB.
    #[serde(default)]
    pub disk_size_gb: Option<u64>,
    /// Default storage for disks.
    #[serde(default)]
    pub storage_pool: Option<String>,
    /// Default bridge of `net0`.
    #[serde(default)]
    pub network_bridge: Option<String>,
}

/// One VM as the operator declares it.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct VmConfig {
    /// Proxmox VM ID; unique across VMs and containers.
    pub vmid: u32,
    /// VM name (also its hostname through cloud-init).
    pub name: String,
    /// Proxmox node; defaults to `vm_defaults.node`, then the only node of the connection.
    #[serde(default)]
    pub node: Option<String>,
    /// Turn this VM into a template once it is built.
    #[serde(default)]
    pub is_template: bool,
    /// Cloud image imported as the boot disk (file name on the import storage, or an `https://` URL).
    #[serde(default)]
    pub template_image: Option<String>,
    /// VM ID of the template this VM is cloned from.
    #[serde(default)]
    pub clone_from_vmid: Option<u32>,
    /// Clone as a linked clone (default: full clone).
    #[serde(default)]
    pub linked_clone: bool,
    /// Snapshot taken once the VM is fully provisioned; clones start from it.
    #[serde(default)]
    pub template_snapshot_name: Option<String>,
    /// CPU cores.
    #[serde(default)]
    pub cores: Option<u32>,
    /// Memory in MiB.
    #[serde(default)]
    pub memory_mb: Option<u64>,
    /// Boot disk size in GiB (grows live; shrinking is destructive).
    #[serde(default)]
    pub disk_size_gb: Option<u64>,
    /// Storage for the VM's disks.
    #[serde(default)]
    pub storage_pool: Option<String>,
    /// Bridge of `net0` (default from `vm_defaults.network_bridge`, then `vmbr0`).
    #[serde(default)]
    pub network_bridge: Option<String>,
    /// MAC address of `net0`; Proxmox generates one when absent.
    #[serde(default)]
    pub mac_address: Option<String>,
    /// Cloud-init network settings (`ipconfig0`, nameserver).
    #[serde(default)]
    pub network_config: Option<VmNetwork>,
    /// Cloud-init user.
    #[serde(default)]
    pub user_config: Option<UserConfig>,
    /// Start the VM when the node boots.
    #[serde(default)]
    pub start_at_boot: bool,
    /// Position in the node's boot order.
    #[serde(default)]
    pub boot_order: Option<u32>,
    /// Seconds to wait after starting this VM before starting the next.
    #[serde(default)]
    pub boot_delay: Option<u32>,
    /// Features applied in order through the guest agent.
    #[serde(default)]
    pub features: Vec<String>,
    /// IDs (containers or VMs, as strings) that must exist and be converged first.
    #[serde(default)]
    pub dependencies: Vec<String>,
    /// What the VM is to Portainer.
    #[serde(default)]
    pub portainer_role: Option<PortainerRole>,
    /// Name of the Portainer environment an agent VM is registered as (default: the VM name).
    #[serde(default)]
    pub portainer_environment_name: Option<String>,
    /// Host name under which the primary reaches this agent.
    #[serde(default)]
    pub portainer_agent_hostname: Option<String>,
    /// Route published through Traefik.
    #[serde(default)]
    pub traefik_service: Option<TraefikService>,
    /// Network volumes mounted inside the guest.
    #[serde(default)]
    pub volumes: Vec<VmVolume>,
    /// Stacks (from the stacks file) deployed on this VM, each in the environment it names.
    #[serde(default)]
    pub docker_stacks: Vec<StackRef>,
    /// DNS records published for this VM by the DNS sync step.
    #[serde(default)]
    pub dns_records: Vec<DnsRecord>,
    /// Guest firewall.
    #[serde(default)]
    pub firewall: Option<GuestFirewall>,
    /// Check run through the guest agent after provisioning until it passes.
    #[serde(default)]
    pub health_check: Option<HealthCheck>,
    /// Created outside Phoenix and brought in by `phoenix import`: it needs no `template_image` or `clone_from_vmid` while it
    /// exists, and cannot be created again without one.
    #[serde(default)]
    pub adopted: bool,
    /// Take `pre-features` and `post-features` snapshots while provisioning.
    #[serde(default)]
    pub enable_lifecycle_snapshots: bool,
    /// Run `sync all` after this VM converges.
    #[serde(default)]
    pub trigger_sync_on_completion: bool,
}

/// Cloud-init network settings of a VM.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct VmNetwork {
    /// `dhcp` or an address with prefix length.
    pub ip: String,
    /// Default gateway; must lie inside the subnet of `ip`.
    #[serde(default)]
    pub gw: Option<String>,
    /// DNS server(s), separated by spaces or commas.
    #[serde(default)]
    pub nameserver: Option<String>,
    /// DNS search domain.
    #[serde(default)]
    pub searchdomain: Option<String>,
}

/// The user cloud-init creates.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct UserConfig {
    /// Login name.
    pub username: String,
    /// Password, preferably a secret reference.
    #[serde(default)]
    pub password: Option<Secret>,
    /// Public SSH keys authorised for the user.
    #[serde(default)]
    pub ssh_public_keys: Vec<String>,
}

/// A network filesystem mounted inside a VM.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct VmVolume {
    /// Filesystem type; only `nfs` for now.
    #[serde(rename = "type")]
    pub kind: VolumeKind,
    /// Name of the volume, unique within the VM.
    pub name: String,
    /// Exported path on the server.
    pub path: String,
    /// Mount point inside the guest.
    pub mount_point: String,
    /// NFS server address.
    pub server: String,
    /// Mount options (default `defaults,_netdev`).
    #[serde(default)]
    pub options: Option<String>,
}

/// Kind of network volume.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum VolumeKind {
    /// An NFS export.
    Nfs,
}

/// A DNS A record.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DnsRecord {
    /// Host name, relative to the domain or fully qualified.
    pub hostname: String,
    /// IPv4 or IPv6 address.
    pub ip: String,
}

/// A stack a VM runs: its name, and the environment of the stack's settings it runs with (`production`
/// when not said). Written as the name alone, or as `{"name": ..., "environment": ...}` (the earlier
/// version's schema).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum StackRef {
    /// The name; the `production` environment.
    Name(String),
    /// The name and an environment.
    In {
        /// The stack's name.
        name: String,
        /// The environment.
        environment: String,
    },
}

impl StackRef {
    /// The stack's name.
    pub fn name(&self) -> &str {
        match self {
            StackRef::Name(name) | StackRef::In { name, .. } => name,
        }
    }

    /// The environment whose settings the VM runs the stack with.
    pub fn environment(&self) -> &str {
        match self {
            StackRef::Name(_) => crate::traefik::DEFAULT_ENVIRONMENT,
            StackRef::In { environment, .. } => environment,
        }
    }
}

impl<'de> Deserialize<'de> for StackRef {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Chosen {
            name: String,
            #[serde(default)]
            environment: Option<String>,
        }
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Either {
            Name(String),
            Chosen(Chosen),
        }
        Ok(match Either::deserialize(deserializer)? {
            Either::Name(name) => StackRef::Name(name),
            Either::Chosen(Chosen {
                name,
                environment: None,
            }) => StackRef::Name(name),
            Either::Chosen(Chosen {
                name,
                environment: Some(environment),
            }) => StackRef::In { name, environment },
        })
    }
}
