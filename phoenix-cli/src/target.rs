//! Where plans and applies read and write the estate: a live Proxmox (the endpoint of the configuration or
//! `PHOENIX_PVE_URL`), offline (an empty estate, read-only), or the built-in demo target (a simulated Proxmox
//! whose state persists in a local file between runs).
//!
//! Against a live Proxmox, containers and VMs are managed; the other kinds are counted as not planned.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use miette::{IntoDiagnostic, WrapErr};
use phoenix_core::engine::fake::FakeManager;
use phoenix_core::{Address, Estate, Managers, Observed, PlanOptions, ResourceKind, Target as PlanTarget};
use phoenix_lxc::{GuestScripts, LxcManager};
use phoenix_pve::host::{HostChannel, LocalHost, SshHost};
use phoenix_pve::{Client, Settings};
use phoenix_vm::VmManager;
use serde::{Deserialize, Serialize};

use crate::args::TargetArgs;

/// The estate a command works against.
pub(crate) struct Target {
    mode: Mode,
    fakes: Vec<FakeManager>,
    managers: Managers,
}

enum Mode {
    Offline { reason: String },
    Demo { state: PathBuf },
    Live { endpoint: String },
}

/// Version of the demo state file.
const DEMO_FORMAT_VERSION: u32 = 1;

#[derive(Serialize, Deserialize)]
struct DemoState {
    format_version: u32,
    live: BTreeMap<Address, Observed>,
}

impl Target {
    /// Chooses the target from the flags and the configuration, connecting to a live Proxmox when one is
    /// configured.
    pub(crate) async fn open(
        args: &TargetArgs,
        estate: &Estate,
        config_dir: &Path,
    ) -> miette::Result<Target> {
        let connection = estate.files().hypervisor.proxmox.as_ref();
        let endpoint_in_env = std::env::var_os("PHOENIX_PVE_URL").is_some_and(|value| !value.is_empty());
        if !args.demo && !args.offline && (connection.is_some() || endpoint_in_env) {
            return Target::live(estate, config_dir).await;
        }
        let mode = if args.demo {
            Mode::Demo {
                state: args
                    .demo_state
                    .clone()
                    .unwrap_or_else(|| default_demo_state(config_dir)),
            }
        } else if args.offline {
            Mode::Offline {
                reason: "--offline was given".to_owned(),
            }
        } else {
            Mode::Offline {
                reason: "no Proxmox endpoint is configured".to_owned(),
            }
        };
        let mut managers = Managers::default();
        let mut fakes = Vec::new();
        for kind in ResourceKind::ALL {
            let fake = FakeManager::new(kind);
            if matches!(mode, Mode::Demo { .. }) {
                fake.set_latency(demo_latency(kind));
            }
            managers.register(Arc::new(fake.clone()));
            fakes.push(fake);
        }
        let target = Target {
            mode,
            fakes,
            managers,
        };
        target.load()?;
        Ok(target)
    }

    async fn live(estate: &Estate, config_dir: &Path) -> miette::Result<Target> {
        let hypervisor = &estate.files().hypervisor;
        let settings = Settings::resolve(
            hypervisor.proxmox.as_ref(),
            &|name| std::env::var(name).ok(),
            config_dir,
        )
        .map_err(|error| {
            miette::Report::new(error)
                .wrap_err("cannot connect to Proxmox (use --offline or --demo to plan without it)")
        })?;
        let endpoint = settings.endpoint.clone();
        let client = Arc::new(Client::connect(settings).await?);
        let configured = hypervisor
            .proxmox
            .as_ref()
            .and_then(|connection| connection.nodes.first().cloned());
        let default_node = match configured {
            Some(node) => node,
            None => {
                let nodes: Vec<serde_json::Value> = client.get("/nodes", &[]).await?;
                match nodes.as_slice() {
                    [only] => only["node"].as_str().unwrap_or_default().to_owned(),
                    _ => {
                        return Err(miette::miette!(
                            code = "phoenix::target::which_node",
                            help = "list the cluster's nodes in `proxmox.nodes`",
                            "the cluster has {} nodes and the configuration names none",
                            nodes.len()
                        ));
                    }
                }
            }
        };
        let import_storage = hypervisor
            .proxmox_storages
            .iter()
            .find(|storage| storage.content.iter().any(|content| content == "import"))
            .map_or_else(|| "local".to_owned(), |storage| storage.id.clone());
        let scripts = guest_scripts(estate, config_dir)?;
        let vm = VmManager::new(
            Arc::clone(&client),
            default_node.clone(),
            hypervisor.domain_name.clone(),
            import_storage,
        )
        .with_scripts(scripts.clone())
        .with_config_dir(config_dir);
        let mut vm = vm;
        let mut lxc = LxcManager::new(client, default_node, hypervisor.domain_name.clone());
        match host_channel(
            hypervisor
                .proxmox
                .as_ref()
                .and_then(|connection| connection.ssh.as_deref()),
        ) {
            Some(host) => {
                // Custom cloud-init user-data, when the configuration directory has a template for it.
                let template = config_dir.join("cloud-init/user-data.template.yml");
                if template.is_file() {
                    let text = std::fs::read_to_string(&template)
                        .into_diagnostic()
                        .wrap_err_with(|| format!("failed to read {}", template.display()))?;
                    let snippets = hypervisor
                        .proxmox_storages
                        .iter()
                        .find(|storage| storage.content.iter().any(|content| content == "snippets"))
                        .map_or_else(|| "local".to_owned(), |storage| storage.id.clone());
                    vm = vm.with_user_data(text, Arc::clone(&host), snippets);
                }
                lxc = lxc.with_guest_access(host, scripts);
            }
            None => eprintln!(
                "Features, application scripts and health checks in containers are not managed: Phoenix does not run on the node and `proxmox.ssh` names no way to reach it."
            ),
        }
        let mut managers = Managers::default();
        managers.register(Arc::new(lxc));
        managers.register(Arc::new(vm));
        Ok(Target {
            mode: Mode::Live { endpoint },
            fakes: Vec::new(),
            managers,
        })
    }

    /// The managers of this target.
    pub(crate) fn managers(&self) -> &Managers {
        &self.managers
    }

    /// Planning options for these targets.
    pub(crate) fn plan_options(&self, targets: &[String]) -> miette::Result<PlanOptions> {
        let targets = targets
            .iter()
            .map(|target| target.parse::<PlanTarget>())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|error| miette::miette!(code = "phoenix::plan::bad_target", "{error}"))?;
        let offline = match &self.mode {
            Mode::Offline { reason } => Some(reason.clone()),
            Mode::Demo { .. } | Mode::Live { .. } => None,
        };
        Ok(PlanOptions { targets, offline })
    }

    /// A line saying where the plan comes from, for people.
    pub(crate) fn describe(&self) -> Option<String> {
        match &self.mode {
            Mode::Demo { state } => Some(format!(
                "Demo target: simulated Proxmox, state in {}",
                state.display()
            )),
            Mode::Live { endpoint } => Some(format!("Proxmox at {endpoint}")),
            Mode::Offline { .. } => None,
        }
    }

    /// Refuses to apply when the target cannot be written.
    pub(crate) fn ensure_writable(&self) -> miette::Result<()> {
        match &self.mode {
            Mode::Demo { .. } | Mode::Live { .. } => Ok(()),
            Mode::Offline { reason } => Err(miette::miette!(
                code = "phoenix::apply::offline",
                help = "run with --demo to apply to the built-in simulated target",
                "cannot apply offline: {reason}"
            )),
        }
    }

    fn load(&self) -> miette::Result<()> {
        let Mode::Demo { state } = &self.mode else {
            return Ok(());
        };
        let text = match std::fs::read_to_string(state) {
            Ok(text) => text,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(error) => {
                return Err(error)
                    .into_diagnostic()
                    .wrap_err_with(|| format!("failed to read {}", state.display()));
            }
        };
        let loaded: DemoState = serde_json::from_str(&text).into_diagnostic().wrap_err_with(|| {
            format!(
                "{} is not a demo state file; delete it to start afresh",
                state.display()
            )
        })?;
        if loaded.format_version != DEMO_FORMAT_VERSION {
            return Err(miette::miette!(
                "{} has format version {}, expected {DEMO_FORMAT_VERSION}; delete it to start afresh",
                state.display(),
                loaded.format_version
            ));
        }
        for fake in &self.fakes {
            let kind = phoenix_core::Manager::kind(fake);
            fake.set_live(
                loaded
                    .live
                    .iter()
                    .filter(|(address, _)| address.kind() == kind)
                    .map(|(a, o)| (a.clone(), o.clone()))
                    .collect(),
            );
        }
        Ok(())
    }

    /// Writes the demo state back; a no-op for other targets.
    pub(crate) fn save(&self) -> miette::Result<()> {
        let Mode::Demo { state } = &self.mode else {
            return Ok(());
        };
        let live = self.fakes.iter().flat_map(FakeManager::live).collect();
        let document = DemoState {
            format_version: DEMO_FORMAT_VERSION,
            live,
        };
        let text = serde_json::to_string_pretty(&document).expect("demo state serialises");
        std::fs::write(state, text)
            .into_diagnostic()
            .wrap_err_with(|| format!("failed to write {}", state.display()))
    }
}

/// How to run commands on the node: `proxmox.ssh` is `local` or an SSH destination; without it, locally
/// when this machine is a Proxmox node.
fn host_channel(ssh: Option<&str>) -> Option<Arc<dyn HostChannel>> {
    match ssh {
        Some("local") => Some(Arc::new(LocalHost)),
        Some(destination) => Some(Arc::new(SshHost::new(destination))),
        None if Path::new("/etc/pve").is_dir() => Some(Arc::new(LocalHost)),
        None => None,
    }
}

/// The scripts containers may run: the shipped catalogue, the configuration's own `features/*.sh`
/// (which win over shipped ones of the same name) and `scripts/*`, and the environment they get.
fn guest_scripts(estate: &Estate, config_dir: &Path) -> miette::Result<GuestScripts> {
    let mut features: BTreeMap<String, String> = phoenix_core::lint::features::CATALOGUE
        .iter()
        .map(|feature| (feature.name.to_owned(), feature.script.to_owned()))
        .collect();
    features.extend(crate::load::scripts(&config_dir.join("features"), true)?);
    let applications = crate::load::scripts(&config_dir.join("scripts"), false)?;
    let files = estate.files();
    let hypervisor = &files.hypervisor;
    let mut environment = BTreeMap::new();
    let mut set = |name: &str, value: Option<&String>| {
        if let Some(value) = value {
            environment.insert(name.to_owned(), value.clone());
        }
    };
    set("PHOENIX_TIMEZONE", hypervisor.timezone.as_ref());
    set("PHOENIX_DOMAIN", hypervisor.domain_name.as_ref());
    let runfile = files.lxc.nvidia_runfile_url.as_ref().or(hypervisor
        .nvidia_driver
        .as_ref()
        .and_then(|driver| driver.runfile_url.as_ref()));
    set("PHOENIX_NVIDIA_RUNFILE_URL", runfile);
    if let Some(step_ca) = &hypervisor.step_ca {
        set("PHOENIX_CA_NAME", Some(&step_ca.root_ca_name));
        set("PHOENIX_CA_DNS", Some(&step_ca.dns_name));
        set("PHOENIX_CA_PROVISIONER", step_ca.provisioner_name.as_ref());
    }
    Ok(GuestScripts {
        features,
        applications,
        environment,
    })
}

/// A state file per configuration directory, in the temporary directory.
fn default_demo_state(config_dir: &Path) -> PathBuf {
    let absolute = std::fs::canonicalize(config_dir).unwrap_or_else(|_| config_dir.to_path_buf());
    let name: String = absolute
        .display()
        .to_string()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    std::env::temp_dir().join(format!("phoenix-demo{name}.json"))
}

/// How long the simulated target takes per change, so that progress is visible.
fn demo_latency(kind: ResourceKind) -> Duration {
    Duration::from_millis(match kind {
        ResourceKind::Host => 150,
        ResourceKind::Lxc => 400,
        ResourceKind::Vm => 700,
        ResourceKind::Stack => 300,
        ResourceKind::Sync => 100,
    })
}
