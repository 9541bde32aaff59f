//! The `weir` binary: parse the command line, run, map the outcome to an
//! exit code. Everything else lives in the `weir_proxy` library.

use std::process::ExitCode;

use clap::Parser;

/// mimalloc: per-thread free lists suit a proxy's many short-lived buffers
/// (measured with benches/load.sh; see the README's Performance section).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = weir_proxy::cli::Cli::parse();
    weir_proxy::cli::main(cli)
}
