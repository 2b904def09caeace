//! Knot DNS in a [`TestNode`]: authoritative for one zone on a loopback port, with a TSIG key allowed to
//! transfer and update it, for the tests of the public DNS view and of dns-01 challenges.

use std::net::{TcpListener, UdpSocket};

use crate::node::TestNode;

/// The TSIG key Knot knows, as `public_dns.server.tsig` names it.
pub const KEY_NAME: &str = "phoenix-update";
/// Its secret (base64, 32 bytes).
pub const SECRET: &str = "cGhvZW5peC10ZXN0LXRzaWcta2V5LTMyLWJ5dGVzISE=";
/// Where its configuration is in the node, for `knotc -c`.
pub const CONFIG: &str = "/etc/knot/phoenix-test.conf";

/// A running Knot serving `zone` on 127.0.0.1:`port`; it stops with its node.
#[derive(Debug)]
pub struct Knot {
    /// The port it answers on, over UDP and TCP.
    pub port: u16,
    /// The zone it is authoritative for.
    pub zone: String,
}

/// A port free for both TCP and UDP on 127.0.0.1.
pub fn free_port() -> u16 {
    loop {
        let tcp = TcpListener::bind("127.0.0.1:0").expect("a free port");
        let port = tcp.local_addr().expect("an address").port();
        if UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

impl Knot {
    /// Starts Knot in `node` with `zone`'s file (`records`, in zone-file syntax after `$ORIGIN`), and waits
    /// until it answers.
    #[track_caller]
    pub fn start(node: &TestNode, zone: &str, records: &str) -> Knot {
        let port = free_port();
        let config = format!(
            "server:\n    rundir: \"/run/knot\"\n    user: root:root\n    listen: 127.0.0.1@{port}\ndatabase:\n    storage: \"/var/lib/knot\"\nkey:\n  - id: {KEY_NAME}\n    algorithm: hmac-sha256\n    secret: {SECRET}\nacl:\n  - id: phoenix\n    key: {KEY_NAME}\n    action: [transfer, update]\ntemplate:\n  - id: default\n    storage: \"/var/lib/knot\"\n    file: \"%s.zone\"\n    zonefile-sync: -1\n    journal-content: all\n    serial-policy: increment\nzone:\n  - domain: {zone}\n    acl: phoenix\n"
        );
        let text = format!("$ORIGIN {zone}.\n$TTL 3600\n{records}");
        let script = format!(
            "mkdir -p /run/knot /var/lib/knot && cat > {CONFIG} <<'EOF'\n{config}EOF\ncat > /var/lib/knot/{zone}.zone <<'EOF'\n{text}EOF\nknotd -c {CONFIG} -d"
        );
        let started = node.exec(&["sh", "-c", &script]);
        assert!(started.success(), "knotd does not start: {started:?}");
        let knot = Knot {
            port,
            zone: zone.to_owned(),
        };
        for _ in 0..100 {
            if !knot.serial(node).is_empty() {
                return knot;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        panic!("knotd does not answer on port {port}");
    }

    /// `kdig`'s short answer for `name`'s records of `rtype`, sorted.
    pub fn ask(&self, node: &TestNode, name: &str, rtype: &str) -> Vec<String> {
        let port = self.port.to_string();
        let output = node.exec(&[
            "kdig",
            "@127.0.0.1",
            "-p",
            &port,
            "+tcp",
            name,
            rtype,
            "+short",
            "+time=2",
            "+retry=1",
        ]);
        let mut lines: Vec<String> = output.stdout.lines().map(str::to_owned).collect();
        lines.sort();
        lines
    }

    /// The zone's SOA serial.
    pub fn serial(&self, node: &TestNode) -> String {
        self.ask(node, &self.zone, "SOA")
            .first()
            .and_then(|soa| soa.split_whitespace().nth(2).map(str::to_owned))
            .unwrap_or_default()
    }

    /// `public_dns.server` naming this Knot, with the key read from the file `key_file`.
    pub fn server_json(&self, key_file: &str) -> String {
        format!(
            r#"{{"address": "127.0.0.1:{}", "tsig": {{"name": "{KEY_NAME}", "secret": {{"file": "{key_file}"}}}}}}"#,
            self.port
        )
    }
}
