//! Benchmarks of the engine, reported as figures (no assertion on time).
//!
//! - Planning 10,000 guests that are all up to date (observe, diff, order). Target: under 500 ms.
//! - Executor overhead: 1,000 independent steps of 10 ms each at parallelism 8, against the ideal
//!   1,000 x 10 ms / 8 = 1.25 s. Target: under 1.2x.
//!
//! Run with `cargo bench -p phoenix-core --bench engine` or `cargo xtask bench`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use phoenix_core::config::ContainerConfig;
use phoenix_core::config::lxc::LxcNetwork;
use phoenix_core::engine::fake::FakeManager;
use phoenix_core::{
    Address, Desired, ExecuteOptions, Managers, Observed, PlanOptions, Resource, ResourceKind, StopHandle,
    execute, plan,
};

const GUESTS: u32 = 10_000;
const STEPS: u32 = 1_000;
const STEP_LATENCY: Duration = Duration::from_millis(10);
const PARALLELISM: usize = 8;

fn main() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("runtime");
    runtime.block_on(planning());
    runtime.block_on(executor_overhead());
}

fn container(id: u32, dependency: Option<u32>) -> Resource {
    let config = ContainerConfig {
        name: format!("ct-{id}"),
        template: Some("local:vztmpl/debian-12-standard_12.7-1_amd64.tar.zst".into()),
        memory_mb: Some(2048),
        cores: Some(2),
        storage_pool: Some("tank-guests".into()),
        storage_size_gb: Some(16),
        network_config: Some(LxcNetwork {
            name: "eth0".into(),
            bridge: "vmbr0".into(),
            ip: format!("10.{}.{}.{}/8", (id >> 16) & 255, (id >> 8) & 255, id & 255),
            gw: Some("10.0.0.1".into()),
            nameservers: Some("10.0.0.1".into()),
            searchdomain: None,
            vlan: None,
        }),
        features: vec!["base_setup".into(), "docker".into()],
        start_at_boot: true,
        ..ContainerConfig::default()
    };
    Resource {
        address: Address::Lxc(id),
        name: Some(config.name.clone()),
        depends_on: dependency.map(Address::Lxc).into_iter().collect(),
        after: Vec::new(),
        node: Some("pve1".into()),
        storage: config.storage_pool.clone(),
        desired: Desired::Container(std::sync::Arc::new(config)),
    }
}

async fn planning() {
    // Chains of ten: every tenth guest starts a chain the next nine depend on.
    let resources: Vec<Resource> = (0..GUESTS)
        .map(|index| container(1000 + index, (index % 10 != 0).then_some(999 + index)))
        .collect();
    let fake = FakeManager::new(ResourceKind::Lxc);
    fake.set_live(
        resources
            .iter()
            .map(|resource| {
                (
                    resource.address.clone(),
                    Observed::new(resource.declared_fields()),
                )
            })
            .collect(),
    );
    let mut managers = Managers::default();
    managers.register(Arc::new(fake));
    let mut timings = Vec::new();
    for _ in 0..5 {
        let started = Instant::now();
        let plan = plan(resources.clone(), &managers, &PlanOptions::default())
            .await
            .expect("plans");
        timings.push(started.elapsed());
        assert!(!plan.has_changes(), "every guest is up to date");
        assert_eq!(plan.entries().len(), GUESTS as usize);
    }
    timings.sort();
    println!(
        "plan: {GUESTS} guests up to date: median {} ms, min {} ms, max {} ms over 5 runs (target < 500 ms)",
        timings[2].as_millis(),
        timings[0].as_millis(),
        timings[4].as_millis()
    );
}

async fn executor_overhead() {
    let resources: Vec<Resource> = (0..STEPS)
        .map(|index| {
            let mut resource = container(50_000 + index, None);
            resource.node = None;
            resource.storage = None;
            resource
        })
        .collect();
    let fake = FakeManager::new(ResourceKind::Lxc);
    fake.set_latency(STEP_LATENCY);
    let mut managers = Managers::default();
    managers.register(Arc::new(fake.clone()));
    let plan = plan(resources, &managers, &PlanOptions::default())
        .await
        .expect("plans");
    let options = ExecuteOptions {
        parallelism: PARALLELISM,
        ..ExecuteOptions::default()
    };
    let (_handle, signal) = StopHandle::new();
    let started = Instant::now();
    let report = execute(&plan, &managers, &options, signal, None)
        .await
        .expect("runs");
    let elapsed = started.elapsed();
    assert!(report.succeeded());
    assert_eq!(fake.max_concurrency(), PARALLELISM);
    let ideal = STEP_LATENCY * STEPS / PARALLELISM as u32;
    println!(
        "execute: {STEPS} steps of {} ms at parallelism {PARALLELISM}: {} ms, ideal {} ms, ratio {:.3} (target < 1.2)",
        STEP_LATENCY.as_millis(),
        elapsed.as_millis(),
        ideal.as_millis(),
        elapsed.as_secs_f64() / ideal.as_secs_f64()
    );
}
