//! `shmq bench` (placeholder until its owner lands it).

use clap::Args;

use crate::error::{CliError, CliResult};

/// Arguments of `shmq bench`.
#[derive(Debug, Args)]
pub struct BenchArgs {}

/// Run `shmq bench`.
pub fn run(_ns: &str, _args: BenchArgs) -> CliResult {
    Err(CliError::failed("`shmq bench` is not built yet"))
}
