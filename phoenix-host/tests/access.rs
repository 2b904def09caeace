//! `host/access/*` (Proxmox groups, roles, users, API tokens, ACL entries) against fakepve with the
//! harness's access state: a fresh node gets everything with one write each, a second run writes nothing,
//! the token's secret is in its file (mode 0600) and in no plan, report or log line, drift made by hand is
//! corrected alone, what is not declared is left alone, a token whose file is gone is replaced only with
//! `--allow-destroy`, and bad input is refused offline at its JSON pointer.

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use phoenix_core::engine::render::{self, Colour};
use phoenix_core::{
    Action, CheckOptions, Consequence, ExecuteOptions, FileKind, Managers, PlanOptions, Resource, SourceFile,
    StopHandle,
};
use phoenix_host::{HostManager, Node};
use phoenix_pve::{Client, Form};
use phoenix_testing::{FakePve, fixture};
use serde_json::Value;

const ACCESS: &str = r#""proxmox_access": {
    "groups": [
      { "groupid": "ops", "comment": "Operators" },
      { "groupid": "deployers" }
    ],
    "roles": [
      { "roleid": "PhoenixDeploy", "privs": ["VM.PowerMgmt", "VM.Audit", "Datastore.AllocateSpace"] }
    ],
    "users": [
      { "userid": "deploy@pve", "comment": "CI deployments", "email": "ops@example.com", "enable": true,
        "groups": ["ops", "deployers"], "password": { "file": "PASSWORD_FILE" } }
    ],
    "tokens": [
      { "userid": "deploy@pve", "tokenid": "ci", "comment": "CI", "privsep": true, "secret_file": "SECRET_FILE" }
    ],
    "acls": [
      { "path": "/vms", "roles": ["PVEVMAdmin"], "groups": ["ops"] },
      { "path": "/", "roles": ["PhoenixDeploy"], "users": ["deploy@pve"], "tokens": ["deploy@pve!ci"], "propagate": false }
    ]
  },
  "users": ["#;

/// The fixture node's hypervisor file with `access` in it.
fn sources(access: &str) -> Vec<SourceFile> {
    let dir = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/node"));
    fixture::every_source_edited(dir, |kind, text| {
        Some(if kind == FileKind::Hypervisor {
            text.replace(r#""users": ["#, access)
        } else {
            text
        })
    })
}

/// A log that keeps every line Phoenix writes while the test runs, at every level.
#[derive(Clone, Default)]
struct Log(Arc<Mutex<Vec<u8>>>);

impl Write for Log {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("not poisoned").extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Log {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().expect("not poisoned")).into_owned()
    }
}

/// The log of this test binary: one subscriber for every thread (tracing caches per callsite whether
/// anyone listens, so a subscriber of one thread would miss what runs while another test has none).
fn capture_log() -> Log {
    static LOG: std::sync::OnceLock<Log> = std::sync::OnceLock::new();
    LOG.get_or_init(|| {
        let log = Log::default();
        let writer = log.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .finish();
        tracing::subscriber::set_global_default(subscriber).expect("the only subscriber");
        log
    })
    .clone()
}

struct Node1 {
    fake: FakePve,
    client: Arc<Client>,
    managers: Managers,
    resources: Vec<Resource>,
    directory: PathBuf,
    /// Every rendered plan and report, for the secret's absence.
    rendered: Mutex<String>,
    /// Every write Phoenix sent (`METHOD path body`), for what it must not touch.
    sent: Mutex<Vec<String>>,
}

/// A fresh fake, a host manager on it, and the access resources of [`ACCESS`], with the password and the
/// token's secret file in a directory of the test's own.
async fn start(name: &str) -> Option<Node1> {
    start_edited(name, |access| access).await
}

/// [`start`], with [`ACCESS`] passed through `edit` first.
async fn start_edited(name: &str, edit: impl Fn(String) -> String) -> Option<Node1> {
    let fake = FakePve::start().await?;
    let client = fake.root_client().await;
    let directory = std::env::temp_dir().join(format!("phoenix-access-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&directory);
    std::fs::create_dir_all(&directory).expect("a directory");
    let password = directory.join("password");
    std::fs::write(&password, "correct horse battery staple\n").expect("writes");
    let access = edit(ACCESS.to_owned())
        .replace("PASSWORD_FILE", &password.display().to_string())
        .replace(
            "SECRET_FILE",
            &directory.join("deploy-ci.token").display().to_string(),
        );
    let resources = fixture::resources(sources(&access), &CheckOptions::default())
        .into_iter()
        .filter(|resource| resource.address.to_string().starts_with("host/access/"))
        .collect();
    let mut managers = Managers::default();
    let node = Node::new(Arc::clone(&client), "pve1", None);
    managers.register(Arc::new(HostManager::new(node)));
    Some(Node1 {
        fake,
        client,
        managers,
        resources,
        directory,
        rendered: Mutex::new(String::new()),
        sent: Mutex::new(Vec::new()),
    })
}

impl Node1 {
    async fn plan(&self) -> phoenix_core::Plan {
        let plan =
            phoenix_testing::plan(self.resources.clone(), &self.managers, &PlanOptions::default()).await;
        let mut rendered = self.rendered.lock().expect("not poisoned");
        rendered.push_str(&render::plan_text(&plan, Colour::Never));
        rendered.push_str(&serde_json::to_string(&render::plan_document(&plan)).expect("JSON"));
        plan
    }

    async fn apply_with(&self, options: &ExecuteOptions) -> phoenix_core::Report {
        let plan = self.plan().await;
        let before = self.fake.requests().await.len();
        let report = phoenix_testing::apply(&plan, &self.managers, options).await;
        let sent = self.fake.requests().await[before..]
            .iter()
            .filter(|(method, _, _)| method != "GET")
            .map(|(method, path, body)| format!("{method} {path} {body}"))
            .collect::<Vec<_>>();
        self.sent.lock().expect("not poisoned").extend(sent);
        assert!(report.succeeded(), "{report:#?}");
        let mut rendered = self.rendered.lock().expect("not poisoned");
        rendered.push_str(&render::report_text(&report, Colour::Never));
        rendered.push_str(&format!("{report:?}"));
        report
    }

    async fn apply(&self) -> phoenix_core::Report {
        self.apply_with(&ExecuteOptions::default()).await
    }

    /// The writes sent by `run`, sorted (independent resources are applied in parallel).
    async fn writes_of(&self, run: impl AsyncFnOnce(&Node1)) -> Vec<String> {
        let before = self.fake.writes().await.len();
        run(self).await;
        let mut writes = self.fake.writes().await[before..].to_vec();
        writes.sort();
        writes
    }

    /// Makes a change by hand (`PUT path form`), checks that the plan finds `field` changed and nothing
    /// else, converges, and returns the writes that took.
    async fn corrected(&self, path: &str, form: Form, field: &str) -> Vec<String> {
        self.put(path, form).await;
        assert_eq!(changed_fields(&self.plan().await), [field]);
        self.writes_of(async |node| drop(node.apply().await)).await
    }

    async fn get(&self, path: &str) -> Value {
        self.client.get(path, &[]).await.expect("reads")
    }

    async fn put(&self, path: &str, form: Form) {
        let _: Value = self.client.put(path, &form).await.expect("writes");
    }

    fn secret_file(&self) -> PathBuf {
        self.directory.join("deploy-ci.token")
    }

    async fn live_secret(&self) -> String {
        let secret = self
            .fake
            .exec("result = pve.apitokens.get('deploy@pve!ci')")
            .await;
        secret.as_str().expect("the token exists").to_owned()
    }

    /// The ACL entries as `path type ugid role propagate`.
    async fn acl(&self) -> Vec<String> {
        let entries = self.get("/access/acl").await;
        entries
            .as_array()
            .expect("a list")
            .iter()
            .map(|entry| {
                let text = |key: &str| entry[key].as_str().unwrap_or_default().to_owned();
                format!(
                    "{} {} {} {} {}",
                    text("path"),
                    text("type"),
                    text("ugid"),
                    text("roleid"),
                    entry["propagate"]
                )
            })
            .collect()
    }
}

impl Drop for Node1 {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.directory);
    }
}

fn changed_fields(plan: &phoenix_core::Plan) -> Vec<String> {
    plan.entries()
        .iter()
        .flat_map(|entry| {
            entry.changes.iter().flat_map(move |change| {
                change
                    .fields
                    .iter()
                    .map(move |field| format!("{} {}", entry.address, field.field))
            })
        })
        .collect()
}

#[tokio::test]
async fn a_fresh_node_gets_everything_once_the_secret_only_in_its_file_and_a_second_run_writes_nothing() {
    let log = capture_log();
    let Some(node) = start("fresh").await else {
        return;
    };
    let writes = node.writes_of(async |node| drop(node.apply().await)).await;
    assert_eq!(
        writes,
        [
            "POST /api2/json/access/groups",
            "POST /api2/json/access/groups",
            "POST /api2/json/access/roles",
            "POST /api2/json/access/users",
            "POST /api2/json/access/users/deploy@pve/token/ci",
            "PUT /api2/json/access/acl",
            "PUT /api2/json/access/acl",
        ]
    );
    // What was written is what was declared.
    let user = node.get("/access/users/deploy@pve").await;
    assert_eq!(
        (&user["comment"], &user["email"], &user["groups"]),
        (
            &Value::from("CI deployments"),
            &Value::from("ops@example.com"),
            &serde_json::json!(["deployers", "ops"])
        )
    );
    let role = node.get("/access/roles/PhoenixDeploy").await;
    assert_eq!(
        role.as_object()
            .map(|privs| privs.keys().cloned().collect::<Vec<_>>()),
        Some(vec![
            "Datastore.AllocateSpace".into(),
            "VM.Audit".into(),
            "VM.PowerMgmt".into()
        ])
    );
    assert_eq!(
        node.acl().await,
        [
            "/ user deploy@pve PhoenixDeploy 0",
            "/ token deploy@pve!ci PhoenixDeploy 0",
            "/vms group ops PVEVMAdmin 1",
        ]
    );
    // The password logs in.
    let logged_in = node.fake.exec("result = pve.users.get('deploy@pve')").await;
    assert_eq!(logged_in, "correct horse battery staple");

    // The secret is in the named file, private from the start, and nowhere else.
    let secret = node.live_secret().await;
    let file = std::fs::read_to_string(node.secret_file()).expect("the secret file");
    assert_eq!(file.trim_end(), secret);
    let mode = std::fs::metadata(node.secret_file())
        .expect("exists")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    let leftovers: Vec<_> = std::fs::read_dir(&node.directory)
        .expect("lists")
        .filter_map(|entry| entry.ok())
        .map(|entry| entry.file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        leftovers.len(),
        2,
        "the password and the token, no temporary file: {leftovers:?}"
    );

    let again = node.writes_of(async |node| drop(node.apply().await)).await;
    assert!(again.is_empty(), "{again:?}");
    assert!(!node.plan().await.has_changes());

    let rendered = node.rendered.lock().expect("not poisoned").clone();
    assert!(rendered.contains("host/access/token/deploy@pve!ci"), "{rendered}");
    for secret_text in [secret.as_str(), "correct horse battery staple"] {
        assert!(
            !rendered.contains(secret_text),
            "a secret in a plan or report:\n{rendered}"
        );
        assert!(!log.text().contains(secret_text), "a secret in the log");
    }
    // The executor's own lines, with each outcome and its steps, were captured.
    assert!(
        log.text().contains("host/access/token/deploy@pve!ci"),
        "{}",
        log.text()
    );
}

#[tokio::test]
async fn drift_by_hand_is_corrected_alone_and_what_is_not_declared_is_left_alone() {
    let Some(node) = start("drift").await else {
        return;
    };
    // Someone else's user, group, membership and ACL entries are there before Phoenix.
    let theirs = Form::new().text("userid", "alice@pve").text("comment", "hers");
    let _: Value = node.client.post("/access/users", &theirs).await.expect("creates");
    let _: Value = node
        .client
        .post("/access/groups", &Form::new().text("groupid", "others"))
        .await
        .expect("creates");
    let on_vms = |who: &str, role: &str| {
        Form::new()
            .text("path", "/vms")
            .text("roles", role)
            .text("users", who)
    };
    node.put("/access/acl", on_vms("alice@pve", "PVEAuditor")).await;
    node.apply().await;
    node.put(
        "/access/users/deploy@pve",
        Form::new().text("groups", "others").flag("append", true),
    )
    .await;
    assert!(
        !node.plan().await.has_changes(),
        "a membership of another group is no drift"
    );

    // A comment changed by hand: one field, one write.
    let hacked = Form::new().text("comment", "hacked");
    let writes = node
        .corrected(
            "/access/users/deploy@pve",
            hacked,
            "host/access/user/deploy@pve comment",
        )
        .await;
    assert_eq!(writes, ["PUT /api2/json/access/users/deploy@pve"]);
    assert_eq!(
        node.get("/access/users/deploy@pve").await["comment"],
        "CI deployments"
    );

    // A membership removed by hand is added back; the others stay.
    let fewer = Form::new().text("groups", "ops,others");
    let writes = node
        .corrected(
            "/access/users/deploy@pve",
            fewer,
            "host/access/user/deploy@pve groups",
        )
        .await;
    assert_eq!(writes, ["PUT /api2/json/access/users/deploy@pve"]);
    assert_eq!(
        node.get("/access/users/deploy@pve").await["groups"],
        serde_json::json!(["deployers", "ops", "others"])
    );

    // A declared ACL entry deleted by hand is written again; the entries of others stay.
    let deleted = Form::new()
        .text("path", "/vms")
        .text("roles", "PVEVMAdmin")
        .text("groups", "ops")
        .flag("delete", true);
    let writes = node
        .corrected("/access/acl", deleted, "host/access/acl /vms")
        .await;
    assert_eq!(writes, ["PUT /api2/json/access/acl"]);
    assert!(
        node.acl()
            .await
            .contains(&"/vms group ops PVEVMAdmin 1".to_owned())
    );

    // A token's comment changed by hand is set back, the token (and its secret) kept.
    let secret = node.live_secret().await;
    let writes = node
        .corrected(
            "/access/users/deploy@pve/token/ci",
            Form::new().text("comment", "x"),
            "host/access/token/deploy@pve!ci comment",
        )
        .await;
    assert_eq!(writes, ["PUT /api2/json/access/users/deploy@pve/token/ci"]);
    assert_eq!(node.live_secret().await, secret);

    // A privilege added to the declared role by hand is taken away.
    let more = Form::new().text("privs", "Sys.Modify").flag("append", true);
    let writes = node
        .corrected(
            "/access/roles/PhoenixDeploy",
            more,
            "host/access/role/PhoenixDeploy privs",
        )
        .await;
    assert_eq!(writes, ["PUT /api2/json/access/roles/PhoenixDeploy"]);
    assert!(
        node.get("/access/roles/PhoenixDeploy")
            .await
            .get("Sys.Modify")
            .is_none()
    );

    // Nothing of others was touched.
    assert_eq!(node.get("/access/users/alice@pve").await["comment"], "hers");
    assert!(
        node.acl()
            .await
            .contains(&"/vms user alice@pve PVEAuditor 1".to_owned())
    );
    let sent = node.sent.lock().expect("not poisoned").clone();
    assert!(sent.len() >= 7, "{sent:?}");
    let theirs: Vec<&String> = sent
        .iter()
        .filter(|write| write.contains("alice") || write.contains("others"))
        .collect();
    assert!(
        theirs.is_empty(),
        "Phoenix wrote what it does not declare: {theirs:?}"
    );
    assert!(!node.plan().await.has_changes());
}

#[tokio::test]
async fn a_token_whose_secret_file_is_gone_is_destructive_and_regenerated_only_when_allowed() {
    let Some(node) = start("lost").await else {
        return;
    };
    node.apply().await;
    let first = node.live_secret().await;
    std::fs::remove_file(node.secret_file()).expect("removes");

    let plan = node.plan().await;
    let changed: Vec<_> = plan
        .entries()
        .iter()
        .filter(|entry| !entry.is_unchanged())
        .collect();
    assert_eq!(changed.len(), 1, "{plan:#?}");
    let entry = changed[0];
    assert_eq!(entry.address.to_string(), "host/access/token/deploy@pve!ci");
    assert_eq!(entry.changes[0].action, Action::Replace);
    assert_eq!(entry.consequence(), Some(Consequence::Destructive));
    let shown = render::plan_text(&plan, Colour::Never);
    assert!(shown.contains("cannot be read back"), "{shown}");

    // Without --allow-destroy the run does not start.
    let (_handle, signal) = StopHandle::new();
    let refused =
        phoenix_core::execute(&plan, &node.managers, &ExecuteOptions::default(), signal, None).await;
    assert!(refused.is_err(), "a destructive plan runs only when allowed");
    assert_eq!(node.live_secret().await, first);

    let allowed = ExecuteOptions {
        allow_destroy: true,
        ..ExecuteOptions::default()
    };
    node.apply_with(&allowed).await;
    let second = node.live_secret().await;
    assert_ne!(second, first, "a new secret");
    let file = std::fs::read_to_string(node.secret_file()).expect("written again");
    assert_eq!(file.trim_end(), second);
    // The token's ACL entry, which Proxmox drops with the token, is back.
    assert!(
        node.acl()
            .await
            .contains(&"/ token deploy@pve!ci PhoenixDeploy 0".to_owned())
    );
    assert!(!node.plan().await.has_changes());
}

#[test]
fn bad_access_input_is_refused_offline_at_its_pointer() {
    let bad = r#""proxmox_access": {
    "roles": [
      { "roleid": "Deploy", "privs": ["VM.Audit", "VM.PowerMgmnt"] },
      { "roleid": "PVEVMAdmin", "privs": [] }
    ],
    "users": [
      { "userid": "deploy" },
      { "userid": "alice@1dap" },
      { "userid": "bob@pam", "password": { "env": "BOB" } }
    ],
    "acls": [
      { "path": "/vms", "roles": ["PVEVMAdmn"], "users": ["bob@pam"] },
      { "path": "/", "roles": ["Deploy"] }
    ]
  },
  "users": ["#;
    let validation = phoenix_core::validate(sources(bad), &CheckOptions::default());
    let found: Vec<(String, String, usize)> = validation
        .problems()
        .iter()
        .filter(|problem| problem.code().starts_with("phoenix::access::"))
        .map(|problem| {
            let (line, _) = problem.line_column().expect("placed");
            (problem.code().to_owned(), problem.pointer().to_owned(), line)
        })
        .collect();
    let expected = [
        (
            "phoenix::access::unknown_privilege",
            "/proxmox_access/roles/0/privs/1",
            18,
        ),
        (
            "phoenix::access::builtin_role",
            "/proxmox_access/roles/1/roleid",
            19,
        ),
        (
            "phoenix::access::bad_userid",
            "/proxmox_access/users/0/userid",
            22,
        ),
        (
            "phoenix::access::bad_userid",
            "/proxmox_access/users/1/userid",
            23,
        ),
        (
            "phoenix::access::password_realm",
            "/proxmox_access/users/2/password",
            24,
        ),
        (
            "phoenix::access::unknown_role",
            "/proxmox_access/acls/0/roles/0",
            27,
        ),
        (
            "phoenix::access::acl_without_subject",
            "/proxmox_access/acls/1",
            28,
        ),
    ];
    let expected: Vec<(String, String, usize)> = expected
        .iter()
        .map(|(code, pointer, line)| ((*code).to_owned(), (*pointer).to_owned(), *line))
        .collect();
    assert_eq!(found, expected);
    let help = |code: &str| {
        validation
            .problems()
            .iter()
            .find(|problem| problem.code() == code)
            .and_then(|problem| problem.help_text())
            .map(str::to_owned)
    };
    assert_eq!(
        help("phoenix::access::unknown_privilege").as_deref(),
        Some("did you mean `VM.PowerMgmt`?")
    );
    assert_eq!(
        help("phoenix::access::unknown_role").as_deref(),
        Some("did you mean `PVEVMAdmin`?")
    );
    assert!(validation.has_errors());
}

#[tokio::test]
async fn an_acl_naming_someone_proxmox_does_not_know_fails_with_its_message_and_alone() {
    let Some(node) = start_edited("ghost", |access| {
        access.replace(
            r#""groups": ["ops"] }"#,
            r#""groups": ["ops"], "users": ["ghost@pve"] }"#,
        )
    })
    .await
    else {
        return;
    };
    let plan = node.plan().await;
    let report = phoenix_testing::apply(&plan, &node.managers, &ExecuteOptions::default()).await;
    let failed: Vec<String> = report
        .resources
        .iter()
        .filter(|line| matches!(line.outcome, phoenix_core::Outcome::Failed { .. }))
        .map(|line| format!("{} {:?}", line.address, line.outcome))
        .collect();
    assert_eq!(failed.len(), 1, "{report:#?}");
    assert!(failed[0].starts_with("host/access/acl "), "{failed:?}");
    assert!(
        failed[0].contains("user 'ghost@pve' does not exist"),
        "{failed:?}"
    );
    // Everything else was created, the other ACL item included.
    assert!(
        node.acl()
            .await
            .contains(&"/ token deploy@pve!ci PhoenixDeploy 0".to_owned())
    );
    assert_eq!(
        node.get("/access/users/deploy@pve").await["comment"],
        "CI deployments"
    );
    assert!(node.secret_file().is_file());
}
