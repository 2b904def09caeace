//! Errors of the Proxmox API client.

use std::collections::BTreeMap;

use phoenix_core::Retryable;

/// A failure talking to Proxmox.
#[derive(Debug, Clone, thiserror::Error, miette::Diagnostic)]
pub enum PveError {
    /// Proxmox answered with an error status.
    #[error("{method} {path}: {status} {reason}{}", render_errors(errors))]
    #[diagnostic(code(phoenix::pve::api))]
    Api {
        /// HTTP method.
        method: String,
        /// API path, after `/api2/json`.
        path: String,
        /// HTTP status.
        status: u16,
        /// The reason phrase, where PVE puts its message.
        reason: String,
        /// The `message` field of PVE 8.3 and later.
        message: Option<String>,
        /// Per-parameter messages of a 400.
        errors: BTreeMap<String, String>,
    },
    /// The connection failed (refused, reset, timed out) before an answer arrived.
    #[error("cannot reach {endpoint}: {detail}")]
    #[diagnostic(
        code(phoenix::pve::connect),
        help("check the endpoint URL and that the node is up")
    )]
    Connect {
        /// The endpoint.
        endpoint: String,
        /// What the transport said.
        detail: String,
    },
    /// The node's certificate was not accepted.
    #[error("the TLS certificate of {endpoint} is not trusted: {detail}")]
    #[diagnostic(
        code(phoenix::pve::tls),
        help(
            "pin the node's certificate with PHOENIX_PVE_FINGERPRINT (or `proxmox.fingerprint`), give its CA with PHOENIX_PVE_CA_FILE, or, for a throw-away lab only, PHOENIX_PVE_INSECURE=1"
        )
    )]
    Tls {
        /// The endpoint.
        endpoint: String,
        /// Why.
        detail: String,
    },
    /// The credentials were refused.
    #[error("authentication at {endpoint} failed: {detail}")]
    #[diagnostic(
        code(phoenix::pve::auth),
        help(
            "check PHOENIX_PVE_TOKEN_ID and PHOENIX_PVE_TOKEN_SECRET (or PHOENIX_PVE_USER and PHOENIX_PVE_PASSWORD)"
        )
    )]
    Authentication {
        /// The endpoint.
        endpoint: String,
        /// What Proxmox said.
        detail: String,
    },
    /// A task ended in failure.
    #[error("task {upid} failed: {status}")]
    #[diagnostic(code(phoenix::pve::task))]
    Task {
        /// The task.
        upid: String,
        /// Its exit status (`TASK ERROR` text).
        status: String,
        /// The last lines of its log.
        log_tail: Vec<String>,
    },
    /// Waiting took longer than allowed.
    #[error("{what} did not finish within {seconds} s")]
    #[diagnostic(code(phoenix::pve::timeout))]
    Timeout {
        /// What was waited for.
        what: String,
        /// The limit.
        seconds: u64,
    },
    /// The run was asked to stop (Ctrl-C): this write was not sent, or this wait was given up.
    #[error("interrupted: {what}")]
    #[diagnostic(
        code(phoenix::pve::interrupted),
        help("`phoenix plan` shows where things stand; a task left running finishes on its own")
    )]
    Interrupted {
        /// What was not done, or not waited for.
        what: String,
    },
    /// Proxmox stopped answering while a task ran: the task may still be running there.
    #[error(
        "lost contact with {endpoint} for {seconds} s while task {upid} ran ({detail}); it may still be running: check the node's task log"
    )]
    #[diagnostic(code(phoenix::pve::lost_contact))]
    LostContact {
        /// The endpoint.
        endpoint: String,
        /// The task.
        upid: String,
        /// How long Phoenix tried.
        seconds: u64,
        /// The last transport or API error.
        detail: String,
    },
    /// What Phoenix was about to change was changed by someone else since it was read.
    #[error(
        "{path} changed since it was read ({detail}): someone else edited it; nothing more was written there, plan again"
    )]
    #[diagnostic(code(phoenix::pve::changed), help("run the plan again to see their change"))]
    Changed {
        /// API path.
        path: String,
        /// What differs.
        detail: String,
    },
    /// An answer could not be read.
    #[error("unexpected answer to {path}: {detail}")]
    #[diagnostic(code(phoenix::pve::decode))]
    Decode {
        /// API path.
        path: String,
        /// What was wrong.
        detail: String,
    },
}

fn render_errors(errors: &BTreeMap<String, String>) -> String {
    if errors.is_empty() {
        return String::new();
    }
    let parts: Vec<String> = errors
        .iter()
        .map(|(key, value)| format!("{key}: {}", value.trim()))
        .collect();
    format!(" ({})", parts.join("; "))
}

impl PveError {
    /// The text Proxmox gave, from `message` or the reason phrase.
    pub fn api_message(&self) -> Option<&str> {
        match self {
            PveError::Api { message, reason, .. } => Some(message.as_deref().unwrap_or(reason)),
            PveError::Task { status, .. } => Some(status),
            _ => None,
        }
    }
}

impl PveError {
    /// Whether Proxmox could not take a config lock (`can't lock file ... - got timeout`): nothing was done,
    /// so the same request may be sent again, whatever it is.
    pub fn is_lock_timeout(&self) -> bool {
        matches!(self, PveError::Api { .. })
            && self
                .api_message()
                .is_some_and(|text| text.contains("got timeout"))
    }

    /// Whether Proxmox refused because another operation holds the guest's lock (`CT is locked (backup)`,
    /// `VM is locked (snapshot)`), in its answer or as the reason its task failed: nothing was done.
    pub fn is_guest_locked(&self) -> bool {
        let text = match self {
            PveError::Api { .. } => self.api_message(),
            PveError::Task { status, .. } => Some(status.as_str()),
            _ => None,
        };
        text.is_some_and(|text| text.contains(" is locked ("))
    }

    /// Whether Proxmox's answer says that what was asked already holds (`CT 101 already running`): one of
    /// `done_if`'s texts is in its message. A request answered so is done.
    pub fn says_done(&self, done_if: &[&str]) -> bool {
        self.api_message()
            .is_some_and(|text| done_if.iter().any(|done| text.contains(done)))
    }
}

impl Retryable for PveError {
    fn is_transient(&self) -> bool {
        match self {
            PveError::Connect { .. } => true,
            PveError::Api { status, .. } if *status >= 500 && *status != 501 => !self.is_already_exists(),
            PveError::Api { .. } => {
                let text = self.api_message().unwrap_or_default();
                text.contains("got timeout") || text.contains("got no worker upid")
            }
            _ => false,
        }
    }

    fn is_already_exists(&self) -> bool {
        self.api_message()
            .is_some_and(|text| text.contains("already exists"))
    }
}

impl From<PveError> for phoenix_core::ManagerError {
    /// How a manager reports an API failure: task failures keep their log, time-outs stay time-outs,
    /// transient errors stay transient.
    fn from(error: PveError) -> phoenix_core::ManagerError {
        use phoenix_core::ManagerError;
        match &error {
            PveError::Task { log_tail, .. } => ManagerError::Failed {
                message: error.to_string(),
                details: Some(log_tail.join("\n")),
            },
            PveError::Timeout { what, seconds } => ManagerError::Timeout {
                operation: what.clone(),
                seconds: *seconds,
            },
            _ if error.is_transient() => ManagerError::Transient {
                message: error.to_string(),
            },
            _ => ManagerError::failed(error.to_string()),
        }
    }
}
