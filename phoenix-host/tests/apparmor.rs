//! `host/apparmor/<name>` on a real Debian node (`TestNode`) with Debian's real `apparmor_parser`, which
//! checks every profile before it is installed.
//!
//! This machine's kernel has no AppArmor, so the node really has none: the first test is the real
//! behaviour of such a node. Loading needs a kernel with AppArmor; for that, the second test puts two
//! stand-ins on the node (`STAND_INS`): `aa-status`, answering `--enabled` and `--json` as aa-status 3
//! does, from a list of loaded names, and `apparmor_parser`, which for `-r` runs the real parser's full
//! check (`-QTK`) and then adds the names the file defines to that list, and passes anything else to the
//! real parser.

mod common;

use std::collections::BTreeMap;

use common::{Setup, start_with, steps};
use phoenix_core::{CheckOptions, Outcome};
use phoenix_testing::outcome;

const NAME: &str = "lxc-phoenix-test";

/// A profile of the kind containers use, built only from what Debian's `apparmor` package ships.
const POLICY: &str = "#include <tunables/global>\n\
    profile lxc-phoenix-test flags=(attach_disconnected,mediate_deleted) {\n\
    \x20 #include <abstractions/base>\n\
    \x20 network,\n\
    \x20 capability,\n\
    \x20 file,\n\
    \x20 mount,\n\
    }\n";

/// Installs the stand-ins for a kernel that can load profiles (see the module's documentation).
const STAND_INS: &str = r#"mkdir -p /var/lib/phoenix-stand-in
cat > /usr/local/sbin/aa-status <<'EOF'
#!/bin/sh
# Stand-in for aa-status on a kernel with AppArmor (the test machine's kernel has none).
state=/var/lib/phoenix-stand-in/apparmor-loaded
case "$1" in
  --enabled) exit 0 ;;
  --json)
    printf '{"version": "2", "profiles": {'
    sep=''
    if [ -f "$state" ]; then
      while read -r name; do printf '%s"%s": "enforce"' "$sep" "$name"; sep=', '; done < "$state"
    fi
    printf '}, "processes": {}}\n' ;;
  *) exec /usr/sbin/aa-status "$@" ;;
esac
EOF
cat > /usr/local/sbin/apparmor_parser <<'EOF'
#!/bin/sh
# Stand-in for loading (-r): the real parser checks the file, then its profiles count as loaded.
state=/var/lib/phoenix-stand-in/apparmor-loaded
if [ "$1" = -r ]; then
  shift
  [ "$1" = -W ] && shift
  /sbin/apparmor_parser -QTK "$@" || exit $?
  sed -n 's/^[[:space:]]*profile[[:space:]]\{1,\}\([^[:space:]{]\{1,\}\).*/\1/p' "$@" >> "$state"
  sort -u -o "$state" "$state"
  exit 0
fi
exec /sbin/apparmor_parser "$@"
EOF
chmod 755 /usr/local/sbin/aa-status /usr/local/sbin/apparmor_parser"#;

fn declared(text: String) -> String {
    text.replace(
        r#""timezone": "Europe/Berlin","#,
        &format!(r#""timezone": "Europe/Berlin", "apparmor_profiles": ["{NAME}"],"#),
    )
}

async fn start(policy: &str) -> Option<Setup> {
    let profiles = BTreeMap::from([(NAME.to_owned(), policy.to_owned())]);
    let options = CheckOptions {
        apparmor_files: profiles.clone(),
        ..CheckOptions::default()
    };
    start_with(declared, &options, |manager| manager.with_profiles(profiles)).await
}

fn failure(report: &phoenix_core::Report) -> &str {
    match outcome(report, &format!("host/apparmor/{NAME}")) {
        Outcome::Failed { error, .. } => error,
        other => panic!("{other:?} in {report:#?}"),
    }
}

#[tokio::test]
async fn on_a_node_without_apparmor_the_profile_is_installed_and_the_step_says_it_cannot_be_loaded() {
    let Some(setup) = start(POLICY).await else {
        return;
    };
    let report = setup.apply().await;
    let error = failure(&report);
    assert!(error.contains("has no AppArmor in its kernel"), "{error}");
    assert_eq!(setup.sh(&format!("cat /etc/apparmor.d/{NAME}")), POLICY);
    assert!(
        matches!(outcome(&report, "host/timezone"), Outcome::Changed { .. }),
        "the other steps go on"
    );
    assert!(matches!(
        outcome(&report, "host/user/phoenix_admin"),
        Outcome::Changed { .. }
    ));
    // The file is in place; what is left is the load the node cannot do.
    assert_eq!(
        setup.drift(&format!("host/apparmor/{NAME}")).await,
        ["loaded: Some(Bool(false)) -> Some(Bool(true))"]
    );
}

#[tokio::test]
async fn a_profile_is_checked_installed_and_loaded_once_and_a_bad_one_never_replaces_the_live_file() {
    let Some(setup) = start(POLICY).await else {
        return;
    };
    setup.sh(STAND_INS);
    let address = format!("host/apparmor/{NAME}");
    let report = setup.apply().await;
    assert!(report.succeeded(), "{report:#?}");
    assert_eq!(
        steps(&report, &address),
        [
            format!("wrote /run/phoenix-apparmor-{NAME}"),
            format!("installed /etc/apparmor.d/{NAME}"),
            format!("loaded the AppArmor profile {NAME}"),
        ]
    );
    assert_eq!(
        setup.sh("cat /var/lib/phoenix-stand-in/apparmor-loaded"),
        format!("{NAME}\n")
    );
    assert_eq!(setup.sh("ls /run | grep -c phoenix-apparmor || true"), "0\n");
    setup.assert_converged().await;

    // Edited by hand: found by content, checked, installed and loaded again.
    setup.sh(&format!("echo '# local tweak' >> /etc/apparmor.d/{NAME}"));
    let drift = setup.drift(&address).await;
    assert_eq!(drift.len(), 1, "{drift:?}");
    assert!(drift[0].starts_with("content: "), "{drift:?}");
    assert!(setup.apply().await.succeeded());
    assert_eq!(setup.sh(&format!("cat /etc/apparmor.d/{NAME}")), POLICY);

    // A profile that does not parse fails with the parser's own message, and the live file stays.
    let Some(bad) = start(&POLICY.replace("  network,", "  network bogus_family,")).await else {
        return;
    };
    bad.sh(STAND_INS);
    bad.sh(&format!("printf '%s' '{POLICY}' > /etc/apparmor.d/{NAME}"));
    let report = bad.apply().await;
    let error = failure(&report);
    assert!(error.contains("`apparmor_parser` failed on node pve1"), "{error}");
    assert!(
        error.contains("bogus_family") || error.contains("line"),
        "{error}"
    );
    assert_eq!(
        bad.sh(&format!("cat /etc/apparmor.d/{NAME}")),
        POLICY,
        "the live file is untouched"
    );
    assert_eq!(
        bad.sh("cat /var/lib/phoenix-stand-in/apparmor-loaded 2>/dev/null || true"),
        ""
    );
}
