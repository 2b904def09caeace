//! Command-line arguments.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};
use clap_complete::Shell;

/// Declarative, convergent orchestration of a Proxmox VE estate.
#[derive(Debug, Parser)]
#[command(name = "phoenix", version, about, propagate_version = true)]
pub struct Cli {
    /// Options every command takes.
    #[command(flatten)]
    pub global: GlobalArgs,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Options every command takes.
#[derive(Debug, Args)]
pub struct GlobalArgs {
    /// Configuration directory holding the four phoenix_*.json files.
    #[arg(
        long,
        short = 'c',
        global = true,
        env = "PHOENIX_CONFIG_DIR",
        default_value = "./etc",
        value_name = "DIR"
    )]
    pub config: PathBuf,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Check the configuration directory: JSON syntax, schemas and semantic rules.
    Validate(ValidateArgs),
    /// Print the JSON Schema of a configuration file (all four names when none is given).
    Schema(SchemaArgs),
    /// Print a shell completion script.
    Completions(CompletionsArgs),
}

/// Arguments of `validate`.
#[derive(Debug, Args)]
pub struct ValidateArgs {
    /// How to print problems.
    #[arg(long, value_enum, default_value_t = OutputFormat::Human)]
    pub output: OutputFormat,
}

/// Arguments of `schema`.
#[derive(Debug, Args)]
pub struct SchemaArgs {
    /// `hypervisor`, `lxc`, `vm` or `stacks` (or a file name such as `phoenix_lxc_configs.json`).
    pub name: Option<String>,
}

/// Arguments of `completions`.
#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell to generate for.
    pub shell: Shell,
}

/// Output formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    /// Diagnostics for people, with source excerpts.
    Human,
    /// A JSON array of problems, for editors and CI.
    Json,
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::Cli;

    #[test]
    fn verify_cli() {
        Cli::command().debug_assert();
    }
}
