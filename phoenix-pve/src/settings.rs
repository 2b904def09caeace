//! Connection settings: the configuration's `proxmox` section, overridden by the environment.
//!
//! Variables: `PHOENIX_PVE_URL`, `PHOENIX_PVE_TOKEN_ID` + `PHOENIX_PVE_TOKEN_SECRET`, or `PHOENIX_PVE_USER` +
//! `PHOENIX_PVE_PASSWORD`, `PHOENIX_PVE_CA_FILE`, `PHOENIX_PVE_FINGERPRINT`, `PHOENIX_PVE_INSECURE=1`.
//! Secrets come from the environment or files, never from the command line.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use phoenix_core::RetryPolicy;
use phoenix_core::config::Secret;
use phoenix_core::config::hypervisor::Connection;

/// A secret value. Its `Debug` and `Display` never show it.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretString(String);

impl SecretString {
    /// Wraps a secret.
    pub fn new(value: impl Into<String>) -> SecretString {
        SecretString(value.into())
    }

    /// The secret itself, for the one place that sends it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for SecretString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretString(<redacted>)")
    }
}

/// How Phoenix authenticates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Auth {
    /// An API token: `user@realm!tokenname` and its secret.
    Token {
        /// `user@realm!tokenname`.
        id: String,
        /// The token secret.
        secret: SecretString,
    },
    /// A user and password, exchanged for a ticket.
    Ticket {
        /// `user@realm`.
        user: String,
        /// The password.
        password: SecretString,
    },
}

/// Which certificates Phoenix accepts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TlsTrust {
    /// Certificates signed by the CA in this PEM file.
    CaFile(PathBuf),
    /// Exactly the certificate with this SHA-256 fingerprint (Proxmox nodes' self-signed certificates).
    Fingerprint([u8; 32]),
    /// The public web PKI (a node behind a publicly trusted certificate).
    WebPki,
    /// Anything: no verification at all. Explicit and loud.
    Insecure,
}

/// Everything needed to talk to one Proxmox endpoint.
#[derive(Debug, Clone)]
pub struct Settings {
    /// `https://host:8006`, without a trailing slash.
    pub endpoint: String,
    /// Credentials.
    pub auth: Auth,
    /// Certificate trust.
    pub tls: TlsTrust,
    /// Limit for one HTTP request.
    pub request_timeout: Duration,
    /// Limit for one task (create, clone, start, ...).
    pub task_timeout: Duration,
    /// Retries of dispatches that fail transiently.
    pub retry: RetryPolicy,
    /// Limit for waiting until a guest's lock clears.
    pub lock_timeout: Duration,
    /// How long Proxmox may stay unreachable while Phoenix waits on one of its tasks; then the wait ends
    /// with the task's UPID, which may still be running.
    pub contact_timeout: Duration,
}

/// Why no settings could be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, miette::Diagnostic)]
pub enum SettingsError {
    /// Neither the configuration nor the environment names an endpoint.
    #[error("no Proxmox endpoint is configured")]
    #[diagnostic(
        code(phoenix::pve::no_endpoint),
        help("set `proxmox.endpoint` in the hypervisor file or PHOENIX_PVE_URL")
    )]
    NoEndpoint,
    /// The endpoint is not an https URL.
    #[error("the Proxmox endpoint `{0}` is not an https:// URL")]
    #[diagnostic(code(phoenix::pve::bad_endpoint), help("write it as https://host:8006"))]
    BadEndpoint(String),
    /// No credentials were found.
    #[error("no Proxmox credentials are configured")]
    #[diagnostic(
        code(phoenix::pve::no_credentials),
        help(
            "set PHOENIX_PVE_TOKEN_ID and PHOENIX_PVE_TOKEN_SECRET, or PHOENIX_PVE_USER and PHOENIX_PVE_PASSWORD (or `proxmox.token_id` and `proxmox.token_secret`)"
        )
    )]
    NoCredentials,
    /// A secret names an environment variable that is not set.
    #[error("the environment variable {0} is not set")]
    #[diagnostic(
        code(phoenix::pve::missing_env),
        help("export it, or point the secret at a file with {{\"file\": \"path\"}}")
    )]
    MissingEnv(String),
    /// A secret file could not be read.
    #[error("cannot read the secret file {path}: {detail}")]
    #[diagnostic(code(phoenix::pve::secret_file))]
    SecretFile {
        /// The file.
        path: String,
        /// Why.
        detail: String,
    },
    /// The fingerprint is not 32 hex bytes.
    #[error("`{0}` is not a SHA-256 fingerprint")]
    #[diagnostic(
        code(phoenix::pve::bad_fingerprint),
        help(
            "copy it from the node (Datacenter > node > Certificates), as 32 hex bytes separated by colons"
        )
    )]
    BadFingerprint(String),
}

impl Settings {
    /// Builds settings from the configuration and the environment (`env` looks a variable up); relative
    /// secret files and CA files are resolved against `config_dir`. The environment wins over the file.
    pub fn resolve(
        connection: Option<&Connection>,
        env: &dyn Fn(&str) -> Option<String>,
        config_dir: &Path,
    ) -> Result<Settings, SettingsError> {
        let var = |name: &str| env(name).filter(|value| !value.is_empty());
        let endpoint = var("PHOENIX_PVE_URL")
            .or_else(|| connection.map(|connection| connection.endpoint.clone()))
            .ok_or(SettingsError::NoEndpoint)?;
        let endpoint = endpoint
            .trim_end_matches('/')
            .trim_end_matches("/api2/json")
            .to_owned();
        if !endpoint.starts_with("https://") {
            return Err(SettingsError::BadEndpoint(endpoint));
        }
        let resolve_secret = |secret: &Secret| resolve_secret(secret, &var, config_dir);
        let token_id = var("PHOENIX_PVE_TOKEN_ID").or_else(|| connection.and_then(|c| c.token_id.clone()));
        let user = var("PHOENIX_PVE_USER").or_else(|| connection.and_then(|c| c.user.clone()));
        let auth = if let Some(id) = token_id {
            let secret = match var("PHOENIX_PVE_TOKEN_SECRET") {
                Some(secret) => SecretString::new(secret),
                None => match connection.and_then(|c| c.token_secret.as_ref()) {
                    Some(secret) => resolve_secret(secret)?,
                    None => return Err(SettingsError::NoCredentials),
                },
            };
            Auth::Token { id, secret }
        } else if let Some(user) = user {
            let password = match var("PHOENIX_PVE_PASSWORD") {
                Some(password) => SecretString::new(password),
                None => match connection.and_then(|c| c.password.as_ref()) {
                    Some(password) => resolve_secret(password)?,
                    None => return Err(SettingsError::NoCredentials),
                },
            };
            Auth::Ticket { user, password }
        } else {
            return Err(SettingsError::NoCredentials);
        };
        let insecure = var("PHOENIX_PVE_INSECURE").is_some_and(|value| value == "1" || value == "true");
        // The environment wins over the file, whichever way of trusting each of them names.
        let from_env = match (var("PHOENIX_PVE_FINGERPRINT"), var("PHOENIX_PVE_CA_FILE")) {
            (Some(fingerprint), _) => Some(TlsTrust::Fingerprint(parse_fingerprint(&fingerprint)?)),
            (None, Some(ca_file)) => Some(TlsTrust::CaFile(config_dir.join(ca_file))),
            (None, None) => None,
        };
        let from_file = match (
            connection.and_then(|c| c.fingerprint.clone()),
            connection.and_then(|c| c.ca_file.clone()),
        ) {
            (Some(fingerprint), _) => Some(TlsTrust::Fingerprint(parse_fingerprint(&fingerprint)?)),
            (None, Some(ca_file)) => Some(TlsTrust::CaFile(config_dir.join(ca_file))),
            (None, None) => None,
        };
        let tls = if insecure {
            TlsTrust::Insecure
        } else {
            from_env.or(from_file).unwrap_or(TlsTrust::WebPki)
        };
        Ok(Settings {
            endpoint,
            auth,
            tls,
            request_timeout: Duration::from_secs(60),
            task_timeout: Duration::from_secs(30 * 60),
            retry: RetryPolicy::default(),
            lock_timeout: Duration::from_secs(10 * 60),
            contact_timeout: Duration::from_secs(60),
        })
    }
}

/// Reads a secret: inline, from the environment variable it names (looked up with `env`), or from the file
/// it names (relative paths against `config_dir`, the trailing newline removed).
pub fn resolve_secret(
    secret: &Secret,
    env: &dyn Fn(&str) -> Option<String>,
    config_dir: &Path,
) -> Result<SecretString, SettingsError> {
    match secret {
        Secret::Plain(value) => Ok(SecretString::new(value.clone())),
        Secret::Env(name) => env(name)
            .filter(|value| !value.is_empty())
            .map(SecretString::new)
            .ok_or_else(|| SettingsError::MissingEnv(name.clone())),
        Secret::File(path) => {
            let path = config_dir.join(path);
            std::fs::read_to_string(&path)
                .map(|text| SecretString::new(text.trim_end_matches(['\n', '\r'])))
                .map_err(|error| SettingsError::SecretFile {
                    path: path.display().to_string(),
                    detail: error.to_string(),
                })
        }
    }
}

/// Parses `AA:BB:...` (colons optional, either case) into 32 bytes.
pub fn parse_fingerprint(text: &str) -> Result<[u8; 32], SettingsError> {
    let hex: String = text.chars().filter(|c| *c != ':').collect();
    let invalid = || SettingsError::BadFingerprint(text.to_owned());
    if hex.len() != 64 {
        return Err(invalid());
    }
    let mut bytes = [0u8; 32];
    for (index, byte) in bytes.iter_mut().enumerate() {
        *byte = u8::from_str_radix(hex.get(index * 2..index * 2 + 2).ok_or_else(invalid)?, 16)
            .map_err(|_| invalid())?;
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn connection() -> Connection {
        Connection {
            endpoint: "https://pve1:8006/".into(),
            nodes: vec!["pve1".into()],
            placement: None,
            node_ssh: Default::default(),
            token_id: Some("phoenix@pve!ci".into()),
            token_secret: Some(Secret::Env("TOKEN".into())),
            user: None,
            password: None,
            ca_file: None,
            fingerprint: None,
            ssh: None,
        }
    }

    fn resolve(connection: Option<&Connection>, vars: &[(&str, &str)]) -> Result<Settings, SettingsError> {
        let vars: BTreeMap<String, String> =
            vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        Settings::resolve(
            connection,
            &|name| vars.get(name).cloned(),
            Path::new("/etc/phoenix"),
        )
    }

    #[test]
    fn configuration_with_secret_from_the_environment() {
        let settings = resolve(Some(&connection()), &[("TOKEN", "s3cret")]).expect("resolves");
        assert_eq!(settings.endpoint, "https://pve1:8006");
        assert_eq!(
            settings.auth,
            Auth::Token {
                id: "phoenix@pve!ci".into(),
                secret: SecretString::new("s3cret")
            }
        );
        assert_eq!(settings.tls, TlsTrust::WebPki);
        assert!(
            !format!("{settings:?}").contains("s3cret"),
            "secrets never reach Debug output"
        );
    }

    #[test]
    fn environment_overrides_the_configuration() {
        let settings = resolve(
            Some(&connection()),
            &[
                ("PHOENIX_PVE_URL", "https://10.0.0.2:8006"),
                ("PHOENIX_PVE_TOKEN_SECRET", "from-env"),
            ],
        )
        .expect("resolves");
        assert_eq!(settings.endpoint, "https://10.0.0.2:8006");
        assert_eq!(
            settings.auth,
            Auth::Token {
                id: "phoenix@pve!ci".into(),
                secret: SecretString::new("from-env")
            }
        );
        let ticket = resolve(
            None,
            &[
                ("PHOENIX_PVE_URL", "https://10.0.0.2:8006"),
                ("PHOENIX_PVE_USER", "root@pam"),
                ("PHOENIX_PVE_PASSWORD", "pw"),
            ],
        )
        .expect("resolves");
        assert_eq!(
            ticket.auth,
            Auth::Ticket {
                user: "root@pam".into(),
                password: SecretString::new("pw")
            }
        );
        let unset = resolve(Some(&connection()), &[]).expect_err("the token secret variable is unset");
        assert_eq!(unset, SettingsError::MissingEnv("TOKEN".into()));
    }

    #[test]
    fn trust_options() {
        let pinned = resolve(
            Some(&connection()),
            &[
                ("TOKEN", "x"),
                ("PHOENIX_PVE_FINGERPRINT", &"AB:".repeat(32)[..95]),
            ],
        )
        .expect("resolves");
        assert_eq!(pinned.tls, TlsTrust::Fingerprint([0xAB; 32]));
        let insecure = resolve(
            Some(&connection()),
            &[("TOKEN", "x"), ("PHOENIX_PVE_INSECURE", "1")],
        )
        .expect("resolves");
        assert_eq!(insecure.tls, TlsTrust::Insecure);
        let bad = resolve(
            Some(&connection()),
            &[("TOKEN", "x"), ("PHOENIX_PVE_FINGERPRINT", "AB:CD")],
        );
        assert_eq!(
            bad.expect_err("too short"),
            SettingsError::BadFingerprint("AB:CD".into())
        );
    }

    #[test]
    fn missing_pieces_are_named() {
        assert_eq!(
            resolve(None, &[]).expect_err("no endpoint"),
            SettingsError::NoEndpoint
        );
        assert_eq!(
            resolve(None, &[("PHOENIX_PVE_URL", "http://pve:8006")]).expect_err("plain http"),
            SettingsError::BadEndpoint("http://pve:8006".into())
        );
        assert_eq!(
            resolve(None, &[("PHOENIX_PVE_URL", "https://pve:8006")]).expect_err("no credentials"),
            SettingsError::NoCredentials
        );
    }
}
