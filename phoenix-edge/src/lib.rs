//! The estate's edge: what routes traffic to the guests. Today that is Traefik's dynamic configuration,
//! which [`TraefikManager`] writes into the Traefik container (`sync/traefik`); the nginx gateway, DNS and
//! certificates are to come.
//!
//! The configuration itself is built, checked and rendered in core ([`phoenix_core::traefik`]); this
//! crate reads the live file and replaces it, through the node's host channel and `lxc-attach`.

pub mod dns;
pub mod gateway;
mod traefik;

pub use traefik::EdgeManager;
