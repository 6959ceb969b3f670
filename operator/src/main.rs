//! `td-result-export`: parses the command line and hands it to the library.

mod cli;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let args = cli::Cli::parse();
    let code = cli::run(args);
    ExitCode::from(u8::try_from(code).unwrap_or(1))
}
