//! `host/user/<name>` on a real Debian node (`TestNode`: a privileged LXC container reached by Phoenix's own
//! SSH host channel), with the API steps against fakepve: created with its password hash, sudo drop-in and
//! SSH key; the second run changes nothing; a user deleted by hand and a sudo file edited by hand are drift
//! and are corrected; keys already in `authorized_keys` are kept.

mod common;

use common::Setup;
use phoenix_core::Resource;

const HASH: &str = "$6$phoenixtestsalt$.1aEBCHApgtKw8aKpDPL7HvUjdfu7ziPQBzdMroX2Chab3TF7lz6ORdfKOZDGMHsYolpnfrhyBm/sZgwebVfv/";
const KEY: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIPhoenixTestKeyForTheAdminUserOnly0123456789ab admin@lab";

async fn start() -> Option<Setup> {
    common::start(|text| {
        text.replace(
            r#""password_hash": "NOT_SET""#,
            &format!(r#""password_hash": "{HASH}""#),
        )
        .replace(
            r#""ssh_public_key": """#,
            &format!(r#""ssh_public_key": "{KEY}""#),
        )
    })
    .await
}

#[tokio::test]
async fn a_user_is_created_with_hash_sudo_and_key_and_the_second_run_changes_nothing() {
    let Some(setup) = start().await else {
        return;
    };
    let report = setup.apply().await;
    assert!(report.succeeded(), "{report:#?}");

    assert!(
        setup
            .sh("getent passwd phoenix_admin")
            .contains(":/home/phoenix_admin:/bin/bash")
    );
    assert_eq!(setup.sh("getent shadow phoenix_admin | cut -d: -f2").trim(), HASH);
    assert_eq!(
        setup.sh("cat /etc/sudoers.d/phoenix-phoenix_admin"),
        "phoenix_admin ALL=(ALL:ALL) ALL\n"
    );
    setup.sh("visudo -c -q");
    assert_eq!(
        setup.sh("cat /home/phoenix_admin/.ssh/authorized_keys"),
        format!("{KEY}\n")
    );
    assert_eq!(
        setup.sh("stat -c '%U %a' /home/phoenix_admin/.ssh /home/phoenix_admin/.ssh/authorized_keys"),
        "phoenix_admin 700\nphoenix_admin 600\n"
    );
    assert!(
        !std::fs::read_to_string("/etc/passwd")
            .expect("reads")
            .contains("phoenix_admin"),
        "the user lives on the node, not on this machine"
    );
    // Plans show the hash only as a digest, for people and as JSON.
    setup.sh("usermod -p '$6$other$hash' phoenix_admin");
    let plan = setup.plan().await;
    let text = phoenix_core::engine::render::plan_text(&plan, phoenix_core::engine::render::Colour::Never);
    let json = serde_json::to_string(&phoenix_core::engine::render::plan_document(&plan)).expect("JSON");
    for shown in [&text, &json] {
        assert!(shown.contains("password") && shown.contains("sha256:"), "{shown}");
        assert!(
            !shown.contains(HASH) && !shown.contains("$6$other$hash"),
            "{shown}"
        );
    }
    assert!(setup.apply().await.succeeded());

    setup.assert_converged().await;
}

#[tokio::test]
async fn a_user_deleted_by_hand_and_a_sudo_file_edited_by_hand_are_drift_and_corrected() {
    let Some(setup) = start().await else {
        return;
    };
    assert!(setup.apply().await.succeeded());

    // Someone loosened sudo, and added a key of their own.
    setup.sh("echo 'phoenix_admin ALL=(ALL) NOPASSWD: ALL' > /etc/sudoers.d/phoenix-phoenix_admin");
    setup.sh("echo 'ssh-ed25519 AAAAOTHERKEY other@laptop' >> /home/phoenix_admin/.ssh/authorized_keys");
    assert_eq!(
        setup.drift("host/user/phoenix_admin").await,
        ["sudo: Some(Bool(false)) -> Some(Bool(true))"]
    );
    assert!(setup.apply().await.succeeded());
    assert_eq!(
        setup.sh("cat /etc/sudoers.d/phoenix-phoenix_admin"),
        "phoenix_admin ALL=(ALL:ALL) ALL\n"
    );
    assert!(
        setup
            .sh("cat /home/phoenix_admin/.ssh/authorized_keys")
            .contains("other@laptop")
    );
    assert!(!setup.plan().await.has_changes());

    // The user is deleted with its home: the next run creates it again, key and all.
    setup.sh("userdel -r phoenix_admin 2>/dev/null; rm -f /etc/sudoers.d/phoenix-phoenix_admin");
    let plan = setup.plan().await;
    let entry = plan
        .entries()
        .iter()
        .find(|entry| entry.address.to_string() == "host/user/phoenix_admin")
        .expect("planned");
    assert_eq!(entry.changes[0].action, phoenix_core::Action::Create);
    assert!(setup.apply().await.succeeded());
    assert_eq!(
        setup.sh("cat /home/phoenix_admin/.ssh/authorized_keys"),
        format!("{KEY}\n")
    );
    assert!(!setup.plan().await.has_changes());
}

#[tokio::test]
async fn the_subordinate_ids_that_id_maps_need_are_appended_and_other_entries_kept() {
    let Some(mut setup) = start().await else {
        return;
    };
    setup.sh("printf 'root:100000:65536\\nalice:200000:65536\\n' > /etc/subuid && : > /etc/subgid");
    let ids = phoenix_core::SubIds {
        uids: vec![(1000, 1), (100_000, 65_536)],
        gids: vec![(1000, 1), (100_000, 65_536)],
    };
    setup.resources = vec![Resource {
        address: "host/subids".parse().expect("an address"),
        name: None,
        depends_on: Vec::new(),
        after: Vec::new(),
        node: None,
        storage: None,
        desired: phoenix_core::Desired::Host(phoenix_core::HostStep::SubIds(Box::new(ids))),
    }];
    let plan = setup.plan().await;
    let fields: Vec<String> = plan.entries()[0].changes[0]
        .fields
        .iter()
        .map(|field| format!("{}: {:?}", field.field, field.old))
        .collect();
    assert_eq!(
        fields,
        [
            r#"gids: Some(Array [])"#,
            r#"uids: Some(Array [String("root:100000:65536")])"#
        ]
    );
    assert!(setup.apply().await.succeeded());
    assert_eq!(
        setup.sh("cat /etc/subuid"),
        "root:100000:65536\nalice:200000:65536\nroot:1000:1\n"
    );
    assert_eq!(setup.sh("cat /etc/subgid"), "root:1000:1\nroot:100000:65536\n");
    assert!(!setup.plan().await.has_changes());
}
