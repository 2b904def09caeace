//! The `phoenix` command line: argument parsing, reading the configuration directory, rendering.
//!
//! Thin by design: validation, planning, execution and every decision live in `phoenix-core`.

mod args;
mod cmd;
mod exit;
mod files;
mod interrupt;
mod load;
mod lock;
mod progress;
mod render;
mod target;

use std::process::ExitCode;

use clap::Parser;

pub use args::Cli;

/// Runs the command line and maps the outcome to an exit status: the only place that does.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing(cli.global.verbose);
    render::init_error_hook();
    let json = cli.command.output() == args::OutputFormat::Json;
    let problems_document = matches!(cli.command, args::Command::Validate(_));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime starts");
    let exit = match runtime.block_on(cmd::run(cli)) {
        Ok(exit) => exit,
        Err(report) => {
            render::error_human(&report);
            // Under `--output json` standard output is always one JSON document, failures included.
            if json {
                println!("{}", render::error_json(&report, problems_document));
            }
            exit::Exit::Failure
        }
    };
    exit.code()
}

/// Logs to stderr: warnings by default, more with -v, or whatever RUST_LOG says.
fn init_tracing(verbose: u8) {
    let default = match verbose {
        0 => "warn",
        1 => "debug",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(render::stderr_is_terminal())
        .try_init();
}
