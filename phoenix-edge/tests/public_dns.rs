//! `sync/dns/public/<zone>` for real: Debian's Knot DNS, authoritative for the homelab's public zone in a
//! Debian test node on a loopback port, takes Phoenix's TSIG-signed dynamic updates and zone transfers.
//! Every public name is asked for with `kdig`; a second run sends nothing (the zone's serial stays);
//! records Phoenix does not own are never touched; a record deleted by hand is put back; a name taken
//! out of the configuration is removed with its ownership record; moving every name of a large zone is
//! destructive; a wrong or unknown key is refused with the server's words.
//!
//! Needs root, LXC and the test node's packages (`.ci/run` installs them); without them the test is
//! skipped with a message, except under `CI=true`, where it fails.

use std::sync::Arc;

use phoenix_core::{
    Action, CheckOptions, Consequence, ExecuteOptions, Managers, Outcome, Plan, PlanOptions, Resource,
    SourceFile,
};
use phoenix_edge::EdgeManager;
use phoenix_testing::knot::{Knot, SECRET};
use phoenix_testing::node::TestNode;
use phoenix_testing::{actions, changed_fields, fixture, outcome, workspace};

const ZONE: &str = "lab.example.org";
const STEP: &str = "sync/dns/public/lab.example.org";
const ADDRESS: &str = "203.0.113.10";

/// The zone's own records: Phoenix must leave them be.
const RECORDS: &str = "@ SOA ns1 hostmaster 1 3600 600 86400 300\n@ NS ns1\nns1 A 192.0.2.53\nmail A 192.0.2.25\n@ MX 10 mail\nstatus A 192.0.2.80\n";

/// The homelab's public zone, published to `knot` with the key in `key_file`, its hypervisor file edited
/// by `edit`.
fn step(knot: &Knot, key_file: &str, edit: impl Fn(&str) -> String) -> Vec<Resource> {
    let dir = workspace().join("examples/homelab");
    let sources: Vec<SourceFile> = fixture::sources(&dir)
        .into_iter()
        .map(|source| {
            let text = source.text().replace(
                r#""address": "203.0.113.10""#,
                &format!(
                    r#""address": "203.0.113.10", "server": {}"#,
                    knot.server_json(key_file)
                ),
            );
            SourceFile::new(source.kind(), source.path().to_owned(), edit(&text))
        })
        .collect();
    fixture::resources(sources, &CheckOptions::default())
        .into_iter()
        .filter(|resource| resource.address.to_string().starts_with("sync/dns/public/"))
        .collect()
}

async fn converge(resources: &[Resource], managers: &Managers) -> Plan {
    let plan = phoenix_testing::plan(resources.to_vec(), managers, &PlanOptions::default()).await;
    let report = phoenix_testing::apply(&plan, managers, &ExecuteOptions::default()).await;
    if !actions(&plan).is_empty() {
        let address = format!("sync/dns/public/{ZONE}");
        assert!(
            matches!(outcome(&report, &address), Outcome::Changed { .. }),
            "{report:#?}"
        );
    }
    plan
}

fn ownership() -> Vec<String> {
    vec!["\"heritage=phoenix,phoenix/owner=phoenix\"".to_owned()]
}

#[tokio::test]
async fn the_public_view_is_published_to_a_real_knot_and_only_owned_names_change() {
    let Some(node) = TestNode::start() else { return };
    let knot = Knot::start(&node, ZONE, RECORDS);
    let key_dir = tempfile_dir();
    let key_file = key_dir.join("tsig.key");
    std::fs::write(&key_file, format!("{SECRET}\n")).expect("writes the key");
    let key_file = key_file.display().to_string();
    let resources = step(&knot, &key_file, str::to_owned);
    assert_eq!(resources.len(), 1, "{resources:#?}");
    let mut managers = Managers::default();
    managers.register(Arc::new(EdgeManager::new(node.channel())));

    // First run: the three public names, each with its ownership record, in one update.
    let before = knot.serial(&node);
    let plan = converge(&resources, &managers).await;
    assert_eq!(actions(&plan), [Action::Update]);
    assert_eq!(
        changed_fields(&plan, STEP),
        ["*.lab.example.org", "ca.lab.example.org", "lab.example.org"]
    );
    for name in [
        "lab.example.org",
        "ca.lab.example.org",
        "anything.lab.example.org",
    ] {
        assert_eq!(knot.ask(&node, name, "A"), [ADDRESS], "{name}");
    }
    assert_eq!(knot.ask(&node, "_phoenix.ca.lab.example.org", "TXT"), ownership());
    assert_eq!(
        knot.ask(&node, "_phoenix._wildcard.lab.example.org", "TXT"),
        ownership()
    );
    // The zone's own records are as they were.
    assert_eq!(knot.ask(&node, "mail.lab.example.org", "A"), ["192.0.2.25"]);
    assert_eq!(knot.ask(&node, ZONE, "MX"), ["10 mail.lab.example.org."]);
    let published = knot.serial(&node);
    assert_ne!(published, before);

    // Second run: no update sent, so the serial stays.
    let plan = converge(&resources, &managers).await;
    assert_eq!(actions(&plan), []);
    assert_eq!(knot.serial(&node), published);

    // A name someone else holds: planned, refused whole, nothing sent.
    let held = step(&knot, &key_file, |text| {
        text.replace(
            r#""zones": ["lab.example.org"],"#,
            r#""zones": ["lab.example.org"], "names": ["status.lab.example.org", "new.lab.example.org"],"#,
        )
    });
    let plan = phoenix_testing::plan(held.clone(), &managers, &PlanOptions::default()).await;
    assert_eq!(
        changed_fields(&plan, STEP),
        ["new.lab.example.org", "status.lab.example.org"]
    );
    let report = phoenix_testing::apply(&plan, &managers, &ExecuteOptions::default()).await;
    let Outcome::Failed { error, .. } = outcome(&report, &format!("sync/dns/public/{ZONE}")) else {
        panic!("a held name is refused: {report:#?}")
    };
    let error = format!("{error:?}");
    assert!(
        error.contains("status.lab.example.org (held by `not Phoenix`)")
            && error.contains("nothing was sent"),
        "{error}"
    );
    assert_eq!(knot.ask(&node, "status.lab.example.org", "A"), ["192.0.2.80"]);
    assert_eq!(
        knot.ask(&node, "_phoenix.new.lab.example.org", "TXT"),
        Vec::<String>::new()
    );
    assert_eq!(knot.serial(&node), published);

    // A record deleted by hand: put back.
    let deleted = node.exec(&[
        "sh",
        "-c",
        &format!(
            "knotc -c /etc/knot/phoenix-test.conf zone-begin {ZONE} && knotc -c /etc/knot/phoenix-test.conf zone-unset {ZONE} ca A && knotc -c /etc/knot/phoenix-test.conf zone-commit {ZONE}"
        ),
    ]);
    assert!(deleted.success(), "{deleted:?}");
    assert_eq!(knot.ask(&node, "ca.lab.example.org", "A"), Vec::<String>::new());
    let plan = converge(&resources, &managers).await;
    assert_eq!(changed_fields(&plan, STEP), ["ca.lab.example.org"]);
    assert_eq!(knot.ask(&node, "ca.lab.example.org", "A"), [ADDRESS]);
    assert_eq!(actions(&converge(&resources, &managers).await), []);

    // Moving the three names and adding one changes 5 of the zone's 12 records, more than a third:
    // destructive, so refused without --allow-destroy, applied with it.
    let move_and_add = |text: &str| {
        text.replace(r#""address": "203.0.113.10""#, r#""address": "203.0.113.20""#)
            .replace(
                r#""zones": ["lab.example.org"],"#,
                r#""zones": ["lab.example.org"], "names": ["www.lab.example.org"],"#,
            )
    };
    let moved = step(&knot, &key_file, move_and_add);
    let plan = phoenix_testing::plan(moved.clone(), &managers, &PlanOptions::default()).await;
    let consequence = plan.entries().iter().find_map(|entry| entry.consequence());
    assert_eq!(consequence, Some(Consequence::Destructive), "{plan:#?}");
    let (_handle, signal) = phoenix_core::StopHandle::new();
    let refused = phoenix_core::execute(&plan, &managers, &ExecuteOptions::default(), signal, None).await;
    assert!(
        format!("{refused:?}").contains("DestructiveRefused"),
        "{refused:?}"
    );
    assert_eq!(knot.ask(&node, ZONE, "A"), [ADDRESS]);
    let allowed = ExecuteOptions {
        allow_destroy: true,
        ..ExecuteOptions::default()
    };
    let report = phoenix_testing::apply(&plan, &managers, &allowed).await;
    assert!(
        matches!(
            outcome(&report, &format!("sync/dns/public/{ZONE}")),
            Outcome::Changed { .. }
        ),
        "{report:#?}"
    );
    assert_eq!(knot.ask(&node, ZONE, "A"), ["203.0.113.20"]);
    assert_eq!(knot.ask(&node, "ca.lab.example.org", "A"), ["203.0.113.20"]);
    assert_eq!(
        knot.ask(&node, "_phoenix.www.lab.example.org", "TXT"),
        ownership()
    );

    // The route taken out of the configuration: its name and ownership record go; the others stay.
    let fewer = step(&knot, &key_file, |text| {
        move_and_add(text).replace(
            r#""routes": [{ "host": "ca.lab.example.org", "guest": 103, "port": 9000, "scheme": "https" }]"#,
            r#""routes": []"#,
        )
    });
    let plan = converge(&fewer, &managers).await;
    assert_eq!(changed_fields(&plan, STEP), ["ca.lab.example.org"]);
    assert_eq!(
        knot.ask(&node, "ca.lab.example.org", "A"),
        ["203.0.113.20"],
        "the wildcard answers it now"
    );
    assert_eq!(
        knot.ask(&node, "_phoenix.ca.lab.example.org", "TXT"),
        Vec::<String>::new()
    );
    assert_eq!(knot.ask(&node, ZONE, "A"), ["203.0.113.20"]);
    assert_eq!(actions(&converge(&fewer, &managers).await), []);

    // A wrong secret: the server's refusal, in words, when planning.
    std::fs::write(
        key_dir.join("tsig.key"),
        "d3Jvbmctc2VjcmV0LXdyb25nLXNlY3JldC13cm9uZyE=\n",
    )
    .expect("writes the key");
    let options = PlanOptions::default();
    let error = phoenix_core::plan(fewer.clone(), &managers, &options)
        .await
        .expect_err("a wrong key is refused");
    let error = format!("{error:?}");
    assert!(error.contains("BADSIG"), "{error}");

    // A key the server does not know.
    let unknown = step(&knot, &key_file, |text| {
        text.replace(r#""name": "phoenix-update""#, r#""name": "nobody""#)
    });
    let error = phoenix_core::plan(unknown, &managers, &options)
        .await
        .expect_err("an unknown key is refused");
    let error = format!("{error:?}");
    assert!(error.contains("BADKEY"), "{error}");
    let _ = std::fs::remove_dir_all(&key_dir);
}

fn tempfile_dir() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("phoenix-public-dns-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("creates a directory");
    dir
}
