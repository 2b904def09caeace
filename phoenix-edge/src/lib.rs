//! The estate's edge: what routes traffic to the guests and names them. [`EdgeManager`] converges
//! Traefik's dynamic configuration (`sync/traefik`), the nginx gateway's site ([`gateway`],
//! `sync/gateway`) and the internal DNS view ([`dns`], `sync/dns/internal`); certificates and the public
//! DNS view are to come.
//!
//! What is written is built, checked and rendered in core ([`phoenix_core::traefik`],
//! [`phoenix_core::gateway`], [`phoenix_core::dns`]); this crate reads the live files and replaces them,
//! through the node's host channel and `lxc-attach`, each checked by its server's own test first.

pub mod certificates;
pub mod dns;
pub mod gateway;
mod manager;
pub mod public_dns;

pub use manager::EdgeManager;
