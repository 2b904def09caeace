//! The `phoenix` command.

use std::process::ExitCode;

fn main() -> ExitCode {
    phoenix_cli::main()
}
