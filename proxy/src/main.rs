//! The `weir` binary: parse the command line, run, map the outcome to an
//! exit code. Everything else lives in the `weir_proxy` library.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = weir_proxy::cli::Cli::parse();
    weir_proxy::cli::main(cli)
}
