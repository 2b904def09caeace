//! Operations on existing guests outside convergence: `status`, `start`, `stop`, `restart`,
//! `health-check`, `snapshot`, `rollback`, `delete`.

use std::io::IsTerminal;

use phoenix_core::engine::render;
use phoenix_core::{Address, ExecuteOptions, Operation, Outcome, Plan, StopHandle};
use serde_json::json;

use crate::args::{DeleteArgs, GlobalArgs, GuestsArgs, OutputFormat, SnapshotArgs, StatusArgs, TargetArgs};
use crate::exit::Exit;
use crate::load;
use crate::lock::RunLock;
use crate::target::Target;

/// Reads the configuration and opens the target.
async fn open(
    target_args: &TargetArgs,
    global: &GlobalArgs,
) -> miette::Result<(Target, phoenix_core::Estate)> {
    let estate = load::estate(&global.config)?;
    let target = Target::open(target_args, &estate, &global.config).await?;
    Ok((target, estate))
}

/// Plans the named targets against the live state, to know their order, existence and drift.
async fn observe(ids: &[String], target: &Target, estate: &phoenix_core::Estate) -> miette::Result<Plan> {
    let options = target.plan_options(ids)?;
    Ok(phoenix_core::plan(phoenix_core::resources(estate), target.managers(), &options).await?)
}

/// `phoenix status`: live state and drift of each resource, as a table or JSON.
pub(crate) async fn status(args: &StatusArgs, global: &GlobalArgs) -> miette::Result<Exit> {
    let (target, estate) = open(&args.target, global).await?;
    let plan = observe(&args.targets, &target, &estate).await?;
    let rows: Vec<(String, String, String, String)> = plan
        .entries()
        .iter()
        .map(|entry| {
            let state = match &entry.observed {
                None => "absent".to_owned(),
                Some(observed) => observed
                    .fields
                    .get("status")
                    .and_then(|status| status.as_str())
                    .unwrap_or("present")
                    .to_owned(),
            };
            let drift = match entry.changes.first() {
                None => "in sync".to_owned(),
                Some(change) if entry.observed.is_none() => format!("to {:?}", change.action).to_lowercase(),
                Some(change) => {
                    let fields: Vec<&str> = change.fields.iter().map(|field| field.field.as_str()).collect();
                    format!("drift: {}", fields.join(", "))
                }
            };
            (
                entry.address.to_string(),
                entry.name().unwrap_or("-").to_owned(),
                state,
                drift,
            )
        })
        .collect();
    match args.output {
        OutputFormat::Json => {
            let records: Vec<_> = rows
                .iter()
                .map(|(address, name, state, drift)| json!({"address": address, "name": name, "state": state, "drift": drift}))
                .collect();
            println!("{}", serde_json::to_string_pretty(&records).expect("serialises"));
        }
        OutputFormat::Human => {
            if let Some(description) = target.describe() {
                println!("{description}\n");
            }
            let width = render::column_width(rows.iter().map(|row| row.0.as_str()), 8);
            let name_width = render::column_width(rows.iter().map(|row| row.1.as_str()), 4);
            println!(
                "{:width$}  {:name_width$}  {:9}  DRIFT",
                "RESOURCE", "NAME", "STATE"
            );
            for (address, name, state, drift) in &rows {
                println!("{address:width$}  {name:name_width$}  {state:9}  {drift}");
            }
        }
    }
    Ok(Exit::Success)
}

/// Runs one operation on each named guest, through the core executor: in dependency order (dependents
/// first for stop and delete), in parallel where nothing orders them, a failure skipping what depends on it.
pub(crate) async fn run(
    args: &GuestsArgs,
    operation: Operation,
    force: bool,
    global: &GlobalArgs,
) -> miette::Result<Exit> {
    let (target, estate) = open(&args.target, global).await?;
    target.ensure_writable()?;
    // A health check changes nothing; every other operation runs under the run lock.
    let lock = match operation {
        Operation::HealthCheck => None,
        _ => Some(RunLock::acquire(&target, &args.lock).await?),
    };
    let result = operate(args, &operation, force, &target, &estate).await;
    if let Some(lock) = lock {
        lock.release().await;
    }
    result
}

async fn operate(
    args: &GuestsArgs,
    operation: &Operation,
    force: bool,
    target: &Target,
    estate: &phoenix_core::Estate,
) -> miette::Result<Exit> {
    let plan = observe(&args.ids, target, estate).await?;
    if *operation == Operation::Delete && !force {
        let dependents = phoenix_core::dependents(&phoenix_core::resources(estate), plan.targets());
        if !dependents.is_empty() {
            let names: Vec<String> = dependents.iter().map(Address::to_string).collect();
            return Err(miette::miette!(
                code = "phoenix::delete::dependents",
                help = "delete those too, or pass --force",
                "other resources depend on what you are deleting: {}",
                names.join(", ")
            ));
        }
    }
    let (handle, signal) = StopHandle::new();
    let options = ExecuteOptions::default();
    let run = phoenix_core::operate(&plan, operation, target.managers(), &options, signal, None);
    let result = crate::interrupt::interruptible(handle, run).await;
    target.save()?;
    let Some(result) = result else {
        eprintln!("Abandoned: the {} in flight was cut off.", operation.verb());
        return Ok(Exit::Interrupted);
    };
    let report = result?;
    for line in &report.resources {
        match &line.outcome {
            Outcome::Changed { .. } => {
                println!("{:12} {}", format!("{}:", operation.verb()), line.address)
            }
            Outcome::Failed { error, .. } => eprintln!("{} {}: {error}", operation.verb(), line.address),
            Outcome::Skipped { reason } => {
                eprintln!("{} {}: skipped: {reason}", operation.verb(), line.address)
            }
            Outcome::NotStarted => eprintln!("{} {}: not started", operation.verb(), line.address),
            Outcome::Unchanged => {}
        }
    }
    Ok(Exit::of(&report))
}

/// `snapshot` and `rollback`.
pub(crate) async fn snapshot(
    args: &SnapshotArgs,
    operation: Operation,
    global: &GlobalArgs,
) -> miette::Result<Exit> {
    // A rollback throws away everything written since the snapshot: it asks, as delete does.
    if matches!(operation, Operation::Rollback(_))
        && !args.yes
        && !confirm(
            &format!(
                "Roll {} back to `{}`, losing what changed since?",
                args.id, args.name
            ),
            "rollback",
        )?
    {
        eprintln!("Nothing was rolled back.");
        return Ok(Exit::Failure);
    }
    let guests = GuestsArgs {
        ids: vec![args.id.clone()],
        target: TargetArgs {
            offline: args.target.offline,
            demo: args.target.demo,
            demo_state: args.target.demo_state.clone(),
            upgrade: false,
            node: None,
        },
        lock: args.lock.clone(),
    };
    run(&guests, operation, false, global).await
}

/// Asks on the terminal; refuses when there is none.
fn confirm(question: &str, verb: &str) -> miette::Result<bool> {
    if !std::io::stdin().is_terminal() {
        return Err(miette::miette!(
            code = "phoenix::operate::needs_yes",
            help = format!("pass --yes to {verb} without a terminal to confirm on"),
            "refusing to {verb} without confirmation"
        ));
    }
    eprint!("{question} Only 'yes' is accepted: ");
    let mut answer = String::new();
    std::io::stdin().read_line(&mut answer).ok();
    Ok(answer.trim() == "yes")
}

/// `delete`, which asks first on a terminal.
pub(crate) async fn delete(args: &DeleteArgs, global: &GlobalArgs) -> miette::Result<Exit> {
    if !args.yes && !confirm(&format!("Delete {}?", args.guests.ids.join(", ")), "delete")? {
        eprintln!("Nothing was deleted.");
        return Ok(Exit::Failure);
    }
    run(&args.guests, Operation::Delete, args.force, global).await
}
