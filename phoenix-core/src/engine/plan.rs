//! The plan: every resource in scope, in dependency order, with the changes that converge it.
//!
//! [`plan`] observes the live estate through the managers (or nothing, offline), diffs each resource and
//! orders the result. A plan is deterministic for a given configuration and observed state.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt;
use std::sync::Arc;

use serde::Serialize;

use crate::engine::address::{Address, ResourceKind};
use crate::engine::change::{Action, Change, Consequence, Observed};
use crate::engine::manager::{Manager, ManagerError, Managers, Round};
use crate::engine::resource::Resource;

/// Version of the JSON plan format (`phoenix plan --output json`).
pub const PLAN_FORMAT_VERSION: u32 = 1;

/// What to plan.
#[derive(Debug, Clone, Default)]
pub struct PlanOptions {
    /// Plan only these resources and what they depend on; everything when empty.
    pub targets: Vec<Target>,
    /// Plan against an empty estate instead of observing one; the reason is shown with the plan.
    pub offline: Option<String>,
}

/// A command-line target: an address, or a bare guest ID that names a container or a VM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// `lxc/101`, `stack/qdrant@1002`, ...
    Address(Address),
    /// `101`: the container or VM with this ID.
    Guest(u32),
    /// `host/*`: every planned resource of a kind (none is not an error).
    Kind(ResourceKind),
}

impl std::str::FromStr for Target {
    type Err = crate::engine::address::AddressParseError;

    fn from_str(text: &str) -> Result<Target, Self::Err> {
        if let Some(kind) = text.strip_suffix("/*")
            && let Some(kind) = ResourceKind::ALL.into_iter().find(|known| known.as_str() == kind)
        {
            return Ok(Target::Kind(kind));
        }
        match text.parse::<u32>() {
            Ok(id) => Ok(Target::Guest(id)),
            Err(_) => text.parse().map(Target::Address),
        }
    }
}

/// Why no plan could be made.
#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub enum PlanError {
    /// A target names nothing the configuration declares.
    #[error("target {target} is not declared in the configuration")]
    #[diagnostic(
        code(phoenix::plan::unknown_target),
        help("name a declared guest ID or an address such as lxc/101")
    )]
    UnknownTarget {
        /// The target as written.
        target: String,
    },
    /// Reading the live state failed.
    #[error("failed to observe {kind} resources")]
    #[diagnostic(code(phoenix::plan::observe))]
    Observe {
        /// The kind whose manager failed.
        kind: ResourceKind,
        /// The manager's error.
        #[source]
        source: ManagerError,
    },
    /// The resources form a cycle (validation prevents this for guests).
    #[error("the resources form a dependency cycle through {address}")]
    #[diagnostic(code(phoenix::plan::cycle))]
    Cycle {
        /// A resource on the cycle.
        address: Address,
    },
}

/// One resource in the plan.
#[derive(Debug, Clone)]
pub struct PlanEntry {
    /// Its address.
    pub address: Address,
    /// The desired resource; `None` for a resource being deleted.
    pub resource: Option<Resource>,
    /// Resources in the plan that must be converged first.
    pub depends_on: Vec<Address>,
    /// Resources in the plan worked on first, whatever their outcome (see [`Resource::after`]).
    pub after: Vec<Address>,
    /// What converging it takes; empty when it is up to date. A creation may be lean: it holds only the
    /// fields apply reads from the plan, and [`PlanEntry::shown_changes`] has them all.
    pub changes: Vec<Change>,
    /// Its live state, when it exists (and the plan is not offline).
    pub observed: Option<Observed>,
    /// The manager that shows a lean creation's fields, when `changes` is one.
    shown_by: Option<ShownBy>,
}

/// The manager of a lean creation ([`crate::engine::manager::Differ::lean_creation`]).
#[derive(Clone)]
struct ShownBy(Arc<dyn Manager>);

impl fmt::Debug for ShownBy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ShownBy({})", self.0.kind())
    }
}

impl PlanEntry {
    /// The changes as plans show them: [`PlanEntry::changes`], with every field of a lean creation, made
    /// again from the resource by its manager (only this entry's, while it is shown).
    pub fn shown_changes(&self) -> Cow<'_, [Change]> {
        match (&self.shown_by, &self.resource) {
            (Some(ShownBy(manager)), Some(resource)) => Cow::Owned(manager.diff(resource, None)),
            _ => Cow::Borrowed(&self.changes),
        }
    }

    /// Whether the resource is already converged: it has no changes and could be read.
    pub fn is_unchanged(&self) -> bool {
        self.changes.is_empty() && self.unreachable().is_none()
    }

    /// Why the resource could not be read (its node is offline), when it could not: nothing of it is
    /// planned, and a run skips it and what depends on it.
    pub fn unreachable(&self) -> Option<&str> {
        self.observed.as_ref()?.unreachable.as_deref()
    }

    /// The worst consequence of its changes.
    pub fn consequence(&self) -> Option<Consequence> {
        self.changes.iter().map(Change::consequence).max()
    }

    /// Whether one of its changes is risky: a destructive change elsewhere in it does not hide that.
    pub fn is_risky(&self) -> bool {
        self.changes
            .iter()
            .flat_map(|change| &change.fields)
            .any(|field| field.consequence == Consequence::Risky)
    }

    /// The short name of the resource, when it has one.
    pub fn name(&self) -> Option<&str> {
        self.resource
            .as_ref()
            .and_then(|resource| resource.name.as_deref())
    }
}

/// An ordered set of changes.
#[derive(Debug, Clone)]
pub struct Plan {
    entries: Vec<PlanEntry>,
    offline: Option<String>,
    targets: Vec<Address>,
    unmanaged: BTreeMap<ResourceKind, usize>,
}

/// Counts of a plan, for its summary line.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct PlanSummary {
    /// Resources created.
    pub create: usize,
    /// Resources updated in place.
    pub update: usize,
    /// Resources destroyed and created again.
    pub replace: usize,
    /// Resources deleted.
    pub delete: usize,
    /// Resources whose changes take effect only after a restart.
    pub restart: usize,
    /// Resources with a destructive change.
    pub destructive: usize,
    /// Resources with a risky change (see [`Consequence::Risky`]); left out of JSON when none.
    #[serde(skip_serializing_if = "is_zero")]
    pub risky: usize,
    /// Resources a change takes down for a while (see [`Consequence::Downtime`]); left out of JSON when
    /// none.
    #[serde(skip_serializing_if = "is_zero")]
    pub downtime: usize,
    /// Resources that could not be read (their node is offline); left out of JSON when none. While there
    /// are any, the plan is incomplete.
    #[serde(skip_serializing_if = "is_zero")]
    pub unreachable: usize,
    /// Resources already converged.
    pub unchanged: usize,
    /// Declared resources that were not observed or planned, because their kind has no manager: while
    /// there are any, the plan is incomplete.
    pub not_planned: usize,
}

impl Plan {
    /// Every resource in scope, in the order they can be converged.
    pub fn entries(&self) -> &[PlanEntry] {
        &self.entries
    }

    /// Why the plan was made against an empty estate, when it was.
    pub fn offline(&self) -> Option<&str> {
        self.offline.as_deref()
    }

    /// The targets the plan was limited to (empty: everything).
    pub fn targets(&self) -> &[Address] {
        &self.targets
    }

    /// Resources declared but not planned because no manager for their kind is registered.
    pub fn unmanaged(&self) -> &BTreeMap<ResourceKind, usize> {
        &self.unmanaged
    }

    /// Whether every declared resource in scope was observed and planned.
    pub fn is_complete(&self) -> bool {
        self.unmanaged.is_empty() && self.unreachable().next().is_none()
    }

    /// The resources that could not be read, with why.
    pub fn unreachable(&self) -> impl Iterator<Item = (&Address, &str)> {
        self.entries
            .iter()
            .filter_map(|entry| Some((&entry.address, entry.unreachable()?)))
    }

    /// Whether anything would change.
    pub fn has_changes(&self) -> bool {
        self.entries.iter().any(|entry| !entry.changes.is_empty())
    }

    /// Counts by kind of change.
    pub fn summary(&self) -> PlanSummary {
        let mut summary = PlanSummary {
            not_planned: self.unmanaged.values().sum(),
            ..PlanSummary::default()
        };
        for entry in &self.entries {
            if entry.unreachable().is_some() {
                summary.unreachable += 1;
                continue;
            }
            if entry.is_unchanged() {
                summary.unchanged += 1;
                continue;
            }
            let action = entry
                .changes
                .iter()
                .map(|change| change.action)
                .max()
                .expect("has changes");
            match action {
                Action::Create => summary.create += 1,
                Action::Update => summary.update += 1,
                Action::Replace => summary.replace += 1,
                Action::Delete => summary.delete += 1,
            }
            match entry.consequence() {
                Some(Consequence::Restart) => summary.restart += 1,
                Some(Consequence::Downtime) => summary.downtime += 1,
                Some(Consequence::Destructive) => summary.destructive += 1,
                _ => {}
            }
            if entry.is_risky() {
                summary.risky += 1;
            }
        }
        summary
    }

    /// The resources with a destructive change.
    pub fn destructive(&self) -> impl Iterator<Item = &PlanEntry> {
        self.entries
            .iter()
            .filter(|entry| entry.consequence() == Some(Consequence::Destructive))
    }

    /// The resources with a risky change, whatever else they change.
    pub fn risky(&self) -> impl Iterator<Item = &PlanEntry> {
        self.entries.iter().filter(|entry| entry.is_risky())
    }
}

fn is_zero(count: &usize) -> bool {
    *count == 0
}

/// The resources outside `named` that depend on one of them, directly: what deleting `named` would break.
/// Sync steps are left out: they follow the guests they publish and drop what is gone.
pub fn dependents(resources: &[Resource], named: &[Address]) -> Vec<Address> {
    resources
        .iter()
        .filter(|resource| !named.contains(&resource.address))
        .filter(|resource| resource.kind() != ResourceKind::Sync)
        .filter(|resource| resource.depends_on.iter().any(|needed| named.contains(needed)))
        .map(|resource| resource.address.clone())
        .collect()
}

/// Observes, diffs and orders. Resources that no manager manages are counted, not planned.
pub async fn plan(
    resources: Vec<Resource>,
    managers: &Managers,
    options: &PlanOptions,
) -> Result<Plan, PlanError> {
    let mut unmanaged = BTreeMap::new();
    let mut by_kind: BTreeMap<ResourceKind, Vec<Resource>> = BTreeMap::new();
    for resource in resources {
        if managers
            .get(resource.kind())
            .is_some_and(|manager| manager.manages(&resource))
        {
            by_kind.entry(resource.kind()).or_default().push(resource);
        } else {
            *unmanaged.entry(resource.kind()).or_insert(0) += 1;
        }
    }
    for kind in managers.kinds() {
        by_kind.entry(kind).or_default();
    }

    let observed = if options.offline.is_some() {
        BTreeMap::new()
    } else {
        observe_all(&by_kind, managers).await?
    };

    let mut entries: BTreeMap<Address, PlanEntry> = BTreeMap::new();
    for (kind, resources) in by_kind {
        let manager = managers.get(kind).expect("only kinds with a manager are grouped");
        for resource in resources {
            let seen = observed.get(&resource.address);
            let lean = match seen {
                None => manager.lean_creation(&resource),
                Some(_) => None,
            };
            let shown_by = lean.is_some().then(|| ShownBy(manager.clone()));
            let changes = match (lean, seen) {
                (Some(lean), _) => vec![lean],
                (None, Some(seen)) if seen.unreachable.is_some() => Vec::new(),
                (None, seen) => manager.diff(&resource, seen),
            };
            entries.insert(
                resource.address.clone(),
                PlanEntry {
                    address: resource.address.clone(),
                    depends_on: resource.depends_on.clone(),
                    after: resource.after.clone(),
                    observed: seen.cloned(),
                    resource: Some(resource),
                    changes,
                    shown_by,
                },
            );
        }
    }
    // Owned resources that are no longer declared are deleted, unless they cannot be reached now.
    let undeclared: Vec<(&Address, &Observed)> = observed
        .iter()
        .filter(|(address, _)| !entries.contains_key(*address))
        .collect();
    for (address, seen) in undeclared {
        let changes = match seen.unreachable {
            Some(_) => Vec::new(),
            None => vec![Change::delete(address.clone())],
        };
        entries.insert(
            address.clone(),
            PlanEntry {
                address: address.clone(),
                resource: None,
                depends_on: Vec::new(),
                after: Vec::new(),
                observed: Some(seen.clone()),
                changes,
                shown_by: None,
            },
        );
    }
    link_deletions(&mut entries);
    let known: BTreeSet<Address> = entries.keys().cloned().collect();
    for entry in entries.values_mut() {
        let own = entry.address.clone();
        for edges in [&mut entry.depends_on, &mut entry.after] {
            edges.retain(|address| address != &own && known.contains(address));
            edges.sort();
            edges.dedup();
        }
        // An order is moot where there is a prerequisite.
        let PlanEntry {
            depends_on, after, ..
        } = entry;
        after.retain(|address| !depends_on.contains(address));
    }

    let targets = resolve_targets(&options.targets, &entries)?;
    // Targets that name nothing planned (`host/*` with no host step) limit the plan to nothing.
    if !options.targets.is_empty() {
        let scope = closure(&targets, &entries);
        entries.retain(|address, _| scope.contains(address));
        for entry in entries.values_mut() {
            entry.after.retain(|address| scope.contains(address));
        }
    }
    let entries = order(entries)?;
    Ok(Plan {
        entries,
        offline: options.offline.clone(),
        targets,
        unmanaged,
    })
}

async fn observe_all(
    by_kind: &BTreeMap<ResourceKind, Vec<Resource>>,
    managers: &Managers,
) -> Result<BTreeMap<Address, Observed>, PlanError> {
    let round = Round::next();
    let mut tasks = tokio::task::JoinSet::new();
    for (&kind, resources) in by_kind {
        let manager = managers.get(kind).expect("grouped by registered kind").clone();
        let resources = resources.clone();
        tasks.spawn(async move { (kind, manager.observe(&resources, round).await) });
    }
    let mut observed = BTreeMap::new();
    let mut first_error: Option<PlanError> = None;
    while let Some(joined) = tasks.join_next().await {
        let (kind, result) = joined.expect("observe tasks do not panic");
        match result {
            Ok(found) => {
                tracing::debug!(%kind, resources = found.len(), "observed");
                observed.extend(found.into_iter().filter(|(address, _)| address.kind() == kind));
            }
            Err(source) => {
                let error = PlanError::Observe { kind, source };
                // Keep the error of the lowest kind, so the report does not depend on timing.
                if first_error
                    .as_ref()
                    .is_none_or(|first| matches!(first, PlanError::Observe { kind: k, .. } if kind < *k))
                {
                    first_error = Some(error);
                }
            }
        }
    }
    match first_error {
        Some(error) => Err(error),
        None => Ok(observed),
    }
}

/// Deletions run in reverse dependency order: a VM is deleted after the stacks deployed on it.
fn link_deletions(entries: &mut BTreeMap<Address, PlanEntry>) {
    let deleted: Vec<Address> = entries
        .values()
        .filter(|entry| entry.resource.is_none())
        .map(|entry| entry.address.clone())
        .collect();
    for address in &deleted {
        if let Address::Stack { vmid, .. } = address
            && let Some(vm) = entries.get_mut(&Address::Vm(*vmid))
            && vm.resource.is_none()
        {
            vm.depends_on.push(address.clone());
        }
        // A dataset goes after the datasets under it (on its node, in a cluster: `host/<node>/zfs/...`).
        if let Address::Host(path) = address
            && let Some(at) = path.find("zfs/dataset/")
            && (at == 0 || path[..at].ends_with('/'))
            && let Some((parent, _)) = path[at + "zfs/dataset/".len()..].rsplit_once('/')
            && let Some(entry) =
                entries.get_mut(&Address::Host(format!("{}zfs/dataset/{parent}", &path[..at])))
            && entry.resource.is_none()
        {
            entry.depends_on.push(address.clone());
        }
    }
}

fn resolve_targets(
    targets: &[Target],
    entries: &BTreeMap<Address, PlanEntry>,
) -> Result<Vec<Address>, PlanError> {
    let mut resolved = Vec::new();
    for target in targets {
        if let Target::Kind(kind) = target {
            for address in entries.keys().filter(|address| address.kind() == *kind) {
                if !resolved.contains(address) {
                    resolved.push(address.clone());
                }
            }
            continue;
        }
        let address = match target {
            Target::Address(address) => entries.contains_key(address).then(|| address.clone()),
            Target::Guest(id) => [Address::Lxc(*id), Address::Vm(*id)]
                .into_iter()
                .find(|address| entries.contains_key(address)),
            Target::Kind(_) => continue,
        };
        let Some(address) = address else {
            let text = match target {
                Target::Address(address) => address.to_string(),
                Target::Guest(id) => id.to_string(),
                Target::Kind(kind) => format!("{kind}/*"),
            };
            return Err(PlanError::UnknownTarget { target: text });
        };
        if !resolved.contains(&address) {
            resolved.push(address);
        }
    }
    Ok(resolved)
}

/// The targets and everything they depend on, transitively.
fn closure(targets: &[Address], entries: &BTreeMap<Address, PlanEntry>) -> BTreeSet<Address> {
    let mut scope = BTreeSet::new();
    let mut queue: VecDeque<&Address> = targets.iter().collect();
    while let Some(address) = queue.pop_front() {
        if scope.insert(address.clone())
            && let Some(entry) = entries.get(address)
        {
            queue.extend(entry.depends_on.iter());
        }
    }
    scope
}

/// Kahn's algorithm; among resources ready at the same time, the smallest address comes first.
fn order(mut entries: BTreeMap<Address, PlanEntry>) -> Result<Vec<PlanEntry>, PlanError> {
    let mut waiting: BTreeMap<Address, usize> = entries
        .iter()
        .map(|(address, entry)| (address.clone(), entry.depends_on.len() + entry.after.len()))
        .collect();
    let mut dependents: BTreeMap<Address, Vec<Address>> = BTreeMap::new();
    for entry in entries.values() {
        for prerequisite in entry.depends_on.iter().chain(&entry.after) {
            dependents
                .entry(prerequisite.clone())
                .or_default()
                .push(entry.address.clone());
        }
    }
    let mut ready: BTreeSet<Address> = waiting
        .iter()
        .filter(|(_, count)| **count == 0)
        .map(|(address, _)| address.clone())
        .collect();
    let mut ordered = Vec::with_capacity(entries.len());
    while let Some(address) = ready.pop_first() {
        for dependent in dependents.get(&address).map(Vec::as_slice).unwrap_or_default() {
            let count = waiting.get_mut(dependent).expect("every dependent is an entry");
            *count -= 1;
            if *count == 0 {
                ready.insert(dependent.clone());
            }
        }
        ordered.push(entries.remove(&address).expect("ready addresses are entries"));
    }
    match entries.into_keys().next() {
        Some(address) => Err(PlanError::Cycle { address }),
        None => Ok(ordered),
    }
}
