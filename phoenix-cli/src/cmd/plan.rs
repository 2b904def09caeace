//! `phoenix plan`: what apply would change.

use std::io::Write as _;

use miette::IntoDiagnostic;

use crate::exit::Exit;

use phoenix_core::dns::public;
use phoenix_core::engine::render::{self, Colour};

use crate::args::{GlobalArgs, OutputFormat, PlanArgs, TargetArgs};
use crate::target::Target;
use crate::{load, render as output};

pub(crate) async fn run(args: &PlanArgs, global: &GlobalArgs) -> miette::Result<Exit> {
    let estate = load::estate(&global.config)?;
    let request = Request {
        targets: &args.targets,
        target: &args.target,
        output: args.output,
        detailed_exitcode: args.detailed_exitcode,
    };
    show(&estate, &request, global).await
}

/// The JSON plan: the plan document, and the public DNS records to create by hand when there are any.
#[derive(serde::Serialize)]
struct JsonPlan<'a> {
    #[serde(flatten)]
    plan: render::PlanDocument<'a>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    manual_dns_records: Vec<serde_json::Value>,
}

/// What to plan and how to print it.
pub(crate) struct Request<'a> {
    pub(crate) targets: &'a [String],
    pub(crate) target: &'a TargetArgs,
    pub(crate) output: OutputFormat,
    pub(crate) detailed_exitcode: bool,
}

/// Plans a loaded estate and prints the plan.
pub(crate) async fn show(
    estate: &phoenix_core::Estate,
    args: &Request<'_>,
    global: &GlobalArgs,
) -> miette::Result<Exit> {
    let target = Target::open(args.target, estate, &global.config).await?;
    let options = target.plan_options(args.targets)?;
    let plan = phoenix_core::plan(phoenix_core::resources(estate), target.managers(), &options).await?;
    let manual = phoenix_core::dns::public::manual_zones(estate);
    match args.output {
        OutputFormat::Json => {
            let zones: Vec<_> = manual
                .iter()
                .map(|zone| serde_json::json!({ "zone": zone.zone, "records": public::zone_lines(zone) }))
                .collect();
            let document = JsonPlan {
                plan: render::plan_document(&plan),
                manual_dns_records: zones,
            };
            // Written as it is serialised: a plan of thousands of resources is never held twice in memory.
            let mut out = std::io::BufWriter::new(std::io::stdout().lock());
            serde_json::to_writer_pretty(&mut out, &document).into_diagnostic()?;
            writeln!(out).and_then(|()| out.flush()).into_diagnostic()?;
        }
        OutputFormat::Human => {
            if let Some(description) = target.describe() {
                println!("{description}\n");
            }
            let colour = if output::stdout_colour() {
                Colour::Always
            } else {
                Colour::Never
            };
            print!("{}", render::plan_text(&plan, colour));
            for zone in &manual {
                println!(
                    "\nPublic DNS records to create by hand in zone {} (`public_dns` names no server to publish them to):",
                    zone.zone
                );
                for line in public::zone_lines(zone) {
                    println!("  {line}");
                }
            }
        }
    }
    // With --detailed-exitcode, 0 promises that nothing differs: a plan that could not look at every
    // declared resource cannot promise that.
    Ok(
        match (args.detailed_exitcode, plan.has_changes(), plan.is_complete()) {
            (true, true, _) => Exit::Changes,
            (true, false, false) => Exit::Failure,
            _ => Exit::Success,
        },
    )
}
