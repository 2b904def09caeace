//! `phoenix completions <shell>`: shell completion scripts generated from the clap definition.

use std::process::ExitCode;

use clap::CommandFactory;

use crate::args::{Cli, CompletionsArgs};

pub(crate) fn run(args: &CompletionsArgs) -> ExitCode {
    clap_complete::generate(args.shell, &mut Cli::command(), "phoenix", &mut std::io::stdout());
    ExitCode::SUCCESS
}
