//! How Phoenix reaches Portainer: the hypervisor file's `portainer_api` and `network` keys, overridden by
//! the environment (`PHOENIX_PORTAINER_URL`, `PHOENIX_PORTAINER_API_KEY`, `PHOENIX_PORTAINER_CA_FILE`,
//! `PHOENIX_PORTAINER_FINGERPRINT`, `PHOENIX_PORTAINER_INSECURE=1`).

use std::path::Path;
use std::time::Duration;

use phoenix_core::config::hypervisor::HypervisorFile;
use phoenix_pve::{SecretString, SettingsError, TlsTrust, parse_fingerprint, resolve_secret};

/// How Phoenix logs in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PortainerAuth {
    /// An access token, sent as `X-API-Key`.
    ApiKey(SecretString),
    /// The administrator, logged in with `POST /api/auth` for a JWT.
    Admin {
        /// User name.
        user: String,
        /// Password.
        password: SecretString,
    },
}

/// Everything needed to talk to one Portainer.
#[derive(Debug, Clone)]
pub struct PortainerSettings {
    /// `https://10.0.0.111:9443`, without a trailing slash.
    pub url: String,
    /// How to log in.
    pub auth: PortainerAuth,
    /// The administrator to create on a new Portainer (`POST /api/users/admin/init`), when known.
    pub admin: Option<(String, SecretString)>,
    /// Certificate trust, for an https URL.
    pub tls: TlsTrust,
    /// Limit for one request.
    pub request_timeout: Duration,
}

/// Why Portainer cannot be reached: what the configuration lacks.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, miette::Diagnostic)]
pub enum PortainerSettingsError {
    /// No `portainer_api` section.
    #[error("no Portainer is configured")]
    #[diagnostic(
        code(phoenix::portainer::not_configured),
        help("add `portainer_api` (admin_user, admin_password) to the hypervisor file")
    )]
    NotConfigured,
    /// No URL, and nothing to make one from.
    #[error("Portainer's address is not known")]
    #[diagnostic(
        code(phoenix::portainer::no_url),
        help("set `portainer_api.url`, `network.portainer_server_ip`, or PHOENIX_PORTAINER_URL")
    )]
    NoUrl,
    /// The URL is not http(s).
    #[error("`{0}` is not an http:// or https:// URL")]
    #[diagnostic(code(phoenix::portainer::bad_url))]
    BadUrl(String),
    /// A secret or a fingerprint could not be read.
    #[error(transparent)]
    #[diagnostic(transparent)]
    Secret(#[from] SettingsError),
}

impl PortainerSettings {
    /// Builds the settings from the hypervisor file and the environment (`env` looks a variable up);
    /// relative secret and CA files are resolved against `config_dir`. The environment wins.
    pub fn resolve(
        hypervisor: &HypervisorFile,
        env: &dyn Fn(&str) -> Option<String>,
        config_dir: &Path,
    ) -> Result<PortainerSettings, PortainerSettingsError> {
        let var = |name: &str| env(name).filter(|value| !value.is_empty());
        let api = hypervisor
            .portainer_api
            .as_ref()
            .ok_or(PortainerSettingsError::NotConfigured)?;
        let network = hypervisor.network.as_ref();
        let default_url = network
            .and_then(|network| network.portainer_server_ip.as_ref())
            .map(|ip| {
                let port = network
                    .and_then(|network| network.portainer_server_port)
                    .unwrap_or(9443);
                format!("https://{ip}:{port}")
            });
        let url = var("PHOENIX_PORTAINER_URL")
            .or_else(|| api.url.clone())
            .or(default_url)
            .ok_or(PortainerSettingsError::NoUrl)?;
        let url = url.trim_end_matches('/').to_owned();
        if !(url.starts_with("https://") || url.starts_with("http://")) {
            return Err(PortainerSettingsError::BadUrl(url));
        }
        let admin = resolve_secret(&api.admin_password, &var, config_dir)
            .ok()
            .map(|password| (api.admin_user.clone(), password));
        let auth = match var("PHOENIX_PORTAINER_API_KEY") {
            Some(key) => PortainerAuth::ApiKey(SecretString::new(key)),
            None => match &api.api_key {
                Some(key) => PortainerAuth::ApiKey(resolve_secret(key, &var, config_dir)?),
                None => PortainerAuth::Admin {
                    user: api.admin_user.clone(),
                    password: resolve_secret(&api.admin_password, &var, config_dir)?,
                },
            },
        };
        let insecure = var("PHOENIX_PORTAINER_INSECURE").is_some_and(|value| value == "1" || value == "true");
        let fingerprint = var("PHOENIX_PORTAINER_FINGERPRINT").or_else(|| api.fingerprint.clone());
        let ca_file = var("PHOENIX_PORTAINER_CA_FILE").or_else(|| api.ca_file.clone());
        let tls = match (insecure, fingerprint, ca_file) {
            (true, _, _) => TlsTrust::Insecure,
            (false, Some(fingerprint), _) => TlsTrust::Fingerprint(parse_fingerprint(&fingerprint)?),
            (false, None, Some(ca_file)) => TlsTrust::CaFile(config_dir.join(ca_file)),
            (false, None, None) => TlsTrust::WebPki,
        };
        Ok(PortainerSettings {
            url,
            auth,
            admin,
            tls,
            request_timeout: Duration::from_secs(120),
        })
    }
}
