//! `host/nvidia`: the NVIDIA driver on the node, for containers that share its GPUs, on the host channel.
//!
//! What is compared: the driver version `nvidia-smi` reports (or, where the driver is installed but not
//! loaded, the version of the module on disk, `modinfo`) with the declared one; three files of Phoenix's
//! own (nouveau blacklisted, the modules loaded at boot, a udev rule that creates the device nodes when
//! they load); and that no NVIDIA GPU is bound to `vfio-pci` (`lspci -Dnnk`): a GPU passed through to a VM
//! cannot also be shared with containers, so such a node is refused, never rebound.
//!
//! Applying writes the files that differ and rebuilds the initramfs only when the blacklist changed. The
//! driver is installed only when the version differs: kernel headers for the running kernel where they
//! are missing (`proxmox-headers-<release>`), the runfile downloaded on the node with `curl`, and run
//! unattended with DKMS, so the module is rebuilt for later kernels. While nouveau still drives a GPU the
//! driver cannot load: the step blacklists it and fails, asking for a reboot; the next run installs.
//!
//! The device nodes and majors found on the node (`phoenix_pve::gpu`) are shown with the step, as facts;
//! containers' device entries are built from the same discovery by the container manager.

use std::collections::BTreeMap;
use std::time::Duration;

use phoenix_core::config::hypervisor::NvidiaDriver;
use phoenix_core::{Change, ManagerError};
use phoenix_pve::gpu;
use serde_json::{Value, json};

use crate::node::Node;
use crate::packages;

/// Phoenix's blacklist of nouveau, which would otherwise claim the GPUs first.
const BLACKLIST: (&str, &str) = (
    "/etc/modprobe.d/phoenix-nvidia.conf",
    "# Written by Phoenix (host/nvidia): the NVIDIA driver drives the GPUs, not nouveau.\n\
     blacklist nouveau\noptions nouveau modeset=0\n",
);

/// The modules loaded at boot, so the device nodes exist before any container starts.
const MODULES: (&str, &str) = (
    "/etc/modules-load.d/phoenix-nvidia.conf",
    "# Written by Phoenix (host/nvidia).\nnvidia\nnvidia_uvm\n",
);

/// Creates the device nodes when the modules load: `nvidia-smi` makes `/dev/nvidia*` and
/// `/dev/nvidiactl`; `nvidia-modprobe` makes the uvm nodes and the capability nodes.
const RULE: (&str, &str) = (
    "/etc/udev/rules.d/70-phoenix-nvidia.rules",
    "# Written by Phoenix (host/nvidia): device nodes for containers as soon as the modules load.\n\
     KERNEL==\"nvidia\", RUN+=\"/usr/bin/nvidia-smi -L\"\n\
     KERNEL==\"nvidia_uvm\", RUN+=\"/usr/bin/nvidia-modprobe -c0 -u\"\n\
     KERNEL==\"nvidia_uvm\", RUN+=\"/usr/bin/nvidia-modprobe -m\"\n",
);

/// The files, by the field that says each is in place.
const FILES: [(&str, (&str, &str)); 3] = [
    ("nouveau_blacklisted", BLACKLIST),
    ("modules_at_boot", MODULES),
    ("device_node_rule", RULE),
];

/// Where runfiles are downloaded to on the node.
const CACHE: &str = "/var/cache/phoenix";

/// How long the runfile's download and install, and the initramfs, may take.
const INSTALL_TIMEOUT: Duration = Duration::from_secs(30 * 60);

/// The declared fields.
pub(crate) fn desired(driver: &NvidiaDriver) -> BTreeMap<String, Value> {
    let mut fields = BTreeMap::from([
        ("driver_version".to_owned(), json!(driver.version)),
        ("vfio_bound_gpus".to_owned(), json!([])),
    ]);
    for (field, _) in FILES {
        fields.insert(field.to_owned(), json!(true));
    }
    fields
}

/// One NVIDIA PCI function as `lspci -Dnnk` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct PciDevice {
    address: String,
    /// The class code, `0300` for a VGA controller.
    class: String,
    description: String,
    driver: Option<String>,
}

impl PciDevice {
    /// A display controller (VGA, 3D): the GPU itself, not its audio or USB function.
    fn is_gpu(&self) -> bool {
        self.class.starts_with("03")
    }
}

/// What the node has. The GPUs, device nodes and majors are facts shown with the step, not compared.
pub(crate) async fn observe(node: &Node) -> Result<BTreeMap<String, Value>, ManagerError> {
    let mut fields = BTreeMap::new();
    if let Some(version) = installed_version(node).await? {
        fields.insert("driver_version".to_owned(), json!(version));
    }
    for (field, (path, text)) in FILES {
        let present = node.read_file(path).await?.as_deref() == Some(text);
        fields.insert(field.to_owned(), json!(present));
    }
    // Without lspci (pciutils comes with host/apt/packages, which may not have run yet) the binding is
    // not known: it is checked again when the step applies.
    if let Some(devices) = pci_devices(node).await? {
        fields.insert("vfio_bound_gpus".to_owned(), json!(vfio_bound(&devices)));
        let gpus: Vec<Value> = devices
            .iter()
            .filter(|device| device.is_gpu())
            .map(|device| {
                json!({
                    "address": device.address,
                    "model": device.description,
                    "driver": device.driver,
                })
            })
            .collect();
        fields.insert("gpus".to_owned(), Value::Array(gpus));
    }
    let found = gpu::discover(node.channel()?, "/")
        .await
        .map_err(phoenix_pve::guest::host_error)?;
    let nodes: serde_json::Map<String, Value> = found
        .nodes
        .iter()
        .map(|device| {
            let state = if found.is_current(device) { "" } else { " (stale)" };
            (
                device.path.clone(),
                json!(format!("c {}:{}{state}", device.major, device.minor)),
            )
        })
        .collect();
    fields.insert("device_nodes".to_owned(), Value::Object(nodes));
    fields.insert("device_majors".to_owned(), json!(found.majors));
    Ok(fields)
}

/// The driver version the node has: loaded (`nvidia-smi`), else on disk (`modinfo`), else none.
async fn installed_version(node: &Node) -> Result<Option<String>, ManagerError> {
    let smi = [
        "env",
        "nvidia-smi",
        "--query-gpu=driver_version",
        "--format=csv,noheader",
    ];
    let output = node.run(&smi, None).await?;
    if output.success()
        && let Some(version) = output.stdout.lines().map(str::trim).find(|line| !line.is_empty())
    {
        return Ok(Some(version.to_owned()));
    }
    let modinfo = node
        .run(&["env", "modinfo", "-F", "version", "nvidia"], None)
        .await?;
    Ok(modinfo
        .success()
        .then(|| modinfo.stdout.trim().to_owned())
        .filter(|version| !version.is_empty()))
}

/// The NVIDIA PCI functions, or `None` where `lspci` is not installed.
async fn pci_devices(node: &Node) -> Result<Option<Vec<PciDevice>>, ManagerError> {
    let argv = ["env", "lspci", "-Dnnk", "-d", "10de:"];
    let output = node.run(&argv, None).await?;
    match output.status {
        Some(0) => Ok(Some(parse_lspci(&output.stdout))),
        // `env` says 127 when there is no such program.
        Some(127) => Ok(None),
        _ => Err(node.failure(&argv, &output)),
    }
}

fn vfio_bound(devices: &[PciDevice]) -> Vec<String> {
    devices
        .iter()
        .filter(|device| device.is_gpu() && device.driver.as_deref() == Some("vfio-pci"))
        .map(|device| device.address.clone())
        .collect()
}

/// `lspci -Dnnk` output: a line per function, and indented lines about it.
fn parse_lspci(text: &str) -> Vec<PciDevice> {
    let mut devices: Vec<PciDevice> = Vec::new();
    for line in text.lines() {
        if line.starts_with(char::is_whitespace) {
            if let (Some(device), Some(driver)) = (
                devices.last_mut(),
                line.trim().strip_prefix("Kernel driver in use:"),
            ) {
                device.driver = Some(driver.trim().to_owned());
            }
            continue;
        }
        let Some((address, rest)) = line.split_once(' ') else {
            continue;
        };
        // `VGA compatible controller [0300]: NVIDIA Corporation GA102 [GeForce RTX 3090] [10de:2204] (rev a1)`
        let (class, description) = rest.split_once("]: ").unwrap_or(("", rest));
        let class = class.rsplit('[').next().unwrap_or_default().to_owned();
        devices.push(PciDevice {
            address: address.to_owned(),
            class,
            description: description.to_owned(),
            driver: None,
        });
    }
    devices
}

/// Converges the step: refuses a GPU bound to vfio-pci, writes the files that differ, and installs the
/// driver when its version differs.
pub(crate) async fn apply(node: &Node, driver: &NvidiaDriver, change: &Change) -> Result<(), ManagerError> {
    let devices = pci_devices(node).await?.ok_or_else(|| {
        ManagerError::failed(format!(
            "node {} has no `lspci` (Debian's pciutils) to find its GPUs with",
            node.name()
        ))
    })?;
    let bound = vfio_bound(&devices);
    if !bound.is_empty() {
        return Err(ManagerError::failed(format!(
            "node {}: the NVIDIA GPU(s) {} are bound to vfio-pci, for passthrough to a VM; a GPU passed \
             through cannot also be shared with containers by the host driver. Phoenix does not rebind \
             GPUs: remove them from the VM's hostpci entries and from vfio-pci's ids (kernel command line or \
             /etc/modprobe.d), reboot, and run again; or set nvidia_driver.install to false",
            node.name(),
            bound.join(", ")
        )));
    }
    let mut initramfs = false;
    for (field, (path, text)) in FILES {
        if node.read_file(path).await?.as_deref() != Some(text) {
            node.write_file(path, text, "0644", None).await?;
            initramfs |= field == "nouveau_blacklisted";
        }
    }
    if initramfs {
        node.change_for(
            "rebuilt the initramfs without nouveau",
            &["update-initramfs", "-u", "-k", "all"],
            INSTALL_TIMEOUT,
        )
        .await?;
    }
    if !change.fields.iter().any(|field| field.field == "driver_version") {
        return Ok(());
    }
    let nouveau: Vec<&str> = devices
        .iter()
        .filter(|device| device.is_gpu() && device.driver.as_deref() == Some("nouveau"))
        .map(|device| device.address.as_str())
        .collect();
    if !nouveau.is_empty() {
        return Err(ManagerError::failed(format!(
            "node {}: nouveau drives the GPU(s) {}, so the NVIDIA driver {} cannot load yet; nouveau is \
             blacklisted now: reboot the node and run again to install the driver",
            node.name(),
            nouveau.join(", "),
            driver.version
        )));
    }
    install(node, driver).await
}

/// The runfile a version is published as, where none is declared.
fn runfile_url(driver: &NvidiaDriver) -> String {
    driver.runfile_url.clone().unwrap_or_else(|| {
        format!(
            "https://us.download.nvidia.com/XFree86/Linux-x86_64/{0}/NVIDIA-Linux-x86_64-{0}.run",
            driver.version
        )
    })
}

/// Headers where missing, the runfile downloaded and run, and the result read back.
async fn install(node: &Node, driver: &NvidiaDriver) -> Result<(), ManagerError> {
    let release = node.check(&["uname", "-r"], None).await?;
    let release = release.trim();
    let build = format!("/lib/modules/{release}/build");
    if !node.run(&["test", "-d", &build], None).await?.success() {
        let headers = format!("proxmox-headers-{release}");
        packages::apt_get(
            node,
            &format!("installed {headers}"),
            &["install", "--", &headers],
        )
        .await?;
    }
    let url = runfile_url(driver);
    let file = format!("{CACHE}/NVIDIA-Linux-x86_64-{}.run", driver.version);
    let partial = format!("{file}.part");
    node.check(&["mkdir", "-p", CACHE], None).await?;
    node.change_for(
        &format!("downloaded {url}"),
        &["curl", "-fsSL", "--retry", "3", "-o", &partial, "--", &url],
        INSTALL_TIMEOUT,
    )
    .await?;
    node.check(&["mv", "-f", &partial, &file], None).await?;
    node.change_for(
        &format!("installed the NVIDIA driver {}", driver.version),
        &["sh", &file, "--silent", "--dkms"],
        INSTALL_TIMEOUT,
    )
    .await?;
    let now = installed_version(node).await?;
    if now.as_deref() != Some(driver.version.as_str()) {
        return Err(ManagerError::failed(format!(
            "node {}: the NVIDIA driver {} was installed, but the node reports {}: reboot it to load the new \
             module",
            node.name(),
            driver.version,
            now.as_deref().unwrap_or("no driver")
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `lspci -Dnnk -d 10de:` on a node with two GPUs, the second passed through to a VM.
    const LSPCI: &str = "0000:01:00.0 VGA compatible controller [0300]: NVIDIA Corporation GA102 [GeForce RTX 3090] [10de:2204] (rev a1)\n\
        \tSubsystem: NVIDIA Corporation GA102 [GeForce RTX 3090] [10de:147d]\n\
        \tKernel driver in use: nvidia\n\
        \tKernel modules: nvidiafb, nouveau, nvidia_drm, nvidia\n\
        0000:01:00.1 Audio device [0403]: NVIDIA Corporation GA102 High Definition Audio Controller [10de:1aef] (rev a1)\n\
        \tSubsystem: NVIDIA Corporation Device [10de:147d]\n\
        \tKernel driver in use: vfio-pci\n\
        \tKernel modules: snd_hda_intel\n\
        0000:41:00.0 VGA compatible controller [0300]: NVIDIA Corporation GA102 [GeForce RTX 3090] [10de:2204] (rev a1)\n\
        \tKernel driver in use: vfio-pci\n\
        \tKernel modules: nvidiafb, nouveau, nvidia_drm, nvidia\n";

    #[test]
    fn only_a_gpu_bound_to_vfio_is_refused_not_its_audio_function() {
        let devices = parse_lspci(LSPCI);
        assert_eq!(devices.len(), 3);
        assert_eq!(devices[0].class, "0300");
        assert_eq!(devices[0].driver.as_deref(), Some("nvidia"));
        assert!(devices[0].description.starts_with("NVIDIA Corporation GA102"));
        assert!(!devices[1].is_gpu());
        assert_eq!(vfio_bound(&devices), ["0000:41:00.0"]);
    }

    #[test]
    fn the_runfile_defaults_to_nvidias_published_name() {
        let driver = NvidiaDriver {
            install: true,
            version: "580.76.05".into(),
            runfile_url: None,
            cuda_version: None,
            install_vllm_libs: false,
        };
        assert_eq!(
            runfile_url(&driver),
            "https://us.download.nvidia.com/XFree86/Linux-x86_64/580.76.05/NVIDIA-Linux-x86_64-580.76.05.run"
        );
    }
}
