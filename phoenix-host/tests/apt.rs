//! `host/apt/repositories` against fakepve (with the harness's state of `/nodes/{node}/apt/repositories`,
//! a fresh Proxmox VE 9 node's files), and `host/apt/packages` and `host/locale` on a real Debian node
//! (`TestNode`) with real `apt-get` from Debian's mirror, `locale-gen` and `update-locale`.

mod common;

use std::sync::Arc;

use common::{Setup, start, steps};
use phoenix_core::{ExecuteOptions, Managers, Outcome, PlanOptions};
use phoenix_host::{HostManager, Node};
use phoenix_pve::Form;
use phoenix_testing::outcome;
use serde_json::Value;

/// The fixture with a locale, the no-subscription repository, and `tree` to install (small, no
/// dependencies beyond the base system).
fn declared(packages: &str) -> impl Fn(String) -> String {
    let packages = packages.to_owned();
    move |text: String| {
        text.replace(
            r#""timezone": "Europe/Berlin","#,
            &format!(
                r#""timezone": "Europe/Berlin", "locale": "de_DE.UTF-8",
                "apt": {{ "proxmox_repository": "no-subscription", "packages": [{packages}] }},"#
            ),
        )
    }
}

/// `handle: status` of the node's standard repositories, as Proxmox lists them.
async fn repositories(setup: &Setup) -> Vec<String> {
    let listing: Value = setup
        .fake
        .root_client()
        .await
        .get("/nodes/pve1/apt/repositories", &[])
        .await
        .expect("reads");
    listing["standard-repos"]
        .as_array()
        .expect("a list")
        .iter()
        .filter(|repo| repo.get("status").is_some())
        .map(|repo| {
            format!(
                "{}: {}",
                repo["handle"].as_str().unwrap_or_default(),
                repo["status"]
            )
        })
        .collect()
}

fn installed(setup: &Setup, package: &str) -> bool {
    let output = setup
        .node
        .exec(&["dpkg-query", "-W", "-f", "${db:Status-Abbrev}", package]);
    output.success() && output.stdout.starts_with("ii")
}

#[tokio::test]
async fn a_fresh_node_gets_its_repositories_packages_and_locale_and_the_second_run_changes_nothing() {
    let Some(setup) = start(declared(r#""tree""#)).await else {
        return;
    };
    assert_eq!(
        repositories(&setup).await,
        ["enterprise: true", "ceph-squid-enterprise: true"],
        "a fresh Proxmox VE 9 node"
    );
    assert!(!installed(&setup, "tree"));

    let report = setup.apply().await;
    assert!(report.succeeded(), "{report:#?}");
    assert_eq!(
        repositories(&setup).await,
        [
            "enterprise: false",
            "no-subscription: true",
            "ceph-squid-enterprise: false"
        ]
    );
    assert_eq!(
        steps(&report, "host/apt/repositories"),
        [
            "POST /nodes/pve1/apt/repositories",
            "turned the enterprise repository off (/etc/apt/sources.list.d/pve-enterprise.sources entry 0)",
            "POST /nodes/pve1/apt/repositories",
            "turned the ceph-squid-enterprise repository off (/etc/apt/sources.list.d/ceph.sources entry 0)",
            "PUT /nodes/pve1/apt/repositories",
            "turned the no-subscription repository on",
            "POST /nodes/pve1/apt/update",
            "refreshed the package lists",
        ]
    );
    assert!(installed(&setup, "tree"), "installed by the real apt-get");
    assert_eq!(
        steps(&report, "host/apt/packages"),
        ["refreshed the package lists", "installed tree"],
        "sudo, which the sudo user needs, was there already"
    );
    assert!(setup.sh("locale -a").lines().any(|line| line == "de_DE.utf8"));
    assert!(setup.sh("cat /etc/default/locale").contains("LANG=de_DE.UTF-8"));

    let writes = setup.fake.writes().await;
    setup.assert_converged().await;
    assert_eq!(setup.fake.writes().await, writes, "the second run writes nothing");
}

#[tokio::test]
async fn repositories_packages_and_locale_changed_by_hand_are_drift_and_corrected_alone() {
    let Some(setup) = start(declared(r#""tree""#)).await else {
        return;
    };
    assert!(setup.apply().await.succeeded());

    // By hand: the enterprise repository back on, the package removed, another LANG.
    let form = Form::new().text("handle", "enterprise");
    let client = setup.fake.root_client().await;
    client
        .put::<Value>("/nodes/pve1/apt/repositories", &form)
        .await
        .expect("turned on");
    setup.sh("dpkg -r tree >/dev/null && update-locale LANG=en_US.UTF-8");
    assert_eq!(
        setup.drift("host/apt/repositories").await,
        [r#"proxmox: Some(String("enterprise, no-subscription")) -> Some(String("no-subscription"))"#]
    );
    assert_eq!(setup.drift("host/locale").await.len(), 1, "only LANG");

    let report = setup.apply().await;
    assert!(report.succeeded(), "{report:#?}");
    assert_eq!(
        steps(&report, "host/apt/repositories"),
        [
            "POST /nodes/pve1/apt/repositories",
            "turned the enterprise repository off (/etc/apt/sources.list.d/pve-enterprise.sources entry 0)",
            "POST /nodes/pve1/apt/update",
            "refreshed the package lists",
        ]
    );
    assert_eq!(
        steps(&report, "host/locale"),
        ["set LANG=de_DE.UTF-8"],
        "not generated again"
    );
    assert!(installed(&setup, "tree"));
    assert!(!setup.plan().await.has_changes());

    // With --upgrade: a package older than the mirror's is upgraded; without, it is left alone.
    setup.sh("sed -i '/^Package: tree$/,/^$/ s/^Version: .*/Version: 1.0-1/' /var/lib/dpkg/status");
    assert!(!setup.plan().await.has_changes(), "no upgrade unless asked");
    let mut upgrading = Managers::default();
    let manager = HostManager::new(Node::new(client, "pve1", Some(setup.node.channel()))).with_upgrade(true);
    upgrading.register(Arc::new(manager));
    let plan = phoenix_testing::plan(setup.resources.clone(), &upgrading, &PlanOptions::default()).await;
    let fields = common::drift_in(&plan, "host/apt/packages");
    assert_eq!(fields, ["upgradable: Some(Number(1)) -> Some(Number(0))"]);
    let report = phoenix_testing::apply(&plan, &upgrading, &ExecuteOptions::default()).await;
    assert!(report.succeeded(), "{report:#?}");
    assert!(
        !setup
            .sh("dpkg-query -W -f '${Version}' tree")
            .starts_with("1.0-1")
    );
    let again = phoenix_testing::plan(setup.resources.clone(), &upgrading, &PlanOptions::default()).await;
    assert!(!again.has_changes(), "{again:#?}");
}

#[tokio::test]
async fn an_unreachable_mirror_and_an_unknown_package_fail_their_step_with_apts_message_and_nothing_else() {
    let Some(mut setup) = start(declared(r#""tree""#)).await else {
        return;
    };
    setup.sh("cp /etc/apt/sources.list /root/sources.list && echo 'deb http://127.0.0.1:9/debian bookworm main' > /etc/apt/sources.list");
    let report = setup.apply().await;
    let Outcome::Failed { error, .. } = outcome(&report, "host/apt/packages") else {
        panic!("{report:#?}");
    };
    assert!(
        error.contains("`apt-get` failed on node pve1") && error.contains("127.0.0.1"),
        "{error}"
    );
    assert!(
        matches!(outcome(&report, "host/locale"), Outcome::Skipped { .. }),
        "the locale needs `locales`, so it waits for the packages"
    );
    assert!(
        matches!(outcome(&report, "host/timezone"), Outcome::Changed { .. }),
        "independent"
    );
    assert!(matches!(
        outcome(&report, "host/apt/repositories"),
        Outcome::Changed { .. }
    ));

    // The mirror back, and a name Debian does not have beside one it has: apt installs neither.
    setup.sh("cp /root/sources.list /etc/apt/sources.list");
    setup.resources = common::start_resources(
        declared(r#""tree", "phoenix-no-such-package""#),
        &phoenix_core::CheckOptions::default(),
    );
    let report = setup.apply().await;
    let Outcome::Failed { error, .. } = outcome(&report, "host/apt/packages") else {
        panic!("{report:#?}");
    };
    assert!(
        error.contains("Unable to locate package phoenix-no-such-package"),
        "{error}"
    );
    assert!(!installed(&setup, "tree"), "nothing half-installed");
    assert_eq!(
        steps(&report, "host/apt/packages"),
        ["refreshed the package lists"],
        "the report says exactly what was done"
    );
}
