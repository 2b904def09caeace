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
use phoenix_core::{
    Address, Estate, Managers, Observed, OwnedDiffer, PlanOptions, ResourceKind, Target as PlanTarget,
};
use phoenix_lxc::{ContainerDiff, GuestScripts};
use phoenix_pve::Session;
use phoenix_pve::guests::GuestDiffer;
use phoenix_vm::VmDiff;
use serde::{Deserialize, Serialize};

use crate::args::TargetArgs;
use crate::files::{self, Links};

/// The estate a command works against.
pub(crate) struct Target {
    mode: Mode,
    fakes: Vec<FakeManager>,
    managers: Managers,
}

enum Mode {
    Offline {
        reason: String,
    },
    Demo {
        state: PathBuf,
    },
    Live {
        endpoint: String,
        client: Arc<phoenix_pve::Client>,
    },
}

/// Version of the demo state file. Version 2 keeps containers and VMs in their managers' vocabularies.
const DEMO_FORMAT_VERSION: u32 = 2;

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
            return Target::live(estate, config_dir, args).await;
        }
        let mode = if args.demo {
            Mode::Demo {
                state: match &args.demo_state {
                    Some(state) => state.clone(),
                    None => default_demo_state(config_dir)?,
                },
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
        // Containers and VMs are diffed by their real managers' differs, so offline and demo plans are
        // the plans a real Proxmox would get; the other kinds have no manager yet and compare as declared.
        let scripts = Arc::new(guest_scripts(estate, config_dir)?);
        let domain = estate.files().hypervisor.domain_name.clone();
        let containers = ContainerDiff {
            domain: domain.clone(),
            scripts: Arc::clone(&scripts),
            inside: true,
            // Offline, no node is read: a GPU container shows its GPUs' own device nodes.
            gpu: Arc::default(),
            // Offline, no cluster is read: a guest that names no node is placed when it is created.
            placements: None,
        };
        let vms = VmDiff {
            domain,
            scripts: Some(scripts),
            user_data_template: user_data_template(config_dir)?,
            placements: None,
        };
        let mut managers = Managers::default();
        let mut fakes = Vec::new();
        for kind in ResourceKind::ALL {
            let fake = match kind {
                ResourceKind::Lxc => {
                    FakeManager::new(kind).with_differ(Arc::new(GuestDiffer(containers.clone())))
                }
                ResourceKind::Vm => FakeManager::new(kind).with_differ(Arc::new(GuestDiffer(vms.clone()))),
                // Sync steps own what they write whole: a route taken out of the configuration is a change.
                ResourceKind::Sync => FakeManager::new(kind).with_differ(Arc::new(OwnedDiffer)),
                ResourceKind::Host | ResourceKind::Stack => FakeManager::new(kind),
            };
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

    async fn live(estate: &Estate, config_dir: &Path, args: &TargetArgs) -> miette::Result<Target> {
        let session = Session::open(estate, config_dir, &|name| std::env::var(name).ok())
            .await
            .map_err(|error| {
                miette::Report::new(error)
                    .wrap_err("cannot connect to Proxmox (use --offline or --demo to plan without it)")
            })?;
        if session.host().is_none() {
            eprintln!(
                "Features, application scripts and health checks in containers, and the host steps that need a shell on the node (users, packages, locale, AppArmor profiles, sub-IDs), are not managed: Phoenix does not run on the node and `proxmox.ssh` names no way to reach it."
            );
        }
        let scripts = guest_scripts(estate, config_dir)?;
        let mut managers = Managers::default();
        let profiles = crate::load::scripts(&config_dir.join("apparmor"), false)?;
        let node = host_node(estate, &session, args.node.as_deref())?;
        let nodes = estate.cluster_nodes();
        // A cluster's host steps are each node's own (`host/<node>/...`): every node, or the one `--node` names.
        let host = match args.node {
            None if nodes.len() > 1 => phoenix_host::manager_for(&session, &nodes),
            _ => phoenix_host::manager_on(&session, node),
        }
        .with_upgrade(args.upgrade)
        .with_profiles(profiles);
        managers.register(Arc::new(host));
        if let Some(channel) = session.host() {
            let edge = phoenix_edge::EdgeManager::new(Arc::clone(channel)).with_config_dir(config_dir);
            let edge = match phoenix_edge::gateway::site(estate, config_dir) {
                Some(site) => edge.with_gateway(site),
                None => edge,
            };
            managers.register(Arc::new(edge));
        }
        if let Some(portainer) = portainer_manager(estate, config_dir) {
            // The server's and agents' own containers, through each VM's guest agent.
            let client = Arc::clone(session.client());
            let default_node = session.default_node().to_owned();
            let hosts: phoenix_portainer::DockerHosts = Arc::new(move |vmid, node| {
                Arc::new(phoenix_pve::guest::QemuAgent {
                    client: Arc::clone(&client),
                    node: node.unwrap_or(&default_node).to_owned(),
                    vmid,
                })
            });
            managers.register(Arc::new(portainer.with_docker(hosts)));
        }
        managers.register(Arc::new(phoenix_lxc::manager(&session, estate, scripts.clone())));
        managers.register(Arc::new(phoenix_vm::manager(
            &session,
            estate,
            scripts,
            user_data_template(config_dir)?,
        )));
        Ok(Target {
            mode: Mode::Live {
                endpoint: session.endpoint().to_owned(),
                client: Arc::clone(session.client()),
            },
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
            Mode::Live { endpoint, .. } => Some(format!("Proxmox at {endpoint}")),
            Mode::Offline { .. } => None,
        }
    }

    /// What the run lock of this target is keyed by: the endpoint, or the demo state file (made absolute);
    /// `None` offline, where nothing is written.
    pub(crate) fn lock_key(&self) -> Option<String> {
        match &self.mode {
            Mode::Live { endpoint, .. } => Some(endpoint.clone()),
            Mode::Demo { state } => {
                let absolute = std::path::absolute(state).unwrap_or_else(|_| state.clone());
                Some(format!("demo {}", absolute.display()))
            }
            Mode::Offline { .. } => None,
        }
    }

    /// The Proxmox client of a live target, for the cluster-wide run lock.
    pub(crate) fn client(&self) -> Option<&Arc<phoenix_pve::Client>> {
        match &self.mode {
            Mode::Live { client, .. } => Some(client),
            Mode::Demo { .. } | Mode::Offline { .. } => None,
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
        let Some(text) = files::read_text(state, files::STATE_LIMIT, Links::Refuse)? else {
            return Ok(());
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
        files::write_private(state, text.as_bytes())
    }
}

/// The scripts guests may run: the configuration's own `features/*.sh` and `scripts/*` over the shipped
/// catalogue, with the environment the model gives them.
pub(crate) fn guest_scripts(estate: &Estate, config_dir: &Path) -> miette::Result<GuestScripts> {
    let features = crate::load::scripts(&config_dir.join("features"), true)?;
    let applications = crate::load::scripts(&config_dir.join("scripts"), false)?;
    Ok(GuestScripts::for_estate(estate, features, applications))
}

/// The node `--node` names for the host steps, which must be one of `proxmox.nodes` when those are listed;
/// the session's default node without it.
fn host_node<'a>(estate: &Estate, session: &'a Session, named: Option<&'a str>) -> miette::Result<&'a str> {
    let Some(name) = named else {
        return Ok(session.default_node());
    };
    let nodes = estate
        .files()
        .hypervisor
        .proxmox
        .as_ref()
        .map(|proxmox| proxmox.nodes.as_slice())
        .unwrap_or_default();
    if nodes.is_empty() || nodes.iter().any(|node| node == name) {
        return Ok(name);
    }
    Err(miette::miette!(
        code = "phoenix::cli::unknown_node",
        help = format!("the configuration's nodes are {}", nodes.join(", ")),
        "--node {name} is not one of `proxmox.nodes`"
    ))
}

/// The custom cloud-init user-data template of the configuration directory, when it has one.
pub(crate) fn user_data_template(config_dir: &Path) -> miette::Result<Option<String>> {
    let template = config_dir.join("cloud-init/user-data.template.yml");
    files::read_text(&template, files::SCRIPT_LIMIT, Links::Follow)
}

/// A state file per configuration directory, in the user's private state directory (not the shared
/// temporary directory, where anyone could plant a file or a link at a predictable name).
fn default_demo_state(config_dir: &Path) -> miette::Result<PathBuf> {
    let absolute = std::fs::canonicalize(config_dir).unwrap_or_else(|_| config_dir.to_path_buf());
    let dir = files::state_dir()?.join("demo");
    files::private_dir(&dir)?;
    Ok(dir.join(format!("{}.json", file_name_of(&absolute.display().to_string()))))
}

/// A file name standing for `text`: its letters and digits, anything else a `-`.
pub(crate) fn file_name_of(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect()
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

/// The Portainer manager, when the hypervisor file configures Portainer and its settings resolve; a
/// note says why not otherwise, and stacks are then not planned.
fn portainer_manager(estate: &Estate, config_dir: &Path) -> Option<phoenix_portainer::PortainerManager> {
    estate.files().hypervisor.portainer_api.as_ref()?;
    let env = |name: &str| std::env::var(name).ok();
    let settings =
        phoenix_portainer::PortainerSettings::resolve(&estate.files().hypervisor, &env, config_dir)
            .map_err(|error| error.to_string())
            .and_then(|settings| {
                phoenix_portainer::Portainer::new(&settings).map_err(|error| error.to_string())
            });
    match settings {
        Ok(client) => Some(phoenix_portainer::PortainerManager::new(
            client,
            estate,
            config_dir,
            Box::new(|name| std::env::var(name).ok()),
        )),
        Err(error) => {
            eprintln!("Stacks and Portainer are not managed: {error}.");
            None
        }
    }
}
