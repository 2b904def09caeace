//! One module per command; this file dispatches.

mod apply;
mod completions;
mod graph;
mod import;
mod operate;
mod plan;
mod schema;
mod sync;
mod validate;

use crate::exit::Exit;

use phoenix_core::Operation;

use crate::args::{Cli, Command};

/// Runs a parsed command line.
pub(crate) async fn run(cli: Cli) -> miette::Result<Exit> {
    match &cli.command {
        Command::Validate(args) => validate::run(args, &cli.global),
        Command::Plan(args) => plan::run(args, &cli.global).await,
        Command::Apply(args) => apply::run(&args.targets, &args.run, &cli.global).await,
        Command::Setup(args) => apply::run(&["host/*".to_owned()], &args.run, &cli.global).await,
        Command::Create(args) | Command::Converge(args) => sync::create(args, &cli.global).await,
        Command::Sync(scope) => sync::run(scope, &cli.global).await,
        Command::Status(args) => operate::status(args, &cli.global).await,
        Command::Start(args) => operate::run(args, Operation::Start, false, &cli.global).await,
        Command::Stop(args) => operate::run(args, Operation::Stop, false, &cli.global).await,
        Command::Restart(args) => operate::run(args, Operation::Restart, false, &cli.global).await,
        Command::HealthCheck(args) => operate::run(args, Operation::HealthCheck, false, &cli.global).await,
        Command::Snapshot(args) => {
            operate::snapshot(args, Operation::Snapshot(args.name.clone()), &cli.global).await
        }
        Command::Rollback(args) => {
            operate::snapshot(args, Operation::Rollback(args.name.clone()), &cli.global).await
        }
        Command::Delete(args) => operate::delete(args, &cli.global).await,
        Command::Import(args) => import::run(args, &cli.global).await,
        Command::Graph(args) => graph::run(args, &cli.global),
        Command::Schema(args) => schema::run(args),
        Command::Completions(args) => Ok(completions::run(args)),
    }
}
