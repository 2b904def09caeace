//! The Portainer manager of Phoenix: deploys the Docker stacks of `phoenix_stacks_config.json` to the VMs
//! that name them, through the Portainer API.
//!
//! [`Portainer`] is the API client ([`PortainerSettings`] says how to reach it). The manager of
//! `portainer/*` and `stack/*` resources is to come; the configuration it will read is modelled and
//! validated in `phoenix_core::config::stacks`.

mod client;
mod settings;

pub use client::{Endpoint, Pair, Portainer, PortainerError, Stack};
pub use settings::{PortainerAuth, PortainerSettings, PortainerSettingsError};
