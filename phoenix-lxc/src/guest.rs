//! Work inside a container through the host channel: features with their digest records, the
//! application script, and the health check.
//!
//! A feature is recorded in the container as `/var/lib/phoenix/features/<name>` holding the digest of
//! what ran (the script and its environment), so an unchanged feature is not run again, a changed one is,
//! and a clone inherits its source's records with its file system.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use phoenix_core::ManagerError;
use phoenix_core::config::HealthCheck;
use phoenix_pve::host::{CommandOutput, HostChannel, in_container, sha256_hex};

/// Where feature records live inside guests.
const RECORDS: &str = "/var/lib/phoenix/features";
/// Limit for one feature or script.
const SCRIPT_TIMEOUT: Duration = Duration::from_secs(60 * 60);
/// Limit for one quick command (reading records, writing one).
const QUICK_TIMEOUT: Duration = Duration::from_secs(60);
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

/// One script to run: its record name, text and environment.
#[derive(Debug, Clone)]
pub(crate) struct Script {
    pub(crate) record: String,
    pub(crate) text: String,
    pub(crate) environment: BTreeMap<String, String>,
}

impl Script {
    /// The digest recorded once the script ran: of its text and its environment.
    pub(crate) fn digest(&self) -> String {
        let mut material = self.text.clone();
        for (name, value) in &self.environment {
            material.push_str(&format!("\n{name}={value}"));
        }
        sha256_hex(material.as_bytes())
    }
}

/// Runs commands inside containers, and on the node for raw LXC keys.
#[derive(Clone)]
pub(crate) struct Guest {
    pub(crate) host: Arc<dyn HostChannel>,
    /// Where the cluster file system is mounted (`/etc/pve`).
    pub(crate) pve_root: String,
}

/// Rewrites the raw keys of a container config's main section (before the first `[snapshot]`): each
/// given key loses its old lines and gets one line with the new value. Keys and values arrive as
/// arguments, never as shell code.
const SET_RAW_KEYS: &str = r#"set -eu
file="$1"; shift
tmp="$(mktemp)"
awk '
BEGIN {
    for (i = 1; i < ARGC - 1; i += 2) { n++; keys[n] = ARGV[i]; values[n] = ARGV[i + 1]; wanted[ARGV[i]] = 1 }
    for (i = 1; i < ARGC - 1; i++) delete ARGV[i]
}
!done && /^[ \t]*$/ { blanks++; next }
/^\[/ && !done {
    for (j = 1; j <= n; j++) print keys[j] ": " values[j]
    for (; blanks > 0; blanks--) print ""
    done = 1
}
!done {
    key = $0; sub(/:.*/, "", key); if (key in wanted) next
    for (; blanks > 0; blanks--) print ""
}
{ print }
END { if (!done) { for (j = 1; j <= n; j++) print keys[j] ": " values[j]; for (; blanks > 0; blanks--) print "" } }
' "$@" "$file" > "$tmp"
cat "$tmp" > "$file"
rm -f "$tmp"
"#;

impl Guest {
    /// The feature records of a running container: record name -> digest.
    pub(crate) async fn records(&self, ctid: u32) -> Result<BTreeMap<String, String>, ManagerError> {
        let list = format!(
            "for f in {RECORDS}/*; do [ -f \"$f\" ] && printf '%s %s\\n' \"${{f##*/}}\" \"$(cat \"$f\")\"; done; true"
        );
        let output = self
            .run(ctid, &["/bin/sh", "-c", &list], None, QUICK_TIMEOUT)
            .await?;
        if !output.success() {
            return Err(failure(ctid, "reading the feature records", &output));
        }
        Ok(output
            .stdout
            .lines()
            .filter_map(|line| line.split_once(' '))
            .map(|(name, digest)| (name.to_owned(), digest.trim().to_owned()))
            .collect())
    }

    /// Runs a script (streamed on stdin, never pasted into arguments), then records its digest.
    pub(crate) async fn apply_script(&self, ctid: u32, script: &Script) -> Result<(), ManagerError> {
        let mut argv: Vec<String> = vec![
            "lxc-attach".into(),
            "-n".into(),
            ctid.to_string(),
            "--clear-env".into(),
        ];
        for (name, value) in &script.environment {
            argv.push("--set-var".into());
            argv.push(format!("{name}={value}"));
        }
        argv.extend(["--", "/bin/sh", "-s"].map(str::to_owned));
        tracing::info!(ctid, script = %script.record, "running inside the container");
        let output = self
            .host
            .run(&argv, Some(script.text.as_bytes()), SCRIPT_TIMEOUT)
            .await
            .map_err(host_error)?;
        if !output.success() {
            return Err(failure(ctid, &format!("`{}`", script.record), &output));
        }
        let record = format!("mkdir -p {RECORDS} && cat > \"{RECORDS}/$0\"");
        let output = self
            .run(
                ctid,
                &["/bin/sh", "-c", &record, &script.record],
                Some(script.digest().as_bytes()),
                QUICK_TIMEOUT,
            )
            .await?;
        if !output.success() {
            return Err(failure(ctid, "recording a feature", &output));
        }
        Ok(())
    }

    fn config_file(&self, node: &str, ctid: u32) -> String {
        format!("{}/nodes/{node}/lxc/{ctid}.conf", self.pve_root)
    }

    /// The raw `lxc.*` keys of a container's config (its main section), read on the node.
    pub(crate) async fn raw_keys(
        &self,
        node: &str,
        ctid: u32,
    ) -> Result<BTreeMap<String, Vec<String>>, ManagerError> {
        let argv = ["cat".to_owned(), self.config_file(node, ctid)];
        let output = self
            .host
            .run(&argv, None, QUICK_TIMEOUT)
            .await
            .map_err(host_error)?;
        if !output.success() {
            return Err(failure(
                ctid,
                "reading the container's config file on the node",
                &output,
            ));
        }
        let mut keys: BTreeMap<String, Vec<String>> = BTreeMap::new();
        let lines = output
            .stdout
            .lines()
            .take_while(|line| !line.starts_with('['))
            .filter(|line| line.starts_with("lxc."));
        for (key, value) in lines.filter_map(|line| line.split_once(':')) {
            keys.entry(key.trim().to_owned())
                .or_default()
                .push(value.trim().to_owned());
        }
        Ok(keys)
    }

    /// Sets raw `lxc.*` keys in a container's config file on the node.
    pub(crate) async fn set_raw_keys(
        &self,
        node: &str,
        ctid: u32,
        keys: &BTreeMap<String, Vec<String>>,
    ) -> Result<(), ManagerError> {
        let mut argv: Vec<String> = vec![
            "/bin/sh".into(),
            "-c".into(),
            SET_RAW_KEYS.into(),
            "phoenix-raw-keys".into(),
        ];
        argv.push(self.config_file(node, ctid));
        for (key, values) in keys {
            for value in values {
                argv.push(key.clone());
                argv.push(value.clone());
            }
        }
        let output = self
            .host
            .run(&argv, None, QUICK_TIMEOUT)
            .await
            .map_err(host_error)?;
        if output.success() {
            Ok(())
        } else {
            Err(failure(ctid, "writing raw LXC keys", &output))
        }
    }

    /// Writes the container's declared configuration where feature scripts can read it.
    pub(crate) async fn write_guest_config(&self, ctid: u32, json: &str) -> Result<(), ManagerError> {
        let write = "mkdir -p /var/lib/phoenix && cat > /var/lib/phoenix/guest.json";
        let output = self
            .run(
                ctid,
                &["/bin/sh", "-c", write],
                Some(json.as_bytes()),
                QUICK_TIMEOUT,
            )
            .await?;
        if output.success() {
            Ok(())
        } else {
            Err(failure(ctid, "writing /var/lib/phoenix/guest.json", &output))
        }
    }

    /// Runs the health check until it passes or its attempts are used up.
    pub(crate) async fn health_check(&self, ctid: u32, check: &HealthCheck) -> Result<(), ManagerError> {
        let attempts = check.retries.max(1);
        let mut last = None;
        for attempt in 1..=attempts {
            let output = self
                .run(ctid, &["/bin/sh", "-c", &check.command], None, QUICK_TIMEOUT)
                .await?;
            if output.success() {
                return Ok(());
            }
            tracing::debug!(ctid, attempt, "health check failed");
            last = Some(output);
            if attempt < attempts {
                tokio::time::sleep(Duration::from_secs(u64::from(check.interval))).await;
            }
        }
        let output = last.expect("at least one attempt ran");
        Err(failure(
            ctid,
            &format!("the health check ({attempts} attempts)"),
            &output,
        ))
    }

    async fn run(
        &self,
        ctid: u32,
        argv: &[&str],
        stdin: Option<&[u8]>,
        timeout: Duration,
    ) -> Result<CommandOutput, ManagerError> {
        self.host
            .run(&in_container(ctid, argv), stdin, timeout)
            .await
            .map_err(host_error)
    }
}

fn host_error(error: phoenix_pve::host::HostError) -> ManagerError {
    match error {
        phoenix_pve::host::HostError::Timeout { program, seconds } => ManagerError::Timeout {
            operation: program,
            seconds,
        },
        other => ManagerError::failed(other.to_string()),
    }
}

fn failure(ctid: u32, what: &str, output: &CommandOutput) -> ManagerError {
    let status = output
        .status
        .map_or_else(|| "killed".to_owned(), |code| format!("exit {code}"));
    ManagerError::Failed {
        message: format!("{what} failed in container {ctid} ({status})"),
        details: Some(output.tail(OUTPUT_TAIL)),
    }
}
