//! The nginx gateway's site, rendered from the homelab's template and from the earlier version's (the
//! reference's `##MAP_BLOCK##` placeholder), and the errors of a template that does not render.

use phoenix_core::lint::checks::gateway::GatewayTemplate;
use phoenix_core::{CheckOptions, FileKind, SourceFile};
use phoenix_testing::{fixture, reference_dir, workspace};

fn homelab() -> phoenix_core::Estate {
    fixture::estate(
        fixture::sources(&workspace().join("examples/homelab")),
        &CheckOptions::default(),
    )
}

fn render(
    estate: &phoenix_core::Estate,
    template: &str,
) -> Result<String, phoenix_core::gateway::TemplateError> {
    let gateway = estate.files().hypervisor.gateway.as_ref().expect("a gateway");
    phoenix_core::gateway::render(estate, gateway, template)
}

#[test]
fn the_homelab_site_names_its_public_names_routes_and_certificate() {
    let estate = homelab();
    let template =
        std::fs::read_to_string(workspace().join("examples/homelab/nginx/sites-available/gateway.template"))
            .expect("the homelab's template");
    let site = render(&estate, &template).expect("renders");
    assert!(
        site.contains("server_name lab.example.org *.lab.example.org;"),
        "{site}"
    );
    assert!(
        site.contains("listen 80 default_server;") && site.contains("listen 443 ssl;"),
        "{site}"
    );
    // Names without a route go to Traefik (container 102); the CA's name to its container.
    assert!(site.contains("map $host $upstream_service {\n    hostnames;\n    default http://10.42.0.11:80;\n    ca.lab.example.org https://10.42.0.10:9000;\n}"), "{site}");
    assert!(
        site.contains("ssl_certificate /etc/nginx/ssl/lab.example.org.crt;"),
        "{site}"
    );
    assert!(!site.contains("resolver"), "no resolver declared: {site}");
    assert!(!site.contains("{{") && !site.contains("{%"), "{site}");
}

#[test]
fn the_earlier_versions_placeholder_gets_the_map_block() {
    let Some(reference) = reference_dir() else { return };
    let sources: Vec<SourceFile> = fixture::sources(&reference)
        .into_iter()
        .map(|source| {
            let text = if source.kind() == FileKind::Hypervisor {
                source.text().replacen(
                    "\"step_ca\": {",
                    "\"gateway\": { \"container\": 101, \"default_upstream\": \"https://traefik.internal.thinkheads.ai:8443\" },\n    \"step_ca\": {",
                    1,
                )
            } else {
                source.text().to_owned()
            };
            SourceFile::new(source.kind(), source.path().to_owned(), text)
        })
        .collect();
    let estate = phoenix_core::validate(sources, &CheckOptions::default())
        .into_estate()
        .expect("the reference is valid");
    let template = std::fs::read_to_string(reference.join("nginx/sites-available/gateway.template"))
        .expect("the template");
    let site = render(&estate, &template).expect("renders");
    assert!(!site.contains("##MAP_BLOCK##"), "{site}");
    assert!(
        site.contains("    default https://traefik.internal.thinkheads.ai:8443;\n"),
        "{site}"
    );
}

#[test]
fn a_template_that_does_not_render_is_named_at_its_line() {
    let estate = homelab();
    let error = render(
        &estate,
        "server {\n    listen {{ http_port }};\n    server_name {{ public_name }};\n}\n",
    )
    .expect_err("an unknown variable");
    assert_eq!(error.line, Some(3), "{error:?}");
    assert!(error.message.contains("public_name"), "{error:?}");
    let error = render(&estate, "server {\n  {% if %}\n}\n").expect_err("a broken tag");
    assert_eq!(error.line, Some(2), "{error:?}");

    // validate says it, at the template's key.
    let options = CheckOptions {
        gateway_template: Some(GatewayTemplate {
            path: "nginx/sites-available/gateway.template".to_owned(),
            text: Some("listen {{ nope }};\n".to_owned()),
        }),
        ..CheckOptions::default()
    };
    let validation =
        phoenix_core::validate(fixture::sources(&workspace().join("examples/homelab")), &options);
    let problems: Vec<(&str, &str)> = validation
        .problems()
        .iter()
        .map(|problem| (problem.code(), problem.pointer()))
        .collect();
    assert_eq!(problems, [("phoenix::gateway::template", "/gateway/template")]);
    assert!(
        validation.problems()[0].to_string().contains("line 1"),
        "{}",
        validation.problems()[0]
    );
    let missing = CheckOptions {
        gateway_template: Some(GatewayTemplate {
            path: "x".to_owned(),
            text: None,
        }),
        ..CheckOptions::default()
    };
    let validation =
        phoenix_core::validate(fixture::sources(&workspace().join("examples/homelab")), &missing);
    assert_eq!(validation.problems()[0].code(), "phoenix::gateway::no_template");
}

#[test]
fn the_internal_dns_view_has_addresses_for_upstreams_and_a_declared_container() {
    let sources: Vec<SourceFile> = fixture::sources(&workspace().join("examples/homelab"))
        .into_iter()
        .map(|source| {
            let text = source.text().replace(
                r#""upstream_servers": ["9.9.9.9", "1.1.1.1"],"#,
                r#""upstream_servers": ["9.9.9.9#5353", "dns.example.org"], "container": 777,"#,
            );
            SourceFile::new(source.kind(), source.path().to_owned(), text)
        })
        .collect();
    let validation = phoenix_core::validate(sources, &CheckOptions::default());
    let problems: Vec<(&str, &str)> = validation
        .problems()
        .iter()
        .map(|problem| (problem.code(), problem.pointer()))
        .collect();
    assert_eq!(
        problems,
        [
            ("phoenix::dns::bad_upstream", "/dns_server/upstream_servers/1"),
            ("phoenix::dns::unknown_container", "/dns_server/container"),
        ]
    );
}
