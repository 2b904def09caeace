//! `sync/certificate/<common name>`: certificates issued by ACME ([`instant_acme`]) and renewed when two
//! thirds of their lifetime have passed ([`phoenix_core::certificates`]).
//!
//! Observe reads the certificate file on the node (never the key: only its owner and mode) and takes its
//! names and validity from the certificate itself ([`inspect`]). Apply issues a new certificate when there
//! is none, its names changed or it is no longer current: names are proved by dns-01, a TXT record
//! `_acme-challenge.<name>` published through the public view's server and removed afterwards. The key
//! and chain are written beside their paths and renamed into place, the key with its owner and mode from
//! the start, then the post-renewal command runs on the node. A change of owner or mode alone is a
//! `chown`/`chmod`, not a new certificate. The ACME account's key is kept on the node
//! (`/var/lib/phoenix/acme/<issuer>.json`, 0600) and used again on every run.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use instant_acme::{
    Account, AccountCredentials, AuthorizationStatus, ChallengeType, Identifier, KeyAuthorization,
    NewAccount, NewOrder, OrderStatus, RetryPolicy,
};
use phoenix_core::certificates::{CertificateSync, is_current, owner_with_group};
use phoenix_core::config::common::Secret;
use phoenix_core::config::hypervisor::AcmeIssuer;
use phoenix_core::dns::public::zone_of;
use phoenix_core::{Change, ManagerError, Observed};
use phoenix_pve::guest::{GuestExec, failure};
use serde_json::Value;

use crate::public_dns::{self, wire};

const TIMEOUT: Duration = Duration::from_secs(60);
/// Where the ACME accounts' credentials are kept on the node.
pub const ACCOUNT_DIR: &str = "/var/lib/phoenix/acme";
/// The fields whose change needs a new certificate.
const REISSUE: [&str; 2] = ["names", "current"];

/// Prints `#cert`, then the certificate; `#key <user>:<group> <mode>` when the key is there.
const READ: &str = r#"if [ -f "$1" ]; then echo '#cert'; cat "$1"; echo; fi
if [ -f "$2" ]; then printf '#key %s\n' "$(stat -c '%U:%G %a' "$2")"; fi"#;

/// `$1` path, `$2` mode, `$3` owner (may be empty); standard input is the file. Written beside, owned and
/// moded before it is renamed into place, so a key is never readable by others for a moment.
const WRITE: &str = r#"set -e
dir=$(dirname "$1"); mkdir -p "$dir"
tmp="$dir/.$(basename "$1").phoenix-new"
umask 077; cat > "$tmp"
chmod "$2" "$tmp"
if [ -n "$3" ]; then chown "$3" "$tmp"; fi
mv -f "$tmp" "$1""#;

/// `$1` key, `$2` its mode, `$3` owner of both files (may be empty), `$4` certificate.
const SET_MODE: &str = r#"set -e; chmod "$2" "$1"; if [ -n "$3" ]; then chown "$3" "$1" "$4"; fi"#;

/// What a certificate says about itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inspected {
    /// Its DNS names (subject alternative names), lower case.
    pub names: Vec<String>,
    /// Valid from, in seconds since the epoch.
    pub not_before: i64,
    /// Valid until, in seconds since the epoch.
    pub not_after: i64,
}

/// The compared fields of the certificate and key on the node, `None` when there is no certificate.
pub async fn observe(
    node: &dyn GuestExec,
    certificate: &CertificateSync,
    now: SystemTime,
) -> Result<Option<Observed>, ManagerError> {
    let output = node
        .exec(
            &script(READ, &[&certificate.cert_path, &certificate.key_path]),
            None,
            &BTreeMap::new(),
            TIMEOUT,
        )
        .await?;
    if !output.success() {
        return Err(failure(
            node,
            &format!("reading {}", certificate.cert_path),
            &output,
        ));
    }
    let Some((_, rest)) = output.stdout.split_once("#cert\n") else {
        return Ok(None);
    };
    let (pem, key) = match rest.split_once("#key ") {
        Some((pem, key)) => (pem, Some(key.trim())),
        None => (rest, None),
    };
    let mut fields = BTreeMap::new();
    let current = match inspect(pem) {
        Ok(inspected) => {
            let mut names = inspected.names.clone();
            names.sort();
            fields.insert("names".to_owned(), Value::from(names));
            is_current(inspected.not_before, inspected.not_after, seconds(now)) && key.is_some()
        }
        // Not a certificate Phoenix can read: replaced.
        Err(_) => false,
    };
    fields.insert("current".to_owned(), Value::Bool(current));
    if let Some((owner, mode)) = key.and_then(|key| key.split_once(' ')) {
        fields.insert("key_mode".to_owned(), Value::from(mode.trim()));
        if certificate.owner.is_some() {
            fields.insert("owner".to_owned(), Value::from(owner));
        }
    }
    Ok(Some(Observed::new(fields)))
}

/// What an ACME issue needs beyond the certificate: the node, the account directory on it, how to read
/// secrets and files of the configuration directory.
pub struct Issuing<'a> {
    /// The node the files and the account are on.
    pub node: &'a dyn GuestExec,
    /// Resolves a TSIG secret.
    pub secret: &'a (dyn Fn(&Secret) -> Result<String, String> + Sync),
    /// The configuration directory, for issuers' `ca_file`.
    pub config_dir: &'a Path,
    /// For http-01: the channel into the container that serves the answers.
    pub web: Option<Arc<dyn GuestExec>>,
    /// The channel into the issuer's CA container (`ca_container`), whose root is read and pinned.
    pub ca: Option<Arc<dyn GuestExec>>,
}

/// Brings the certificate to what `change` says: a new one when its names or currency changed (or there
/// is none), else the key's owner and mode.
pub async fn apply(
    context: &Issuing<'_>,
    certificate: &CertificateSync,
    change: &Change,
) -> Result<(), ManagerError> {
    let reissue = change.fields.iter().any(|field| {
        REISSUE.contains(&field.field.as_str()) || field.old.is_none() && field.field == "key_mode"
    });
    if !reissue {
        let owner = certificate
            .owner
            .as_deref()
            .map(owner_with_group)
            .unwrap_or_default();
        let argv = script(
            SET_MODE,
            &[
                &certificate.key_path,
                &certificate.key_mode,
                &owner,
                &certificate.cert_path,
            ],
        );
        let output = context.node.exec(&argv, None, &BTreeMap::new(), TIMEOUT).await?;
        if !output.success() {
            return Err(failure(
                context.node,
                &format!("setting the mode of {}", certificate.key_path),
                &output,
            ));
        }
        return Ok(());
    }
    let (chain, key) = issue(context, certificate).await?;
    let owner = certificate
        .owner
        .as_deref()
        .map(owner_with_group)
        .unwrap_or_default();
    write(
        context.node,
        &certificate.key_path,
        &certificate.key_mode,
        &owner,
        key.as_bytes(),
    )
    .await?;
    write(
        context.node,
        &certificate.cert_path,
        "644",
        &owner,
        chain.as_bytes(),
    )
    .await?;
    tracing::info!(certificate = %certificate.common_name, issuer = %certificate.issuer, "issued a certificate");
    if let Some(command) = &certificate.post_renewal_command {
        let argv = ["/bin/sh", "-c", command].map(str::to_owned).to_vec();
        let output = context.node.exec(&argv, None, &BTreeMap::new(), TIMEOUT).await?;
        if !output.success() {
            let error = failure(context.node, "the post-renewal command", &output);
            return Err(ManagerError::Failed {
                message: format!(
                    "certificate {} was issued and written to {}, but its post-renewal command failed",
                    certificate.common_name, certificate.cert_path
                ),
                details: Some(error.to_string()),
            });
        }
    }
    Ok(())
}

async fn write(
    node: &dyn GuestExec,
    path: &str,
    mode: &str,
    owner: &str,
    content: &[u8],
) -> Result<(), ManagerError> {
    let output = node
        .exec(
            &script(WRITE, &[path, mode, owner]),
            Some(content),
            &BTreeMap::new(),
            TIMEOUT,
        )
        .await?;
    if output.success() {
        Ok(())
    } else {
        Err(failure(node, &format!("writing {path}"), &output))
    }
}

/// A new key and certificate chain (both PEM) for `certificate`, from its issuer.
async fn issue(
    context: &Issuing<'_>,
    certificate: &CertificateSync,
) -> Result<(String, String), ManagerError> {
    let issuer = certificate.server.as_ref().ok_or_else(|| {
        ManagerError::failed(format!(
            "certificate {} names issuer `{}`, which is not declared",
            certificate.common_name, certificate.issuer
        ))
    })?;
    let prover = prover(context, certificate, issuer)?;
    let account = account(context, &certificate.issuer, issuer).await?;
    let identifiers: Vec<Identifier> = certificate.names.iter().cloned().map(Identifier::Dns).collect();
    let acme = |error| acme_error(&issuer.directory, &certificate.common_name, error);
    let mut order = account
        .new_order(&NewOrder::new(&identifiers))
        .await
        .map_err(acme)?;
    let mut published: Vec<Answer> = Vec::new();
    let proved = async {
        let mut authorizations = order.authorizations();
        while let Some(authorization) = authorizations.next().await {
            let mut authorization = authorization.map_err(acme)?;
            if authorization.status == AuthorizationStatus::Valid {
                continue;
            }
            let kind = prover.kind();
            let mut challenge = authorization.challenge(kind.clone()).ok_or_else(|| {
                ManagerError::failed(format!("{} offers no {kind:?} challenge", issuer.directory))
            })?;
            let Identifier::Dns(name) = challenge.identifier().identifier else {
                return Err(ManagerError::failed(format!(
                    "{} asked to prove a name that is no DNS name",
                    issuer.directory
                )));
            };
            let name = name.trim_start_matches("*.").to_owned();
            let key_authorization = challenge.key_authorization();
            let answer = prover
                .publish(&name, &challenge.token, &key_authorization)
                .await?;
            published.push(answer);
            challenge.set_ready().await.map_err(acme)?;
        }
        Ok::<_, ManagerError>(())
    }
    .await;
    let result = match proved {
        Ok(()) => finish(&mut order, issuer, certificate).await,
        Err(error) => Err(error),
    };
    // The answers go, whatever came of the order.
    for answer in &published {
        prover.withdraw(answer).await;
    }
    result
}

/// Where a certificate's challenge answers go: a TXT record through the public view's server (dns-01), or a
/// file the challenge location serves (http-01).
enum Prover<'a> {
    Dns {
        zones: &'a [String],
        server: wire::Server,
    },
    Web {
        exec: Arc<dyn GuestExec>,
        root: &'a str,
    },
}

/// One answer put in place, to take away again.
struct Answer {
    /// The zone (dns-01) or the file (http-01).
    place: String,
    /// The record's name (dns-01).
    record: String,
    /// The record's value (dns-01).
    value: String,
}

fn prover<'a>(
    context: &Issuing<'_>,
    certificate: &'a CertificateSync,
    issuer: &AcmeIssuer,
) -> Result<Prover<'a>, ManagerError> {
    if issuer.challenge == "http-01" {
        let (_, root) = certificate.challenge_web.as_ref().ok_or_else(|| {
            ManagerError::failed(format!(
                "certificate {}: http-01 needs a container that serves the challenges (the gateway)",
                certificate.common_name
            ))
        })?;
        let exec = context.web.clone().ok_or_else(|| {
            ManagerError::failed("the container that serves http-01 challenges cannot be reached")
        })?;
        return Ok(Prover::Web { exec, root });
    }
    let (zones, server) = certificate.challenge_dns.as_ref().ok_or_else(|| {
        ManagerError::failed(format!(
            "certificate {}: dns-01 needs `public_dns.server` to publish the challenge records",
            certificate.common_name
        ))
    })?;
    let server = public_dns::server_of(server, context.secret).map_err(ManagerError::failed)?;
    Ok(Prover::Dns { zones, server })
}

impl Prover<'_> {
    fn kind(&self) -> ChallengeType {
        match self {
            Prover::Dns { .. } => ChallengeType::Dns01,
            Prover::Web { .. } => ChallengeType::Http01,
        }
    }

    async fn publish(
        &self,
        name: &str,
        token: &str,
        key_authorization: &KeyAuthorization,
    ) -> Result<Answer, ManagerError> {
        match self {
            Prover::Dns { zones, server } => {
                let zone = zone_of(name, zones).ok_or_else(|| {
                    ManagerError::failed(format!(
                        "`{name}` is in none of the public zones, so dns-01 cannot prove it"
                    ))
                })?;
                let record = format!("_acme-challenge.{name}");
                let value = key_authorization.dns_value();
                let entry = wire::Entry::add(&record, 60, &wire::Data::Txt(value.clone()));
                server.update(zone, &[], &[entry]).await.map_err(|error| {
                    ManagerError::failed(format!("publishing the dns-01 record of {name}: {error}"))
                })?;
                Ok(Answer {
                    place: zone.clone(),
                    record,
                    value,
                })
            }
            Prover::Web { exec, root } => {
                if token.is_empty()
                    || !token
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
                {
                    return Err(ManagerError::failed(format!(
                        "the http-01 token for {name} is not a file name"
                    )));
                }
                let path = format!(
                    "{}/.well-known/acme-challenge/{token}",
                    root.trim_end_matches('/')
                );
                write(
                    exec.as_ref(),
                    &path,
                    "644",
                    "",
                    key_authorization.as_str().as_bytes(),
                )
                .await?;
                Ok(Answer {
                    place: path,
                    record: String::new(),
                    value: String::new(),
                })
            }
        }
    }

    async fn withdraw(&self, answer: &Answer) {
        match self {
            Prover::Dns { server, .. } => {
                let entry = wire::Entry::delete(&answer.record, &wire::Data::Txt(answer.value.clone()));
                if let Err(error) = server.update(&answer.place, &[], &[entry]).await {
                    tracing::warn!(record = %answer.record, %error, "could not remove a dns-01 challenge record");
                }
            }
            Prover::Web { exec, .. } => {
                let argv = script("rm -f \"$1\"", &[&answer.place]);
                if let Err(error) = exec.exec(&argv, None, &BTreeMap::new(), TIMEOUT).await {
                    tracing::warn!(file = %answer.place, %error, "could not remove an http-01 answer");
                }
            }
        }
    }
}

/// Waits for the order's names to be proved, then finalises it: the chain and the new key.
async fn finish(
    order: &mut instant_acme::Order,
    issuer: &AcmeIssuer,
    certificate: &CertificateSync,
) -> Result<(String, String), ManagerError> {
    let retry = RetryPolicy::new().timeout(Duration::from_secs(120));
    let what = |error| acme_error(&issuer.directory, &certificate.common_name, error);
    let status = order.poll_ready(&retry).await.map_err(what)?;
    if status != OrderStatus::Ready {
        let mut reasons = Vec::new();
        let mut authorizations = order.authorizations();
        while let Some(Ok(authorization)) = authorizations.next().await {
            for challenge in &authorization.challenges {
                if let Some(problem) = &challenge.error {
                    reasons.push(problem.to_string());
                }
            }
        }
        if let Some(problem) = &order.state().error {
            reasons.push(problem.to_string());
        }
        return Err(ManagerError::Failed {
            message: format!(
                "{} refused to issue {}: the order is {status:?}",
                issuer.directory, certificate.common_name
            ),
            details: Some(reasons.join("\n")),
        });
    }
    let key = order.finalize().await.map_err(what)?;
    let chain = order.poll_certificate(&retry).await.map_err(what)?;
    Ok((chain, key))
}

/// An ACME failure in words: the server's problem document when it refused, else what went wrong.
fn acme_error(directory: &str, name: &str, error: instant_acme::Error) -> ManagerError {
    match error {
        instant_acme::Error::Api(problem) => {
            ManagerError::failed(format!("{directory} refused to issue {name}: {problem}"))
        }
        other => ManagerError::failed(format!("issuing {name} from {directory}: {other}")),
    }
}

/// The issuer's account: the credentials kept on the node, or a new account whose credentials are kept.
async fn account(context: &Issuing<'_>, name: &str, issuer: &AcmeIssuer) -> Result<Account, ManagerError> {
    let pinned = match issuer.ca_container {
        Some(_) => Some(pinned_root(context, name, issuer).await?),
        None => None,
    };
    let builder = || match (&pinned, &issuer.ca_file) {
        (Some(root), _) => Account::builder_with_root(root),
        (None, Some(file)) => Account::builder_with_root(context.config_dir.join(file)),
        (None, None) => Account::builder(),
    };
    let failed = |error: instant_acme::Error| {
        ManagerError::failed(format!("ACME account at {}: {error}", issuer.directory))
    };
    let path = format!("{ACCOUNT_DIR}/{name}.json");
    let read = script("test -f \"$1\" || exit 100; cat \"$1\"", &[&path]);
    let output = context.node.exec(&read, None, &BTreeMap::new(), TIMEOUT).await?;
    match output.status {
        Some(0) => {
            if let Ok(credentials) = serde_json::from_str::<AccountCredentials>(&output.stdout)
                && credentials_directory(&output.stdout).as_deref() == Some(issuer.directory.as_str())
            {
                return builder()
                    .map_err(failed)?
                    .from_credentials(credentials)
                    .await
                    .map_err(failed);
            }
        }
        Some(100) => {}
        _ => {
            // Whatever it printed may be part of the account's key: only its errors are shown.
            let mut output = output;
            output.stdout.clear();
            return Err(failure(context.node, &format!("reading {path}"), &output));
        }
    }
    let contact: Vec<&str> = issuer.contact.iter().map(String::as_str).collect();
    let new = NewAccount {
        contact: &contact,
        terms_of_service_agreed: true,
        only_return_existing: false,
    };
    let (account, credentials) = builder()
        .map_err(failed)?
        .create(&new, issuer.directory.clone(), None)
        .await
        .map_err(failed)?;
    let text =
        serde_json::to_string(&credentials).map_err(|error| ManagerError::failed(error.to_string()))?;
    write(context.node, &path, "600", "", text.as_bytes()).await?;
    Ok(account)
}

/// The root of the issuer's CA, read from its container and checked against the SHA-256 pinned on the
/// node the first time (`<ACCOUNT_DIR>/<issuer>.root-sha256`): a CA initialised again has a new root, which
/// would invalidate every certificate it issued, so it is refused rather than trusted. Written to a file
/// here for the ACME client to trust.
async fn pinned_root(
    context: &Issuing<'_>,
    name: &str,
    issuer: &AcmeIssuer,
) -> Result<std::path::PathBuf, ManagerError> {
    let ca = context
        .ca
        .as_ref()
        .ok_or_else(|| ManagerError::failed("the CA's container cannot be reached"))?;
    let read = script("cat \"$1\"", &[&issuer.ca_path]);
    let output = ca.exec(&read, None, &BTreeMap::new(), TIMEOUT).await?;
    if !output.success() {
        return Err(failure(
            ca.as_ref(),
            &format!("reading the CA's root {}", issuer.ca_path),
            &output,
        ));
    }
    let pem = output.stdout;
    let der = pem_body(&pem)
        .map_err(|error| ManagerError::failed(format!("{} in {}: {error}", issuer.ca_path, ca.describe())))?;
    let fingerprint: String = ring::digest::digest(&ring::digest::SHA256, &der)
        .as_ref()
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect();
    let pin = format!("{ACCOUNT_DIR}/{name}.root-sha256");
    let read = script("test -f \"$1\" || exit 100; cat \"$1\"", &[&pin]);
    let output = context.node.exec(&read, None, &BTreeMap::new(), TIMEOUT).await?;
    match output.status {
        Some(0) if output.stdout.trim() == fingerprint => {}
        Some(0) => {
            return Err(ManagerError::Failed {
                message: format!(
                    "the root of issuer `{name}`'s CA changed since Phoenix pinned it; nothing was issued"
                ),
                details: Some(format!(
                    "pinned sha256 {}, now {fingerprint} in {}: a CA initialised again invalidates every certificate \
                     it issued. If the new root is intended, remove {pin} on the node",
                    output.stdout.trim(),
                    ca.describe()
                )),
            });
        }
        Some(100) => {
            write(context.node, &pin, "600", "", fingerprint.as_bytes()).await?;
            tracing::info!(issuer = %name, %fingerprint, "pinned the CA's root");
        }
        _ => return Err(failure(context.node, &format!("reading {pin}"), &output)),
    }
    let path = std::env::temp_dir().join(format!("phoenix-{name}-root-{fingerprint}.pem"));
    std::fs::write(&path, pem)
        .map_err(|error| ManagerError::failed(format!("writing {}: {error}", path.display())))?;
    Ok(path)
}

/// The directory a stored account belongs to: another server's account is not used.
fn credentials_directory(text: &str) -> Option<String> {
    serde_json::from_str::<Value>(text)
        .ok()?
        .get("directory")?
        .as_str()
        .map(str::to_owned)
}

fn seconds(time: SystemTime) -> i64 {
    time.duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_secs() as i64)
}

/// `sh -c SCRIPT sh ARGS...`: paths and modes are arguments, never part of the script.
fn script(body: &str, args: &[&str]) -> Vec<String> {
    let mut argv: Vec<String> = ["/bin/sh", "-c", body, "sh"].map(str::to_owned).to_vec();
    argv.extend(args.iter().map(|arg| (*arg).to_owned()));
    argv
}

/// The names and validity of the first certificate in `pem`.
pub fn inspect(pem: &str) -> Result<Inspected, String> {
    let der = pem_body(pem)?;
    der::certificate(&der).ok_or_else(|| "not an X.509 certificate".to_owned())
}

/// The DER of the first certificate in `pem`.
fn pem_body(pem: &str) -> Result<Vec<u8>, String> {
    let body: String = pem
        .split("-----BEGIN CERTIFICATE-----")
        .nth(1)
        .and_then(|rest| rest.split("-----END CERTIFICATE-----").next())
        .ok_or("no PEM certificate")?
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect();
    base64::engine::general_purpose::STANDARD
        .decode(body)
        .map_err(|_| "the PEM certificate is not base64".to_owned())
}

/// Just enough DER (X.690) to read a certificate's validity and subject alternative names.
mod der {
    use super::Inspected;

    const SEQUENCE: u8 = 0x30;
    const EXTENSIONS: u8 = 0xa3;
    const OID: u8 = 0x06;
    const OCTET_STRING: u8 = 0x04;
    const DNS_NAME: u8 = 0x82;
    /// 2.5.29.17, subjectAltName.
    const SUBJECT_ALT_NAME: &[u8] = &[0x55, 0x1d, 0x11];

    /// One element: its tag, its content, and what follows it.
    fn element(bytes: &[u8]) -> Option<(u8, &[u8], &[u8])> {
        let (&tag, rest) = bytes.split_first()?;
        let (&first, rest) = rest.split_first()?;
        let (length, rest) = if first < 0x80 {
            (first as usize, rest)
        } else {
            let count = (first & 0x7f) as usize;
            if count == 0 || count > 4 || rest.len() < count {
                return None;
            }
            let length = rest[..count]
                .iter()
                .fold(0usize, |acc, byte| (acc << 8) | *byte as usize);
            (length, &rest[count..])
        };
        (rest.len() >= length).then(|| (tag, &rest[..length], &rest[length..]))
    }

    /// The elements of a constructed element's content.
    fn children(mut content: &[u8]) -> Option<Vec<(u8, &[u8])>> {
        let mut out = Vec::new();
        while !content.is_empty() {
            let (tag, inner, rest) = element(content)?;
            out.push((tag, inner));
            content = rest;
        }
        Some(out)
    }

    pub(super) fn certificate(der: &[u8]) -> Option<Inspected> {
        let (SEQUENCE, certificate, _) = element(der)? else {
            return None;
        };
        let (SEQUENCE, tbs, _) = element(certificate)? else {
            return None;
        };
        let fields = children(tbs)?;
        // [0] version is optional; validity is the fourth field after it.
        let offset = usize::from(fields.first()?.0 == 0xa0);
        let (SEQUENCE, validity) = *fields.get(offset + 3)? else {
            return None;
        };
        let times = children(validity)?;
        let not_before = time(times.first()?)?;
        let not_after = time(times.get(1)?)?;
        let mut names = Vec::new();
        if let Some((_, extensions)) = fields.iter().find(|(tag, _)| *tag == EXTENSIONS) {
            let (SEQUENCE, list, _) = element(extensions)? else {
                return None;
            };
            for (_, extension) in children(list)? {
                let parts = children(extension)?;
                if parts.first() != Some(&(OID, SUBJECT_ALT_NAME)) {
                    continue;
                }
                let (OCTET_STRING, value) = *parts.last()? else {
                    return None;
                };
                let (SEQUENCE, general_names, _) = element(value)? else {
                    return None;
                };
                for (tag, name) in children(general_names)? {
                    if tag == DNS_NAME {
                        names.push(String::from_utf8_lossy(name).to_ascii_lowercase());
                    }
                }
            }
        }
        Some(Inspected {
            names,
            not_before,
            not_after,
        })
    }

    /// UTCTime (`YYMMDDHHMMSSZ`) or GeneralizedTime (`YYYYMMDDHHMMSSZ`), in seconds since the epoch.
    fn time(&(tag, text): &(u8, &[u8])) -> Option<i64> {
        let text = std::str::from_utf8(text).ok()?.strip_suffix('Z')?;
        let (year, rest) = match tag {
            0x17 => {
                let year: i64 = text.get(..2)?.parse().ok()?;
                (if year < 50 { 2000 + year } else { 1900 + year }, text.get(2..)?)
            }
            0x18 => (text.get(..4)?.parse().ok()?, text.get(4..)?),
            _ => return None,
        };
        let number = |at: usize| -> Option<i64> { rest.get(at..at + 2)?.parse().ok() };
        let (month, day) = (number(0)?, number(2)?);
        let (hour, minute, second) = (number(4)?, number(6)?, number(8)?);
        Some(days_from_civil(year, month, day) * 86_400 + hour * 3600 + minute * 60 + second)
    }

    /// Days since 1970-01-01 of a proleptic Gregorian date.
    fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
        let year = if month <= 2 { year - 1 } else { year };
        let era = year.div_euclid(400);
        let of_era = year - era * 400;
        let month_index = (month + 9) % 12;
        let of_year = (153 * month_index + 2) / 5 + day - 1;
        let of_cycle = of_era * 365 + of_era / 4 - of_era / 100 + of_year;
        era * 146_097 + of_cycle - 719_468
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn dates_count_days_as_the_calendar_does() {
            assert_eq!(days_from_civil(1970, 1, 1), 0);
            assert_eq!(days_from_civil(2000, 3, 1), 11_017);
            assert_eq!(days_from_civil(2026, 12, 4), 20_791);
            assert_eq!(
                time(&(0x17, b"261204213000Z")),
                Some(20_791 * 86_400 + 21 * 3600 + 30 * 60)
            );
            assert_eq!(
                time(&(0x18, b"20500101000000Z")),
                Some(days_from_civil(2050, 1, 1) * 86_400)
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A certificate made by `openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -days 1
    /// -subj /CN=gw.lab.example.org -addext subjectAltName=DNS:gw.lab.example.org,DNS:*.lab.example.org`.
    const CERTIFICATE: &str = "-----BEGIN CERTIFICATE-----
MIIBxDCCAWmgAwIBAgIUV43+szT8vYlap4zPfirUDHuvNv8wCgYIKoZIzj0EAwIw
HTEbMBkGA1UEAwwSZ3cubGFiLmV4YW1wbGUub3JnMB4XDTI2MTIwNDIxNTUwMFoX
DTI2MTIwNTIxNTUwMFowHTEbMBkGA1UEAwwSZ3cubGFiLmV4YW1wbGUub3JnMFkw
EwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAERxd9eNzXmY2sokqMvjlS7oC3mipYwwFV
gNND1GJGakts+jAVHE/he6hjDiEtU1ghIsyf0Mpr3w1qWsTe6jOlL6OBhjCBgzAd
BgNVHQ4EFgQUrk3lGoI42Tq798cm7ymaNOz0F5UwHwYDVR0jBBgwFoAUrk3lGoI4
2Tq798cm7ymaNOz0F5UwDwYDVR0TAQH/BAUwAwEB/zAwBgNVHREEKTAnghJndy5s
YWIuZXhhbXBsZS5vcmeCESoubGFiLmV4YW1wbGUub3JnMAoGCCqGSM49BAMCA0kA
MEYCIQDKQ1dlR4LXQK6zEsTi3CpuDBNVepEVTk8CSGIymp03PAIhAL+1LFCkPWBE
+opYC0ZJr18yKve7VMccTh68JV5DUCjx
-----END CERTIFICATE-----
";

    #[test]
    fn a_certificate_says_its_names_and_validity() {
        let inspected = inspect(CERTIFICATE).expect("a certificate");
        assert_eq!(inspected.names, ["gw.lab.example.org", "*.lab.example.org"]);
        // `openssl x509 -noout -startdate`: Dec  4 21:55:00 2026 GMT.
        assert_eq!(inspected.not_before, 1_796_421_300);
        assert_eq!(inspected.not_after - inspected.not_before, 86_400);
        assert!(inspect("not a certificate").is_err());
    }
}
