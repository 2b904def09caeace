//! The LXC container manager of Phoenix: creates or clones, configures, starts and snapshots the
//! containers of `phoenix_lxc_configs.json` through the Proxmox API, converging in one run and changing
//! nothing in the second.
//!
//! Observe reads the cluster once (`GET /cluster/resources`), then each container's config and snapshots
//! in parallel. Diff compares declared fields only, normalised ([`fields`]). Apply writes one config
//! change per resource, grows disks, starts, and takes the template snapshot when it is missing.
//!
//! With a host channel it also works inside containers (features, application scripts, health checks, through
//! `phoenix_pve::guest`) and writes the raw `lxc.*` keys of their config files (`lxc_options`, the AppArmor
//! profile, `lxc.idmap` lines from `id_maps`), which the API cannot set.

pub mod fields;
mod guest;
mod manager;

pub use fields::LxcField;
pub use manager::{ContainerDiff, Containers, LxcManager, manager};
pub use phoenix_pve::OWNER_TAG;
pub use phoenix_pve::guest::GuestScripts;
