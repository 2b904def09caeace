//! `phoenix graph`: the resource graph as Graphviz DOT or Mermaid.

use crate::exit::Exit;

use phoenix_core::engine::render::{GraphFormat, graph_source};

use crate::args::{GlobalArgs, GraphArgs, GraphFormatArg};
use crate::load;

pub(crate) fn run(args: &GraphArgs, global: &GlobalArgs) -> miette::Result<Exit> {
    let estate = load::estate(&global.config)?;
    let format = match args.format {
        GraphFormatArg::Dot => GraphFormat::Dot,
        GraphFormatArg::Mermaid => GraphFormat::Mermaid,
    };
    print!("{}", graph_source(&phoenix_core::resources(&estate), format));
    Ok(Exit::Success)
}
