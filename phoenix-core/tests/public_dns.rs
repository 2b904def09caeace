//! The public DNS view of the homelab (`public_dns`): its names and zones, the resource that publishes
//! them when a server is named, and the validation of names, addresses and keys.

use phoenix_core::dns::public::{self, NameRecords};
use phoenix_core::{CheckOptions, SourceFile};
use phoenix_testing::{fixture, workspace};

/// The homelab's sources, its `public_dns` section replaced by `section`.
fn with_public_dns(section: &str) -> Vec<SourceFile> {
    fixture::sources(&workspace().join("examples/homelab"))
        .into_iter()
        .map(|source| {
            let text = source.text().replace(
                r#""public_dns": {
    "zones": ["lab.example.org"],
    "address": "203.0.113.10"
  }"#,
                &format!(r#""public_dns": {section}"#),
            );
            SourceFile::new(source.kind(), source.path().to_owned(), text)
        })
        .collect()
}

/// The code and pointer of every problem of the homelab with `section`, as `code at pointer`.
fn problems(section: &str) -> Vec<String> {
    let validation = phoenix_core::validate(with_public_dns(section), &CheckOptions::default());
    validation
        .problems()
        .iter()
        .map(|problem| format!("{} at {}", problem.code(), problem.pointer()))
        .collect()
}

#[test]
fn the_homelab_publishes_the_gateways_names_and_lists_them_without_a_server() {
    let estate = fixture::estate(
        fixture::sources(&workspace().join("examples/homelab")),
        &CheckOptions::default(),
    );
    let zones = public::public_view(&estate);
    assert_eq!(zones.len(), 1);
    let records = NameRecords {
        a: vec!["203.0.113.10".to_owned()],
        aaaa: Vec::new(),
        ttl: 300,
    };
    assert_eq!(
        zones[0].names.keys().collect::<Vec<_>>(),
        ["*.lab.example.org", "ca.lab.example.org", "lab.example.org"]
    );
    assert!(zones[0].names.values().all(|name| *name == records));
    // No server: nothing to converge, lines to create by hand.
    assert!(
        phoenix_core::resources(&estate)
            .iter()
            .all(|resource| !resource.address.to_string().starts_with("sync/dns/public"))
    );
    assert_eq!(
        public::zone_lines(&public::manual_zones(&estate)[0]),
        [
            "*.lab.example.org. 300 IN A 203.0.113.10",
            "ca.lab.example.org. 300 IN A 203.0.113.10",
            "lab.example.org. 300 IN A 203.0.113.10",
        ]
    );
}

#[test]
fn with_a_server_the_zone_is_a_resource_published_after_the_gateway() {
    let sources = with_public_dns(
        r#"{"zones": ["lab.example.org"], "address": "203.0.113.10", "server": {"address": "192.0.2.53", "tsig": {"name": "phoenix", "secret": {"env": "TSIG"}}}}"#,
    );
    let resources = fixture::resources(sources, &CheckOptions::default());
    let zone = resources
        .iter()
        .find(|resource| resource.address.to_string() == "sync/dns/public/lab.example.org")
        .expect("the zone's resource");
    assert_eq!(
        zone.after.iter().map(ToString::to_string).collect::<Vec<_>>(),
        ["sync/gateway"]
    );
    assert_eq!(
        zone.declared_fields().keys().collect::<Vec<_>>(),
        ["*.lab.example.org", "ca.lab.example.org", "lab.example.org"]
    );
}

#[test]
fn names_outside_the_zones_internal_names_and_private_addresses_are_reported() {
    let found = problems(
        r#"{"zones": ["lab.example.org"], "names": ["www.example.net", "Gateway.lab.example.org."], "address": "10.42.0.12"}"#,
    );
    assert_eq!(
        found,
        [
            "phoenix::dns::outside_zone at /public_dns/names/0",
            "phoenix::dns::internal_name at /public_dns/names/1",
            "phoenix::dns::private_address at /public_dns/address",
        ]
    );
    // Without an address, the gateway container's (private) one is taken, and said to be private.
    let found = problems(r#"{"zones": ["lab.example.org"]}"#);
    assert_eq!(found, ["phoenix::dns::private_address at /public_dns"]);
}

#[test]
fn a_server_needs_a_valid_address_and_a_base64_tsig_key() {
    let found = problems(
        r#"{"zones": ["lab.example.org"], "address": "203.0.113.10", "server": {"address": "ns1.example.org:99999"}}"#,
    );
    assert_eq!(
        found,
        [
            "phoenix::dns::no_tsig at /public_dns/server",
            "phoenix::dns::bad_server at /public_dns/server/address",
        ]
    );
    let found = problems(
        r#"{"zones": ["lab.example.org"], "address": "203.0.113.10", "server": {"address": "[2001:db8::53]:5353", "tsig": {"name": "phoenix", "secret": "not base64!"}}}"#,
    );
    assert_eq!(
        found,
        [
            "phoenix::dns::bad_tsig_secret at /public_dns/server/tsig/secret",
            "phoenix::config::plaintext_secret at /public_dns/server/tsig/secret",
        ]
    );
    let found = problems(
        r#"{"zones": ["lab.example.org"], "address": "203.0.113.10", "server": {"address": "127.0.0.1:5353", "tsig": {"name": "phoenix", "algorithm": "hmac-md5", "secret": {"env": "TSIG"}}}}"#,
    );
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(found[0].contains("algorithm"), "{found:?}");
}

#[test]
fn certificates_name_a_declared_issuer_and_names_dns_01_can_prove() {
    let section = r#"{"zones": ["lab.example.org"], "address": "203.0.113.10"},
  "certificates": {
    "issuers": {"public": {"directory": "https://acme.example.org/directory", "ca_container": 777}},
    "issue": [
      {"common_name": "lab.example.org", "sans": ["*.lab.example.org", "www.example.net"], "cert_path": "/etc/ssl/lab.crt", "key_path": "/etc/ssl/lab.key", "issuer": "public"},
      {"common_name": "LAB.example.org", "cert_path": "/etc/ssl/b.crt", "key_path": "/etc/ssl/b.key", "issuer": "internal"},
      {"common_name": "gw.lab.example.org", "cert_path": "/mnt/pve/ssl/gw.crt", "key_path": "/srv/gw.key", "guest": 101, "issuer": "public"},
      {"common_name": "ok.lab.example.org", "cert_path": "/tank/lxc-shared/gateway/sites/ok.crt", "key_path": "/tank/lxc-shared/gateway/logs/x/ok.key", "guest": 101, "issuer": "public"}
    ]
  }"#;
    assert_eq!(
        problems(section),
        [
            "phoenix::certificate::no_dns_server at /certificates/issuers/public",
            "phoenix::certificate::unknown_container at /certificates/issuers/public/ca_container",
            "phoenix::certificate::outside_zone at /certificates/issue/0/sans/1",
            "phoenix::certificate::duplicate at /certificates/issue/1/common_name",
            "phoenix::certificate::unknown_issuer at /certificates/issue/1/issuer",
            "phoenix::certificate::outside_mounts at /certificates/issue/2/cert_path",
            "phoenix::certificate::outside_mounts at /certificates/issue/2/key_path",
        ]
    );
    let valid = r#"{"zones": ["lab.example.org"], "address": "203.0.113.10", "server": {"address": "192.0.2.53", "tsig": {"name": "phoenix", "secret": {"env": "TSIG"}}}},
  "certificates": {
    "issuers": {"public": {"directory": "https://acme.example.org/directory"}},
    "issue": [{"common_name": "lab.example.org", "sans": ["*.lab.example.org"], "cert_path": "/etc/ssl/lab.crt", "key_path": "/etc/ssl/lab.key", "issuer": "public"}]
  }"#;
    let estate = fixture::estate(with_public_dns(valid), &CheckOptions::default());
    let resources = phoenix_core::resources(&estate);
    let certificate = resources
        .iter()
        .find(|resource| resource.address.to_string() == "sync/certificate/lab.example.org")
        .expect("the certificate's resource");
    // Published after the zone its challenges go to.
    assert_eq!(
        certificate
            .after
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>(),
        ["sync/dns/public/lab.example.org"]
    );
    assert_eq!(
        serde_json::Value::from_iter(certificate.declared_fields()),
        serde_json::json!({
            "current": true,
            "key_mode": "600",
            "names": ["*.lab.example.org", "lab.example.org"],
        })
    );
}

#[test]
fn http_01_proves_no_wildcard_and_needs_a_container_that_serves_it() {
    let section = r#"{"zones": ["lab.example.org"], "address": "203.0.113.10"},
  "certificates": {
    "issuers": {"web": {"directory": "https://acme.example.org/directory", "challenge": "http-01"}},
    "issue": [{"common_name": "lab.example.org", "sans": ["*.lab.example.org"], "cert_path": "/etc/ssl/lab.crt", "key_path": "/etc/ssl/lab.key", "issuer": "web"}]
  }"#;
    assert_eq!(
        problems(section),
        ["phoenix::certificate::wildcard_http01 at /certificates/issue/0/sans/0"]
    );
    // Without the gateway, nothing serves the answers.
    let sources: Vec<SourceFile> = with_public_dns(section)
        .into_iter()
        .map(|source| {
            let text = source.text();
            let text = match (text.find("\"gateway\": {\n"), text.find("\"public_dns\"")) {
                (Some(start), Some(end)) => format!("{}{}", &text[..start], &text[end..]),
                _ => text.to_owned(),
            };
            SourceFile::new(source.kind(), source.path().to_owned(), text)
        })
        .collect();
    let validation = phoenix_core::validate(sources, &CheckOptions::default());
    let codes: Vec<&str> = validation
        .problems()
        .iter()
        .map(|problem| problem.code())
        .collect();
    assert!(
        codes.contains(&"phoenix::certificate::no_http01_container"),
        "{codes:?}"
    );
}
