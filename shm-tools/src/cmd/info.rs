//! `shmq info` (placeholder until its owner lands it).

use clap::Args;

use crate::error::{CliError, CliResult};

/// Arguments of `shmq info`.
#[derive(Debug, Args)]
pub struct InfoArgs {}

/// Run `shmq info`.
pub fn run(_ns: &str, _args: InfoArgs) -> CliResult {
    Err(CliError::failed("`shmq info` is not built yet"))
}
