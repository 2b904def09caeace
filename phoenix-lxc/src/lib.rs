//! The LXC container manager of Phoenix: creates or clones, configures, starts and snapshots the
//! containers of `phoenix_lxc_configs.json` through the Proxmox API, converging in one run and changing
//! nothing in the second.
//!
//! It is a driver of the shared guest kit ([`phoenix_pve::guests`]), which observes (one cluster listing
//! per round, then each container in parallel), diffs and applies. This crate says what is a container's
//! own: its field vocabulary [`LxcField`] and the pure [`ContainerDiff`] (declared fields only,
//! normalised, in [`fields`]), and the IO of [`Containers`]: reading a container, creating or cloning one,
//! and applying typed changes (one config write, disk growth, firewall, start, the template snapshot).
//!
//! With a host channel it also works inside containers (features, application scripts, health checks, through
//! `phoenix_pve::guest`) and writes the raw `lxc.*` keys of their config files (`lxc_options`, the AppArmor
//! profile, `lxc.idmap` lines from `id_maps`), which the API cannot set.

pub mod fields;
mod guest;
mod import;
mod manager;

pub use fields::LxcField;
pub use manager::{ContainerDiff, Containers, LxcManager, manager};
pub use phoenix_pve::OWNER_TAG;
pub use phoenix_pve::guest::GuestScripts;
