//! NVIDIA devices as a node has them, discovered through the host channel and never assumed: the
//! character device nodes under `/dev` (`/dev/nvidia0`, `/dev/nvidiactl`, `/dev/nvidia-uvm`,
//! `/dev/nvidia-caps/nvidia-cap1`, ...) with their major and minor numbers, the majors the loaded
//! modules registered (`/proc/devices`), and the GPUs the driver drives (`/proc/driver/nvidia/gpus`).
//!
//! The majors of `nvidia-uvm` and `nvidia-caps` are allocated when the modules load, so they change
//! between boots and driver versions: a node under `/dev` whose major no loaded NVIDIA module owns is
//! stale (left by an earlier driver) and is never handed to a container.
//!
//! Container device entries ([`NvidiaDevices::for_container`]) are built from what was found: the node of
//! each assigned GPU and every driver-wide node. GPU `i` of an assignment is the `i`-th GPU in PCI bus
//! order, the order `nvidia-smi` and CUDA (`CUDA_DEVICE_ORDER=PCI_BUS_ID`) number them.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::host::{CommandOutput, HostChannel, HostError};

/// How long one discovery command may take.
const TIMEOUT: Duration = Duration::from_secs(30);

/// One character device node.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct DeviceNode {
    /// Its path on the node, `/dev/...`.
    pub path: String,
    /// Major number.
    pub major: u32,
    /// Minor number.
    pub minor: u32,
}

/// One GPU the loaded driver drives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Gpu {
    /// PCI address, `0000:01:00.0`.
    pub bus: String,
    /// The minor number of its `/dev/nvidiaN` node.
    pub minor: u32,
    /// The model, as the driver names it.
    pub model: String,
}

/// What a node has of NVIDIA's devices.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NvidiaDevices {
    /// The NVIDIA character device nodes under `/dev` (and `/dev/nvidia-caps`), by path.
    pub nodes: Vec<DeviceNode>,
    /// The character majors the loaded NVIDIA modules registered, by name (`nvidia-uvm` → 508).
    pub majors: BTreeMap<String, u32>,
    /// The GPUs the driver drives, in PCI bus order.
    pub gpus: Vec<Gpu>,
}

/// Why a container's GPU devices cannot be given.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GpuError {
    /// No NVIDIA driver is loaded on the node.
    #[error(
        "the NVIDIA driver is not loaded on node {node} (no NVIDIA devices in /proc/devices): install it \
         with `nvidia_driver` (host/nvidia), and reboot the node where it says so"
    )]
    NoDriver {
        /// The node.
        node: String,
    },
    /// The assignment names a GPU the node does not have.
    #[error("GPU {index} is assigned, but node {node} has {count} NVIDIA GPU(s) (numbered from 0)")]
    NoSuchGpu {
        /// The assigned index.
        index: u32,
        /// The node.
        node: String,
        /// How many it has.
        count: usize,
    },
    /// The GPU exists, but its device node does not (or is stale).
    #[error("node {node} has no current {path} for GPU {index} (the driver creates it when it loads)")]
    NoDeviceNode {
        /// The assigned index.
        index: u32,
        /// The node.
        node: String,
        /// The missing path.
        path: String,
    },
}

impl NvidiaDevices {
    /// Whether `node` belongs to a loaded NVIDIA module (its major is one they registered).
    pub fn is_current(&self, node: &DeviceNode) -> bool {
        self.majors.values().any(|major| *major == node.major)
    }

    /// The nodes under `/dev` that no loaded module owns.
    pub fn stale(&self) -> impl Iterator<Item = &DeviceNode> {
        self.nodes.iter().filter(|node| !self.is_current(node))
    }

    /// The device paths a container with the GPUs `indices` is given, sorted: each GPU's own node, and
    /// every current driver-wide node (`nvidiactl`, `nvidia-uvm`, the capabilities, ...).
    pub fn for_container(&self, node_name: &str, indices: &[u32]) -> Result<Vec<String>, GpuError> {
        if self.majors.is_empty() {
            return Err(GpuError::NoDriver {
                node: node_name.to_owned(),
            });
        }
        let current: Vec<&DeviceNode> = self.nodes.iter().filter(|node| self.is_current(node)).collect();
        let per_gpu = |node: &DeviceNode| gpu_minor(&node.path).is_some();
        // Without the driver's GPU list (an older driver, a restricted /proc), GPUs go in minor order.
        let minors: Vec<u32> = if self.gpus.is_empty() {
            let mut minors: Vec<u32> = current
                .iter()
                .filter(|node| per_gpu(node))
                .map(|node| node.minor)
                .collect();
            minors.sort_unstable();
            minors
        } else {
            self.gpus.iter().map(|gpu| gpu.minor).collect()
        };
        let mut paths = Vec::new();
        for &index in indices {
            let minor = *minors.get(index as usize).ok_or_else(|| GpuError::NoSuchGpu {
                index,
                node: node_name.to_owned(),
                count: minors.len(),
            })?;
            let path = format!("/dev/nvidia{minor}");
            if !current.iter().any(|node| node.path == path) {
                return Err(GpuError::NoDeviceNode {
                    index,
                    node: node_name.to_owned(),
                    path,
                });
            }
            paths.push(path);
        }
        paths.extend(
            current
                .iter()
                .filter(|node| !per_gpu(node))
                .map(|node| node.path.clone()),
        );
        paths.sort();
        paths.dedup();
        Ok(paths)
    }
}

/// The minor of a per-GPU node, `/dev/nvidia3` → 3.
fn gpu_minor(path: &str) -> Option<u32> {
    path.strip_prefix("/dev/nvidia")?.parse().ok()
}

/// Discovers the NVIDIA devices of the node `host` reaches. `root` prefixes every path read (`/` on a
/// node; a directory of fixtures in tests).
pub async fn discover(host: &dyn HostChannel, root: &str) -> Result<NvidiaDevices, HostError> {
    let root = root.trim_end_matches('/');
    let proc_devices = read(host, &["cat", "--", &format!("{root}/proc/devices")]).await?;
    let dev = format!("{root}/dev");
    let stat = read(
        host,
        &[
            "find",
            &dev,
            "-maxdepth",
            "2",
            "-name",
            "nvidia*",
            "-type",
            "c",
            "-exec",
            "stat",
            "-c",
            "%n %t %T",
            "{}",
            "+",
        ],
    )
    .await?;
    let gpus = read(
        host,
        &[
            "find",
            &format!("{root}/proc/driver/nvidia/gpus"),
            "-mindepth",
            "2",
            "-maxdepth",
            "2",
            "-name",
            "information",
            "-exec",
            "cat",
            "{}",
            "+",
        ],
    )
    .await?;
    let mut nodes = parse_stat(&stat, root);
    nodes.sort();
    Ok(NvidiaDevices {
        nodes,
        majors: parse_proc_devices(&proc_devices),
        gpus: parse_gpu_information(&gpus),
    })
}

/// Runs a read; a path that does not exist reads as nothing.
async fn read(host: &dyn HostChannel, argv: &[&str]) -> Result<String, HostError> {
    let argv: Vec<String> = argv.iter().map(|arg| (*arg).to_owned()).collect();
    let output: CommandOutput = host.run(&argv, None, TIMEOUT).await?;
    // `find` also exits 1 when a path is missing; what it found is still on standard output.
    Ok(output.stdout)
}

/// The character majors of `/proc/devices` whose names start with `nvidia`.
pub fn parse_proc_devices(text: &str) -> BTreeMap<String, u32> {
    let mut majors = BTreeMap::new();
    let mut character = false;
    for line in text.lines() {
        let line = line.trim();
        if line.ends_with(':') {
            character = line == "Character devices:";
            continue;
        }
        let Some((number, name)) = line.split_once(char::is_whitespace) else {
            continue;
        };
        let name = name.trim();
        if character
            && name.starts_with("nvidia")
            && let Ok(number) = number.parse()
        {
            majors.insert(name.to_owned(), number);
        }
    }
    majors
}

/// `stat -c '%n %t %T'` lines (major and minor in hexadecimal), with `root` taken off each path.
pub fn parse_stat(text: &str, root: &str) -> Vec<DeviceNode> {
    text.lines()
        .filter_map(|line| {
            let mut parts = line.rsplitn(3, ' ');
            let minor = u32::from_str_radix(parts.next()?, 16).ok()?;
            let major = u32::from_str_radix(parts.next()?, 16).ok()?;
            let path = parts.next()?;
            let path = path.strip_prefix(root).unwrap_or(path);
            Some(DeviceNode {
                path: path.to_owned(),
                major,
                minor,
            })
        })
        .collect()
}

/// The GPUs of the driver's `information` files (one after the other), in PCI bus order.
pub fn parse_gpu_information(text: &str) -> Vec<Gpu> {
    let mut gpus = Vec::new();
    let mut model = String::new();
    let mut bus = None;
    for line in text.lines() {
        let Some((key, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        match key.trim() {
            "Model" => model = value.to_owned(),
            "Bus Location" => bus = Some(value.to_owned()),
            "Device Minor" => {
                if let (Some(bus), Ok(minor)) = (bus.take(), value.parse()) {
                    gpus.push(Gpu {
                        bus,
                        minor,
                        model: std::mem::take(&mut model),
                    });
                }
            }
            _ => {}
        }
    }
    gpus.sort_by(|left, right| left.bus.cmp(&right.bus));
    gpus
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `/proc/devices` of a node with the driver loaded (abridged where nothing NVIDIA is).
    const PROC_DEVICES: &str = "Character devices:\n  1 mem\n  4 /dev/vc/0\n 10 misc\n195 nvidia-frontend\n\
        226 drm\n508 nvidia-uvm\n511 nvidia-caps\n\nBlock devices:\n  7 loop\n  8 sd\n253 device-mapper\n";

    fn devices(stat: &str) -> NvidiaDevices {
        NvidiaDevices {
            nodes: parse_stat(stat, "/srv/node"),
            majors: parse_proc_devices(PROC_DEVICES),
            gpus: Vec::new(),
        }
    }

    const TWO_GPUS: &str = "/srv/node/dev/nvidia0 c3 0\n/srv/node/dev/nvidia1 c3 1\n/srv/node/dev/nvidiactl c3 ff\n\
        /srv/node/dev/nvidia-uvm 1fc 0\n/srv/node/dev/nvidia-uvm-tools 1fc 1\n\
        /srv/node/dev/nvidia-caps/nvidia-cap1 1ff 1\n/srv/node/dev/nvidia-caps/nvidia-cap2 1ff 2\n";

    #[test]
    fn only_character_majors_of_nvidia_modules_count() {
        assert_eq!(
            parse_proc_devices(PROC_DEVICES),
            BTreeMap::from([
                ("nvidia-caps".to_owned(), 511),
                ("nvidia-frontend".to_owned(), 195),
                ("nvidia-uvm".to_owned(), 508),
            ])
        );
    }

    #[test]
    fn a_container_gets_its_gpus_and_every_driver_wide_node() {
        let found = devices(TWO_GPUS);
        assert_eq!(found.nodes[0].path, "/dev/nvidia0");
        assert_eq!(
            found.for_container("pve1", &[1]).unwrap(),
            [
                "/dev/nvidia-caps/nvidia-cap1",
                "/dev/nvidia-caps/nvidia-cap2",
                "/dev/nvidia-uvm",
                "/dev/nvidia-uvm-tools",
                "/dev/nvidia1",
                "/dev/nvidiactl",
            ]
        );
        assert_eq!(
            found.for_container("pve1", &[2]),
            Err(GpuError::NoSuchGpu {
                index: 2,
                node: "pve1".into(),
                count: 2
            })
        );
    }

    #[test]
    fn a_node_left_by_an_earlier_driver_is_stale_and_not_given() {
        // The uvm module registered 508 this boot; a node with last boot's 509 is stale.
        let found = devices(&TWO_GPUS.replace("nvidia-uvm-tools 1fc 1", "nvidia-uvm-tools 1fd 1"));
        let stale: Vec<&str> = found.stale().map(|node| node.path.as_str()).collect();
        assert_eq!(stale, ["/dev/nvidia-uvm-tools"]);
        assert!(
            !found
                .for_container("pve1", &[0])
                .unwrap()
                .contains(&"/dev/nvidia-uvm-tools".to_owned())
        );
    }

    #[test]
    fn gpu_numbers_follow_the_bus_order_of_the_drivers_list() {
        let information = "Model: \t\t NVIDIA GeForce RTX 3090\nIRQ:   \t\t 150\nBus Location: \t 0000:41:00.0\n\
            Device Minor: \t 0\nGPU Excluded:\t No\n\
            Model: \t\t NVIDIA GeForce RTX 3090\nBus Location: \t 0000:01:00.0\nDevice Minor: \t 1\n";
        let found = NvidiaDevices {
            gpus: parse_gpu_information(information),
            ..devices(TWO_GPUS)
        };
        assert_eq!(found.gpus[0].bus, "0000:01:00.0");
        assert_eq!(found.gpus[0].model, "NVIDIA GeForce RTX 3090");
        // GPU 0 is the first on the bus, whose node is /dev/nvidia1.
        assert!(
            found
                .for_container("pve1", &[0])
                .unwrap()
                .contains(&"/dev/nvidia1".to_owned())
        );
    }

    #[test]
    fn without_a_loaded_driver_nothing_is_given() {
        let found = NvidiaDevices::default();
        assert_eq!(
            found.for_container("pve1", &[0]),
            Err(GpuError::NoDriver { node: "pve1".into() })
        );
    }
}
