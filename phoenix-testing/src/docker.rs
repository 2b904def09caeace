//! A real Docker engine of the test's own (Debian's `docker.io`: `dockerd` with its own data root and
//! socket, no bridge, no iptables), and a [`GuestExec`] that runs commands on this machine against it, so
//! that what Phoenix does inside a VM with Docker is done for real. Images come from `docker import` of a
//! busybox root file system: there are no registry pulls here.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use phoenix_core::ManagerError;
use phoenix_pve::guest::{GuestExec, OnHost};
use phoenix_pve::host::{CommandOutput, LocalHost};

use crate::{unavailable, workspace};

/// A `dockerd` process, killed (with its containers) when dropped.
pub struct Dockerd {
    child: Child,
    root: PathBuf,
}

impl Dockerd {
    /// Starts an engine under `target/tmp/docker-<name>` and waits until it answers; `None` after
    /// [`unavailable`] without root or `dockerd`.
    pub fn start(name: &str) -> Option<Dockerd> {
        let root_user = Command::new("id")
            .arg("-u")
            .output()
            .is_ok_and(|output| output.stdout == b"0\n");
        let dockerd = ["dockerd", "/usr/sbin/dockerd"].into_iter().find(|program| {
            Command::new(program)
                .arg("--version")
                .output()
                .is_ok_and(|output| output.status.success())
        });
        let (true, Some(dockerd)) = (root_user, dockerd) else {
            unavailable("no Docker engine (needs root and `apt-get install docker.io`)");
            return None;
        };
        // Short: the socket path must fit in a Unix socket address.
        let root = workspace().join(format!("target/tmp/dk-{name}"));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(&root).expect("creates the engine's directory");
        let log = std::fs::File::create(root.join("dockerd.log")).expect("creates the log");
        // In a network namespace of its own: the "VMs" it plays publish ports this machine may be using.
        let child = Command::new("unshare")
            .arg("--net")
            .arg(dockerd)
            .arg("--data-root")
            .arg(root.join("data"))
            .arg("--exec-root")
            .arg(root.join("exec"))
            .arg("-H")
            .arg(format!("unix://{}", root.join("d.sock").display()))
            .arg("--pidfile")
            .arg(root.join("d.pid"))
            .args(["--bridge=none", "--iptables=false", "--userland-proxy=false"])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("starts dockerd");
        let engine = Dockerd { child, root };
        let deadline = Instant::now() + Duration::from_secs(60);
        while !engine.cli(&["version"]).status.success() {
            assert!(
                Instant::now() < deadline,
                "dockerd never answered: {}",
                std::fs::read_to_string(engine.root.join("dockerd.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        Some(engine)
    }

    /// `DOCKER_HOST` for this engine.
    pub fn host(&self) -> String {
        format!("unix://{}", self.root.join("d.sock").display())
    }

    /// Runs the Docker CLI against this engine.
    pub fn cli(&self, args: &[&str]) -> std::process::Output {
        Command::new("docker")
            .args(args)
            .env("DOCKER_HOST", self.host())
            .output()
            .expect("docker runs")
    }

    /// Imports a busybox root file system as `tag`, whose entry point sleeps whatever arguments it gets.
    pub fn import_busybox(&self, tag: &str) {
        let rootfs = self.root.join("rootfs");
        std::fs::create_dir_all(rootfs.join("bin")).expect("creates the rootfs");
        std::fs::copy("/bin/busybox", rootfs.join("bin/busybox")).expect("busybox-static is installed");
        for applet in ["sh", "sleep"] {
            let _ = std::os::unix::fs::symlink("busybox", rootfs.join("bin").join(applet));
        }
        let mut tar = Command::new("tar")
            .arg("-C")
            .arg(&rootfs)
            .args(["-c", "."])
            .stdout(Stdio::piped())
            .spawn()
            .expect("tar runs");
        let output = Command::new("docker")
            .args([
                "import",
                "--change",
                r#"ENTRYPOINT ["/bin/sh", "-c", "exec sleep 1000000", "sleeper"]"#,
                "-",
                tag,
            ])
            .env("DOCKER_HOST", self.host())
            .stdin(tar.stdout.take().expect("piped"))
            .output()
            .expect("docker import runs");
        assert!(
            tar.wait().expect("tar ends").success(),
            "tar of the rootfs failed"
        );
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }

    /// A [`GuestExec`] that plays a VM with this engine.
    pub fn guest(&self, vmid: u32) -> LocalDocker {
        LocalDocker {
            vmid,
            host: self.host(),
        }
    }
}

impl Drop for Dockerd {
    fn drop(&mut self) {
        let ids = self.cli(&["ps", "-aq"]);
        for id in String::from_utf8_lossy(&ids.stdout).split_whitespace() {
            let _ = self.cli(&["rm", "-f", id]);
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        // dockerd mounts its data root on itself; killed, it leaves that mount behind.
        let _ = Command::new("umount")
            .arg("--lazy")
            .arg(self.root.join("data"))
            .stderr(Stdio::null())
            .status();
    }
}

/// Commands run on this machine with `DOCKER_HOST` set to a test engine: a VM with Docker, played locally.
#[derive(Debug, Clone)]
pub struct LocalDocker {
    vmid: u32,
    host: String,
}

#[async_trait]
impl GuestExec for LocalDocker {
    fn describe(&self) -> String {
        format!("VM {}", self.vmid)
    }

    async fn exec(
        &self,
        argv: &[String],
        stdin: Option<&[u8]>,
        environment: &BTreeMap<String, String>,
        timeout: Duration,
    ) -> Result<CommandOutput, ManagerError> {
        // `env` sets the engine and the variables, as the guest agent's `/usr/bin/env` does in a VM.
        let mut environment = environment.clone();
        environment.insert("DOCKER_HOST".to_owned(), self.host.clone());
        let local = OnHost {
            host: std::sync::Arc::new(LocalHost),
            name: self.describe(),
        };
        local.exec(argv, stdin, &environment, timeout).await
    }
}
