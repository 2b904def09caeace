//! The Portainer manager of Phoenix: deploys the Docker stacks of `phoenix_stacks_config.json` to the VMs
//! that name them, through the Portainer API.
//!
//! The manager is not written yet; the configuration it will read is modelled and validated in
//! `phoenix_core::config::stacks`.
