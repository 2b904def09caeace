//! The container manager on a bad day: faults that fakepve injects, and what the run does and reports.
//! Each test fails without the fix it names (issue "Reliability").

use std::path::Path;
use std::time::Duration;

use phoenix_core::{Address, CheckOptions, ExecuteOptions, Outcome, Report, Resource, StepState, StopHandle};
use phoenix_lxc::{Containers, LxcManager};
use phoenix_pve::Form;
use phoenix_pve::lifecycle::GuestType;
use phoenix_testing::{FakePve, Harness, fixture};
use serde_json::Value;

fn resources(name: &str) -> Vec<Resource> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name);
    fixture::resources(fixture::sources(&dir), &CheckOptions::default())
}

async fn connect(fake: FakePve, fixture: &str) -> Harness {
    Harness::connect(fake, GuestType::Lxc, resources(fixture), |kit| {
        LxcManager::new(Containers::new(kit, Some("test.internal".into())))
    })
    .await
}

async fn start(fixture: &str) -> Option<Harness> {
    Some(connect(FakePve::start().await?, fixture).await)
}

fn line(report: &Report, address: Address) -> &phoenix_core::engine::executor::ResourceReport {
    report
        .resources
        .iter()
        .find(|line| line.address == address)
        .unwrap_or_else(|| panic!("{address} in {report:#?}"))
}

#[tokio::test]
async fn a_container_created_before_its_start_failed_reports_the_steps_done() {
    let Some(harness) = start("estate").await else {
        return;
    };
    harness
        .fake
        .exec("pve.fail('POST', '/nodes/pve1/lxc/101/status/start', error='mtu_size_bigger_than_bridge', times=1)")
        .await;
    let report = harness.apply(&harness.plan().await).await;
    let failed = line(&report, Address::Lxc(101));
    assert!(matches!(failed.outcome, Outcome::Failed { .. }), "{failed:#?}");
    let steps: Vec<(&str, StepState)> = failed
        .steps
        .iter()
        .map(|step| (step.what.as_str(), step.state))
        .collect();
    assert!(
        steps.contains(&("POST /nodes/pve1/lxc/900/clone", StepState::Done)),
        "the clone is reported as done: {steps:#?}"
    );
    assert!(
        steps.contains(&("PUT /nodes/pve1/lxc/101/config", StepState::Done)),
        "{steps:#?}"
    );
    assert_eq!(
        steps.last(),
        Some(&("POST /nodes/pve1/lxc/101/status/start", StepState::Failed)),
        "the failed task is the last step"
    );
    assert!(failed.steps.iter().all(|step| step.state != StepState::Running));
    let json = serde_json::to_value(&report).expect("serialises");
    assert!(
        json.to_string().contains("\"state\":\"failed\""),
        "steps are in the JSON report"
    );
}

#[tokio::test]
async fn reads_are_retried_on_5xx() {
    let Some(fake) = FakePve::start().await else {
        return;
    };
    fake.exec("pve.fail('GET', '/version', 503, 'service unavailable', times=1)")
        .await;
    let harness = connect(fake, "estate").await;
    harness
        .fake
        .exec("pve.fail('GET', '/cluster/resources', 500, 'boom', times=1)\npve.fail('GET', '/nodes/pve1/lxc/900/config', 502, 'bad gateway', times=1)")
        .await;
    let report = harness.apply(&harness.plan().await).await;
    assert!(report.succeeded(), "{report:#?}");
    assert!(!harness.plan().await.has_changes());
}

#[tokio::test]
async fn a_config_write_that_found_the_config_locked_is_sent_again() {
    let Some(harness) = start("estate").await else {
        return;
    };
    harness
        .fake
        .exec("pve.fail('PUT', '/nodes/pve1/lxc/101/config', error='config_lock_timeout', times=2)")
        .await;
    let report = harness.apply(&harness.plan().await).await;
    assert!(report.succeeded(), "{report:#?}");
    assert!(!harness.plan().await.has_changes());
}

#[tokio::test]
async fn a_start_answered_already_running_and_a_resize_answered_at_size_are_done() {
    let Some(harness) = start("estate").await else {
        return;
    };
    assert!(harness.apply(&harness.plan().await).await.succeeded());
    // 101 stopped, and its disk shrunk in the record, by hand: the plan starts it and grows the disk.
    harness
        .fake
        .exec(
            "import re\nct = pve.guest(101)\nct.status = 'stopped'\nct.config['rootfs'] = re.sub(r'size=[^,]*', 'size=8G', ct.config['rootfs'])",
        )
        .await;
    let plan = harness.plan().await;
    assert!(plan.has_changes());
    // Before the plan is applied, an earlier attempt (whose answers were lost) did both.
    let _: Value = harness
        .client
        .post("/nodes/pve1/lxc/101/status/start", &Form::new())
        .await
        .expect("starts");
    let _: Value = harness
        .client
        .put(
            "/nodes/pve1/lxc/101/resize",
            &Form::new().text("disk", "rootfs").text("size", "12G"),
        )
        .await
        .expect("resizes");
    tokio::time::sleep(Duration::from_millis(200)).await;
    let report = harness.apply(&plan).await;
    assert!(report.succeeded(), "{report:#?}");
    assert!(!harness.plan().await.has_changes());
}

#[tokio::test]
async fn clones_of_one_template_take_turns_at_real_task_speed() {
    let Some(harness) = start("clones").await else {
        return;
    };
    // Clones hold the template's `disk` lock for the length of their task: 10 Proxmox seconds, half a
    // second here, so parallel clones of one template would find it locked.
    harness
        .fake
        .exec("pve.ct_secs['clone'] = 10; pve.time_scale = 0.05")
        .await;
    let options = ExecuteOptions {
        per_storage: 4,
        ..ExecuteOptions::default()
    };
    let plan = harness.plan().await;
    let report = phoenix_testing::apply(&plan, &harness.managers, &options).await;
    assert!(report.succeeded(), "{report:#?}");
    harness.fake.exec("pve.time_scale = 0").await;
    assert!(!harness.plan().await.has_changes());
}

#[tokio::test]
async fn a_stop_ends_the_wait_on_a_task_and_names_it() {
    let Some(harness) = start("estate").await else {
        return;
    };
    // Tasks take real time: a clone runs for seconds.
    harness.fake.exec("pve.time_scale = 1").await;
    let plan = harness.plan().await;
    let (handle, signal) = StopHandle::new();
    let options = ExecuteOptions::default();
    let run = phoenix_core::execute(&plan, &harness.managers, &options, signal, None);
    let stopper = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        handle.stop();
    };
    let began = std::time::Instant::now();
    let (report, ()) = tokio::join!(run, stopper);
    let report = report.expect("runs");
    assert!(report.stopped);
    assert!(
        began.elapsed() < Duration::from_secs(20),
        "the wait ended at the stop, not with the task: {:?}",
        began.elapsed()
    );
    let template = line(&report, Address::Lxc(900));
    let Outcome::Failed { error, .. } = &template.outcome else {
        panic!("{template:#?}")
    };
    assert!(error.contains("interrupted"), "{error}");
    let running: Vec<_> = template
        .steps
        .iter()
        .filter(|step| step.state == StepState::Running)
        .collect();
    assert_eq!(running.len(), 1, "the task left running is named: {template:#?}");
    assert!(
        running[0]
            .task
            .as_deref()
            .is_some_and(|upid| upid.starts_with("UPID:pve1:"))
    );
    assert!(matches!(
        line(&report, Address::Lxc(101)).outcome,
        Outcome::Skipped { .. } | Outcome::NotStarted
    ));
}

#[tokio::test]
async fn a_dead_api_ends_the_wait_within_the_contact_timeout() {
    let Some(harness) = start("estate").await else {
        return;
    };
    harness.fake.exec("pve.time_scale = 1").await;
    let plan = harness.plan().await;
    let killer = async {
        // Kill the server once the template's download task was accepted (it runs for seconds).
        loop {
            tokio::time::sleep(Duration::from_millis(50)).await;
            let requests = harness.fake.requests().await;
            if requests
                .iter()
                .any(|(method, path, _)| method == "POST" && path.ends_with("/download-url"))
            {
                break;
            }
        }
        harness.fake.kill();
    };
    let began = std::time::Instant::now();
    let (report, ()) = tokio::join!(harness.apply(&plan), killer);
    assert!(
        began.elapsed() < Duration::from_secs(60),
        "bounded by the contact timeout (3 s here), not the task timeout: {:?}",
        began.elapsed()
    );
    let template = line(&report, Address::Lxc(900));
    let Outcome::Failed { error, .. } = &template.outcome else {
        panic!("{template:#?}")
    };
    assert!(
        error.contains("lost contact") && error.contains("UPID:pve1:"),
        "{error}"
    );
    assert!(
        template.steps.iter().any(|step| step.state == StepState::Running),
        "{template:#?}"
    );
    assert!(!report.succeeded());
}
