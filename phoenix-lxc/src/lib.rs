//! The LXC container manager of Phoenix: create or clone, configure, start, apply features, health-check
//! and snapshot the containers of `phoenix_lxc_configs.json`.
//!
//! The manager is not written yet; the configuration it will read is modelled and validated in
//! `phoenix_core::config::lxc`.
