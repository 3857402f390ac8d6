//! `shmq consume` (placeholder until its owner lands it).

use clap::Args;

use crate::error::{CliError, CliResult};

/// Arguments of `shmq consume`.
#[derive(Debug, Args)]
pub struct ConsumeArgs {}

/// Run `shmq consume`.
pub fn run(_ns: &str, _args: ConsumeArgs) -> CliResult {
    Err(CliError::failed("`shmq consume` is not built yet"))
}
