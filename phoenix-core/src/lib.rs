//! The core of Phoenix: the configuration model, its JSON Schemas, validation with precise diagnostics,
//! the resource graph, the plan, the `Manager` trait and the executor that applies a plan.
//!
//! This crate does no IO: callers read the files of a configuration directory into [`SourceFile`]s and
//! call [`validate`]; everything that talks to Proxmox lives in other crates.

#![warn(missing_docs)]

pub mod address;
pub mod change;
pub mod checks;
pub mod config;
pub mod diagnostic;
pub mod executor;
pub mod fake;
pub mod features;
pub mod graph;
pub mod manager;
pub mod model;
pub mod plan;
pub mod render;
pub mod resource;
pub mod retry;
pub mod schema;
pub mod source;
mod suggest;
mod validate;

pub use address::{Address, ResourceKind};
pub use change::{Action, Change, Consequence, FieldChange, Observed};
pub use checks::CheckOptions;
pub use config::FileKind;
pub use diagnostic::{Problem, ProblemRecord, Severity};
pub use executor::{Event, ExecuteOptions, Outcome, Report, StopHandle, StopSignal, execute};
pub use graph::DependencyGraph;
pub use manager::{Manager, ManagerError, Managers, Operation};
pub use model::{Estate, Guest, GuestKind, GuestSpec};
pub use plan::{Plan, PlanEntry, PlanOptions, Target, plan};
pub use resource::{Desired, Resource, resources};
pub use retry::{Dispatched, RetryPolicy, Retryable};
pub use source::SourceFile;
pub use validate::{Validation, validate};
