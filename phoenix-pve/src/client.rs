//! The HTTP client: authentication, requests, the data envelope, tasks, locks and cluster listings.

use std::collections::BTreeMap;
use std::error::Error as _;
use std::future::Future;
use std::time::Duration;

use phoenix_core::Dispatched;
use phoenix_core::engine::journal;
use reqwest::Method;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use tokio::sync::Mutex;
use tokio::time::Instant;

use crate::error::PveError;
use crate::settings::{Auth, SecretString, Settings};
use crate::task::{TaskOutcome, Upid, exit_status};
use crate::tls;

/// Tickets live two hours; Phoenix renews them well before.
const TICKET_RENEWAL: Duration = Duration::from_secs(90 * 60);
/// Lines of a failed task's log kept in the error.
const LOG_TAIL: usize = 20;
/// A task that runs longer than this is named on the progress line.
const TASK_ANNOUNCE: Duration = Duration::from_secs(5);

/// Parameters of a write, form-encoded as Proxmox expects.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Form(Vec<(String, String)>);

impl Form {
    /// An empty form.
    pub fn new() -> Form {
        Form::default()
    }

    /// Adds a text parameter.
    pub fn text(mut self, key: &str, value: impl Into<String>) -> Form {
        self.0.push((key.to_owned(), value.into()));
        self
    }

    /// Adds a boolean as Proxmox writes them: `1` or `0`.
    pub fn flag(self, key: &str, value: bool) -> Form {
        self.text(key, if value { "1" } else { "0" })
    }

    /// Adds a number.
    pub fn number(self, key: &str, value: impl Into<i64>) -> Form {
        self.text(key, value.into().to_string())
    }

    /// The parameters.
    pub fn pairs(&self) -> &[(String, String)] {
        &self.0
    }
}

/// One entry of `GET /cluster/resources`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct ClusterResource {
    /// `qemu/100`, `lxc/101`, `node/pve1`, `storage/pve1/local`.
    pub id: String,
    /// `qemu`, `lxc`, `node`, `storage`, ...
    #[serde(rename = "type")]
    pub kind: String,
    /// The node.
    #[serde(default)]
    pub node: Option<String>,
    /// Guest ID, for guests.
    #[serde(default)]
    pub vmid: Option<u32>,
    /// Guest name.
    #[serde(default)]
    pub name: Option<String>,
    /// `running`, `stopped`, `online`, ...
    #[serde(default)]
    pub status: Option<String>,
    /// 1 for templates.
    #[serde(default)]
    pub template: Option<u8>,
    /// Semicolon-separated tags.
    #[serde(default)]
    pub tags: Option<String>,
    /// A config lock held on the guest (`backup`, `clone`, ...).
    #[serde(default)]
    pub lock: Option<String>,
    /// Storage name, for storages.
    #[serde(default)]
    pub storage: Option<String>,
    /// Memory in bytes: a node's total, a guest's configured.
    #[serde(default)]
    pub maxmem: Option<u64>,
    /// Memory in use, in bytes.
    #[serde(default)]
    pub mem: Option<u64>,
    /// 1 for a storage shared between nodes.
    #[serde(default)]
    pub shared: Option<u8>,
}

impl ClusterResource {
    /// Whether the guest carries [`crate::OWNER_TAG`].
    pub fn is_owned(&self) -> bool {
        self.tags.as_deref().is_some_and(crate::has_owner_tag)
    }
}

/// A logged-in ticket session.
struct Session {
    ticket: SecretString,
    csrf: SecretString,
    issued: Instant,
}

/// A client of one Proxmox endpoint. Cheap to share behind an `Arc`; requests may run concurrently.
pub struct Client {
    http: reqwest::Client,
    settings: Settings,
    session: Mutex<Option<Session>>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("endpoint", &self.settings.endpoint)
            .finish_non_exhaustive()
    }
}

#[derive(Deserialize)]
struct Envelope {
    #[serde(default)]
    data: Value,
    #[serde(default)]
    message: Option<String>,
    #[serde(default)]
    errors: Option<BTreeMap<String, String>>,
    /// What Proxmox sends beside `data` (`changes` on a network listing).
    #[serde(flatten)]
    attributes: BTreeMap<String, Value>,
}

/// An answer's `data` as the type asked for.
fn decode<T: DeserializeOwned>(path: &str, data: Value) -> Result<T, PveError> {
    serde_json::from_value(data).map_err(|error| PveError::Decode {
        path: path.to_owned(),
        detail: error.to_string(),
    })
}

#[derive(Deserialize)]
struct TaskStatus {
    status: String,
    #[serde(default)]
    exitstatus: Option<String>,
}

#[derive(Deserialize)]
struct LogLine {
    t: String,
}

impl Client {
    /// Builds a client and proves the connection: TLS, credentials (logging in for tickets) and version.
    pub async fn connect(settings: Settings) -> Result<Client, PveError> {
        crate::install_crypto_provider();
        let tls = tls::client_config(&settings.tls, &settings.endpoint)?;
        let http = reqwest::Client::builder()
            .use_preconfigured_tls(tls)
            .timeout(settings.request_timeout)
            .connect_timeout(Duration::from_secs(15))
            .build()
            .map_err(|error| PveError::Connect {
                endpoint: settings.endpoint.clone(),
                detail: error.to_string(),
            })?;
        let client = Client {
            http,
            settings,
            session: Mutex::new(None),
        };
        let version: Value = client.get("/version", &[]).await?;
        tracing::debug!(endpoint = %client.settings.endpoint, version = %version["version"], "connected");
        Ok(client)
    }

    /// The settings in use.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// `GET path` (after `/api2/json`), with query parameters. Reads are idempotent: transient failures
    /// (a 5xx, a dropped connection) are read again with the retry policy's backoff.
    pub async fn get<T: DeserializeOwned>(&self, path: &str, query: &[(&str, &str)]) -> Result<T, PveError> {
        self.settings
            .retry
            .retry(|| self.call(Method::GET, path, query, None))
            .await
    }

    /// [`Client::get`], with the result attributes Proxmox sends beside `data`: a network listing carries
    /// the pending changes of `/etc/network/interfaces.new` as `changes`.
    pub async fn get_with_attributes<T: DeserializeOwned>(
        &self,
        path: &str,
        query: &[(&str, &str)],
    ) -> Result<(T, BTreeMap<String, Value>), PveError> {
        let (data, attributes): (Value, _) = self
            .settings
            .retry
            .retry(|| self.call_with_attributes(Method::GET, path, query, None))
            .await?;
        Ok((decode(path, data)?, attributes))
    }

    /// `POST path` with a form body. Sent again only when Proxmox could not take its config lock (`got
    /// timeout`: nothing was done); a POST may create, so other failures are not retried.
    pub async fn post<T: DeserializeOwned>(&self, path: &str, form: &Form) -> Result<T, PveError> {
        self.write_once(Method::POST, path, form).await
    }

    /// `PUT path` with a form body. A PUT sets whole values, so sending it again is harmless: transient
    /// failures are retried.
    pub async fn put<T: DeserializeOwned>(&self, path: &str, form: &Form) -> Result<T, PveError> {
        self.settings
            .retry
            .retry(|| self.call(Method::PUT, path, &[], Some(form)))
            .await
    }

    /// `DELETE path` with query parameters, retried like a POST.
    pub async fn delete<T: DeserializeOwned>(
        &self,
        path: &str,
        query: &[(&str, &str)],
    ) -> Result<T, PveError> {
        self.lock_retry(|| self.call(Method::DELETE, path, query, None))
            .await
    }

    async fn write_once<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        form: &Form,
    ) -> Result<T, PveError> {
        self.lock_retry(|| self.call(method.clone(), path, &[], Some(form)))
            .await
    }

    /// Retries `request` while Proxmox answers that it could not take a config lock.
    async fn lock_retry<T, F, Fut>(&self, request: F) -> Result<T, PveError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, PveError>>,
    {
        self.settings
            .retry
            .retry_if(request, PveError::is_lock_timeout)
            .await
    }

    /// Starts a task: retries the dispatch on transient errors only; "already exists" on a retry means an
    /// earlier attempt went through. Never dispatches again once a UPID came back.
    pub async fn dispatch(
        &self,
        method: Method,
        path: &str,
        form: &Form,
    ) -> Result<Dispatched<Upid>, PveError> {
        self.dispatch_unless(method, path, form, &[]).await
    }

    /// [`Client::dispatch`], where an answer containing one of `done_if`'s texts (`already running`) says
    /// that what was asked already holds: then it is done, on any attempt.
    pub async fn dispatch_unless(
        &self,
        method: Method,
        path: &str,
        form: &Form,
        done_if: &[&str],
    ) -> Result<Dispatched<Upid>, PveError> {
        let dispatched = self
            .settings
            .retry
            .dispatch(|| async {
                let data: Value = match self.call(method.clone(), path, &[], Some(form)).await {
                    Ok(data) => data,
                    Err(error) if error.says_done(done_if) => {
                        journal::done(format!("{method} {path}: already so ({error})"));
                        return Ok(None);
                    }
                    Err(error) => return Err(error),
                };
                let text = data.as_str().unwrap_or_default();
                Upid::parse(text).map(Some).ok_or_else(|| PveError::Decode {
                    path: path.to_owned(),
                    detail: format!("expected a task id, got {data}"),
                })
            })
            .await?;
        Ok(match dispatched {
            Dispatched::Accepted(Some(upid)) => Dispatched::Accepted(upid),
            Dispatched::Accepted(None) => Dispatched::AlreadyDone,
            Dispatched::AlreadyDone => {
                journal::done(format!(
                    "{method} {path}: done by an earlier attempt whose answer was lost"
                ));
                Dispatched::AlreadyDone
            }
        })
    }

    /// Dispatches a task and waits for it.
    pub async fn run_task(&self, method: Method, path: &str, form: &Form) -> Result<TaskOutcome, PveError> {
        self.run_task_unless(method, path, form, &[]).await
    }

    /// Dispatches a task and waits for it; an answer or a task failure containing one of `done_if`'s
    /// texts says that what was asked already holds, which is success.
    pub async fn run_task_unless(
        &self,
        method: Method,
        path: &str,
        form: &Form,
        done_if: &[&str],
    ) -> Result<TaskOutcome, PveError> {
        match self.dispatch_unless(method, path, form, done_if).await? {
            Dispatched::Accepted(upid) => match self.wait_task(&upid).await {
                Err(error) if error.says_done(done_if) => {
                    journal::done(format!("{path}: already so ({error})"));
                    Ok(TaskOutcome::AlreadyDone)
                }
                other => other,
            },
            Dispatched::AlreadyDone => Ok(TaskOutcome::AlreadyDone),
        }
    }

    /// Polls a task until it stops, with backoff. A failure carries the tail of the task log. Bounded
    /// three ways: the task timeout, the contact timeout (Proxmox unreachable while the task runs), and a
    /// stopped run; each ends the wait with the UPID, as the task may still be running.
    pub async fn wait_task(&self, upid: &Upid) -> Result<TaskOutcome, PveError> {
        let path = format!("/nodes/{}/tasks/{}/status", upid.node(), upid.as_str());
        let started = Instant::now();
        let mut unreachable_since: Option<Instant> = None;
        let mut announced = false;
        let mut delay = Duration::from_millis(50);
        let result = loop {
            // Reading a status is idempotent, so transient failures are simply read again, until the
            // contact timeout says Proxmox is gone.
            match self.call::<TaskStatus>(Method::GET, &path, &[], None).await {
                Ok(status) if status.status == "stopped" => {
                    let exit = status.exitstatus.unwrap_or_default();
                    break match exit_status(&exit) {
                        Ok(warnings) => {
                            if warnings > 0 {
                                tracing::warn!(%upid, warnings, "task finished with warnings");
                            }
                            journal::task_ended(upid.as_str(), true);
                            Ok(TaskOutcome::Finished {
                                upid: upid.clone(),
                                warnings,
                            })
                        }
                        Err(status) => {
                            journal::task_ended(upid.as_str(), false);
                            Err(PveError::Task {
                                upid: upid.to_string(),
                                status: status.to_owned(),
                                log_tail: self.log_tail(upid).await,
                            })
                        }
                    };
                }
                Ok(_) => unreachable_since = None,
                Err(error) if phoenix_core::Retryable::is_transient(&error) => {
                    let since = *unreachable_since.get_or_insert_with(Instant::now);
                    tracing::debug!(%upid, %error, "task status unavailable, asking again");
                    if since.elapsed() >= self.settings.contact_timeout {
                        break Err(PveError::LostContact {
                            endpoint: self.settings.endpoint.clone(),
                            upid: upid.to_string(),
                            seconds: self.settings.contact_timeout.as_secs(),
                            detail: error.to_string(),
                        });
                    }
                }
                Err(error) => break Err(error),
            }
            if started.elapsed() >= self.settings.task_timeout {
                break Err(PveError::Timeout {
                    what: format!("task {upid}"),
                    seconds: self.settings.task_timeout.as_secs(),
                });
            }
            if !announced && started.elapsed() >= TASK_ANNOUNCE {
                journal::waiting(Some(&format!("task {} of {} ({upid})", upid.kind(), upid.id())));
                announced = true;
            }
            if journal::pause(delay).await.is_err() {
                break Err(PveError::Interrupted {
                    what: format!("stopped waiting for task {upid}, which may still be running"),
                });
            }
            delay = (delay * 2).min(Duration::from_secs(2));
        };
        if announced {
            journal::waiting(None);
        }
        result
    }

    /// The last [`LOG_TAIL`] lines of a task's log, read a page at a time, so a long log gives its end.
    async fn log_tail(&self, upid: &Upid) -> Vec<String> {
        const PAGE: usize = 5000;
        let path = format!("/nodes/{}/tasks/{}/log", upid.node(), upid.as_str());
        let mut tail = std::collections::VecDeque::with_capacity(LOG_TAIL);
        let mut start = 0;
        loop {
            let (from, limit) = (start.to_string(), PAGE.to_string());
            let page = match self
                .get::<Vec<LogLine>>(&path, &[("start", &from), ("limit", &limit)])
                .await
            {
                Ok(page) => page,
                Err(error) => {
                    tail.push_back(format!("(the task log could not be read: {error})"));
                    break;
                }
            };
            let full = page.len() == PAGE;
            start += page.len();
            for line in page {
                if tail.len() == LOG_TAIL {
                    tail.pop_front();
                }
                tail.push_back(line.t);
            }
            if !full {
                break;
            }
        }
        tail.into()
    }

    /// Every resource of the cluster in one request.
    pub async fn cluster_resources(&self) -> Result<Vec<ClusterResource>, PveError> {
        self.get("/cluster/resources", &[]).await
    }

    /// Sends `write`, a request on guest `vmid` of `kind` (`lxc`, `qemu`) on `node`. When Proxmox refuses
    /// it because another operation holds the guest's lock (a backup, a snapshot, a clone of it), waits
    /// for the lock to clear ([`Client::wait_unlocked`]) and sends it again, up to three times. A lock is
    /// not looked for before: few writes find one, and looking costs a read per write.
    pub async fn unless_locked<T, F, Fut>(
        &self,
        node: &str,
        kind: &str,
        vmid: u32,
        mut write: F,
    ) -> Result<T, PveError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, PveError>>,
    {
        let mut attempts = 1;
        loop {
            match write().await {
                Err(error) if error.is_guest_locked() && attempts < 4 => {
                    tracing::debug!(vmid, %error, "the guest is locked; waiting for it");
                    self.wait_unlocked(node, kind, vmid).await?;
                    attempts += 1;
                }
                other => return other,
            }
        }
    }

    /// Waits until a guest's config carries no `lock` (a backup, a clone, a snapshot in progress), saying
    /// so on the progress line and in the logs. `kind` is `lxc` or `qemu`.
    pub async fn wait_unlocked(&self, node: &str, kind: &str, vmid: u32) -> Result<(), PveError> {
        let path = format!("/nodes/{node}/{kind}/{vmid}/config");
        let started = Instant::now();
        let mut delay = Duration::from_millis(100);
        let mut waited = false;
        let result = loop {
            let config: BTreeMap<String, Value> = match self.get(&path, &[]).await {
                Ok(config) => config,
                Err(error) => break Err(error),
            };
            let Some(lock) = config.get("lock").and_then(Value::as_str) else {
                break Ok(());
            };
            let what = format!("the `{lock}` lock on {kind}/{vmid}");
            if started.elapsed() >= self.settings.lock_timeout {
                break Err(PveError::Timeout {
                    what,
                    seconds: self.settings.lock_timeout.as_secs(),
                });
            }
            if !waited {
                journal::waiting(Some(&format!(
                    "{what} to clear (up to {} s)",
                    self.settings.lock_timeout.as_secs()
                )));
                waited = true;
            }
            if journal::pause(delay).await.is_err() {
                break Err(PveError::Interrupted {
                    what: format!("stopped waiting for {what}"),
                });
            }
            delay = (delay * 2).min(Duration::from_secs(5));
        };
        if waited {
            journal::waiting(None);
        }
        result
    }

    async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, &str)],
        form: Option<&Form>,
    ) -> Result<T, PveError> {
        let (data, _) = self.call_with_attributes(method, path, query, form).await?;
        decode(path, data)
    }

    /// One request: the answer's `data`, and the attributes beside it.
    async fn call_with_attributes(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, &str)],
        form: Option<&Form>,
    ) -> Result<(Value, BTreeMap<String, Value>), PveError> {
        let writes = method != Method::GET;
        if writes && journal::is_interrupted() {
            return Err(PveError::Interrupted {
                what: format!("{method} {path} was not sent"),
            });
        }
        let mut renewed = false;
        loop {
            let request = self.request(method.clone(), path, query, form).await?;
            let response = request
                .send()
                .await
                .map_err(|error| self.transport_error(&error))?;
            let status = response.status();
            // Proxmox puts its message in the reason phrase (before 8.3 only there); hyper keeps a
            // non-canonical phrase in the response's extensions.
            let reason = response
                .extensions()
                .get::<hyper::ext::ReasonPhrase>()
                .map(|phrase| String::from_utf8_lossy(phrase.as_bytes()).into_owned())
                .unwrap_or_else(|| status.canonical_reason().unwrap_or_default().to_owned());
            // When the body carries a `message` (PVE 8.3+), that is the message of record; the
            // reason phrase is the fallback for older servers.
            let bytes = response
                .bytes()
                .await
                .map_err(|error| self.transport_error(&error))?;
            let envelope: Option<Envelope> = serde_json::from_slice(&bytes).ok();
            if status.is_success() {
                let envelope = envelope.ok_or_else(|| PveError::Decode {
                    path: path.to_owned(),
                    detail: format!(
                        "not JSON: {}",
                        String::from_utf8_lossy(&bytes)
                            .chars()
                            .take(200)
                            .collect::<String>()
                    ),
                })?;
                if writes {
                    let what = format!("{method} {path}");
                    match envelope.data.as_str().and_then(Upid::parse) {
                        Some(upid) => journal::task_started(what, upid.as_str()),
                        None => journal::done(what),
                    }
                }
                return Ok((envelope.data, envelope.attributes));
            }
            let message = envelope
                .as_ref()
                .and_then(|envelope| envelope.message.clone())
                .map(|m| m.trim().to_owned());
            if status.as_u16() == 401 {
                if !renewed && matches!(self.settings.auth, Auth::Ticket { .. }) {
                    // The ticket may have expired or been revoked: log in again once.
                    *self.session.lock().await = None;
                    renewed = true;
                    continue;
                }
                return Err(PveError::Authentication {
                    endpoint: self.settings.endpoint.clone(),
                    detail: message.unwrap_or(reason),
                });
            }
            let errors = envelope.and_then(|envelope| envelope.errors).unwrap_or_default();
            return Err(PveError::Api {
                method: method.to_string(),
                path: path.to_owned(),
                status: status.as_u16(),
                reason: message.clone().unwrap_or(reason),
                message,
                errors,
            });
        }
    }

    async fn request(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, &str)],
        form: Option<&Form>,
    ) -> Result<reqwest::RequestBuilder, PveError> {
        let url = format!("{}/api2/json{path}", self.settings.endpoint);
        let writes = method != Method::GET;
        let mut request = self.http.request(method, url);
        if !query.is_empty() {
            request = request.query(query);
        }
        if let Some(form) = form {
            request = request.form(form.pairs());
        }
        match &self.settings.auth {
            Auth::Token { id, secret } => {
                request = request.header("Authorization", format!("PVEAPIToken={id}={}", secret.expose()));
            }
            Auth::Ticket { .. } => {
                let (ticket, csrf) = self.ticket().await?;
                request = request.header("Cookie", format!("PVEAuthCookie={}", ticket.expose()));
                if writes {
                    request = request.header("CSRFPreventionToken", csrf.expose());
                }
            }
        }
        Ok(request)
    }

    /// The current ticket, logging in when there is none or it is due for renewal.
    async fn ticket(&self) -> Result<(SecretString, SecretString), PveError> {
        let mut session = self.session.lock().await;
        if let Some(current) = session
            .as_ref()
            .filter(|current| current.issued.elapsed() < TICKET_RENEWAL)
        {
            return Ok((current.ticket.clone(), current.csrf.clone()));
        }
        let Auth::Ticket { user, password } = &self.settings.auth else {
            unreachable!("tickets are only used with ticket authentication")
        };
        #[derive(Deserialize)]
        struct Login {
            ticket: String,
            #[serde(rename = "CSRFPreventionToken")]
            csrf: String,
        }
        let url = format!("{}/api2/json/access/ticket", self.settings.endpoint);
        let response = self
            .http
            .post(url)
            .form(&[("username", user.as_str()), ("password", password.expose())])
            .send()
            .await
            .map_err(|error| self.transport_error(&error))?;
        let status = response.status();
        let bytes = response
            .bytes()
            .await
            .map_err(|error| self.transport_error(&error))?;
        let envelope: Option<Envelope> = serde_json::from_slice(&bytes).ok();
        if !status.is_success() {
            let detail = envelope
                .and_then(|envelope| envelope.message)
                .map(|message| message.trim().to_owned())
                .unwrap_or_else(|| status.to_string());
            return Err(PveError::Authentication {
                endpoint: self.settings.endpoint.clone(),
                detail,
            });
        }
        let login: Login = envelope
            .and_then(|envelope| serde_json::from_value(envelope.data).ok())
            .ok_or_else(|| PveError::Decode {
                path: "/access/ticket".into(),
                detail: "no ticket in the answer".into(),
            })?;
        let fresh = Session {
            ticket: SecretString::new(login.ticket),
            csrf: SecretString::new(login.csrf),
            issued: Instant::now(),
        };
        let pair = (fresh.ticket.clone(), fresh.csrf.clone());
        *session = Some(fresh);
        Ok(pair)
    }

    /// Classifies a transport failure: certificate problems are TLS errors, the rest connection errors.
    fn transport_error(&self, error: &reqwest::Error) -> PveError {
        let mut detail = error.to_string();
        let mut source = error.source();
        while let Some(cause) = source {
            detail = format!("{detail}: {cause}");
            source = cause.source();
        }
        let endpoint = self.settings.endpoint.clone();
        let lower = detail.to_ascii_lowercase();
        if lower.contains("certificate") || lower.contains("fingerprint") || lower.contains("unknownissuer") {
            PveError::Tls { endpoint, detail }
        } else {
            PveError::Connect { endpoint, detail }
        }
    }
}
