//! The Proxmox client against fakepve: authentication, TLS trust, tasks, retries, locks.

use phoenix_pve::{Auth, Client, Form, PveError, SecretString, TaskOutcome, TlsTrust};
use phoenix_testing::FakePve;
use reqwest::Method;
use serde_json::Value;

/// Puts a container template on `local` and returns its volume id.
async fn template(client: &Client) -> String {
    let form = Form::new()
        .text("content", "vztmpl")
        .text("filename", "debian-12-standard_12.7-1_amd64.tar.zst")
        .text(
            "url",
            "http://download.proxmox.com/images/system/debian-12-standard_12.7-1_amd64.tar.zst",
        );
    let outcome = client
        .run_task(Method::POST, "/nodes/pve1/storage/local/download-url", &form)
        .await
        .expect("downloads");
    assert!(matches!(outcome, TaskOutcome::Finished { .. }));
    "local:vztmpl/debian-12-standard_12.7-1_amd64.tar.zst".to_owned()
}

async fn create_container(client: &Client, vmid: u32) -> Result<TaskOutcome, PveError> {
    let form = Form::new()
        .number("vmid", vmid)
        .text("ostemplate", template(client).await)
        .text("hostname", format!("ct{vmid}"))
        .text("storage", "local-lvm")
        .flag("unprivileged", true);
    client.run_task(Method::POST, "/nodes/pve1/lxc", &form).await
}

#[tokio::test]
async fn token_auth_reads_the_cluster() {
    let Some(fake) = FakePve::start().await else {
        return;
    };
    let client = Client::connect(fake.token_settings())
        .await
        .expect("connects with the token");
    let resources = client.cluster_resources().await.expect("lists");
    assert!(
        resources
            .iter()
            .any(|resource| resource.id == "node/pve1" && resource.kind == "node")
    );
    assert!(
        resources
            .iter()
            .any(|resource| resource.storage.as_deref() == Some("local-lvm"))
    );
    let requests = fake.requests().await;
    assert_eq!(
        requests
            .iter()
            .filter(|(_, path, _)| path == "/api2/json/cluster/resources")
            .count(),
        1
    );
}

#[tokio::test]
async fn ticket_auth_writes_with_the_csrf_token() {
    let Some(fake) = FakePve::start().await else {
        return;
    };
    let auth = Auth::Ticket {
        user: fake.info.user.clone(),
        password: SecretString::new(fake.info.password.clone()),
    };
    let client = Client::connect(fake.settings(auth, TlsTrust::CaFile(fake.info.cafile.clone().into())))
        .await
        .expect("logs in");
    let outcome = create_container(&client, 200).await.expect("creates");
    assert!(
        matches!(outcome, TaskOutcome::Finished { warnings: 0, .. }),
        "{outcome:?}"
    );
    let config: Value = client
        .get("/nodes/pve1/lxc/200/config", &[])
        .await
        .expect("reads");
    assert_eq!(config["hostname"], "ct200");
    assert_eq!(config["unprivileged"], 1);
}

#[tokio::test]
async fn bad_credentials_fail_clearly() {
    let Some(fake) = FakePve::start().await else {
        return;
    };
    let trust = TlsTrust::CaFile(fake.info.cafile.clone().into());
    let token = Auth::Token {
        id: fake.info.token_id.clone(),
        secret: SecretString::new("wrong"),
    };
    let error = Client::connect(fake.settings(token, trust.clone()))
        .await
        .expect_err("refused");
    assert!(matches!(error, PveError::Authentication { .. }), "{error:?}");
    let password = Auth::Ticket {
        user: "root@pam".into(),
        password: SecretString::new("wrong"),
    };
    let error = Client::connect(fake.settings(password, trust))
        .await
        .expect_err("refused");
    assert!(
        matches!(&error, PveError::Authentication { detail, .. } if detail.contains("authentication failure")),
        "{error:?}"
    );
    assert!(
        !format!("{error:?}{error}").contains(&fake.info.token_secret),
        "secrets stay out of errors"
    );
}

#[tokio::test]
async fn certificates_are_verified_by_ca_or_fingerprint() {
    let Some(fake) = FakePve::start().await else {
        return;
    };
    let token = || Auth::Token {
        id: fake.info.token_id.clone(),
        secret: SecretString::new(fake.info.token_secret.clone()),
    };
    let pinned = phoenix_pve_fingerprint(&fake.info.fingerprint);
    Client::connect(fake.settings(token(), TlsTrust::Fingerprint(pinned)))
        .await
        .expect("the right fingerprint is accepted");

    let mut wrong = pinned;
    wrong[0] ^= 0xff;
    let error = Client::connect(fake.settings(token(), TlsTrust::Fingerprint(wrong)))
        .await
        .expect_err("refused");
    assert!(
        matches!(&error, PveError::Tls { detail, .. } if detail.contains("fingerprint mismatch")),
        "{error:?}"
    );

    let error = Client::connect(fake.settings(token(), TlsTrust::WebPki))
        .await
        .expect_err("a self-signed certificate");
    assert!(matches!(error, PveError::Tls { .. }), "{error:?}");
    Client::connect(fake.settings(token(), TlsTrust::Insecure))
        .await
        .expect("insecure accepts anything");
}

fn phoenix_pve_fingerprint(text: &str) -> [u8; 32] {
    let hex: String = text.chars().filter(|c| *c != ':').collect();
    let mut bytes = [0u8; 32];
    for (index, byte) in bytes.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&hex[index * 2..index * 2 + 2], 16).expect("hex");
    }
    bytes
}

#[tokio::test]
async fn a_5xx_on_dispatch_is_retried_once_accepted_never_again() {
    let Some(fake) = FakePve::start().await else {
        return;
    };
    let client = Client::connect(fake.token_settings()).await.expect("connects");
    fake.exec("pve.fail('POST', '/nodes/pve1/lxc', 500, 'got timeout', times=2)")
        .await;
    let outcome = create_container(&client, 201)
        .await
        .expect("the third attempt is accepted");
    assert!(matches!(outcome, TaskOutcome::Finished { .. }));
    let creates = fake
        .requests()
        .await
        .into_iter()
        .filter(|(method, path, _)| method == "POST" && path == "/api2/json/nodes/pve1/lxc")
        .count();
    assert_eq!(creates, 3, "two refused dispatches and one accepted");
}

#[tokio::test]
async fn already_exists_after_a_lost_answer_counts_as_done() {
    let Some(fake) = FakePve::start().await else {
        return;
    };
    let client = Client::connect(fake.token_settings()).await.expect("connects");
    create_container(&client, 202).await.expect("creates");
    // The container exists; a dispatch whose first attempt fails transiently and whose retry meets
    // "already exists" is reported as done.
    fake.exec("pve.fail('POST', '/nodes/pve1/lxc', 503, 'got no worker upid', times=1)")
        .await;
    let outcome = create_container(&client, 202).await.expect("done");
    assert_eq!(outcome, TaskOutcome::AlreadyDone);
    let error = create_container(&client, 202)
        .await
        .expect_err("without a retry, existing is an error");
    assert!(matches!(error, PveError::Api { status: 500, .. }), "{error:?}");
}

#[tokio::test]
async fn a_failed_task_carries_its_log() {
    let Some(fake) = FakePve::start().await else {
        return;
    };
    let client = Client::connect(fake.token_settings()).await.expect("connects");
    create_container(&client, 203).await.expect("creates");
    fake.exec("pve.guest(203).start_error = 'startup for container 203 failed'")
        .await;
    let (status, _) = failed_start(&client, 203).await;
    assert!(status.contains("startup for container 203 failed"), "{status}");
}

/// Starts a container whose start fails; returns the task's status and the end of its log, which must be
/// the `TASK ERROR` line.
async fn failed_start(client: &Client, vmid: u32) -> (String, Vec<String>) {
    let error = client
        .run_task(
            Method::POST,
            &format!("/nodes/pve1/lxc/{vmid}/status/start"),
            &Form::new(),
        )
        .await
        .expect_err("fails");
    let PveError::Task { status, log_tail, .. } = error else {
        panic!("a task error: {error:?}")
    };
    assert!(
        log_tail.last().is_some_and(|line| line.starts_with("TASK ERROR")),
        "{log_tail:?}"
    );
    (status, log_tail)
}

#[tokio::test]
async fn a_long_task_log_gives_its_end() {
    let Some(fake) = FakePve::start().await else {
        return;
    };
    let client = Client::connect(fake.token_settings()).await.expect("connects");
    create_container(&client, 207).await.expect("creates");
    // Every task from now on starts with 12,345 lines of log, more than one page of the log endpoint.
    fake.exec(
        "original = pve.task\n\
         async def long(*args, **kwargs):\n\
         \x20   kwargs['log'] = ['line %d' % n for n in range(12345)]\n\
         \x20   return await original(*args, **kwargs)\n\
         pve.task = long\n\
         pve.guest(207).start_error = 'startup for container 207 failed'",
    )
    .await;
    let (_, log_tail) = failed_start(&client, 207).await;
    assert_eq!(log_tail.len(), 20, "{log_tail:?}");
    assert!(log_tail.contains(&"line 12344".to_owned()), "{log_tail:?}");
}

#[tokio::test]
async fn a_parameter_error_names_the_parameter() {
    let Some(fake) = FakePve::start().await else {
        return;
    };
    let client = Client::connect(fake.token_settings()).await.expect("connects");
    let form = Form::new().text("memory", "lots");
    create_container(&client, 204).await.expect("creates");
    let error = client
        .put::<Value>("/nodes/pve1/lxc/204/config", &form)
        .await
        .expect_err("refused");
    let PveError::Api { status, errors, .. } = &error else {
        panic!("{error:?}")
    };
    assert_eq!(*status, 400);
    assert!(errors.contains_key("memory"), "{errors:?}");
    assert!(error.to_string().contains("memory:"), "{error}");
}

#[tokio::test]
async fn a_held_lock_is_waited_out() {
    let Some(fake) = FakePve::start().await else {
        return;
    };
    let client = Client::connect(fake.token_settings()).await.expect("connects");
    create_container(&client, 205).await.expect("creates");
    fake.exec(
        "pve.snapshot_lock(205, 'backup')\nasyncio.get_running_loop().call_later(0.6, pve.unlock, 205)",
    )
    .await;
    let started = std::time::Instant::now();
    client
        .wait_unlocked("pve1", "lxc", 205)
        .await
        .expect("the lock clears");
    assert!(
        started.elapsed() >= std::time::Duration::from_millis(500),
        "it did wait"
    );
}

#[tokio::test]
async fn firewall_rules_converge_by_content_without_wiping() {
    use phoenix_core::config::{Direction, FirewallAction, FirewallRule};
    use phoenix_pve::firewall;

    let Some(fake) = FakePve::start().await else {
        return;
    };
    let client = Client::connect(fake.token_settings()).await.expect("connects");
    create_container(&client, 210).await.expect("creates");
    let base = "/nodes/pve1/lxc/210";
    let rule = |port: &str, comment: &str| FirewallRule {
        direction: Direction::In,
        action: FirewallAction::Accept.into(),
        macro_name: None,
        proto: Some("tcp".into()),
        port: Some(port.into()),
        sport: None,
        source: Some("10.0.0.0/24".into()),
        dest: None,
        comment: Some(comment.into()),
        enabled: None,
    };
    let [a, b, c, d] = [
        rule("22", "ssh"),
        rule("80", "http"),
        rule("443", "https"),
        rule("8000:8010", "apps"),
    ]
    .map(|rule| firewall::rule_value(&rule));

    let written = firewall::converge_rules(&client, base, &[], &[a.clone(), b.clone(), c.clone()])
        .await
        .expect("writes");
    let (_, live) = firewall::read(&client, base).await.expect("reads");
    assert_eq!(live, [a.clone(), b.clone(), c.clone()]);
    assert_eq!(
        written, 3,
        "three inserts at the top, the last first, and no move"
    );

    let before = fake.requests().await.len();
    let written = firewall::converge_rules(&client, base, &live, &[c.clone(), d.clone(), a.clone()])
        .await
        .expect("writes");
    let (_, live) = firewall::read(&client, base).await.expect("reads");
    assert_eq!(live, [c, d, a], "the wanted rules, in the wanted order");
    let requests = fake.requests().await;
    let deletes = requests[before..]
        .iter()
        .filter(|(method, _, _)| method == "DELETE")
        .count();
    assert_eq!(deletes, 1, "only the rule no longer wanted is deleted");
    assert!(
        requests[before..]
            .iter()
            .filter(|(method, path, _)| method == "PUT" && path.contains("/firewall/rules/"))
            .all(|(_, _, body)| body.contains("digest=")),
        "moves by position carry the list's digest"
    );
    assert_eq!(
        written, 3,
        "one delete, one insert, and one move: the rules in order stay"
    );
    assert_eq!(
        firewall::converge_rules(&client, base, &live, &live)
            .await
            .expect("nothing"),
        0
    );

    firewall::set_enabled(&client, base, true).await.expect("enables");
    assert!(firewall::read(&client, base).await.expect("reads").0);

    // Someone adds a rule between the read and the writes: the stale positions are not used.
    let (_, stale) = firewall::read(&client, base).await.expect("reads");
    let by_hand = Form::new()
        .text("type", "in")
        .text("action", "DROP")
        .text("proto", "udp")
        .text("comment", "added by hand");
    let _: Value = client
        .post(&format!("{base}/firewall/rules"), &by_hand)
        .await
        .expect("adds");
    let error = firewall::converge_rules(&client, base, &stale, std::slice::from_ref(&b))
        .await
        .expect_err("the list changed");
    assert!(matches!(error, PveError::Changed { .. }), "{error:?}");
    let (_, live) = firewall::read(&client, base).await.expect("reads");
    assert_eq!(live.len(), 4, "nothing deleted: {live:?}");
    assert_eq!(live[0]["comment"], "added by hand");
}
