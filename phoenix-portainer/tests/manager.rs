//! The homelab's stacks deployed through a fresh (fake) Portainer, every request checked by Prism against
//! Portainer's OpenAPI description: first run, a second run that writes nothing, drift made in
//! Portainer, a changed variable, a stack taken out, and Portainer down.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use phoenix_core::engine::render::plan_document;
use phoenix_core::{
    Action, CheckOptions, ExecuteOptions, Managers, Outcome, Plan, PlanOptions, Resource, ResourceKind,
    SourceFile,
};
use phoenix_portainer::{OWNER_VARIABLE, Portainer, PortainerAuth, PortainerManager, PortainerSettings};
use phoenix_pve::{SecretString, TlsTrust};
use phoenix_testing::docker::{Dockerd, LocalDocker};
use phoenix_testing::portainer::FakePortainer;
use phoenix_testing::{fixture, outcome, workspace};
use serde_json::Value;

const PASSWORD: &str = "a-long-enough-password";

fn homelab(edit: impl Fn(&str) -> String) -> (phoenix_core::Estate, Vec<Resource>) {
    let dir = workspace().join("examples/homelab");
    let sources: Vec<SourceFile> = fixture::sources(&dir)
        .into_iter()
        .map(|source| SourceFile::new(source.kind(), source.path().to_owned(), edit(source.text())))
        .collect();
    let estate = fixture::estate(sources, &CheckOptions::default());
    let resources = phoenix_core::resources(&estate)
        .into_iter()
        .filter(|resource| resource.kind() == ResourceKind::Stack)
        .collect();
    (estate, resources)
}

fn managers_for(fake: &FakePortainer, estate: &phoenix_core::Estate, qdrant_key: &str) -> Managers {
    managers_with(fake, estate, qdrant_key, None)
}

/// How the tests reach the fake, as its administrator.
fn settings(fake: &FakePortainer) -> PortainerSettings {
    PortainerSettings {
        url: fake.url().to_owned(),
        auth: PortainerAuth::Admin {
            user: "admin".to_owned(),
            password: SecretString::new(PASSWORD),
        },
        admin: Some(("admin".to_owned(), SecretString::new(PASSWORD))),
        tls: TlsTrust::WebPki,
        request_timeout: Duration::from_secs(30),
    }
}

/// The manager, running the server's and agents' containers on `docker` when given.
fn managers_with(
    fake: &FakePortainer,
    estate: &phoenix_core::Estate,
    qdrant_key: &str,
    docker: Option<&Dockerd>,
) -> Managers {
    let settings = settings(fake);
    let env = BTreeMap::from([
        ("QDRANT_API_KEY".to_owned(), qdrant_key.to_owned()),
        ("SEARXNG_SECRET".to_owned(), "searx-secret-value".to_owned()),
    ]);
    let manager = PortainerManager::new(
        Portainer::new(&settings).expect("a client"),
        estate,
        &workspace().join("examples/homelab"),
        Box::new(move |name| env.get(name).cloned()),
    )
    .with_ready_timeout(Duration::from_secs(3));
    let manager = match docker {
        Some(engine) => {
            let guests: BTreeMap<u32, LocalDocker> =
                [1001, 1002].map(|vmid| (vmid, engine.guest(vmid))).into();
            manager.with_docker(Arc::new(move |vmid, _node| {
                Arc::new(guests.get(&vmid).expect("a VM of the homelab").clone())
            }))
        }
        None => manager,
    };
    let mut managers = Managers::default();
    managers.register(Arc::new(manager));
    managers
}

/// The address and action of every change of a plan.
fn changes(plan: &Plan) -> Vec<(String, Action)> {
    plan.entries()
        .iter()
        .flat_map(|entry| {
            entry
                .changes
                .iter()
                .map(|change| (change.address.to_string(), change.action))
        })
        .collect()
}

async fn plan(resources: &[Resource], managers: &Managers) -> Plan {
    phoenix_testing::plan(resources.to_vec(), managers, &PlanOptions::default()).await
}

async fn apply(plan: &Plan, managers: &Managers, allow_destroy: bool) -> phoenix_core::Report {
    let options = ExecuteOptions {
        allow_destroy,
        ..ExecuteOptions::default()
    };
    phoenix_testing::apply(plan, managers, &options).await
}

fn stack<'a>(state: &'a Value, name: &str) -> &'a Value {
    state["stacks"]
        .as_array()
        .and_then(|stacks| stacks.iter().find(|stack| stack["Name"] == name))
        .unwrap_or_else(|| panic!("no stack {name} in {state}"))
}

#[tokio::test]
async fn the_homelab_stacks_converge_and_only_what_changed_is_redeployed() {
    let Some(fake) = FakePortainer::start(&[], 3600).await else {
        return;
    };
    let (estate, resources) = homelab(str::to_owned);
    let managers = managers_for(&fake, &estate, "qdrant-key-1");

    // First run on a fresh Portainer: its administrator, the agent's environment, both stacks.
    let first = plan(&resources, &managers).await;
    assert_eq!(
        changes(&first),
        [
            ("portainer/server".to_owned(), Action::Update),
            ("portainer/endpoint/1002".to_owned(), Action::Create),
            ("stack/qdrant@1002".to_owned(), Action::Create),
            ("stack/searxng@1002".to_owned(), Action::Create),
        ]
    );
    let json = serde_json::to_string(&plan_document(&first)).expect("serialises");
    assert!(
        !json.contains("qdrant-key-1") && !json.contains("searx-secret-value"),
        "{json}"
    );
    let report = apply(&first, &managers, false).await;
    assert!(report.succeeded(), "{report:#?}");
    let state = fake.state().await;
    assert_eq!(state["endpoints"][0]["Name"], "apps");
    assert_eq!(state["endpoints"][0]["URL"], "tcp://10.42.0.22:9001");
    let qdrant = stack(&state, "qdrant");
    let compose =
        std::fs::read_to_string(workspace().join("examples/homelab/stacks/qdrant/docker-compose.yml"))
            .expect("reads");
    assert_eq!(qdrant["content"], compose);
    let env: BTreeMap<&str, &str> = qdrant["Env"]
        .as_array()
        .expect("variables")
        .iter()
        .map(|pair| (pair["name"].as_str().unwrap(), pair["value"].as_str().unwrap()))
        .collect();
    assert_eq!(env["QDRANT_API_KEY"], "qdrant-key-1");
    assert_eq!(env["API_PORT"], "6333");
    assert_eq!(env[OWNER_VARIABLE], "phoenix");

    // Second run: nothing to do, and nothing written.
    let writes = fake.writes().await.len();
    let second = plan(&resources, &managers).await;
    assert_eq!(changes(&second), []);
    apply(&second, &managers, false).await;
    assert_eq!(fake.writes().await.len(), writes);

    // A compose file edited in Portainer is drift: that stack is redeployed, with the configured file.
    let id = qdrant["Id"].as_u64().expect("an id");
    fake.edit_stack_file(id, "services:\n  qdrant:\n    image: qdrant/qdrant:edited\n")
        .await;
    let drift = plan(&resources, &managers).await;
    assert_eq!(
        changes(&drift),
        [("stack/qdrant@1002".to_owned(), Action::Update)]
    );
    assert!(apply(&drift, &managers, false).await.succeeded());
    assert_eq!(stack(&fake.state().await, "qdrant")["content"], compose);

    // A secret changed in its source redeploys that stack only; the plan shows that it differs, not it.
    let managers = managers_for(&fake, &estate, "qdrant-key-2");
    let changed = plan(&resources, &managers).await;
    assert_eq!(
        changes(&changed),
        [("stack/qdrant@1002".to_owned(), Action::Update)]
    );
    let json = serde_json::to_string(&plan_document(&changed)).expect("serialises");
    assert!(json.contains("(sensitive, differs)"), "{json}");
    assert!(!json.contains("qdrant-key"), "{json}");
    let before = fake.writes().await.len();
    assert!(apply(&changed, &managers, false).await.succeeded());
    let writes = fake.writes().await;
    assert_eq!(writes[before..], [format!("PUT /api/stacks/{id}")]);

    // A stack taken out of the VM's list is removed, since Phoenix deployed it, and only when allowed.
    let (estate, resources) = homelab(|text| text.replace(r#"["qdrant", "searxng"]"#, r#"["qdrant"]"#));
    let managers = managers_for(&fake, &estate, "qdrant-key-2");
    let removal = plan(&resources, &managers).await;
    assert_eq!(
        changes(&removal),
        [("stack/searxng@1002".to_owned(), Action::Delete)]
    );
    let (_stop, signal) = phoenix_core::StopHandle::new();
    let refused = phoenix_core::execute(&removal, &managers, &ExecuteOptions::default(), signal, None).await;
    assert!(refused.is_err(), "a destructive plan needs --allow-destroy");
    assert!(apply(&removal, &managers, true).await.succeeded());
    let state = fake.state().await;
    let names: Vec<&str> = state["stacks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["Name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["qdrant"]);
    fake.assert_requests_valid().await;
}

#[tokio::test]
async fn portainer_down_fails_its_readiness_check_and_skips_the_stacks() {
    let Some(fake) = FakePortainer::start(&[], 3600).await else {
        return;
    };
    let (estate, resources) = homelab(str::to_owned);
    let managers = managers_for(&fake, &estate, "key");
    fake.go_down().await;
    let plan = plan(&resources, &managers).await;
    let report = apply(&plan, &managers, false).await;
    let Outcome::Failed { error, .. } = outcome(&report, "portainer/server") else {
        panic!("{report:#?}");
    };
    assert!(error.contains("does not answer"), "{error}");
    for address in [
        "portainer/endpoint/1002",
        "stack/qdrant@1002",
        "stack/searxng@1002",
    ] {
        assert!(
            matches!(outcome(&report, address), Outcome::Skipped { .. }),
            "{address}: {report:#?}"
        );
    }
    fake.assert_requests_valid().await;
}

/// `docker inspect --format FORMAT NAME` on the engine, trimmed.
fn inspect(engine: &Dockerd, name: &str, format: &str) -> String {
    let output = engine.cli(&["inspect", "--format", format, name]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

#[tokio::test]
async fn the_server_and_agent_containers_run_on_docker_and_are_recreated_only_when_they_differ() {
    let Some(engine) = Dockerd::start("bootstrap") else {
        return;
    };
    let Some(fake) = FakePortainer::start(&[], 3600).await else {
        return;
    };
    // Stand-ins for the configured images (no registry here): busybox, sleeping.
    engine.import_busybox("portainer/portainer-ce:lts");
    engine.import_busybox("portainer/agent:lts");
    let (estate, resources) = homelab(str::to_owned);
    let managers = managers_with(&fake, &estate, "key", Some(&engine));

    let first = plan(&resources, &managers).await;
    let planned = changes(&first);
    assert_eq!(
        planned[..2],
        [
            ("portainer/docker/1001".to_owned(), Action::Create),
            ("portainer/docker/1002".to_owned(), Action::Create),
        ]
    );
    let report = apply(&first, &managers, false).await;
    assert!(report.succeeded(), "{report:#?}");
    assert_eq!(
        inspect(&engine, "portainer", "{{.State.Running}} {{.Config.Image}}"),
        "true portainer/portainer-ce:lts"
    );
    assert_eq!(
        inspect(&engine, "portainer_agent", "{{json .HostConfig.PortBindings}}"),
        r#"{"9001/tcp":[{"HostIp":"","HostPort":"9001"}]}"#
    );
    assert_eq!(
        inspect(&engine, "portainer", "{{.HostConfig.RestartPolicy.Name}}"),
        "always"
    );
    let started = inspect(&engine, "portainer_agent", "{{.Id}} {{.State.StartedAt}}");

    // Second run: nothing to do, and the containers are neither recreated nor restarted.
    let second = plan(&resources, &managers).await;
    assert_eq!(changes(&second), []);
    assert!(apply(&second, &managers, false).await.succeeded());
    assert_eq!(
        inspect(&engine, "portainer_agent", "{{.Id}} {{.State.StartedAt}}"),
        started
    );

    // Stopped by hand: started again, the same container.
    assert!(
        engine
            .cli(&["stop", "--time", "0", "portainer_agent"])
            .status
            .success()
    );
    let stopped = plan(&resources, &managers).await;
    assert_eq!(
        changes(&stopped),
        [("portainer/docker/1002".to_owned(), Action::Update)]
    );
    assert!(apply(&stopped, &managers, false).await.succeeded());
    let id = |engine: &Dockerd| inspect(engine, "portainer_agent", "{{.Id}}");
    assert_eq!(id(&engine), started.split(' ').next().unwrap());
    assert_eq!(inspect(&engine, "portainer_agent", "{{.State.Running}}"), "true");

    // Another agent port: the agent is recreated on it, and its environment follows.
    let (moved, moved_resources) =
        homelab(|text| text.replace("\"portainer_agent_port\": 9001", "\"portainer_agent_port\": 9101"));
    let managers = managers_with(&fake, &moved, "key", Some(&engine));
    let port = plan(&moved_resources, &managers).await;
    assert_eq!(
        changes(&port),
        [
            ("portainer/docker/1002".to_owned(), Action::Update),
            ("portainer/endpoint/1002".to_owned(), Action::Update),
        ]
    );
    assert!(apply(&port, &managers, false).await.succeeded());
    assert_ne!(id(&engine), started.split(' ').next().unwrap());
    assert!(inspect(&engine, "portainer_agent", "{{json .HostConfig.PortBindings}}").contains("9101"));

    // A container of the server's name that Phoenix did not run is someone else's: replaced only when allowed.
    assert!(engine.cli(&["rm", "--force", "portainer"]).status.success());
    let foreign = engine.cli(&["run", "--detach", "--name", "portainer", "portainer/agent:lts"]);
    assert!(foreign.status.success());
    let replace = plan(&moved_resources, &managers).await;
    assert_eq!(
        replace
            .destructive()
            .map(|entry| entry.address.to_string())
            .collect::<Vec<_>>(),
        ["portainer/docker/1001"]
    );
    let (_stop, signal) = phoenix_core::StopHandle::new();
    let refused = phoenix_core::execute(&replace, &managers, &ExecuteOptions::default(), signal, None).await;
    assert!(
        refused.is_err(),
        "replacing a foreign container needs --allow-destroy"
    );
    assert!(apply(&replace, &managers, true).await.succeeded());
    assert_eq!(
        inspect(&engine, "portainer", "{{.Config.Image}}"),
        "portainer/portainer-ce:lts"
    );
    assert_eq!(changes(&plan(&moved_resources, &managers).await), []);
}

#[tokio::test]
async fn the_server_vm_s_stacks_are_deployed_with_compose_directly() {
    let Some(engine) = Dockerd::start("compose") else {
        return;
    };
    let Some(fake) = FakePortainer::start(&[], 3600).await else {
        return;
    };
    engine.import_busybox("searxng/searxng:latest");
    engine.import_busybox("portainer/agent:lts");
    // The primary VM runs searxng itself (so the server is its stack, not a container of Phoenix's), on a
    // port nothing else here listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port")
        .port();
    let edit = move |secret_env: &'static str| {
        move |text: &str| {
            text.replace(
                r#""portainer_role": "primary","#,
                r#""portainer_role": "primary", "docker_stacks": ["searxng"],"#,
            )
            .replace(
                r#"{ "name": "API_PORT", "value": "8080" }"#,
                &format!(r#"{{ "name": "API_PORT", "value": "{port}" }}"#),
            )
            .replace(
                r#"{ "env": "SEARXNG_SECRET" }"#,
                &format!(r#"{{ "env": "{secret_env}" }}"#),
            )
        }
    };
    let (estate, resources) = homelab(edit("SEARXNG_SECRET"));
    let managers = managers_with(&fake, &estate, "key", Some(&engine));
    let server = resources
        .iter()
        .find(|resource| resource.address.to_string() == "portainer/server")
        .expect("declared");
    assert!(
        server.depends_on.contains(&"stack/searxng@1001".parse().unwrap()),
        "the server comes after the stacks of its VM: {:?}",
        server.depends_on
    );
    assert!(
        !resources
            .iter()
            .any(|resource| resource.address.to_string() == "portainer/docker/1001"),
        "no server container of Phoenix's when the VM runs stacks"
    );

    let first = plan(&resources, &managers).await;
    assert!(
        changes(&first).contains(&("stack/searxng@1001".to_owned(), Action::Create)),
        "{:?}",
        changes(&first)
    );
    let json = serde_json::to_string(&plan_document(&first)).expect("serialises");
    assert!(!json.contains("searx-secret-value"), "{json}");
    let report = apply(&first, &managers, false).await;
    assert!(report.succeeded(), "{report:#?}");
    let filter = "label=com.docker.compose.project=searxng";
    let listed = |engine: &Dockerd| {
        let output = engine.cli(&[
            "ps",
            "--filter",
            filter,
            "--format",
            "{{.ID}} {{.State}} {{.Ports}}",
        ]);
        String::from_utf8_lossy(&output.stdout).trim().to_owned()
    };
    let running = listed(&engine);
    assert!(
        running.contains(" running ") && running.contains(&format!("{port}->8080")),
        "{running}"
    );
    let secret = engine.cli(&[
        "inspect",
        "--format",
        "{{json .Config.Env}}",
        running.split(' ').next().unwrap(),
    ]);
    assert!(String::from_utf8_lossy(&secret.stdout).contains("SEARXNG_SECRET=searx-secret-value"));

    // Second run: nothing to do, the container untouched.
    let second = plan(&resources, &managers).await;
    assert_eq!(changes(&second), []);
    assert!(apply(&second, &managers, false).await.succeeded());
    assert_eq!(listed(&engine), running);

    // Stopped by hand: brought back by the next run.
    let id = running.split(' ').next().unwrap().to_owned();
    assert!(engine.cli(&["stop", "--time", "0", &id]).status.success());
    let stopped = plan(&resources, &managers).await;
    assert_eq!(
        changes(&stopped),
        [("stack/searxng@1001".to_owned(), Action::Update)]
    );
    assert!(apply(&stopped, &managers, false).await.succeeded());
    assert!(listed(&engine).contains(" running "), "{}", listed(&engine));

    // Another secret: redeployed with it, and the plan does not show it.
    let (estate, resources) = homelab(edit("QDRANT_API_KEY"));
    let managers = managers_with(&fake, &estate, "the-new-secret", Some(&engine));
    let changed = plan(&resources, &managers).await;
    assert!(changes(&changed).contains(&("stack/searxng@1001".to_owned(), Action::Update)));
    let json = serde_json::to_string(&plan_document(&changed)).expect("serialises");
    assert!(!json.contains("the-new-secret"), "{json}");
    assert!(apply(&changed, &managers, false).await.succeeded());
    let now = listed(&engine);
    let env = engine.cli(&[
        "inspect",
        "--format",
        "{{json .Config.Env}}",
        now.split(' ').next().unwrap(),
    ]);
    assert!(String::from_utf8_lossy(&env.stdout).contains("SEARXNG_SECRET=the-new-secret"));
    assert!(
        !changes(&plan(&resources, &managers).await)
            .contains(&("stack/searxng@1001".to_owned(), Action::Update))
    );
}

/// A copy of the homelab under `target/tmp/<name>` with a stack `shop` whose service builds from a
/// Dockerfile and gets a file, deployed on both VMs (the server's, with Compose directly, and the agent's,
/// through Portainer); `page` is what its build context serves.
fn shop_homelab(name: &str, page: &str) -> (std::path::PathBuf, phoenix_core::Estate, Vec<Resource>) {
    let dir = workspace().join("target/tmp").join(name);
    let _ = std::fs::remove_dir_all(&dir);
    phoenix_testing::copy_dir(&workspace().join("examples/homelab"), &dir);
    let shop = dir.join("stacks/shop");
    std::fs::create_dir_all(shop.join("web")).unwrap();
    std::fs::write(
        shop.join("docker-compose.yml"),
        "services:\n  web:\n    build:\n      context: web\n      network: none\n    restart: unless-stopped\n",
    )
    .unwrap();
    std::fs::write(
        shop.join("web/Dockerfile"),
        "FROM phoenix/busybox:test\nCOPY index.html /www/index.html\nRUN test -s /www/index.html\n",
    )
    .unwrap();
    std::fs::write(shop.join("web/index.html"), page).unwrap();
    std::fs::write(shop.join("shop.env"), "GREETING=hello\n").unwrap();
    let edit = |text: &str| {
        text.replace(
            r#""portainer_role": "primary","#,
            r#""portainer_role": "primary", "docker_stacks": ["shop"],"#,
        )
        .replace(
            r#""docker_stacks": ["qdrant", "searxng"],"#,
            r#""docker_stacks": ["qdrant", "searxng", "shop"],"#,
        )
        .replace(
            r#""docker_stacks": {"#,
            r#""docker_stacks": {
    "shop": {
      "compose_file_path": "stacks/shop/docker-compose.yml",
      "environments": {
        "production": {
          "files": [{ "source": "stacks/shop/shop.env", "destination_in_container": "/etc/shop.env" }]
        }
      }
    },"#,
        )
    };
    for file in ["phoenix_vm_configs.json", "phoenix_stacks_config.json"] {
        let path = dir.join(file);
        let text = std::fs::read_to_string(&path).unwrap();
        std::fs::write(&path, edit(&text)).unwrap();
    }
    let estate = fixture::estate(fixture::sources(&dir), &CheckOptions::default());
    let resources = phoenix_core::resources(&estate)
        .into_iter()
        .filter(|resource| resource.kind() == ResourceKind::Stack)
        .collect();
    (dir, estate, resources)
}

#[tokio::test]
async fn built_images_and_files_reach_the_vm_and_change_only_with_their_content() {
    let Some(engine) = Dockerd::start("assets") else {
        return;
    };
    let Some(fake) = FakePortainer::start(&[], 3600).await else {
        return;
    };
    for image in [
        "phoenix/busybox:test",
        "qdrant/qdrant:latest",
        "searxng/searxng:latest",
        "portainer/agent:lts",
    ] {
        engine.import_busybox(image);
    }
    let files_root = workspace().join("target/tmp/assets-files");
    let _ = std::fs::remove_dir_all(&files_root);
    let files_root = files_root.display().to_string();
    let managers_of = |dir: &std::path::Path, estate: &phoenix_core::Estate| {
        let settings = settings(&fake);
        let guests: BTreeMap<u32, LocalDocker> = [1001, 1002].map(|vmid| (vmid, engine.guest(vmid))).into();
        let manager = PortainerManager::new(
            Portainer::new(&settings).expect("a client"),
            estate,
            dir,
            Box::new(|name| (name == "QDRANT_API_KEY" || name == "SEARXNG_SECRET").then(|| "k".to_owned())),
        )
        .with_ready_timeout(Duration::from_secs(3))
        .with_files_root(&files_root)
        .with_docker(Arc::new(move |vmid, _node| {
            Arc::new(guests.get(&vmid).expect("a VM of the homelab").clone())
        }));
        let mut managers = Managers::default();
        managers.register(Arc::new(manager));
        managers
    };
    let (dir, estate, resources) = shop_homelab("assets-config", "<h1>one</h1>");
    let managers = managers_of(&dir, &estate);

    let first = plan(&resources, &managers).await;
    for stack in ["stack/shop@1001", "stack/shop@1002"] {
        assert!(
            changes(&first).contains(&(stack.to_owned(), Action::Create)),
            "{:?}",
            changes(&first)
        );
    }
    let report = apply(&first, &managers, false).await;
    assert!(report.succeeded(), "{report:#?}");

    // The image was built from the context, labelled, and runs on the server's VM with the file mounted.
    let images = engine.cli(&[
        "image",
        "ls",
        "--filter",
        "label=phoenix.build=shop/web",
        "--format",
        "{{.Repository}}:{{.Tag}}",
    ]);
    let tag = String::from_utf8_lossy(&images.stdout).trim().to_owned();
    assert!(tag.starts_with("phoenix/shop-web:"), "{tag:?}");
    let container = engine.cli(&[
        "ps",
        "--filter",
        "label=com.docker.compose.project=shop",
        "--format",
        "{{.ID}}",
    ]);
    let id = String::from_utf8_lossy(&container.stdout).trim().to_owned();
    assert!(!id.is_empty(), "the stack runs on VM 1001");
    let read = |path: &str| {
        let output = engine.cli(&["exec", &id, "/bin/busybox", "cat", path]);
        String::from_utf8_lossy(&output.stdout).into_owned()
    };
    assert_eq!(read("/www/index.html"), "<h1>one</h1>");
    assert_eq!(read("/etc/shop.env"), "GREETING=hello\n");
    // Through Portainer, the agent's copy names the same image and mounts the same file.
    let state = fake.state().await;
    let content = stack(&state, "shop")["content"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(content.contains(&tag), "{content}");
    assert!(content.contains(":/etc/shop.env:ro"), "{content}");
    assert!(!content.contains("build"), "{content}");

    // Second run: nothing to do, nothing rebuilt.
    assert_eq!(changes(&plan(&resources, &managers).await), []);

    // The file deleted on the VM by hand: put back, without deploying the stack again.
    let placed: Vec<std::path::PathBuf> = walk_files(std::path::Path::new(&files_root));
    assert_eq!(placed.len(), 1, "{placed:?}");
    std::fs::remove_file(&placed[0]).unwrap();
    let writes_before = fake.writes().await.len();
    let repaired = plan(&resources, &managers).await;
    let fields: Vec<String> = repaired
        .entries()
        .iter()
        .flat_map(|entry| &entry.changes)
        .flat_map(|change| {
            change
                .fields
                .iter()
                .map(|field| format!("{} {}", change.address, field.field))
        })
        .collect();
    assert_eq!(fields, ["stack/shop@1001 files", "stack/shop@1002 files"]);
    assert!(apply(&repaired, &managers, false).await.succeeded());
    assert_eq!(std::fs::read_to_string(&placed[0]).unwrap(), "GREETING=hello\n");
    assert_eq!(
        fake.writes().await.len(),
        writes_before,
        "Portainer was not asked again"
    );
    assert_eq!(changes(&plan(&resources, &managers).await), []);

    // A changed page: a new image, deployed on both VMs; the old one removed.
    let (dir, estate, resources) = shop_homelab("assets-config", "<h1>two</h1>");
    let managers = managers_of(&dir, &estate);
    let changed = plan(&resources, &managers).await;
    assert_eq!(
        changes(&changed),
        [
            ("stack/shop@1001".to_owned(), Action::Update),
            ("stack/shop@1002".to_owned(), Action::Update),
        ]
    );
    assert!(apply(&changed, &managers, false).await.succeeded());
    let images = engine.cli(&[
        "image",
        "ls",
        "--filter",
        "label=phoenix.build=shop/web",
        "--format",
        "{{.Repository}}:{{.Tag}}",
    ]);
    let now = String::from_utf8_lossy(&images.stdout).trim().to_owned();
    assert!(
        now.starts_with("phoenix/shop-web:") && now != tag,
        "{now:?} after {tag:?}"
    );
    let container = engine.cli(&[
        "ps",
        "--filter",
        "label=com.docker.compose.project=shop",
        "--format",
        "{{.ID}}",
    ]);
    let id = String::from_utf8_lossy(&container.stdout).trim().to_owned();
    let output = engine.cli(&["exec", &id, "/bin/busybox", "cat", "/www/index.html"]);
    assert_eq!(String::from_utf8_lossy(&output.stdout), "<h1>two</h1>");
    assert_eq!(changes(&plan(&resources, &managers).await), []);
    fake.assert_requests_valid().await;
}

fn walk_files(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            found.extend(walk_files(&path));
        } else {
            found.push(path);
        }
    }
    found
}

/// A Git repository under `target/tmp/<name>` whose `deploy/compose.yml` is `main` on branch `main` and
/// `v2` on branch `v2`.
fn repository(name: &str) -> String {
    let dir = workspace().join("target/tmp").join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("deploy")).unwrap();
    let git = |args: &[&str]| {
        let output = std::process::Command::new("git")
            .args([
                "-c",
                "user.name=Phoenix",
                "-c",
                "user.email=phoenix@example.org",
                "-C",
            ])
            .arg(&dir)
            .args(args)
            .output()
            .expect("git runs");
        assert!(
            output.status.success(),
            "git {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    };
    git(&["init", "--quiet", "--initial-branch", "main"]);
    for branch in ["main", "v2"] {
        if branch == "v2" {
            git(&["checkout", "--quiet", "-b", "v2"]);
        }
        std::fs::write(
            dir.join("deploy/compose.yml"),
            format!("services:\n  monitor:\n    image: monitor:{branch}\n"),
        )
        .unwrap();
        git(&["add", "."]);
        git(&["commit", "--quiet", "-m", branch]);
    }
    dir.display().to_string()
}

#[tokio::test]
async fn a_stack_from_git_is_deployed_from_its_repository_and_follows_its_reference() {
    let Some(fake) = FakePortainer::start(&[], 3600).await else {
        return;
    };
    let url = repository("git-monitor");
    let with_git = |reference: &'static str| {
        let url = url.clone();
        move |text: &str| {
            text.replace(
                r#""docker_stacks": ["qdrant", "searxng"],"#,
                r#""docker_stacks": ["qdrant", "searxng", "monitor"],"#,
            )
            .replace(
                r#""docker_stacks": {"#,
                &format!(
                    r#""docker_stacks": {{
    "monitor": {{
      "git": {{ "repository_url": "{url}", "reference": "{reference}", "compose_file": "deploy/compose.yml" }},
      "environments": {{ "production": {{ "variables": [{{ "name": "LEVEL", "value": "info" }}] }} }}
    }},"#
                ),
            )
        }
    };
    let (estate, resources) = homelab(with_git("refs/heads/main"));
    let managers = managers_for(&fake, &estate, "key");
    let first = plan(&resources, &managers).await;
    assert!(changes(&first).contains(&("stack/monitor@1002".to_owned(), Action::Create)));
    let report = apply(&first, &managers, false).await;
    assert!(report.succeeded(), "{report:#?}");
    let state = fake.state().await;
    let monitor = stack(&state, "monitor");
    assert_eq!(monitor["GitConfig"]["ConfigFilePath"], "deploy/compose.yml");
    assert!(
        monitor["content"].as_str().unwrap().contains("monitor:main"),
        "{monitor}"
    );
    assert!(
        fake.writes()
            .await
            .contains(&"POST /api/stacks/create/standalone/repository".to_owned()),
        "{:?}",
        fake.writes().await
    );

    // Second run: nothing; Phoenix does not read a Git stack's file.
    let before = fake.requests().await.len();
    assert_eq!(changes(&plan(&resources, &managers).await), []);
    let id = monitor["Id"].as_u64().unwrap();
    let reads_file = fake.requests().await[before..]
        .iter()
        .any(|request| request["path"] == format!("/api/stacks/{id}/file"));
    assert!(!reads_file);

    // Another branch: the same stack pointed at it and redeployed from it.
    let (estate, resources) = homelab(with_git("refs/heads/v2"));
    let managers = managers_for(&fake, &estate, "key");
    let moved = plan(&resources, &managers).await;
    assert_eq!(
        changes(&moved),
        [("stack/monitor@1002".to_owned(), Action::Update)]
    );
    let writes = fake.writes().await.len();
    assert!(apply(&moved, &managers, false).await.succeeded());
    assert_eq!(
        fake.writes().await[writes..],
        [
            format!("POST /api/stacks/{id}/git"),
            format!("PUT /api/stacks/{id}/git/redeploy"),
        ]
    );
    let state = fake.state().await;
    assert!(
        stack(&state, "monitor")["content"]
            .as_str()
            .unwrap()
            .contains("monitor:v2")
    );
    assert_eq!(changes(&plan(&resources, &managers).await), []);

    // A reference the repository does not have: Portainer's refusal is the failure.
    let (estate, resources) = homelab(with_git("refs/heads/nope"));
    let managers = managers_for(&fake, &estate, "key");
    let report = apply(&plan(&resources, &managers).await, &managers, false).await;
    assert!(!report.succeeded());
    let text = format!("{report:?}");
    assert!(text.contains("refs/heads/nope"), "{text}");
    fake.assert_requests_valid().await;
}

#[tokio::test]
async fn a_vm_runs_a_stack_with_the_environment_it_names() {
    let Some(fake) = FakePortainer::start(&[], 3600).await else {
        return;
    };
    // searxng gains a `staging` environment with its own port; VM 1002 runs it with that one.
    let staging = |vm_side: &'static str| {
        move |text: &str| {
            text.replace(
                r#""searxng": {
      "description": "SearXNG metasearch engine, used as a web-search tool by the local LLM.",
      "compose_file_path": "stacks/searxng/docker-compose.yml",
      "environments": {"#,
                r#""searxng": {
      "description": "SearXNG metasearch engine, used as a web-search tool by the local LLM.",
      "compose_file_path": "stacks/searxng/docker-compose.yml",
      "environments": {
        "staging": {
          "variables": [
            { "name": "SEARXNG_SECRET", "value": { "env": "SEARXNG_SECRET" } },
            { "name": "SEARXNG_BASE_URL", "value": "https://search-staging.lab.example.org/" },
            { "name": "API_PORT", "value": "8090" }
          ]
        },"#,
            )
            .replace(r#""docker_stacks": ["qdrant", "searxng"],"#, vm_side)
        }
    };
    let (estate, resources) = homelab(staging(
        r#""docker_stacks": ["qdrant", { "name": "searxng", "environment": "staging" }],"#,
    ));
    let managers = managers_for(&fake, &estate, "key");
    let report = apply(&plan(&resources, &managers).await, &managers, false).await;
    assert!(report.succeeded(), "{report:#?}");
    let state = fake.state().await;
    let env = &stack(&state, "searxng")["Env"];
    let value = |name: &str| {
        env.as_array()
            .and_then(|pairs| pairs.iter().find(|pair| pair["name"] == name))
            .map(|pair| pair["value"].clone())
    };
    assert_eq!(value("API_PORT"), Some(Value::from("8090")), "{env}");
    assert_eq!(changes(&plan(&resources, &managers).await), []);

    // Back to production: that stack alone is redeployed, with production's variables.
    let (estate, resources) = homelab(staging(r#""docker_stacks": ["qdrant", "searxng"],"#));
    let managers = managers_for(&fake, &estate, "key");
    let back = plan(&resources, &managers).await;
    assert_eq!(
        changes(&back),
        [("stack/searxng@1002".to_owned(), Action::Update)]
    );
    assert!(apply(&back, &managers, false).await.succeeded());
    let state = fake.state().await;
    let port = stack(&state, "searxng")["Env"]
        .as_array()
        .and_then(|pairs| pairs.iter().find(|pair| pair["name"] == "API_PORT"))
        .map(|pair| pair["value"].clone());
    assert_eq!(port, Some(Value::from("8080")));
    fake.assert_requests_valid().await;
}
