//! Data-driven tests of the validation pipeline: a known-good estate, one edit, the problems expected.
//!
//! Each case edits the fixture in `fixtures/estate/` by replacing one exact piece of text (or removing a
//! file) and lists every problem validation must report, as (code, JSON pointer, line). Lines are those of
//! the edited file, so a case also proves the problem is placed where the operator will look.

use std::path::Path;

use phoenix_core::lint::checks::compose::ComposeFile;
use phoenix_core::{CheckOptions, FileKind, SourceFile, validate};
use phoenix_testing::fixture;

use FileKind::{Hypervisor, Lxc, Stacks, Vm};

enum Edit {
    Replace(FileKind, &'static str, &'static str),
    Remove(FileKind),
}

use Edit::{Remove, Replace};

fn fixture_dir() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/estate"))
}

fn load(edits: &[Edit]) -> Vec<SourceFile> {
    fixture::every_source_edited(fixture_dir(), |kind, mut text| {
        if edits
            .iter()
            .any(|edit| matches!(edit, Remove(removed) if *removed == kind))
        {
            return None;
        }
        for edit in edits {
            if let Replace(edited, find, replace) = edit
                && *edited == kind
            {
                assert_eq!(
                    text.matches(find).count(),
                    1,
                    "`{find}` must occur exactly once in {kind:?}"
                );
                text = text.replacen(find, replace, 1);
            }
        }
        Some(text)
    })
}

#[track_caller]
fn check(edits: &[Edit], expected: &[(&str, &str, usize)]) {
    check_with(edits, &CheckOptions::default(), expected);
}

fn check_with(edits: &[Edit], options: &CheckOptions, expected: &[(&str, &str, usize)]) {
    let validation = validate(load(edits), options);
    let actual: Vec<(&str, &str, usize)> = validation
        .problems()
        .iter()
        .map(|problem| {
            (
                problem.code(),
                problem.pointer(),
                problem.line_column().map_or(0, |(line, _)| line),
            )
        })
        .collect();
    assert_eq!(actual, expected, "\nproblems: {:#?}", validation.problems());
}

#[test]
fn the_fixture_is_valid() {
    check(&[], &[]);
}

#[test]
fn unknown_key_with_suggestion() {
    check(
        &[Replace(Lxc, r#""memory_mb": 1024"#, r#""memroy_mb": 1024"#)],
        &[("phoenix::schema::unknown_key", "/lxc_configs/101/memroy_mb", 14)],
    );
}

#[test]
fn missing_required_key() {
    check(
        &[Replace(
            Lxc,
            "\"102\": {\n      \"name\": \"proxy\",",
            "\"102\": {",
        )],
        &[("phoenix::schema::missing_key", "/lxc_configs/102", 27)],
    );
}

#[test]
fn wrong_type() {
    check(
        &[Replace(Vm, r#""cores": 2"#, r#""cores": "2""#)],
        &[("phoenix::schema::wrong_type", "/vm_defaults/cores", 2)],
    );
}

#[test]
fn value_outside_an_enum() {
    check(
        &[Replace(
            Lxc,
            r#""type": "in", "action": "ACCEPT", "proto": "tcp""#,
            r#""type": "inn", "action": "ACCEPT", "proto": "tcp""#,
        )],
        &[(
            "phoenix::schema::not_allowed",
            "/lxc_configs/101/firewall/rules/0/type",
            22,
        )],
    );
}

#[test]
fn a_host_user_name_useradd_would_refuse() {
    check(
        &[Replace(
            Hypervisor,
            r#""domain_name": "test.internal","#,
            r#""domain_name": "test.internal", "users": [{ "username": "Ops Admin" }],"#,
        )],
        &[("phoenix::schema::bad_format", "/users/0/username", 8)],
    );
}

#[test]
fn value_not_matching_a_pattern() {
    check(
        &[Replace(
            Lxc,
            "\"102\": {\n      \"name\": \"proxy\",",
            "\"102\": {\n      \"name\": \"proxy\", \"gpu_assignment\": \"all\",",
        )],
        &[(
            "phoenix::schema::bad_format",
            "/lxc_configs/102/gpu_assignment",
            28,
        )],
    );
}

#[test]
fn invalid_ctid_key() {
    check(
        &[Replace(Lxc, r#""102": {"#, r#""10x": {"#)],
        &[("phoenix::schema::invalid_key", "/lxc_configs/10x", 27)],
    );
}

#[test]
fn trailing_comma() {
    check(
        &[Replace(
            Stacks,
            r#"{ "env": "WEB_DB_PASSWORD" } }"#,
            r#"{ "env": "WEB_DB_PASSWORD" } },"#,
        )],
        &[("phoenix::json::syntax", "", 9)],
    );
}

#[test]
fn duplicate_key() {
    check(
        &[Replace(
            Lxc,
            r#""memory_mb": 1024,"#,
            r#""memory_mb": 1024, "memory_mb": 2048,"#,
        )],
        &[("phoenix::json::duplicate_key", "/lxc_configs/101/memory_mb", 14)],
    );
}

#[test]
fn connection_secret_must_be_a_reference() {
    check(
        &[Replace(
            Hypervisor,
            r#""token_secret": { "env": "PHOENIX_PVE_TOKEN_SECRET" }"#,
            r#""token_secret": "s3cret""#,
        )],
        &[("phoenix::schema::no_variant", "/proxmox/token_secret", 6)],
    );
}

#[test]
fn plaintext_secret_is_a_warning() {
    check(
        &[Replace(
            Hypervisor,
            r#""admin_password": { "env": "PORTAINER_PASSWORD" }"#,
            r#""admin_password": "hunter2""#,
        )],
        &[(
            "phoenix::config::plaintext_secret",
            "/portainer_api/admin_password",
            28,
        )],
    );
}

#[test]
fn sensitive_stack_variable_in_plaintext() {
    check(
        &[Replace(Stacks, r#"{ "env": "WEB_DB_PASSWORD" }"#, r#""hunter2""#)],
        &[(
            "phoenix::config::plaintext_secret",
            "/docker_stacks/web/environments/production/variables/1/value",
            9,
        )],
    );
}

#[test]
fn legacy_keys_are_warnings() {
    check(
        &[Replace(
            Hypervisor,
            r#""domain_name": "test.internal","#,
            r#""domain_name": "test.internal", "behavior": { "debug_mode": true },"#,
        )],
        &[("phoenix::config::legacy_key", "/behavior", 8)],
    );
}

#[test]
fn legacy_firewall_under_shared_volumes() {
    check(
        &[Replace(
            Hypervisor,
            r#""domain_name": "test.internal","#,
            r#""domain_name": "test.internal", "shared_volumes": { "firewall": { "enabled": true, "global_firewall_rules": [{ "type": "in", "action": "ACCEPT", "proto": "tcp", "port": "22,22000:21000" }] } },"#,
        )],
        &[
            ("phoenix::config::legacy_key", "/shared_volumes/firewall", 8),
            (
                "phoenix::firewall::bad_port",
                "/shared_volumes/firewall/global_firewall_rules/0/port",
                8,
            ),
        ],
    );
}

#[test]
fn missing_file() {
    check(&[Remove(Vm)], &[("phoenix::config::missing_file", "", 0)]);
}

#[test]
fn absent_stacks_file_is_fine_without_stacks() {
    check(
        &[
            Remove(Stacks),
            Replace(Vm, r#""docker_stacks": ["web"]"#, r#""docker_stacks": []"#),
        ],
        &[],
    );
}

#[test]
fn duplicate_id_across_kinds() {
    check(
        &[Replace(Vm, r#""vmid": 1002"#, r#""vmid": 101"#)],
        &[("phoenix::id::duplicate", "/vms/2/vmid", 22)],
    );
}

#[test]
fn unknown_dependency() {
    check(
        &[Replace(
            Lxc,
            r#""dependencies": ["101"]"#,
            r#""dependencies": ["109"]"#,
        )],
        &[(
            "phoenix::reference::unknown_guest",
            "/lxc_configs/102/dependencies/0",
            30,
        )],
    );
}

#[test]
fn unknown_clone_source() {
    check(
        &[Replace(
            Vm,
            r#""name": "apps",
      "clone_from_vmid": 9000"#,
            r#""name": "apps",
      "clone_from_vmid": 9001"#,
        )],
        &[("phoenix::reference::unknown_guest", "/vms/2/clone_from_vmid", 24)],
    );
}

#[test]
fn dependency_cycle_across_kinds_is_named() {
    let edit = Replace(
        Lxc,
        r#""clone_from_ctid": "900",
      "memory_mb""#,
        r#""clone_from_ctid": "900", "dependencies": ["1002"],
      "memory_mb""#,
    );
    check(
        &[edit],
        &[("phoenix::graph::cycle", "/lxc_configs/101/dependencies/0", 13)],
    );
    let validation = validate(
        load(&[Replace(
            Lxc,
            r#""dependencies": ["101"]"#,
            r#""dependencies": ["102"]"#,
        )]),
        &CheckOptions::default(),
    );
    let messages: Vec<&str> = validation
        .problems()
        .iter()
        .map(|problem| problem.message())
        .collect();
    assert_eq!(messages, ["dependency cycle: 102 -> 102"]);
}

#[test]
fn cycle_message_lists_the_path() {
    let edit = Replace(
        Lxc,
        r#""clone_from_ctid": "900",
      "memory_mb""#,
        r#""clone_from_ctid": "900", "dependencies": ["1002"],
      "memory_mb""#,
    );
    let validation = validate(load(&[edit]), &CheckOptions::default());
    let messages: Vec<&str> = validation
        .problems()
        .iter()
        .map(|problem| problem.message())
        .collect();
    assert_eq!(messages, ["dependency cycle: 101 -> 1002 -> 1001 -> 102 -> 101"]);
}

#[test]
fn clone_source_needs_a_template_snapshot() {
    check(
        &[Replace(Vm, r#""template_snapshot_name": "clean","#, "")],
        &[
            (
                "phoenix::clone::no_template_snapshot",
                "/vms/1/clone_from_vmid",
                15,
            ),
            (
                "phoenix::clone::no_template_snapshot",
                "/vms/2/clone_from_vmid",
                24,
            ),
        ],
    );
}

#[test]
fn guest_without_origin() {
    check(
        &[Replace(
            Lxc,
            r#""template": "local:vztmpl/debian-12-standard_12.7-1_amd64.tar.zst","#,
            "",
        )],
        &[("phoenix::guest::no_origin", "/lxc_configs/900", 3)],
    );
}

#[test]
fn malformed_address() {
    check(
        &[Replace(Lxc, "10.1.0.12/24", "10.1.0.312/24")],
        &[(
            "phoenix::network::bad_address",
            "/lxc_configs/102/network_config/ip",
            32,
        )],
    );
}

#[test]
fn address_without_prefix() {
    check(
        &[Replace(Vm, "10.1.0.31/24", "10.1.0.31")],
        &[("phoenix::network::bad_address", "/vms/1/network_config/ip", 18)],
    );
}

#[test]
fn duplicate_static_ip() {
    check(
        &[Replace(Lxc, "10.1.0.12/24", "10.1.0.11/24")],
        &[(
            "phoenix::network::duplicate_ip",
            "/lxc_configs/102/network_config/ip",
            32,
        )],
    );
}

#[test]
fn guest_address_equal_to_the_host() {
    check(
        &[Replace(Vm, "10.1.0.32/24", "10.1.0.2/24")],
        &[("phoenix::network::duplicate_ip", "/vms/2/network_config/ip", 27)],
    );
}

#[test]
fn gateway_outside_subnet() {
    check(
        &[Replace(
            Vm,
            r#""ip": "10.1.0.31/24", "gw": "10.1.0.1""#,
            r#""ip": "10.1.0.31/24", "gw": "10.2.0.1""#,
        )],
        &[(
            "phoenix::network::gateway_outside_subnet",
            "/vms/1/network_config/gw",
            18,
        )],
    );
}

#[test]
fn malformed_nameserver() {
    check(
        &[Replace(
            Lxc,
            r#""nameservers": "10.1.0.1""#,
            r#""nameservers": "10.1.0.1 dns.example""#,
        )],
        &[(
            "phoenix::network::bad_address",
            "/lxc_configs/101/network_config/nameservers",
            16,
        )],
    );
}

#[test]
fn malformed_mac() {
    check(
        &[Replace(Lxc, "BC:24:11:00:01:02", "BC:24:11:00:01")],
        &[("phoenix::network::bad_mac", "/lxc_configs/102/mac_address", 33)],
    );
}

#[test]
fn multicast_mac() {
    check(
        &[Replace(Lxc, "BC:24:11:00:01:02", "BD:24:11:00:01:02")],
        &[(
            "phoenix::network::multicast_mac",
            "/lxc_configs/102/mac_address",
            33,
        )],
    );
}

#[test]
fn duplicate_mac_ignores_case() {
    check(
        &[Replace(Lxc, "BC:24:11:00:01:02", "bc:24:11:00:01:01")],
        &[(
            "phoenix::network::duplicate_mac",
            "/lxc_configs/102/mac_address",
            33,
        )],
    );
}

#[test]
fn duplicate_traefik_service() {
    check(
        &[Replace(
            Lxc,
            r#""name": "proxy", "port": 8080"#,
            r#""name": "gateway", "port": 8080"#,
        )],
        &[(
            "phoenix::traefik::duplicate_service",
            "/lxc_configs/102/traefik_service/name",
            35,
        )],
    );
}

#[test]
fn unknown_stack() {
    check(
        &[Replace(
            Vm,
            r#""docker_stacks": ["web"]"#,
            r#""docker_stacks": ["wbe"]"#,
        )],
        &[("phoenix::stack::unknown", "/vms/2/docker_stacks/0", 29)],
    );
}

#[test]
fn stack_firewall_rules_need_a_managed_firewall() {
    check(
        &[Replace(
            Stacks,
            r#"{ "name": "DB_PASSWORD", "value": { "env": "WEB_DB_PASSWORD" } }
          ]"#,
            r#"{ "name": "DB_PASSWORD", "value": { "env": "WEB_DB_PASSWORD" } }
          ],
          "firewall_rules": [{ "type": "in", "action": "ACCEPT", "proto": "tcp", "port": "8080" }]"#,
        )],
        &[("phoenix::stack::firewall_unmanaged", "/vms/2/docker_stacks/0", 29)],
    );
}

#[test]
fn two_portainer_primaries() {
    check(
        &[Replace(
            Vm,
            r#""portainer_role": "agent""#,
            r#""portainer_role": "primary""#,
        )],
        &[(
            "phoenix::portainer::several_primaries",
            "/vms/2/portainer_role",
            26,
        )],
    );
}

#[test]
fn agent_without_primary() {
    check(
        &[Replace(
            Vm,
            r#""portainer_role": "primary""#,
            r#""portainer_role": "none""#,
        )],
        &[(
            "phoenix::portainer::agent_without_primary",
            "/vms/2/portainer_role",
            26,
        )],
    );
}

#[test]
fn firewall_port_out_of_range() {
    check(
        &[Replace(Lxc, r#""port": "80,443""#, r#""port": "80,70000""#)],
        &[(
            "phoenix::firewall::bad_port",
            "/lxc_configs/101/firewall/rules/0/port",
            22,
        )],
    );
}

#[test]
fn firewall_icmp_takes_no_port() {
    check(
        &[Replace(
            Lxc,
            r#""proto": "icmp","#,
            r#""proto": "icmp", "port": "22","#,
        )],
        &[(
            "phoenix::firewall::port_without_protocol",
            "/lxc_configs/101/firewall/rules/1/port",
            23,
        )],
    );
}

#[test]
fn firewall_bad_source() {
    check(
        &[Replace(
            Lxc,
            r#""source": "10.1.0.0/24""#,
            r#""source": "10.1.0.0/33""#,
        )],
        &[(
            "phoenix::firewall::bad_address",
            "/lxc_configs/101/firewall/rules/1/source",
            23,
        )],
    );
}

#[test]
fn firewall_unknown_protocol() {
    check(
        &[Replace(
            Hypervisor,
            r#""proto": "tcp", "port": "8006""#,
            r#""proto": "tpc", "port": "8006""#,
        )],
        &[
            (
                "phoenix::firewall::unknown_protocol",
                "/firewall/global_firewall_rules/0/proto",
                25,
            ),
            (
                "phoenix::firewall::port_without_protocol",
                "/firewall/global_firewall_rules/0/port",
                25,
            ),
        ],
    );
}

#[test]
fn unknown_feature() {
    check(
        &[Replace(
            Lxc,
            r#""features": ["base_setup"],"#,
            r#""features": ["base_setup", "trafeik"],"#,
        )],
        &[("phoenix::feature::unknown", "/lxc_configs/900/features/1", 8)],
    );
}

#[test]
fn user_features_extend_the_catalogue() {
    let sources = load(&[Replace(
        Lxc,
        r#""features": ["base_setup"],"#,
        r#""features": ["base_setup", "hardening"],"#,
    )]);
    let options = CheckOptions {
        extra_features: vec!["hardening".to_owned()],
        ..CheckOptions::default()
    };
    assert!(validate(sources, &options).problems().is_empty());
}

/// The fixture with a container that names `profile`, and `declared` in `apparmor_profiles`.
fn apparmor(profile: &str, declared: &str) -> Vec<SourceFile> {
    let named = format!(r#""name": "base", "apparmor_profile": "{profile}","#);
    let listed = format!(r#""domain_name": "test.internal", "apparmor_profiles": [{declared}],"#);
    load(&[
        Replace(Lxc, r#""name": "base","#, Box::leak(named.into_boxed_str())),
        Replace(
            Hypervisor,
            r#""domain_name": "test.internal","#,
            Box::leak(listed.into_boxed_str()),
        ),
    ])
}

fn codes(sources: Vec<SourceFile>, files: &[(&str, &str)]) -> Vec<(String, String)> {
    let options = CheckOptions {
        apparmor_files: files
            .iter()
            .map(|(name, text)| ((*name).to_owned(), (*text).to_owned()))
            .collect(),
        ..CheckOptions::default()
    };
    validate(sources, &options)
        .problems()
        .iter()
        .map(|problem| (problem.code().to_owned(), problem.pointer().to_owned()))
        .collect()
}

#[test]
fn apparmor_profiles_are_declared_with_their_file_and_containers_name_known_ones() {
    let policy = "#include <tunables/global>\nprofile lxc-phoenix flags=(attach_disconnected) {\n}\n";
    // Declared, with its file, and named by a container; shipped names need nothing.
    assert!(
        codes(
            apparmor("lxc-phoenix", r#""lxc-phoenix""#),
            &[("lxc-phoenix", policy)]
        )
        .is_empty()
    );
    assert!(codes(apparmor("lxc-container-default-cgns", ""), &[]).is_empty());
    // A container's profile that is neither declared nor shipped.
    assert_eq!(
        codes(
            apparmor("lxc-phoenixx", r#""lxc-phoenix""#),
            &[("lxc-phoenix", policy)]
        ),
        [(
            "phoenix::lxc::unknown_apparmor_profile".to_owned(),
            "/lxc_configs/900/apparmor_profile".to_owned()
        )]
    );
    // Declared without its file, or with a file that defines another profile.
    assert_eq!(
        codes(apparmor("unconfined", r#""lxc-phoenix""#), &[]),
        [(
            "phoenix::host::apparmor_file_missing".to_owned(),
            "/apparmor_profiles/0".to_owned()
        )]
    );
    assert_eq!(
        codes(
            apparmor("unconfined", r#""lxc-phoenix""#),
            &[("lxc-phoenix", "profile lxc-phoenix-other {\n}\n")]
        ),
        [(
            "phoenix::host::apparmor_profile_name".to_owned(),
            "/apparmor_profiles/0".to_owned()
        )]
    );
}

#[test]
fn undeclared_storage_is_a_warning_where_it_is_written() {
    check(
        &[Replace(
            Vm,
            r#""storage_pool": "tank-guests""#,
            r#""storage_pool": "tank-guest""#,
        )],
        &[("phoenix::storage::undeclared", "/vm_defaults/storage_pool", 2)],
    );
}

#[test]
fn unknown_node() {
    check(
        &[Replace(
            Lxc,
            r#""name": "base","#,
            r#""name": "base", "node": "pve2","#,
        )],
        &[("phoenix::node::unknown", "/lxc_configs/900/node", 4)],
    );
}

#[test]
fn several_nodes_need_a_node_per_guest() {
    let sources = load(&[
        Replace(Hypervisor, r#""nodes": ["pve1"]"#, r#""nodes": ["pve1", "pve2"]"#),
        Replace(
            Vm,
            r#""vm_defaults": { "cores": 2"#,
            r#""vm_defaults": { "node": "pve2", "cores": 2"#,
        ),
        Replace(
            Lxc,
            "\"101\": {\n      \"name\": \"gateway\",",
            "\"101\": {\n      \"name\": \"gateway\", \"node\": \"pve1\",",
        ),
        Replace(
            Lxc,
            "\"102\": {\n      \"name\": \"proxy\",",
            "\"102\": {\n      \"name\": \"proxy\", \"node\": \"pve1\",",
        ),
    ]);
    let validation = validate(sources, &CheckOptions::default());
    let found: Vec<(&str, &str)> = validation
        .problems()
        .iter()
        .map(|problem| (problem.code(), problem.pointer()))
        .collect();
    assert_eq!(found, [("phoenix::node::unspecified", "/lxc_configs/900")]);
}

#[test]
fn every_problem_is_collected_at_once() {
    let validation = validate(
        load(&[
            Replace(Lxc, "BC:24:11:00:01:02", "BC:24:11:00:01:01"),
            Replace(Lxc, "10.1.0.12/24", "10.1.0.11/24"),
            Replace(Vm, r#""docker_stacks": ["web"]"#, r#""docker_stacks": ["nope"]"#),
        ]),
        &CheckOptions::default(),
    );
    assert_eq!(validation.problems().len(), 3, "{:#?}", validation.problems());
    assert!(validation.has_errors());
}

/// A value of the configuration that no guest can have: past what Proxmox accepts, or past what a size in
/// bytes can say exactly in JSON.
#[test]
fn sizes_beyond_proxmox_limits() {
    check(
        &[
            Replace(
                Lxc,
                r#""template_snapshot_name": "golden""#,
                r#""template_snapshot_name": "golden", "storage_size_gb": 18446744073709551615"#,
            ),
            Replace(
                Lxc,
                r#""memory_mb": 1024"#,
                r#""memory_mb": 1024, "cores": 1000000"#,
            ),
            Replace(Vm, r#""cores": 2"#, r#""cores": 8193"#),
            Replace(Vm, r#""memory_mb": 2048"#, r#""memory_mb": 8589934593"#),
            Replace(
                Vm,
                r#""template_snapshot_name": "clean","#,
                r#""template_snapshot_name": "clean", "disk_size_gb": 8388609,"#,
            ),
        ],
        &[
            (
                "phoenix::schema::out_of_range",
                "/lxc_configs/900/storage_size_gb",
                9,
            ),
            ("phoenix::schema::out_of_range", "/lxc_configs/101/cores", 14),
            ("phoenix::schema::out_of_range", "/vm_defaults/cores", 2),
            ("phoenix::schema::out_of_range", "/vm_defaults/memory_mb", 2),
            ("phoenix::schema::out_of_range", "/vms/0/disk_size_gb", 9),
        ],
    );
}

#[test]
fn sizes_at_the_limits_are_accepted() {
    check(
        &[
            Replace(
                Lxc,
                r#""memory_mb": 1024"#,
                r#""memory_mb": 8589934592, "cores": 8192"#,
            ),
            Replace(Vm, r#""cores": 2"#, r#""cores": 8192"#),
            Replace(
                Vm,
                r#""template_snapshot_name": "clean","#,
                r#""template_snapshot_name": "clean", "disk_size_gb": 8388608,"#,
            ),
        ],
        &[],
    );
}

#[test]
fn guest_name_longer_than_a_dns_name() {
    let name: &'static str = format!("\"101\": {{\n      \"name\": \"{}\"", "a".repeat(65_536)).leak();
    check(
        &[Replace(Lxc, "\"101\": {\n      \"name\": \"gateway\"", name)],
        &[
            ("phoenix::schema::too_long", "/lxc_configs/101/name", 12),
            ("phoenix::schema::bad_format", "/lxc_configs/101/name", 12),
        ],
    );
}

#[test]
fn guest_names_are_dns_names() {
    let long_label: &'static str = format!(r#""name": "{}.example""#, "a".repeat(64)).leak();
    check(
        &[
            Replace(Lxc, r#""name": "base""#, r#""name": "a..b""#),
            Replace(
                Lxc,
                "\"102\": {\n      \"name\": \"proxy\"",
                "\"102\": {\n      \"name\": \"-proxy\"",
            ),
            Replace(Vm, r#""name": "apps""#, long_label),
        ],
        &[
            ("phoenix::schema::bad_format", "/lxc_configs/900/name", 4),
            ("phoenix::schema::bad_format", "/lxc_configs/102/name", 28),
            ("phoenix::schema::bad_format", "/vms/2/name", 23),
        ],
    );
}

#[test]
fn labels_of_63_characters_make_a_valid_name() {
    let name: &'static str = format!(r#""name": "{0}.{0}""#, "a".repeat(63)).leak();
    check(&[Replace(Vm, r#""name": "apps""#, name)], &[]);
}

#[test]
fn duplicate_guest_names_across_kinds_ignore_case() {
    check(
        &[
            Replace(
                Lxc,
                "\"102\": {\n      \"name\": \"proxy\"",
                "\"102\": {\n      \"name\": \"gateway\"",
            ),
            Replace(Vm, r#""name": "apps""#, r#""name": "Gateway""#),
        ],
        &[
            ("phoenix::guest::duplicate_name", "/lxc_configs/102/name", 28),
            ("phoenix::guest::duplicate_name", "/vms/2/name", 23),
        ],
    );
}

#[test]
fn template_volume_must_not_leave_its_storage() {
    for template in [
        "local:vztmpl/../../../etc/shadow",
        "local:vztmpl/..",
        "local:vztmpl/a/b.tar.zst",
        "local:iso/debian.iso",
        "debian-12-standard_12.7-1_amd64.tar.zst",
        "/var/lib/vz/template/../../../etc/shadow",
        "local:vztmpl/",
    ] {
        let edit: &'static str = format!(r#""template": "{template}""#).leak();
        check(
            &[Replace(
                Lxc,
                r#""template": "local:vztmpl/debian-12-standard_12.7-1_amd64.tar.zst""#,
                edit,
            )],
            &[("phoenix::schema::bad_format", "/lxc_configs/900/template", 5)],
        );
    }
}

#[test]
fn legacy_template_path_is_still_accepted() {
    check(
        &[Replace(
            Lxc,
            "local:vztmpl/debian-12-standard_12.7-1_amd64.tar.zst",
            "/var/lib/vz/template/cache/debian-12-standard_12.7-1_amd64.tar.zst",
        )],
        &[("phoenix::config::template_path", "/lxc_configs/900/template", 5)],
    );
}

#[test]
fn endpoint_must_be_an_https_url_with_a_host() {
    for endpoint in [
        "::::",
        "http://pve1.test:8006",
        "https://",
        "https://:8006",
        "https://pve1.test:65536",
        "pve1.test:8006",
    ] {
        let edit: &'static str = format!(r#""endpoint": "{endpoint}""#).leak();
        check(
            &[Replace(
                Hypervisor,
                r#""endpoint": "https://pve1.test:8006""#,
                edit,
            )],
            &[("phoenix::schema::bad_format", "/proxmox/endpoint", 3)],
        );
    }
}

#[test]
fn endpoint_with_an_ipv6_host_must_parse() {
    check(
        &[Replace(
            Hypervisor,
            r#""endpoint": "https://pve1.test:8006""#,
            r#""endpoint": "https://[::::]:8006""#,
        )],
        &[("phoenix::connection::bad_endpoint", "/proxmox/endpoint", 3)],
    );
    check(
        &[Replace(
            Hypervisor,
            r#""endpoint": "https://pve1.test:8006""#,
            r#""endpoint": "https://[fd00::2]:8006/api2/json""#,
        )],
        &[],
    );
}

#[test]
fn fingerprint_must_be_sha256_pairs() {
    for fingerprint in [
        "XYZ",
        "AA:BB",
        "AABBCCDDEEFF00112233445566778899AABBCCDDEEFF00112233445566778899",
        "AA:BB:CC:DD:EE:FF:00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF:00:11:22:33:44:55:66:77:88:9G",
    ] {
        let edit: &'static str =
            format!(r#""token_id": "phoenix@pve!ci", "fingerprint": "{fingerprint}","#).leak();
        check(
            &[Replace(Hypervisor, r#""token_id": "phoenix@pve!ci","#, edit)],
            &[("phoenix::schema::bad_format", "/proxmox/fingerprint", 5)],
        );
    }
    check(
        &[Replace(
            Hypervisor,
            r#""token_id": "phoenix@pve!ci","#,
            r#""token_id": "phoenix@pve!ci", "fingerprint": "aa:bb:cc:dd:ee:ff:00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF:00:11:22:33:44:55:66:77:88:99","#,
        )],
        &[],
    );
}

#[test]
fn node_names_and_storage_ids_that_cannot_be_a_path_segment_are_refused() {
    // Both go into API paths (`/nodes/{node}/...`, `/storage/{id}`): Proxmox's own formats hold them.
    for node in ["pve1/../../access", "-pve", "pve 1", ""] {
        let edit: &'static str = format!(r#""nodes": ["{node}"]"#).leak();
        check(
            &[Replace(Hypervisor, r#""nodes": ["pve1"]"#, edit)],
            &[("phoenix::schema::bad_format", "/proxmox/nodes/0", 4)],
        );
    }
    for storage in ["tank/guests", "9tank", "tank-", "t"] {
        let edit: &'static str = format!(r#""storage_pool": "{storage}" }}"#).leak();
        check(
            &[Replace(Vm, r#""storage_pool": "tank-guests" }"#, edit)],
            &[("phoenix::schema::bad_format", "/vm_defaults/storage_pool", 2)],
        );
    }
}

#[test]
fn a_node_keeps_three_resolvers() {
    check(
        &[Replace(
            Hypervisor,
            r#""dns_nameservers": ["10.1.0.1"]"#,
            r#""dns_nameservers": ["10.1.0.1", "1.1.1.1", "9.9.9.9", "8.8.8.8"]"#,
        )],
        &[("phoenix::host::too_many_resolvers", "/network", 9)],
    );
    // A fallback already named is not a fourth.
    check(
        &[
            Replace(
                Hypervisor,
                r#""dns_nameservers": ["10.1.0.1"]"#,
                r#""dns_nameservers": ["10.1.0.1", "1.1.1.1", "9.9.9.9"]"#,
            ),
            Replace(
                Hypervisor,
                r#""interfaces": ["#,
                r#""fallback_dns": "9.9.9.9", "interfaces": ["#,
            ),
        ],
        &[],
    );
}

#[test]
fn bridges_proxmox_would_refuse_are_found_offline() {
    const VMBR0: &str = r#"{ "name": "vmbr0", "address": "10.1.0.2/24", "gateway": "10.1.0.1", "dns_nameservers": ["10.1.0.1"] }"#;
    // One port in two bridges, and a second default gateway.
    check(
        &[Replace(
            Hypervisor,
            VMBR0,
            r#"{ "name": "vmbr0", "address": "10.1.0.2/24", "gateway": "10.1.0.1", "ports": ["eno1"] },
      { "name": "vmbr1", "address": "10.2.0.2/24", "gateway": "10.2.0.1", "ports": ["eno2", "eno1"] }"#,
        )],
        &[
            ("phoenix::host::two_gateways", "/network/interfaces/1/gateway", 12),
            (
                "phoenix::host::shared_bridge_port",
                "/network/interfaces/1/ports/1",
                12,
            ),
        ],
    );
    // One bridge declared twice.
    check(
        &[Replace(
            Hypervisor,
            VMBR0,
            r#"{ "name": "vmbr0", "ports": ["eno1"] }, { "name": "vmbr0", "comments": "again" }"#,
        )],
        &[(
            "phoenix::host::duplicate_bridge",
            "/network/interfaces/1/name",
            11,
        )],
    );
    // A bridge name Proxmox does not take: the interfaces are one bridge or a list, and the list's own
    // error names the bad name, not "no form matches".
    check(
        &[Replace(Hypervisor, VMBR0, r#"{ "name": "vm-br0" }"#)],
        &[("phoenix::schema::bad_format", "/network/interfaces/0/name", 11)],
    );
}

#[test]
fn samba_shares_have_names_of_their_own_and_a_user_without_password_is_named() {
    check(
        &[Replace(
            Hypervisor,
            r#""portainer_api": {"#,
            r#""samba": { "user": "heads", "shares": [{ "name": "media", "path": "tank/media" }, { "name": "Media", "path": "/srv/b" }, { "name": "global", "path": "/srv/c" }] }, "portainer_api": {"#,
        )],
        &[
            ("phoenix::samba::no_password", "/samba/user", 28),
            ("phoenix::samba::duplicate_share", "/samba/shares/1/name", 28),
            ("phoenix::samba::reserved_share", "/samba/shares/2/name", 28),
        ],
    );
    check(
        &[Replace(
            Hypervisor,
            r#""portainer_api": {"#,
            r#""samba": { "user": "heads", "password": { "env": "SMB_PASSWORD" }, "shares": [{ "name": "media", "path": "tank/media" }] }, "portainer_api": {"#,
        )],
        &[],
    );
}

#[test]
fn firewall_unknown_macro() {
    check(
        &[Replace(
            Hypervisor,
            r#""port": "8006", "source": "10.1.0.0/24" }"#,
            r#""port": "8006", "source": "10.1.0.0/24", "macro": "Shh" }"#,
        )],
        &[(
            "phoenix::firewall::unknown_macro",
            "/firewall/global_firewall_rules/0/macro",
            25,
        )],
    );
    let validation = validate(
        load(&[Replace(
            Hypervisor,
            r#""port": "8006", "source": "10.1.0.0/24" }"#,
            r#""port": "8006", "source": "10.1.0.0/24", "macro": "htps" }"#,
        )]),
        &CheckOptions::default(),
    );
    let help = validation.problems()[0].help_text().unwrap_or_default();
    assert_eq!(help, "did you mean `HTTPS`?");
}

#[test]
fn firewall_unknown_macro_in_a_guest_rule() {
    check(
        &[Replace(
            Lxc,
            r#""proto": "tcp", "port": "80,443" }"#,
            r#""proto": "tcp", "port": "80,443", "macro": "HTTPX" }"#,
        )],
        &[(
            "phoenix::firewall::unknown_macro",
            "/lxc_configs/101/firewall/rules/0/macro",
            22,
        )],
    );
}

/// Groups, aliases and IP sets (problems come in the order of the file): a macro in any case is fine, a declared reference is fine, a group cannot
/// jump to a group, an IP set holds an address once, and references to undeclared objects are warnings.
#[test]
fn firewall_groups_aliases_and_ip_sets() {
    check(
        &[
            Replace(
                Hypervisor,
                r#""default_input_policy": "DROP","#,
                r#""default_input_policy": "DROP", "aliases": { "lan": { "cidr": "10.1.0.0/24" }, "gw": { "cidr": "10.1.0.1-10.1.0.2" } }, "ipsets": { "admins": { "entries": [{ "cidr": "LAN" }, { "cidr": "10.1.0.5/32" }, { "cidr": "10.1.0.5" }, { "cidr": "wan" }] } }, "security_groups": { "web": { "rules": [{ "type": "group", "action": "web" }, { "type": "in", "action": "ACCEPT", "macro": "https", "source": "+admins", "dest": "dc/lan" }] } }, "node": { "rules": [{ "type": "group", "action": "webs" }, { "type": "group", "action": "web" }] },"#,
            ),
            Replace(
                Lxc,
                r#""proto": "icmp", "source": "10.1.0.0/24" }"#,
                r#""proto": "icmp", "source": "+admins", "dest": "+guest/own" }, { "type": "in", "action": "ACCEPT", "source": "+nosuch" }"#,
            ),
        ],
        &[
            ("phoenix::firewall::bad_address", "/firewall/aliases/gw/cidr", 23),
            (
                "phoenix::firewall::duplicate_entry",
                "/firewall/ipsets/admins/entries/2/cidr",
                23,
            ),
            (
                "phoenix::firewall::undeclared_alias",
                "/firewall/ipsets/admins/entries/3/cidr",
                23,
            ),
            (
                "phoenix::firewall::group_in_group",
                "/firewall/security_groups/web/rules/0/type",
                23,
            ),
            (
                "phoenix::firewall::undeclared_group",
                "/firewall/node/rules/0/action",
                23,
            ),
            (
                "phoenix::firewall::undeclared_ipset",
                "/lxc_configs/101/firewall/rules/2/source",
                23,
            ),
        ],
    );
}

#[test]
fn firewall_group_rule_names_a_group_and_other_rules_a_verdict() {
    check(
        &[Replace(
            Lxc,
            r#""type": "in", "action": "ACCEPT", "proto": "icmp""#,
            r#""type": "in", "action": "web", "proto": "icmp""#,
        )],
        &[(
            "phoenix::schema::not_allowed",
            "/lxc_configs/101/firewall/rules/1/action",
            23,
        )],
    );
    check(
        &[Replace(
            Lxc,
            r#""type": "in", "action": "ACCEPT", "proto": "icmp", "source": "10.1.0.0/24" }"#,
            r#""type": "group", "action": "no spaces" }"#,
        )],
        &[(
            "phoenix::schema::bad_format",
            "/lxc_configs/101/firewall/rules/1/action",
            23,
        )],
    );
}

#[test]
fn an_nfs_storage_needs_a_server_and_storage_ids_are_unique() {
    check(
        &[Replace(
            Hypervisor,
            r#""proxmox_storages": ["#,
            r#""nfs": { "exports": [{ "path": "/srv/share", "clients": ["10.1.0.0/24"], "proxmox_storage": { "id": "local" } }] },
  "proxmox_storages": ["#,
        )],
        &[
            (
                "phoenix::nfs::storage_without_server",
                "/nfs/exports/0/proxmox_storage",
                20,
            ),
            ("phoenix::storage::duplicate_id", "/proxmox_storages/0/id", 21),
        ],
    );
    // With the server declared, only the duplicate is left.
    check(
        &[Replace(
            Hypervisor,
            r#""proxmox_storages": ["#,
            r#""nfs": { "exports": [{ "path": "/srv/share", "clients": ["10.1.0.0/24"], "proxmox_storage": { "id": "tank-guests", "server": "10.1.0.2" } }] },
  "proxmox_storages": ["#,
        )],
        &[(
            "phoenix::storage::duplicate_id",
            "/nfs/exports/0/proxmox_storage/id",
            20,
        )],
    );
}

#[test]
fn snapshot_policies_are_named_and_replication_needs_one() {
    const GUESTS: &str = r#"{ "name": "guests", "pool": "tank", "proxmox_storage_type": "zfspool", "proxmox_content_type": "images,rootdir" }"#;
    // A policy no one declared, and a replica without a policy.
    check(
        &[Replace(
            Hypervisor,
            GUESTS,
            r#"{ "name": "guests", "pool": "tank", "proxmox_storage_type": "zfspool", "snapshot_policy": "prod" }, { "name": "media", "pool": "tank", "replicate_to": "slow" }"#,
        )],
        &[
            (
                "phoenix::zfs::unknown_snapshot_policy",
                "/zfs/datasets/0/snapshot_policy",
                17,
            ),
            (
                "phoenix::zfs::replica_without_policy",
                "/zfs/datasets/1/replicate_to",
                17,
            ),
        ],
    );
    // A policy whose name cannot name a timer; a retention count that is not a count.
    check(
        &[
            Replace(
                Hypervisor,
                GUESTS,
                r#"{ "name": "guests", "pool": "tank", "proxmox_storage_type": "zfspool", "snapshot_policy": "prod daily" }"#,
            ),
            Replace(
                Hypervisor,
                r#""pools": ["#,
                r#""snapshot_policies": { "prod daily": { "hourly": 24 } }, "pools": ["#,
            ),
        ],
        &[(
            "phoenix::zfs::policy_name",
            "/zfs/snapshot_policies/prod daily",
            15,
        )],
    );
    check(
        &[Replace(
            Hypervisor,
            r#""pools": ["#,
            r#""snapshot_policies": { "prod": { "hourly": -1 } }, "pools": ["#,
        )],
        &[(
            "phoenix::schema::out_of_range",
            "/zfs/snapshot_policies/prod/hourly",
            15,
        )],
    );
}

/// The stacks fixture with these Traefik labels on the `web` service of stack `web` (on VM 1002).
fn web_labels(labels: &[&str]) -> Edit {
    let labels: Vec<String> = labels.iter().map(|label| format!("{label:?}")).collect();
    Replace(
        Stacks,
        r#"{ "name": "DB_PASSWORD", "value": { "env": "WEB_DB_PASSWORD" } }
          ]"#,
        Box::leak(
            format!(
                r#"{{ "name": "DB_PASSWORD", "value": {{ "env": "WEB_DB_PASSWORD" }} }}
          ],
          "services": {{ "web": {{ "traefik_labels": [{}] }} }}"#,
                labels.join(", ")
            )
            .into_boxed_str(),
        ),
    )
}

#[test]
fn traefik_labels_are_read_and_their_routes_checked() {
    let labels = "/docker_stacks/web/environments/production/services/web/traefik_labels";
    // A misspelt setting, with the label it most likely meant.
    check(
        &[web_labels(&[
            "traefik.http.routers.web.entrypoint=websecure",
            "traefik.http.services.web.loadbalancer.server.port=8080",
        ])],
        &[("phoenix::traefik::label", &format!("{labels}/0"), 11)],
    );
    // A router of a name a guest's route already has, with other settings.
    check(
        &[web_labels(&[
            "traefik.http.routers.proxy.rule=Host(`web.example.org`)",
            "traefik.http.services.web.loadbalancer.server.port=8080",
        ])],
        &[("phoenix::traefik::duplicate_name", labels, 11)],
    );
    // A service without a port; a router using a middleware nothing declares.
    check(
        &[web_labels(&[
            "traefik.http.routers.web.middlewares=auth",
            "traefik.http.services.web.loadbalancer.passhostheader=true",
        ])],
        &[
            ("phoenix::traefik::no_port", labels, 11),
            ("phoenix::traefik::unknown_reference", labels, 11),
        ],
    );
}

/// Options that hand validation this compose file for stack `web` (or none, when `text` is `None`).
fn with_compose(text: Option<&str>) -> CheckOptions {
    let file = text.map(|text| ComposeFile {
        path: "stacks/web/docker-compose.yml".to_owned(),
        text: text.to_owned(),
        missing_files: Vec::new(),
    });
    CheckOptions {
        compose_files: Some(std::collections::BTreeMap::from([("web".to_owned(), file)])),
        ..CheckOptions::default()
    }
}

#[test]
fn compose_files_parse_name_the_labelled_services_and_use_the_variables() {
    let production = "/docker_stacks/web/environments/production";
    // Both variables used as ${NAME}: nothing to say.
    let good = "services:\n  web:\n    image: web:1\n    ports: [\"${PORT}:80\"]\n    environment:\n      DB: ${DB_PASSWORD}\n";
    check_with(&[], &with_compose(Some(good)), &[]);
    // `env_file: stack.env` hands them all to the containers.
    let env_file = "services:\n  web:\n    image: web:1\n    env_file: stack.env\n";
    check_with(&[], &with_compose(Some(env_file)), &[]);
    // Neither: each variable reaches nothing.
    let neither = "services:\n  web:\n    image: web:1\n";
    check_with(
        &[],
        &with_compose(Some(neither)),
        &[
            (
                "phoenix::stack::variable_unused",
                &format!("{production}/variables/0/name"),
                8,
            ),
            (
                "phoenix::stack::variable_unused",
                &format!("{production}/variables/1/name"),
                9,
            ),
        ],
    );
    // Not YAML; no compose file at all.
    check_with(
        &[],
        &with_compose(Some("services: [")),
        &[(
            "phoenix::stack::compose_invalid",
            "/docker_stacks/web/compose_file_path",
            4,
        )],
    );
    check_with(
        &[],
        &with_compose(None),
        &[(
            "phoenix::stack::no_compose_file",
            "/docker_stacks/web/compose_file_path",
            4,
        )],
    );
    // Labels on a service the compose file does not have.
    check_with(
        &[web_labels(&[
            "traefik.http.routers.web.rule=Host(`web.example.org`)",
        ])],
        &with_compose(Some(
            "services:\n  app:\n    image: web:1\n    env_file: [stack.env]\n",
        )),
        &[
            (
                "phoenix::stack::unknown_service",
                &format!("{production}/services/web"),
                11,
            ),
            (
                "phoenix::traefik::router_without_service",
                &format!("{production}/services/web/traefik_labels"),
                11,
            ),
        ],
    );
}

#[test]
fn stack_files_must_be_found_and_land_at_an_absolute_path() {
    let production = "/docker_stacks/web/environments/production";
    let files = Replace(
        Stacks,
        r#"{ "name": "DB_PASSWORD", "value": { "env": "WEB_DB_PASSWORD" } }
          ]"#,
        r#"{ "name": "DB_PASSWORD", "value": { "env": "WEB_DB_PASSWORD" } }
          ],
          "files": [
            { "source": "stacks/web/app.env", "destination_in_container": "/app/.env" },
            { "source": "stacks/web/nginx.conf", "destination_in_container": "etc/nginx.conf" }
          ]"#,
    );
    let compose = "services:\n  web:\n    image: web:1\n    env_file: stack.env\n";
    let mut options = with_compose(Some(compose));
    if let Some(Some(file)) = options
        .compose_files
        .as_mut()
        .and_then(|files| files.get_mut("web"))
    {
        file.missing_files = vec![(
            "production".to_owned(),
            0,
            vec!["/etc/phoenix/stacks/web/app.env".to_owned()],
        )];
    }
    check_with(
        &[files],
        &options,
        &[
            (
                "phoenix::stack::file_missing",
                &format!("{production}/files/0/source"),
                12,
            ),
            (
                "phoenix::stack::file_destination",
                &format!("{production}/files/1/destination_in_container"),
                13,
            ),
        ],
    );
}

#[test]
fn a_git_stack_has_no_compose_file_of_its_own_and_runs_only_through_portainer() {
    let git = Replace(
        Stacks,
        r#""compose_file_path": "stacks/web/docker-compose.yml","#,
        r#""compose_file_path": "stacks/web/docker-compose.yml",
      "git": { "repository_url": "https://git.example.org/web.git", "password": "hunter2", "username": "ci" },"#,
    );
    check(
        &[git],
        &[
            (
                "phoenix::stack::git_and_compose_file",
                "/docker_stacks/web/compose_file_path",
                4,
            ),
            (
                "phoenix::config::plaintext_secret",
                "/docker_stacks/web/git/password",
                5,
            ),
        ],
    );
    let only_git = Replace(
        Stacks,
        r#""compose_file_path": "stacks/web/docker-compose.yml","#,
        r#""git": { "repository_url": "https://git.example.org/web.git" },"#,
    );
    check(&[only_git], &[]);
    let on_server = Replace(
        Vm,
        r#""portainer_role": "primary","#,
        r#""portainer_role": "primary", "docker_stacks": ["web"],"#,
    );
    let only_git = Replace(
        Stacks,
        r#""compose_file_path": "stacks/web/docker-compose.yml","#,
        r#""git": { "repository_url": "https://git.example.org/web.git" },"#,
    );
    check(
        &[only_git, on_server],
        &[("phoenix::stack::git_on_server", "/vms/1/docker_stacks/0", 17)],
    );
}

#[test]
fn a_vm_runs_a_stack_in_an_environment_the_stack_has() {
    // The earlier version's object form, naming the environment: fine when the stack has it.
    let chosen = |environment: &str| {
        Replace(
            Vm,
            r#""docker_stacks": ["web"],"#,
            Box::leak(
                format!(r#""docker_stacks": [{{ "name": "web", "environment": "{environment}" }}],"#)
                    .into_boxed_str(),
            ),
        )
    };
    check(&[chosen("production")], &[]);
    check(
        &[chosen("prodution")],
        &[(
            "phoenix::stack::unknown_environment",
            "/vms/2/docker_stacks/0/environment",
            29,
        )],
    );
}
