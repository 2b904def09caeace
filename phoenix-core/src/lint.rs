//! The linter's room: reading a configuration directory into the typed model, with every problem found at
//! once as a diagnostic that points into the JSON (file, line, JSON pointer).
//!
//! The stages run in [`validate`](crate::validate()): parse with byte spans ([`source`]), JSON Schema ([`schema`]), typed
//! deserialisation and defaults ([`crate::model`]), then semantic checks ([`checks`]) over the guests'
//! dependency graph ([`graph`]). Nothing here talks to Proxmox; `cargo xtask validate` and editors use this
//! room alone.

pub mod checks;
pub mod diagnostic;
pub mod features;
pub mod graph;
pub mod schema;
pub mod source;
pub mod suggest;
pub(crate) mod tape;
pub(crate) mod validate;
