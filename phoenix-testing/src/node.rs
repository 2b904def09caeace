//! [`TestNode`]: a real Debian bookworm machine for the tests of work on the Proxmox node (users, sudo,
//! locale, apt, sysctl, AppArmor files), reached through Phoenix's own SSH host channel, so that nothing a
//! test does there touches the machine running it.
//!
//! A node is a privileged LXC container sharing this machine's network namespace (`lxc.net.0.type =
//! none`), with `sshd` as its only process, listening on `127.0.0.1:<free port>`. Its root filesystem is an
//! overlay on a Debian root filesystem built once by `lxc-create -t debian` (debootstrap) and cached under
//! `target/test-node/` (or `$PHOENIX_TEST_NODE_DIR`); the build runs under a file lock, so test binaries
//! starting together build it once. Every node writes only to its own upper layer, which goes when it is
//! dropped. systemd does not run inside: services installed there are not started (a `policy-rc.d`
//! refuses), which also keeps them off this machine's ports. `/proc/sys` is read-only inside, as LXC mounts
//! it, so a `sysctl -w` there fails instead of changing this machine.
//!
//! Needs root, LXC, the OpenSSH client, `flock` and, for the first build, `debootstrap` and the Debian
//! mirror; where they are missing, [`TestNode::start`] follows [`crate::unavailable`].

use std::io::{BufRead, BufReader};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use phoenix_pve::guest::OnHost;
use phoenix_pve::host::{CommandOutput, HostChannel, SshHost};

/// The version of the recipe below: changing what goes into the root filesystem means changing this, so
/// that a cache built by the older recipe is not taken for the new one.
const RECIPE: &str = "bookworm-3";

/// Installed beyond what the Debian template brings (it has `openssh-server` and `locales`). A Proxmox
/// node always has ZFS's tools; here they are zfs-fuse's (the kernel has no ZFS), whose daemon a test
/// starts with [`TestNode::start_zfs`]. nginx, dnsmasq and Knot make the node stand in for the gateway
/// and DNS containers too (none of them is started by installing: `policy-rc.d` refuses).
const PACKAGES: &[&str] = &[
    "sudo",
    "apparmor",
    "tzdata",
    "zfs-fuse",
    "nginx",
    "dnsmasq-base",
    "knot",
    "knot-dnsutils",
];

/// The node's init: host keys, then `sshd` in the foreground as process 1 (it reaps its children).
const INIT: &str = "#!/bin/sh\nmkdir -p /run/sshd\nssh-keygen -A >/dev/null\nexec /usr/sbin/sshd -D -e\n";

/// Programs the nodes need on this machine (debootstrap is needed only to build the cache).
const PROGRAMS: &[&str] = &[
    "lxc-create",
    "lxc-start",
    "lxc-attach",
    "lxc-stop",
    "lxc-destroy",
    "lxc-info",
    "ssh",
    "ssh-keygen",
    "flock",
    "chroot",
];

/// Numbers the nodes of one process.
static NODES: AtomicUsize = AtomicUsize::new(0);

/// A running Debian node; stopped and destroyed on drop.
#[derive(Debug)]
pub struct TestNode {
    name: String,
    lxcpath: PathBuf,
    keys: PathBuf,
    port: u16,
    built_cache: bool,
}

/// Where the root filesystem is cached and the nodes live: `$PHOENIX_TEST_NODE_DIR`, else
/// `<workspace>/target/test-node`.
pub fn cache_dir() -> PathBuf {
    std::env::var_os("PHOENIX_TEST_NODE_DIR")
        .filter(|dir| !dir.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| crate::workspace().join("target/test-node"))
}

/// The cached root filesystem.
pub fn rootfs() -> PathBuf {
    cache_dir().join(format!("rootfs-{RECIPE}"))
}

/// The stamp written once the cached root filesystem is complete; it says how long the build took.
pub fn stamp() -> PathBuf {
    cache_dir().join(format!("rootfs-{RECIPE}.stamp"))
}

impl TestNode {
    /// Starts a fresh node, building the cached root filesystem first if there is none (a few minutes).
    /// `None` after [`crate::unavailable`] when this machine cannot run one. Blocks while it starts.
    #[track_caller]
    pub fn start() -> Option<TestNode> {
        if let Some(missing) = missing_prerequisites() {
            crate::unavailable(&format!(
                "no Debian test node: {missing} (needs root and `apt-get install lxc debootstrap openssh-client`)"
            ));
            return None;
        }
        let dir = cache_dir();
        std::fs::create_dir_all(&dir).expect("creates the test node directory");
        let built_cache = {
            let _lock = FileLock::exclusive(&dir.join("lock"));
            if stamp().is_file() {
                false
            } else if !on_path("debootstrap") {
                crate::unavailable(
                    "no Debian test node: debootstrap is missing to build its root filesystem (`apt-get install debootstrap`)",
                );
                return None;
            } else {
                build(&dir);
                true
            }
        };
        let lxcpath = dir.join("nodes");
        std::fs::create_dir_all(&lxcpath).expect("creates the nodes directory");
        sweep_abandoned(&lxcpath);
        let name = format!(
            "phoenix-node-{}-{}",
            std::process::id(),
            NODES.fetch_add(1, Ordering::Relaxed)
        );
        let keys = std::env::temp_dir().join(&name);
        let _ = std::fs::remove_dir_all(&keys);
        std::fs::create_dir_all(&keys).expect("creates the key directory");
        let mut node = TestNode {
            name,
            lxcpath,
            keys,
            port: 0,
            built_cache,
        };
        node.prepare();
        node.boot();
        Some(node)
    }

    /// The container's name, unique per process and node.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The loopback port the node's sshd listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Whether starting this node built the cached root filesystem (else it reused it).
    pub fn built_cache(&self) -> bool {
        self.built_cache
    }

    /// The ssh config file that reaches the node as host `self.name()`: port, fresh key, no host key checks.
    pub fn ssh_config(&self) -> PathBuf {
        self.keys.join("ssh_config")
    }

    /// Phoenix's SSH host channel to the node, as `PHOENIX_SSH_CONFIG` would configure it.
    pub fn ssh(&self) -> SshHost {
        SshHost::new(&self.name).with_config(self.ssh_config())
    }

    /// [`TestNode::ssh`] as the channel managers take.
    pub fn channel(&self) -> Arc<dyn HostChannel> {
        Arc::new(self.ssh())
    }

    /// The node as a guest: commands through its SSH channel, for managers that work inside a container
    /// (the node plays the container).
    pub fn guest(&self) -> OnHost {
        OnHost {
            host: self.channel(),
            name: format!("test node {}", self.name),
        }
    }

    /// Runs `argv` inside the node through `lxc-attach`, past the channel under test: for assertions.
    pub fn exec(&self, argv: &[&str]) -> CommandOutput {
        let output = self
            .lxc("lxc-attach")
            .args(["--clear-env", "--"])
            .args(argv)
            .stdin(Stdio::null())
            .output()
            .expect("runs lxc-attach");
        CommandOutput {
            status: output.status.code(),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }

    /// Starts zfs-fuse's daemon in the node and waits until `zpool` reaches it: ZFS on file-backed pools,
    /// as the tests' stand-in for a kernel with ZFS. Without the page cache for its files and with a small
    /// ARC: a FUSE daemon that needs memory while the kernel writes back its dirty pages can wait on
    /// itself, which a loaded CI machine made happen (a `test -d` on a dataset hung for 120 s). `disks` files of `size` are made under `/srv/disks`
    /// (`/srv/disks/d0`, ...), empty, for pools to be created on.
    pub fn start_zfs(&self, disks: usize, size: &str) {
        let script = format!(
            "set -e\nmkdir -p /srv/disks\nfor i in $(seq 0 {last}); do truncate -s {size} /srv/disks/d$i; done\n\
             zfs-fuse --pidfile /run/zfs-fuse.pid --disable-page-cache --max-arc-size 64 --no-kstat-mount\n\
             for _ in $(seq 50); do zpool list >/dev/null 2>&1 && exit 0; sleep 0.1; done\n\
             echo 'zfs-fuse did not answer' >&2; exit 1\n",
            last = disks.saturating_sub(1),
        );
        let output = self.exec(&["sh", "-c", &script]);
        assert!(output.success(), "starting zfs-fuse: {}", output.tail(10));
    }

    fn dir(&self) -> PathBuf {
        self.lxcpath.join(&self.name)
    }

    fn lxc(&self, program: &str) -> Command {
        let mut command = Command::new(program);
        command.arg("-P").arg(&self.lxcpath).args(["-n", &self.name]);
        command
    }

    /// The container's config, its upper layer (authorised key, hostname) and the client's key.
    fn prepare(&self) {
        let dir = self.dir();
        let upper = dir.join("upper");
        for path in [&rootfs(), &upper] {
            assert!(
                !path.to_string_lossy().contains(':'),
                "an overlay path cannot hold ':': {}",
                path.display()
            );
        }
        let key = self.keys.join("id_ed25519");
        run(Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-C", &self.name, "-f"])
            .arg(&key));
        let ssh = upper.join("root/.ssh");
        std::fs::create_dir_all(&ssh).expect("creates /root/.ssh");
        std::fs::set_permissions(&ssh, std::fs::Permissions::from_mode(0o700)).expect("chmods");
        let public = std::fs::read(key.with_extension("pub")).expect("reads the public key");
        write(&ssh.join("authorized_keys"), &public, 0o600);
        write(
            &upper.join("etc/hostname"),
            format!("{}\n", self.name).as_bytes(),
            0o644,
        );
        let config = format!(
            "lxc.include = /usr/share/lxc/config/debian.common.conf\n\
             lxc.uts.name = {name}\n\
             lxc.net.0.type = none\n\
             lxc.rootfs.path = overlay:{lower}:{upper}\n\
             lxc.init.cmd = /usr/local/sbin/phoenix-node-init\n\
             lxc.apparmor.profile = unconfined\n\
             lxc.cgroup.devices.allow = c 10:229 rwm\n\
             lxc.mount.entry = /dev/fuse dev/fuse none bind,create=file 0 0\n\
             lxc.console.logfile = {dir}/console.log\n",
            name = self.name,
            lower = rootfs().display(),
            upper = upper.display(),
            dir = dir.display(),
        );
        write(&dir.join("config"), config.as_bytes(), 0o644);
    }

    /// Starts the container with sshd on a free loopback port, and waits until it accepts connections.
    /// Another process may take the port between choosing and binding it: then sshd exits, and the start
    /// is tried again on another.
    fn boot(&mut self) {
        for _ in 0..3 {
            self.port = free_port();
            let drop_in = format!(
                "Port {}\nListenAddress 127.0.0.1\nPermitRootLogin prohibit-password\n",
                self.port
            );
            write(
                &self
                    .dir()
                    .join("upper/etc/ssh/sshd_config.d/phoenix-test-node.conf"),
                drop_in.as_bytes(),
                0o644,
            );
            let config = format!(
                "Host {name}\n  HostName 127.0.0.1\n  Port {port}\n  User root\n  IdentityFile \"{key}\"\n  \
                 IdentitiesOnly yes\n  StrictHostKeyChecking no\n  UserKnownHostsFile /dev/null\n  LogLevel ERROR\n",
                name = self.name,
                port = self.port,
                key = self.keys.join("id_ed25519").display(),
            );
            write(&self.ssh_config(), config.as_bytes(), 0o600);
            let log = self.dir().join("lxc.log");
            run(self.lxc("lxc-start").arg("-o").arg(&log).args(["-l", "INFO"]));
            if self.listening() {
                return;
            }
            let _ = self.lxc("lxc-stop").arg("-k").output();
        }
        let console = std::fs::read_to_string(self.dir().join("console.log")).unwrap_or_default();
        panic!("the test node's sshd never listened; its console:\n{console}");
    }

    /// Whether sshd accepts connections within 15 s; false as soon as the container has stopped.
    fn listening(&self) -> bool {
        let deadline = Instant::now() + Duration::from_secs(15);
        let address = (Ipv4Addr::LOCALHOST, self.port).into();
        let mut checked = Instant::now();
        while Instant::now() < deadline {
            if TcpStream::connect_timeout(&address, Duration::from_millis(200)).is_ok() {
                return true;
            }
            if checked.elapsed() > Duration::from_secs(1) {
                checked = Instant::now();
                let state = self.lxc("lxc-info").arg("-s").output().expect("runs lxc-info");
                if !String::from_utf8_lossy(&state.stdout).contains("RUNNING") {
                    return false;
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }
}

impl Drop for TestNode {
    fn drop(&mut self) {
        destroy(&self.lxcpath, &self.name);
        let _ = std::fs::remove_dir_all(&self.keys);
    }
}

/// Stops and destroys a node: its upper layer goes, the cached root filesystem under it stays.
fn destroy(lxcpath: &Path, name: &str) {
    let lxc = |program: &str, extra: &[&str]| {
        let _ = Command::new(program)
            .arg("-P")
            .arg(lxcpath)
            .args(["-n", name])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    };
    lxc("lxc-stop", &["-k"]);
    lxc("lxc-destroy", &[]);
}

/// Destroys the nodes of test processes that died without dropping theirs (killed, or aborted).
fn sweep_abandoned(lxcpath: &Path) {
    let Ok(entries) = std::fs::read_dir(lxcpath) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let owner = name
            .strip_prefix("phoenix-node-")
            .and_then(|rest| rest.split('-').next())
            .and_then(|pid| pid.parse::<u32>().ok());
        if let Some(pid) = owner
            && pid != std::process::id()
            && !Path::new(&format!("/proc/{pid}")).exists()
        {
            destroy(lxcpath, &name);
        }
    }
}

/// Builds the cached root filesystem (the caller holds the lock): the Debian template, a plain bookworm
/// `sources.list`, the packages the host steps need, the node's init, then the stamp.
fn build(dir: &Path) {
    let started = Instant::now();
    let build = dir.join("build");
    let target = rootfs();
    let _ = std::fs::remove_dir_all(&build);
    let _ = std::fs::remove_dir_all(&target);
    let log_path = dir.join("build.log");
    let log = std::fs::File::create(&log_path).expect("creates the build log");
    let logged = |command: &mut Command, what: &str| {
        let status = command
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clones the log"))
            .stderr(log.try_clone().expect("clones the log"))
            .status()
            .unwrap_or_else(|error| panic!("cannot run {what}: {error}"));
        if !status.success() {
            let text = std::fs::read_to_string(&log_path).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            panic!(
                "building the test node's root filesystem: {what} failed ({status}); the end of {}:\n{}",
                log_path.display(),
                lines[lines.len().saturating_sub(30)..].join("\n")
            );
        }
    };
    logged(
        Command::new("lxc-create")
            .env("LXC_CACHE_PATH", dir.join("debootstrap"))
            .arg("-P")
            .arg(&build)
            .args(["-n", "phoenix-node-build", "-t", "debian", "--", "-r", "bookworm"]),
        "lxc-create -t debian -- -r bookworm",
    );
    let root = build.join("phoenix-node-build/rootfs");
    // The template's security line is wrong without distro-info; the main archive is all the tests need.
    write(
        &root.join("etc/apt/sources.list"),
        b"deb http://deb.debian.org/debian bookworm main\n",
        0o644,
    );
    write(
        &root.join("usr/sbin/policy-rc.d"),
        b"#!/bin/sh\n# A test node starts no services: they would listen on the machine's own ports.\nexit 101\n",
        0o755,
    );
    write(
        &root.join("usr/local/sbin/phoenix-node-init"),
        INIT.as_bytes(),
        0o755,
    );
    let script = format!(
        "apt-get update -q && apt-get install -y -q --no-install-recommends {} && apt-get clean",
        PACKAGES.join(" ")
    );
    logged(
        Command::new("chroot")
            .arg(&root)
            .args(["sh", "-c", &script])
            .env("DEBIAN_FRONTEND", "noninteractive"),
        "apt-get install in the root filesystem",
    );
    std::fs::rename(&root, &target).expect("moves the root filesystem into the cache");
    std::fs::remove_dir_all(&build).expect("removes the build container");
    let seconds = started.elapsed().as_secs();
    write(
        &stamp(),
        format!(
            "recipe {RECIPE}: lxc-create -t debian -- -r bookworm, then {PACKAGES:?}; built in {seconds} s\n"
        )
        .as_bytes(),
        0o644,
    );
}

/// What is missing on this machine to run a node, if anything (debootstrap aside).
fn missing_prerequisites() -> Option<String> {
    let root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|output| output.stdout == b"0\n");
    if !root {
        return Some("not running as root".to_owned());
    }
    let missing: Vec<&str> = PROGRAMS
        .iter()
        .copied()
        .filter(|program| !on_path(program))
        .collect();
    if !missing.is_empty() {
        return Some(format!("missing {}", missing.join(", ")));
    }
    if !Path::new("/usr/share/lxc/config/debian.common.conf").is_file() {
        return Some("missing /usr/share/lxc/config/debian.common.conf (`apt-get install lxc`)".to_owned());
    }
    None
}

/// Whether `program` is on `PATH` or in the sbin directories (root's tools, absent from some PATHs).
pub(crate) fn on_path(program: &str) -> bool {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin"].map(PathBuf::from))
        .any(|dir| dir.join(program).is_file())
}

/// A loopback port nobody listens on right now.
fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|listener| listener.local_addr())
        .expect("binds a loopback port")
        .port()
}

/// Writes a file, creating its directory, with a mode.
pub fn write(path: &Path, bytes: &[u8], mode: u32) {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)
            .unwrap_or_else(|error| panic!("creates {}: {error}", parent.display()));
    }
    std::fs::write(path, bytes).unwrap_or_else(|error| panic!("writes {}: {error}", path.display()));
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .unwrap_or_else(|error| panic!("chmods {}: {error}", path.display()));
}

/// Runs a command that must succeed, without input; its standard output.
pub fn run(command: &mut Command) -> String {
    let output = command
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|error| panic!("cannot run {command:?}: {error}"));
    assert!(
        output.status.success(),
        "{command:?} failed: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// An exclusive `flock` on a file, held by a `flock` child process for as long as this value lives: the
/// lock goes when its standard input closes, so also when this process dies.
struct FileLock(Child);

impl FileLock {
    fn exclusive(file: &Path) -> FileLock {
        let mut child = Command::new("flock")
            .arg("--exclusive")
            .arg(file)
            .args(["sh", "-c", "echo locked && exec cat >/dev/null"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("runs flock");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("piped"))
            .read_line(&mut line)
            .expect("reads from flock");
        assert_eq!(line, "locked\n", "flock {} failed", file.display());
        FileLock(child)
    }
}

impl Drop for FileLock {
    fn drop(&mut self) {
        drop(self.0.stdin.take());
        let _ = self.0.wait();
    }
}
