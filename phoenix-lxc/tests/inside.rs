//! Work inside containers for real: features, application scripts and health checks run through
//! `lxc-attach` in real LXC containers named after the CTIDs that fakepve holds.
//!
//! Needs root and LXC (`apt-get install lxc busybox-static`); without them the tests are skipped with a
//! message, except under `CI=true`, where they fail.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use phoenix_core::{
    Address, CheckOptions, ExecuteOptions, Managers, Outcome, Plan, PlanOptions, Report, Resource,
};
use phoenix_lxc::Containers;
use phoenix_lxc::{GuestScripts, LxcManager};
use phoenix_pve::Client;
use phoenix_pve::host::LocalHost;
use phoenix_pve::lifecycle::GuestType;
use phoenix_testing::lxc::BusyboxContainer;
use phoenix_testing::{FakePve, fixture};

/// The tests share CTIDs (real containers are named after them), so they run one at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Reads standard input first: a script streamed on stdin would lose its next line to it.
const HELLO: &str = "read -r swallowed || true\necho hello >> /tmp/hello-runs\n";
const COUNTER: &str = "echo run >> /tmp/counter-runs\n";
const APP: &str = "touch /tmp/app-ran\necho \"app for $PHOENIX_GREETING\"\n";

fn fixture() -> Vec<Resource> {
    let dir = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/inside"));
    let options = CheckOptions {
        extra_features: vec!["hello".into(), "counter".into()],
        ..CheckOptions::default()
    };
    fixture::resources(fixture::sources(dir), &options)
}

/// Real LXC containers, destroyed when the test ends, and the Proxmox config files a node would hold
/// for them (under a temporary `/etc/pve`).
struct RealContainers {
    _containers: Vec<BusyboxContainer>,
    pve_root: std::path::PathBuf,
}

impl RealContainers {
    fn start(ids: &[u32]) -> Option<RealContainers> {
        let mut containers = Vec::new();
        for id in ids {
            containers.push(BusyboxContainer::start(*id)?);
        }
        let pve_root = std::env::temp_dir().join(format!("phoenix-pve-root-{}", std::process::id()));
        let configs = pve_root.join("nodes/pve1/lxc");
        std::fs::create_dir_all(&configs).expect("creates");
        for id in ids {
            std::fs::write(
                configs.join(format!("{id}.conf")),
                "arch: amd64\nhostname: ct\n\n[golden]\narch: amd64\n",
            )
            .expect("writes");
        }
        Some(RealContainers {
            _containers: containers,
            pve_root,
        })
    }

    fn pve_config(&self, id: u32) -> String {
        std::fs::read_to_string(self.pve_root.join(format!("nodes/pve1/lxc/{id}.conf"))).expect("reads")
    }

    fn read(&self, id: u32, path: &str) -> String {
        let output = Command::new("lxc-attach")
            .args(["-n", &id.to_string(), "--", "cat", path])
            .output()
            .expect("runs");
        String::from_utf8_lossy(&output.stdout).into_owned()
    }
}

async fn managers(fake: &FakePve, real: &RealContainers, features: BTreeMap<String, String>) -> Managers {
    managers_with_app(fake, real, features, APP).await
}

async fn managers_with_app(
    fake: &FakePve,
    real: &RealContainers,
    features: BTreeMap<String, String>,
    app: &str,
) -> Managers {
    let client = fake.root_client().await;
    let scripts = GuestScripts {
        features,
        applications: BTreeMap::from([("app.sh".to_owned(), app.to_owned())]),
        environment: BTreeMap::from([("PHOENIX_GREETING".to_owned(), "tests".to_owned())]),
    };
    let containers = Containers::new(phoenix_testing::fakepve::kit(&client, GuestType::Lxc), None)
        .with_guest_access(Arc::new(LocalHost), scripts)
        .with_pve_root(real.pve_root.display().to_string());
    let manager = LxcManager::new(containers);
    let mut managers = Managers::default();
    managers.register(Arc::new(manager));
    managers
}

fn features(counter: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("hello".to_owned(), HELLO.to_owned()),
        ("counter".to_owned(), counter.to_owned()),
    ])
}

async fn plan_with(managers: &Managers) -> Plan {
    phoenix_testing::plan(fixture(), managers, &PlanOptions::default()).await
}

async fn apply(managers: &Managers, plan: &Plan) -> Report {
    phoenix_testing::apply(plan, managers, &ExecuteOptions::default()).await
}

#[tokio::test]
async fn features_run_once_rerun_when_changed_and_health_checks_pass() {
    let _serial = SERIAL.lock().await;
    let Some(fake) = FakePve::start().await else {
        return;
    };
    let Some(real) = RealContainers::start(&[931, 932, 933]) else {
        return;
    };
    let managers = managers(&fake, &real, features(COUNTER)).await;
    let report = apply(&managers, &plan_with(&managers).await).await;
    assert!(report.succeeded(), "{report:#?}");
    let raw = real.pve_config(932);
    assert_eq!(
        raw,
        "arch: amd64\nhostname: ct\nlxc.apparmor.profile: unconfined\nlxc.idmap: u 0 100000 65536\nlxc.idmap: g 0 100000 33\nlxc.idmap: g 33 33 1\nlxc.idmap: g 34 100034 65502\nlxc.mount.auto: sys:rw\n\n[golden]\narch: amd64\n",
        "raw keys go into the main section, before the snapshots"
    );
    assert_eq!(real.read(931, "/tmp/hello-runs"), "hello\n");
    assert_eq!(real.read(932, "/tmp/counter-runs"), "run\n");
    assert_eq!(real.read(932, "/tmp/app-ran"), "");
    let records = real.read(932, "/var/lib/phoenix/features/counter");
    assert_eq!(records.len(), 64, "a SHA-256 digest is recorded: {records:?}");
    let guest = real.read(932, "/var/lib/phoenix/guest.json");
    assert!(guest.contains("\"name\":\"inside-app\""), "{guest}");
    let snapshots: Vec<serde_json::Value> = support_client(&fake)
        .await
        .get("/nodes/pve1/lxc/931/snapshot", &[])
        .await
        .expect("lists");
    let names: Vec<&str> = snapshots
        .iter()
        .filter_map(|snapshot| snapshot["name"].as_str())
        .collect();
    for name in ["pre-features", "post-features", "golden"] {
        assert!(names.contains(&name), "{name} in {names:?}");
    }

    // Unchanged: nothing runs again.
    let second = plan_with(&managers).await;
    assert!(
        !second.has_changes(),
        "{:#?}",
        second
            .entries()
            .iter()
            .filter(|entry| !entry.is_unchanged())
            .collect::<Vec<_>>()
    );
    assert!(apply(&managers, &second).await.succeeded());
    assert_eq!(real.read(932, "/tmp/counter-runs"), "run\n");

    // A raw key changed by hand on the node is drift, put back in place.
    let path = real.pve_root.join("nodes/pve1/lxc/932.conf");
    std::fs::write(
        &path,
        "arch: amd64\nhostname: ct\nlxc.apparmor.profile: generated\n\n[golden]\narch: amd64\n",
    )
    .expect("edits");
    let drift = plan_with(&managers).await;
    let changed: Vec<(String, Vec<String>)> = drift
        .entries()
        .iter()
        .filter(|entry| !entry.is_unchanged())
        .map(|entry| {
            (
                entry.address.to_string(),
                entry.changes[0]
                    .fields
                    .iter()
                    .map(|field| field.field.clone())
                    .collect(),
            )
        })
        .collect();
    assert_eq!(changed, [("lxc/932".to_owned(), vec!["raw_lxc".to_owned()])]);
    assert!(apply(&managers, &drift).await.succeeded());
    assert_eq!(real.pve_config(932), raw);

    // A changed feature runs again; the unchanged one does not.
    let managers = self::managers(
        &fake,
        &real,
        features("echo run >> /tmp/counter-runs\necho changed\n"),
    )
    .await;
    let third = plan_with(&managers).await;
    let changed: Vec<String> = third
        .entries()
        .iter()
        .filter(|entry| !entry.is_unchanged())
        .map(|entry| entry.address.to_string())
        .collect();
    assert_eq!(changed, ["lxc/932"]);
    assert!(apply(&managers, &third).await.succeeded());
    assert_eq!(real.read(932, "/tmp/counter-runs"), "run\nrun\n");
    assert_eq!(real.read(932, "/tmp/hello-runs"), "hello\n");
}

async fn support_client(fake: &FakePve) -> Client {
    Client::connect(fake.token_settings()).await.expect("connects")
}

#[tokio::test]
async fn a_failing_feature_is_reported_with_its_output_and_dependents_are_skipped() {
    let _serial = SERIAL.lock().await;
    let Some(fake) = FakePve::start().await else {
        return;
    };
    let Some(real) = RealContainers::start(&[931, 932, 933]) else {
        return;
    };
    let managers = managers(&fake, &real, features("echo boom >&2\nexit 3\n")).await;
    let report = apply(&managers, &plan_with(&managers).await).await;
    let outcome = |id| {
        report
            .resources
            .iter()
            .find(|line| line.address == Address::Lxc(id))
            .map(|line| line.outcome.clone())
    };
    let Some(Outcome::Failed { error, .. }) = outcome(932) else {
        panic!("{report:#?}")
    };
    assert!(
        error.contains("`counter` failed in container 932 (exit 3)") && error.contains("boom"),
        "{error}"
    );
    assert_eq!(
        outcome(933),
        Some(Outcome::Skipped {
            reason: "lxc/932 failed".into()
        })
    );
}

#[tokio::test]
async fn a_failing_health_check_fails_the_container_after_its_retries() {
    let _serial = SERIAL.lock().await;
    let Some(fake) = FakePve::start().await else {
        return;
    };
    let Some(real) = RealContainers::start(&[931, 932, 933]) else {
        return;
    };
    let managers = managers_with_app(
        &fake,
        &real,
        features(COUNTER),
        "echo the app forgot its marker\n",
    )
    .await;
    let report = apply(&managers, &plan_with(&managers).await).await;
    let line = report
        .resources
        .iter()
        .find(|line| line.address == Address::Lxc(932))
        .expect("reported");
    let Outcome::Failed { error, .. } = &line.outcome else {
        panic!("{report:#?}")
    };
    assert!(
        error.contains("the health check (2 attempts) failed in container 932 (exit 1)"),
        "{error}"
    );
}
