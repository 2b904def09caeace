//! [`Node`]: one Proxmox node as the host steps reach it, through the API and, when there is one, the host
//! channel (local, or OpenSSH to the node).

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use phoenix_core::ManagerError;
use phoenix_core::engine::journal;
use phoenix_pve::guest::host_error;
use phoenix_pve::host::{CommandOutput, HostChannel};
use phoenix_pve::{Client, Session};

/// How long one command on the node may take, unless it says otherwise.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(120);

/// Lines of a failed command's output kept in the report.
const OUTPUT_TAIL: usize = 20;

/// One node: its API client, its name, and how to run commands on it.
#[derive(Clone)]
pub struct Node {
    client: Arc<Client>,
    name: String,
    channel: Option<Arc<dyn HostChannel>>,
    config_dir: PathBuf,
    /// The addresses the API endpoint resolves to, once looked up.
    endpoint_addresses: Arc<OnceLock<Vec<IpAddr>>>,
}

impl Node {
    /// A node reached through `client`, and through `channel` for commands.
    pub fn new(client: Arc<Client>, name: impl Into<String>, channel: Option<Arc<dyn HostChannel>>) -> Node {
        Node {
            client,
            name: name.into(),
            channel,
            config_dir: PathBuf::from("."),
            endpoint_addresses: Arc::new(OnceLock::new()),
        }
    }

    /// The same node, with `dir` as the directory relative secret references are read against.
    pub fn with_config_dir(mut self, dir: impl Into<PathBuf>) -> Node {
        self.config_dir = dir.into();
        self
    }

    /// The configuration directory: relative `{"file": ...}` secrets are read against it.
    pub(crate) fn config_dir(&self) -> &Path {
        &self.config_dir
    }

    /// The node `name` of a session, with its own host channel.
    pub fn of(session: &Session, name: &str) -> Node {
        Node::new(Arc::clone(session.client()), name, session.host_on(name).cloned())
            .with_config_dir(session.config_dir())
    }

    /// The node's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The API client.
    pub(crate) fn client(&self) -> &Client {
        &self.client
    }

    /// `/nodes/{node}/{tail}`.
    pub(crate) fn path(&self, tail: &str) -> String {
        format!("/nodes/{}/{tail}", self.name)
    }

    /// The addresses Phoenix reaches the API on: the endpoint's host, or what it resolves to (looked up
    /// once); empty when it does not resolve.
    pub(crate) async fn management_addresses(&self) -> Vec<IpAddr> {
        if let Some(addresses) = self.endpoint_addresses.get() {
            return addresses.clone();
        }
        let endpoint = &self.client.settings().endpoint;
        let authority = endpoint
            .split_once("://")
            .map_or(endpoint.as_str(), |(_, rest)| rest)
            .split('/')
            .next()
            .unwrap_or_default();
        let (host, port) = match authority.rsplit_once(':') {
            Some((host, port)) if !host.ends_with(':') && port.parse::<u16>().is_ok() => {
                (host, port.parse().unwrap_or(8006))
            }
            _ => (authority, 8006),
        };
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let addresses = match host.parse::<IpAddr>() {
            Ok(address) => vec![address],
            Err(_) => match tokio::net::lookup_host((host, port)).await {
                Ok(found) => found.map(|socket| socket.ip()).collect(),
                Err(error) => {
                    tracing::warn!(%host, %error, "the API endpoint does not resolve");
                    Vec::new()
                }
            },
        };
        self.endpoint_addresses.get_or_init(|| addresses).clone()
    }

    /// Whether commands can be run on the node.
    pub fn has_channel(&self) -> bool {
        self.channel.is_some()
    }

    /// The host channel, for code that runs its own commands ([`phoenix_pve::gpu::discover`]).
    pub(crate) fn channel(&self) -> Result<&dyn HostChannel, ManagerError> {
        self.channel.as_deref().ok_or_else(|| self.no_channel())
    }

    fn no_channel(&self) -> ManagerError {
        ManagerError::failed(format!(
            "no way to run commands on node {}: set `proxmox.ssh` to reach it",
            self.name
        ))
    }

    /// Runs `argv` on the node and returns how it ended, whatever its exit status.
    pub(crate) async fn run(
        &self,
        argv: &[&str],
        stdin: Option<&[u8]>,
    ) -> Result<CommandOutput, ManagerError> {
        self.run_for(argv, stdin, COMMAND_TIMEOUT).await
    }

    /// [`Node::run`] for a command that may take up to `timeout` (package installs).
    pub(crate) async fn run_for(
        &self,
        argv: &[&str],
        stdin: Option<&[u8]>,
        timeout: Duration,
    ) -> Result<CommandOutput, ManagerError> {
        let channel = self.channel()?;
        let argv: Vec<String> = argv.iter().map(|arg| (*arg).to_owned()).collect();
        channel.run(&argv, stdin, timeout).await.map_err(host_error)
    }

    /// Runs `argv`, which must succeed; returns its standard output. A write is recorded in the journal as
    /// `what` once it succeeded.
    pub(crate) async fn check(&self, argv: &[&str], stdin: Option<&[u8]>) -> Result<String, ManagerError> {
        self.check_for(argv, stdin, COMMAND_TIMEOUT).await
    }

    async fn check_for(
        &self,
        argv: &[&str],
        stdin: Option<&[u8]>,
        timeout: Duration,
    ) -> Result<String, ManagerError> {
        let output = self.run_for(argv, stdin, timeout).await?;
        if output.success() {
            return Ok(output.stdout);
        }
        Err(self.failure(argv, &output))
    }

    /// Runs a command that changes the node, and records it as a step done.
    pub(crate) async fn change(
        &self,
        what: &str,
        argv: &[&str],
        stdin: Option<&[u8]>,
    ) -> Result<String, ManagerError> {
        let stdout = self.check(argv, stdin).await?;
        journal::done(what);
        Ok(stdout)
    }

    /// [`Node::change`] for a command that may take up to `timeout`, without standard input.
    pub(crate) async fn change_for(
        &self,
        what: &str,
        argv: &[&str],
        timeout: Duration,
    ) -> Result<String, ManagerError> {
        let stdout = self.check_for(argv, None, timeout).await?;
        journal::done(what);
        Ok(stdout)
    }

    /// A command that ran and failed, with the end of its output.
    pub(crate) fn failure(&self, argv: &[&str], output: &CommandOutput) -> ManagerError {
        let status = output
            .status
            .map_or_else(|| "killed".to_owned(), |code| format!("exit {code}"));
        // The program itself, past `env` and its assignments.
        let program = argv
            .iter()
            .copied()
            .find(|arg| *arg != "env" && !arg.contains('='))
            .unwrap_or_default();
        ManagerError::Failed {
            message: format!("`{program}` failed on node {} ({status})", self.name),
            details: Some(output.tail(OUTPUT_TAIL)),
        }
    }

    /// The content of a file on the node, or `None` when there is no such file.
    pub(crate) async fn read_file(&self, path: &str) -> Result<Option<String>, ManagerError> {
        let argv = ["cat", "--", path];
        let output = self.run(&argv, None).await?;
        if output.success() {
            Ok(Some(output.stdout))
        } else if output.stderr.contains("No such file") {
            Ok(None)
        } else {
            Err(self.failure(&argv, &output))
        }
    }

    /// Writes a whole file with `install` (mode, and owner when given) from standard input, making its
    /// directory where it is missing.
    pub(crate) async fn write_file(
        &self,
        path: &str,
        content: &str,
        mode: &str,
        owner: Option<&str>,
    ) -> Result<(), ManagerError> {
        let mut argv = vec!["install", "-D", "-m", mode];
        if let Some(owner) = owner {
            argv.extend(["-o", owner, "-g", owner]);
        }
        argv.extend(["/dev/stdin", path]);
        self.change(&format!("wrote {path}"), &argv, Some(content.as_bytes()))
            .await
            .map(drop)
    }

    /// Fails naming every one of `paths` that is not a directory on the node; `undone` says what was
    /// left undone (`nothing was exported`).
    pub(crate) async fn require_directories(&self, paths: &[&str], undone: &str) -> Result<(), ManagerError> {
        let mut missing = Vec::new();
        for &path in paths {
            if !self.run(&["test", "-d", path], None).await?.success() {
                missing.push(path);
            }
        }
        if missing.is_empty() {
            return Ok(());
        }
        Err(ManagerError::failed(format!(
            "node {} has no directory {}: declare the dataset mounted there, or make the directory, then run \
             again; {undone}",
            self.name,
            missing.join(", ")
        )))
    }

    /// Puts a file back as it was before Phoenix wrote it: its old text, or no file.
    pub(crate) async fn restore_file(&self, path: &str, before: Option<&str>) -> Result<(), ManagerError> {
        match before {
            Some(text) => self.write_file(path, text, "0644", None).await,
            None => self
                .change(&format!("removed {path}"), &["rm", "-f", "--", path], None)
                .await
                .map(drop),
        }
    }

    /// The lines of a configuration file that say something (blank lines and `#` comments aside, each
    /// trimmed); `None` without the file.
    pub(crate) async fn read_setting_lines(&self, path: &str) -> Result<Option<Vec<String>>, ManagerError> {
        Ok(self.read_file(path).await?.map(|text| {
            text.lines()
                .map(str::trim)
                .filter(|line| !line.is_empty() && !line.starts_with('#'))
                .map(str::to_owned)
                .collect()
        }))
    }
}
