//! `phoenix graph`: the resource graph as Graphviz DOT or Mermaid.

use std::process::ExitCode;

use phoenix_core::engine::render::{GraphFormat, graph_source};

use crate::args::{GlobalArgs, GraphArgs, GraphFormatArg};
use crate::load;

pub(crate) fn run(args: &GraphArgs, global: &GlobalArgs) -> miette::Result<ExitCode> {
    let Some(estate) = load::estate(&global.config)? else {
        return Ok(ExitCode::from(1));
    };
    let format = match args.format {
        GraphFormatArg::Dot => GraphFormat::Dot,
        GraphFormatArg::Mermaid => GraphFormat::Mermaid,
    };
    print!("{}", graph_source(&phoenix_core::resources(&estate), format));
    Ok(ExitCode::SUCCESS)
}
