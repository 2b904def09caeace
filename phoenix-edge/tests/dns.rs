//! `sync/dns/internal` for real: Debian's dnsmasq in a Debian test node serves the homelab's internal view
//! on a loopback port; every record is asked for with `kdig`; a second run writes nothing; a stopped server
//! is started again; a changed address is served after the next run; a file dnsmasq refuses never goes live.
//!
//! Needs root, LXC and the test node's packages (`.ci/run` installs them); without them the test is
//! skipped with a message, except under `CI=true`, where it fails.

use std::net::UdpSocket;
use std::sync::Arc;

use phoenix_core::{
    Action, CheckOptions, Desired, ExecuteOptions, Managers, Outcome, PlanOptions, Resource, SourceFile,
    SyncStep,
};
use phoenix_edge::EdgeManager;
use phoenix_testing::node::TestNode;
use phoenix_testing::{actions, fixture, outcome, workspace};

fn free_udp_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .and_then(|socket| socket.local_addr())
        .expect("a free port")
        .port()
}

/// The homelab's `sync/dns/internal`, dnsmasq on 127.0.0.1:`port`, the text edited by `edit`.
fn step(port: u16, edit: impl Fn(&str) -> String) -> Vec<Resource> {
    let dir = workspace().join("examples/homelab");
    let sources: Vec<SourceFile> = fixture::sources(&dir)
        .into_iter()
        .map(|source| {
            let text = source.text().replace(
                r#""authoritative_zones": ["lab.example.org"]"#,
                &format!(r#""authoritative_zones": ["lab.example.org"], "listen_address": "127.0.0.1", "port": {port}"#),
            );
            SourceFile::new(source.kind(), source.path().to_owned(), edit(&text))
        })
        .collect();
    fixture::resources(sources, &CheckOptions::default())
        .into_iter()
        .filter(|resource| resource.address.to_string() == "sync/dns/internal")
        .collect()
}

/// What the node's dnsmasq answers for `name`.
fn ask(node: &TestNode, port: u16, name: &str) -> String {
    let output = node.exec(&[
        "kdig",
        "@127.0.0.1",
        "-p",
        &port.to_string(),
        name,
        "A",
        "+short",
        "+time=2",
        "+retry=1",
    ]);
    output.stdout.trim().to_owned()
}

async fn converge(resources: &[Resource], managers: &Managers) -> Vec<Action> {
    let plan = phoenix_testing::plan(resources.to_vec(), managers, &PlanOptions::default()).await;
    let report = phoenix_testing::apply(&plan, managers, &ExecuteOptions::default()).await;
    if !actions(&plan).is_empty() {
        assert!(
            matches!(outcome(&report, "sync/dns/internal"), Outcome::Changed { .. }),
            "{report:#?}"
        );
    }
    actions(&plan)
}

#[tokio::test]
async fn the_internal_view_is_served_by_a_real_dnsmasq_and_changes_only_when_it_should() {
    let Some(node) = TestNode::start() else { return };
    let port = free_udp_port();
    let resources = step(port, str::to_owned);
    let Desired::Sync(SyncStep::InternalDns(view)) = &resources[0].desired else {
        panic!("not the internal view: {:?}", resources[0].desired)
    };
    // Guests by name and FQDN; names Traefik routes, at Traefik's address.
    assert_eq!(
        view.records.get("gateway.lab.example.org").map(String::as_str),
        Some("10.42.0.12")
    );
    assert_eq!(
        view.records.get("qdrant.lab.example.org").map(String::as_str),
        Some("10.42.0.11")
    );
    let records = view.records.clone();
    let mut managers = Managers::default();
    managers.register(Arc::new(
        EdgeManager::new(node.channel()).with_dns_in(Arc::new(node.guest())),
    ));

    assert_eq!(converge(&resources, &managers).await, [Action::Create]);
    for (name, address) in &records {
        // dnsmasq answers bare names too, but kdig would send them as they are; ask the FQDNs.
        if name.contains('.') {
            assert_eq!(&ask(&node, port, name), address, "{name}");
        }
    }
    // Zones it is authoritative for are answered from its records alone, never forwarded.
    assert_eq!(ask(&node, port, "nothing-here.lab.example.org"), "");

    // Second run: nothing.
    assert_eq!(converge(&resources, &managers).await, []);

    // Stopped by hand: started again.
    assert!(
        node.exec(&["sh", "-c", "kill $(cat /run/phoenix-dnsmasq.pid)"])
            .success()
    );
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert_eq!(converge(&resources, &managers).await, [Action::Update]);
    assert_eq!(ask(&node, port, "gateway.lab.example.org"), "10.42.0.12");

    // A new address for the gateway: served after the next run.
    let moved = step(port, |text| text.replace("10.42.0.12/24", "10.42.0.99/24"));
    assert_eq!(converge(&moved, &managers).await, [Action::Update]);
    assert_eq!(ask(&node, port, "gateway.lab.example.org"), "10.42.0.99");
    assert_eq!(converge(&moved, &managers).await, []);

    // A file dnsmasq refuses (validate stops such an upstream; the view is made by hand here): the live
    // file stays, and so do the answers.
    let Desired::Sync(SyncStep::InternalDns(view)) = &moved[0].desired else {
        unreachable!()
    };
    let mut refused = (**view).clone();
    refused.upstreams = vec!["9.9.9.9#not-a-port".to_owned()];
    let error = phoenix_edge::dns::apply(&node.guest(), &refused)
        .await
        .expect_err("dnsmasq refuses it");
    assert!(
        format!("{error:?}").contains("dnsmasq --test refused"),
        "{error:?}"
    );
    assert_eq!(ask(&node, port, "gateway.lab.example.org"), "10.42.0.99");
    assert_eq!(converge(&moved, &managers).await, []);
}
