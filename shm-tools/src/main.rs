//! `shmq`: operate a shmq deployment — demo, topics, produce/consume, the
//! supervisor and benchmarks. See `shmq --help`.

mod cli;
mod cmd;
mod error;
mod logging;
mod util;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    logging::init(cli.log_format);
    match cmd::dispatch(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.is_broken_pipe() => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("shmq: {e}");
            ExitCode::from(e.code())
        }
    }
}
