//! The Portainer API, the parts Phoenix uses: status, the first administrator, login, environments
//! (endpoints) and standalone Compose stacks.
//!
//! Wire facts (Portainer's OpenAPI description): paths under `/api`; JSON bodies, except creating an
//! environment, which is multipart form data; errors are `{"message", "details"}`; `X-API-Key: <token>` or
//! `Authorization: Bearer <jwt>` from `POST /api/auth`. A JWT that stops working (Portainer's expire after
//! eight hours) is renewed once, and the request sent again.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::sync::Mutex;

use phoenix_pve::SecretString;

use crate::settings::{PortainerAuth, PortainerSettings};

/// A failure talking to Portainer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, miette::Diagnostic)]
pub enum PortainerError {
    /// No answer at all: down, or not there yet.
    #[error("Portainer at {url} does not answer: {detail}")]
    #[diagnostic(
        code(phoenix::portainer::unreachable),
        help("check that the Portainer server runs on its VM and that its port is open to Phoenix")
    )]
    Unreachable {
        /// The base URL.
        url: String,
        /// Why.
        detail: String,
    },
    /// Portainer refused the credentials.
    #[error("Portainer refused Phoenix's credentials: {detail}")]
    #[diagnostic(
        code(phoenix::portainer::unauthorized),
        help(
            "check `portainer_api.admin_user` and `admin_password`, or the API key (PHOENIX_PORTAINER_API_KEY)"
        )
    )]
    Unauthorized {
        /// What Portainer said.
        detail: String,
    },
    /// Portainer answered a request with an error.
    #[error("Portainer answered {request} with {status}: {message}")]
    #[diagnostic(code(phoenix::portainer::refused))]
    Refused {
        /// `POST /api/endpoints`.
        request: String,
        /// The HTTP status.
        status: u16,
        /// Portainer's `message` (and `details`).
        message: String,
    },
    /// An answer Phoenix cannot read.
    #[error("Portainer's answer to {request} is not what Phoenix expects: {detail}")]
    #[diagnostic(code(phoenix::portainer::unexpected))]
    Unexpected {
        /// The request.
        request: String,
        /// Why.
        detail: String,
    },
}

impl PortainerError {
    /// Whether Portainer refused the request with this status.
    pub fn is_status(&self, wanted: u16) -> bool {
        matches!(self, PortainerError::Refused { status, .. } if *status == wanted)
    }
}

/// One environment (endpoint) as Portainer lists it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
pub struct Endpoint {
    /// Its identifier.
    #[serde(rename = "Id")]
    pub id: u64,
    /// Its name, unique in Portainer.
    #[serde(rename = "Name")]
    pub name: String,
    /// 1 local Docker, 2 agent, ...
    #[serde(rename = "Type")]
    pub kind: u32,
    /// `tcp://10.0.0.102:9001` for an agent.
    #[serde(rename = "URL", default)]
    pub url: String,
}

/// An environment variable of a stack, as Portainer keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
pub struct Pair {
    /// Name.
    pub name: String,
    /// Value.
    pub value: String,
}

/// One stack as Portainer lists it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
pub struct Stack {
    /// Its identifier.
    #[serde(rename = "Id")]
    pub id: u64,
    /// Its name.
    #[serde(rename = "Name")]
    pub name: String,
    /// The environment it runs in.
    #[serde(rename = "EndpointId")]
    pub endpoint_id: u64,
    /// Its variables.
    #[serde(rename = "Env", default, deserialize_with = "null_is_empty")]
    pub env: Vec<Pair>,
    /// Where its compose file comes from, for a stack deployed from a Git repository.
    #[serde(rename = "GitConfig", default)]
    pub git: Option<StackGitConfig>,
}

/// The Git settings of a stack, as Portainer reports them.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
pub struct StackGitConfig {
    /// The repository.
    #[serde(rename = "URL", default)]
    pub url: String,
    /// The branch or tag.
    #[serde(rename = "ReferenceName", default)]
    pub reference: String,
    /// The compose file's path in the repository.
    #[serde(rename = "ConfigFilePath", default)]
    pub compose_file: String,
    /// The commit deployed.
    #[serde(rename = "ConfigHash", default)]
    pub commit: String,
}

/// A Git repository to deploy a stack from.
#[derive(Debug, Clone)]
pub struct GitSource {
    /// The repository.
    pub url: String,
    /// The branch or tag, as a Git reference.
    pub reference: String,
    /// The compose file's path in it.
    pub compose_file: String,
    /// User and password (or token) for a private repository.
    pub credentials: Option<(String, SecretString)>,
}

impl GitSource {
    /// The authentication fields of a payload.
    fn authentication(&self) -> serde_json::Map<String, Value> {
        let mut fields = serde_json::Map::new();
        fields.insert(
            "RepositoryAuthentication".to_owned(),
            json!(self.credentials.is_some()),
        );
        if let Some((user, password)) = &self.credentials {
            fields.insert("RepositoryUsername".to_owned(), json!(user));
            fields.insert("RepositoryPassword".to_owned(), json!(password.expose()));
        }
        fields
    }
}

fn null_is_empty<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Vec<Pair>, D::Error> {
    Ok(Option::<Vec<Pair>>::deserialize(deserializer)?.unwrap_or_default())
}

/// What a request carries.
enum Body<'a> {
    None,
    Json(Value),
    /// Multipart form fields (built again for a retry: a form is consumed when sent).
    Form(&'a [(&'a str, String)]),
}

/// A client of one Portainer.
pub struct Portainer {
    http: reqwest::Client,
    url: String,
    auth: PortainerAuth,
    admin: Option<(String, SecretString)>,
    jwt: Mutex<Option<SecretString>>,
}

impl Portainer {
    /// A client for these settings; nothing is sent yet.
    pub fn new(settings: &PortainerSettings) -> Result<Portainer, PortainerError> {
        let unreachable = |detail: String| PortainerError::Unreachable {
            url: settings.url.clone(),
            detail,
        };
        let mut builder = reqwest::Client::builder()
            .timeout(settings.request_timeout)
            .connect_timeout(Duration::from_secs(15));
        if settings.url.starts_with("https://") {
            phoenix_pve::install_crypto_provider();
            let tls = phoenix_pve::tls_client_config(&settings.tls, &settings.url)
                .map_err(|error| unreachable(error.to_string()))?;
            builder = builder.use_preconfigured_tls(tls);
        }
        let http = builder.build().map_err(|error| unreachable(error.to_string()))?;
        Ok(Portainer {
            http,
            url: settings.url.clone(),
            auth: settings.auth.clone(),
            admin: settings.admin.clone(),
            jwt: Mutex::new(None),
        })
    }

    /// The base URL, for messages.
    pub fn url(&self) -> &str {
        &self.url
    }

    async fn send(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, String)],
        body: &Body<'_>,
        token: Option<&SecretString>,
    ) -> Result<(StatusCode, Vec<u8>), PortainerError> {
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.url))
            .query(query);
        match (&self.auth, token) {
            (PortainerAuth::ApiKey(key), _) => request = request.header("X-API-Key", key.expose()),
            (PortainerAuth::Admin { .. }, Some(jwt)) => {
                request = request.header("Authorization", format!("Bearer {}", jwt.expose()));
            }
            (PortainerAuth::Admin { .. }, None) => {}
        }
        request = match body {
            Body::None => request,
            Body::Json(value) => request.json(value),
            Body::Form(fields) => {
                let mut form = reqwest::multipart::Form::new();
                for (name, value) in *fields {
                    form = form.text((*name).to_owned(), value.clone());
                }
                request.multipart(form)
            }
        };
        let response = request
            .send()
            .await
            .map_err(|error| PortainerError::Unreachable {
                url: self.url.clone(),
                detail: error_chain(&error),
            })?;
        let status = response.status();
        let bytes = response
            .bytes()
            .await
            .map_err(|error| PortainerError::Unreachable {
                url: self.url.clone(),
                detail: error_chain(&error),
            })?;
        Ok((status, bytes.to_vec()))
    }

    /// Sends a request that needs a login, renewing an expired JWT once; `Ok` carries a 2xx answer.
    async fn call(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, String)],
        body: Body<'_>,
    ) -> Result<Vec<u8>, PortainerError> {
        let request = format!("{method} {path}");
        let mut renewed = false;
        loop {
            let token = match &self.auth {
                PortainerAuth::ApiKey(_) => None,
                PortainerAuth::Admin { .. } => Some(self.token(renewed).await?),
            };
            let (status, bytes) = self
                .send(method.clone(), path, query, &body, token.as_ref())
                .await?;
            if status == StatusCode::UNAUTHORIZED
                && matches!(self.auth, PortainerAuth::Admin { .. })
                && !renewed
            {
                renewed = true;
                continue;
            }
            return answer(&request, status, bytes);
        }
    }

    /// The JWT to send: the one in hand, or a new one (`fresh`, or none yet).
    async fn token(&self, fresh: bool) -> Result<SecretString, PortainerError> {
        let mut jwt = self.jwt.lock().await;
        if let (Some(token), false) = (jwt.as_ref(), fresh) {
            return Ok(token.clone());
        }
        let PortainerAuth::Admin { user, password } = &self.auth else {
            unreachable!("only an administrator logs in");
        };
        // The description spells these keys in lower case here (and capitalised for `admin/init`).
        let body = Body::Json(json!({ "username": user, "password": password.expose() }));
        let (status, bytes) = self.send(Method::POST, "/api/auth", &[], &body, None).await?;
        if matches!(status.as_u16(), 401 | 422) {
            return Err(PortainerError::Unauthorized {
                detail: error_message(&bytes),
            });
        }
        let bytes = answer("POST /api/auth", status, bytes)?;
        #[derive(Deserialize)]
        struct Login {
            jwt: String,
        }
        let login: Login = parse("POST /api/auth", &bytes)?;
        let token = SecretString::new(login.jwt);
        *jwt = Some(token.clone());
        Ok(token)
    }

    /// Portainer's version, from `GET /api/system/status`: the readiness check.
    pub async fn version(&self) -> Result<String, PortainerError> {
        let (status, bytes) = self
            .send(Method::GET, "/api/system/status", &[], &Body::None, None)
            .await?;
        if status.is_server_error() {
            // A proxy in front, or Portainer starting: not there yet.
            return Err(PortainerError::Unreachable {
                url: self.url.clone(),
                detail: format!("HTTP {} ({})", status.as_u16(), error_message(&bytes)),
            });
        }
        let bytes = answer("GET /api/system/status", status, bytes)?;
        let status: Value = parse("GET /api/system/status", &bytes)?;
        Ok(status["Version"].as_str().unwrap_or("unknown").to_owned())
    }

    /// Whether the administrator exists (`GET /api/users/admin/check`: 204 yes, 404 no).
    pub async fn admin_exists(&self) -> Result<bool, PortainerError> {
        let request = "GET /api/users/admin/check";
        let (status, bytes) = self
            .send(Method::GET, "/api/users/admin/check", &[], &Body::None, None)
            .await?;
        match status.as_u16() {
            204 => Ok(true),
            404 => Ok(false),
            _ => answer(request, status, bytes).map(|_| true),
        }
    }

    /// Creates the first administrator, with the configured password.
    pub async fn init_admin(&self) -> Result<(), PortainerError> {
        let Some((user, password)) = &self.admin else {
            return Err(PortainerError::Unauthorized {
                detail:
                    "Portainer has no administrator yet, and `portainer_api.admin_password` cannot be read"
                        .to_owned(),
            });
        };
        let body = Body::Json(json!({ "Username": user, "Password": password.expose() }));
        let (status, bytes) = self
            .send(Method::POST, "/api/users/admin/init", &[], &body, None)
            .await?;
        answer("POST /api/users/admin/init", status, bytes).map(|_| ())
    }

    /// Every environment.
    pub async fn endpoints(&self) -> Result<Vec<Endpoint>, PortainerError> {
        let bytes = self.call(Method::GET, "/api/endpoints", &[], Body::None).await?;
        parse("GET /api/endpoints", &bytes)
    }

    /// Creates an agent environment (`EndpointCreationType=2`, TLS without verification, which is how
    /// the agent's self-signed certificate is used) or, with no URL, the server's local Docker socket (1).
    pub async fn create_endpoint(
        &self,
        name: &str,
        agent_url: Option<&str>,
    ) -> Result<Endpoint, PortainerError> {
        let mut fields: Vec<(&str, String)> = vec![("Name", name.to_owned())];
        match agent_url {
            Some(url) => fields.extend([
                ("EndpointCreationType", "2".to_owned()),
                ("URL", url.to_owned()),
                ("TLS", "true".to_owned()),
                ("TLSSkipVerify", "true".to_owned()),
                ("TLSSkipClientVerify", "true".to_owned()),
            ]),
            None => fields.push(("EndpointCreationType", "1".to_owned())),
        }
        let bytes = self
            .call(Method::POST, "/api/endpoints", &[], Body::Form(&fields))
            .await?;
        parse("POST /api/endpoints", &bytes)
    }

    /// Points an environment at another URL.
    pub async fn update_endpoint_url(&self, id: u64, url: &str) -> Result<(), PortainerError> {
        let path = format!("/api/endpoints/{id}");
        let body = Body::Json(
            json!({ "URL": url, "TLS": true, "TLSSkipVerify": true, "TLSSkipClientVerify": true }),
        );
        self.call(Method::PUT, &path, &[], body).await.map(|_| ())
    }

    /// Every stack.
    pub async fn stacks(&self) -> Result<Vec<Stack>, PortainerError> {
        let bytes = self.call(Method::GET, "/api/stacks", &[], Body::None).await?;
        if bytes.is_empty() {
            return Ok(Vec::new());
        }
        parse("GET /api/stacks", &bytes)
    }

    /// A stack's compose file.
    pub async fn stack_file(&self, id: u64) -> Result<String, PortainerError> {
        let path = format!("/api/stacks/{id}/file");
        let bytes = self.call(Method::GET, &path, &[], Body::None).await?;
        #[derive(Deserialize)]
        struct File {
            #[serde(rename = "StackFileContent")]
            content: String,
        }
        let file: File = parse(&format!("GET {path}"), &bytes)?;
        Ok(file.content)
    }

    /// Deploys a new standalone Compose stack from the compose file's text.
    pub async fn create_stack(
        &self,
        endpoint_id: u64,
        name: &str,
        content: &str,
        env: &[Pair],
    ) -> Result<Stack, PortainerError> {
        let path = "/api/stacks/create/standalone/string";
        let body = Body::Json(json!({ "Name": name, "StackFileContent": content, "Env": env }));
        let bytes = self
            .call(
                Method::POST,
                path,
                &[("endpointId", endpoint_id.to_string())],
                body,
            )
            .await?;
        parse(&format!("POST {path}"), &bytes)
    }

    /// Creates a standalone stack from the compose file of a Git repository.
    pub async fn create_git_stack(
        &self,
        endpoint_id: u64,
        name: &str,
        source: &GitSource,
        env: &[Pair],
    ) -> Result<Stack, PortainerError> {
        let path = "/api/stacks/create/standalone/repository";
        let mut body = source.authentication();
        body.insert("Name".to_owned(), json!(name));
        body.insert("RepositoryURL".to_owned(), json!(source.url));
        body.insert("RepositoryReferenceName".to_owned(), json!(source.reference));
        body.insert("ComposeFile".to_owned(), json!(source.compose_file));
        body.insert("Env".to_owned(), json!(env));
        let query = [("endpointId", endpoint_id.to_string())];
        let bytes = self
            .call(Method::POST, path, &query, Body::Json(Value::Object(body)))
            .await?;
        parse(&format!("POST {path}"), &bytes)
    }

    /// Points a Git stack at `source` with these variables, then pulls and redeploys it.
    pub async fn redeploy_git_stack(
        &self,
        id: u64,
        endpoint_id: u64,
        source: &GitSource,
        env: &[Pair],
    ) -> Result<(), PortainerError> {
        let query = [("endpointId", endpoint_id.to_string())];
        let mut settings = source.authentication();
        settings.insert("RepositoryURL".to_owned(), json!(source.url));
        settings.insert("RepositoryReferenceName".to_owned(), json!(source.reference));
        settings.insert("ConfigFilePath".to_owned(), json!(source.compose_file));
        settings.insert("Env".to_owned(), json!(env));
        settings.insert("Prune".to_owned(), json!(true));
        let path = format!("/api/stacks/{id}/git");
        self.call(Method::POST, &path, &query, Body::Json(Value::Object(settings)))
            .await?;
        let mut redeploy = source.authentication();
        redeploy.insert("RepositoryReferenceName".to_owned(), json!(source.reference));
        redeploy.insert("Env".to_owned(), json!(env));
        redeploy.insert("Prune".to_owned(), json!(true));
        let path = format!("/api/stacks/{id}/git/redeploy");
        self.call(Method::PUT, &path, &query, Body::Json(Value::Object(redeploy)))
            .await
            .map(|_| ())
    }

    /// Redeploys a stack with this compose file and these variables.
    pub async fn update_stack(
        &self,
        id: u64,
        endpoint_id: u64,
        content: &str,
        env: &[Pair],
    ) -> Result<(), PortainerError> {
        let path = format!("/api/stacks/{id}");
        let body = Body::Json(json!({ "StackFileContent": content, "Env": env, "Prune": true }));
        self.call(
            Method::PUT,
            &path,
            &[("endpointId", endpoint_id.to_string())],
            body,
        )
        .await
        .map(|_| ())
    }

    /// Removes a stack and its containers.
    pub async fn delete_stack(&self, id: u64, endpoint_id: u64) -> Result<(), PortainerError> {
        let path = format!("/api/stacks/{id}");
        self.call(
            Method::DELETE,
            &path,
            &[("endpointId", endpoint_id.to_string())],
            Body::None,
        )
        .await
        .map(|_| ())
    }
}

fn answer(request: &str, status: StatusCode, bytes: Vec<u8>) -> Result<Vec<u8>, PortainerError> {
    if status.is_success() {
        return Ok(bytes);
    }
    if status == StatusCode::UNAUTHORIZED {
        return Err(PortainerError::Unauthorized {
            detail: error_message(&bytes),
        });
    }
    Err(PortainerError::Refused {
        request: request.to_owned(),
        status: status.as_u16(),
        message: error_message(&bytes),
    })
}

/// Portainer's `message` and `details`, or the text of the answer.
fn error_message(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let Ok(value) = serde_json::from_slice::<Value>(bytes) else {
        return text.trim().chars().take(300).collect();
    };
    let message = value["message"].as_str().unwrap_or_default();
    match value["details"].as_str() {
        Some(details) if !details.is_empty() && details != message => format!("{message} ({details})"),
        _ => message.to_owned(),
    }
}

fn parse<T: serde::de::DeserializeOwned>(request: &str, bytes: &[u8]) -> Result<T, PortainerError> {
    serde_json::from_slice(bytes).map_err(|error| PortainerError::Unexpected {
        request: request.to_owned(),
        detail: error.to_string(),
    })
}

fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
