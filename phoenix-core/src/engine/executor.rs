//! The executor: applies a plan over the managers in dependency order with bounded parallelism, or runs an
//! operation (start, stop, snapshot, delete, ...) on the targets of a plan the same way ([`operate`]).
//!
//! Limits: at most `parallelism` resources at once, `per_node` per Proxmox node, and `per_storage` creations
//! per storage of a node (Proxmox locks a storage while it allocates; clones on one storage contend). One resource
//! is never worked on by two tasks. A failure skips everything that depends on it; independent branches
//! go on. A stop request (Ctrl-C) ends dispatching; what is in flight finishes, the rest is reported.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::engine::address::{Address, ResourceKind};
use crate::engine::change::Action;
use crate::engine::journal::{Journal, Step};
use crate::engine::manager::{Manager, ManagerError, Managers, Operation};
use crate::engine::plan::{Plan, PlanEntry};

/// Limits and permissions of a run.
#[derive(Debug, Clone)]
pub struct ExecuteOptions {
    /// Resources worked on at once.
    pub parallelism: usize,
    /// Resources worked on at once on one node.
    pub per_node: usize,
    /// Creations and clones at once on one storage of a node ([`storage_key`]).
    pub per_storage: usize,
    /// Carry out destructive changes (replace, delete, shrink).
    pub allow_destroy: bool,
    /// Carry out risky changes (the network interface Phoenix reaches the node through).
    pub allow_risky: bool,
}

impl Default for ExecuteOptions {
    fn default() -> ExecuteOptions {
        ExecuteOptions {
            parallelism: 8,
            per_node: 4,
            per_storage: 2,
            allow_destroy: false,
            allow_risky: false,
        }
    }
}

/// How one resource ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "status", rename_all = "lowercase")]
pub enum Outcome {
    /// Its changes were applied.
    Changed {
        /// How many changes.
        changes: usize,
    },
    /// It was already converged.
    Unchanged,
    /// A change failed.
    Failed {
        /// The error.
        error: String,
        /// Changes applied before the failure.
        applied: usize,
    },
    /// Not attempted because something it depends on failed or was skipped.
    Skipped {
        /// Why.
        reason: String,
    },
    /// Not attempted because the run was stopped.
    NotStarted,
}

/// One resource's line of the report.
#[derive(Debug, Clone, Serialize)]
pub struct ResourceReport {
    /// The resource.
    pub address: Address,
    /// How it ended.
    #[serde(flatten)]
    pub outcome: Outcome,
    /// Time spent on it, in milliseconds.
    #[serde(rename = "duration_ms", serialize_with = "millis")]
    pub duration: Duration,
    /// What its work did, step by step: each write Proxmox acknowledged, each task and how it ended.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub steps: Vec<Step>,
}

fn millis<S: serde::Serializer>(duration: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_u64(u64::try_from(duration.as_millis()).unwrap_or(u64::MAX))
}

/// What a run did, resource by resource, in plan order.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// One line per resource of the plan.
    pub resources: Vec<ResourceReport>,
    /// Wall time of the run, in milliseconds.
    #[serde(rename = "elapsed_ms", serialize_with = "millis")]
    pub elapsed: Duration,
    /// Whether the run was stopped before the end.
    pub stopped: bool,
}

impl Report {
    /// Whether every resource converged.
    pub fn succeeded(&self) -> bool {
        !self.stopped
            && self
                .resources
                .iter()
                .all(|line| matches!(line.outcome, Outcome::Changed { .. } | Outcome::Unchanged))
    }

    /// How many resources ended each way: (changed, unchanged, failed, skipped, not started).
    pub fn counts(&self) -> (usize, usize, usize, usize, usize) {
        let mut counts = (0, 0, 0, 0, 0);
        for line in &self.resources {
            match line.outcome {
                Outcome::Changed { .. } => counts.0 += 1,
                Outcome::Unchanged => counts.1 += 1,
                Outcome::Failed { .. } => counts.2 += 1,
                Outcome::Skipped { .. } => counts.3 += 1,
                Outcome::NotStarted => counts.4 += 1,
            }
        }
        counts
    }
}

/// Progress of a run, for a progress bar or a log.
#[derive(Debug, Clone)]
pub enum Event {
    /// Work on a resource began.
    Started(Address),
    /// A resource reached its outcome.
    Finished(ResourceReport),
    /// The work on a resource waits for something (a lock, a task, a guest agent); `None`: no longer.
    Waiting {
        /// The resource.
        address: Address,
        /// What it waits for.
        what: Option<String>,
    },
}

/// Why a run did not start.
#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub enum ExecuteError {
    /// The plan destroys something and the run was not allowed to.
    #[error("the plan has destructive changes: {}", addresses.join(", "))]
    #[diagnostic(
        code(phoenix::apply::destructive),
        help("review the plan, then pass --allow-destroy to carry them out")
    )]
    DestructiveRefused {
        /// The resources with destructive changes.
        addresses: Vec<String>,
    },
    /// The plan may cut the node off the network and the run was not allowed to.
    #[error("the plan has risky changes: {}", addresses.join(", "))]
    #[diagnostic(
        code(phoenix::apply::risky),
        help("review the plan (a console on the node helps if it goes wrong), then pass --allow-risky")
    )]
    RiskyRefused {
        /// The resources with risky changes.
        addresses: Vec<String>,
    },
    /// A resource of the plan has no manager.
    #[error("no manager is registered for {kind} resources")]
    #[diagnostic(code(phoenix::apply::no_manager))]
    NoManager {
        /// The kind.
        kind: ResourceKind,
    },
}

/// Asks a running executor to stop dispatching. Cloning shares the request.
#[derive(Debug, Clone)]
pub struct StopHandle(Arc<watch::Sender<bool>>);

/// The executor's side of a [`StopHandle`].
#[derive(Debug, Clone)]
pub struct StopSignal(watch::Receiver<bool>);

impl StopHandle {
    /// A new handle and the signal to give the executor.
    pub fn new() -> (StopHandle, StopSignal) {
        let (sender, receiver) = watch::channel(false);
        (StopHandle(Arc::new(sender)), StopSignal(receiver))
    }

    /// Requests the stop.
    pub fn stop(&self) {
        self.0.send_replace(true);
    }
}

impl StopSignal {
    /// Whether a stop was requested.
    pub fn is_stopped(&self) -> bool {
        *self.0.borrow()
    }

    /// Waits until a stop is requested.
    pub async fn stopped(&mut self) {
        while !*self.0.borrow_and_update() {
            if self.0.changed().await.is_err() {
                // The handle is gone: nobody can ask for a stop any more.
                std::future::pending::<()>().await;
            }
        }
    }
}

/// Applies a plan. Returns the report of every resource, or an error when the run may not start.
pub async fn execute(
    plan: &Plan,
    managers: &Managers,
    options: &ExecuteOptions,
    stop: StopSignal,
    events: Option<mpsc::UnboundedSender<Event>>,
) -> Result<Report, ExecuteError> {
    if !options.allow_destroy {
        let addresses: Vec<String> = plan
            .destructive()
            .map(|entry| entry.address.to_string())
            .collect();
        if !addresses.is_empty() {
            return Err(ExecuteError::DestructiveRefused { addresses });
        }
    }
    if !options.allow_risky {
        let addresses: Vec<String> = plan.risky().map(|entry| entry.address.to_string()).collect();
        if !addresses.is_empty() {
            return Err(ExecuteError::RiskyRefused { addresses });
        }
    }
    for entry in plan.entries().iter().filter(|entry| !entry.changes.is_empty()) {
        let kind = entry.address.kind();
        if managers.get(kind).is_none() {
            return Err(ExecuteError::NoManager { kind });
        }
    }

    run(
        plan.entries().to_vec(),
        Work::Apply,
        managers,
        options,
        stop,
        events,
    )
    .await
}

/// Runs `operation` on each target of `plan` (every resource when it has none), through their managers:
/// in dependency order, or dependents first for stop and delete, with the limits and failure isolation of
/// [`execute`]. A target that does not exist fails without its manager being asked.
pub async fn operate(
    plan: &Plan,
    operation: &Operation,
    managers: &Managers,
    options: &ExecuteOptions,
    stop: StopSignal,
    events: Option<mpsc::UnboundedSender<Event>>,
) -> Result<Report, ExecuteError> {
    let chosen: BTreeSet<&Address> = if plan.targets().is_empty() {
        plan.entries().iter().map(|entry| &entry.address).collect()
    } else {
        plan.targets().iter().collect()
    };
    let mut entries: Vec<PlanEntry> = plan
        .entries()
        .iter()
        .filter(|entry| chosen.contains(&entry.address))
        .cloned()
        .collect();
    for entry in &mut entries {
        entry.depends_on.retain(|address| chosen.contains(address));
        // Orders are for converging; an operation follows prerequisites only.
        entry.after.clear();
        if let Some(kind) = entries_kind_without_manager(entry, managers) {
            return Err(ExecuteError::NoManager { kind });
        }
    }
    if matches!(operation, Operation::Stop | Operation::Delete) {
        // Dependents first: each entry waits for those that depended on it.
        let mut dependents: BTreeMap<Address, Vec<Address>> = BTreeMap::new();
        for entry in &entries {
            for prerequisite in &entry.depends_on {
                dependents
                    .entry(prerequisite.clone())
                    .or_default()
                    .push(entry.address.clone());
            }
        }
        for entry in &mut entries {
            entry.depends_on = dependents.remove(&entry.address).unwrap_or_default();
        }
        entries.reverse();
    }
    run(
        entries,
        Work::Operate(operation.clone()),
        managers,
        options,
        stop,
        events,
    )
    .await
}

fn entries_kind_without_manager(entry: &PlanEntry, managers: &Managers) -> Option<ResourceKind> {
    let kind = entry.address.kind();
    managers.get(kind).is_none().then_some(kind)
}

/// What a run does to each resource.
#[derive(Debug, Clone)]
enum Work {
    /// Apply its changes; a resource without changes is unchanged.
    Apply,
    /// Run an operation on it.
    Operate(Operation),
}

async fn run(
    entries: Vec<PlanEntry>,
    work: Work,
    managers: &Managers,
    options: &ExecuteOptions,
    mut stop: StopSignal,
    events: Option<mpsc::UnboundedSender<Event>>,
) -> Result<Report, ExecuteError> {
    let started = Instant::now();
    let entries: Arc<Vec<PlanEntry>> = Arc::new(entries);
    let index: BTreeMap<Address, usize> = entries
        .iter()
        .enumerate()
        .map(|(position, entry)| (entry.address.clone(), position))
        .collect();
    let mut dependents: Vec<Vec<usize>> = vec![Vec::new(); entries.len()];
    let mut followers: Vec<Vec<usize>> = vec![Vec::new(); entries.len()];
    let mut waiting: Vec<usize> = vec![0; entries.len()];
    for (position, entry) in entries.iter().enumerate() {
        for (edges, after) in [(&entry.depends_on, false), (&entry.after, true)] {
            for before in edges.iter().filter_map(|address| index.get(address)) {
                let list = if after { &mut followers } else { &mut dependents };
                list[*before].push(position);
                waiting[position] += 1;
            }
        }
    }

    let mut run = Run {
        outcomes: vec![None; entries.len()],
        events,
        ready: (0..entries.len())
            .filter(|&position| waiting[position] == 0)
            .collect(),
        waiting,
        dependents,
        followers,
        running_per_node: BTreeMap::new(),
        creating_per_storage: BTreeMap::new(),
    };
    let parallelism = options.parallelism.max(1);
    let mut tasks: JoinSet<(usize, Outcome, Duration, Vec<Step>)> = JoinSet::new();
    let mut in_flight: BTreeMap<usize, Claims> = BTreeMap::new();
    let mut task_positions: std::collections::HashMap<tokio::task::Id, usize> =
        std::collections::HashMap::new();

    loop {
        if !stop.is_stopped() {
            // Dispatch, in plan order, everything ready that fits the limits.
            let mut settled = false;
            let candidates: Vec<usize> = run.ready.iter().copied().collect();
            for position in candidates {
                let entry = &entries[position];
                if let Some(reason) = entry.unreachable() {
                    let outcome = Outcome::Skipped {
                        reason: reason.to_owned(),
                    };
                    run.ready.remove(&position);
                    run.finish(position, &entries, outcome, Duration::ZERO, Vec::new());
                    settled = true;
                    continue;
                }
                if matches!(work, Work::Apply) && entry.is_unchanged() {
                    run.ready.remove(&position);
                    run.finish(position, &entries, Outcome::Unchanged, Duration::ZERO, Vec::new());
                    settled = true;
                    continue;
                }
                if in_flight.len() >= parallelism {
                    continue;
                }
                let claims = Claims::of(entry);
                if !run.fits(&claims, options) {
                    continue;
                }
                run.ready.remove(&position);
                run.take(&claims);
                in_flight.insert(position, claims);
                tracing::debug!(address = %entry.address, changes = entry.changes.len(), "dispatching");
                run.emit(Event::Started(entry.address.clone()));
                let manager = managers
                    .get(entry.address.kind())
                    .expect("checked before the run")
                    .clone();
                let entries = Arc::clone(&entries);
                let work = work.clone();
                let journal = Journal::new(entry.address.clone(), Some(stop.clone()), run.events.clone());
                let handle = tasks.spawn(async move {
                    let began = Instant::now();
                    let outcome = journal
                        .clone()
                        .scope(work_on(&entries[position], &work, manager))
                        .await;
                    (position, outcome, began.elapsed(), journal.steps())
                });
                task_positions.insert(handle.id(), position);
            }
            // A converged resource may have released others that can start now.
            if settled {
                continue;
            }
        }
        if tasks.is_empty() {
            break;
        }
        tokio::select! {
            joined = tasks.join_next_with_id() => {
                let (position, outcome, duration, steps) = match joined.expect("the set is not empty") {
                    Ok((_, finished)) => finished,
                    // A manager that panics fails its resource; the run goes on and reports.
                    Err(error) => {
                        let position = task_positions[&error.id()];
                        let outcome = Outcome::Failed { error: format!("the manager panicked: {error}"), applied: 0 };
                        (position, outcome, Duration::ZERO, Vec::new())
                    }
                };
                let claims = in_flight.remove(&position).expect("a finished task was in flight");
                run.release(&claims);
                run.finish(position, &entries, outcome, duration, steps);
            }
            () = stop.stopped(), if !stop.is_stopped() => {
                tracing::info!(in_flight = in_flight.len(), "stop requested: no new operations start, those in flight stop at their next step");
            }
        }
    }

    let stopped = stop.is_stopped();
    let resources = entries
        .iter()
        .zip(run.outcomes)
        .map(|(entry, outcome)| {
            let (outcome, duration, steps) =
                outcome.unwrap_or((Outcome::NotStarted, Duration::ZERO, Vec::new()));
            ResourceReport {
                address: entry.address.clone(),
                outcome,
                duration,
                steps,
            }
        })
        .collect();
    Ok(Report {
        resources,
        elapsed: started.elapsed(),
        stopped,
    })
}

/// The work on one resource: its changes one after the other, or the operation.
async fn work_on(entry: &PlanEntry, work: &Work, manager: Arc<dyn Manager>) -> Outcome {
    if let Work::Operate(operation) = work {
        let result = match &entry.observed {
            None => Err(ManagerError::failed(format!("{} does not exist", entry.address))),
            Some(_) => {
                manager
                    .operate(entry.resource.as_ref(), &entry.address, operation)
                    .await
            }
        };
        return match result {
            Ok(()) => Outcome::Changed { changes: 1 },
            Err(error) => Outcome::Failed {
                error: describe(&error),
                applied: 0,
            },
        };
    }
    let mut applied = 0;
    for change in &entry.changes {
        if let Err(error) = manager.apply(entry.resource.as_ref(), change).await {
            let error = describe(&error);
            return Outcome::Failed { error, applied };
        }
        applied += 1;
    }
    Outcome::Changed { changes: applied }
}

fn describe(error: &ManagerError) -> String {
    match error {
        ManagerError::Failed {
            message,
            details: Some(details),
        } => format!("{message}\n{details}"),
        other => other.to_string(),
    }
}

/// The limited things a resource's work occupies.
#[derive(Debug, Clone, Default)]
struct Claims {
    node: Option<String>,
    storage: Option<String>,
}

impl Claims {
    fn of(entry: &PlanEntry) -> Claims {
        let resource = entry.resource.as_ref();
        let creates = entry
            .changes
            .iter()
            .any(|change| matches!(change.action, Action::Create | Action::Replace));
        // A resource's node is the one its configuration names; a guest that names none is on the node a
        // creation placed it on, else where it was seen.
        let field = |name: &str| {
            entry
                .changes
                .iter()
                .flat_map(|change| &change.fields)
                .find(|field| field.field == name)
                .and_then(|field| field.new.as_ref()?.as_str())
        };
        let node = resource.and_then(|resource| resource.node.clone()).or_else(|| {
            field("node")
                .or_else(|| entry.observed.as_ref()?.fields.get("node")?.as_str())
                .map(str::to_owned)
        });
        // A storage is counted per node: `local-lvm` on two nodes is two volume groups. (A storage that
        // several nodes share is therefore limited on each node, not once for the cluster.)
        let storage = resource
            .filter(|_| creates)
            .and_then(|resource| resource.storage.as_ref())
            .map(|storage| storage_key(node.as_deref(), storage));
        Claims { node, storage }
    }
}

/// What the per-storage limit counts: a storage of a node (`pve1/local-lvm`), or the storage alone for a
/// resource whose node is unknown.
pub fn storage_key(node: Option<&str>, storage: &str) -> String {
    match node {
        Some(node) => format!("{node}/{storage}"),
        None => storage.to_owned(),
    }
}

struct Run {
    outcomes: Vec<Option<(Outcome, Duration, Vec<Step>)>>,
    events: Option<mpsc::UnboundedSender<Event>>,
    ready: BTreeSet<usize>,
    waiting: Vec<usize>,
    dependents: Vec<Vec<usize>>,
    followers: Vec<Vec<usize>>,
    running_per_node: BTreeMap<String, usize>,
    creating_per_storage: BTreeMap<String, usize>,
}

impl Run {
    fn fits(&self, claims: &Claims, options: &ExecuteOptions) -> bool {
        let node_ok = claims.node.as_ref().is_none_or(|node| {
            self.running_per_node.get(node).copied().unwrap_or(0) < options.per_node.max(1)
        });
        let storage_ok = claims.storage.as_ref().is_none_or(|storage| {
            self.creating_per_storage.get(storage).copied().unwrap_or(0) < options.per_storage.max(1)
        });
        node_ok && storage_ok
    }

    fn take(&mut self, claims: &Claims) {
        if let Some(node) = &claims.node {
            *self.running_per_node.entry(node.clone()).or_insert(0) += 1;
        }
        if let Some(storage) = &claims.storage {
            *self.creating_per_storage.entry(storage.clone()).or_insert(0) += 1;
        }
    }

    fn release(&mut self, claims: &Claims) {
        if let Some(node) = &claims.node {
            *self.running_per_node.get_mut(node).expect("taken before") -= 1;
        }
        if let Some(storage) = &claims.storage {
            *self.creating_per_storage.get_mut(storage).expect("taken before") -= 1;
        }
    }

    fn emit(&self, event: Event) {
        if let Some(events) = &self.events {
            // A closed receiver only means nobody watches the progress.
            let _ = events.send(event);
        }
    }

    /// Records an outcome; a success releases dependents, a failure skips them all, transitively. Either
    /// way, what only had to come after it (and after what is skipped) is released.
    fn finish(
        &mut self,
        position: usize,
        entries: &[PlanEntry],
        outcome: Outcome,
        duration: Duration,
        steps: Vec<Step>,
    ) {
        let succeeded = matches!(outcome, Outcome::Changed { .. } | Outcome::Unchanged);
        tracing::debug!(address = %entries[position].address, ?outcome, ?duration, "finished");
        self.emit(Event::Finished(ResourceReport {
            address: entries[position].address.clone(),
            outcome: outcome.clone(),
            duration,
            steps: steps.clone(),
        }));
        self.outcomes[position] = Some((outcome, duration, steps));
        self.unblock(self.followers[position].clone());
        let dependents = self.dependents[position].clone();
        if succeeded {
            self.unblock(dependents);
            return;
        }
        let cause = &entries[position].address;
        let why = match &self.outcomes[position] {
            Some((Outcome::Skipped { reason }, ..)) => format!("{cause} was skipped: {reason}"),
            _ => format!("{cause} failed"),
        };
        let mut stack = dependents;
        while let Some(dependent) = stack.pop() {
            if self.outcomes[dependent].is_some() {
                continue;
            }
            let reason = why.clone();
            self.ready.remove(&dependent);
            self.emit(Event::Finished(ResourceReport {
                address: entries[dependent].address.clone(),
                outcome: Outcome::Skipped {
                    reason: reason.clone(),
                },
                duration: Duration::ZERO,
                steps: Vec::new(),
            }));
            self.outcomes[dependent] = Some((Outcome::Skipped { reason }, Duration::ZERO, Vec::new()));
            stack.extend(self.dependents[dependent].iter().copied());
            self.unblock(self.followers[dependent].clone());
        }
    }

    /// One thing fewer to wait for, for each of `positions`.
    fn unblock(&mut self, positions: Vec<usize>) {
        for position in positions {
            self.waiting[position] -= 1;
            if self.waiting[position] == 0 && self.outcomes[position].is_none() {
                self.ready.insert(position);
            }
        }
    }
}
