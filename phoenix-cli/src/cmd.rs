//! One module per command; this file dispatches.

mod apply;
mod completions;
mod graph;
mod plan;
mod schema;
mod validate;

use std::process::ExitCode;

use crate::args::{Cli, Command};

/// Runs a parsed command line.
pub(crate) async fn run(cli: Cli) -> miette::Result<ExitCode> {
    match &cli.command {
        Command::Validate(args) => validate::run(args, &cli.global),
        Command::Plan(args) => plan::run(args, &cli.global).await,
        Command::Apply(args) => apply::run(&args.targets, &args.run, &cli.global).await,
        Command::Create(args) => apply::run(&args.targets, &args.run, &cli.global).await,
        Command::Graph(args) => graph::run(args, &cli.global),
        Command::Schema(args) => schema::run(args),
        Command::Completions(args) => Ok(completions::run(args)),
    }
}
