//! The LXC container manager of Phoenix: creates or clones, configures, starts and snapshots the
//! containers of `phoenix_lxc_configs.json` through the Proxmox API, converging in one run and changing
//! nothing in the second.
//!
//! Observe reads the cluster once (`GET /cluster/resources`), then each container's config and snapshots
//! in parallel. Diff compares declared fields only, normalised ([`fields`]). Apply writes one config
//! change per resource, grows disks, starts, and takes the template snapshot when it is missing.
//!
//! Not yet here: features, application scripts and health checks inside containers (they need the host
//! channel), raw `lxc_options` and AppArmor profiles, and firewall rules.

mod fields;
mod guest;
mod manager;

pub use manager::LxcManager;
pub use phoenix_pve::OWNER_TAG;
pub use phoenix_pve::guest::GuestScripts;
