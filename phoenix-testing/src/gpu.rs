//! A node with two NVIDIA GPUs (two RTX 3090s at `0000:01:00.0` and `0000:41:00.0`), for tests on machines
//! that have none. The fixtures under `fixtures/nvidia` are text in the real tools' formats
//! (`/proc/devices`, the driver's `/proc/driver/nvidia/gpus/*/information`, `lspci -Dnnk`), and
//! `stand-ins.sh` holds the stand-ins that answer from them:
//!
//! - `lspci`: prints the fixture for the GPUs' current binding (none, nouveau, nvidia, vfio-pci);
//! - `curl`: answers NVIDIA's runfile URLs with a local stand-in runfile, and passes every other URL on;
//! - the runfile: checks its options, kernel headers, DKMS and nouveau as the real installer does, then
//!   installs a stand-in `nvidia-smi` and `nvidia-modprobe` and "loads" the driver: device nodes made
//!   with `mknod`, the driver's `/proc` entries bind-mounted over the kernel's, the GPUs bound to nvidia;
//! - `update-initramfs`: records its calls (the test node boots no kernel).

use std::path::Path;
use std::process::Command;

/// The fixture files, by their path under the stand-ins' state directory's `nvidia/`.
const FILES: &[(&str, &str)] = &[
    ("proc-devices", include_str!("../fixtures/nvidia/proc-devices")),
    (
        "driver/nvidia/gpus/0000:01:00.0/information",
        include_str!("../fixtures/nvidia/driver/nvidia/gpus/0000:01:00.0/information"),
    ),
    (
        "driver/nvidia/gpus/0000:41:00.0/information",
        include_str!("../fixtures/nvidia/driver/nvidia/gpus/0000:41:00.0/information"),
    ),
    ("lspci-none", include_str!("../fixtures/nvidia/lspci-none")),
    ("lspci-nouveau", include_str!("../fixtures/nvidia/lspci-nouveau")),
    ("lspci-nvidia", include_str!("../fixtures/nvidia/lspci-nvidia")),
    (
        "lspci-vfio-pci",
        include_str!("../fixtures/nvidia/lspci-vfio-pci"),
    ),
    ("stand-ins.sh", include_str!("../fixtures/nvidia/stand-ins.sh")),
];

/// The device entries a container given GPU `0` of this node gets: its node and every driver-wide one.
pub const GPU0_DEVICES: [&str; 7] = [
    "/dev/nvidia-caps/nvidia-cap1",
    "/dev/nvidia-caps/nvidia-cap2",
    "/dev/nvidia-modeset",
    "/dev/nvidia-uvm",
    "/dev/nvidia-uvm-tools",
    "/dev/nvidia0",
    "/dev/nvidiactl",
];

/// Shell that writes the fixtures under `$state/nvidia` and defines the stand-ins' functions.
fn prelude(state: &str) -> String {
    let mut script = format!("set -eu\nstate='{state}'\n");
    for (path, text) in FILES {
        let full = format!("{state}/nvidia/{path}");
        let dir = Path::new(&full).parent().expect("fixture paths have a directory");
        script.push_str(&format!(
            "mkdir -p '{}'\ncat > '{full}' <<'PHOENIX_FIXTURE'\n{text}PHOENIX_FIXTURE\n",
            dir.display()
        ));
    }
    script.push_str(&format!(
        "PHOENIX_STAND_IN_STATE='{state}'\n. '{state}/nvidia/stand-ins.sh'\n"
    ));
    script
}

/// A script for the test node (as root) that installs the stand-ins, with the GPUs bound to `binding`
/// (`none`, `nouveau` or `vfio-pci`) and a runfile for the driver `version` where NVIDIA publishes it.
pub fn stand_ins(version: &str, binding: &str) -> String {
    let state = "/var/lib/phoenix-stand-in";
    format!(
        "{}install_stand_ins '{version}'\ncp \"$state/nvidia/lspci-{binding}\" \"$state/lspci\"\n",
        prelude(state)
    )
}

/// A script for the test node that binds its GPUs to `binding`, as a reboot with another configuration
/// would.
pub fn rebind(binding: &str) -> String {
    format!("cp /var/lib/phoenix-stand-in/nvidia/lspci-{binding} /var/lib/phoenix-stand-in/lspci")
}

/// Makes under `root` on this machine the `/dev` and `/proc` of the node with its driver loaded, for code
/// that reads a node's devices under a root. `false` where device nodes cannot be made here (not root).
pub fn loaded_driver_root(root: &Path) -> bool {
    let state = root.join(".stand-in");
    let script = format!(
        "{}make_gpu_node '{}'\n",
        prelude(&state.display().to_string()),
        root.display()
    );
    Command::new("sh")
        .args(["-c", &script])
        .status()
        .is_ok_and(|status| status.success())
}
