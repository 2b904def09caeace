//! Host setup for Phoenix: ZFS pools and datasets, NFS exports, AppArmor profiles, NVIDIA passthrough and
//! host users, converged from `phoenix_hypervisor_config.json`.
//!
//! The host manager is not written yet; the configuration it will read is modelled and validated in
//! `phoenix_core::config::hypervisor`.
