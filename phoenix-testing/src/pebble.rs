//! pebble, Let's Encrypt's ACME test server (Debian's package), on loopback: its HTTPS under a CA made here
//! with `openssl`, its dns-01 checks sent to the DNS server a test names, certificates valid for as long
//! as the test says. It stops on drop.

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::knot::free_port;

/// A running pebble.
#[derive(Debug)]
pub struct Pebble {
    child: Child,
    dir: PathBuf,
    /// Its ACME directory URL.
    pub directory: String,
    /// The CA its HTTPS certificate is signed by, to trust explicitly.
    pub ca_file: PathBuf,
    /// The port it sends http-01 checks to, on the address a name resolves to.
    pub http_port: u16,
    management: u16,
}

fn openssl(dir: &Path, args: &[&str]) {
    let output = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("runs openssl");
    assert!(
        output.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

impl Pebble {
    /// Starts pebble checking dns-01 records at `dns_server` (`127.0.0.1:5353`) and issuing certificates
    /// valid for `validity`; `None` after [`crate::unavailable`] when pebble or openssl is missing.
    #[track_caller]
    pub fn start(dns_server: &str, validity: Duration) -> Option<Pebble> {
        for program in ["pebble", "openssl", "curl"] {
            if !crate::node::on_path(program) {
                crate::unavailable(&format!(
                    "no ACME test server: `{program}` is missing (`apt-get install pebble openssl curl`)"
                ));
                return None;
            }
        }
        let dir = std::env::temp_dir().join(format!("phoenix-pebble-{}-{}", std::process::id(), free_port()));
        std::fs::create_dir_all(&dir).expect("creates pebble's directory");
        let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"];
        let mut ca = vec!["req", "-x509"];
        ca.extend(ec);
        ca.extend([
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "2",
            "-subj",
            "/CN=Phoenix test pebble CA",
        ]);
        openssl(&dir, &ca);
        let mut leaf = vec!["req"];
        leaf.extend(ec);
        leaf.extend(["-keyout", "key.pem", "-out", "leaf.csr", "-subj", "/CN=localhost"]);
        openssl(&dir, &leaf);
        std::fs::write(
            dir.join("leaf.ext"),
            "subjectAltName=IP:127.0.0.1,DNS:localhost\n",
        )
        .expect("writes");
        openssl(
            &dir,
            &[
                "x509",
                "-req",
                "-in",
                "leaf.csr",
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                "cert.pem",
                "-days",
                "2",
                "-extfile",
                "leaf.ext",
            ],
        );
        let (port, management, http_port) = (free_port(), free_port(), free_port());
        let config = serde_json::json!({
            "pebble": {
                "listenAddress": format!("127.0.0.1:{port}"),
                "managementListenAddress": format!("127.0.0.1:{management}"),
                "certificate": dir.join("cert.pem"),
                "privateKey": dir.join("key.pem"),
                "httpPort": http_port,
                "tlsPort": free_port(),
                "ocspResponderURL": "",
                "externalAccountBindingRequired": false,
                "certificateValidityPeriod": validity.as_secs(),
            }
        });
        std::fs::write(dir.join("pebble.json"), config.to_string()).expect("writes pebble's configuration");
        let log = std::fs::File::create(dir.join("pebble.log")).expect("creates the log");
        let child = Command::new("pebble")
            .args([
                "-config",
                "pebble.json",
                "-dnsserver",
                dns_server,
                "-strict=false",
            ])
            .current_dir(&dir)
            .env("PEBBLE_VA_NOSLEEP", "1")
            .env("PEBBLE_AUTHZREUSE", "0")
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .stdin(Stdio::null())
            .spawn()
            .expect("starts pebble");
        let pebble = Pebble {
            child,
            directory: format!("https://127.0.0.1:{port}/dir"),
            ca_file: dir.join("ca.pem"),
            http_port,
            dir,
            management,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "pebble does not listen: {}",
                pebble.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Some(pebble)
    }

    /// What pebble printed so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("pebble.log")).unwrap_or_default()
    }

    /// The root certificate pebble issues under (made anew at every start), PEM.
    pub fn root(&self) -> String {
        let url = format!("https://127.0.0.1:{}/roots/0", self.management);
        let output = Command::new("curl")
            .args(["-sSf", "--cacert"])
            .arg(&self.ca_file)
            .arg(url)
            .output()
            .expect("runs curl");
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }
}

impl Drop for Pebble {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
