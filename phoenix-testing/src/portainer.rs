//! A fake Portainer for the Portainer manager's tests: a stateful fake of the endpoints Phoenix uses
//! (`portainer/fake_portainer.py`), with Prism in front validating every request against Portainer's own
//! OpenAPI description (`../shared/reference/portainer/openapi-ee-2.44.0.yaml`).
//!
//! One fake process (and one Prism) serves every test of a test binary; each [`FakePortainer`] is a fresh
//! Portainer of its own. Prism is `$PHOENIX_PRISM`, else `target/prism/node_modules/.bin/prism` (what
//! `.ci/run` installs with `npm install @stoplight/prism-cli@5`).

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, OnceLock};

use serde_json::{Value, json};

use crate::{reference_dir, unavailable, workspace};

/// The one violation Phoenix's requests may draw, with why: the spec is Portainer EE's, whose
/// `POST /auth` payload requires an `apiKey` that Portainer CE's has not (its handler reads `username` and
/// `password` only). Every other violation of a request is a Phoenix bug.
pub const ALLOWED_VIOLATIONS: &[(&str, &str, &str)] = &[(
    "POST",
    "/api/auth",
    "Request body must have required property 'apiKey'",
)];

struct Server {
    control: u16,
    _child: Mutex<Child>,
}

fn prism() -> Option<PathBuf> {
    let path = std::env::var_os("PHOENIX_PRISM")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace().join("target/prism/node_modules/.bin/prism"));
    if path.is_file() {
        return Some(path);
    }
    unavailable(&format!(
        "no Prism at {} (cd target/prism && npm install @stoplight/prism-cli@5, or set PHOENIX_PRISM)",
        path.display()
    ));
    None
}

/// Portainer's description with `/api` in front of every path (the spec's server URL is `/api`, which
/// Prism's proxy does not apply), as JSON, written once under `target/`.
fn spec() -> Option<PathBuf> {
    let reference = reference_dir()?;
    let source = reference
        .parent()?
        .parent()?
        .join("portainer/openapi-ee-2.44.0.yaml");
    let target = workspace().join("target/tmp/portainer-openapi-api.json");
    if target.is_file() {
        return Some(target);
    }
    let text = std::fs::read_to_string(&source)
        .unwrap_or_else(|error| panic!("reading {}: {error}", source.display()));
    let mut document: Value = serde_saphyr::from_str(&text).expect("Portainer's description is YAML");
    let paths = document["paths"].as_object().expect("paths").clone();
    document["paths"] = Value::Object(
        paths
            .into_iter()
            .map(|(path, item)| (format!("/api{path}"), item))
            .collect(),
    );
    document["servers"] = json!([{ "url": "/" }]);
    std::fs::create_dir_all(target.parent().expect("a directory")).expect("creates target/tmp");
    let partial = target.with_extension(format!("{}.partial", std::process::id()));
    std::fs::write(&partial, serde_json::to_vec(&document).expect("JSON")).expect("writes");
    std::fs::rename(&partial, &target).expect("renames");
    Some(target)
}

fn server() -> Option<&'static Server> {
    static SERVER: OnceLock<Option<Server>> = OnceLock::new();
    SERVER
        .get_or_init(|| {
            let prism = prism()?;
            let spec = spec()?;
            let script = workspace().join("phoenix-testing/portainer/fake_portainer.py");
            let log = workspace().join(format!("target/tmp/prism-{}.log", std::process::id()));
            let mut child = Command::new("python3")
                .arg(script)
                .arg(prism)
                .arg(spec)
                .env("FAKE_PORTAINER_PRISM_LOG", &log)
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .spawn()
                .expect("starts the fake Portainer");
            let mut line = String::new();
            BufReader::new(child.stdout.take().expect("piped"))
                .read_line(&mut line)
                .expect("reads");
            let ready: Value = serde_json::from_str(&line)
                .unwrap_or_else(|error| panic!("the fake Portainer said {line:?}: {error}"));
            let control = ready["control"].as_u64().unwrap_or_else(|| {
                panic!(
                    "the fake Portainer did not start: {ready}; Prism's log is {}",
                    log.display()
                )
            });
            Some(Server {
                control: u16::try_from(control).expect("a port"),
                _child: Mutex::new(child),
            })
        })
        .as_ref()
}

/// One fresh Portainer: no administrator, no environment, no stack.
pub struct FakePortainer {
    control: String,
    tenant: u64,
    url: String,
    http: reqwest::Client,
}

impl FakePortainer {
    /// A new Portainer that accepts these API keys, and issues JWTs valid for `jwt_ttl` seconds; `None`
    /// after [`unavailable`] without Prism or the reference description.
    pub async fn start(api_keys: &[&str], jwt_ttl: u64) -> Option<FakePortainer> {
        crate::install_crypto_provider();
        let server = server()?;
        let control = format!("http://127.0.0.1:{}", server.control);
        let http = reqwest::Client::new();
        let tenant: Value = http
            .post(format!("{control}/tenant"))
            .json(&json!({ "api_keys": api_keys, "jwt_ttl": jwt_ttl }))
            .send()
            .await
            .expect("the control port answers")
            .json()
            .await
            .expect("JSON");
        Some(FakePortainer {
            url: format!("http://127.0.0.1:{}", tenant["front"]),
            tenant: tenant["id"].as_u64().expect("an id"),
            control,
            http,
        })
    }

    /// Where Phoenix reaches it (through Prism).
    pub fn url(&self) -> &str {
        &self.url
    }

    async fn get(&self, what: &str) -> Value {
        self.http
            .get(format!("{}/tenant/{}/{what}", self.control, self.tenant))
            .send()
            .await
            .expect("the control port answers")
            .json()
            .await
            .expect("JSON")
    }

    async fn post(&self, what: &str, body: String) {
        let response = self
            .http
            .post(format!("{}/tenant/{}/{what}", self.control, self.tenant))
            .body(body)
            .send()
            .await
            .expect("the control port answers");
        assert!(response.status().is_success(), "{what}: {}", response.status());
    }

    /// Every request it received: `method`, `path`, `query`, `body` (JSON, or the fields of a form),
    /// `status`, and Prism's `violations` of the request.
    pub async fn requests(&self) -> Vec<Value> {
        self.get("requests").await.as_array().cloned().unwrap_or_default()
    }

    /// The requests that change something (not `GET`), as `METHOD path`.
    pub async fn writes(&self) -> Vec<String> {
        self.requests()
            .await
            .iter()
            .filter(|request| request["method"] != "GET")
            .map(|request| {
                format!(
                    "{} {}",
                    request["method"].as_str().unwrap_or(""),
                    request["path"].as_str().unwrap_or("")
                )
            })
            .collect()
    }

    /// Its environments and stacks (each with its compose file as `content`).
    pub async fn state(&self) -> Value {
        self.get("state").await
    }

    /// Replaces a stack's compose file, as an edit in Portainer's UI does.
    pub async fn edit_stack_file(&self, id: u64, content: &str) {
        self.post(&format!("stack/{id}/file"), content.to_owned()).await;
    }

    /// From now on it answers every request with 503.
    pub async fn go_down(&self) {
        self.post("down", String::new()).await;
    }

    /// Fails the test when Prism found a request that breaks Portainer's description, but for
    /// [`ALLOWED_VIOLATIONS`].
    pub async fn assert_requests_valid(&self) {
        let mut broken = Vec::new();
        for request in self.requests().await {
            let method = request["method"].as_str().unwrap_or_default();
            let path = request["path"].as_str().unwrap_or_default();
            for violation in request["violations"].as_array().into_iter().flatten() {
                let message = violation["message"].as_str().unwrap_or_default();
                let allowed = ALLOWED_VIOLATIONS
                    .iter()
                    .any(|(m, p, text)| *m == method && *p == path && *text == message);
                if !allowed {
                    broken.push(format!("{method} {path}: {message}"));
                }
            }
            assert!(
                request.get("violations").is_some(),
                "{method} {path} never came back through Prism: {request}"
            );
        }
        assert!(
            broken.is_empty(),
            "Prism rejects requests Phoenix sent:\n{}",
            broken.join("\n")
        );
    }
}
