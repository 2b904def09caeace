//! `phoenix sync all` and `phoenix sync stack <name> to <vmid>`: apply (or plan) limited to the stacks,
//! the Portainer steps and the sync steps, with what they need.

use phoenix_core::config::PortainerRole;
use phoenix_core::lint::suggest::did_you_mean;
use phoenix_core::{Address, Estate, GuestSpec, Target};

use crate::args::{CreateArgs, GlobalArgs, OutputFormat, SyncArgs, SyncScope, SyncStackArgs};
use crate::cmd::{apply, plan};
use crate::exit::Exit;
use crate::load;

pub(crate) async fn run(scope: &SyncScope, global: &GlobalArgs) -> miette::Result<Exit> {
    let estate = load::estate(&global.config)?;
    let targets = match scope {
        SyncScope::All(_) => SYNC_ALL.map(str::to_owned).to_vec(),
        SyncScope::Stack(stack) => stack_targets(&estate, stack)?,
    };
    let options: &SyncArgs = scope.options();
    if options.plan {
        let request = plan::Request {
            targets: &targets,
            target: &options.run.target,
            output: options.run.output,
            detailed_exitcode: options.detailed_exitcode,
        };
        return plan::show(&estate, &request, global).await;
    }
    apply::run_on(&estate, &targets, &options.run, global).await
}

/// `phoenix create` and `converge`: the guests, and `sync all` with them when one of them says
/// `trigger_sync_on_completion` (stacks and sync steps come after the guests they need).
pub(crate) async fn create(args: &CreateArgs, global: &GlobalArgs) -> miette::Result<Exit> {
    let estate = load::estate(&global.config)?;
    let mut targets = args.targets.clone();
    let triggering: Vec<String> = args
        .targets
        .iter()
        .filter_map(|target| match target.parse::<Target>().ok()? {
            Target::Guest(id) | Target::Address(Address::Lxc(id) | Address::Vm(id)) => estate.guest(id),
            Target::Address(_) | Target::Kind(_) => None,
        })
        .filter(|guest| match &guest.spec {
            GuestSpec::Container(container) => container.trigger_sync_on_completion,
            GuestSpec::Vm(vm) => vm.trigger_sync_on_completion,
        })
        .map(|guest| format!("{} ({})", guest.id, guest.name()))
        .collect();
    if !triggering.is_empty() {
        targets.extend(SYNC_ALL.map(str::to_owned));
        if args.run.output == OutputFormat::Human {
            eprintln!(
                "{} asks for `sync all` on completion (trigger_sync_on_completion): stacks and sync steps are in this run.\n",
                triggering.join(", ")
            );
        }
    }
    apply::run_on(&estate, &targets, &args.run, global).await
}

/// The targets of `sync all`.
const SYNC_ALL: [&str; 2] = ["stack/*", "sync/*"];

/// `stack/<name>@<vmid>`, and Traefik's configuration when it routes to the VM; refuses a stack the VM
/// does not run, saying what to change.
fn stack_targets(estate: &Estate, args: &SyncStackArgs) -> miette::Result<Vec<String>> {
    let SyncStackArgs { name, vmid, .. } = args;
    let stacks = &estate.files().stacks.docker_stacks;
    if !stacks.contains_key(name) {
        let help = match did_you_mean(name, stacks.keys().map(String::as_str)) {
            Some(suggestion) => format!("did you mean `{suggestion}`?"),
            None if stacks.is_empty() => {
                "declare it in docker_stacks of phoenix_stacks_config.json".to_owned()
            }
            None => format!(
                "declared stacks: {}",
                stacks.keys().map(String::as_str).collect::<Vec<_>>().join(", ")
            ),
        };
        return Err(miette::miette!(
            code = "phoenix::sync::unknown_stack",
            help = help,
            "no stack named `{name}` is declared in phoenix_stacks_config.json"
        ));
    }
    let Some(guest) = estate.guest(*vmid) else {
        return Err(miette::miette!(
            code = "phoenix::sync::unknown_vm",
            help = "name a VM of phoenix_vm_configs.json",
            "no VM {vmid} is declared"
        ));
    };
    let GuestSpec::Vm(vm) = &guest.spec else {
        return Err(miette::miette!(
            code = "phoenix::sync::not_a_vm",
            help = "stacks run on VMs with Docker; name a VM of phoenix_vm_configs.json",
            "{vmid} ({}) is a container, not a VM",
            guest.name()
        ));
    };
    if !vm.docker_stacks.iter().any(|chosen| chosen.name() == name) {
        return Err(miette::miette!(
            code = "phoenix::sync::stack_not_on_vm",
            help = format!("add \"{name}\" to docker_stacks of VM {vmid} in phoenix_vm_configs.json"),
            "VM {vmid} ({}) does not run stack `{name}`",
            guest.name()
        ));
    }
    match vm.portainer_role {
        // An agent's through Portainer; the server VM's with Compose directly, before Portainer.
        Some(PortainerRole::Agent | PortainerRole::Primary) => {}
        None | Some(PortainerRole::None | PortainerRole::Infrastructure) => {
            return Err(miette::miette!(
                code = "phoenix::sync::no_agent",
                help = format!(
                    "set \"portainer_role\": \"agent\" on VM {vmid} so that Portainer can deploy to it"
                ),
                "VM {vmid} ({}) has no Portainer agent to deploy stack `{name}` through",
                guest.name()
            ));
        }
    }
    let mut targets = vec![format!("stack/{name}@{vmid}")];
    let (traefik, _) = phoenix_core::traefik::declared(estate);
    if traefik.proxy.is_some() && traefik.routed.contains(vmid) {
        targets.push("sync/traefik".to_owned());
    }
    Ok(targets)
}
