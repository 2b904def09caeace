//! `sync/traefik` for real: a real LXC container stands for the Traefik container (Phoenix writes into it
//! with `lxc-attach`, as on a node), and a real Traefik on the host watches that container's dynamic
//! directory through its root file system; Traefik's own API says what it loaded.
//!
//! Needs root, LXC and Traefik (`.ci/run` installs them); without them the test is skipped with a message,
//! except under `CI=true`, where it fails.

use std::os::unix::fs::MetadataExt;
use std::sync::Arc;

use phoenix_core::traefik::{DYNAMIC_DIRECTORY, DYNAMIC_FILE};
use phoenix_core::{
    Action, CheckOptions, ExecuteOptions, Managers, Outcome, PlanOptions, Resource, SourceFile,
};
use phoenix_edge::EdgeManager;
use phoenix_pve::host::LocalHost;
use phoenix_testing::lxc::BusyboxContainer;
use phoenix_testing::traefik::Traefik;
use phoenix_testing::{fixture, outcome};

/// Both tests use container 102, the homelab's Traefik: one at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn homelab(edit: impl Fn(&str) -> String) -> Vec<Resource> {
    let dir = phoenix_testing::workspace().join("examples/homelab");
    let sources: Vec<SourceFile> = fixture::sources(&dir)
        .into_iter()
        .map(|source| SourceFile::new(source.kind(), source.path().to_owned(), edit(source.text())))
        .collect();
    fixture::resources(sources, &CheckOptions::default())
        .into_iter()
        .filter(|resource| resource.address.to_string() == "sync/traefik")
        .collect()
}

fn managers() -> Managers {
    let mut managers = Managers::default();
    managers.register(Arc::new(EdgeManager::new(Arc::new(LocalHost))));
    managers
}

async fn converge(resources: &[Resource], managers: &Managers) -> Option<Action> {
    let plan = phoenix_testing::plan(resources.to_vec(), managers, &PlanOptions::default()).await;
    let action = plan
        .entries()
        .iter()
        .find_map(|entry| entry.changes.first().map(|change| change.action));
    let report = phoenix_testing::apply(&plan, managers, &ExecuteOptions::default()).await;
    if action.is_some() {
        assert!(
            matches!(outcome(&report, "sync/traefik"), Outcome::Changed { .. }),
            "{report:#?}"
        );
    }
    action
}

#[tokio::test]
async fn the_dynamic_configuration_is_written_once_and_loaded_by_traefik() {
    let _serial = SERIAL.lock().await;
    let Some(container) = BusyboxContainer::start(102) else {
        return;
    };
    let directory = container.rootfs().join(DYNAMIC_DIRECTORY.trim_start_matches('/'));
    std::fs::create_dir_all(&directory).expect("creates the watched directory");
    let Some(traefik) = Traefik::start(&directory).await else {
        return;
    };
    let managers = managers();
    let resources = homelab(str::to_owned);
    let file = directory.join(DYNAMIC_FILE);

    // First run: the file is created, and Traefik loads every router and service, enabled.
    assert_eq!(converge(&resources, &managers).await, Some(Action::Create));
    let names = ["ca", "llm", "portainer", "qdrant", "search"];
    for kind in ["routers", "services"] {
        let loaded = traefik.wait_until_loaded(kind, &names).await;
        assert!(
            loaded.iter().all(|(_, status)| status == "enabled"),
            "{kind}: {loaded:?}\n{}",
            traefik.log()
        );
    }
    let router = traefik.get("/http/routers/qdrant@file").await.expect("qdrant");
    assert_eq!(router["rule"], "Host(`qdrant.lab.example.org`)");
    assert_eq!(router["entryPoints"], serde_json::json!(["websecure"]));
    assert!(router.get("tls").is_some(), "{router}");

    // Second run: nothing to do, and the file is not rewritten.
    let before = std::fs::metadata(&file).expect("written");
    assert_eq!(converge(&resources, &managers).await, None);
    let after = std::fs::metadata(&file).expect("still there");
    assert_eq!(
        (before.ino(), before.mtime_nsec()),
        (after.ino(), after.mtime_nsec())
    );

    // A router added by hand is drift: the next run takes it out again.
    let text = std::fs::read_to_string(&file).expect("reads");
    let edited = text.replace(
        "  routers:\n",
        "  routers:\n    by-hand:\n      rule: Host(`by-hand.lab.example.org`)\n      service: ca\n",
    );
    assert_ne!(edited, text, "the file has a routers section:\n{text}");
    std::fs::write(&file, edited).expect("edits");
    let mut with_hand = names.to_vec();
    with_hand.insert(0, "by-hand");
    traefik.wait_until_loaded("routers", &with_hand).await;
    assert_eq!(converge(&resources, &managers).await, Some(Action::Update));
    traefik.wait_until_loaded("routers", &names).await;

    // A new route in the configuration is picked up by the running Traefik.
    let resources = homelab(|text| {
        text.replace(
            "\"traefik.http.routers.search.tls=true\",",
            "\"traefik.http.routers.search.tls=true\",\n                \"traefik.http.routers.search-api.rule=Host(`search.lab.example.org`) && PathPrefix(`/api`)\",\n                \"traefik.http.routers.search-api.middlewares=search-strip\",\n                \"traefik.http.middlewares.search-strip.stripprefix.prefixes=/api\",",
        )
    });
    assert_eq!(converge(&resources, &managers).await, Some(Action::Update));
    let loaded = traefik
        .wait_until_loaded(
            "routers",
            &["ca", "llm", "portainer", "qdrant", "search", "search-api"],
        )
        .await;
    assert!(loaded.iter().all(|(_, status)| status == "enabled"), "{loaded:?}");
    let middleware = traefik
        .get("/http/middlewares/search-strip@file")
        .await
        .expect("loaded");
    assert_eq!(middleware["stripPrefix"]["prefixes"], serde_json::json!(["/api"]));
    assert_eq!(converge(&resources, &managers).await, None);
}

#[tokio::test]
async fn a_stopped_traefik_container_is_planned_and_reported_not_written() {
    let _serial = SERIAL.lock().await;
    let Some(container) = BusyboxContainer::start(102) else {
        return;
    };
    container.stop();
    let managers = managers();
    let resources = homelab(str::to_owned);
    let plan = phoenix_testing::plan(resources, &managers, &PlanOptions::default()).await;
    let report = phoenix_testing::apply(&plan, &managers, &ExecuteOptions::default()).await;
    let Outcome::Failed { error, .. } = outcome(&report, "sync/traefik") else {
        panic!("{report:#?}");
    };
    assert!(error.contains("container 102 does not run"), "{error}");
}
