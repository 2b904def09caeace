//! The `Manager` trait every manager crate implements, and the registry the CLI composes them in.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering as AtomicOrdering};

use async_trait::async_trait;

use crate::engine::address::{Address, ResourceKind};
use crate::engine::change::{Change, Observed};
use crate::engine::resource::Resource;

/// One kind of infrastructure. Implementations are idempotent: after apply, observe then diff finds nothing.
#[async_trait]
pub trait Manager: Send + Sync {
    /// The kind of resources this manager owns.
    fn kind(&self) -> ResourceKind;

    /// Whether this manager can converge `desired`; resources it cannot are counted as not planned, like
    /// those of a kind without a manager. The default is every resource of its kind.
    fn manages(&self, desired: &Resource) -> bool {
        let _ = desired;
        true
    }

    /// Reads the live state of the desired resources in one batch, plus resources of this kind that Phoenix
    /// owns but the configuration no longer declares. Has no side effects.
    ///
    /// The managers of one plan observe in the same [`Round`]: reads they share (Proxmox's cluster listing)
    /// may be made once per round, and never reused in a later one.
    async fn observe(
        &self,
        desired: &[Resource],
        round: Round,
    ) -> Result<BTreeMap<Address, Observed>, ManagerError>;

    /// Pure and synchronous: the changes that take `observed` to `desired`; `None` means absent (a create).
    fn diff(&self, desired: &Resource, observed: Option<&Observed>) -> Vec<Change>;

    /// The creation of `desired` for a plan to hold instead of [`diff`](Self::diff)'s, when `diff` against
    /// nothing can show the rest from `desired` alone: see [`Differ::lean_creation`]. The default is none.
    fn lean_creation(&self, desired: &Resource) -> Option<Change> {
        let _ = desired;
        None
    }

    /// Carries out one change. Safe to run again after a crash: an operation already done is not repeated.
    /// `desired` is `None` for deletions.
    async fn apply(&self, desired: Option<&Resource>, change: &Change) -> Result<(), ManagerError>;

    /// Operates an existing resource outside convergence: start, stop, snapshot, ... Managers support
    /// what makes sense for their kind; the default refuses.
    async fn operate(
        &self,
        desired: Option<&Resource>,
        address: &Address,
        operation: &Operation,
    ) -> Result<(), ManagerError> {
        let _ = desired;
        Err(ManagerError::failed(format!(
            "{address} does not support `{}`",
            operation.verb()
        )))
    }
}

/// One round of observation: the observes of one plan. Each [`Round::next`] is new to the process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Round(u64);

impl Round {
    /// A round no observe has seen yet.
    pub fn next() -> Round {
        static ROUNDS: AtomicU64 = AtomicU64::new(1);
        Round(ROUNDS.fetch_add(1, AtomicOrdering::Relaxed))
    }
}

/// The pure half of a manager: the fields a desired resource declares, and the changes that take a live
/// state there. The demo target runs a real manager's differ over a simulated live state, so that a demo
/// plan names the fields, values and consequences a real Proxmox would get.
pub trait Differ: Send + Sync {
    /// The changes that take `observed` to `desired`; `None` means absent (a create).
    fn diff(&self, desired: &Resource, observed: Option<&Observed>) -> Vec<Change>;

    /// The live state right after `desired` is created: what a read would find, so that a diff of
    /// `desired` against it is empty.
    fn created(&self, desired: &Resource) -> Observed;

    /// The creation of `desired` for a plan to hold instead of [`diff`](Self::diff)'s, when `diff` against
    /// nothing shows the same creation again from `desired` alone: a plan of thousands of creations then
    /// holds none of their fields, and asks `diff` for them one resource at a time when it is printed
    /// ([`PlanEntry::shown_changes`](crate::engine::plan::PlanEntry::shown_changes)).
    ///
    /// The lean change has `diff`'s action and consequence, and of its fields those that apply reads from
    /// the plan rather than from `desired` (the node a placement chose). The default is none: the plan holds
    /// `diff`'s creation.
    fn lean_creation(&self, desired: &Resource) -> Option<Change> {
        let _ = desired;
        None
    }
}

/// Something an operator asks of a resource, outside convergence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Operation {
    /// Start it.
    Start,
    /// Shut it down cleanly.
    Stop,
    /// Restart it.
    Restart,
    /// Take a snapshot of this name.
    Snapshot(String),
    /// Roll back to the snapshot of this name.
    Rollback(String),
    /// Run its health check.
    HealthCheck,
    /// Destroy it (only what Phoenix owns).
    Delete,
    /// Mark it as owned by Phoenix (`phoenix import --adopt`), changing nothing else.
    Adopt,
}

impl Operation {
    /// The command-line verb.
    pub fn verb(&self) -> &'static str {
        match self {
            Operation::Start => "start",
            Operation::Stop => "stop",
            Operation::Restart => "restart",
            Operation::Snapshot(_) => "snapshot",
            Operation::Rollback(_) => "rollback",
            Operation::HealthCheck => "health-check",
            Operation::Delete => "delete",
            Operation::Adopt => "adopt",
        }
    }
}

/// A failure reported by a manager.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, miette::Diagnostic)]
pub enum ManagerError {
    /// Worth another attempt (a 5xx, a timeout before the operation was accepted).
    #[error("{message}")]
    #[diagnostic(code(phoenix::manager::transient))]
    Transient {
        /// What went wrong.
        message: String,
    },
    /// The resource already exists (seen when a dispatch is retried after it had in fact succeeded).
    #[error("{message}")]
    #[diagnostic(code(phoenix::manager::already_exists))]
    AlreadyExists {
        /// What went wrong.
        message: String,
    },
    /// Not worth retrying: the operation was refused or failed.
    #[error("{message}")]
    #[diagnostic(code(phoenix::manager::failed))]
    Failed {
        /// What went wrong.
        message: String,
        /// Details (the tail of a task log, say).
        details: Option<String>,
    },
    /// The operation ran past its time limit.
    #[error("{operation} timed out after {seconds} s")]
    #[diagnostic(code(phoenix::manager::timeout))]
    Timeout {
        /// What was being waited for.
        operation: String,
        /// The limit.
        seconds: u64,
    },
    /// There is no live target to talk to.
    #[error("no live target: {reason}")]
    #[diagnostic(code(phoenix::manager::offline))]
    Offline {
        /// Why.
        reason: String,
    },
}

impl ManagerError {
    /// A permanent failure with a message.
    pub fn failed(message: impl Into<String>) -> ManagerError {
        ManagerError::Failed {
            message: message.into(),
            details: None,
        }
    }

    /// Whether trying the same dispatch again may succeed.
    pub fn is_transient(&self) -> bool {
        matches!(self, ManagerError::Transient { .. })
    }
}

/// The managers of a run, one per kind.
#[derive(Clone, Default)]
pub struct Managers {
    by_kind: BTreeMap<ResourceKind, Arc<dyn Manager>>,
}

impl Managers {
    /// Registers a manager; a second one for the same kind replaces the first.
    pub fn register(&mut self, manager: Arc<dyn Manager>) {
        self.by_kind.insert(manager.kind(), manager);
    }

    /// The manager of a kind.
    pub fn get(&self, kind: ResourceKind) -> Option<&Arc<dyn Manager>> {
        self.by_kind.get(&kind)
    }

    /// The kinds that have a manager.
    pub fn kinds(&self) -> impl Iterator<Item = ResourceKind> + '_ {
        self.by_kind.keys().copied()
    }
}

impl std::fmt::Debug for Managers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.by_kind.keys()).finish()
    }
}
