//! The core of Phoenix: the configuration model, its JSON Schemas, validation with precise diagnostics,
//! and the dependency graph of guests.
//!
//! This crate does no IO: callers read the files of a configuration directory into [`SourceFile`]s and
//! call [`validate`]; everything that talks to Proxmox lives in other crates.

#![warn(missing_docs)]

pub mod checks;
pub mod config;
pub mod diagnostic;
pub mod features;
pub mod graph;
pub mod model;
pub mod schema;
pub mod source;
mod suggest;
mod validate;

pub use checks::CheckOptions;
pub use config::FileKind;
pub use diagnostic::{Problem, ProblemRecord, Severity};
pub use graph::DependencyGraph;
pub use model::{Estate, Guest, GuestKind, GuestSpec};
pub use source::SourceFile;
pub use validate::{Validation, validate};
