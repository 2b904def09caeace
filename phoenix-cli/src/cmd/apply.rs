//! `phoenix apply` and `phoenix create`: plan, confirm, apply with progress, report.

use std::io::{BufRead, IsTerminal, Write};

use phoenix_core::engine::render::{self, Colour};
use phoenix_core::{ExecuteOptions, StopHandle};
use serde::Serialize;

use crate::args::{GlobalArgs, OutputFormat, RunArgs};
use crate::exit::Exit;
use crate::lock::RunLock;
use crate::target::Target;
use crate::{load, progress, render as output};

/// Version of the JSON apply report.
const REPORT_FORMAT_VERSION: u32 = 1;

#[derive(Serialize)]
struct ReportDocument<'a> {
    format_version: u32,
    plan: render::PlanDocument<'a>,
    report: Option<&'a phoenix_core::Report>,
}

pub(crate) async fn run(targets: &[String], args: &RunArgs, global: &GlobalArgs) -> miette::Result<Exit> {
    let estate = load::estate(&global.config)?;
    run_on(&estate, targets, args, global).await
}

/// Applies to a loaded estate.
pub(crate) async fn run_on(
    estate: &phoenix_core::Estate,
    targets: &[String],
    args: &RunArgs,
    global: &GlobalArgs,
) -> miette::Result<Exit> {
    let target = Target::open(&args.target, estate, &global.config).await?;
    target.ensure_writable()?;
    // Planned and applied under the run lock, so that no other run changes the target in between.
    let lock = RunLock::acquire(&target, &args.lock).await?;
    let result = converge(targets, args, estate, &target).await;
    lock.release().await;
    result
}

async fn converge(
    targets: &[String],
    args: &RunArgs,
    estate: &phoenix_core::Estate,
    target: &Target,
) -> miette::Result<Exit> {
    let options = target.plan_options(targets)?;
    let plan = phoenix_core::plan(phoenix_core::resources(estate), target.managers(), &options).await?;
    let human = args.output == OutputFormat::Human;
    let colour = if output::stdout_colour() {
        Colour::Always
    } else {
        Colour::Never
    };

    if human {
        if let Some(description) = target.describe() {
            println!("{description}\n");
        }
        print!("{}", render::plan_text(&plan, colour));
    }
    if !plan.has_changes() {
        if !human {
            print_document(&plan, None);
        }
        return Ok(Exit::Success);
    }
    if !args.allow_destroy && plan.destructive().next().is_some() {
        let addresses: Vec<String> = plan
            .destructive()
            .map(|entry| entry.address.to_string())
            .collect();
        return Err(miette::miette!(
            code = "phoenix::apply::destructive",
            help = "review the plan above, then run again with --allow-destroy",
            "the plan destroys {}",
            addresses.join(", ")
        ));
    }
    if !args.allow_risky && plan.risky().next().is_some() {
        let addresses: Vec<String> = plan.risky().map(|entry| entry.address.to_string()).collect();
        return Err(miette::miette!(
            code = "phoenix::apply::risky",
            help = "review the plan above (keep a console on the node at hand), then run again with --allow-risky",
            "the plan makes risky changes to {}",
            addresses.join(", ")
        ));
    }
    if !args.yes && !confirm()? {
        const CANCELLED: &str = "Apply cancelled; nothing was changed.";
        if !human {
            // Standard output is one JSON document under `--output json`, a refusal included.
            return Err(miette::miette!(code = "phoenix::apply::cancelled", "{CANCELLED}"));
        }
        eprintln!("{CANCELLED}");
        return Ok(Exit::Failure);
    }

    let (handle, signal) = StopHandle::new();
    let (events, received) = tokio::sync::mpsc::unbounded_channel();
    let follower = tokio::spawn(progress::follow(
        received,
        plan.entries().len(),
        std::io::stderr().is_terminal(),
    ));
    let execute_options = ExecuteOptions {
        parallelism: usize::from(args.parallelism),
        per_node: usize::from(args.per_node),
        per_storage: usize::from(args.per_storage),
        allow_destroy: args.allow_destroy,
        allow_risky: args.allow_risky,
    };
    let run = phoenix_core::execute(&plan, target.managers(), &execute_options, signal, Some(events));
    let result = crate::interrupt::interruptible(handle, run).await;
    let _ = follower.await;
    // Whatever happened, the demo target keeps what was applied.
    target.save()?;
    let Some(result) = result else {
        const ABANDONED: &str = "Abandoned: operations in flight were cut off and may have half happened; `phoenix plan` shows where things stand.";
        eprintln!("{ABANDONED}");
        if !human {
            let abandoned = miette::miette!(code = "phoenix::apply::abandoned", "{ABANDONED}");
            println!("{}", output::error_json(&abandoned, false));
        }
        return Ok(Exit::Interrupted);
    };
    let report = result?;
    if human {
        println!();
        print!("{}", render::report_text(&report, colour));
    } else {
        print_document(&plan, Some(&report));
    }
    Ok(Exit::of(&report))
}

fn print_document(plan: &phoenix_core::Plan, report: Option<&phoenix_core::Report>) {
    let document = ReportDocument {
        format_version: REPORT_FORMAT_VERSION,
        plan: render::plan_document(plan),
        report,
    };
    println!(
        "{}",
        serde_json::to_string_pretty(&document).expect("the report serialises")
    );
}

/// Asks on the terminal; refuses when there is none.
fn confirm() -> miette::Result<bool> {
    if !std::io::stdin().is_terminal() {
        return Err(miette::miette!(
            code = "phoenix::apply::needs_yes",
            help = "pass --yes to apply without a terminal to confirm on",
            "refusing to apply without confirmation"
        ));
    }
    eprint!("\nApply these changes? Only 'yes' is accepted: ");
    std::io::stderr().flush().ok();
    let mut answer = String::new();
    std::io::stdin().lock().read_line(&mut answer).ok();
    Ok(answer.trim() == "yes")
}
