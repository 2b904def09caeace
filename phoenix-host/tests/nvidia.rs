//! `host/nvidia` on a real Debian node (`TestNode`): the packages the install needs come from Debian's
//! real apt, the files and checks are real; the GPU side is stood in for, since this machine has no GPU.
//!
//! The stand-ins (`phoenix_testing::gpu`, named there one by one) are `lspci` answering from real
//! `lspci -Dnnk` text for two RTX 3090s, `curl` answering NVIDIA's runfile URL with a local runfile of the
//! same shape (it checks its options, kernel headers, DKMS and nouveau as the real installer does, then
//! installs a stand-in `nvidia-smi` and makes the device nodes), and `update-initramfs`, which records
//! its calls.

mod common;

use common::{Setup, start, steps};
use phoenix_core::Outcome;
use phoenix_testing::{gpu, outcome};

const VERSION: &str = "580.76.05";
const URL: &str =
    "https://us.download.nvidia.com/XFree86/Linux-x86_64/580.76.05/NVIDIA-Linux-x86_64-580.76.05.run";

/// The fixture's node with the driver declared, and the stand-ins with the GPUs bound to `binding`.
async fn gpu_node(binding: &str) -> Option<Setup> {
    let setup = start(|text| {
        text.replace(
            r#""timezone": "Europe/Berlin","#,
            &format!(r#""timezone": "Europe/Berlin", "nvidia_driver": {{ "install": true, "version": "{VERSION}" }},"#),
        )
    })
    .await?;
    setup.sh(&gpu::stand_ins(VERSION, binding));
    Some(setup)
}

fn failure(report: &phoenix_core::Report) -> &str {
    match outcome(report, "host/nvidia") {
        Outcome::Failed { error, .. } => error,
        other => panic!("{other:?} in {report:#?}"),
    }
}

/// What the stand-ins recorded in `name` (empty when nothing).
fn record(setup: &Setup, name: &str) -> String {
    setup.sh(&format!(
        "cat /var/lib/phoenix-stand-in/{name} 2>/dev/null || true"
    ))
}

#[tokio::test]
async fn nouveau_is_blacklisted_first_and_after_the_reboot_the_driver_is_installed_once() {
    let Some(setup) = gpu_node("nouveau").await else {
        return;
    };
    let report = setup.apply().await;
    let error = failure(&report);
    assert!(
        error.contains("nouveau drives the GPU(s) 0000:01:00.0, 0000:41:00.0") && error.contains("reboot"),
        "{error}"
    );
    assert_eq!(
        steps(&report, "host/nvidia"),
        [
            "wrote /etc/modprobe.d/phoenix-nvidia.conf",
            "wrote /etc/modules-load.d/phoenix-nvidia.conf",
            "wrote /etc/udev/rules.d/70-phoenix-nvidia.rules",
            "rebuilt the initramfs without nouveau",
        ]
    );
    assert_eq!(record(&setup, "update-initramfs"), "-u -k all\n");
    assert!(
        setup
            .sh("cat /etc/modprobe.d/phoenix-nvidia.conf")
            .contains("blacklist nouveau\n")
    );
    // What the install needs came from Debian's apt, before the driver step.
    assert!(
        setup
            .sh("dpkg-query -W -f '${db:Status-Abbrev}' dkms")
            .starts_with("ii")
    );
    assert!(matches!(
        outcome(&report, "host/timezone"),
        Outcome::Changed { .. }
    ));
    assert_eq!(
        setup.drift("host/nvidia").await,
        [format!("driver_version: None -> Some(String(\"{VERSION}\"))")]
    );

    // The reboot: nouveau no longer binds the GPUs. The driver is downloaded and installed, nothing else.
    setup.sh(&gpu::rebind("none"));
    let report = setup.apply().await;
    assert!(report.succeeded(), "{report:#?}");
    assert_eq!(
        steps(&report, "host/nvidia"),
        [
            format!("downloaded {URL}"),
            format!("installed the NVIDIA driver {VERSION}")
        ]
    );
    assert_eq!(record(&setup, "runfile-runs"), "--silent --dkms\n");
    assert_eq!(record(&setup, "downloads"), format!("{URL}\n"));
    setup.assert_converged().await;

    // What the node has is shown with the step: its device nodes, majors as /proc/devices registers them.
    let plan = setup.plan().await;
    let entry = plan
        .entries()
        .iter()
        .find(|entry| entry.address.to_string() == "host/nvidia")
        .expect("planned");
    let observed = &entry.observed.as_ref().expect("observed").fields;
    assert_eq!(observed["device_nodes"]["/dev/nvidia-uvm"], "c 508:0");
    assert_eq!(observed["device_majors"]["nvidia-caps"], 511);
    assert_eq!(observed["gpus"][1]["driver"], "nvidia");

    // The blacklist removed by hand: put back, the initramfs rebuilt, the driver left alone.
    setup.sh("rm /etc/modprobe.d/phoenix-nvidia.conf");
    assert_eq!(
        setup.drift("host/nvidia").await,
        ["nouveau_blacklisted: Some(Bool(false)) -> Some(Bool(true))"]
    );
    let report = setup.apply().await;
    assert_eq!(
        steps(&report, "host/nvidia"),
        [
            "wrote /etc/modprobe.d/phoenix-nvidia.conf",
            "rebuilt the initramfs without nouveau"
        ]
    );
    assert_eq!(record(&setup, "runfile-runs"), "--silent --dkms\n");
    setup.assert_converged().await;
}

#[tokio::test]
async fn a_gpu_bound_to_vfio_pci_is_refused_before_anything_is_written() {
    let Some(setup) = gpu_node("vfio-pci").await else {
        return;
    };
    let report = setup.apply().await;
    let error = failure(&report);
    assert!(
        error.contains("0000:01:00.0, 0000:41:00.0 are bound to vfio-pci") && error.contains("hostpci"),
        "{error}"
    );
    assert!(steps(&report, "host/nvidia").is_empty());
    assert_eq!(setup.sh("ls /etc/modprobe.d | grep -c phoenix || true"), "0\n");
    assert_eq!(record(&setup, "runfile-runs"), "");
    assert!(matches!(
        outcome(&report, "host/user/phoenix_admin"),
        Outcome::Changed { .. }
    ));
}

#[tokio::test]
async fn missing_kernel_headers_fail_the_step_with_apts_own_message() {
    let Some(setup) = gpu_node("none").await else {
        return;
    };
    setup.sh("rm -r \"/lib/modules/$(uname -r)/build\"");
    let report = setup.apply().await;
    let error = failure(&report);
    assert!(error.contains("`apt-get` failed on node pve1"), "{error}");
    assert!(error.contains("proxmox-headers-"), "{error}");
    assert_eq!(record(&setup, "runfile-runs"), "");
}
