//! The `phoenix` command line: argument parsing, reading the configuration directory, rendering.
//!
//! Thin by design: validation, planning and every decision live in `phoenix-core`.

mod args;
mod cmd;
mod load;
mod render;

use std::process::ExitCode;

use clap::Parser;

pub use args::Cli;

/// Runs the command line and maps the outcome to an exit status.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match cmd::run(cli) {
        Ok(code) => code,
        Err(report) => {
            eprintln!("{report:?}");
            ExitCode::from(1)
        }
    }
}
