//! `phoenix_lxc_configs.json`: the LXC containers, keyed by CTID.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::common::{GuestFirewall, HealthCheck, PortainerRole, TraefikService};

/// The whole LXC file.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LxcFile {
    /// Editor hint; ignored by Phoenix.
    #[serde(rename = "$schema", default)]
    pub schema: Option<String>,
    /// NVIDIA driver version installed inside GPU containers; must match the host driver.
    #[serde(default)]
    pub nvidia_driver_version: Option<String>,
    /// APT repository for CUDA packages inside containers.
    #[serde(default)]
    pub nvidia_repo_url: Option<String>,
    /// NVIDIA runfile used to install the user-space driver inside containers.
    #[serde(default)]
    pub nvidia_runfile_url: Option<String>,
    /// Containers keyed by CTID written as a string (`"101"`).
    pub lxc_configs: BTreeMap<String, ContainerConfig>,
}

/// One LXC container as the operator declares it.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ContainerConfig {
    /// Hostname of the container.
    pub name: String,
    /// Proxmox node the container runs on; defaults to the only node of the connection.
    #[serde(default)]
    pub node: Option<String>,
    /// OS template: a volume id (`local:vztmpl/debian-12-standard_12.7-1_amd64.tar.zst`) or, as the
    /// earlier version wrote it, a path whose file name is looked up on the template storage.
    #[serde(default)]
    pub template: Option<String>,
    /// CTID (as a string) of the container this one is cloned from, at its `template_snapshot_name`.
    #[serde(default)]
    pub clone_from_ctid: Option<String>,
    /// Snapshot taken once the container is fully provisioned; clones start from it.
    #[serde(default)]
    pub template_snapshot_name: Option<String>,
    /// Memory in MiB.
    #[serde(default)]
    pub memory_mb: Option<u64>,
    /// Swap in MiB.
    #[serde(default)]
    pub swap_mb: Option<u64>,
    /// CPU cores.
    #[serde(default)]
    pub cores: Option<u32>,
    /// Proxmox storage for the root filesystem.
    #[serde(default)]
    pub storage_pool: Option<String>,
    /// Root filesystem size in GiB (grows live; shrinking is destructive).
    #[serde(default)]
    pub storage_size_gb: Option<u64>,
    /// The container's `net0`.
    #[serde(default)]
    pub network_config: Option<LxcNetwork>,
    /// MAC address of `net0`; Proxmox generates one when absent.
    #[serde(default)]
    pub mac_address: Option<String>,
    /// GPUs passed through: `none`, or indices such as `0` or `0,1`.
    #[serde(default)]
    pub gpu_assignment: Option<String>,
    /// What the container is to Portainer.
    #[serde(default)]
    pub portainer_role: Option<PortainerRole>,
    /// Run the container unprivileged (default true).
    #[serde(default)]
    pub unprivileged: Option<bool>,
    /// Features applied in order after the first start (`base_setup`, `docker`, `nvidia`, ...).
    #[serde(default)]
    pub features: Vec<String>,
    /// IDs (containers or VMs, as strings) that must exist and be converged first.
    #[serde(default)]
    pub dependencies: Vec<String>,
    /// Proxmox container features (`nesting=1`, `keyctl=1`, `fuse=1`, `mount=nfs;cifs`).
    #[serde(default)]
    pub pct_options: Vec<String>,
    /// Raw LXC keys written to the container's config (`lxc.apparmor.profile=unconfined`).
    #[serde(default)]
    pub lxc_options: Vec<String>,
    /// AppArmor profile of the container (`unconfined`, or a profile Phoenix installs on the host).
    #[serde(default)]
    pub apparmor_profile: Option<String>,
    /// Whether the AppArmor profile, not Proxmox, governs nesting.
    #[serde(default)]
    pub apparmor_manages_nesting: Option<bool>,
    /// Created outside Phoenix and brought in by `phoenix import`: it needs no `template` or `clone_from_ctid` while it
    /// exists, and cannot be created again without one.
    #[serde(default)]
    pub adopted: bool,
    /// Take `pre-features` and `post-features` snapshots while provisioning.
    #[serde(default)]
    pub enable_lifecycle_snapshots: bool,
    /// Guest firewall.
    #[serde(default)]
    pub firewall: Option<GuestFirewall>,
    /// Script run inside the container after its features.
    #[serde(default)]
    pub application_script: Option<String>,
    /// Check run after provisioning until it passes.
    #[serde(default)]
    pub health_check: Option<HealthCheck>,
    /// Legacy: the plural key of the earlier schema, never read by the earlier scripts. Use `health_check`.
    #[serde(default)]
    pub health_checks: Option<serde_json::Value>,
    /// Start the container when the node boots.
    #[serde(default)]
    pub start_at_boot: bool,
    /// Position in the node's boot order.
    #[serde(default)]
    pub boot_order: Option<u32>,
    /// Seconds to wait after starting this container before starting the next.
    #[serde(default)]
    pub boot_delay: Option<u32>,
    /// Published ports, `host:container`.
    #[serde(default)]
    pub ports: Vec<String>,
    /// Route published through Traefik.
    #[serde(default)]
    pub traefik_service: Option<TraefikService>,
    /// Run `sync all` after this container converges.
    #[serde(default)]
    pub trigger_sync_on_completion: bool,
    /// Volumes created on a storage and mounted into the container.
    #[serde(default)]
    pub zfs_volumes: Vec<ZfsVolume>,
    /// Host directories bind-mounted into the container.
    #[serde(default)]
    pub mount_points: Vec<MountPoint>,
    /// UID/GID ranges mapped straight through to the host.
    #[serde(default)]
    pub id_maps: Vec<IdMap>,
    /// Engine arguments for the `vllm` feature, passed through as JSON.
    #[serde(default)]
    pub vllm_engine_config: Option<serde_json::Value>,
    /// URL of the internal CA that the `trusted_ca` and `step_cli` features bootstrap from.
    #[serde(default)]
    pub bootstrap_ca_url: Option<String>,
    /// Legacy: test scripts of the earlier version. Not run by Phoenix; use `health_check`.
    #[serde(default)]
    pub tests: Option<serde_json::Value>,
}

/// The `net0` interface of a container.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LxcNetwork {
    /// Interface name inside the container (default `eth0`).
    #[serde(default = "default_interface")]
    pub name: String,
    /// Host bridge (default `vmbr0`).
    #[serde(default = "default_bridge")]
    pub bridge: String,
    /// `dhcp` or an address with prefix length (`10.0.0.12/24`).
    pub ip: String,
    /// Default gateway; must lie inside the subnet of `ip`.
    #[serde(default)]
    pub gw: Option<String>,
    /// DNS servers, separated by spaces or commas.
    #[serde(default)]
    pub nameservers: Option<String>,
    /// DNS search domain (default: the host's `domain_name`).
    #[serde(default)]
    pub searchdomain: Option<String>,
    /// VLAN tag.
    #[serde(default)]
    pub vlan: Option<u16>,
}

pub(crate) fn default_interface() -> String {
    "eth0".to_owned()
}

pub(crate) fn default_bridge() -> String {
    "vmbr0".to_owned()
}

/// A volume allocated on a Proxmox storage and mounted into a container.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ZfsVolume {
    /// Name of the volume, unique within the container.
    pub name: String,
    /// Proxmox storage the volume lives on.
    pub pool: String,
    /// Size in GiB.
    pub size_gb: u64,
    /// Path inside the container.
    pub mount_point: String,
}

/// A host directory bind-mounted into a container.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct MountPoint {
    /// Absolute path on the host.
    pub host_path: String,
    /// Absolute path inside the container; the stable key of the mount.
    pub container_path: String,
    /// Owner UID (inside the container) applied to the host directory.
    #[serde(default)]
    pub owner_uid: Option<u32>,
    /// Owner GID (inside the container) applied to the host directory.
    #[serde(default)]
    pub owner_gid: Option<u32>,
    /// Mount read-only.
    #[serde(default)]
    pub read_only: bool,
}

/// A UID or GID range mapped one to one between container and host.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct IdMap {
    /// `uid` or `gid`.
    #[serde(rename = "type")]
    pub kind: IdKind,
    /// First ID on the host.
    pub host_id: u32,
    /// First ID inside the container.
    pub container_id: u32,
    /// Number of IDs in the range.
    pub size: u32,
}

/// Which kind of ID an `id_maps` entry maps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum IdKind {
    /// User IDs.
    Uid,
    /// Group IDs.
    Gid,
}
