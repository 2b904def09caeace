//! `sync/gateway` for real: a Debian test node with Debian's nginx plays the gateway container. The
//! homelab's site is rendered, written, checked by that nginx's `nginx -t`, loaded, and proxies a request
//! by its Host header to a real backend; a second run writes nothing; a site edited by hand is put back; a
//! site nginx refuses never goes live. The reference's own template renders into a site `nginx -t` takes.
//!
//! Needs root, LXC and the test node's packages (`.ci/run` installs them); without them the test is
//! skipped with a message, except under `CI=true`, where it fails.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use phoenix_core::{
    Action, CheckOptions, ExecuteOptions, Managers, Outcome, PlanOptions, Resource, SourceFile,
};
use phoenix_edge::EdgeManager;
use phoenix_pve::guest::GuestExec;
use phoenix_pve::guest::OnHost;
use phoenix_testing::node::TestNode;
use phoenix_testing::{actions, fixture, outcome, reference_dir, workspace};

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port")
        .port()
}

/// A backend on loopback that answers every request with the Host header it got.
fn backend() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("binds");
    let port = listener.local_addr().expect("an address").port();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut buffer = [0u8; 4096];
            let read = stream.read(&mut buffer).unwrap_or(0);
            let request = String::from_utf8_lossy(&buffer[..read]).to_string();
            let host = request
                .lines()
                .find_map(|line| {
                    line.strip_prefix("Host: ")
                        .or_else(|| line.strip_prefix("host: "))
                })
                .unwrap_or("?")
                .trim()
                .to_owned();
            let body = format!("backend saw host {host}\n");
            let _ = write!(
                stream,
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    port
}

/// A copy of the homelab under `target/tmp/<name>`, its gateway on `http`/`https` with a route of
/// `app.lab.example.org` to `upstream`, and the template edited by `template`.
fn homelab(name: &str, http: u16, https: u16, upstream: &str, template: impl Fn(&str) -> String) -> PathBuf {
    let dir = workspace().join("target/tmp").join(name);
    let _ = std::fs::remove_dir_all(&dir);
    phoenix_testing::copy_dir(&workspace().join("examples/homelab"), &dir);
    let path = dir.join("phoenix_hypervisor_config.json");
    let text = std::fs::read_to_string(&path).unwrap();
    let text = text.replace(
        r#""routes": [{ "host": "ca.lab.example.org", "guest": 103, "port": 9000, "scheme": "https" }]"#,
        &format!(
            r#""routes": [{{ "host": "app.lab.example.org", "upstream": "{upstream}" }}], "http_port": {http}, "https_port": {https}"#
        ),
    );
    std::fs::write(&path, text).unwrap();
    let template_path = dir.join("nginx/sites-available/gateway.template");
    let text = std::fs::read_to_string(&template_path).unwrap();
    std::fs::write(&template_path, template(&text)).unwrap();
    dir
}

fn estate_of(dir: &Path) -> phoenix_core::Estate {
    fixture::estate(fixture::sources(dir), &CheckOptions::default())
}

fn gateway_step(estate: &phoenix_core::Estate) -> Vec<Resource> {
    phoenix_core::resources(estate)
        .into_iter()
        .filter(|resource| resource.address.to_string() == "sync/gateway")
        .collect()
}

fn managers_of(estate: &phoenix_core::Estate, dir: &Path, node: &TestNode) -> Managers {
    let site = phoenix_edge::gateway::site(estate, dir).expect("a gateway is declared");
    let mut managers = Managers::default();
    managers.register(Arc::new(
        EdgeManager::new(node.channel()).with_gateway_in(site, Arc::new(node.guest())),
    ));
    managers
}

/// Writes `content` at `path` in the node.
async fn put(guest: &OnHost, path: &str, content: &[u8]) {
    let argv = [
        "/bin/sh",
        "-c",
        "mkdir -p \"$(dirname \"$1\")\" && cat > \"$1\"",
        "sh",
        path,
    ]
    .map(str::to_owned);
    let output = guest
        .exec(&argv, Some(content), &Default::default(), Duration::from_secs(30))
        .await
        .expect("runs");
    assert!(output.success(), "{output:?}");
}

/// A self-signed certificate and key for `name`, made by this machine's openssl.
fn certificate(name: &str) -> (Vec<u8>, Vec<u8>) {
    let dir = workspace().join("target/tmp/gateway-cert");
    std::fs::create_dir_all(&dir).unwrap();
    let status = std::process::Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj",
        ])
        .arg(format!("/CN={name}"))
        .arg("-keyout")
        .arg(dir.join("key.pem"))
        .arg("-out")
        .arg(dir.join("cert.pem"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .expect("openssl runs");
    assert!(status.success());
    (
        std::fs::read(dir.join("cert.pem")).unwrap(),
        std::fs::read(dir.join("key.pem")).unwrap(),
    )
}

/// `curl` through the gateway: HTTPS on `port` for `host`, resolved to loopback.
fn fetch(host: &str, port: u16, path: &str) -> String {
    let output = std::process::Command::new("curl")
        .args(["-sk", "--max-time", "10", "--resolve"])
        .arg(format!("{host}:{port}:127.0.0.1"))
        .arg(format!("https://{host}:{port}{path}"))
        .output()
        .expect("curl runs");
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[tokio::test]
async fn the_gateway_converges_in_a_real_nginx_and_a_refused_site_never_goes_live() {
    let Some(node) = TestNode::start() else { return };
    let guest = node.guest();
    // Debian's default site also claims `default_server` on port 80; a gateway container has it removed.
    assert!(
        node.exec(&["rm", "-f", "/etc/nginx/sites-enabled/default"])
            .success()
    );
    let (cert, key) = certificate("lab.example.org");
    put(&guest, "/etc/nginx/ssl/lab.example.org.crt", &cert).await;
    put(&guest, "/etc/nginx/ssl/lab.example.org.key", &key).await;

    // The reference's own template, rendered with the model, passes nginx -t where its files are.
    if let Some(reference) = reference_dir() {
        let sources: Vec<SourceFile> = fixture::sources(&reference)
            .into_iter()
            .map(|source| {
                let text = source.text().replacen(
                    "\"step_ca\": {",
                    "\"gateway\": { \"container\": 101, \"default_upstream\": \"https://traefik.internal.thinkheads.ai:8443\" },\n    \"step_ca\": {",
                    1,
                );
                SourceFile::new(source.kind(), source.path().to_owned(), text)
            })
            .collect();
        let estate = phoenix_core::validate(sources, &CheckOptions::default())
            .into_estate()
            .expect("the reference is valid");
        let site = phoenix_edge::gateway::site(&estate, &reference)
            .expect("declared")
            .expect("renders");
        for path in [
            "/etc/nginx/etc/step-ca/ssl/internal_traefik_proxy.crt",
            "/etc/step-ca/ssl/phoenix_ca.crt",
        ] {
            put(&guest, path, &cert).await;
        }
        put(
            &guest,
            "/etc/nginx/etc/step-ca/ssl/internal_traefik_proxy.key",
            &key,
        )
        .await;
        for (path, content) in &site {
            put(&guest, path, content.as_bytes()).await;
        }
        let test = node.exec(&["nginx", "-t"]);
        assert!(test.success(), "the reference's site: {}", test.stderr);
        for path in site.keys() {
            assert!(node.exec(&["rm", "-f", path]).success());
        }
    }

    let (http, https, upstream) = (free_port(), free_port(), backend());
    let upstream = format!("http://127.0.0.1:{upstream}");
    let dir = homelab("gateway-homelab", http, https, &upstream, str::to_owned);
    let estate = estate_of(&dir);
    let resources = gateway_step(&estate);
    let managers = managers_of(&estate, &dir, &node);

    // First run: the site and the ACME snippet written, checked, and nginx started with them.
    let first = phoenix_testing::plan(resources.clone(), &managers, &PlanOptions::default()).await;
    assert_eq!(actions(&first), [Action::Create]);
    let report = phoenix_testing::apply(&first, &managers, &ExecuteOptions::default()).await;
    assert!(
        matches!(outcome(&report, "sync/gateway"), Outcome::Changed { .. }),
        "{report:#?}"
    );
    let snippet = node.exec(&["cat", "/etc/nginx/snippets/acme_challenge.conf"]);
    assert!(snippet.stdout.contains("acme-challenge"), "{snippet:?}");
    let mut answer = String::new();
    for _ in 0..50 {
        answer = fetch("app.lab.example.org", https, "/hello");
        if !answer.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(answer, "backend saw host app.lab.example.org\n");

    // Second run: nothing to write.
    let second = phoenix_testing::plan(resources.clone(), &managers, &PlanOptions::default()).await;
    assert_eq!(actions(&second), []);

    // Edited by hand: found, and put back.
    assert!(
        node.exec(&["sh", "-c", "echo '# edited' >> /etc/nginx/sites-enabled/gateway"])
            .success()
    );
    let drift = phoenix_testing::plan(resources.clone(), &managers, &PlanOptions::default()).await;
    assert_eq!(actions(&drift), [Action::Update]);
    let report = phoenix_testing::apply(&drift, &managers, &ExecuteOptions::default()).await;
    assert!(
        matches!(outcome(&report, "sync/gateway"), Outcome::Changed { .. }),
        "{report:#?}"
    );
    let live = node.exec(&["cat", "/etc/nginx/sites-enabled/gateway"]).stdout;
    assert!(!live.contains("# edited"));

    // A site nginx refuses: the apply fails with nginx's own words and line, the live site stays.
    let broken = homelab("gateway-broken", http, https, &upstream, |text| {
        text.replace(
            "client_max_body_size 16M;",
            "client_max_body_size 16M;\n    no_such_directive on;",
        )
    });
    let estate = estate_of(&broken);
    let managers = managers_of(&estate, &broken, &node);
    let refused = phoenix_testing::plan(resources.clone(), &managers, &PlanOptions::default()).await;
    assert_eq!(actions(&refused), [Action::Update]);
    let report = phoenix_testing::apply(&refused, &managers, &ExecuteOptions::default()).await;
    let text = format!("{:?}", outcome(&report, "sync/gateway"));
    assert!(
        text.contains("unknown directive")
            && text.contains("no_such_directive")
            && text.contains("/etc/nginx/sites-enabled/gateway:"),
        "{text}"
    );
    assert_eq!(
        node.exec(&["cat", "/etc/nginx/sites-enabled/gateway"]).stdout,
        live
    );
    assert!(node.exec(&["nginx", "-t"]).success());
    assert_eq!(
        fetch("app.lab.example.org", https, "/again"),
        "backend saw host app.lab.example.org\n"
    );
}
