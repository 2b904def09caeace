//! `host/samba` on a real Debian node (`TestNode`): Debian's Samba, installed by `host/apt/packages`,
//! its `testparm` checking what Phoenix writes, a real smbd reloading it, and `smbpasswd` adding the user.

mod common;

use common::{Setup, failure, start, steps};

/// The fixture's user as Samba's, with its password in a file of this machine, and two shares.
fn samba(password_file: &str, options: &str) -> String {
    format!(
        r#""samba": {{ "user": "phoenix_admin", "password": {{ "file": "{password_file}" }}, "shares": [
            {{ "name": "media", "path": "/srv/media", "options": "{options}", "valid_users": ["phoenix_admin"] }},
            {{ "name": "backups", "path": "/srv/backups", "options": "readonly=yes" }} ] }},"#
    )
}

async fn samba_node(options: &str) -> Option<Setup> {
    let password = std::env::temp_dir().join(format!("phoenix-samba-{}-{options}", std::process::id()));
    std::fs::write(&password, "Sh4red-but-not-here\n").expect("writes the password file");
    let samba = samba(&password.to_string_lossy(), options);
    start(move |text| {
        text.replace(
            r#""timezone": "Europe/Berlin","#,
            &format!(r#""timezone": "Europe/Berlin", {samba}"#),
        )
    })
    .await
}

#[tokio::test]
async fn shares_are_phoenixs_own_file_included_once_and_reloaded_only_when_it_changed() {
    let Some(setup) = samba_node("browseable=yes writable=yes").await else {
        return;
    };
    // A share's directory missing: nothing is written.
    setup.sh("mkdir -p /srv/media");
    let report = setup.apply().await;
    let error = failure(&report, "host/samba");
    assert!(error.contains("no directory /srv/backups"), "{error}");
    assert_eq!(
        setup.sh("ls /etc/samba/phoenix-shares.conf 2>/dev/null || true"),
        ""
    );

    setup.sh("mkdir -p /srv/backups");
    let report = setup.apply().await;
    assert!(report.succeeded(), "{report:#?}");
    assert_eq!(
        steps(&report, "host/samba"),
        [
            "wrote /etc/samba/phoenix-shares.conf",
            "wrote /etc/samba/smb.conf",
            "added phoenix_admin to Samba's users (smbpasswd -a)"
        ]
    );
    // Samba reads the shares as declared, and Debian's own sections are still there.
    let loaded = setup.sh("testparm -s 2>/dev/null");
    for line in [
        "[media]",
        "\tpath = /srv/media",
        "\tread only = No",
        "\tvalid users = phoenix_admin",
        "[backups]",
        "\tpath = /srv/backups",
        "[printers]",
    ] {
        assert!(loaded.lines().any(|got| got == line), "{line:?} in {loaded}");
    }
    assert!(setup.sh("pdbedit -L").starts_with("phoenix_admin:"));
    setup.assert_converged().await;

    // With smbd running, a line removed by hand is put back and smbd reloads; the include stays one line.
    setup.sh("smbd -D --option='smb ports = 24450' --option='interfaces = lo' --option='bind interfaces only = yes'");
    setup
        .sh("for i in $(seq 50); do smbcontrol smbd ping >/dev/null 2>&1 && exit 0; sleep 0.1; done; exit 1");
    setup.sh("sed -i '/readonly/d' /etc/samba/phoenix-shares.conf");
    assert_eq!(setup.drift("host/samba").await.len(), 1);
    let report = setup.apply().await;
    assert_eq!(
        steps(&report, "host/samba"),
        [
            "wrote /etc/samba/phoenix-shares.conf",
            "had smbd reload its configuration (smbcontrol smbd reload-config)"
        ]
    );
    setup.assert_converged().await;
    assert_eq!(setup.sh("grep -c phoenix-shares.conf /etc/samba/smb.conf"), "1\n");
    setup.sh("smbcontrol smbd shutdown || true");
}

#[tokio::test]
async fn an_option_samba_does_not_know_is_never_left_in_its_configuration() {
    let Some(setup) = samba_node("browseable=yes no_such_parameter=1").await else {
        return;
    };
    setup.sh("mkdir -p /srv/media /srv/backups");
    let report = setup.apply().await;
    let error = failure(&report, "host/samba");
    assert!(error.contains("no_such_parameter"), "{error}");
    assert_eq!(
        setup.sh("ls /etc/samba/phoenix-shares.conf 2>/dev/null || true"),
        ""
    );
    assert_eq!(
        setup.sh("grep -c phoenix-shares /etc/samba/smb.conf || true"),
        "0\n"
    );
    // Nothing was added for a configuration that did not go live.
    assert!(
        !setup
            .sh("pdbedit -L 2>/dev/null || true")
            .contains("phoenix_admin")
    );
}
