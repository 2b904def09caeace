//! Stateful in-memory fake managers, one of every kind, for the engine's scenario tests.

use std::collections::BTreeMap;
use std::sync::Arc;

use phoenix_core::engine::fake::FakeManager;
use phoenix_core::{ExecuteOptions, Managers, Plan, PlanOptions, Report, Resource, ResourceKind};

/// A [`FakeManager`] of every resource kind, registered in `managers`.
pub struct Fakes {
    fakes: BTreeMap<ResourceKind, FakeManager>,
    /// The fakes, for planning and executing against them.
    pub managers: Managers,
}

impl Default for Fakes {
    fn default() -> Fakes {
        Fakes::new()
    }
}

impl Fakes {
    /// Empty fakes: nothing exists yet.
    pub fn new() -> Fakes {
        let mut managers = Managers::default();
        let mut fakes = BTreeMap::new();
        for kind in ResourceKind::ALL {
            let fake = FakeManager::new(kind);
            managers.register(Arc::new(fake.clone()));
            fakes.insert(kind, fake);
        }
        Fakes { fakes, managers }
    }

    /// The fake of one kind, to look at or to drift by hand.
    pub fn fake(&self, kind: ResourceKind) -> &FakeManager {
        &self.fakes[&kind]
    }

    /// Plans `resources`, limited to `targets` (addresses as an operator writes them; none plans all).
    pub async fn plan(&self, resources: &[Resource], targets: &[&str]) -> Plan {
        let options = PlanOptions {
            targets: targets
                .iter()
                .map(|target| target.parse().expect("valid target"))
                .collect(),
            offline: None,
        };
        crate::plan(resources.to_vec(), &self.managers, &options).await
    }

    /// Runs a plan to its end.
    pub async fn apply(&self, plan: &Plan, options: &ExecuteOptions) -> Report {
        crate::apply(plan, &self.managers, options).await
    }

    /// How many writes the fakes took, all kinds together.
    pub fn writes(&self) -> usize {
        self.fakes.values().map(FakeManager::writes).sum()
    }
}
