//! The host channel: commands on the Proxmox node for what the API cannot do (commands inside containers,
//! raw LXC keys, snippets, /etc/exports, ...). Local when Phoenix runs on the node, over SSH otherwise.
//!
//! Commands are argv vectors. Locally they are executed without a shell. Over SSH the remote side does
//! run a shell, so every argument is quoted for it; configuration values never form shell code.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use async_trait::async_trait;
use tokio::io::AsyncWriteExt;
use tokio::process::Command;

/// What a command printed and how it ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandOutput {
    /// Exit status; `None` when killed by a signal.
    pub status: Option<i32>,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

impl CommandOutput {
    /// Whether the command exited with status 0.
    pub fn success(&self) -> bool {
        self.status == Some(0)
    }

    /// The last lines of both outputs, for reports.
    pub fn tail(&self, lines: usize) -> String {
        let all: Vec<&str> = self.stdout.lines().chain(self.stderr.lines()).collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }
}

/// Why a command could not be run at all (as opposed to running and failing).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, miette::Diagnostic)]
pub enum HostError {
    /// The program could not be started.
    #[error("cannot run {program}: {detail}")]
    #[diagnostic(code(phoenix::host::spawn))]
    Spawn {
        /// The program.
        program: String,
        /// Why.
        detail: String,
    },
    /// The command ran past its time limit and was killed.
    #[error("{program} did not finish within {seconds} s")]
    #[diagnostic(code(phoenix::host::timeout))]
    Timeout {
        /// The program.
        program: String,
        /// The limit.
        seconds: u64,
    },
}

/// Runs commands on the Proxmox node.
#[async_trait]
pub trait HostChannel: Send + Sync {
    /// Runs `argv`, feeding `stdin` to it, within `timeout`.
    async fn run(
        &self,
        argv: &[String],
        stdin: Option<&[u8]>,
        timeout: Duration,
    ) -> Result<CommandOutput, HostError>;
}

/// Runs commands on this machine: Phoenix runs on the node itself.
#[derive(Debug, Clone, Default)]
pub struct LocalHost;

/// Runs commands on the node over SSH with the OpenSSH client, honouring the user's ssh config, or the
/// one file [`SshHost::with_config`] names instead.
#[derive(Debug, Clone)]
pub struct SshHost {
    destination: String,
    config: Option<PathBuf>,
}

impl SshHost {
    /// A channel to `destination` (`root@pve1`, or a host alias of `~/.ssh/config`).
    pub fn new(destination: impl Into<String>) -> SshHost {
        SshHost {
            destination: destination.into(),
            config: None,
        }
    }

    /// The same channel reading its settings (port, key, host keys, aliases) from the ssh config file
    /// `file` instead of `~/.ssh/config` and `/etc/ssh/ssh_config`: `ssh -F FILE`.
    pub fn with_config(mut self, file: impl Into<PathBuf>) -> SshHost {
        self.config = Some(file.into());
        self
    }

    /// The ssh config file this channel reads instead of the user's, if any.
    pub fn config(&self) -> Option<&Path> {
        self.config.as_deref()
    }

    /// The ssh command line that runs `argv` remotely.
    pub fn command_line(&self, argv: &[String]) -> Vec<String> {
        let remote: Vec<String> = argv.iter().map(|arg| shell_quote(arg)).collect();
        let mut line = vec!["ssh".to_owned()];
        if let Some(file) = &self.config {
            line.extend(["-F".to_owned(), file.display().to_string()]);
        }
        line.extend([
            "-o".to_owned(),
            "BatchMode=yes".to_owned(),
            "--".to_owned(),
            self.destination.clone(),
            remote.join(" "),
        ]);
        line
    }
}

/// A command for messages: its program and first arguments, past `env` and its assignments.
fn remote_summary(argv: &[String]) -> String {
    let words: Vec<&str> = argv
        .iter()
        .map(String::as_str)
        .skip_while(|arg| *arg == "env" || arg.contains('='))
        .take(3)
        .collect();
    words.join(" ")
}

/// Quotes one argument for a POSIX shell: single quotes, with embedded single quotes spliced in.
pub fn shell_quote(arg: &str) -> String {
    if !arg.is_empty()
        && arg
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || b"-_./=:@%+,".contains(&byte))
    {
        return arg.to_owned();
    }
    format!("'{}'", arg.replace('\'', r"'\''"))
}

#[async_trait]
impl HostChannel for LocalHost {
    async fn run(
        &self,
        argv: &[String],
        stdin: Option<&[u8]>,
        timeout: Duration,
    ) -> Result<CommandOutput, HostError> {
        run_process(argv, stdin, timeout).await
    }
}

#[async_trait]
impl HostChannel for SshHost {
    async fn run(
        &self,
        argv: &[String],
        stdin: Option<&[u8]>,
        timeout: Duration,
    ) -> Result<CommandOutput, HostError> {
        // A timeout names the command that ran on the node, not `ssh`.
        run_process(&self.command_line(argv), stdin, timeout)
            .await
            .map_err(|error| match error {
                HostError::Timeout { seconds, .. } => HostError::Timeout {
                    program: format!("`{}` on {}", remote_summary(argv), self.destination),
                    seconds,
                },
                other => other,
            })
    }
}

async fn run_process(
    argv: &[String],
    stdin: Option<&[u8]>,
    timeout: Duration,
) -> Result<CommandOutput, HostError> {
    let (program, args) = argv.split_first().expect("a command has a program");
    let spawn_error = |detail: String| HostError::Spawn {
        program: program.clone(),
        detail,
    };
    let mut child = Command::new(program)
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|error| spawn_error(error.to_string()))?;
    // The input is written while the output is read, so neither side can fill its pipe and block the other.
    if let (Some(bytes), Some(mut pipe)) = (stdin, child.stdin.take()) {
        let bytes = bytes.to_vec();
        tokio::spawn(async move {
            // A command that exits without reading all of its input is not an error of ours.
            let _ = pipe.write_all(&bytes).await;
        });
    }
    match tokio::time::timeout(timeout, child.wait_with_output()).await {
        Ok(Ok(output)) => Ok(CommandOutput {
            status: output.status.code(),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }),
        Ok(Err(error)) => Err(spawn_error(error.to_string())),
        Err(_) => Err(HostError::Timeout {
            program: program.clone(),
            seconds: timeout.as_secs(),
        }),
    }
}

/// The SHA-256 of some bytes, in lower-case hex: the digest recorded for applied features.
pub fn sha256_hex(bytes: &[u8]) -> String {
    ring::digest::digest(&ring::digest::SHA256, bytes)
        .as_ref()
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

/// The argv that runs `argv` inside container `ctid` with a clean environment (what `pct exec` wraps).
pub fn in_container(ctid: u32, argv: &[&str]) -> Vec<String> {
    let mut command: Vec<String> = ["lxc-attach", "-n", &ctid.to_string(), "--clear-env", "--"]
        .map(str::to_owned)
        .to_vec();
    command.extend(argv.iter().map(|arg| (*arg).to_owned()));
    command
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(args: &[&str]) -> Vec<String> {
        args.iter().map(|arg| (*arg).to_owned()).collect()
    }

    #[tokio::test]
    async fn local_commands_take_stdin_and_report_status_and_output() {
        let output = LocalHost
            .run(
                &argv(&["sh", "-s", "--", "world"]),
                Some(b"echo \"hello $1\"; echo oops >&2; exit 3"),
                Duration::from_secs(10),
            )
            .await
            .expect("runs");
        assert_eq!(output.status, Some(3));
        assert_eq!(output.stdout, "hello world\n");
        assert_eq!(output.stderr, "oops\n");
        assert_eq!(output.tail(1), "oops");
    }

    #[tokio::test]
    async fn arguments_are_never_interpreted_by_a_shell_locally() {
        let output = LocalHost
            .run(
                &argv(&["echo", "$(id)", ";", "rm"]),
                None,
                Duration::from_secs(10),
            )
            .await
            .expect("runs");
        assert_eq!(output.stdout, "$(id) ; rm\n");
    }

    #[tokio::test]
    async fn timeouts_and_missing_programs_are_errors() {
        let slow = LocalHost
            .run(&argv(&["sleep", "5"]), None, Duration::from_millis(100))
            .await;
        assert!(matches!(slow, Err(HostError::Timeout { .. })));
        let missing = LocalHost
            .run(&argv(&["/nonexistent/program"]), None, Duration::from_secs(1))
            .await;
        assert!(matches!(missing, Err(HostError::Spawn { .. })));
    }

    #[tokio::test]
    async fn ssh_quoting_survives_a_real_shell() {
        let nasty = "it's $(rm -rf /) `x` \"q\" ; & | > *";
        let line = SshHost::new("root@pve1").command_line(&argv(&["printf", "%s", nasty]));
        assert_eq!(&line[..5], ["ssh", "-o", "BatchMode=yes", "--", "root@pve1"]);
        // The remote side runs the last element through a shell: do the same here.
        let output = LocalHost
            .run(&argv(&["sh", "-c", &line[5]]), None, Duration::from_secs(10))
            .await
            .expect("runs");
        assert_eq!(output.stdout, nasty);
    }

    #[test]
    fn an_ssh_config_file_replaces_the_users() {
        let line = SshHost::new("node")
            .with_config("/tmp/node ssh/config")
            .command_line(&argv(&["true"]));
        assert_eq!(
            line,
            [
                "ssh",
                "-F",
                "/tmp/node ssh/config",
                "-o",
                "BatchMode=yes",
                "--",
                "node",
                "true"
            ]
        );
    }

    #[test]
    fn container_commands_go_through_lxc_attach() {
        assert_eq!(
            in_container(101, &["cat", "/etc/os-release"]),
            argv(&[
                "lxc-attach",
                "-n",
                "101",
                "--clear-env",
                "--",
                "cat",
                "/etc/os-release"
            ])
        );
    }
}
