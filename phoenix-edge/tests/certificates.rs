//! `sync/certificate/<name>` for real: a real ACME server (pebble, Debian's package) on loopback issues the
//! homelab's gateway certificate (`lab.example.org` and `*.lab.example.org`), proved by dns-01 records
//! Phoenix publishes to a real Knot (in a Debian test node) that pebble asks. The files land on the node
//! with their owner and mode, the post-renewal command runs once per issue, a second run issues nothing,
//! a clock moved past two thirds of the lifetime renews, new names re-issue, a mode change alone is a
//! `chmod`, and a challenge the server cannot check is refused with its words.
//!
//! Needs root, LXC, the test node's packages and pebble (`.ci/run` installs them); without them the test
//! is skipped with a message, except under `CI=true`, where it fails.

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use phoenix_core::{
    CheckOptions, ExecuteOptions, Managers, Outcome, Plan, PlanOptions, Resource, SourceFile,
};
use phoenix_edge::EdgeManager;
use phoenix_edge::certificates::inspect;
use phoenix_testing::knot::{Knot, SECRET};
use phoenix_testing::node::TestNode;
use phoenix_testing::pebble::Pebble;
use phoenix_testing::{actions, changed_fields, fixture, outcome, workspace};

const ZONE: &str = "lab.example.org";
const CERT: &str = "/etc/phoenix-test/ssl/lab.example.org.crt";
const KEY: &str = "/etc/phoenix-test/ssl/lab.example.org.key";
const ADDRESS: &str = "sync/certificate/lab.example.org";
const DAY: Duration = Duration::from_secs(24 * 3600);

/// The homelab's public zone and gateway certificate, from `pebble` through `knot`; `certificate`
/// replaces the certificate's own keys.
fn steps(knot: &Knot, key_file: &str, pebble: &Pebble, certificate: &str) -> Vec<Resource> {
    let trust = format!(r#""ca_file": "{}""#, pebble.ca_file.display());
    steps_trusting(knot, key_file, pebble, &trust, certificate)
}

/// [`steps`], the issuer's HTTPS checked as `trust` says.
fn steps_trusting(
    knot: &Knot,
    key_file: &str,
    pebble: &Pebble,
    trust: &str,
    certificate: &str,
) -> Vec<Resource> {
    let dir = workspace().join("examples/homelab");
    let section = format!(
        r#""address": "203.0.113.10", "server": {} }},
  "certificates": {{
    "issuers": {{ "public": {{ "directory": "{}", {trust} }} }},
    "issue": [{{ "cert_path": "{CERT}", "key_path": "{KEY}", "issuer": "public",
      "post_renewal_command": "date +%s%N >> /root/renewed", {certificate} }}]"#,
        knot.server_json(key_file),
        pebble.directory,
    );
    let sources: Vec<SourceFile> = fixture::sources(&dir)
        .into_iter()
        .map(|source| {
            let text = source.text().replace(r#""address": "203.0.113.10""#, &section);
            SourceFile::new(source.kind(), source.path().to_owned(), text)
        })
        .collect();
    let validation = phoenix_core::validate(sources.clone(), &CheckOptions::default());
    assert!(!validation.has_errors(), "{:#?}", validation.problems());
    fixture::resources(sources, &CheckOptions::default())
        .into_iter()
        .filter(|resource| {
            let address = resource.address.to_string();
            address == ADDRESS || address.starts_with("sync/dns/public/")
        })
        .collect()
}

const NAMES: &str = r#""common_name": "lab.example.org", "sans": ["*.lab.example.org"], "owner": "root:www-data", "permissions": "640""#;

async fn converge(resources: &[Resource], managers: &Managers) -> Plan {
    let plan = phoenix_testing::plan(resources.to_vec(), managers, &PlanOptions::default()).await;
    let report = phoenix_testing::apply(&plan, managers, &ExecuteOptions::default()).await;
    assert!(report.succeeded(), "{report:#?}");
    plan
}

fn renewals(node: &TestNode) -> usize {
    node.exec(&["sh", "-c", "cat /root/renewed 2>/dev/null"])
        .stdout
        .lines()
        .count()
}

fn stat(node: &TestNode, path: &str) -> String {
    node.exec(&["stat", "-c", "%U:%G %a", path])
        .stdout
        .trim()
        .to_owned()
}

fn live(node: &TestNode) -> String {
    node.exec(&["cat", CERT]).stdout
}

/// A test node running Knot for the homelab's zone, pebble checking names at that Knot, and the TSIG key in
/// a file of its own.
struct Servers {
    node: TestNode,
    knot: Knot,
    pebble: Pebble,
    key_dir: std::path::PathBuf,
    key_file: String,
}

fn servers(name: &str) -> Option<Servers> {
    let node = TestNode::start()?;
    let knot = Knot::start(
        &node,
        ZONE,
        "@ SOA ns1 hostmaster 1 3600 600 86400 300\n@ NS ns1\nns1 A 192.0.2.53\n",
    );
    let pebble = Pebble::start(&format!("127.0.0.1:{}", knot.port), DAY)?;
    let key_dir = std::env::temp_dir().join(format!("phoenix-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&key_dir).expect("creates a directory");
    let key_file = key_dir.join("tsig.key");
    std::fs::write(&key_file, format!("{SECRET}\n")).expect("writes the key");
    let key_file = key_file.display().to_string();
    Some(Servers {
        node,
        knot,
        pebble,
        key_dir,
        key_file,
    })
}

#[tokio::test]
async fn certificates_come_from_a_real_acme_server_and_are_renewed_only_when_due() {
    let Some(Servers {
        node,
        knot,
        pebble,
        key_dir,
        key_file,
    }) = servers("certificates")
    else {
        return;
    };
    let now = Arc::new(Mutex::new(SystemTime::now()));
    let clock = Arc::clone(&now);
    let mut managers = Managers::default();
    managers.register(Arc::new(
        EdgeManager::new(node.channel())
            .with_clock(Arc::new(move || *clock.lock().expect("the clock")))
            .with_ca_in(Arc::new(node.guest())),
    ));
    let resources = steps(&knot, &key_file, &pebble, NAMES);
    assert_eq!(resources.len(), 2, "{resources:#?}");

    // First run: the zone, then the certificate, issued by pebble under its root, for both names.
    let plan = converge(&resources, &managers).await;
    assert_eq!(
        changed_fields(&plan, ADDRESS),
        ["current", "key_mode", "names", "owner"]
    );
    let issued = inspect(&live(&node)).expect("a certificate on the node");
    let mut names = issued.names.clone();
    names.sort();
    assert_eq!(names, ["*.lab.example.org", "lab.example.org"]);
    // pebble counts the last second in: valid for the day less one second.
    let lifetime = issued.not_after - issued.not_before;
    assert!(
        (DAY.as_secs() as i64 - 1..=DAY.as_secs() as i64).contains(&lifetime),
        "{lifetime}"
    );
    let root = pebble.root();
    node.exec(&["sh", "-c", "mkdir -p /root/pebble"]);
    let wrote = node.exec(&[
        "sh",
        "-c",
        &format!("cat > /root/pebble/root.pem <<'EOF'\n{root}EOF"),
    ]);
    assert!(wrote.success());
    let verified = node.exec(&[
        "sh",
        "-c",
        &format!("openssl verify -CAfile /root/pebble/root.pem -untrusted {CERT} {CERT}"),
    ]);
    assert!(
        verified.success(),
        "the chain verifies under pebble's root: {verified:?}"
    );
    assert_eq!(stat(&node, KEY), "root:www-data 640");
    assert_eq!(stat(&node, CERT), "root:www-data 644");
    assert_eq!(stat(&node, "/var/lib/phoenix/acme/public.json"), "root:root 600");
    let account = node.exec(&["cat", "/var/lib/phoenix/acme/public.json"]).stdout;
    assert_eq!(renewals(&node), 1);
    // The challenge records are gone again.
    assert_eq!(
        knot.ask(&node, "_acme-challenge.lab.example.org", "TXT"),
        Vec::<String>::new()
    );

    // Second run: nothing issued, the account kept.
    let plan = converge(&resources, &managers).await;
    assert_eq!(actions(&plan), []);
    assert_eq!(renewals(&node), 1);
    assert_eq!(
        node.exec(&["cat", "/var/lib/phoenix/acme/public.json"]).stdout,
        account
    );

    // Fifteen hours on, still current; seventeen, past two thirds of the day: renewed.
    *now.lock().expect("the clock") += Duration::from_secs(15 * 3600);
    assert_eq!(actions(&converge(&resources, &managers).await), []);
    *now.lock().expect("the clock") += Duration::from_secs(2 * 3600);
    let plan = converge(&resources, &managers).await;
    assert_eq!(changed_fields(&plan, ADDRESS), ["current"]);
    assert_eq!(renewals(&node), 2);
    assert_ne!(inspect(&live(&node)).expect("renewed").not_before, 0);
    assert_eq!(
        node.exec(&["cat", "/var/lib/phoenix/acme/public.json"]).stdout,
        account
    );
    *now.lock().expect("the clock") = SystemTime::now();
    assert_eq!(actions(&converge(&resources, &managers).await), []);

    // A name more: issued again, with it.
    let more = steps(
        &knot,
        &key_file,
        &pebble,
        &NAMES.replace(
            r#"["*.lab.example.org"]"#,
            r#"["*.lab.example.org", "ca.lab.example.org"]"#,
        ),
    );
    let plan = converge(&more, &managers).await;
    assert_eq!(changed_fields(&plan, ADDRESS), ["names"]);
    assert_eq!(
        inspect(&live(&node)).expect("re-issued").names.len(),
        3,
        "{}",
        live(&node)
    );
    assert_eq!(renewals(&node), 3);

    // The key's mode alone: changed in place, nothing issued.
    let before = live(&node);
    let tighter = steps(
        &knot,
        &key_file,
        &pebble,
        &NAMES
            .replace(
                r#"["*.lab.example.org"]"#,
                r#"["*.lab.example.org", "ca.lab.example.org"]"#,
            )
            .replace(r#""permissions": "640""#, r#""permissions": "600""#),
    );
    let plan = converge(&tighter, &managers).await;
    assert_eq!(changed_fields(&plan, ADDRESS), ["key_mode"]);
    assert_eq!(stat(&node, KEY), "root:www-data 600");
    assert_eq!(live(&node), before);
    assert_eq!(renewals(&node), 3);
    assert_eq!(actions(&converge(&tighter, &managers).await), []);

    // The issuer's root read from its CA container, as Step-CA's would be (pebble's HTTPS CA where Step-CA
    // keeps its root), and pinned on the node by its SHA-256.
    let root = std::fs::read_to_string(&pebble.ca_file).expect("reads the CA");
    let placed = node.exec(&[
        "sh",
        "-c",
        &format!("mkdir -p /etc/step-ca/certs && cat > /etc/step-ca/certs/root_ca.crt <<'EOF'\n{root}EOF"),
    ]);
    assert!(placed.success(), "{placed:?}");
    let www = NAMES.replace(
        r#"["*.lab.example.org"]"#,
        r#"["*.lab.example.org", "www.lab.example.org"]"#,
    );
    let pinned = steps_trusting(&knot, &key_file, &pebble, r#""ca_container": 103"#, &www);
    converge(&pinned, &managers).await;
    assert_eq!(inspect(&live(&node)).expect("issued").names.len(), 3);
    let fingerprint = std::process::Command::new("openssl")
        .args(["x509", "-noout", "-fingerprint", "-sha256", "-in"])
        .arg(&pebble.ca_file)
        .output()
        .expect("runs openssl");
    let fingerprint: String = String::from_utf8_lossy(&fingerprint.stdout)
        .split('=')
        .nth(1)
        .expect("a fingerprint")
        .trim()
        .replace(':', "")
        .to_ascii_lowercase();
    let pin = "/var/lib/phoenix/acme/public.root-sha256";
    assert_eq!(node.exec(&["cat", pin]).stdout, fingerprint);
    assert_eq!(stat(&node, pin), "root:root 600");
    // The CA initialised again (another root): nothing is issued from it.
    let other = node.exec(&[
        "sh",
        "-c",
        "openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=another-root -keyout /dev/null \
         -out /etc/step-ca/certs/root_ca.crt 2>/dev/null",
    ]);
    assert!(other.success(), "{other:?}");
    let before = live(&node);
    let changed = steps_trusting(&knot, &key_file, &pebble, r#""ca_container": 103"#, NAMES);
    let plan = phoenix_testing::plan(changed, &managers, &PlanOptions::default()).await;
    let report = phoenix_testing::apply(&plan, &managers, &ExecuteOptions::default()).await;
    let Outcome::Failed { error, .. } = outcome(&report, ADDRESS) else {
        panic!("a new root is refused: {report:#?}")
    };
    assert!(
        error.contains("changed since Phoenix pinned it") && error.contains(&fingerprint),
        "{error}"
    );
    assert_eq!(live(&node), before);

    // A server that cannot check the challenge (its DNS server does not answer): refused, in its words,
    // and nothing on the node changes.
    let Some(blind) = Pebble::start("127.0.0.1:9", DAY) else {
        return;
    };
    let refused = steps(&knot, &key_file, &blind, NAMES);
    node.exec(&["rm", "-f", "/var/lib/phoenix/acme/public.json"]);
    let plan = phoenix_testing::plan(refused.clone(), &managers, &PlanOptions::default()).await;
    let report = phoenix_testing::apply(&plan, &managers, &ExecuteOptions::default()).await;
    let Outcome::Failed { error, .. } = outcome(&report, ADDRESS) else {
        panic!("pebble cannot check the record: {report:#?}")
    };
    assert!(error.contains("refused to issue lab.example.org"), "{error}");
    assert!(
        error.to_lowercase().contains("dns"),
        "the server's reason: {error}"
    );
    assert_eq!(live(&node), before);
    assert_eq!(
        knot.ask(&node, "_acme-challenge.lab.example.org", "TXT"),
        Vec::<String>::new()
    );
    let _ = std::fs::remove_dir_all(&key_dir);
}

/// http-01 end to end: the homelab's gateway (Debian's nginx in the node) is converged first on pebble's
/// check port, the public view publishes its names at loopback to Knot (which pebble resolves names with),
/// Phoenix writes the answers where the gateway's challenge location serves them, and the gateway then
/// serves the issued certificate, which verifies under pebble's root.
#[tokio::test]
async fn http_01_answers_are_served_by_the_gateway_which_then_serves_the_certificate() {
    let Some(Servers {
        node,
        knot,
        pebble,
        key_dir,
        key_file,
    }) = servers("http01")
    else {
        return;
    };
    let https = phoenix_testing::knot::free_port();
    // Debian's default site claims port 80's default_server; nginx needs some certificate to start with.
    assert!(
        node.exec(&["rm", "-f", "/etc/nginx/sites-enabled/default"])
            .success()
    );
    let made = node.exec(&[
        "sh",
        "-c",
        "mkdir -p /etc/nginx/ssl && openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=placeholder \
         -keyout /etc/nginx/ssl/lab.example.org.key -out /etc/nginx/ssl/lab.example.org.crt 2>/dev/null",
    ]);
    assert!(made.success(), "{made:?}");
    let dir = workspace().join("target/tmp/certificates-http01");
    let _ = std::fs::remove_dir_all(&dir);
    phoenix_testing::copy_dir(&workspace().join("examples/homelab"), &dir);
    let path = dir.join("phoenix_hypervisor_config.json");
    let text = std::fs::read_to_string(&path).expect("reads");
    let text = text
        .replace(
            r#""routes": [{ "host": "ca.lab.example.org", "guest": 103, "port": 9000, "scheme": "https" }]"#,
            &format!(
                r#""routes": [{{ "host": "ca.lab.example.org", "guest": 103, "port": 9000, "scheme": "https" }}], "http_port": {}, "https_port": {https}"#,
                pebble.http_port
            ),
        )
        .replace(
            r#""address": "203.0.113.10""#,
            &format!(
                r#""address": "127.0.0.1", "server": {} }},
  "certificates": {{
    "issuers": {{ "public": {{ "directory": "{}", "ca_file": "{}", "challenge": "http-01" }} }},
    "issue": [{{ "common_name": "lab.example.org", "sans": ["ca.lab.example.org"], "issuer": "public",
      "cert_path": "/etc/nginx/ssl/lab.example.org.crt", "key_path": "/etc/nginx/ssl/lab.example.org.key",
      "post_renewal_command": "nginx -s reload" }}]"#,
                knot.server_json(&key_file),
                pebble.directory,
                pebble.ca_file.display()
            ),
        );
    std::fs::write(&path, text).expect("writes");
    let estate = fixture::estate(fixture::sources(&dir), &CheckOptions::default());
    let resources: Vec<Resource> = phoenix_core::resources(&estate)
        .into_iter()
        .filter(|resource| {
            let address = resource.address.to_string();
            address == ADDRESS || address == "sync/gateway" || address.starts_with("sync/dns/public/")
        })
        .collect();
    assert_eq!(resources.len(), 3, "{resources:#?}");
    let site = phoenix_edge::gateway::site(&estate, &dir).expect("a gateway");
    let mut managers = Managers::default();
    managers.register(Arc::new(
        EdgeManager::new(node.channel()).with_gateway_in(site, Arc::new(node.guest())),
    ));

    // The placeholder is current and its key 600: only its names differ.
    let plan = converge(&resources, &managers).await;
    assert_eq!(changed_fields(&plan, ADDRESS), ["names"]);
    let mut names = inspect(&live_at(&node, "/etc/nginx/ssl/lab.example.org.crt"))
        .expect("issued")
        .names;
    names.sort();
    assert_eq!(names, ["ca.lab.example.org", "lab.example.org"]);
    // The answers are gone; the gateway, reloaded, serves the new certificate.
    let left = node.exec(&[
        "sh",
        "-c",
        "ls -A /var/lib/phoenix/acme-challenge/.well-known/acme-challenge",
    ]);
    assert_eq!(left.stdout.trim(), "", "{left:?}");
    let root = key_dir.join("pebble-root.pem");
    std::fs::write(&root, pebble.root()).expect("writes the root");
    // nginx's reload replaces its workers in the background: ask until the new certificate answers.
    let serves = || {
        std::process::Command::new("curl")
            .args(["-s", "-o", "/dev/null", "--max-time", "10", "--cacert"])
            .arg(&root)
            .arg("--resolve")
            .arg(format!("lab.example.org:{https}:127.0.0.1"))
            .arg(format!("https://lab.example.org:{https}/"))
            .status()
            .expect("curl runs")
    };
    let mut served = serves();
    for _ in 0..50 {
        if served.success() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
        served = serves();
    }
    assert!(
        served.success(),
        "the gateway's certificate verifies under pebble's root: {served:?}"
    );

    assert_eq!(actions(&converge(&resources, &managers).await), []);
    let _ = std::fs::remove_dir_all(&key_dir);
}

fn live_at(node: &TestNode, path: &str) -> String {
    node.exec(&["cat", path]).stdout
}
