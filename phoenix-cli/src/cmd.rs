//! One module per command; this file dispatches.

mod completions;
mod schema;
mod validate;

use std::process::ExitCode;

use crate::args::{Cli, Command};

/// Runs a parsed command line.
pub(crate) fn run(cli: Cli) -> miette::Result<ExitCode> {
    match cli.command {
        Command::Validate(args) => validate::run(&args, &cli.global),
        Command::Schema(args) => schema::run(&args),
        Command::Completions(args) => Ok(completions::run(&args)),
    }
}
