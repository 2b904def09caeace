//! A typed, reliable client of the Proxmox VE API, shared by the host, LXC and VM managers.
//!
//! - [`Settings`]: where and how to connect, from the configuration's `proxmox` section, overridden by the
//!   environment (`PHOENIX_PVE_*`); secrets never appear in `Debug` output.
//! - [`Client`]: HTTPS with rustls, verified against a CA file or a pinned SHA-256 fingerprint (or loudly
//!   not at all), API token or ticket authentication (CSRF token on writes, renewal before expiry),
//!   form-encoded bodies, the `{"data": ...}` envelope, typed errors.
//! - Tasks: UPIDs, polling with backoff, `WARNINGS: n` as success, failures with the tail of the task log.
//! - Retries: dispatches are retried on transient errors only; a task once accepted is never dispatched again.

mod client;
pub mod cluster;
pub mod compare;
mod error;
pub mod firewall;
pub mod gpu;
pub mod guest;
pub mod guests;
pub mod host;
pub mod import;
pub mod lifecycle;
pub mod props;
pub mod runlock;
mod session;
mod settings;
mod task;
mod tls;

pub use client::{Client, ClusterResource, Form};
pub use error::PveError;
pub use reqwest::Method;
pub use session::{Session, SessionError, storage_for};

/// The tag Phoenix puts on the guests it owns; it deletes nothing without it.
pub const OWNER_TAG: &str = "phoenix";

/// The tags of a Proxmox `tags` value, which may separate them with `;`, `,` or spaces.
pub fn split_tags(tags: &str) -> impl Iterator<Item = &str> {
    tags.split([';', ',', ' ']).filter(|tag| !tag.is_empty())
}

/// Whether a Proxmox `tags` value carries [`OWNER_TAG`].
pub fn has_owner_tag(tags: &str) -> bool {
    split_tags(tags).any(|tag| tag == OWNER_TAG)
}
pub use settings::{
    Auth, SecretString, Settings, SettingsError, TlsTrust, parse_fingerprint, resolve_secret,
};
pub use task::{TaskOutcome, Upid};
pub use tls::client_config as tls_client_config;

/// Makes ring the process's rustls crypto provider, for any other rustls user in the process (reqwest
/// clients built without a preconfigured TLS setup need one). Idempotent.
pub fn install_crypto_provider() {
    // An error only means a provider is installed already, which is what is wanted.
    let _ = rustls::crypto::ring::default_provider().install_default();
}
