//! Certificates Phoenix issues by ACME and renews (`sync/certificate/<common name>`): what each one is
//! (its names, files, owner and mode, the command run after a renewal) and the server it comes from.
//!
//! A certificate is compared by its names, its key file's owner and mode, and whether it is *current*:
//! less than two thirds of its lifetime gone (Step-CA's certificates live 24 hours, so they are renewed
//! after 16). Issuing and renewing are `phoenix-edge`'s.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::Value;

use crate::config::hypervisor::{AcmeIssuer, CertificateSpec, DnsUpdateServer};
use crate::model::Estate;

/// The key's mode when the configuration names none.
pub const DEFAULT_KEY_MODE: &str = "600";

/// One certificate as Phoenix keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CertificateSync {
    /// Its common name, lower case.
    pub common_name: String,
    /// Every name it carries: the common name first, then the others, each once, lower case.
    pub names: Vec<String>,
    /// The certificate chain's path on the node.
    pub cert_path: String,
    /// The key's path on the node.
    pub key_path: String,
    /// `user[:group]` of both files; `None` leaves them root's.
    pub owner: Option<String>,
    /// The key's mode, three octal digits.
    pub key_mode: String,
    /// Run on the node after an issue or a renewal.
    pub post_renewal_command: Option<String>,
    /// The issuer's name.
    pub issuer: String,
    /// The issuer, when the configuration declares it (validation reports it otherwise).
    #[serde(skip)]
    pub server: Option<AcmeIssuer>,
    /// For dns-01: the public zones and the server their challenge records are published to.
    #[serde(skip)]
    pub challenge_dns: Option<(Vec<String>, DnsUpdateServer)>,
    /// For http-01: the container that serves the answers, and the directory they go in there.
    #[serde(skip)]
    pub challenge_web: Option<(u32, String)>,
}

impl CertificateSync {
    /// The fields a certificate is compared by.
    pub fn fields(&self) -> BTreeMap<String, Value> {
        let mut names = self.names.clone();
        names.sort();
        let mut fields = BTreeMap::from([
            ("names".to_owned(), Value::from(names)),
            ("current".to_owned(), Value::Bool(true)),
            ("key_mode".to_owned(), Value::from(self.key_mode.clone())),
        ]);
        if let Some(owner) = &self.owner {
            fields.insert("owner".to_owned(), Value::from(owner_with_group(owner)));
        }
        fields
    }
}

/// `user:group` for `user` alone (its own group, as `chown user:` gives it).
pub fn owner_with_group(owner: &str) -> String {
    match owner.split_once(':') {
        Some(_) => owner.to_owned(),
        None => format!("{owner}:{owner}"),
    }
}

/// The key mode of a declared `permissions`: three octal digits.
pub fn key_mode(permissions: Option<&str>) -> String {
    let mode = permissions.unwrap_or(DEFAULT_KEY_MODE);
    mode.strip_prefix('0')
        .filter(|rest| rest.len() == 3)
        .unwrap_or(mode)
        .to_owned()
}

/// The certificates the estate declares, with their issuers.
pub fn declared(estate: &Estate) -> Vec<CertificateSync> {
    let hypervisor = &estate.files().hypervisor;
    let Some(config) = &hypervisor.certificates else {
        return Vec::new();
    };
    let dns = hypervisor
        .public_dns
        .as_ref()
        .and_then(|public| Some((public.zones.clone(), public.server.clone()?)));
    config
        .issue
        .iter()
        .map(|spec| {
            let mut certificate = certificate(spec, config.issuers.get(&spec.issuer).cloned());
            certificate.challenge_dns = dns.clone();
            certificate.challenge_web = certificate.server.as_ref().and_then(|issuer| {
                let container = issuer
                    .http01_container
                    .or(hypervisor.gateway.as_ref().map(|gateway| gateway.container))?;
                Some((container, issuer.http01_root.clone()))
            });
            certificate
        })
        .collect()
}

fn certificate(spec: &CertificateSpec, server: Option<AcmeIssuer>) -> CertificateSync {
    let common_name = spec.common_name.trim().trim_end_matches('.').to_ascii_lowercase();
    let mut names = vec![common_name.clone()];
    for name in &spec.sans {
        let name = name.trim().trim_end_matches('.').to_ascii_lowercase();
        if !names.contains(&name) {
            names.push(name);
        }
    }
    CertificateSync {
        common_name,
        names,
        cert_path: spec.cert_path.clone(),
        key_path: spec.key_path.clone(),
        owner: spec.owner.clone(),
        key_mode: key_mode(spec.permissions.as_deref()),
        post_renewal_command: spec.post_renewal_command.clone(),
        issuer: spec.issuer.clone(),
        server,
        challenge_dns: None,
        challenge_web: None,
    }
}

/// Whether a certificate valid from `not_before` to `not_after` (seconds since the epoch) is current at
/// `now`: less than two thirds of its lifetime have passed.
pub fn is_current(not_before: i64, not_after: i64, now: i64) -> bool {
    let lifetime = (not_after - not_before).max(0);
    now < not_before + lifetime * 2 / 3
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_certificate_is_renewed_after_two_thirds_of_its_lifetime() {
        let day = 24 * 3600;
        assert!(is_current(0, day, 16 * 3600 - 1));
        assert!(!is_current(0, day, 16 * 3600));
        assert!(!is_current(0, day, 2 * day));
        assert!(
            !is_current(day, day, day),
            "a certificate without a lifetime is never current"
        );
    }

    #[test]
    fn modes_and_owners_are_written_the_way_the_node_reports_them() {
        assert_eq!(key_mode(None), "600");
        assert_eq!(key_mode(Some("0640")), "640");
        assert_eq!(key_mode(Some("644")), "644");
        assert_eq!(owner_with_group("nobody"), "nobody:nobody");
        assert_eq!(owner_with_group("root:www-data"), "root:www-data");
    }
}
