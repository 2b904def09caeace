//! Work inside guests, shared by the container and VM managers: features with their digest records,
//! application scripts, the declared configuration for scripts to read, and health checks.
//!
//! How a command reaches the guest is a [`GuestExec`]: `lxc-attach` through the host channel for
//! containers ([`LxcAttach`]), the QEMU guest agent for VMs. A feature is recorded in the guest as
//! `/var/lib/phoenix/features/<name>` holding the digest of what ran (the script and its environment), so
//! an unchanged feature is not run again, a changed one is, and a clone inherits its source's records.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use phoenix_core::ManagerError;
use phoenix_core::config::HealthCheck;

use crate::client::{Client, Form};
use crate::host::{CommandOutput, HostChannel, HostError, in_container, sha256_hex};
use crate::lifecycle::GuestHandle;

/// Where scripts are copied inside guests before they run.
const SCRIPTS: &str = "/var/lib/phoenix/scripts";
/// Where feature records live inside guests.
const RECORDS: &str = "/var/lib/phoenix/features";
/// Limit for one feature or script.
pub const SCRIPT_TIMEOUT: Duration = Duration::from_secs(60 * 60);
/// Limit for one quick command (reading records, writing one).
pub const QUICK_TIMEOUT: Duration = Duration::from_secs(60);
/// Lines of output kept in a failure report.
const OUTPUT_TAIL: usize = 20;

/// The scripts guests may run, and the environment they get.
#[derive(Debug, Clone, Default)]
pub struct GuestScripts {
    /// Feature scripts by name: the shipped catalogue plus the configuration's own `features/*.sh`.
    pub features: BTreeMap<String, String>,
    /// Application scripts by file name (the configuration's `scripts/`).
    pub applications: BTreeMap<String, String>,
    /// Variables every script gets (`PHOENIX_TIMEZONE`, `PHOENIX_CA_DNS`, ...).
    pub environment: BTreeMap<String, String>,
}

impl GuestScripts {
    /// The scripts of an estate: the shipped feature catalogue, overridden by the configuration's own
    /// `features` of the same name, its application `scripts`, and the environment every script gets from
    /// the model (timezone, domain, NVIDIA runfile, Step-CA).
    pub fn for_estate(
        estate: &phoenix_core::Estate,
        own_features: BTreeMap<String, String>,
        applications: BTreeMap<String, String>,
    ) -> GuestScripts {
        let mut features: BTreeMap<String, String> = phoenix_core::lint::features::CATALOGUE
            .iter()
            .map(|feature| (feature.name.to_owned(), feature.script.to_owned()))
            .collect();
        features.extend(own_features);
        let files = estate.files();
        let hypervisor = &files.hypervisor;
        let mut environment = BTreeMap::new();
        let mut set = |name: &str, value: Option<&String>| {
            if let Some(value) = value {
                environment.insert(name.to_owned(), value.clone());
            }
        };
        set("PHOENIX_TIMEZONE", hypervisor.timezone.as_ref());
        set("PHOENIX_DOMAIN", hypervisor.domain_name.as_ref());
        let runfile = files.lxc.nvidia_runfile_url.as_ref().or(hypervisor
            .nvidia_driver
            .as_ref()
            .and_then(|driver| driver.runfile_url.as_ref()));
        set("PHOENIX_NVIDIA_RUNFILE_URL", runfile);
        if let Some(step_ca) = &hypervisor.step_ca {
            set("PHOENIX_CA_NAME", Some(&step_ca.root_ca_name));
            set("PHOENIX_CA_DNS", Some(&step_ca.dns_name));
            set("PHOENIX_CA_PROVISIONER", step_ca.provisioner_name.as_ref());
        }
        GuestScripts {
            features,
            applications,
            environment,
        }
    }

    /// The scripts a guest runs, in order: its features, then its application script. `extra` adds
    /// guest-specific variables to the environment.
    pub fn for_guest(
        &self,
        features: &[String],
        application: Option<&str>,
        extra: &BTreeMap<String, String>,
    ) -> Vec<Script> {
        let mut environment = self.environment.clone();
        environment.extend(extra.clone());
        let mut scripts: Vec<Script> = features
            .iter()
            .map(|name| Script {
                record: name.clone(),
                text: self.features.get(name).cloned().unwrap_or_default(),
                environment: environment.clone(),
            })
            .collect();
        if let Some(name) = application {
            scripts.push(Script {
                record: format!("app-{name}"),
                text: self.applications.get(name).cloned().unwrap_or_default(),
                environment,
            });
        }
        scripts
    }
}

/// One script to run: its record name, text and environment.
#[derive(Debug, Clone)]
pub struct Script {
    /// The name of its record (`docker`, `app-setup.sh`).
    pub record: String,
    /// The shell script.
    pub text: String,
    /// Variables it runs with.
    pub environment: BTreeMap<String, String>,
}

impl Script {
    /// The digest recorded once the script ran: of its text and its environment.
    pub fn digest(&self) -> String {
        let mut material = self.text.clone();
        for (name, value) in &self.environment {
            material.push_str(&format!("\n{name}={value}"));
        }
        sha256_hex(material.as_bytes())
    }
}

/// Runs a command inside one guest.
#[async_trait]
pub trait GuestExec: Send + Sync {
    /// The guest, for messages: `container 101`, `VM 1002`.
    fn describe(&self) -> String;

    /// Runs `argv` with `environment`, feeding it `stdin`, within `timeout`.
    async fn exec(
        &self,
        argv: &[String],
        stdin: Option<&[u8]>,
        environment: &BTreeMap<String, String>,
        timeout: Duration,
    ) -> Result<CommandOutput, ManagerError>;
}

/// Commands on the node itself, through its host channel, where a guest's commands would go (a service
/// Phoenix runs on the node rather than in a container).
#[derive(Clone)]
pub struct OnHost {
    /// The channel to the node.
    pub host: Arc<dyn HostChannel>,
    /// What it is, for messages (`the node`).
    pub name: String,
}

#[async_trait]
impl GuestExec for OnHost {
    fn describe(&self) -> String {
        self.name.clone()
    }

    async fn exec(
        &self,
        argv: &[String],
        stdin: Option<&[u8]>,
        environment: &BTreeMap<String, String>,
        timeout: Duration,
    ) -> Result<CommandOutput, ManagerError> {
        let mut command = vec!["env".to_owned()];
        command.extend(environment.iter().map(|(name, value)| format!("{name}={value}")));
        command.extend(argv.iter().cloned());
        self.host.run(&command, stdin, timeout).await.map_err(host_error)
    }
}

/// Commands inside a container: `lxc-attach -n CTID --clear-env [--set-var ...] -- argv` on the node.
#[derive(Clone)]
pub struct LxcAttach {
    /// The channel to the node.
    pub host: Arc<dyn HostChannel>,
    /// The container.
    pub ctid: u32,
}

#[async_trait]
impl GuestExec for LxcAttach {
    fn describe(&self) -> String {
        format!("container {}", self.ctid)
    }

    async fn exec(
        &self,
        argv: &[String],
        stdin: Option<&[u8]>,
        environment: &BTreeMap<String, String>,
        timeout: Duration,
    ) -> Result<CommandOutput, ManagerError> {
        let mut options: Vec<String> = Vec::new();
        for (name, value) in environment {
            options.push("--set-var".into());
            options.push(format!("{name}={value}"));
        }
        let mut command = in_container(self.ctid, &[]);
        // `in_container` ends with `--`; the variables go before it.
        let separator = command.pop().expect("in_container ends with --");
        command.extend(options);
        command.push(separator);
        command.extend(argv.iter().cloned());
        self.host.run(&command, stdin, timeout).await.map_err(host_error)
    }
}

/// Commands inside a VM through the QEMU guest agent (`agent/exec`, then `agent/exec-status` until the
/// command exits). The agent takes no environment, so variables are set with `/usr/bin/env NAME=VALUE`,
/// as arguments.
#[derive(Clone)]
pub struct QemuAgent {
    /// The API client.
    pub client: Arc<Client>,
    /// The VM's node.
    pub node: String,
    /// The VM.
    pub vmid: u32,
}

impl QemuAgent {
    /// Waits until the agent answers a ping, within `timeout`.
    pub async fn wait_until_ready(&self, timeout: Duration) -> Result<(), ManagerError> {
        let started = tokio::time::Instant::now();
        let path = format!("/nodes/{}/qemu/{}/agent/ping", self.node, self.vmid);
        let mut delay = Duration::from_millis(200);
        loop {
            match self.client.post::<serde_json::Value>(&path, &Form::new()).await {
                Ok(_) => return Ok(()),
                Err(error) if started.elapsed() >= timeout => {
                    return Err(ManagerError::Timeout {
                        operation: format!("the guest agent of VM {} (last answer: {error})", self.vmid),
                        seconds: timeout.as_secs(),
                    });
                }
                Err(_) => {}
            }
            tokio::time::sleep(delay.min(timeout.saturating_sub(started.elapsed()))).await;
            delay = (delay * 2).min(Duration::from_secs(5));
        }
    }
}

#[async_trait]
impl GuestExec for QemuAgent {
    fn describe(&self) -> String {
        format!("VM {}", self.vmid)
    }

    async fn exec(
        &self,
        argv: &[String],
        stdin: Option<&[u8]>,
        environment: &BTreeMap<String, String>,
        timeout: Duration,
    ) -> Result<CommandOutput, ManagerError> {
        let base = format!("/nodes/{}/qemu/{}/agent", self.node, self.vmid);
        let mut form = Form::new();
        if !environment.is_empty() {
            form = form.text("command", "/usr/bin/env");
            for (name, value) in environment {
                form = form.text("command", format!("{name}={value}"));
            }
        }
        for arg in argv {
            form = form.text("command", arg);
        }
        if let Some(stdin) = stdin {
            form = form.text("input-data", String::from_utf8_lossy(stdin));
        }
        let started: serde_json::Value = self
            .client
            .post(&format!("{base}/exec"), &form)
            .await
            .map_err(ManagerError::from)?;
        let pid = started["pid"]
            .as_i64()
            .ok_or_else(|| ManagerError::failed(format!("agent/exec of VM {} gave no pid", self.vmid)))?;
        let began = tokio::time::Instant::now();
        let mut delay = Duration::from_millis(50);
        loop {
            let status: serde_json::Value = self
                .client
                .get(&format!("{base}/exec-status"), &[("pid", &pid.to_string())])
                .await
                .map_err(ManagerError::from)?;
            let exited = status["exited"]
                .as_bool()
                .unwrap_or_else(|| status["exited"].as_i64() == Some(1));
            if exited {
                let text = |key: &str| status[key].as_str().unwrap_or_default().to_owned();
                return Ok(CommandOutput {
                    status: status["exitcode"]
                        .as_i64()
                        .and_then(|code| i32::try_from(code).ok()),
                    stdout: text("out-data"),
                    stderr: text("err-data"),
                });
            }
            if began.elapsed() >= timeout {
                return Err(ManagerError::Timeout {
                    operation: format!("{} in VM {}", argv.join(" "), self.vmid),
                    seconds: timeout.as_secs(),
                });
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_secs(2));
        }
    }
}

/// The feature records of a running guest: record name -> digest.
pub async fn records(guest: &dyn GuestExec) -> Result<BTreeMap<String, String>, ManagerError> {
    let list = format!(
        "for f in {RECORDS}/*; do [ -f \"$f\" ] && printf '%s %s\\n' \"${{f##*/}}\" \"$(cat \"$f\")\"; done; true"
    );
    let output = quick(guest, &["/bin/sh", "-c", &list], None).await?;
    if !output.success() {
        return Err(failure(guest, "reading the feature records", &output));
    }
    Ok(output
        .stdout
        .lines()
        .filter_map(|line| line.split_once(' '))
        .map(|(name, digest)| (name.to_owned(), digest.trim().to_owned()))
        .collect())
}

/// Runs a script (streamed on stdin, never pasted into arguments), then records its digest.
/// Runs the scripts whose records differ from their digests, in order: with `lifecycle_snapshots`,
/// between a `pre-features` and a `post-features` snapshot (each taken once); the guest's declared
/// configuration (`declared`, JSON without secrets) is written first for the scripts to read. A script
/// without text (a feature no catalogue has) fails before anything runs.
pub async fn run_pending(
    guest: &dyn GuestExec,
    handle: GuestHandle<'_>,
    scripts: Vec<Script>,
    lifecycle_snapshots: bool,
    declared: &str,
) -> Result<(), ManagerError> {
    let records = records(guest).await?;
    let pending: Vec<Script> = scripts
        .into_iter()
        .filter(|script| records.get(&script.record) != Some(&script.digest()))
        .collect();
    if pending.is_empty() {
        return Ok(());
    }
    if let Some(script) = pending.iter().find(|script| script.text.is_empty()) {
        return Err(ManagerError::failed(format!(
            "no script for `{}`: add it to the configuration directory",
            script.record
        )));
    }
    if lifecycle_snapshots {
        handle.snapshot_once("pre-features").await?;
    }
    write_guest_config(guest, declared).await?;
    for script in &pending {
        apply_script(guest, script).await?;
    }
    if lifecycle_snapshots {
        handle.snapshot_once("post-features").await?;
    }
    Ok(())
}

/// Runs one script in the guest and records its digest.
pub async fn apply_script(guest: &dyn GuestExec, script: &Script) -> Result<(), ManagerError> {
    tracing::info!(guest = %guest.describe(), script = %script.record, "running inside the guest");
    // The script is copied into the guest first and run from there with no input, so a command in it that
    // reads standard input cannot swallow the rest of the script.
    let copy = format!("umask 077 && mkdir -p {SCRIPTS} && cat > \"{SCRIPTS}/$0\"");
    let copied = quick(
        guest,
        &["/bin/sh", "-c", &copy, &script.record],
        Some(script.text.as_bytes()),
    )
    .await?;
    if !copied.success() {
        return Err(failure(guest, &format!("copying `{}`", script.record), &copied));
    }
    let argv = ["/bin/sh".to_owned(), format!("{SCRIPTS}/{}", script.record)];
    let output = guest
        .exec(&argv, None, &script.environment, SCRIPT_TIMEOUT)
        .await?;
    if !output.success() {
        return Err(failure(guest, &format!("`{}`", script.record), &output));
    }
    let record = format!("mkdir -p {RECORDS} && cat > \"{RECORDS}/$0\"");
    let output = quick(
        guest,
        &["/bin/sh", "-c", &record, &script.record],
        Some(script.digest().as_bytes()),
    )
    .await?;
    if !output.success() {
        return Err(failure(guest, "recording a feature", &output));
    }
    Ok(())
}

/// Writes the guest's declared configuration where feature scripts can read it.
pub async fn write_guest_config(guest: &dyn GuestExec, json: &str) -> Result<(), ManagerError> {
    // Readable by root only: the configuration may name things that are nobody else's business.
    let write = "umask 077 && mkdir -p /var/lib/phoenix && cat > /var/lib/phoenix/guest.json";
    let output = quick(guest, &["/bin/sh", "-c", write], Some(json.as_bytes())).await?;
    if output.success() {
        Ok(())
    } else {
        Err(failure(guest, "writing /var/lib/phoenix/guest.json", &output))
    }
}

/// Runs the health check until it passes or its attempts are used up.
pub async fn health_check(guest: &dyn GuestExec, check: &HealthCheck) -> Result<(), ManagerError> {
    let attempts = check.retries.max(1);
    let mut last = None;
    for attempt in 1..=attempts {
        let output = quick(guest, &["/bin/sh", "-c", &check.command], None).await?;
        if output.success() {
            return Ok(());
        }
        tracing::debug!(guest = %guest.describe(), attempt, "health check failed");
        last = Some(output);
        if attempt < attempts {
            tokio::time::sleep(Duration::from_secs(u64::from(check.interval))).await;
        }
    }
    let output = last.expect("at least one attempt ran");
    Err(failure(
        guest,
        &format!("the health check ({attempts} attempts)"),
        &output,
    ))
}

async fn quick(
    guest: &dyn GuestExec,
    argv: &[&str],
    stdin: Option<&[u8]>,
) -> Result<CommandOutput, ManagerError> {
    let argv: Vec<String> = argv.iter().map(|arg| (*arg).to_owned()).collect();
    guest.exec(&argv, stdin, &BTreeMap::new(), QUICK_TIMEOUT).await
}

/// A host channel failure as a manager error.
pub fn host_error(error: HostError) -> ManagerError {
    match error {
        HostError::Timeout { program, seconds } => ManagerError::Timeout {
            operation: program,
            seconds,
        },
        other => ManagerError::failed(other.to_string()),
    }
}

/// The SHA-256 (hex) of each of `paths` that is in the guest, by path: `sha256sum` names the missing
/// ones on its standard error and goes on, so they are simply left out.
pub async fn file_digests(
    guest: &dyn GuestExec,
    paths: impl IntoIterator<Item = &str>,
    timeout: Duration,
) -> Result<BTreeMap<String, String>, ManagerError> {
    let mut argv = vec!["sha256sum".to_owned(), "--".to_owned()];
    argv.extend(paths.into_iter().map(str::to_owned));
    let output = guest.exec(&argv, None, &BTreeMap::new(), timeout).await?;
    Ok(output
        .stdout
        .lines()
        .filter_map(|line| {
            let (digest, path) = line.split_once("  ")?;
            Some((path.to_owned(), digest.to_owned()))
        })
        .collect())
}

/// A command that ran and failed, with the end of its output.
pub fn failure(guest: &dyn GuestExec, what: &str, output: &CommandOutput) -> ManagerError {
    let status = output
        .status
        .map_or_else(|| "killed".to_owned(), |code| format!("exit {code}"));
    ManagerError::Failed {
        message: format!("{what} failed in {} ({status})", guest.describe()),
        details: Some(output.tail(OUTPUT_TAIL)),
    }
}
