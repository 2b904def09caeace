//! The `phoenix` command.

use std::process::ExitCode;

// The configuration files of a large estate make millions of small strings on the way to the typed model:
// mimalloc makes those allocations and their frees about twice as fast as glibc's allocator.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    phoenix_cli::main()
}
