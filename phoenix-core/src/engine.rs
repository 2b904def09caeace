//! The engine's room: what Phoenix converges and how. The validated model becomes [`resource`]s with
//! [`address`]es; [`manager`]s observe and diff them into [`change`]s; [`plan`] orders those; the
//! [`executor`] applies them with bounded parallelism and [`retry`]; [`render`] shows plans and reports.
//! [`journal`] records what each resource's work did and waits for. [`fake`] is an in-memory manager for the engine's own tests.
//!
//! The engine does no IO of its own: managers, in other crates, do.

pub mod access;
pub mod address;
pub mod change;
pub mod executor;
pub mod fake;
pub mod host_firewall;
pub mod journal;
pub mod manager;
pub mod plan;
pub mod render;
pub mod resource;
pub mod retry;
