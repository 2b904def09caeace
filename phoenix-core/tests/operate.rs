//! Operations (start, stop, delete, ...) run through the core executor: dependency order, dependents
//! first for stop and delete, and a failure skipping only what depends on it.

use std::sync::Arc;

use phoenix_core::config::ContainerConfig;
use phoenix_core::engine::fake::FakeManager;
use phoenix_core::{
    Address, Desired, ExecuteOptions, Managers, Operation, Outcome, PlanOptions, Report, Resource,
    ResourceKind, StopHandle, Target,
};
use serde_json::json;

/// A chain 900 <- 901 <- 902 (each cloned from the one before) and an independent 950.
fn resources() -> Vec<Resource> {
    let container = |id: u32, depends_on: &[u32]| Resource {
        address: Address::Lxc(id),
        name: Some(format!("ct{id}")),
        depends_on: depends_on.iter().map(|id| Address::Lxc(*id)).collect(),
        after: Vec::new(),
        node: None,
        storage: None,
        desired: Desired::Container(std::sync::Arc::new(ContainerConfig {
            name: format!("ct{id}"),
            ..ContainerConfig::default()
        })),
    };
    vec![
        container(900, &[]),
        container(901, &[900]),
        container(902, &[901]),
        container(950, &[]),
    ]
}

/// Every container exists and runs; `fail` makes operations on one of them fail.
fn estate(fail: Option<u32>) -> (FakeManager, Managers) {
    let fake = FakeManager::new(ResourceKind::Lxc);
    for id in [900, 901, 902, 950] {
        fake.insert(Address::Lxc(id), [("status".to_owned(), json!("running"))].into());
    }
    if let Some(id) = fail {
        fake.fail(Address::Lxc(id), "the node said no");
    }
    let mut managers = Managers::default();
    managers.register(Arc::new(fake.clone()));
    (fake, managers)
}

#[track_caller]
fn lines(report: &Report) -> Vec<String> {
    report
        .resources
        .iter()
        .map(|line| {
            let outcome = match &line.outcome {
                Outcome::Changed { .. } => "done".to_owned(),
                Outcome::Failed { error, .. } => format!("failed: {error}"),
                Outcome::Skipped { reason } => format!("skipped: {reason}"),
                Outcome::Unchanged => "unchanged".to_owned(),
                Outcome::NotStarted => "not started".to_owned(),
            };
            format!("{} {outcome}", line.address)
        })
        .collect()
}

async fn run(operation: Operation, targets: &[u32], fail: Option<u32>) -> (FakeManager, Report) {
    let (fake, managers) = estate(fail);
    let report = operate(&managers, operation, targets).await;
    (fake, report)
}

async fn operate(managers: &Managers, operation: Operation, targets: &[u32]) -> Report {
    let options = PlanOptions {
        targets: targets.iter().map(|id| Target::Guest(*id)).collect(),
        offline: None,
    };
    let plan = phoenix_core::plan(resources(), managers, &options)
        .await
        .expect("plans");
    let (_handle, signal) = StopHandle::new();
    phoenix_core::operate(
        &plan,
        &operation,
        managers,
        &ExecuteOptions::default(),
        signal,
        None,
    )
    .await
    .expect("runs")
}

#[tokio::test]
async fn stop_runs_dependents_first_and_a_failure_skips_only_what_it_blocks() {
    let (fake, report) = run(Operation::Stop, &[900, 901, 902, 950], Some(901)).await;
    assert_eq!(
        lines(&report),
        [
            "lxc/950 done",
            "lxc/902 done",
            "lxc/901 failed: the node said no",
            "lxc/900 skipped: lxc/901 failed",
        ]
    );
    let live = fake.live();
    assert_eq!(live[&Address::Lxc(902)].fields["status"], "stopped");
    assert_eq!(live[&Address::Lxc(950)].fields["status"], "stopped");
    assert_eq!(live[&Address::Lxc(900)].fields["status"], "running");
}

#[tokio::test]
async fn start_runs_in_dependency_order_on_the_targets_only() {
    let (fake, report) = run(Operation::Start, &[902], None).await;
    // 902 is the target; 900 and 901 are in the plan as what it depends on, but are not started.
    assert_eq!(lines(&report), ["lxc/902 done"]);
    assert_eq!(fake.writes(), 1);

    let (_, report) = run(Operation::Start, &[900, 902], Some(900)).await;
    assert_eq!(
        lines(&report),
        ["lxc/900 failed: the node said no", "lxc/902 done"],
        "902 does not depend on 900 within the targets (901 is not one), so it goes on"
    );
}

#[tokio::test]
async fn an_absent_target_fails_without_asking_its_manager() {
    let (fake, managers) = estate(None);
    fake.set_live(Default::default());
    let report = operate(&managers, Operation::Stop, &[950]).await;
    assert_eq!(lines(&report), ["lxc/950 failed: lxc/950 does not exist"]);
    assert_eq!(fake.writes(), 0);
}

#[test]
fn dependents_are_what_deleting_would_break() {
    let named = [Address::Lxc(901)];
    assert_eq!(
        phoenix_core::dependents(&resources(), &named),
        [Address::Lxc(902)]
    );
}
