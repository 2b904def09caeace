//! Scenario tests of the engine: plan and execute over stateful fake managers.
//!
//! Each scenario loads the fixture estate, plans against the fakes' live state, applies, and checks what
//! the fakes hold afterwards; a converged estate plans to nothing.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use phoenix_core::engine::executor::ExecuteError;
use phoenix_core::engine::fake::FakeManager;
use phoenix_core::{
    Action, Address, CheckOptions, Consequence, Event, ExecuteOptions, Managers, Outcome, Plan, PlanOptions,
    Report, Resource, ResourceKind, StopHandle, Target, execute, plan,
};
use phoenix_testing::{Fakes, fixture};
use serde_json::json;

fn fixture_resources() -> Vec<Resource> {
    let dir = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/estate"));
    fixture::resources(fixture::every_source(dir), &CheckOptions::default())
}

fn outcome<'a>(report: &'a Report, address: &str) -> &'a Outcome {
    let address: Address = address.parse().expect("valid address");
    &report
        .resources
        .iter()
        .find(|line| line.address == address)
        .expect("the resource is in the report")
        .outcome
}

fn addresses(plan: &Plan) -> Vec<String> {
    plan.entries()
        .iter()
        .map(|entry| entry.address.to_string())
        .collect()
}

#[tokio::test]
async fn apply_from_empty_converges_and_a_second_plan_is_empty() {
    let estate = Fakes::new();
    let resources = fixture_resources();
    let first = estate.plan(&resources, &[]).await;
    let summary = first.summary();
    assert_eq!(summary.create, resources.len());
    assert_eq!(summary.unchanged, 0);
    // Host steps before guests, clones after their source, then `phoenix sync`'s pipeline: DNS, Portainer
    // and its stacks, and Traefik last, after the stack it routes to.
    assert_eq!(
        addresses(&first),
        [
            "host/dns",
            "host/firewall",
            "host/network/vmbr0",
            "host/storage/local",
            "host/zfs/pool/tank",
            "host/zfs/dataset/tank/guests",
            "host/storage/tank-guests",
            "lxc/900",
            "lxc/101",
            "lxc/102",
            "vm/9000",
            "vm/1001",
            "vm/1002",
            "sync/dns/internal",
            "portainer/server",
            "portainer/endpoint/1002",
            "stack/web@1002",
            "sync/traefik",
        ]
    );

    let report = estate.apply(&first, &ExecuteOptions::default()).await;
    assert!(report.succeeded(), "{report:#?}");
    assert_eq!(report.counts(), (resources.len(), 0, 0, 0, 0));
    let writes = estate.writes();
    assert_eq!(writes, resources.len());

    let second = estate.plan(&resources, &[]).await;
    assert!(!second.has_changes(), "{:#?}", second.entries());
    assert_eq!(second.summary().unchanged, resources.len());
    let report = estate.apply(&second, &ExecuteOptions::default()).await;
    assert_eq!(report.counts(), (0, resources.len(), 0, 0, 0));
    assert_eq!(estate.writes(), writes, "a converged estate is not written to");
}

#[tokio::test]
async fn a_failure_skips_dependents_lets_independents_finish_and_a_rerun_converges() {
    let estate = Fakes::new();
    let resources = fixture_resources();
    estate
        .fake(ResourceKind::Lxc)
        .fail(Address::Lxc(900), "TASK ERROR: storage 'tank-guests' is full");
    let plan = estate.plan(&resources, &[]).await;
    let report = estate.apply(&plan, &ExecuteOptions::default()).await;
    assert!(!report.succeeded());

    assert!(
        matches!(outcome(&report, "lxc/900"), Outcome::Failed { error, applied: 0 } if error.contains("storage 'tank-guests' is full"))
    );
    for skipped in [
        "lxc/101",
        "lxc/102",
        "vm/1001",
        "vm/1002",
        "stack/web@1002",
        "sync/traefik",
    ] {
        assert_eq!(
            outcome(&report, skipped),
            &Outcome::Skipped {
                reason: "lxc/900 failed".into()
            },
            "{skipped}"
        );
    }
    for done in [
        "host/dns",
        "host/firewall",
        "host/network/vmbr0",
        "host/zfs/pool/tank",
        "host/zfs/dataset/tank/guests",
        "vm/9000",
        "sync/dns/internal",
    ] {
        assert!(
            matches!(outcome(&report, done), Outcome::Changed { .. }),
            "{done}"
        );
    }

    estate.fake(ResourceKind::Lxc).heal(&Address::Lxc(900));
    let rerun = estate.plan(&resources, &[]).await;
    assert_eq!(rerun.summary().unchanged, 9, "what succeeded is not redone");
    assert!(estate.apply(&rerun, &ExecuteOptions::default()).await.succeeded());
    assert!(!estate.plan(&resources, &[]).await.has_changes());
}

#[tokio::test]
async fn an_unreachable_resource_is_skipped_with_its_dependents_and_the_rest_converges() {
    let estate = Fakes::new();
    let resources = fixture_resources();
    let first = estate.plan(&resources, &[]).await;
    assert!(estate.apply(&first, &ExecuteOptions::default()).await.succeeded());
    // The template's node goes offline, and a clone of it and a VM drift meanwhile.
    let lxc = estate.fake(ResourceKind::Lxc);
    lxc.cut_off(Address::Lxc(900), "node pve3 is unreachable");
    lxc.drift(&Address::Lxc(101), "memory_mb", json!(1));
    estate
        .fake(ResourceKind::Vm)
        .drift(&Address::Vm(9000), "cores", json!(64));

    let plan = estate.plan(&resources, &[]).await;
    assert!(!plan.is_complete());
    assert_eq!(plan.summary().unreachable, 1);
    let unreachable: Vec<_> = plan.unreachable().collect();
    assert_eq!(unreachable, [(&Address::Lxc(900), "node pve3 is unreachable")]);
    let text = phoenix_core::engine::render::plan_text(&plan, phoenix_core::engine::render::Colour::Never);
    assert!(
        text.contains("lxc/900: node pve3 is unreachable; not read or planned"),
        "{text}"
    );
    assert!(
        text.contains("1 unreachable (not read): this plan is incomplete"),
        "{text}"
    );

    let writes = estate.writes();
    let report = estate.apply(&plan, &ExecuteOptions::default()).await;
    assert!(
        !report.succeeded(),
        "a run that skipped something did not converge"
    );
    assert_eq!(
        outcome(&report, "lxc/900"),
        &Outcome::Skipped {
            reason: "node pve3 is unreachable".into()
        }
    );
    // The clone depends on its template, so it waits, drift and all; the VM is elsewhere and converges.
    assert_eq!(
        outcome(&report, "lxc/101"),
        &Outcome::Skipped {
            reason: "lxc/900 was skipped: node pve3 is unreachable".into()
        }
    );
    assert!(matches!(
        outcome(&report, "vm/9000"),
        Outcome::Changed { changes: 1 }
    ));
    assert_eq!(estate.writes(), writes + 1);

    // Back online, the next run picks up what was left.
    lxc.reconnect(&Address::Lxc(900));
    let rerun = estate.plan(&resources, &[]).await;
    assert!(rerun.is_complete());
    assert_eq!(rerun.summary().update, 1);
    assert!(estate.apply(&rerun, &ExecuteOptions::default()).await.succeeded());
    assert!(!estate.plan(&resources, &[]).await.has_changes());
}

#[tokio::test]
async fn what_only_comes_after_a_failure_still_runs() {
    let estate = Fakes::new();
    let resources = fixture_resources();
    let traefik = resources
        .iter()
        .find(|resource| resource.address.to_string() == "sync/traefik")
        .expect("declared");
    assert_eq!(traefik.after, ["stack/web@1002".parse::<Address>().unwrap()]);
    let web: Address = "stack/web@1002".parse().unwrap();
    estate
        .fake(ResourceKind::Stack)
        .fail(web.clone(), "compose: no such image");
    let plan = estate.plan(&resources, &[]).await;
    let report = estate.apply(&plan, &ExecuteOptions::default()).await;
    assert!(matches!(
        outcome(&report, "stack/web@1002"),
        Outcome::Failed { .. }
    ));
    // Traefik waited for the stack, and its routes are published all the same.
    assert!(matches!(
        outcome(&report, "sync/traefik"),
        Outcome::Changed { .. }
    ));
    let position = |address: &str| {
        report
            .resources
            .iter()
            .position(|line| line.address.to_string() == address)
            .expect("reported")
    };
    assert!(position("sync/dns/internal") < position("portainer/server"));

    // The order brings nothing into scope: Traefik alone plans its prerequisites, not the stack.
    let alone = estate.plan(&resources, &["sync/traefik"]).await;
    assert!(!addresses(&alone).contains(&"stack/web@1002".to_owned()));
}

#[tokio::test]
async fn drift_is_planned_with_old_and_new_values_and_corrected() {
    let estate = Fakes::new();
    let resources = fixture_resources();
    estate
        .apply(&estate.plan(&resources, &[]).await, &ExecuteOptions::default())
        .await;
    estate
        .fake(ResourceKind::Lxc)
        .drift(&Address::Lxc(101), "memory_mb", json!(512));
    estate.fake(ResourceKind::Vm).drift(
        &Address::Vm(1001),
        "network_config",
        json!({"ip": "10.1.0.99/24"}),
    );

    let plan = estate.plan(&resources, &[]).await;
    let changed: Vec<_> = plan
        .entries()
        .iter()
        .filter(|entry| !entry.is_unchanged())
        .collect();
    assert_eq!(changed.len(), 2);
    let memory = &changed[0].changes[0];
    assert_eq!(
        (memory.address.to_string(), memory.action),
        ("lxc/101".to_owned(), Action::Update)
    );
    assert_eq!(memory.fields.len(), 1);
    assert_eq!(memory.fields[0].field, "memory_mb");
    assert_eq!(
        (memory.fields[0].old.clone(), memory.fields[0].new.clone()),
        (Some(json!(512)), Some(json!(1024)))
    );
    assert_eq!(memory.consequence(), Consequence::Live);
    assert_eq!(
        changed[1].consequence(),
        Some(Consequence::Restart),
        "a network change needs a restart"
    );
    assert_eq!(plan.summary().restart, 1);

    let writes = estate.writes();
    assert!(estate.apply(&plan, &ExecuteOptions::default()).await.succeeded());
    assert_eq!(
        estate.writes(),
        writes + 2,
        "only the drifted resources are written"
    );
    assert!(!estate.plan(&resources, &[]).await.has_changes());
}

/// Host steps whose every change is risky, as a change to the management network is.
struct RiskyHost;

impl phoenix_core::Differ for RiskyHost {
    fn diff(
        &self,
        desired: &Resource,
        observed: Option<&phoenix_core::Observed>,
    ) -> Vec<phoenix_core::Change> {
        if observed.is_some() {
            return Vec::new();
        }
        let mut change = phoenix_core::Change::create(desired.address.clone(), desired.declared_fields());
        for field in &mut change.fields {
            field.consequence = Consequence::Risky;
        }
        vec![change]
    }

    fn created(&self, desired: &Resource) -> phoenix_core::Observed {
        phoenix_core::Observed::new(desired.declared_fields())
    }
}

#[tokio::test]
async fn risky_changes_need_permission_and_refusal_touches_nothing() {
    let mut estate = Fakes::new();
    let host = FakeManager::new(ResourceKind::Host).with_differ(Arc::new(RiskyHost));
    estate.managers.register(Arc::new(host.clone()));
    let resources = fixture_resources();
    let plan = estate.plan(&resources, &[]).await;
    let risky: Vec<String> = plan.risky().map(|entry| entry.address.to_string()).collect();
    assert!(
        risky.iter().all(|address| address.starts_with("host/")),
        "{risky:?}"
    );
    assert_eq!(plan.summary().risky, risky.len());
    assert!(!risky.is_empty());
    let text = phoenix_core::engine::render::plan_text(&plan, phoenix_core::engine::render::Colour::Never);
    assert!(text.contains("[RISKY]") && text.contains(" risky"), "{text}");

    let (_handle, signal) = StopHandle::new();
    let refused = execute(&plan, &estate.managers, &ExecuteOptions::default(), signal, None).await;
    assert!(
        matches!(refused, Err(ExecuteError::RiskyRefused { ref addresses }) if addresses == &risky),
        "{refused:?}"
    );
    assert_eq!(estate.writes() + host.writes(), 0, "nothing was touched");

    let allowed = ExecuteOptions {
        allow_risky: true,
        ..ExecuteOptions::default()
    };
    assert!(estate.apply(&plan, &allowed).await.succeeded());
    assert_eq!(host.writes(), risky.len());
}

#[tokio::test]
async fn destructive_changes_need_permission() {
    let estate = Fakes::new();
    let resources = fixture_resources();
    estate
        .apply(&estate.plan(&resources, &[]).await, &ExecuteOptions::default())
        .await;
    estate
        .fake(ResourceKind::Lxc)
        .drift(&Address::Lxc(102), "storage_size_gb", json!(64));
    estate
        .fake(ResourceKind::Lxc)
        .insert(Address::Lxc(555), BTreeMap::from([("name".into(), json!("old"))]));

    let plan = estate.plan(&resources, &[]).await;
    let destructive: Vec<String> = plan
        .destructive()
        .map(|entry| entry.address.to_string())
        .collect();
    assert_eq!(
        destructive,
        ["lxc/555"],
        "an owned guest no longer declared is deleted"
    );
    let (_handle, signal) = StopHandle::new();
    let refused = execute(&plan, &estate.managers, &ExecuteOptions::default(), signal, None).await;
    assert!(
        matches!(refused, Err(ExecuteError::DestructiveRefused { ref addresses }) if addresses == &["lxc/555"])
    );
    assert_eq!(
        estate.fake(ResourceKind::Lxc).live().len(),
        4,
        "nothing was touched"
    );

    let allowed = ExecuteOptions {
        allow_destroy: true,
        ..ExecuteOptions::default()
    };
    assert!(estate.apply(&plan, &allowed).await.succeeded());
    assert!(
        !estate
            .fake(ResourceKind::Lxc)
            .live()
            .contains_key(&Address::Lxc(555))
    );
}

#[tokio::test]
async fn a_shrinking_disk_is_destructive_and_a_replacement_is_planned_as_such() {
    let estate = Fakes::new();
    let mut resources = fixture_resources();
    estate
        .apply(&estate.plan(&resources, &[]).await, &ExecuteOptions::default())
        .await;
    for resource in &mut resources {
        if let phoenix_core::Desired::Container(container) = &mut resource.desired
            && resource.address == Address::Lxc(101)
        {
            let container = std::sync::Arc::make_mut(container);
            container.storage_size_gb = Some(8);
            container.unprivileged = Some(false);
        }
    }
    estate
        .fake(ResourceKind::Lxc)
        .drift(&Address::Lxc(101), "storage_size_gb", json!(16));
    estate
        .fake(ResourceKind::Lxc)
        .drift(&Address::Lxc(101), "unprivileged", json!(true));
    let plan = estate.plan(&resources, &["lxc/101"]).await;
    let entry = plan
        .entries()
        .iter()
        .find(|entry| entry.address == Address::Lxc(101))
        .expect("planned");
    assert_eq!(entry.changes[0].action, Action::Replace);
    let consequences: Vec<(&str, Consequence)> = entry.changes[0]
        .fields
        .iter()
        .map(|field| (field.field.as_str(), field.consequence))
        .collect();
    assert_eq!(
        consequences,
        [
            ("storage_size_gb", Consequence::Destructive),
            ("unprivileged", Consequence::Destructive)
        ]
    );
}

#[tokio::test]
async fn a_target_brings_what_it_depends_on_and_nothing_else() {
    let estate = Fakes::new();
    let resources = fixture_resources();
    let plan = estate.plan(&resources, &["1001"]).await;
    assert_eq!(
        addresses(&plan),
        [
            "host/dns",
            "host/firewall",
            "host/network/vmbr0",
            "host/storage/local",
            "host/zfs/pool/tank",
            "host/zfs/dataset/tank/guests",
            "host/storage/tank-guests",
            "lxc/900",
            "lxc/101",
            "lxc/102",
            "vm/9000",
            "vm/1001",
        ]
    );
    let unknown = phoenix_core::plan(
        resources,
        &estate.managers,
        &PlanOptions {
            targets: vec![Target::Guest(4242)],
            offline: None,
        },
    )
    .await;
    assert!(
        matches!(unknown, Err(phoenix_core::engine::plan::PlanError::UnknownTarget { ref target }) if target == "4242")
    );
}

#[tokio::test]
async fn offline_plans_against_an_empty_estate_without_observing() {
    let estate = Fakes::new();
    let resources = fixture_resources();
    estate.fake(ResourceKind::Lxc).fail_observe("unreachable");
    let options = PlanOptions {
        targets: Vec::new(),
        offline: Some("--offline".into()),
    };
    let plan = plan(resources.clone(), &estate.managers, &options)
        .await
        .expect("offline never observes");
    assert_eq!(plan.offline(), Some("--offline"));
    assert_eq!(plan.summary().create, resources.len());
    let online = phoenix_core::plan(resources, &estate.managers, &PlanOptions::default()).await;
    assert!(matches!(
        online,
        Err(phoenix_core::engine::plan::PlanError::Observe {
            kind: ResourceKind::Lxc,
            ..
        })
    ));
}

#[tokio::test]
async fn kinds_without_a_manager_are_counted_not_planned() {
    let mut managers = Managers::default();
    managers.register(Arc::new(FakeManager::new(ResourceKind::Lxc)));
    let plan = plan(fixture_resources(), &managers, &PlanOptions::default())
        .await
        .expect("plans");
    assert_eq!(addresses(&plan), ["lxc/900", "lxc/101", "lxc/102"]);
    let unmanaged: Vec<(ResourceKind, usize)> = plan
        .unmanaged()
        .iter()
        .map(|(kind, count)| (*kind, *count))
        .collect();
    assert_eq!(
        unmanaged,
        [
            (ResourceKind::Host, 7),
            (ResourceKind::Vm, 3),
            (ResourceKind::Stack, 3),
            (ResourceKind::Sync, 2)
        ]
    );
}

/// Forty containers with no dependencies, half on each of two storages.
fn many_containers() -> Vec<Resource> {
    let template = fixture_resources()
        .into_iter()
        .find(|resource| resource.address == Address::Lxc(900))
        .expect("900");
    (0..40)
        .map(|index| {
            let mut resource = template.clone();
            resource.address = Address::Lxc(2000 + index);
            resource.depends_on.clear();
            resource.storage = Some(if index % 2 == 0 { "fast" } else { "slow" }.to_owned());
            resource.node = Some(format!("pve{}", index % 3));
            resource
        })
        .collect()
}

#[tokio::test(start_paused = true)]
async fn per_storage_and_per_node_limits_are_respected() {
    let estate = Fakes::new();
    let lxc = estate.fake(ResourceKind::Lxc);
    lxc.set_latency(Duration::from_millis(100));
    let resources = many_containers();
    let plan = estate.plan(&resources, &[]).await;
    let options = ExecuteOptions {
        parallelism: 100,
        per_node: 10,
        per_storage: 2,
        ..ExecuteOptions::default()
    };
    let report = estate.apply(&plan, &options).await;
    assert!(report.succeeded());
    // Each node's `fast` and `slow` are storages of their own.
    let per_storage = lxc.max_creations_per_storage();
    let expected: BTreeMap<String, usize> = (0..3)
        .flat_map(|node| ["fast", "slow"].map(|storage| (format!("pve{node}/{storage}"), 2)))
        .collect();
    assert_eq!(per_storage, expected);
    assert_eq!(
        lxc.max_concurrency(),
        12,
        "three nodes, two storages each, two creations on each"
    );

    let per_node = Fakes::new();
    per_node
        .fake(ResourceKind::Lxc)
        .set_latency(Duration::from_millis(100));
    let options = ExecuteOptions {
        parallelism: 100,
        per_node: 3,
        per_storage: 2,
        ..ExecuteOptions::default()
    };
    let report = per_node
        .apply(&per_node.plan(&resources, &[]).await, &options)
        .await;
    assert!(report.succeeded());
    assert_eq!(
        per_node.fake(ResourceKind::Lxc).max_concurrency(),
        9,
        "three nodes, three at once on each"
    );

    let unlimited = Fakes::new();
    unlimited
        .fake(ResourceKind::Lxc)
        .set_latency(Duration::from_millis(100));
    let options = ExecuteOptions {
        parallelism: 5,
        per_node: 2,
        per_storage: 100,
        ..ExecuteOptions::default()
    };
    let report = unlimited
        .apply(&unlimited.plan(&resources, &[]).await, &options)
        .await;
    assert!(report.succeeded());
    assert_eq!(
        unlimited.fake(ResourceKind::Lxc).max_concurrency(),
        5,
        "the overall limit binds: 3 nodes x 2 > 5"
    );
}

#[tokio::test(start_paused = true)]
async fn a_stop_lets_work_in_flight_finish_and_reports_the_rest() {
    let estate = Fakes::new();
    estate
        .fake(ResourceKind::Lxc)
        .set_latency(Duration::from_millis(100));
    let resources = many_containers();
    let plan = estate.plan(&resources, &[]).await;
    let (handle, signal) = StopHandle::new();
    let (events, mut received) = tokio::sync::mpsc::unbounded_channel();
    let options = ExecuteOptions {
        parallelism: 4,
        per_node: 4,
        per_storage: 4,
        ..ExecuteOptions::default()
    };
    let managers = estate.managers.clone();
    let run = tokio::spawn(async move { execute(&plan, &managers, &options, signal, Some(events)).await });
    let mut started = 0;
    while let Some(event) = received.recv().await {
        if matches!(event, Event::Started(_)) {
            started += 1;
            if started == 4 {
                handle.stop();
                break;
            }
        }
    }
    let report = run
        .await
        .expect("the run does not panic")
        .expect("the run starts");
    assert!(report.stopped && !report.succeeded());
    let (changed, unchanged, failed, skipped, not_started) = report.counts();
    assert_eq!(
        (changed, unchanged, failed, skipped),
        (4, 0, 0, 0),
        "the four in flight finished"
    );
    assert_eq!(not_started, 36);
    assert_eq!(estate.fake(ResourceKind::Lxc).live().len(), 4);

    let rerun = estate.plan(&resources, &[]).await;
    assert_eq!(rerun.summary().unchanged, 4);
    assert!(estate.apply(&rerun, &ExecuteOptions::default()).await.succeeded());
}

/// A manager whose apply panics, as a buggy one might.
struct Panicking;

#[async_trait::async_trait]
impl phoenix_core::Manager for Panicking {
    fn kind(&self) -> ResourceKind {
        ResourceKind::Lxc
    }

    async fn observe(
        &self,
        _desired: &[Resource],
        _round: phoenix_core::Round,
    ) -> Result<BTreeMap<Address, phoenix_core::Observed>, phoenix_core::ManagerError> {
        Ok(BTreeMap::new())
    }

    fn diff(
        &self,
        desired: &Resource,
        _observed: Option<&phoenix_core::Observed>,
    ) -> Vec<phoenix_core::Change> {
        vec![phoenix_core::Change::create(
            desired.address.clone(),
            BTreeMap::new(),
        )]
    }

    async fn apply(
        &self,
        _desired: Option<&Resource>,
        change: &phoenix_core::Change,
    ) -> Result<(), phoenix_core::ManagerError> {
        if change.address == Address::Lxc(900) {
            panic!("a bug in a manager");
        }
        Ok(())
    }
}

#[tokio::test]
async fn a_panicking_manager_fails_its_resource_and_the_run_still_reports() {
    let mut managers = Managers::default();
    managers.register(Arc::new(Panicking));
    let resources: Vec<Resource> = fixture_resources()
        .into_iter()
        .filter(|resource| resource.kind() == ResourceKind::Lxc)
        .collect();
    let plan = plan(resources, &managers, &PlanOptions::default())
        .await
        .expect("plans");
    let (_handle, signal) = StopHandle::new();
    let report = execute(&plan, &managers, &ExecuteOptions::default(), signal, None)
        .await
        .expect("runs");
    assert!(
        matches!(outcome(&report, "lxc/900"), Outcome::Failed { error, .. } if error.contains("panicked"))
    );
    assert_eq!(
        outcome(&report, "lxc/101"),
        &Outcome::Skipped {
            reason: "lxc/900 failed".into()
        }
    );
}
