//! The core of Phoenix, in two rooms around one model:
//!
//! - [`config`] and [`model`]: the typed configuration, as the four files say it ([`config`]) and resolved,
//!   with defaults merged ([`model::Estate`]). Both rooms speak it.
//! - [`lint`]: the linter. JSON Schemas, source spans, semantic checks and diagnostics; [`validate`] turns
//!   the files of a configuration directory into an [`Estate`] or a list of problems.
//! - [`engine`]: addresses, resources, the `Manager` trait, changes, the plan, the executor, retries,
//!   rendering, and an in-memory manager for tests.
//!
//! This crate does no IO: callers read the files of a configuration directory into [`SourceFile`]s and
//! call [`validate`]; everything that talks to Proxmox lives in other crates.

#![warn(missing_docs)]

pub mod certificates;
pub mod config;
pub mod dns;
pub mod engine;
pub mod gateway;
pub mod import;
pub mod lint;
pub mod model;
pub mod traefik;

pub use config::FileKind;
pub use engine::access::{AccessStep, AclEntries};
pub use engine::address::{Address, ResourceKind};
pub use engine::change::{
    Action, Change, Consequence, FieldChange, FieldKey, Fields, Observed, OwnedDiffer, TypedChange,
    diff_owned,
};
pub use engine::executor::{
    Event, ExecuteOptions, Outcome, Report, StopHandle, StopSignal, execute, operate,
};
pub use engine::host_firewall::FirewallPart;
pub use engine::journal::{Journal, Step, StepState};
pub use engine::manager::{Differ, Manager, ManagerError, Managers, Operation, Round};
pub use engine::plan::{Plan, PlanEntry, PlanOptions, Target, dependents, plan};
pub use engine::resource::{
    AptPackages, AptRepositories, Desired, DockerRun, GatewaySync, HostDns, HostStep, PortainerStep,
    ProxmoxStorage, Replica, Resource, SnapshotDataset, SnapshotPlan, SubIds, SyncStep, TraefikSync,
    resources,
};
pub use engine::retry::{Dispatched, RetryPolicy, Retryable};
pub use lint::checks::CheckOptions;
pub use lint::diagnostic::{Problem, ProblemRecord, Severity};
pub use lint::graph::DependencyGraph;
pub use lint::source::SourceFile;
pub use lint::validate::{Validation, validate};
pub use model::{Estate, Guest, GuestKind, GuestSpec};
