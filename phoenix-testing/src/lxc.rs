//! Real LXC containers from the busybox template, named after CTIDs, for what Phoenix does through
//! `lxc-attach` on a node. They need root and LXC (`apt-get install lxc busybox-static`).

use std::path::PathBuf;
use std::process::Command;

use crate::unavailable;

/// A running busybox container, destroyed when dropped.
pub struct BusyboxContainer {
    ctid: u32,
}

impl BusyboxContainer {
    /// Creates and starts container `ctid` (destroying one left by an earlier run); `None` after
    /// [`unavailable`] without root or LXC.
    pub fn start(ctid: u32) -> Option<BusyboxContainer> {
        let root = Command::new("id")
            .arg("-u")
            .output()
            .is_ok_and(|output| output.stdout == b"0\n");
        let lxc = Command::new("lxc-create")
            .arg("--version")
            .output()
            .is_ok_and(|output| output.status.success());
        if !(root && lxc) {
            unavailable("real LXC is not available (needs root and `apt-get install lxc busybox-static`)");
            return None;
        }
        let config = std::env::temp_dir().join("phoenix-lxc-empty-network.conf");
        std::fs::write(&config, "lxc.net.0.type = empty\n").expect("writes");
        let name = ctid.to_string();
        let _ = Command::new("lxc-destroy").args(["-f", "-n", &name]).output();
        run(Command::new("lxc-create")
            .args(["-n", &name, "-t", "busybox", "-f"])
            .arg(&config));
        run(Command::new("lxc-start").args(["-n", &name]));
        run(Command::new("lxc-wait").args(["-n", &name, "-s", "RUNNING", "-t", "10"]));
        Some(BusyboxContainer { ctid })
    }

    /// Its root file system, as the host sees it.
    pub fn rootfs(&self) -> PathBuf {
        PathBuf::from(format!("/var/lib/lxc/{}/rootfs", self.ctid))
    }

    /// Stops it (it stays defined).
    pub fn stop(&self) {
        run(Command::new("lxc-stop").args(["-k", "-n", &self.ctid.to_string()]));
    }
}

fn run(command: &mut Command) {
    let output = command.output().expect("runs");
    assert!(
        output.status.success(),
        "{command:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

impl Drop for BusyboxContainer {
    fn drop(&mut self) {
        let _ = Command::new("lxc-destroy")
            .args(["-f", "-n", &self.ctid.to_string()])
            .output();
    }
}
