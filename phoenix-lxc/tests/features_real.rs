//! The shipped feature scripts (phoenix-core/features/*.sh) run for real, through the container manager's
//! own path (`lxc-attach` through [`LocalHost`], digests recorded in the guest), in one real LXC container
//! made from the Debian bookworm root filesystem of [`phoenix_testing::TestNode`] (an overlay on it: the
//! container writes only to its own upper layer).
//!
//! What is real and what is a stand-in:
//! - `base_setup` (apt-get from Debian's mirror, locale, time zone), `docker` (Debian's `docker.io` and
//!   `docker-compose`; the engine starts and runs an image imported in the test from busybox-static's
//!   binary) and `trusted_ca` (the root certificate fetched over HTTPS from a server the test starts, with
//!   a self-signed certificate) are real.
//! - The features that download from outside (a Traefik release, Smallstep's step-cli and step-ca
//!   packages, NVIDIA's runfile, Ollama's install script, vLLM's wheel) get their download pointed at a
//!   local stand-in of the same shape (`file://` inside the container): a tar.gz holding a `traefik`
//!   shell script, `.deb` packages holding `step` and `step-ca` shell scripts, a `.run` shell script
//!   installing an `nvidia-smi` script, an install script installing an `ollama` script, a wheel with a
//!   `vllm` command. Everything around the download (apt, dpkg, pip, unit files, the CA bootstrap) is
//!   real.
//! - systemd does not run in the container (its init is a shell loop): the scripts enable their services
//!   for the next boot and say so, and `docker` starts dockerd itself, as it does on any node without
//!   systemd. The container shares this machine's network namespace (for apt and the local HTTPS server),
//!   so the test gives Docker a `daemon.json` without a bridge or iptables rules, and its container runs
//!   with `--network none`: nothing is added to this machine's network.
//!
//! Needs root, LXC, `dpkg-deb`, `openssl`, `python3` and the Debian mirror; without them the test is
//! skipped with a message, except under `CI=true`, where it fails.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;

use phoenix_core::{CheckOptions, ExecuteOptions, Managers, PlanOptions, Resource};
use phoenix_lxc::{Containers, GuestScripts, LxcManager};
use phoenix_pve::host::LocalHost;
use phoenix_pve::lifecycle::GuestType;
use phoenix_testing::node::{run, write};
use phoenix_testing::{FakePve, fixture};

/// The container's CTID, also the real container's name.
const CTID: u32 = 951;
/// Where the stand-ins live inside the container.
const STAND_INS: &str = "/srv/phoenix-stand-ins";
/// The features, in the order they run.
const FEATURES: &[&str] = &[
    "base_setup",
    "trusted_ca",
    "step_cli",
    "docker",
    "traefik",
    "step_ca",
    "nvidia",
    "ollama",
    "vllm",
];

/// The container's init: a shell that waits, reaping what it adopts, and stops on SIGTERM or SIGPWR.
const INIT: &str = "#!/bin/sh\ntrap 'exit 0' TERM INT PWR\nwhile :; do sleep 5 & wait; done\n";

/// Stand-in for the Traefik binary: answers `version` as the release does.
const TRAEFIK: &str = "#!/bin/sh\n# Stand-in for the Traefik binary (Phoenix's tests).\n\
case \"${1:-}\" in version) echo 'Version:      3.3.4'; echo 'Codename:     stand-in' ;; \
*) echo \"stand-in traefik: $*\" ;; esac\n";

/// Stand-in for the step CLI: the fingerprint of a certificate (computed with openssl, as step does),
/// and `ca bootstrap` and `ca init` recording what they were asked.
const STEP: &str = r#"#!/bin/sh
# Stand-in for the step CLI (Phoenix's tests).
set -eu
case "${1:-} ${2:-}" in
"certificate fingerprint")
    openssl x509 -in "$3" -noout -fingerprint -sha256 | sed 's/.*=//; s/://g' | tr 'A-F' 'a-f' ;;
"ca bootstrap")
    mkdir -p /root/.step/config
    shift 2
    printf '%s\n' "$@" > /root/.step/config/bootstrap-args ;;
"ca init")
    mkdir -p "${STEPPATH}/config"
    shift 2
    printf '%s\n' "$@" > "${STEPPATH}/init-args"
    echo '{"stand-in": true}' > "${STEPPATH}/config/ca.json" ;;
*)
    echo "stand-in step: not expected: $*" >&2
    exit 2 ;;
esac
"#;

const STEP_CA: &str = "#!/bin/sh\n# Stand-in for step-ca (Phoenix's tests).\necho \"stand-in step-ca: $*\"\n";

/// Stand-in for NVIDIA's runfile: checks it is run without the kernel module and installs an
/// `nvidia-smi` that answers the driver version query.
const NVIDIA_RUN: &str = r#"#!/bin/sh
# Stand-in for NVIDIA's .run installer (Phoenix's tests).
set -eu
case " $* " in *" --no-kernel-module "*) ;; *) echo "stand-in runfile: expected --no-kernel-module" >&2; exit 2 ;; esac
cat > /usr/bin/nvidia-smi <<'SMI'
#!/bin/sh
case "$*" in
*--query-gpu=driver_version*) echo 550.54.14 ;;
*) echo "NVIDIA-SMI 550.54.14    Driver Version: 550.54.14 (stand-in)" ;;
esac
SMI
chmod 755 /usr/bin/nvidia-smi
echo "$*" > /var/log/nvidia-installer-args
"#;

/// Stand-in for Ollama's install script: an `ollama` command and its unit, as the real one installs.
const OLLAMA_INSTALL: &str = r#"#!/bin/sh
# Stand-in for https://ollama.com/install.sh (Phoenix's tests).
set -eu
printf '#!/bin/sh\necho "stand-in ollama: $*"\n' > /usr/local/bin/ollama
chmod 755 /usr/local/bin/ollama
cat > /etc/systemd/system/ollama.service <<'UNIT'
[Unit]
Description=Ollama (stand-in)

[Service]
ExecStart=/usr/local/bin/ollama serve

[Install]
WantedBy=default.target
UNIT
"#;

/// Builds the stand-in vLLM wheel: a `vllm` package with a `vllm` console script.
const VLLM_WHEEL: &str = r#"
import base64, hashlib, sys, zipfile
name = "vllm-0.0.0+phoenix.standin-py3-none-any.whl"
files = {
    "vllm/__init__.py": "def main():\n    import sys\n    print('stand-in vllm:', ' '.join(sys.argv[1:]))\n",
    "vllm-0.0.0+phoenix.standin.dist-info/METADATA": "Metadata-Version: 2.1\nName: vllm\nVersion: 0.0.0+phoenix.standin\nSummary: stand-in for vLLM (Phoenix's tests)\n",
    "vllm-0.0.0+phoenix.standin.dist-info/WHEEL": "Wheel-Version: 1.0\nGenerator: phoenix-tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    "vllm-0.0.0+phoenix.standin.dist-info/entry_points.txt": "[console_scripts]\nvllm = vllm:main\n",
}
record = []
with zipfile.ZipFile(sys.argv[1] + "/" + name, "w") as wheel:
    for path, text in files.items():
        data = text.encode()
        wheel.writestr(path, data)
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record.append(f"{path},sha256={digest},{len(data)}")
    record.append("vllm-0.0.0+phoenix.standin.dist-info/RECORD,,")
    wheel.writestr("vllm-0.0.0+phoenix.standin.dist-info/RECORD", "\n".join(record) + "\n")
print(name)
"#;

/// A small HTTPS server on loopback with a self-signed certificate; it logs each request to stderr.
const HTTPS_SERVER: &str = r#"
import functools, http.server, ssl, sys
directory, cert, key = sys.argv[1:4]
handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=directory)
server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
context.load_cert_chain(cert, key)
server.socket = context.wrap_socket(server.socket, server_side=True)
print(server.server_address[1], flush=True)
server.serve_forever()
"#;

/// busybox-static's binary on this machine, the image's only program.
fn busybox() -> PathBuf {
    ["/bin/busybox", "/usr/bin/busybox"]
        .into_iter()
        .map(PathBuf::from)
        .find(|path| path.is_file())
        .expect("busybox-static is installed (`apt-get install busybox-static`)")
}

fn on_path(program: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {program}")])
        .env(
            "PATH",
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        )
        .output()
        .is_ok_and(|output| output.status.success())
}

/// The real container: an overlay on the test node's Debian root filesystem under LXC's default path
/// (named after its CTID, as `lxc-attach -n CTID` finds it), and a temporary `/etc/pve` for its config.
struct Debian {
    dir: PathBuf,
    pve_root: PathBuf,
}

impl Debian {
    /// Prepares the upper layer (init, stand-ins, Docker's daemon.json) and starts the container.
    fn start(stand_ins: &Path) -> Debian {
        let dir = PathBuf::from(format!("/var/lib/lxc/{CTID}"));
        let _ = Command::new("lxc-destroy")
            .args(["-f", "-n", &CTID.to_string()])
            .output();
        let _ = std::fs::remove_dir_all(&dir);
        let upper = dir.join("upper");
        write(
            &upper.join("usr/local/sbin/phoenix-features-init"),
            INIT.as_bytes(),
            0o755,
        );
        // The container shares this machine's network namespace: Docker adds no bridge nor iptables rules.
        write(
            &upper.join("etc/docker/daemon.json"),
            br#"{"bridge": "none", "iptables": false, "ip6tables": false}"#,
            0o644,
        );
        std::fs::create_dir_all(upper.join("srv")).expect("creates /srv");
        run(Command::new("cp").arg("-a").arg(stand_ins).arg(upper.join("srv")));
        // Without `cgroup:rw:force` LXC mounts no cgroup file system inside on this machine's hybrid cgroup v1
        // layout, and dockerd stops with `failed to start daemon: Devices cgroup isn't mounted`. Proxmox's own
        // container config mounts them; the Docker engine then uses the vfs storage driver, as overlay2 cannot
        // stack on the container's overlay root (`failed to mount overlay: invalid argument`).
        let config = format!(
            "lxc.include = /usr/share/lxc/config/debian.common.conf\n\
             lxc.uts.name = features-{CTID}\n\
             lxc.net.0.type = none\n\
             lxc.rootfs.path = overlay:{lower}:{upper}\n\
             lxc.init.cmd = /usr/local/sbin/phoenix-features-init\n\
             lxc.apparmor.profile = unconfined\n\
             lxc.mount.auto = cgroup:rw:force\n\
             lxc.console.logfile = {dir}/console.log\n",
            lower = phoenix_testing::node::rootfs().display(),
            upper = upper.display(),
            dir = dir.display(),
        );
        write(&dir.join("config"), config.as_bytes(), 0o644);
        run(Command::new("lxc-start").args(["-n", &CTID.to_string()]));
        let pve_root = std::env::temp_dir().join(format!("phoenix-features-pve-{}", std::process::id()));
        write(
            &pve_root.join(format!("nodes/pve1/lxc/{CTID}.conf")),
            b"arch: amd64\nhostname: features\n",
            0o644,
        );
        Debian { dir, pve_root }
    }

    /// Runs a command inside, past the manager: for assertions.
    fn exec(&self, argv: &[&str], stdin: Option<&[u8]>) -> String {
        let mut child = Command::new("lxc-attach")
            .args(["-n", &CTID.to_string(), "--clear-env", "--"])
            .args(argv)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("runs lxc-attach");
        if let Some(bytes) = stdin {
            use std::io::Write;
            child
                .stdin
                .take()
                .expect("piped")
                .write_all(bytes)
                .expect("feeds");
        }
        drop(child.stdin.take());
        let output = child.wait_with_output().expect("waits");
        assert!(
            output.status.success(),
            "{argv:?} in the container failed: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// What the imported image's `echo` says when Docker runs it in the container, without a network.
    fn docker_echo(&self, word: &str) -> String {
        let argv = [
            "docker",
            "run",
            "--rm",
            "--network",
            "none",
            "phoenix-test/busybox",
            "echo",
            word,
        ];
        self.exec(&argv, None)
    }

    fn read(&self, path: &str) -> String {
        self.exec(&["cat", path], None)
    }
}

impl Drop for Debian {
    fn drop(&mut self) {
        let _ = Command::new("lxc-stop")
            .args(["-k", "-n", &CTID.to_string()])
            .output();
        let _ = Command::new("lxc-destroy")
            .args(["-n", &CTID.to_string()])
            .output();
        let _ = std::fs::remove_dir_all(&self.dir);
        let _ = std::fs::remove_dir_all(&self.pve_root);
    }
}

/// A directory of this machine's, removed when the test ends.
struct RemovedOnDrop(PathBuf);

impl Drop for RemovedOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The HTTPS server the CA root is fetched from; killed on drop.
struct Https {
    child: Child,
    port: u16,
    log: PathBuf,
}

impl Https {
    fn start(dir: &Path) -> Https {
        let log = dir.join("https.log");
        let mut child = Command::new("python3")
            .args(["-c", HTTPS_SERVER])
            .arg(dir.join("www"))
            .arg(dir.join("root.pem"))
            .arg(dir.join("root.key"))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).expect("creates the log"))
            .spawn()
            .expect("runs python3");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("piped"))
            .read_line(&mut line)
            .expect("reads the port");
        let port = line
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("no port from the server: {line:?}"));
        Https { child, port, log }
    }

    /// How many times `path` was fetched.
    fn fetches(&self, path: &str) -> usize {
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        log.lines()
            .filter(|line| line.contains(&format!("\"GET {path} ")))
            .count()
    }
}

impl Drop for Https {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A `.deb` package named `name` holding `files` (path inside, text), built with dpkg-deb.
fn deb(out: &Path, work: &Path, name: &str, arch: &str, files: &[(&str, &str)]) {
    let root = work.join(name);
    write(
        &root.join("DEBIAN/control"),
        format!(
            "Package: {name}\nVersion: 0.0.0+phoenix.standin\nArchitecture: {arch}\n\
             Maintainer: Phoenix tests <tests@phoenix.invalid>\nDescription: stand-in for {name} (Phoenix's tests)\n"
        )
        .as_bytes(),
        0o644,
    );
    for (path, text) in files {
        write(&root.join(path.trim_start_matches('/')), text.as_bytes(), 0o755);
    }
    run(Command::new("dpkg-deb")
        .args(["--root-owner-group", "--build"])
        .arg(&root)
        .arg(out.join(format!("{name}_{arch}.deb"))));
}

/// The stand-ins, the CA's certificate and what the HTTPS server serves, under `dir`; the name of the
/// stand-in wheel.
fn prepare(dir: &Path, arch: &str) -> String {
    let stand_ins = dir.join("phoenix-stand-ins");
    let work = dir.join("build");
    run(Command::new("openssl")
        .args(["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2"])
        .args([
            "-subj",
            "/CN=Phoenix test root CA",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
        ])
        .arg("-keyout")
        .arg(dir.join("root.key"))
        .arg("-out")
        .arg(dir.join("root.pem")));
    std::fs::create_dir_all(dir.join("www")).expect("creates");
    std::fs::copy(dir.join("root.pem"), dir.join("www/roots.pem")).expect("copies");

    write(&work.join("traefik/traefik"), TRAEFIK.as_bytes(), 0o755);
    std::fs::create_dir_all(&stand_ins).expect("creates");
    run(Command::new("tar")
        .arg("-czf")
        .arg(stand_ins.join("traefik.tar.gz"))
        .arg("-C")
        .arg(work.join("traefik"))
        .arg("traefik"));
    deb(&stand_ins, &work, "step-cli", arch, &[("/usr/bin/step", STEP)]);
    deb(
        &stand_ins,
        &work,
        "step-ca",
        arch,
        &[("/usr/bin/step-ca", STEP_CA)],
    );
    write(
        &stand_ins.join("NVIDIA-Linux-x86_64-550.54.14.run"),
        NVIDIA_RUN.as_bytes(),
        0o755,
    );
    write(
        &stand_ins.join("ollama-install.sh"),
        OLLAMA_INSTALL.as_bytes(),
        0o755,
    );
    run(Command::new("python3").args(["-c", VLLM_WHEEL]).arg(&stand_ins))
        .trim()
        .to_owned()
}

fn lxc_configs(ca_url: &str) -> String {
    serde_json::json!({
        "lxc_configs": {
            CTID.to_string(): {
                "name": "features-real",
                "template": "local:vztmpl/debian-12-standard_12.7-1_amd64.tar.zst",
                "storage_pool": "local-lvm",
                "features": FEATURES,
                "bootstrap_ca_url": ca_url,
                "vllm_engine_config": {
                    "ModelConfig": { "model": "stand-in/tiny-model" },
                    "ServerConfig": { "port": 8123 }
                }
            }
        }
    })
    .to_string()
}

fn resources(dir: &Path) -> Vec<Resource> {
    fixture::resources(fixture::sources(dir), &CheckOptions::default())
}

fn managers(fake_client: Arc<phoenix_pve::Client>, pve_root: &Path, wheel: &str, timezone: &str) -> Managers {
    let features = phoenix_core::lint::features::CATALOGUE
        .iter()
        .map(|feature| (feature.name.to_owned(), feature.script.to_owned()))
        .collect();
    let stand_in = |file: &str| format!("file://{STAND_INS}/{file}");
    let environment = BTreeMap::from([
        ("PHOENIX_TIMEZONE".to_owned(), timezone.to_owned()),
        ("PHOENIX_CA_DNS".to_owned(), "ca.features.test".to_owned()),
        ("PHOENIX_CA_NAME".to_owned(), "Phoenix Test CA".to_owned()),
        ("PHOENIX_TRAEFIK_URL".to_owned(), stand_in("traefik.tar.gz")),
        ("PHOENIX_SMALLSTEP_URL".to_owned(), format!("file://{STAND_INS}")),
        (
            "PHOENIX_NVIDIA_RUNFILE_URL".to_owned(),
            stand_in("NVIDIA-Linux-x86_64-550.54.14.run"),
        ),
        (
            "PHOENIX_OLLAMA_INSTALL_URL".to_owned(),
            stand_in("ollama-install.sh"),
        ),
        ("PHOENIX_VLLM_PACKAGE".to_owned(), format!("{STAND_INS}/{wheel}")),
    ]);
    let scripts = GuestScripts {
        features,
        applications: BTreeMap::new(),
        environment,
    };
    let containers = Containers::new(phoenix_testing::fakepve::kit(&fake_client, GuestType::Lxc), None)
        .with_guest_access(Arc::new(LocalHost), scripts)
        .with_pve_root(pve_root.display().to_string());
    let mut managers = Managers::default();
    managers.register(Arc::new(LxcManager::new(containers)));
    managers
}

#[tokio::test]
async fn the_shipped_features_converge_in_a_debian_container_and_run_once() {
    let root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|output| output.stdout == b"0\n");
    let missing: Vec<&str> = ["lxc-start", "lxc-attach", "dpkg-deb", "openssl", "python3", "tar"]
        .into_iter()
        .filter(|program| !on_path(program))
        .collect();
    if !root || !missing.is_empty() {
        phoenix_testing::unavailable(&format!(
            "the shipped features cannot run for real here (root: {root}, missing: {missing:?}; needs \
             `apt-get install lxc debootstrap openssl dpkg python3`)"
        ));
        return;
    }
    // The Debian root filesystem is the test node's: starting one builds it when it is not cached yet.
    if !phoenix_testing::node::stamp().is_file() && phoenix_testing::TestNode::start().is_none() {
        return;
    }
    let Some(fake) = FakePve::start().await else {
        return;
    };
    let dir = std::env::temp_dir().join(format!("phoenix-features-real-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("creates");
    // Declared before the server and the container, so dropped after them.
    let _cleanup = RemovedOnDrop(dir.clone());
    let arch = run(Command::new("dpkg").arg("--print-architecture"))
        .trim()
        .to_owned();
    let wheel = prepare(&dir, &arch);
    let https = Https::start(&dir);
    let ca_url = format!("https://127.0.0.1:{}", https.port);
    let config_dir = dir.join("config");
    std::fs::create_dir_all(&config_dir).expect("creates");
    std::fs::write(
        config_dir.join("phoenix_hypervisor_config.json"),
        include_str!("fixtures/inside/phoenix_hypervisor_config.json"),
    )
    .expect("writes");
    std::fs::write(config_dir.join("phoenix_lxc_configs.json"), lxc_configs(&ca_url)).expect("writes");
    std::fs::write(
        config_dir.join("phoenix_vm_configs.json"),
        include_str!("fixtures/inside/phoenix_vm_configs.json"),
    )
    .expect("writes");

    let debian = Debian::start(&dir.join("phoenix-stand-ins"));
    let client = fake.root_client().await;
    let managers = managers(Arc::clone(&client), &debian.pve_root, &wheel, "Europe/Paris");
    let started = std::time::Instant::now();
    let plan = phoenix_testing::plan(resources(&config_dir), &managers, &PlanOptions::default()).await;
    let report = phoenix_testing::apply(&plan, &managers, &ExecuteOptions::default()).await;
    assert!(report.succeeded(), "{report:#?}");
    let first_run = started.elapsed();

    // Every feature ran once and is recorded.
    let records = debian.exec(&["grep", "-r", ".", "/var/lib/phoenix/features"], None);
    let mut recorded: Vec<&str> = records
        .lines()
        .filter_map(|line| line.strip_prefix("/var/lib/phoenix/features/")?.split(':').next())
        .collect();
    recorded.sort_unstable();
    let mut expected = FEATURES.to_vec();
    expected.sort_unstable();
    assert_eq!(recorded, expected);

    // base_setup, for real: Debian's packages, the locale and the time zone.
    let packages = debian.exec(
        &[
            "dpkg-query",
            "-W",
            "-f",
            "${Package} ${db:Status-Abbrev}\\n",
            "curl",
            "jq",
            "sudo",
            "unattended-upgrades",
        ],
        None,
    );
    assert_eq!(packages.matches(" ii ").count(), 4, "{packages}");
    assert!(
        debian
            .exec(&["locale", "-a"], None)
            .lines()
            .any(|line| line == "en_US.utf8")
    );
    assert_eq!(debian.read("/etc/timezone"), "Europe/Paris\n");
    assert!(debian.read("/etc/default/locale").contains("LANG=en_US.UTF-8"));
    assert!(
        debian
            .read("/etc/apt/apt.conf.d/20auto-upgrades")
            .contains("Unattended-Upgrade \"1\"")
    );

    // trusted_ca, for real: the root fetched over HTTPS is in the trust store.
    let pem = std::fs::read_to_string(dir.join("root.pem")).expect("reads");
    let body: String = pem.lines().filter(|line| !line.starts_with("-----")).collect();
    let store: String = debian
        .read("/etc/ssl/certs/ca-certificates.crt")
        .lines()
        .collect();
    assert!(
        store.contains(&body),
        "the test root is not in the container's trust store"
    );
    assert_eq!(https.fetches("/roots.pem"), 1);

    // step_cli (stand-in package): bootstrapped against the CA, pinned by the real root's fingerprint.
    let fingerprint = run(Command::new("openssl")
        .args(["x509", "-noout", "-fingerprint", "-sha256", "-in"])
        .arg(dir.join("root.pem")));
    let fingerprint = fingerprint
        .trim()
        .rsplit('=')
        .next()
        .expect("has =")
        .replace(':', "")
        .to_lowercase();
    assert_eq!(
        debian.read("/root/.step/config/bootstrap-args"),
        format!("--ca-url\n{ca_url}\n--fingerprint\n{fingerprint}\n--force\n")
    );

    // docker, for real: the engine answers and runs an image imported here from busybox-static.
    let image = dir.join("busybox-image");
    std::fs::create_dir_all(image.join("bin")).expect("creates");
    std::fs::copy(busybox(), image.join("bin/busybox")).expect("copies busybox");
    for applet in ["sh", "echo"] {
        std::os::unix::fs::symlink("busybox", image.join("bin").join(applet)).expect("links");
    }
    run(Command::new("tar")
        .arg("-C")
        .arg(&image)
        .arg("-cf")
        .arg(dir.join("busybox-image.tar"))
        .arg("."));
    let tarball = std::fs::read(dir.join("busybox-image.tar")).expect("reads the image");
    debian.exec(&["docker", "import", "-", "phoenix-test/busybox"], Some(&tarball));
    assert_eq!(debian.docker_echo("ok"), "ok\n");
    assert!(
        debian
            .exec(&["docker-compose", "version"], None)
            .contains("docker-compose")
    );

    // traefik (stand-in release): installed where the unit runs it, with its config, enabled.
    assert!(
        debian
            .exec(&["/usr/local/bin/traefik", "version"], None)
            .contains("3.3.4")
    );
    assert!(
        debian
            .read("/etc/traefik/traefik.yml")
            .contains("directory: /etc/traefik/dynamic")
    );
    let wants = debian.exec(&["ls", "/etc/systemd/system/multi-user.target.wants"], None);
    for unit in ["traefik.service", "step-ca.service", "vllm.service"] {
        assert!(wants.lines().any(|line| line == unit), "{unit} enabled: {wants}");
    }

    // step_ca (stand-in packages): initialised once with the declared name and DNS name.
    let init = debian.read("/etc/step-ca/init-args");
    assert!(
        init.contains("--name\nPhoenix Test CA\n--dns\nca.features.test\n"),
        "{init}"
    );
    assert!(
        debian
            .read("/etc/systemd/system/step-ca.service")
            .contains("ExecStart=/usr/bin/step-ca /etc/step-ca/config/ca.json")
    );

    // nvidia (stand-in runfile): run without the kernel module; nvidia-smi answers.
    assert!(
        debian
            .read("/var/log/nvidia-installer-args")
            .contains("--no-kernel-module")
    );
    assert!(debian.exec(&["nvidia-smi"], None).contains("550.54.14"));

    // ollama (stand-in installer): the command, and the drop-in that listens on all interfaces.
    assert!(
        debian
            .exec(&["ollama", "--version"], None)
            .contains("stand-in ollama")
    );
    assert!(
        debian
            .read("/etc/systemd/system/ollama.service.d/listen.conf")
            .contains("OLLAMA_HOST=0.0.0.0:11434")
    );

    // vllm (stand-in wheel, real venv and pip): the unit serves the declared model on the declared port.
    assert!(
        debian
            .exec(&["/opt/vllm/bin/vllm", "serve", "x"], None)
            .contains("stand-in vllm: serve x")
    );
    assert!(
        debian
            .read("/etc/systemd/system/vllm.service")
            .contains("vllm serve stand-in/tiny-model --host 0.0.0.0 --port 8123")
    );

    // The second run through the manager re-runs nothing: no change planned, no fetch, no write.
    let writes = fake.writes().await.len();
    let second = phoenix_testing::plan(resources(&config_dir), &managers, &PlanOptions::default()).await;
    phoenix_testing::assert_unchanged(&second);
    assert!(
        phoenix_testing::apply(&second, &managers, &ExecuteOptions::default())
            .await
            .succeeded()
    );
    assert_eq!(fake.writes().await.len(), writes);
    assert_eq!(https.fetches("/roots.pem"), 1, "trusted_ca did not run again");
    assert_eq!(
        debian.exec(&["grep", "-r", ".", "/var/lib/phoenix/features"], None),
        records
    );

    // A changed time zone is in every script's environment, so every feature runs again on the converged
    // container: each one is safe to run twice, and the drift is corrected.
    let started = std::time::Instant::now();
    let managers = self::managers(client, &debian.pve_root, &wheel, "UTC");
    let third = phoenix_testing::plan(resources(&config_dir), &managers, &PlanOptions::default()).await;
    assert!(third.has_changes());
    let report = phoenix_testing::apply(&third, &managers, &ExecuteOptions::default()).await;
    assert!(report.succeeded(), "{report:#?}");
    assert_eq!(debian.read("/etc/timezone"), "UTC\n");
    assert_eq!(https.fetches("/roots.pem"), 2);
    assert_ne!(
        debian.exec(&["grep", "-r", ".", "/var/lib/phoenix/features"], None),
        records
    );
    let engines = debian.exec(&["sh", "-c", "pgrep -c -x dockerd || true"], None);
    assert_eq!(engines, "1\n", "dockerd is not started twice");
    assert_eq!(debian.docker_echo("again"), "again\n");
    phoenix_testing::assert_unchanged(
        &phoenix_testing::plan(resources(&config_dir), &managers, &PlanOptions::default()).await,
    );
    eprintln!(
        "the features' first run took {} s, the run again {} s",
        first_run.as_secs(),
        started.elapsed().as_secs()
    );
}
