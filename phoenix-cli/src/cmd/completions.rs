//! `phoenix completions <shell>`: shell completion scripts generated from the clap definition.

use crate::exit::Exit;

use clap::CommandFactory;

use crate::args::{Cli, CompletionsArgs};

pub(crate) fn run(args: &CompletionsArgs) -> Exit {
    clap_complete::generate(args.shell, &mut Cli::command(), "phoenix", &mut std::io::stdout());
    Exit::Success
}
