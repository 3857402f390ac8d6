//! `shmq produce` (placeholder until its owner lands it).

use clap::Args;

use crate::error::{CliError, CliResult};

/// Arguments of `shmq produce`.
#[derive(Debug, Args)]
pub struct ProduceArgs {}

/// Run `shmq produce`.
pub fn run(_ns: &str, _args: ProduceArgs) -> CliResult {
    Err(CliError::failed("`shmq produce` is not built yet"))
}
