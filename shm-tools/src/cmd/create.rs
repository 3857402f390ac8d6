//! `shmq create` (placeholder until its owner lands it).

use clap::Args;

use crate::error::{CliError, CliResult};

/// Arguments of `shmq create`.
#[derive(Debug, Args)]
pub struct CreateArgs {}

/// Run `shmq create`.
pub fn run(_ns: &str, _args: CreateArgs) -> CliResult {
    Err(CliError::failed("`shmq create` is not built yet"))
}
